"""The networks of a training run as its config asks for them, and how their optimizers are set.

What the trainer needs beyond the bare architectures: a new generator's and discriminators'
initialisation, the stage-2 discriminators the config names (the paper's variants SRFeat_I, SRFeat_F and
SRFeat_IF), their loss weights, the generator's BatchNorm frozen as in the authors' stage 2,
Adam's epsilon in the authors' units, and checks that a saved stage-2 state fits the networks
before it is loaded.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from torch import nn

from srfeat.archs.discriminators import FeatureDiscriminator, ImageDiscriminator, init_discriminator_as_authors
from srfeat.archs.generator import SRFeatGenerator
from srfeat.archs.generator_init import init_as_authors, init_as_interpolator
from srfeat.errors import ConfigError, WeightsError
from srfeat.training.config import TrainingConfig

logger = logging.getLogger(__name__)

DiscriminatorKind = Literal["image", "feature"]

# What a stage-2 state's discriminators were trained on. States without it come from srfeat
# versions whose image discriminator saw [0, 1] images and whose VGG19 pools rounded down; a
# discriminator trained on those inputs would be silently wrong on today's.
DISCRIMINATOR_INPUTS = "image [-1, 1]; VGG19 pools round up"

# Adam's epsilon of the authors' code, in this code's loss units. Adam ignores a loss's scale
# except through epsilon: a loss s times larger behaves as epsilon / s on the smaller one.
AUTHORS_ADAM_EPS: dict[tuple[int, str], float] = {
    # TF's default 1e-8 on the MSE of [-1, 1] images, which is 4x the MSE of [0, 1] images
    (1, "generator"): 1e-8 / 4,
    # main_gan_train.py: AdamOptimizer(..., epsilon=1e-10) for the generator's loss
    (2, "generator"): 1e-10,
    # the same epsilon on a discriminator loss they multiply by 1e-3
    (2, "discriminator"): 1e-10 / 1e-3,
}


def new_generator(config: TrainingConfig) -> SRFeatGenerator:
    """A generator of the config's size, initialised as `model.init` says."""
    model = config.model
    generator = SRFeatGenerator(model.scale, model.num_features, model.num_blocks)
    if model.init == "interpolation":
        init_as_interpolator(generator)
    elif model.init == "authors":
        init_as_authors(generator)
    return generator


def freeze_batchnorm_affine(module: nn.Module) -> int:
    """Stop every BatchNorm's gamma and beta from learning; returns how many layers.

    The authors' stage 2 builds the generator with is_train=False: tensorlayer then creates
    gamma and beta as non-trainable variables, and their optimizer only collects trainable
    ones. Must run before DDP wraps the module (DDP waits for the gradients of every
    parameter that requires one).
    """
    layers = _batchnorm_layers(module)
    for layer in layers:
        layer.requires_grad_(False)
    return len(layers)


def batchnorm_affine_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The BatchNorms' gammas and betas, which `freeze_batchnorm_affine` stops from learning."""
    return [parameter for layer in _batchnorm_layers(module) for parameter in layer.parameters(recurse=False)]


def _batchnorm_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def adversarial_weight(config: TrainingConfig, kind: DiscriminatorKind) -> float:
    model = config.model
    return model.image_adversarial_weight if kind == "image" else model.feature_adversarial_weight


def build_discriminators(config: TrainingConfig) -> dict[str, nn.Module]:
    """The discriminators `model.discriminators` names, in that order (empty in stage 1)."""
    if config.stage != 2:
        return {}
    model, size = config.model, config.data.hr_patch_size
    classes = {"image": ImageDiscriminator, "feature": FeatureDiscriminator}
    discriminators = {
        kind: classes[kind](size, model.discriminator_channels, model.discriminator_dense_features)
        for kind in model.discriminators
    }
    if model.discriminator_init == "authors":
        for discriminator in discriminators.values():
            init_discriminator_as_authors(discriminator)
    return discriminators


def describe_adversarial_terms(config: TrainingConfig) -> str:
    """One log line: which discriminators, with what weights, updated in which order."""
    kinds = config.model.discriminators
    variant = "SRFeat_IF" if len(kinds) == 2 else "SRFeat_I" if kinds == ["image"] else "SRFeat_F"
    terms = ", ".join(f"{kind} x {adversarial_weight(config, kind):g}" for kind in kinds)
    return f"stage 2 ({variant}): perceptual + {terms}; {config.train.update_order.replace('_', ' ')}"


