"""What a training run trains, built from its config and, on a resume, its saved state: the networks on
their device, their optimisers, the EMA of the generator and the training step.

Apart from `srfeat.training.trainer`, which runs what is built here (the run folder, checkpoints,
the loop): building reads the config and the state and writes nothing, so all it can refuse (a state
that does not fit the networks, a device without room for them) is refused before the run folder
is touched. The trainer decides the device, the precision and the convolutions once; the builder
puts every network there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from srfeat.errors import WeightsError
from srfeat.ops.winograd import use_winograd
from srfeat.training import checkpoint, networks, resume
from srfeat.training.config import TrainingConfig, vgg_weights_source
from srfeat.training.distributed import DistributedContext, FrozenAwareDDP, convert_batchnorm, wrap_ddp
from srfeat.training.ema import GeneratorEMA, build_ema
from srfeat.training.steps import AdversarialTerm, AutocastFactory, GANStep, PretrainStep

__all__ = ["RunBuilder", "RunParts"]

logger = logging.getLogger(__name__)


@dataclass
class RunParts:
    """A run's networks, optimisers, average and step, as the trainer keeps them."""

    generator: nn.Module  # the network itself, never a DDP or compiled wrapper: what is saved and averaged
    discriminators: dict[str, nn.Module]  # by kind (stage 2; none in stage 1), unwrapped as the generator
    generator_optimizer: torch.optim.Adam
    discriminator_optimizers: dict[str, torch.optim.Adam]
    base_lrs: dict[str, float]  # each optimiser's configured learning rate, which the schedule scales
    ema: GeneratorEMA | None
    step_fn: PretrainStep | GANStep


