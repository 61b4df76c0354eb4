"""Torch datasets for training and evaluation.

Every dataset returns a dict `{"lr": (3, h, w), "hr": (3, scale*h, scale*w), "name": str}`
with float32 tensors in [0, 1]. Low-resolution images are always made the way the
evaluation protocol makes them (MATLAB bicubic, antialiased, rounded to uint8), so that the
networks train on the kind of input they are tested on.

- `CenterCropDataset`: stage 1 (the paper's COCO recipe): each image centre-cropped.
- `PairedPatchDataset`: stage 2: the HR/LR patch folders written by `srfeat prepare`.
- `RandomCropDataset`: random crops with flips and 90-degree rotations, LR made on the fly.
- `BenchmarkDataset` (in `srfeat.data.benchmark`): whole images, mod-cropped, for validation and `srfeat eval`.

All take one folder or a list of folders of PNG/JPEG/BMP/WebP/TIFF images. A file that
cannot be read is logged by name and skipped; the rest goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypedDict, TypeVar, get_args

import numpy as np
import torch
from torch.utils.data import Dataset

from srfeat.data.image_folders import LazyImages, as_folders, distinct_folders, scan_images
from srfeat.data.io import PathLike, list_images, read_image
from srfeat.data.protocol import (
    bicubic_downscale,
    bicubic_upscale,
    center_crop,
    check_image_scales,
    check_patch_size,
    check_whole_number,
    downscale_tensor,
    mod_crop,
    to_tensor,
)
from srfeat.data.resize import imresize_np
from srfeat.errors import ImageReadError, InvalidOptionError, SRFeatError, check_flag, given
from srfeat.hardware import host_available_memory

logger = logging.getLogger(__name__)

T = TypeVar("T")

# How a random crop's LR is made (`RandomCropDataset`): from the crop alone, or cut from the image's downscale.
LRFrom = Literal["crop", "image"]
# LR pixels of context that MATLAB's antialiased bicubic downscale reads on each side of an LR pixel: its kernel
# reaches 2 LR pixels (2 x scale HR pixels) from the pixel's centre, so a window this much wider than a crop
# gives the crop's LR exactly as the whole image's downscale has it.
LR_MARGIN = 2


class Sample(TypedDict):
    """One LR/HR pair: (C, H, W) float tensors in [0, 1], and the name of the image they come from."""

    lr: torch.Tensor
    hr: torch.Tensor
    name: str


# The protocol's crops and LR images (`srfeat.data.protocol`) and the folder scan (`srfeat.data.image_folders`)
# stay importable from here, where callers have them.
__all__ = [
    "CenterCropDataset",
    "PairedPatchDataset",
    "RandomCropDataset",
    "Sample",
    "bicubic_downscale",
    "bicubic_upscale",
    "center_crop",
    "check_patch_size",
    "distinct_folders",
    "mod_crop",
    "scan_images",
    "to_tensor",
]


class CenterCropDataset(Dataset[Sample]):
    """Stage 1: every image of the folders, centre-cropped to `hr_patch_size`, LR by the protocol.

    Images smaller than the patch in either dimension are skipped (counted in the log).
    `in_memory=True` decodes and crops everything once at construction (good for small
    folders: an epoch is then nearly free); the default reads files on access, which COCO
    needs (118k images).
    """

    def __init__(
        self,
        folders: PathLike | Sequence[PathLike],
        hr_patch_size: int = 296,
        scale: int = 4,
        in_memory: bool = False,
    ) -> None:
        # in_memory="no" held every image (a string is true); a patch size of "96" was a TypeError from inside
        in_memory = check_flag(in_memory, "in_memory")
        hr_patch_size, scale = check_patch_size(hr_patch_size, scale)
        self.hr_patch_size = hr_patch_size
        self.scale = scale
        self.images = LazyImages(scan_images(as_folders(folders), hr_patch_size, type(self).__name__)[0])
        self.cache: list[tuple[str, np.ndarray, np.ndarray]] | None = None
        if in_memory:
            arrays = self.images.load_all()
            self.cache = [self._crop(path, image) for path, image in zip(self.images.paths, arrays, strict=True)]
        else:
            # headers alone can pass for a folder of files cut short: one decoded image says now, not
            # in the first step (after --overwrite has removed the folder's previous run)
            self.images.load(0)

    def __len__(self) -> int:
        return len(self.images.paths)

    def _crop(self, path: Path, image: np.ndarray) -> tuple[str, np.ndarray, np.ndarray]:
        hr = center_crop(image, self.hr_patch_size)
        return path.stem, hr, bicubic_downscale(hr, self.scale)

    def __getitem__(self, index: int) -> Sample:
        if self.cache is not None:
            name, hr, lr = self.cache[index]
        else:
            index, image = self.images.load(index)
            name, hr, lr = self._crop(self.images.paths[index], image)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "name": name}


class PairedPatchDataset(Dataset[Sample]):
    """Stage 2: HR/LR patch pairs from folders written by `srfeat prepare` (ROOT/HR, ROOT/LR).

    Pairs are matched by file name; an HR patch without its LR partner is skipped with a
    warning. A pair that cannot be decoded (a file cut short by a copy) is warned about once and
    replaced by the next readable pair, as `LazyImages` does, so that one bad file cannot stop a
    long run. If `hr_patch_size` is given, patches of another size fail with a clear error.
    """

    def __init__(self, roots: PathLike | Sequence[PathLike], scale: int = 4, hr_patch_size: int | None = None) -> None:
        if hr_patch_size is None:
            scale = check_whole_number(scale, "scale")
        else:
            hr_patch_size, scale = check_patch_size(hr_patch_size, scale)
        self.scale = scale
        self.hr_patch_size = hr_patch_size
        self.pairs: list[tuple[Path, Path]] = []
        for root in as_folders(roots):
            hr_dir, lr_dir = root / "HR", root / "LR"
            if not hr_dir.is_dir() or not lr_dir.is_dir():
                raise SRFeatError(f"{root} has no HR/ and LR/ folders: make it with `srfeat prepare SRC {root}`")
            lr_names = {path.name for path in list_images(lr_dir)}
            for hr_path in list_images(hr_dir):
                if hr_path.name in lr_names:
                    self.pairs.append((hr_path, lr_dir / hr_path.name))
                else:
                    logger.warning("%s has no LR partner in %s; skipped", hr_path, lr_dir)
        if not self.pairs:
            raise SRFeatError(f"no HR/LR patch pairs found in {', '.join(map(str, as_folders(roots)))}")
        self.bad: set[int] = set()  # pairs that failed to decode (in this process)
        # a folder of another patch size or scale is refused now, not in the first step (after a
        # new run has replaced the folder's old one, with --overwrite)
        self._check_sizes(*self._read_pair(0))
        logger.info("PairedPatchDataset: %d pairs", len(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)

    def _read_pair(self, index: int) -> tuple[Path, np.ndarray, Path, np.ndarray]:
        for offset in range(len(self.pairs)):
            candidate = (index + offset) % len(self.pairs)
            if candidate in self.bad:
                continue
            hr_path, lr_path = self.pairs[candidate]
            try:
                return hr_path, read_image(hr_path), lr_path, read_image(lr_path)
            except ImageReadError as error:
                logger.warning("%s (the next readable pair is used in its place)", error)
                self.bad.add(candidate)
        raise SRFeatError("none of the HR/LR patch pairs could be read")

    def __getitem__(self, index: int) -> Sample:
        hr_path, hr, lr_path, lr = self._read_pair(index)
        self._check_sizes(hr_path, hr, lr_path, lr)
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "name": hr_path.stem}

    def _check_sizes(self, hr_path: Path, hr: np.ndarray, lr_path: Path, lr: np.ndarray) -> None:
        if hr.shape[0] != lr.shape[0] * self.scale or hr.shape[1] != lr.shape[1] * self.scale:
            raise SRFeatError(
                f"{hr_path} ({hr.shape[1]}x{hr.shape[0]}) is not {self.scale}x its LR {lr_path} "
                f"({lr.shape[1]}x{lr.shape[0]}): wrong --scale or a broken patch folder"
            )
        if self.hr_patch_size is not None and hr.shape[:2] != (self.hr_patch_size, self.hr_patch_size):
            raise SRFeatError(
                f"{hr_path} is {hr.shape[1]}x{hr.shape[0]}, expected {self.hr_patch_size}x{self.hr_patch_size}: "
                f"prepare the patches with --hr-patch-size {self.hr_patch_size}"
            )


def _drawn(choices: Sequence[T]) -> T:
    """One of `choices` at random; drawn only where there is a choice, so that with one image scale the crops are
    those drawn without the option."""
    return choices[int(torch.randint(0, len(choices), ()).item())] if len(choices) > 1 else choices[0]


class RandomCropDataset(Dataset[Sample]):
    """Random HR crops of `hr_patch_size` with a random flip and 90-degree rotation, LR on the fly.

    One pass over the dataset (an "epoch") visits every image `repeats` times, each time at
    a new random position and orientation. Randomness comes from torch's generator, which
    the DataLoader seeds differently in every worker. With `in_memory=True` the images are
    decoded once at construction, so an item costs one crop and one x1/scale resize; with
    False each item decodes its file. The default (None) holds them when, decoded, they take
    at most half the available memory (from the file headers), and reads them on access
    otherwise, with a log line: a training folder the size of COCO would not fit.

    `image_scales` below 1 augment the images by size, as the networks of VDSR's time were trained on
    the 291 images (pytorch-vdsr's generate_train.m shrinks each by 1, 0.7 and 0.5): each crop is drawn
    from the image shrunk by one of the factors, picked at random among those that leave it at least a
    patch wide (MATLAB bicubic, rounded to uint8: the smaller image is what a camera of fewer pixels
    would have taken). The default (1,) keeps the images as they are, and draws crops exactly as
    without the option.

    `image_aspects` below 1 squeeze each shrunk image in width by one of the factors as well (MATLAB bicubic
    again), so that the network meets each texture at more widths than heights and the other way round (a
    crop's quarter turn makes a squeezed width a squeezed height): more pairs from the same images, as
    `image_scales` makes. Each crop is drawn from one of the versions (a scale and an aspect) that leave the image
    a patch wide, all equally likely. The default (1,) squeezes nothing and draws crops exactly as without it.

    `lr_from` says how a crop's LR is made. "crop" (the default) downscales the HR crop on its own, as the
    authors made their patches: MATLAB pads the crop by mirroring it, so the LR's outer two pixels on each side
    hold a blur of the mirror rather than of the image around the crop. "image" cuts the LR crop from the
    downscaled image (cut to a multiple of the scale, as a benchmark's HR is), as VDSR and MemNet made their
    training pairs and as every LR pixel away from an image's own edges is at test time: the crops sit on the
    LR grid, and each is downscaled with the `LR_MARGIN` pixels around it, which is all MATLAB's kernel reaches.

    `permute_channels` puts each pair's red, green and blue in one of their six orders, at random (Yoo et al.,
    2020, "Rethinking data augmentation for image super-resolution": the RGB permutation, which keeps every edge
    where it is): a green leaf becomes a red or a blue one, so that the same images give the network more colours,
    and luma contrasts, than they hold. HR and LR are permuted alike; MATLAB's downscale works on each channel
    alone, so the LR is still the protocol's. False (the default) draws crops exactly as without it.
    """

    def __init__(
        self,
        folders: PathLike | Sequence[PathLike],
        hr_patch_size: int = 296,
        scale: int = 4,
        repeats: int = 1,
        in_memory: bool | None = None,
        image_scales: Sequence[float] = (1.0,),
        lr_from: LRFrom = "crop",
        image_aspects: Sequence[float] = (1.0,),
        permute_channels: bool = False,
    ) -> None:
        self.permute_channels = check_flag(permute_channels, "permute_channels")
        if in_memory is not None:
            in_memory = check_flag(in_memory, "in_memory", choices="True, False or None (held if it fits)")
        if lr_from not in get_args(LRFrom):
            raise InvalidOptionError(f'lr_from must be "crop" or "image", got {given(lr_from)}')
        self.lr_from = lr_from
        hr_patch_size, scale = check_patch_size(hr_patch_size, scale)
        repeats = check_whole_number(repeats, "repeats")
        self.image_scales = check_image_scales(image_scales)
        self.image_aspects = check_image_scales(image_aspects, "image_aspects", "e.g. [1.0, 0.85, 0.7]")
        self.hr_patch_size = hr_patch_size
        self.scale = scale
        self.repeats = repeats
        # An image is used where its largest version leaves a patch: MATLAB's output is ceil(side * factor) wide.
        least_side = math.floor((hr_patch_size - 1) / (max(self.image_scales) * max(self.image_aspects))) + 1
        paths, decoded_bytes = scan_images(as_folders(folders), least_side, type(self).__name__)
        # the versions' pixels, at most, as a multiple of the image's: each scale's area times each aspect
        decoded_bytes = round(decoded_bytes * sum(factor**2 for factor in self.image_scales) * sum(self.image_aspects))
        self.images = LazyImages(paths)
        if in_memory is None:
            available = host_available_memory()
            in_memory = decoded_bytes <= available / 2
            if not in_memory:
                logger.info(
                    "%s: the %d images take %.1f GB decoded, more than half of the %.1f GB available: "
                    "each is read when a crop of it is drawn",
                    type(self).__name__,
                    len(paths),
                    decoded_bytes / 1e9,
                    available / 1e9,
                )
        # The versions of each image a crop is drawn from: one per image scale and aspect that leave a patch
        # (uint8 C, H, W).
        self.cache: list[list[torch.Tensor]] | None = None
        if in_memory:
            # uint8 tensors: 4x smaller than float, and cropping a view is free.
            self.cache = [
                [self._shrunk(array, version) for version in self._usable_versions(array)]
                for array in self.images.load_all()
            ]
        else:
            self.images.load(0)  # as CenterCropDataset: a folder of only undecodable files is refused now

    def _usable_versions(self, array: np.ndarray) -> list[tuple[float, float]]:
        """The (image scale, aspect) pairs that leave `array` (H, W, C) a patch wide and high: MATLAB's output is
        ceil(side * factor)."""
        height, width = array.shape[:2]
        return [
            (factor, aspect)
            for factor in self.image_scales
            for aspect in self.image_aspects
            if min(math.ceil(height * factor), math.ceil(math.ceil(width * factor) * aspect)) >= self.hr_patch_size
        ]

    @staticmethod
    def _shrunk(array: np.ndarray, version: tuple[float, float]) -> torch.Tensor:
        """`array` (H, W, C uint8) shrunk by a version's factor, then squeezed in width by its aspect, as a
        (C, H, W) tensor."""
        factor, aspect = version
        shrunk = array if factor == 1.0 else imresize_np(array, factor)
        if aspect != 1.0:  # a second resize, of the width alone (its height pass at scale 1 copies the rows)
            height, width = shrunk.shape[:2]
            shrunk = imresize_np(shrunk, size=(height, math.ceil(width * aspect)))
        return torch.from_numpy(shrunk.transpose(2, 0, 1).copy())

    def __len__(self) -> int:
        return len(self.images.paths) * self.repeats

    def __getitem__(self, index: int) -> Sample:
        image_index = index % len(self.images.paths)
        if self.cache is not None:
            image = _drawn(self.cache[image_index])
        else:  # only the version drawn is made: an item read from its file costs one resize or two, not one per version
            image_index, array = self.images.load(image_index)
            image = self._shrunk(array, _drawn(self._usable_versions(array)))
        if self.lr_from == "crop":
            hr = _oriented(self._crop(image), *_orientation()).float().div_(255.0)
            lr = downscale_tensor(hr, self.scale)
        else:
            hr, lr = self._crop_on_lr_grid(image)
            # flips and quarter turns commute with MATLAB's downscale (its kernel is symmetric): the pair turns as one
            flip, turns = _orientation()
            hr, lr = _oriented(hr, flip, turns), _oriented(lr, flip, turns)
        if self.permute_channels:  # drawn only here, so that without it the crops are those drawn before it
            order = torch.randperm(3)
            hr, lr = hr[order], lr[order]
        return {"lr": lr.contiguous(), "hr": hr.contiguous(), "name": self.images.paths[image_index].stem}

    def _crop(self, image: torch.Tensor) -> torch.Tensor:
        """An HR crop anywhere in `image` (C, H, W)."""
        size = self.hr_patch_size
        height, width = image.shape[-2:]
        top = int(torch.randint(0, height - size + 1, ()).item())
        left = int(torch.randint(0, width - size + 1, ()).item())
        return image[:, top : top + size, left : left + size]

    def _crop_on_lr_grid(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """An HR crop at a multiple of the scale in `image` cut to a multiple of it, and the same crop of the
        image's downscale, computed from the crop and the margin around it (cut at the image's edges, where
        MATLAB pads the whole image as it pads the window)."""
        size, scale = self.hr_patch_size, self.scale
        height, width = (side - side % scale for side in image.shape[-2:])
        top = scale * int(torch.randint(0, (height - size) // scale + 1, ()).item())
        left = scale * int(torch.randint(0, (width - size) // scale + 1, ()).item())
        margin = LR_MARGIN * scale
        window_top, window_left = max(top - margin, 0), max(left - margin, 0)
        window = image[:, window_top : min(top + size + margin, height), window_left : min(left + size + margin, width)]
        window = window.float().div_(255.0)
        lr_top, lr_left = (top - window_top) // scale, (left - window_left) // scale
        lr = downscale_tensor(window, scale)[:, lr_top : lr_top + size // scale, lr_left : lr_left + size // scale]
        return window[:, top - window_top : top - window_top + size, left - window_left : left - window_left + size], lr


def _orientation() -> tuple[bool, int]:
    """A random mirroring and number of quarter turns: the eight orientations, equally likely."""
    return bool(torch.randint(0, 2, ()).item()), int(torch.randint(0, 4, ()).item())


def _oriented(image: torch.Tensor, flip: bool, turns: int) -> torch.Tensor:
    """(C, H, W) `image` mirrored left to right if `flip`, then turned by `turns` quarter turns."""
    return torch.rot90(image.flip(-1) if flip else image, turns, dims=(-2, -1))
