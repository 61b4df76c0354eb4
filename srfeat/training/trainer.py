"""The training loop of both stages: data, networks, steps, validation, logging, checkpoints.

What one step does lives in `srfeat.training.steps` (PretrainStep, GANStep); this module
builds their inputs from a `TrainingConfig`, loops, and keeps the run folder:

    OUT/
      config.yaml                     the resolved config of the run
      generator_latest.safetensors    the generator at the last checkpoint
      generator_best.safetensors      the generator with the best validation PSNR so far
      state.pt                        everything needed to resume (weights_only-loadable)
      metrics.jsonl                   one JSON object per log / validation
      training.png                    losses and validation PSNR over the run
      tensorboard/                    TensorBoard event files (losses, lr, PSNR/SSIM, images)

Exact resumption: every training item is drawn with its own seed (from the run's seed, the
epoch and the item's index), the data order of an epoch comes from (seed, epoch), and the
state records how many batches of the current epoch are done; so a resumed run sees the
same batches as an uninterrupted one, whatever the number of DataLoader workers.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from srfeat.errors import ConfigError, SRFeatError
from srfeat.hardware import cpu_has_native_bf16
from srfeat.ops.winograd import set_worker_threads, use_winograd
from srfeat.training import checkpoint, networks
from srfeat.training.config import TrainingConfig, check_paths
from srfeat.training.distributed import (
    DistributedContext,
    FrozenAwareDDP,
    barrier,
    broadcast_object,
    convert_batchnorm,
    init_distributed,
    shutdown,
    wrap_ddp,
)
from srfeat.training.steps import AdversarialTerm, AutocastFactory, GANStep, PretrainStep, no_autocast

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "training.png"
CONFIG_FILE = "config.yaml"


class TrainingDiverged(SRFeatError):  # noqa: N818 - public name (tests, callers); it reads as the event
    """A loss became NaN or infinite; the last checkpoint on disk is the last good one."""


# ----------------------------------------------------------------------------- data


class SeededItems(Dataset):
    """Makes every item's randomness (crop, flip, rotation) a function of its own seed.

    The sampler hands out (index, seed) keys; the global random generators are seeded from
    the key before the wrapped dataset draws, so an item is the same in any worker, on any
    rank and after a resume.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        return self.dataset[index]


class ResumableSampler(DistributedSampler):
    """DistributedSampler that yields (index, item seed) and can start mid-epoch.

    This rank's share of global batch b is the b-th run of `batch_size` indices of its
    strided share of the epoch's permutation, so W ranks with batch B see exactly the
    samples that one process with batch W*B sees, batch by batch.
    """

    def __init__(self, dataset: Dataset, context: DistributedContext, seed: int) -> None:
        super().__init__(
            dataset, num_replicas=context.world_size, rank=context.rank, shuffle=True, seed=seed, drop_last=True
        )
        self.start = 0  # position in this rank's share at which the next epoch begins

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.dataset), generator=generator).tolist()[: self.total_size]  # type: ignore[arg-type]
        share = order[self.rank : self.total_size : self.num_replicas]
        for position in range(self.start, len(share)):
            index = share[position]
            yield index, (self.seed * 1_000_003 + self.epoch) * 10_000_019 + index


def build_train_dataset(config: TrainingConfig) -> Dataset:
    from srfeat.data.datasets import CenterCropDataset, PairedPatchDataset, RandomCropDataset

    folders = [config.resolve_path(d) for d in config.data.train_dirs]
    data, scale = config.data, config.model.scale
    if data.kind == "center_crop":
        return CenterCropDataset(folders, hr_patch_size=data.hr_patch_size, scale=scale)
    if data.kind == "random_crop":
        return RandomCropDataset(folders, hr_patch_size=data.hr_patch_size, scale=scale, repeats=data.repeat)
    return PairedPatchDataset(folders, scale=scale, hr_patch_size=data.hr_patch_size)


# ----------------------------------------------------------------------------- schedule