class RunBuilder:
    """Builds a run's parts on `context`'s device, in `memory_format`, with srfeat's Winograd
    convolutions where `winograd` and autocast from `autocast` (what the trainer decided)."""

    def __init__(
        self,
        config: TrainingConfig,
        context: DistributedContext,
        out_dir: Path,
        memory_format: torch.memory_format,
        winograd: bool,
        autocast: AutocastFactory,
    ) -> None:
        self.config = config
        self.context = context
        self.device = context.device
        self.out_dir = out_dir
        self.memory_format = memory_format
        self.winograd = winograd
        self.autocast = autocast

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
        if self.winograd:
            use_winograd(module)
        if self.context.enabled and self.config.train.sync_batchnorm:
            module = convert_batchnorm(module, self.device)
        return module

    def build(self, saved: dict[str, Any] | None) -> RunParts:
        """The run's parts: new, or (`saved`, read by `resume.read_resumable_state`) as the state left them."""
        config, model = self.config, self.config.model
        if config.train.init_generator and saved is None:
            from srfeat.weights import load_generator

            # `check_paths` has compared it with the config's model (scale, width, depth, RGB)
            generator = load_generator(config.resolve_path(config.train.init_generator or ""))
            logger.info("stage %d starts from %s", config.stage, config.train.init_generator)
        else:
            generator = networks.new_generator(config)
        generator = self._prepare(generator)
        if config.stage == 2 and not config.train.generator_bn_trainable:
            networks.freeze_batchnorm_affine(generator)
        discriminators = {name: self._prepare(d) for name, d in networks.build_discriminators(config).items()}
        if config.stage == 2:
            logger.info("%s", networks.describe_adversarial_terms(config))
        if saved is not None:
            source = str(self.out_dir / checkpoint.STATE_FILE)
            resume.check_saved_networks(saved, generator, discriminators, source)
            resume.warn_of_config_changes(saved, config, self.out_dir)
            generator.load_state_dict(saved["generator"])
            for name, module in discriminators.items():
                module.load_state_dict(saved["discriminators"][name])

        generator_optimizer = self._adam(generator, config.optim.lr, networks.adam_eps(config, "generator"))
        discriminator_lr = config.optim.discriminator_lr or config.optim.lr
        discriminator_eps = networks.adam_eps(config, "discriminator") if config.stage == 2 else 0.0
        discriminator_optimizers = {
            name: self._adam(d, discriminator_lr, discriminator_eps) for name, d in discriminators.items()
        }
        base_lrs = {"generator": config.optim.lr, **{name: discriminator_lr for name in discriminators}}
        if saved is not None:
            optimizers: dict[str, torch.optim.Optimizer] = {"generator": generator_optimizer}
            optimizers.update(discriminator_optimizers)
            try:  # their states were checked against the networks (resume.check_saved_networks)
                for name, optimizer in optimizers.items():
                    optimizer.load_state_dict(saved["optimizers"][name])
            except (KeyError, ValueError, TypeError) as error:  # what torch raises for a foreign state
                raise WeightsError(
                    f"{self.out_dir / checkpoint.STATE_FILE}: its optimizer state does not fit the networks "
                    f"({type(error).__name__}: {str(error).splitlines()[0][:120] if str(error) else ''}): "
                    "the file is damaged or edited"
                ) from error
            networks.apply_optimizer_settings(config, optimizers)

        # the average follows the generator itself, never a DDP or compiled wrapper of it
        ema = build_ema(generator, config.train.ema_decay, saved)

        step_generator: nn.Module = generator
        step_discriminators = dict(discriminators)
        if self.context.enabled:
            step_generator = wrap_ddp(generator, self.context)
            step_discriminators = {
                # wrap_ddp is typed as returning nn.Module; with distributed training on it returns a DDP.
                n: FrozenAwareDDP(wrap_ddp(d, self.context))  # pyright: ignore[reportArgumentType]
                for n, d in discriminators.items()
            }
        if config.train.compile:
            # torch.compile's stubs return a plain callable; given a module it returns an OptimizedModule.
            step_generator = torch.compile(step_generator)  # pyright: ignore[reportAssignmentType]
            step_discriminators = {n: torch.compile(d) for n, d in step_discriminators.items()}

        if config.stage == 1:
            step_fn: PretrainStep | GANStep = PretrainStep(
                step_generator,
                generator_optimizer,
                self.autocast,
                config.train.grad_clip_norm,
                config.model.luma_loss_weight,
                config.model.pixel_loss,
            )
        else:
            from srfeat.archs.vgg import VGG19FeatureExtractor

            vgg = VGG19FeatureExtractor(vgg_weights_source(config))
            vgg = vgg.to(self.device, memory_format=self.memory_format)  # pyright: ignore[reportCallIssue]  # as in _prepare
            if self.winograd:
                use_winograd(vgg)
            terms = [
                AdversarialTerm(
                    kind,
                    kind,
                    # torch.compile's stubs return a plain callable; a compiled module is still a module
                    step_discriminators[kind],  # pyright: ignore[reportArgumentType]
                    discriminator_optimizers[kind],
                    networks.adversarial_weight(config, kind),
                )
                for kind in model.discriminators
            ]
            step_fn = GANStep(
                step_generator,
                generator_optimizer,
                vgg,
                terms,
                config.train.generator_bn_eval,
                self.autocast,
                config.train.update_order,
                config.train.grad_clip_norm,
            )
        return RunParts(
            generator, discriminators, generator_optimizer, discriminator_optimizers, base_lrs, ema, step_fn
        )

    def out_of_memory_message(self) -> str:
        """What `build` says where the device has no room for the networks (a GPU that others use)."""
        networks_of_stage = "the generator" if self.config.stage == 1 else "the generator, discriminators and VGG19"
        free = (
            "other processes hold its memory (nvidia-smi lists them): free it, " if self.device.type == "cuda" else ""
        )
        return (
            f"out of memory on {self.device} building {networks_of_stage}: {free}use smaller networks (the model "
            f"section) or train.device=cpu; nothing was written to {self.out_dir}"
        )
