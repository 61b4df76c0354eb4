"""The value checks a training config passes when it is read or built (`srfeat.training.config`):
what types alone do not express (ranges, multiples, sanity limits, empty paths), each a one-line
ConfigError naming the config key."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from srfeat.errors import ConfigError, InvalidOptionError, shown
from srfeat.path_checks import path_too_long, unnameable_character

if TYPE_CHECKING:
    from srfeat.training.config import TrainingConfig

# The most steps (and epochs) a run may plan, and the largest count a resume takes from state.pt: past
# 2**53 a count is no longer exact as the float the schedules divide it by; no run gets near (a step
# a microsecond for 285 years). train.epochs=10**400 was a dry run's OverflowError in the progress
# schedule's arithmetic, and 10**23 passed, a length past every run's and past the step counts a resume takes.
LARGEST_STEP_COUNT = 2**53


def check(config: TrainingConfig) -> None:
    """Value checks that types alone do not express."""
    model, data, optim, train = config.model, config.data, config.optim, config.train

    def positive(key: str, value: float | None) -> None:
        if value is not None and value <= 0:
            raise ConfigError(f"config key {key} must be positive, got {shown(value)}")

    if model.scale not in (2, 4):
        raise ConfigError(f"config key model.scale must be 2 or 4, got {shown(model.scale)}")
    for key, value in (
        ("model.num_features", model.num_features),
        ("model.num_blocks", model.num_blocks),
        ("model.discriminator_channels", model.discriminator_channels),
        ("model.discriminator_dense_features", model.discriminator_dense_features),
        ("data.hr_patch_size", data.hr_patch_size),
        ("data.repeat", data.repeat),
        ("data.prefetch_factor", data.prefetch_factor),
        ("optim.lr", optim.lr),
        ("optim.discriminator_lr", optim.discriminator_lr),
        ("optim.lr_gamma", optim.lr_gamma),
        ("train.batch_size", train.batch_size),
        ("train.epochs", train.epochs),
        ("train.max_steps", train.max_steps),
        ("train.max_minutes", train.max_minutes),
        ("train.log_every", train.log_every),
        ("train.checkpoint_every", train.checkpoint_every),
        ("train.grad_clip_norm", train.grad_clip_norm),
        ("validation.every", config.validation.every),
        ("validation.max_images", config.validation.max_images),
    ):
        positive(key, value)
    # Sanity limits, far above the paper's values: a typo must not build a network that takes
    # the machine's memory. Item seeds are seed * 1e13 + ...: larger seeds overflow 64 bits.
    for key, value, low, high in (
        ("model.num_features", model.num_features, 1, 1024),
        ("model.num_blocks", model.num_blocks, 1, 256),
        ("model.discriminator_channels", model.discriminator_channels, 1, 1024),
        ("model.discriminator_dense_features", model.discriminator_dense_features, 1, 16384),
        ("data.hr_patch_size", data.hr_patch_size, 1, 1024),
        ("data.num_workers", data.num_workers, 0, 256),
        # the loader primes prefetch_factor x num_workers batches in one loop: 10^12 never returns
        ("data.prefetch_factor", data.prefetch_factor, 1, 64),
        # an epoch's order is one permutation of its items: 10^12 of them would take terabytes
        ("data.repeat", data.repeat, 1, 100_000),
        ("train.batch_size", train.batch_size, 1, 4096),
        ("train.seed", train.seed, 0, 1_000_000),
        ("validation.sample_images", config.validation.sample_images, 0, 64),
    ):
        if not low <= value <= high:
            raise ConfigError(f"config key {key} must be in {low}..{high:,}, got {shown(value)}")
    for key, value in (("train.epochs", train.epochs), ("train.max_steps", train.max_steps)):
        check_run_length(f"config key {key}", value)
    for key, value in (
        ("train.log_every", train.log_every),
        ("train.checkpoint_every", train.checkpoint_every),
        ("validation.every", config.validation.every),
    ):
        _check_step_interval(key, value)
    if data.hr_patch_size % model.scale:
        raise ConfigError(
            f"data.hr_patch_size ({data.hr_patch_size}) must be a multiple of model.scale ({model.scale})"
        )
    if config.stage == 2 and data.hr_patch_size < 16:
        raise ConfigError(
            f"stage 2 needs data.hr_patch_size >= 16 (VGG19 conv5_4 downsamples by 16), got {data.hr_patch_size}"
        )
    if config.stage == 2 and train.batch_size == 1:
        _check_one_patch_batch_norm(model.discriminators, data.hr_patch_size, model.scale)
    if not model.discriminators:
        raise ConfigError(
            "config key model.discriminators is empty: name at least one of image, feature "
            "([image] is SRFeat_I, [feature] SRFeat_F, [image, feature] SRFeat_IF)"
        )
    if len(set(model.discriminators)) != len(model.discriminators):
        raise ConfigError(f"config key model.discriminators names one twice: {model.discriminators}")
    for key, value in (
        ("model.image_adversarial_weight", model.image_adversarial_weight),
        ("model.feature_adversarial_weight", model.feature_adversarial_weight),
        ("optim.eps", optim.eps),
        ("optim.discriminator_eps", optim.discriminator_eps),
    ):
        positive(key, value)
    if not data.train_dirs:
        raise ConfigError("config key data.train_dirs is empty: give the training image folders")
    # An empty path is the working directory: `data.train_dirs=` (the value left out) trained on the
    # images there, `out_dir: ""` wrote the run into it.
    for key, value in (
        ("datasets_dir", config.datasets_dir),  # first: a path written with {datasets_dir} holds it
        *((f"data.train_dirs[{i}]", folder) for i, folder in enumerate(data.train_dirs)),
        ("validation.dir", config.validation.dir),
        ("train.init_generator", train.init_generator),
        ("out_dir", config.out_dir),
        ("model.vgg_weights", model.vgg_weights),
    ):
        if value is not None and not value.strip():
            none = " (null for none)" if key in ("validation.dir", "train.init_generator") else ""
            raise ConfigError(f"config key {key} is an empty path: give one{none}")
        if value is not None and (character := unnameable_character(value)):
            # YAML's escapes write what argv cannot: "\0" was "embedded null byte", "\ud800" a UnicodeEncodeError
            raise ConfigError(
                f"config key {key} holds {character!a}, which no file name can hold: give the path without it"
            )
        # a URL (model.vgg_weights) is no path; {datasets_dir} is checked as substituted, where it is used
        if value is not None and "://" not in value and (long := path_too_long(str(config.resolve_path(value)))):
            raise ConfigError(f"config key {key} is too long for a path: {long}; give a shorter one")
    for key, beta in (("optim.beta1", optim.beta1), ("optim.beta2", optim.beta2)):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"config key {key} must be in [0, 1), got {beta}")
    # Adam moves each weight by about lr per step: a rate above 1 is a slip (1e4 for 1e-4), and its run would
    # diverge at the first step, after the data and networks were built.
    for key, lr in (("optim.lr", optim.lr), ("optim.discriminator_lr", optim.discriminator_lr)):
        if lr is not None and lr > 1.0:
            raise ConfigError(
                f"config key {key} must be in (0, 1] (Adam moves each weight by about that much per step; "
                f"the paper's is 1e-4), got {shown(lr)}"
            )
    # A factor above 1 raises the learning rate at each milestone: 10 for "divide by 10" is the slip, and
    # its run diverges hours later. 1 (a flat rate) is allowed.
    if optim.lr_gamma > 1.0:
        raise ConfigError(
            f"config key optim.lr_gamma must be in (0, 1] (it multiplies the learning rate; 0.1 divides it by 10), "
            f"got {optim.lr_gamma}"
        )
    if train.ema_decay is not None and not 0.0 <= train.ema_decay < 1.0:
        raise ConfigError(
            f"config key train.ema_decay must be in [0, 1) (e.g. 0.999; 0 or null: off), got {train.ema_decay}"
        )
    from srfeat.data.protocol import check_image_scales  # here: reading a config imports no torch

    try:
        check_image_scales(data.image_scales, "config key data.image_scales")
        check_image_scales(data.image_aspects, "config key data.image_aspects", "e.g. [1.0, 0.85, 0.7]")
    except InvalidOptionError as error:
        raise ConfigError(str(error)) from None
    # Only random crops are augmented at load time: the other kinds would silently ignore these.
    augmentations = (
        ("image_scales", data.image_scales, [1.0], "[1.0]"),
        ("image_aspects", data.image_aspects, [1.0], "[1.0]"),
        ("permute_channels", data.permute_channels, False, "false"),
    )
    for key, value, off, shown_off in augmentations:
        if data.kind != "random_crop" and value != off:
            raise ConfigError(
                f"config key data.{key} augments random crops (data.kind random_crop), not data.kind {data.kind}: "
                f"leave it at {shown_off}"
            )
    if data.kind != "random_crop" and data.lr_from != "crop":
        raise ConfigError(
            f"config key data.lr_from chooses how random crops (data.kind random_crop) get their LR, not data.kind "
            f"{data.kind}'s: leave it at crop"
        )
    if model.luma_loss_weight < 0:
        raise ConfigError(
            "config key model.luma_loss_weight must be 0 (the paper's loss) or more, "
            f"got {shown(model.luma_loss_weight)}"
        )
    # Stage 2's generator loss has no pixel term: a weight there would change nothing, silently.
    if config.stage == 2 and model.luma_loss_weight:
        raise ConfigError(
            "config key model.luma_loss_weight weighs a term of stage 1's pixel loss, which stage 2 does not use: "
            "leave it at 0 in stage 2"
        )
    if config.stage == 2 and model.pixel_loss != "mse":
        raise ConfigError(
            "config key model.pixel_loss chooses the distance of stage 1's pixel loss, which stage 2 does not use: "
            "leave it at mse in stage 2"
        )
    if optim.lr_schedule == "progress" and any(not 0.0 < m < 1.0 for m in optim.lr_milestones):
        raise ConfigError(
            "optim.lr_milestones must be fractions in (0, 1) with lr_schedule 'progress', "
            f"got {shown(optim.lr_milestones)}"
        )
    if optim.lr_schedule == "epoch" and any(m < 1 or m != int(m) for m in optim.lr_milestones):
        raise ConfigError(
            "optim.lr_milestones must be whole epoch numbers >= 1 with lr_schedule 'epoch', "
            f"got {shown(optim.lr_milestones)}"
        )
    # Each milestone multiplies the rate by lr_gamma: [10, 10] was lr_gamma squared from epoch 10, silently.
    twice = sorted({m for m in optim.lr_milestones if optim.lr_milestones.count(m) > 1})
    if twice:
        raise ConfigError(
            f"optim.lr_milestones lists {twice[0]:g} more than once (each applies lr_gamma): give it once"
        )
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", train.device):
        raise ConfigError(f"config key train.device must be auto, cpu, cuda or cuda:N, got {shown(train.device)}")


def check_run_length(name: str, value: int | None) -> None:
    """A run length (train.epochs, train.max_steps, --max-steps) no larger than LARGEST_STEP_COUNT."""
    if value is not None and value > LARGEST_STEP_COUNT:
        raise ConfigError(
            f"{name} must be at most 2**53 ({LARGEST_STEP_COUNT:,}), got {shown(value)}: no run gets near it; "
            "give the steps or epochs the run is to take (train.max_minutes ends it by time)"
        )


def _check_step_interval(key: str, every: int) -> None:
    """A step interval (train.log_every, train.checkpoint_every, validation.every) within the run lengths' bound.

    10**30 or 2**63 passed: harmless to the run (it logs, validates and saves at its end anyway), but no
    run has that many steps, and the run lengths beside them are refused past 2**53. One range for every
    step count of a config (validation.max_images counts images: past a folder's it means all of them)."""
    if every > LARGEST_STEP_COUNT:
        raise ConfigError(
            f"config key {key} must be in 1..2**53 ({LARGEST_STEP_COUNT:,}), got {shown(every)}: no run has that "
            "many steps; a run logs, validates and saves at its last step anyway"
        )


# How much each discriminator shrinks a patch to its last BatchNorm's map: its four stride-2 convs
# (srfeat.archs.discriminators.CONV_BLOCKS), and before the feature discriminator VGG19's four pools.
DISCRIMINATOR_DOWNSAMPLING = {"image": 16, "feature": 16 * 16}


def _check_one_patch_batch_norm(discriminators: Sequence[str], hr_patch_size: int, scale: int) -> None:
    """BatchNorm in training needs more than one value per channel: with one patch a step, a
    discriminator whose last map is 1x1 failed its first step with PyTorch's traceback ("Expected
    more than 1 value per channel when training")."""
    for name in discriminators:
        shrink = DISCRIMINATOR_DOWNSAMPLING[name]
        if hr_patch_size <= shrink:  # its last map is ceil(hr_patch_size / shrink) pixels wide
            least = (shrink // scale + 1) * scale  # the next patch size above, a multiple of the scale
            raise ConfigError(
                f"stage 2 with train.batch_size 1 needs data.hr_patch_size above {shrink}, got {hr_patch_size}: "
                f"the {name} discriminator's BatchNorm would see a 1x1 map, one value per channel, which it cannot "
                f"normalise; use train.batch_size 2 or more, or data.hr_patch_size {least} or more"
            )