def lr_factor(config: TrainingConfig, epoch: int, progress: float) -> float:
    """Learning-rate multiplier in `epoch` (counted from 0) at `progress` (0..1) of the run."""
    optim = config.optim
    if optim.lr_schedule == "epoch":
        passed = sum(1 for milestone in optim.lr_milestones if epoch + 1 >= milestone)
    else:
        passed = sum(1 for milestone in optim.lr_milestones if progress >= milestone)
    return optim.lr_gamma**passed


# ----------------------------------------------------------------------------- logging


@dataclass
class RunLog:
    """metrics.jsonl, TensorBoard and the PNG plot of one run (main process only)."""

    out_dir: Path
    enabled: bool
    writer: Any = None
    records: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.enabled:
            return
        path = self.out_dir / METRICS_FILE
        if path.is_file():
            self.records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
            logger.warning("tensorboard is not importable; TensorBoard logs are off")

    def truncate_after(self, step: int) -> None:
        """Forget records past `step` (a resumed run redoes those steps)."""
        if not self.enabled:
            return
        self.records = [r for r in self.records if r["step"] <= step]
        (self.out_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.records.append(record)
        with open(self.out_dir / METRICS_FILE, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            prefix = "validation/" if record["kind"] == "validation" else ""
            for key, value in record.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)):
                    self.writer.add_scalar(prefix + key, value, record["step"])

    def images(self, tag: str, images: list[torch.Tensor], step: int) -> None:
        if self.enabled and self.writer is not None:
            for i, image in enumerate(images):
                self.writer.add_image(f"{tag}/{i}", image, step)

    def plot(self) -> None:
        if not self.enabled or not self.records:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        train = [r for r in self.records if r["kind"] == "train"]
        validation = [r for r in self.records if r["kind"] == "validation"]
        loss_keys = sorted({k for r in train for k in r if k.startswith("loss/")})
        figure, (loss_axis, psnr_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
        for key in loss_keys:
            points = [(r["step"], r[key]) for r in train if key in r and r[key] > 0]
            if points:
                loss_axis.plot(*zip(*points, strict=True), label=key.removeprefix("loss/"))
        loss_axis.set(xlabel="step", ylabel="loss", yscale="log", title="training losses")
        if loss_keys:
            loss_axis.legend()
        points = [(r["step"], r["psnr"]) for r in validation if "psnr" in r]
        if points:
            psnr_axis.plot(*zip(*points, strict=True), marker="o")
        psnr_axis.set(xlabel="step", ylabel="PSNR (dB, Y)", title="validation PSNR")
        psnr_axis.grid(alpha=0.3)
        points = [(r["step"], r["niqe"]) for r in validation if "niqe" in r]
        if points:  # stage 2 trades PSNR for what NIQE measures: show both
            psnr_axis.set_title("validation PSNR and NIQE")
            niqe_axis = psnr_axis.twinx()
            niqe_axis.plot(*zip(*points, strict=True), marker="s", color="tab:red")
            niqe_axis.set_ylabel("NIQE (lower is better)", color="tab:red")
        figure.tight_layout()
        tmp = self.out_dir / f".{PLOT_FILE}.tmp.png"
        figure.savefig(tmp, dpi=100)
        plt.close(figure)
        tmp.replace(self.out_dir / PLOT_FILE)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------- validation


class Validator:
    """PSNR/SSIM (and NIQE in stage 2, when available) of the generator on a benchmark folder."""

    def __init__(self, config: TrainingConfig, device: torch.device) -> None:
        from srfeat.data.datasets import BenchmarkDataset

        assert config.validation.dir is not None
        self.config = config
        self.device = device
        self.dataset = BenchmarkDataset(config.resolve_path(config.validation.dir), scale=config.model.scale)
        self.count = min(len(self.dataset), config.validation.max_images or len(self.dataset))
        self.niqe = None
        if config.stage == 2 and config.validation.niqe:
            try:
                from srfeat.metrics.niqe import niqe

                self.niqe = niqe
            except ImportError:
                logger.info("NIQE is not available; validation reports PSNR/SSIM only")

    @torch.no_grad()
    def __call__(self, generator: nn.Module) -> tuple[dict[str, float], list[torch.Tensor]]:
        from srfeat.metrics.psnr_ssim import psnr, rgb_to_y, ssim

        was_training = generator.training
        generator.eval()
        scale = self.config.model.scale
        totals: dict[str, float] = {"psnr": 0.0, "ssim": 0.0}
        niqe_values: list[float] = []
        samples: list[torch.Tensor] = []
        memory_format = torch.channels_last if self.config.train.channels_last else torch.contiguous_format
        for index in range(self.count):
            item = self.dataset[index]
            lr = item["lr"].unsqueeze(0).to(self.device, memory_format=memory_format)
            sr = generator(lr).float().clamp_(0.0, 1.0)[0]
            sr_uint8 = sr.mul(255.0).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            totals["psnr"] += psnr(sr_uint8, item["hr_uint8"], crop_border=scale)
            totals["ssim"] += ssim(sr_uint8, item["hr_uint8"], crop_border=scale)
            if self.niqe is not None:
                try:
                    niqe_values.append(self.niqe(rgb_to_y(sr_uint8), crop_border=scale))
                except SRFeatError as error:  # too small or flat: NIQE undefined for this image
                    logger.debug("NIQE skipped for %s: %s", item["name"], error)
            if len(samples) < self.config.validation.sample_images:
                samples.append(sr.cpu())
        generator.train(was_training)
        metrics = {key: value / self.count for key, value in totals.items()}
        if niqe_values:
            metrics["niqe"] = float(np.mean(niqe_values))
        return metrics, samples


# ----------------------------------------------------------------------------- the run


@dataclass
class Progress:
    """Counters that a resume restores."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_seconds: float = 0.0
    best_psnr: float = -math.inf


@dataclass
class RunResult:
    out_dir: Path
    step: int
    epoch: int
    last_validation: dict[str, float] | None
    best_psnr: float


def configure_determinism(config: TrainingConfig) -> None:
    import os

    deterministic = config.train.deterministic
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic  # fixed patch sizes: let cuDNN pick
    if not deterministic:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


class Trainer:
    """One training run of either stage, from a checked config."""

    def __init__(
        self,
        config: TrainingConfig,
        out_dir: str | Path | None = None,
        resume: bool = False,
        context: DistributedContext | None = None,
        show_progress: bool = True,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir if out_dir is not None else config.out_dir)
        self.resume = resume
        self.context = context or init_distributed(config.train.device)
        self.device = self.context.device
        self.show_progress = show_progress and self.context.is_main
        self.progress = Progress()
        self.memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
        self._bf16 = config.train.bf16 and (
            self.device.type == "cuda" or (self.device.type == "cpu" and cpu_has_native_bf16())
        )
        if config.train.bf16 and not self._bf16:
            logger.info("train.bf16 is on but %s has no native bf16: training in float32", self.device)
        # bf16 convolutions on such a CPU beat float32 Winograd (benchmarks.training: 2.2x the
        # plain step against 1.3x), and Winograd's transforms are not made for bf16
        self._winograd = (
            config.train.winograd and self.device.type == "cpu" and not config.train.compile and not self._bf16
        )
        if self._winograd:
            # Training steps are large enough that PyTorch's intra-op threads beat srfeat's band
            # workers (benchmarks.training: 1.38x the plain step against 1.0x, 2 quiet cores).
            set_worker_threads(False)

    # -- building -------------------------------------------------------------------

    def _autocast(self) -> AutocastFactory:
        if self._bf16:
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return no_autocast

    def _adam(self, module: nn.Module, lr: float, eps: float) -> torch.optim.Adam:
        optim = self.config.optim
        # the fused kernel updates all parameters in one pass (CPU and CUDA); the same update rule.
        # Frozen parameters (the generator's BatchNorm in stage 2) get no gradient and so no update.
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(module.parameters(), lr=lr, betas=(optim.beta1, optim.beta2), eps=eps, fused=fused)

    def _prepare(self, module: nn.Module) -> nn.Module:
        """Device, memory format and cross-process BatchNorm for a network."""
        # Module.to accepts memory_format at run time; torch's typed overloads leave it out.
        module = module.to(self.device, memory_format=self.memory_format)  # pyright: ignore[reportCallIssue]
        if self._winograd:
            use_winograd(module)
        if self.context.enabled and self.config.train.sync_batchnorm:
            module = convert_batchnorm(module, self.device)
        return module

    def _build(self, saved: dict[str, Any] | None) -> None:
        config, model = self.config, self.config.model
        if config.train.init_generator and saved is None:
            from srfeat.weights import load_generator

            generator = load_generator(config.resolve_path(config.train.init_generator or ""))
            built = (generator.scale, generator.num_features, generator.num_blocks)
            wanted = (model.scale, model.num_features, model.num_blocks)
            if built != wanted:
                raise ConfigError(
                    f"train.init_generator has scale/num_features/num_blocks {built}, "
                    f"but the config's model has {wanted}: "
                    "set the model section to match the stage-1 run"
                )
            logger.info("stage %d starts from %s", config.stage, config.train.init_generator)
        else:
            generator = networks.new_generator(config)
        self.generator: nn.Module = self._prepare(generator)
        if config.stage == 2 and not config.train.generator_bn_trainable:
            networks.freeze_batchnorm_affine(self.generator)
        self.discriminators = {name: self._prepare(d) for name, d in networks.build_discriminators(config).items()}
        if config.stage == 2:
            logger.info("%s", networks.describe_adversarial_terms(config))
        if saved is not None:
            if config.stage == 2:
                networks.check_saved_discriminators(
                    saved, self.discriminators, str(self.out_dir / checkpoint.STATE_FILE)
                )
            self.generator.load_state_dict(saved["generator"])
            for name, module in self.discriminators.items():
                module.load_state_dict(saved["discriminators"][name])

        self.generator_optimizer = self._adam(self.generator, config.optim.lr, networks.adam_eps(config, "generator"))
        discriminator_lr = config.optim.discriminator_lr or config.optim.lr
        discriminator_eps = networks.adam_eps(config, "discriminator") if config.stage == 2 else 0.0
        self.discriminator_optimizers = {
            name: self._adam(d, discriminator_lr, discriminator_eps) for name, d in self.discriminators.items()
        }
        self.base_lrs = {"generator": config.optim.lr, **{name: discriminator_lr for name in self.discriminators}}
        if saved is not None:
            self.generator_optimizer.load_state_dict(saved["optimizers"]["generator"])
            for name, optimizer in self.discriminator_optimizers.items():
                optimizer.load_state_dict(saved["optimizers"][name])

        step_generator: nn.Module = self.generator
        step_discriminators = dict(self.discriminators)
        if self.context.enabled:
            step_generator = wrap_ddp(self.generator, self.context)
            step_discriminators = {n: FrozenAwareDDP(wrap_ddp(d, self.context)) for n, d in self.discriminators.items()}  # type: ignore[misc]
        if config.train.compile:
            step_generator = torch.compile(step_generator)  # type: ignore[assignment]
            step_discriminators = {n: torch.compile(d) for n, d in step_discriminators.items()}  # type: ignore[misc]

        autocast = self._autocast()
        if config.stage == 1:
            self.step_fn: PretrainStep | GANStep = PretrainStep(step_generator, self.generator_optimizer, autocast)
        else:
            from srfeat.archs.vgg import VGG19FeatureExtractor

            vgg = VGG19FeatureExtractor(model.vgg_weights)
            vgg = vgg.to(self.device, memory_format=self.memory_format)  # pyright: ignore[reportCallIssue]  # as in _prepare
            if self._winograd:
                use_winograd(vgg)
            terms = [
                AdversarialTerm(
                    kind,
                    kind,
                    step_discriminators[kind],  # type: ignore[arg-type]  # a compiled module is still one
                    self.discriminator_optimizers[kind],
                    networks.adversarial_weight(config, kind),
                )
                for kind in model.discriminators
            ]
            self.step_fn = GANStep(
                step_generator,
                self.generator_optimizer,
                vgg,
                terms,
                config.train.generator_bn_eval,
                autocast,
                config.train.update_order,
            )

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.generator_optimizer, **self.discriminator_optimizers}

    def _set_lr(self, factor: float) -> None:
        for name, optimizer in self._optimizers().items():
            for group in optimizer.param_groups:
                group["lr"] = self.base_lrs[name] * factor

    # -- saving ---------------------------------------------------------------------

    def _save(self) -> None:
        """generator_latest.safetensors and state.pt (main process; atomic)."""
        if not self.context.is_main:
            return
        progress = self.progress
        state = {
            "stage": self.config.stage,
            "config": self.config.to_yaml(),
            "generator": self.generator.state_dict(),
            "discriminators": {name: d.state_dict() for name, d in self.discriminators.items()},
            "discriminator_inputs": networks.DISCRIMINATOR_INPUTS,
            "optimizers": {name: o.state_dict() for name, o in self._optimizers().items()},
            "step": progress.step,
            "epoch": progress.epoch,
            "batch_in_epoch": progress.batch_in_epoch,
            "elapsed_seconds": progress.elapsed_seconds,
            "best_psnr": progress.best_psnr,
            "world_size": self.context.world_size,
            "rng": checkpoint.capture_rng_states(),
        }
        checkpoint.save_checkpoint(self.generator, state, self.out_dir)
        logger.debug("checkpoint at step %d written to %s", progress.step, self.out_dir)

    def _load_saved(self) -> dict[str, Any] | None:
        if not self.resume:
            return None
        saved = checkpoint.load_state(self.out_dir / checkpoint.STATE_FILE)
        if saved["stage"] != self.config.stage:
            raise ConfigError(
                f"{self.out_dir} holds a stage-{saved['stage']} run; the config is stage {self.config.stage}"
            )
        self.progress = Progress(
            saved["step"], saved["epoch"], saved["batch_in_epoch"], saved["elapsed_seconds"], saved["best_psnr"]
        )
        return saved

    # -- the loop -------------------------------------------------------------------

    def run(self) -> RunResult:
        config, context = self.config, self.context
        check_paths(config, resuming=self.resume)
        configure_determinism(config)
        torch.manual_seed(config.train.seed)
        random.seed(config.train.seed)
        np.random.seed(config.train.seed)
        if context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            checkpoint.clean_run_folder(self.out_dir)
            (self.out_dir / CONFIG_FILE).write_text(config.to_yaml())
        saved = self._load_saved()
        self._build(saved)
        if saved is not None:
            checkpoint.restore_rng_states(saved["rng"])
            logger.info("resumed %s at step %d (epoch %d)", self.out_dir, self.progress.step, self.progress.epoch + 1)

        dataset = SeededItems(build_train_dataset(config))
        sampler = ResumableSampler(dataset, context, config.train.seed)
        data = config.data
        use_pinned = data.pin_memory and self.device.type == "cuda"
        loader = DataLoader(
            dataset,
            batch_size=config.train.batch_size,
            sampler=sampler,
            num_workers=data.num_workers,
            pin_memory=use_pinned,
            drop_last=True,
            persistent_workers=data.num_workers > 0,
            prefetch_factor=data.prefetch_factor if data.num_workers > 0 else None,
        )
        steps_per_epoch = len(loader)
        if steps_per_epoch == 0:
            raise ConfigError(
                f"the training set has {len(dataset)} items, fewer than one global batch "
                f"({config.train.batch_size} x {context.world_size}): lower train.batch_size or add images"
            )
        planned_steps = config.train.epochs * steps_per_epoch
        if config.train.max_steps is not None:
            planned_steps = min(planned_steps, config.train.max_steps)
        validator = Validator(config, self.device) if config.validation.dir and context.is_main else None
        log = RunLog(self.out_dir, enabled=context.is_main)
        log.truncate_after(self.progress.step)
        logger.info(
            "stage %d: %d items, %d steps per epoch (global batch %d), up to %d steps%s, on %s",
            config.stage,
            len(dataset),
            steps_per_epoch,
            config.train.batch_size * context.world_size,
            planned_steps,
            f" or {config.train.max_minutes:g} minutes" if config.train.max_minutes else "",
            self.device,
        )
        try:
            last_validation = self._loop(loader, sampler, steps_per_epoch, planned_steps, validator, log)
        finally:
            log.close()
            barrier(context)
        return RunResult(
            self.out_dir, self.progress.step, self.progress.epoch, last_validation, self.progress.best_psnr
        )

    def _progress_fraction(self, planned_steps: int) -> float:
        fraction = self.progress.step / planned_steps
        if self.config.train.max_minutes:
            fraction = max(fraction, self.progress.elapsed_seconds / (60.0 * self.config.train.max_minutes))
        return min(fraction, 1.0)

    def _loop(
        self,
        loader: DataLoader,
        sampler: ResumableSampler,
        steps_per_epoch: int,
        planned_steps: int,
        validator: Validator | None,
        log: RunLog,
    ) -> dict[str, float] | None:
        config, progress, context = self.config, self.progress, self.context
        train = config.train
        # Under DDP all ranks must stop at the same step: rank 0's clock decides, every few steps.
        clock_every = 1 if not context.enabled else 10
        bar = None
        if self.show_progress:
            from tqdm import tqdm

            bar = tqdm(
                total=planned_steps,
                initial=progress.step,
                unit="step",
                dynamic_ncols=True,
                desc=f"stage {config.stage}",
            )
        sums: dict[str, torch.Tensor] = {}
        sums_count = 0
        data_wait = 0.0  # seconds spent waiting for the DataLoader since the last log
        logged_at = time.monotonic()
        last_validation: dict[str, float] | None = None
        validated_at = -1
        saved_at = progress.step
        started = time.monotonic() - progress.elapsed_seconds
        out_of_time = False

        def flush_log() -> None:
            nonlocal sums, sums_count, data_wait, logged_at
            if not sums_count:
                return
            now = time.monotonic()
            # Low data_wait means the loader keeps up; the GPU is the bottleneck then.
            timing = {
                "steps_per_second": sums_count / max(now - logged_at, 1e-9),
                "data_wait": data_wait / max(now - logged_at, 1e-9),
            }
            values = {key: (total / sums_count).item() for key, total in sums.items()}
            bad = [key for key, value in values.items() if not math.isfinite(value)]
            if bad:
                raise TrainingDiverged(
                    f"{', '.join(bad)} became {values[bad[0]]} by step {progress.step}: training stopped; "
                    f"{checkpoint.last_good_checkpoint(self.out_dir, saved_at)} (lower optim.lr or check the data)"
                )
            record = {
                "kind": "train",
                "step": progress.step,
                "epoch": progress.epoch + 1,
                **values,
                "lr": self.generator_optimizer.param_groups[0]["lr"],
                "seconds": round(progress.elapsed_seconds, 2),
            }
            record.update({key: round(value, 4) for key, value in timing.items()})
            log.write(record)
            data_wait, logged_at = 0.0, time.monotonic()
            if bar is not None:
                bar.set_postfix({"loss": f"{values['loss/generator']:.4g}", "lr": f"{record['lr']:.1e}"}, refresh=False)
            sums, sums_count = {}, 0

        def stop_if_diverged() -> None:
            networks = {
                "generator": self.generator,
                **{f"{n} discriminator": d for n, d in self.discriminators.items()},
            }
            problem = checkpoint.diverged_weights(networks)
            if problem is not None:  # a finite loss can come before weights that exploded in its step
                raise TrainingDiverged(
                    f"{problem} at step {progress.step}: training stopped without saving them; "
                    f"{checkpoint.last_good_checkpoint(self.out_dir, saved_at)} (lower optim.lr or check the data)"
                )

        def validate() -> None:
            nonlocal last_validation, validated_at
            validated_at = progress.step
            stop_if_diverged()
            if validator is not None:
                metrics, samples = validator(self.generator)
                last_validation = metrics
                improved = metrics["psnr"] > progress.best_psnr
                if improved:
                    progress.best_psnr = metrics["psnr"]
                    from srfeat.weights import save_generator

                    save_generator(self.generator, self.out_dir / checkpoint.BEST_GENERATOR)  # type: ignore[arg-type]
                log.write({"kind": "validation", "step": progress.step, "epoch": progress.epoch + 1, **metrics})
                log.images("validation/sr", samples, progress.step)
                log.plot()
                text = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                message = f"step {progress.step}: validation {text}{' (best)' if improved else ''}"
                if bar is not None:
                    bar.write(message)
                else:
                    logger.info("%s", message)
            barrier(context)

        def save() -> None:
            nonlocal saved_at
            flush_log()  # never save weights from after a NaN
            stop_if_diverged()
            self._save()
            saved_at = progress.step

        done = progress.step >= planned_steps
        while not done and progress.epoch < train.epochs:
            sampler.set_epoch(progress.epoch)
            sampler.start = progress.batch_in_epoch * train.batch_size
            self._set_lr(lr_factor(config, progress.epoch, self._progress_fraction(planned_steps)))
            waited_since = time.monotonic()
            for batch in loader:
                data_wait += time.monotonic() - waited_since
                lr = batch["lr"].to(self.device, non_blocking=True, memory_format=self.memory_format)
                hr = batch["hr"].to(self.device, non_blocking=True, memory_format=self.memory_format)
                losses = self.step_fn(lr, hr)
                for key, value in losses.items():
                    sums[key] = sums[key] + value if key in sums else value.clone()
                sums_count += 1
                progress.step += 1
                progress.batch_in_epoch += 1
                if bar is not None:
                    bar.update(1)
                if progress.step % clock_every == 0 or progress.step >= planned_steps:
                    elapsed = float(broadcast_object(time.monotonic() - started, context))  # type: ignore[arg-type]
                    progress.elapsed_seconds = elapsed
                    out_of_time = train.max_minutes is not None and elapsed >= 60.0 * train.max_minutes
                    if config.optim.lr_schedule == "progress":
                        self._set_lr(lr_factor(config, progress.epoch, self._progress_fraction(planned_steps)))
                if progress.step % train.log_every == 0:
                    flush_log()
                if config.validation.dir and progress.step % config.validation.every == 0:
                    flush_log()
                    validate()
                if progress.step % train.checkpoint_every == 0:
                    save()
                if progress.step >= planned_steps or out_of_time:
                    done = True
                    break
                waited_since = time.monotonic()
            else:
                progress.epoch += 1
                progress.batch_in_epoch = 0
        if bar is not None:
            bar.close()
        flush_log()
        if config.validation.dir and validated_at != progress.step:
            validate()
        if saved_at != progress.step or not (self.out_dir / checkpoint.STATE_FILE).is_file():
            save()
        if out_of_time and context.is_main:
            logger.info("time budget of %g minutes reached at step %d", train.max_minutes, progress.step)
        if context.is_main:
            log.plot()
        return last_validation


def train(
    config: TrainingConfig, out_dir: str | Path | None = None, resume: bool = False, show_progress: bool = True
) -> RunResult:
    """Run one training (in this process, or as this process's rank under torchrun)."""
    context = init_distributed(config.train.device)
    try:
        return Trainer(config, out_dir, resume, context, show_progress).run()
    finally:
        shutdown(context)
