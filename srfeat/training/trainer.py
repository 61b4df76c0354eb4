"""One training run of either stage: its device and precision, the run folder, checkpoints, resumption.

The networks, optimisers, EMA and training step are built in `srfeat.training.build`, what one
step does lives in `srfeat.training.steps` (PretrainStep, GANStep), the loop that drives the steps
in `srfeat.training.loop`, the data in `srfeat.training.sampling`, validation in
`srfeat.training.validation`, the records in `srfeat.training.run_log` and what a resume checks
before it loads a state in `srfeat.training.resume`. The run folder:

    OUT/
      config.yaml                     the resolved config of the run
      generator_latest.safetensors    the generator at the last checkpoint
      generator_best.safetensors      the generator with the best validation PSNR so far, of equal ones
                                      (inf: an image matched exactly) the best SSIM (with train.ema_decay:
                                      the averaged generator, which validation scores)
      generator_ema.safetensors       with train.ema_decay: the averaged generator at the last checkpoint
      state.pt                        everything needed to resume (weights_only-loadable)
      metrics.jsonl                   one JSON object per log / validation
      training.png                    losses and validation PSNR over the run
      tensorboard/                    TensorBoard event files (losses, lr, PSNR/SSIM, images)

A resumed run continues exactly: see `srfeat.training.sampling` for the data order and the
item seeds; `state.pt` holds the weights, the optimisers, the counters, the random states and
the EMA of the generator (`srfeat.training.ema`).
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from srfeat.errors import ConfigError, TrainingDiverged, check_flag
from srfeat.files import folder_made_for, write_file_atomically
from srfeat.hardware import cpu_has_native_bf16, one_line_if_out_of_memory
from srfeat.ops.workers import worker_threads_set
from srfeat.training import checkpoint, networks, resume
from srfeat.training.build import RunBuilder
from srfeat.training.config import TrainingConfig, check_built, check_paths
from srfeat.training.distributed import DistributedContext, barrier, init_distributed, shutdown
from srfeat.training.ema import shipped_generator
from srfeat.training.loop import Progress, TrainingLoop
from srfeat.training.run_folder import (
    ReplacedRun,
    check_run_folder,
    discarded_unless_saved,
    replaced_run_kept_until_saved,
    run_folder_lock,
)
from srfeat.training.run_log import METRICS_FILE, PLOT_FILE, RunLog
from srfeat.training.sampling import build_loader
from srfeat.training.schedule import lr_factor, planned_steps, unreached_milestones
from srfeat.training.steps import AutocastFactory, no_autocast
from srfeat.training.validation import Validator
from srfeat.weights import as_path

# Re-exported: what callers (and the tests) reach through this module.
__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "PLOT_FILE",
    "Progress",
    "RunResult",
    "Trainer",
    "TrainingDiverged",
    "configure_determinism",
    "lr_factor",
    "train",
]

logger = logging.getLogger(__name__)

CONFIG_FILE = checkpoint.CONFIG_FILE


@dataclass
class RunResult:
    out_dir: Path
    step: int
    epoch: int
    last_validation: dict[str, float] | None
    best_psnr: float
    is_main: bool = True  # under torchrun: rank 0's, which reports the run (the others' hold no validation)


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


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from another that replaced it (a rename makes a new inode)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_ino, info.st_size, info.st_mtime_ns


class Trainer:
    """One training run of either stage, from a checked config."""

    def __init__(
        self,
        config: TrainingConfig,
        out_dir: str | Path | None = None,
        resume: bool = False,
        context: DistributedContext | None = None,
        show_progress: bool = True,
        overwrite: bool = False,
        *,
        command_line: bool = False,
    ) -> None:
        self.config = config
        self.command_line = command_line  # messages name `srfeat train`'s flags, not `train`'s keywords
        # `~` expanded as for every other path of the config: the generators' writer expands it, so a
        # literal `~/runs/x` split a run between ./~/runs/x and $HOME/runs/x
        self.out_dir = config.resolve_path(str(out_dir if out_dir is not None else config.out_dir))
        self.resume = resume
        self._state_stamp: tuple[int, int, int] | None = None  # the state.pt a resume read (`_stamp`)
        # a new run in a folder that holds one replaces it only when asked (run_folder.py)
        self.overwrite = overwrite
        self.replaced_run: ReplacedRun | None = None  # the run --overwrite replaces, until this one saves
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
        elif not config.train.bf16 and self.device.type == "cpu" and cpu_has_native_bf16():
            # The switch that pays most on a CPU, and opt-in: a run on such a machine never heard of it.
            logger.info(
                "this CPU has native bf16 (AVX512-BF16 or AMX): train.bf16=true makes steps 2-5x faster "
                "(README, Speed), with losses about 1e-4 relative off float32's"
            )
        # bf16 convolutions on such a CPU beat float32 Winograd (benchmarks.training: 2.2x the
        # plain step against 1.3x), and Winograd's transforms are not made for bf16
        self._winograd = (
            config.train.winograd and self.device.type == "cpu" and not config.train.compile and not self._bf16
        )
        self._builder = RunBuilder(
            config, self.context, self.out_dir, self.memory_format, self._winograd, self._autocast()
        )

    # -- building -------------------------------------------------------------------

    def _autocast(self) -> AutocastFactory:
        if self._bf16:
            return lambda: torch.autocast(self.device.type, dtype=torch.bfloat16)
        return no_autocast

    def _build(self, saved: dict[str, Any] | None) -> None:
        """The run's networks, optimisers, EMA and step (`srfeat.training.build`), kept where the loop
        and the checkpoints reach them."""
        parts = self._builder.build(saved)
        self.generator, self.discriminators, self.ema = parts.generator, parts.discriminators, parts.ema
        self.generator_optimizer = parts.generator_optimizer
        self.discriminator_optimizers = parts.discriminator_optimizers
        self.base_lrs, self.step_fn = parts.base_lrs, parts.step_fn

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"generator": self.generator_optimizer, **self.discriminator_optimizers}

    def set_lr(self, factor: float) -> None:
        """Every optimiser's learning rate at `factor` times its configured one."""
        for name, optimizer in self._optimizers().items():
            for group in optimizer.param_groups:
                group["lr"] = self.base_lrs[name] * factor

    # -- saving ---------------------------------------------------------------------

    def save_best_generator(self) -> None:
        """generator_best.safetensors (the caller, the validating main process, decides when)."""
        from srfeat.weights import save_generator

        # with EMA on, validation scored the average: that is what "best" refers to
        best = shipped_generator(self.generator, self.ema)
        # the training state holds its networks as nn.Module; the generator is always an SRFeatGenerator
        save_generator(best, self.out_dir / checkpoint.BEST_GENERATOR)  # pyright: ignore[reportArgumentType]
        self._drop_replaced_run()

    def _drop_replaced_run(self) -> None:
        """The run this one replaces is deleted once this one has saved a generator of its own."""
        if self.replaced_run is not None:
            self.replaced_run.drop()

    def _averaged_generator(self) -> nn.Module | None:
        """The EMA's generator, saved beside the raw one (None when EMA is off)."""
        return self.ema.module if self.ema is not None else None

    def save_checkpoint(self) -> None:
        """generator_latest.safetensors and state.pt (main process; atomic)."""
        if not self.context.is_main:
            return
        progress = self.progress
        state = {
            "stage": self.config.stage,
            "config": self.config.to_yaml(),
            "folders": resume.resolved_folders(self.config),  # what its relative paths meant (a resume compares)
            "generator": self.generator.state_dict(),
            "discriminators": {name: d.state_dict() for name, d in self.discriminators.items()},
            "discriminator_inputs": networks.DISCRIMINATOR_INPUTS,
            "optimizers": {name: o.state_dict() for name, o in self._optimizers().items()},
            "step": progress.step,
            "epoch": progress.epoch,
            "batch_in_epoch": progress.batch_in_epoch,
            "elapsed_seconds": progress.elapsed_seconds,
            "best_psnr": progress.best_psnr,
            "best_ssim": progress.best_ssim,
            "validated_step": progress.validated_step,
            "world_size": self.context.world_size,
            "rng": checkpoint.capture_rng_states(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }
        checkpoint.save_checkpoint(
            self.generator, state, self.out_dir, self._averaged_generator(), command_line=self.command_line
        )
        self._drop_replaced_run()
        logger.debug("checkpoint at step %d written to %s", progress.step, self.out_dir)

    def _load_saved(self) -> dict[str, Any] | None:
        if not self.resume:
            return None
        # which state.pt this is: another run that ends while this one starts replaces it (`_check_unchanged`)
        self._state_stamp = _stamp(self.out_dir / checkpoint.STATE_FILE)
        saved = resume.read_resumable_state(self.config, self.out_dir, command_line=self.command_line)
        saved_processes = saved.get("world_size")
        if isinstance(saved_processes, int) and saved_processes != self.context.world_size:
            logger.warning(
                "resuming %s with %d process(es) where the run had %d: the global batch (%d images a step) and "
                "the data order change, so the run continues, but not as it would have",
                self.out_dir,
                self.context.world_size,
                saved_processes,
                self.config.train.batch_size * self.context.world_size,
            )
        self.progress = Progress(
            saved["step"],
            saved["epoch"],
            saved["batch_in_epoch"],
            saved["elapsed_seconds"],
            saved["best_psnr"],
            saved.get("validated_step", -1),  # states of earlier versions lack it
            saved.get("best_ssim", -math.inf),  # earlier versions lack it too: an equal PSNR beats their best
        )
        return saved

    def _check_unchanged(self, resuming: bool) -> None:
        """Under the folder's lock, the folder is still as `run` checked it: another `srfeat train` on it
        (a second terminal) that started and ended while this one built its networks and data would
        otherwise be trained over, a new run's files or a resumed run's later checkpoints."""
        if resuming and _stamp(self.out_dir / checkpoint.STATE_FILE) != self._state_stamp:
            raise ConfigError(
                f"run folder {self.out_dir}: another srfeat train wrote {checkpoint.STATE_FILE} while this one "
                "started; nothing was written: resume again to continue from its new state"
            )
        check_run_folder(self.config, self.out_dir, self.resume, self.overwrite, command_line=self.command_line)

    # -- the run --------------------------------------------------------------------

    def run(self) -> RunResult:
        # Training steps are large enough that PyTorch's intra-op threads beat srfeat's band workers
        # (benchmarks.training: 1.38x the plain step against 1.0x, 2 quiet cores). For the run only:
        # turned off for good, a process's upscales after a run (a notebook's) took the other path,
        # slower and with other rounding than `srfeat upscale` gives.
        with worker_threads_set(False) if self._winograd else nullcontext():
            return self._run()

    def _run(self) -> RunResult:
        config, context = self.config, self.context
        check_paths(config, resuming=self.resume)
        # every rank decides alike: rank 0 writes nothing before the collective in _build (DDP's
        # broadcast of the weights), which the other ranks reach only after this check
        check_run_folder(config, self.out_dir, self.resume, self.overwrite, command_line=self.command_line)
        configure_determinism(config)
        torch.manual_seed(config.train.seed)
        random.seed(config.train.seed)
        np.random.seed(config.train.seed)
        # Everything that can refuse the run (the state, the networks, the data) comes before the
        # first write, so a failed start leaves the folder as it was.
        saved = self._load_saved()
        # a traceback through Module.to where the device had no room for the networks (a GPU others use)
        with one_line_if_out_of_memory(self._builder.out_of_memory_message):
            self._build(saved)
        if saved is not None:  # after the networks, whose initialisation draws random numbers
            resume.restore_rng_states(saved["rng"], self.out_dir / checkpoint.STATE_FILE)

        dataset, sampler, loader = build_loader(config, context, self.device)
        steps_per_epoch = len(loader)
        planned = planned_steps(config, steps_per_epoch)
        unreached = unreached_milestones(config, planned, steps_per_epoch)
        if unreached and context.is_main:
            logger.warning("%s", unreached)
        validator = Validator(config, self.device) if config.validation.dir and context.is_main else None
        with ExitStack() as run_folder:
            if context.is_main:
                # the run folder, with any missing parents: those made here are removed again if the run fails
                # and they are empty, as they are once a run that saved nothing has removed its files (below)
                run_folder.enter_context(folder_made_for(self.out_dir / CONFIG_FILE))
                # before the first file is touched: a second run on this folder stops here
                run_folder.enter_context(run_folder_lock(self.out_dir, command_line=self.command_line))
                self._check_unchanged(saved is not None)
                if self.overwrite:  # set aside, put back if this run fails before it saves a generator
                    self.replaced_run = run_folder.enter_context(replaced_run_kept_until_saved(self.out_dir))
                if saved is None:  # from here on every run file in the folder is this run's
                    run_folder.enter_context(discarded_unless_saved(self.out_dir))
                checkpoint.clean_run_folder(self.out_dir)
                # whole or not at all: a full disk left an empty one (and a traceback)
                text = config.to_yaml().encode()
                write_file_atomically(self.out_dir / CONFIG_FILE, lambda handle: handle.write(text), len(text))
                if saved is not None:
                    checkpoint.save_generators(self.generator, self.out_dir, self._averaged_generator())
            if saved is not None:
                logger.info(
                    "resumed %s at step %d (epoch %d)", self.out_dir, self.progress.step, self.progress.epoch + 1
                )
            purge_step = self.progress.step + 1 if saved is not None else None
            log = RunLog(self.out_dir, context.is_main, purge_step, command_line=self.command_line)
            try:  # closed before a failed run's files are removed
                log.truncate_after(self.progress.step)
                logger.info(
                    "stage %d: %d items, %d steps per epoch (global batch %d), up to %d steps%s, on %s",
                    config.stage,
                    len(dataset),
                    steps_per_epoch,
                    config.train.batch_size * context.world_size,
                    planned,
                    f" or {config.train.max_minutes:g} minutes" if config.train.max_minutes else "",
                    self.device,
                )
                last_validation = TrainingLoop(self, loader, sampler, planned, validator, log).run()
            finally:
                log.close()
                barrier(context)
        return RunResult(
            self.out_dir,
            self.progress.step,
            self.progress.epoch,
            last_validation,
            self.progress.best_psnr,
            self.context.is_main,
        )


def train(
    config: TrainingConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    show_progress: bool = True,
    overwrite: bool = False,
    *,
    command_line: bool = False,
) -> RunResult:
    """Run one training (in this process, or as this process's rank under torchrun).

    A folder that already holds a run is refused unless `resume` (continue it) or `overwrite`
    (replace its files, once the new run has been built) is given. A config built or changed in
    Python is checked first, as `load_config` checks a file's (`ConfigError`, one line); the flags
    are True or False and `out_dir` a path, else an `InvalidOptionError` before anything is done.
    Messages name these keywords (`resume=True`, `overwrite=True`, `out_dir`); `command_line` (`srfeat
    train`'s) names its flags instead (`--resume`, `--overwrite`, `--out`).
    """
    check_built(config)
    # "no" resumed or overwrote (a string is true), 5 was pathlib's TypeError once the networks were built
    resume, overwrite = check_flag(resume, "resume"), check_flag(overwrite, "overwrite")
    show_progress = check_flag(show_progress, "show_progress")
    out_dir = None if out_dir is None else as_path(out_dir, "out_dir")
    context = init_distributed(config.train.device)
    # Under torchrun every rank would say what rank 0 says (the run's start, its validations): the
    # others keep their warnings and errors, which may be their own.
    srfeat_logger = logging.getLogger("srfeat")
    level = srfeat_logger.level
    if not context.is_main:
        srfeat_logger.setLevel(max(level, logging.WARNING))
    try:
        return Trainer(config, out_dir, resume, context, show_progress, overwrite, command_line=command_line).run()
    finally:
        srfeat_logger.setLevel(level)
        shutdown(context)