def adam_eps(config: TrainingConfig, network: Literal["generator", "discriminator"]) -> float:
    """Adam's epsilon for the generator or the discriminators: the config's, else the authors'."""
    chosen = config.optim.eps if network == "generator" else config.optim.discriminator_eps
    return chosen if chosen is not None else AUTHORS_ADAM_EPS[(config.stage, network)]


def _number_kind(tensor: torch.Tensor) -> str:
    if tensor.is_floating_point():
        return "floating point"
    return "complex" if tensor.is_complex() else "boolean" if tensor.dtype == torch.bool else "integer"


def wrong_kind(saved: torch.Tensor, built: torch.Tensor) -> str | None:
    """How a saved tensor's kind of number differs from the built network's (`load_state_dict` casts: an integer
    or boolean weight loaded truncated, a complex one lost a part), e.g. "is torch.int32, not floating point";
    None when it is the same kind (float16 for float32 is)."""
    if _number_kind(saved) == _number_kind(built):
        return None
    return f"is {saved.dtype}, not {_number_kind(built)}"


# How Adam's step runs (not what it computes): the built optimizer's, whatever the state saved (its device's).
_RUN_OPTIONS = ("foreach", "fused", "capturable")


def apply_optimizer_settings(config: TrainingConfig, optimizers: dict[str, torch.optim.Optimizer]) -> None:
    """After a resumed state's optimizers are loaded: Adam's betas (and an epsilon the config sets) are
    the config's, not the saved ones, which `load_state_dict` put back: a resume with optim.beta1=0.5 was
    named as a change and written to config.yaml, yet trained on with 0.9. A null epsilon keeps the
    saved one (docs/fidelity.md: older stage-1 states keep theirs); the learning rates follow `set_lr`."""
    optim = config.optim
    for name, optimizer in optimizers.items():
        eps = optim.eps if name == "generator" else optim.discriminator_eps
        for group in optimizer.param_groups:
            group["betas"] = (optim.beta1, optim.beta2)
            if eps is not None:
                group["eps"] = eps
            group.update({key: optimizer.defaults[key] for key in _RUN_OPTIONS if key in optimizer.defaults})


def check_saved_discriminators(saved: dict[str, Any], discriminators: dict[str, nn.Module], source: str) -> None:
    """A stage-2 state fits the config's discriminators, or one line says why not.

    Called before any tensor is loaded, so a mismatch never surfaces as a shape error from
    deep inside `load_state_dict`.
    """
    if saved.get("discriminator_inputs") != DISCRIMINATOR_INPUTS:
        raise ConfigError(
            f"{source} is a stage-2 state of an older srfeat, whose discriminators saw other inputs "
            "(image discriminator [0, 1] images, VGG19 pools rounding down): it cannot be resumed; "
            "start stage 2 afresh with train.init_generator=<its generator_latest.safetensors>"
        )
    saved_discriminators: dict[str, dict[str, torch.Tensor]] = saved["discriminators"]
    if list(saved_discriminators) != list(discriminators):
        raise ConfigError(
            f"{source} holds the discriminators {list(saved_discriminators)}, the config names "
            f"{list(discriminators)}: set model.discriminators to match, or start a new run folder"
        )
    for name, module in discriminators.items():
        expected = module.state_dict()
        for key, tensor in saved_discriminators[name].items():
            if key in expected and (wrong := wrong_kind(tensor, expected[key])) is not None:
                raise WeightsError(f"{source}: the {name} discriminator's {key} {wrong}: the file is damaged or edited")
            if key in expected and tensor.shape != expected[key].shape:
                raise ConfigError(
                    f"{source}: the {name} discriminator's {key} is {tuple(tensor.shape)}, the config builds "
                    f"{tuple(expected[key].shape)}: set data.hr_patch_size and model.discriminator_* as in "
                    "that run, or start a new run folder"
                )
        odd = sorted(saved_discriminators[name].keys() ^ expected.keys())
        if odd:  # load_state_dict's RuntimeError was a traceback
            raise WeightsError(
                f"{source}: the {name} discriminator {'lacks' if odd[0] in expected else 'has an unknown'} "
                f"{odd[0]} ({len(odd)} tensors differ from the config's): the file is damaged or edited"
            )
