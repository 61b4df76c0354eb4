"""Torch datasets for training and evaluation.

Every dataset returns a dict `{"lr": (3, h, w), "hr": (3, scale*h, scale*w), "name": str}`
with float32 tensors in [0, 1]. Low-resolution images are always made the way the
evaluation protocol makes them (MATLAB bicubic, antialiased, rounded to uint8), so that the
networks train on the kind of input they are tested on.

- `CenterCropDataset`: stage 1 (the paper's COCO recipe): each image centre-cropped.
- `PairedPatchDataset`: stage 2: the HR/LR patch folders written by `srfeat prepare`.
- `RandomCropDataset`: random crops with flips and 90-degree rotations, LR made on the fly.
- `BenchmarkDataset`: whole images, mod-cropped, for validation and `srfeat eval`.

All take one folder or a list of folders of PNG/JPEG/BMP/WebP/TIFF images. A file that
cannot be read is logged by name and skipped; the rest goes on.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from srfeat.data.io import PathLike, image_size, list_images, read_image, read_image_noting_losses
from srfeat.data.resize import imresize, imresize_np
from srfeat.errors import ImageReadError, SRFeatError
from srfeat.hardware import host_available_memory

logger = logging.getLogger(__name__)

Sample = dict[str, torch.Tensor | str]

__all__ = [
    "BenchmarkDataset",
    "CenterCropDataset",
    "PairedPatchDataset",
    "RandomCropDataset",
    "bicubic_downscale",
    "bicubic_upscale",
    "center_crop",
    "check_patch_size",
    "mod_crop",
    "scan_images",
    "to_tensor",
]


# ----------------------------------------------------------------------------- protocol


def mod_crop(image: np.ndarray, scale: int) -> np.ndarray:
    """Crop an HxW(xC) image to a multiple of `scale` (bottom/right rows go, as in the protocol)."""
    height, width = image.shape[:2]
    return image[: height - height % scale, : width - width % scale]


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The protocol's LR image: MATLAB bicubic x1/scale (antialiased) of uint8 HR, rounded to uint8.

    The HR size must be a multiple of `scale` (use `mod_crop`), so that LR is exactly 1/scale.
    """
    if hr.shape[0] % scale or hr.shape[1] % scale:
        raise ValueError(f"HR size {hr.shape[:2]} is not a multiple of the scale {scale}; mod_crop it first")
    return imresize_np(hr, 1.0 / scale)


def bicubic_upscale(lr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB bicubic xscale of a uint8 image, rounded to uint8 (the `bicubic` baseline)."""
    return imresize_np(lr, float(scale))


def check_patch_size(hr_patch_size: int, scale: int) -> None:
    """HR patches must divide by the scale, or LR patches would not be exactly 1/scale."""
    if hr_patch_size < scale or hr_patch_size % scale:
        raise SRFeatError(f"the HR patch size {hr_patch_size} must be a positive multiple of the scale {scale}")


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """The central size x size window of an HxW(xC) image."""
    height, width = image.shape[:2]
    top, left = (height - size) // 2, (width - size) // 2
    return image[top : top + size, left : left + size]


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 -> (C, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)


def _downscale_tensor(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """LR from a (3, H, W) float HR tensor in [0, 1], rounded to uint8 levels like the protocol.

    float32 is enough here (training on the fly); `bicubic_downscale` is the exact float64 path.
    """
    lr = imresize(hr.mul(255.0), scale=1.0 / scale)
    return lr.round_().clamp_(0.0, 255.0).div_(255.0)


# ----------------------------------------------------------------------------- folders


def _as_folders(folders: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(folders, (str, Path)) or not isinstance(folders, Sequence):
        folders = [folders]  # type: ignore[list-item]
    paths = [Path(folder) for folder in folders]  # type: ignore[union-attr]
    if not paths:
        raise SRFeatError("no image folders given")
    return paths


def distinct_folders(folders: Sequence[PathLike], option: str, outcome: str) -> list[Path]:
    """The folders, a folder given twice (under any name) kept once, with a warning that names
    `option` and the `outcome` ("evaluated once"): twice would only weigh its images double."""
    kept: dict[Path, Path] = {}
    for folder in map(Path, folders):
        key = folder.resolve()
        if key in kept:
            logger.warning("%s %s is given twice (the same folder as %s): %s", option, folder, kept[key], outcome)
            continue
        kept[key] = folder
    return list(kept.values())


def _holds_no_image(folder: Path, files: int, unreadable: int, too_small: int, min_size: int) -> str:
    """Why `folder` gave no usable image, with the count of what was skipped."""
    if files:
        skipped = [f"{unreadable} not readable as images"] * bool(unreadable)
        skipped += [f"{too_small} smaller than {min_size}x{min_size}"] * bool(too_small)
        return f"{folder} holds no usable image ({files} file(s) skipped: {', '.join(skipped)})"
    entries = list(folder.iterdir())
    subfolders = sum(1 for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    if subfolders:  # DIV2K/ for DIV2K/DIV2K_train_HR/: subfolders are not read
        return f"{folder} holds no image files, only {subfolders} subfolder(s) (not read): give the folder of images"
    return f"{folder} holds no image files" + (" (only hidden ones)" if entries else ": it is empty")


def scan_images(folders: list[Path], min_size: int, owner: str) -> tuple[list[Path], int]:
    """Images of `folders` at least min_size x min_size (from headers); others logged and dropped.
    Also the bytes the usable ones take decoded (RGB uint8). A folder without a usable image is
    named with what it holds: a warning, or the error when no folder has one."""
    usable: list[Path] = []
    decoded_bytes = 0
    too_small: list[Path] = []
    unreadable = 0
    barren: list[str] = []  # folders that gave nothing, and why
    for folder in folders:
        files = list_images(folder)
        counts = len(usable), unreadable, len(too_small)
        for path in files:
            try:
                height, width = image_size(path)
            except ImageReadError as error:
                logger.warning("%s", error)
                unreadable += 1
                continue
            if min(height, width) >= min_size:
                usable.append(path)
                decoded_bytes += height * width * 3
            else:
                too_small.append(path)
        if len(usable) == counts[0]:
            skipped = unreadable - counts[1], len(too_small) - counts[2]
            barren.append(_holds_no_image(folder, len(files), *skipped, min_size))
    if too_small:
        logger.info("%s: %d image(s) smaller than %d px skipped", owner, len(too_small), min_size)
        logger.debug("%s: too small: %s", owner, ", ".join(str(path) for path in too_small))
    logger.info(
        "%s: %d image(s) from %s%s",
        owner,
        len(usable),
        ", ".join(folder.name for folder in folders),
        f" ({unreadable} unreadable, skipped)" if unreadable else "",
    )
    if not usable:
        raise SRFeatError(f"{owner}: no usable images (at least {min_size}x{min_size}): {'; '.join(barren)}")
    for line in barren:  # one of several folders: a wrong path, most likely
        logger.warning("%s: %s", owner, line)
    return usable, decoded_bytes


class _LazyImages:
    """Decodes files on access; a file that fails to decode is warned about once and replaced
    by the next readable one, so that one bad file cannot stop a long training run."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.bad: set[int] = set()

    def load(self, index: int) -> tuple[int, np.ndarray]:
        for offset in range(len(self.paths)):
            candidate = (index + offset) % len(self.paths)
            if candidate in self.bad:
                continue
            try:
                return candidate, read_image(self.paths[candidate])
            except ImageReadError as error:
                logger.warning("%s", error)
                self.bad.add(candidate)
        raise SRFeatError("none of the images could be read")

    def load_all(self) -> list[np.ndarray]:
        """Decode every file now; unreadable ones are warned about and dropped from `paths`."""
        arrays: list[np.ndarray] = []
        readable: list[Path] = []
        for path in self.paths:
            try:
                arrays.append(read_image(path))
                readable.append(path)
            except ImageReadError as error:
                logger.warning("%s", error)
        if not readable:
            raise SRFeatError("none of the images could be read")
        self.paths = readable
        return arrays


# ----------------------------------------------------------------------------- datasets


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
        check_patch_size(hr_patch_size, scale)
        self.hr_patch_size = hr_patch_size
        self.scale = scale
        self.images = _LazyImages(scan_images(_as_folders(folders), hr_patch_size, type(self).__name__)[0])
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
    replaced by the next readable pair, as `_LazyImages` does, so that one bad file cannot stop a
    long run. If `hr_patch_size` is given, patches of another size fail with a clear error.
    """

    def __init__(self, roots: PathLike | Sequence[PathLike], scale: int = 4, hr_patch_size: int | None = None) -> None:
        self.scale = scale
        self.hr_patch_size = hr_patch_size
        self.pairs: list[tuple[Path, Path]] = []
        for root in _as_folders(roots):
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
            raise SRFeatError(f"no HR/LR patch pairs found in {', '.join(map(str, _as_folders(roots)))}")
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


class RandomCropDataset(Dataset[Sample]):
    """Random HR crops of `hr_patch_size` with a random flip and 90-degree rotation, LR on the fly.

    One pass over the dataset (an "epoch") visits every image `repeats` times, each time at
    a new random position and orientation. Randomness comes from torch's generator, which
    the DataLoader seeds differently in every worker. With `in_memory=True` the images are
    decoded once at construction, so an item costs one crop and one x1/scale resize; with
    False each item decodes its file. The default (None) holds them when, decoded, they take
    at most half the available memory (from the file headers), and reads them on access
    otherwise, with a log line: a training folder the size of COCO would not fit.
    """

    def __init__(
        self,
        folders: PathLike | Sequence[PathLike],
        hr_patch_size: int = 296,
        scale: int = 4,
        repeats: int = 1,
        in_memory: bool | None = None,
    ) -> None:
        check_patch_size(hr_patch_size, scale)
        if repeats < 1:
            raise SRFeatError(f"repeats must be at least 1, got {repeats}")
        self.hr_patch_size = hr_patch_size
        self.scale = scale
        self.repeats = repeats
        paths, decoded_bytes = scan_images(_as_folders(folders), hr_patch_size, type(self).__name__)
        self.images = _LazyImages(paths)
        self.cache: list[torch.Tensor] | None = None
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
        if in_memory:
            # uint8 (C, H, W) tensors: 4x smaller than float, and cropping a view is free.
            self.cache = [torch.from_numpy(array.transpose(2, 0, 1).copy()) for array in self.images.load_all()]
        else:
            self.images.load(0)  # as CenterCropDataset: a folder of only undecodable files is refused now

    def __len__(self) -> int:
        return len(self.images.paths) * self.repeats

    def __getitem__(self, index: int) -> Sample:
        image_index = index % len(self.images.paths)
        if self.cache is not None:
            image = self.cache[image_index]
        else:
            image_index, array = self.images.load(image_index)
            image = torch.from_numpy(array.transpose(2, 0, 1).copy())
        size = self.hr_patch_size
        height, width = image.shape[-2:]
        top = int(torch.randint(0, height - size + 1, ()).item())
        left = int(torch.randint(0, width - size + 1, ()).item())
        hr = image[:, top : top + size, left : left + size]
        if torch.randint(0, 2, ()).item():
            hr = hr.flip(-1)
        hr = torch.rot90(hr, int(torch.randint(0, 4, ()).item()), dims=(-2, -1))
        hr = hr.float().div_(255.0)
        return {
            "lr": _downscale_tensor(hr, self.scale),
            "hr": hr.contiguous(),
            "name": self.images.paths[image_index].stem,
        }


class BenchmarkDataset(Dataset[Sample]):
    """Whole images for validation and `srfeat eval`: HR mod-cropped to the scale, LR by the protocol.

    All images are decoded at construction (benchmark sets are small, and `srfeat eval` scores
    every image with each of many models), so unreadable files are reported right away, by name,
    and `names` lists the ones that are used. A folder whose decoded images would take more than
    half the available memory is refused from the file headers, before any is decoded. `limit`
    keeps the first that many readable images (training validation's `max_images`). Besides the
    float tensors, items carry the exact uint8 arrays as `hr_uint8` / `lr_uint8` (HxWx3 numpy),
    which the metrics need; `reduced` names the files of which 8-bit RGB lost "alpha" or "depth".
    """

    def __init__(self, folders: PathLike | Sequence[PathLike], scale: int = 4, limit: int | None = None) -> None:
        self.scale = scale
        self.folders = _as_folders(folders)
        self.items: list[tuple[str, str, np.ndarray, np.ndarray]] = []
        self.skipped: list[Path] = []
        self.reduced: dict[Path, list[str]] = {}  # what 8-bit RGB lost of each file used: "alpha", "depth"
        candidates: list[tuple[Path, Path]] = []  # (folder, image), headers read
        decoded_bytes = 0
        for folder in self.folders:
            for path in list_images(folder):
                try:
                    height, width = image_size(path)
                except ImageReadError as error:
                    logger.warning("%s", error)
                    self.skipped.append(path)
                    continue
                if limit is None or len(candidates) < limit:
                    decoded_bytes += height * width * 3 * (1 + 1 / scale**2)  # uint8 HR and its LR
                candidates.append((folder, path))
        available = host_available_memory()
        if decoded_bytes > available / 2:
            raise SRFeatError(
                f"the images of {', '.join(map(str, self.folders))} take about {decoded_bytes / 1e9:.1f} GB decoded, "
                f"more than half of the {available / 1e9:.1f} GB of memory available: evaluate fewer images at a "
                "time (split the folder)"
            )
        used: list[Path] = []  # the file of each item
        for folder, path in candidates:
            if limit is not None and len(self.items) >= limit:
                break
            try:
                image, lost = read_image_noting_losses(path)
                hr = mod_crop(image, scale)
            except ImageReadError as error:
                logger.warning("%s", error)
                self.skipped.append(path)
                continue
            if min(hr.shape[:2]) < scale:
                logger.warning("%s is smaller than the scale %d; skipped", path, scale)
                self.skipped.append(path)
                continue
            self.items.append((folder.name, path.stem, hr, bicubic_downscale(hr, scale)))
            used.append(path)
            if lost:
                self.reduced[path] = lost
        if not self.items and not self.skipped and len(self.folders) == 1:  # no file: empty, hidden or subfolders
            raise SRFeatError(_holds_no_image(self.folders[0], 0, 0, 0, scale))
        if not self.items:
            raise SRFeatError(f"no readable images in {', '.join(map(str, self.folders))}")
        # Images are named by stem (`baby`), but `baby.png` beside `baby.bmp` would give two rows of one
        # name in `srfeat eval --per-image` and its JSON: those keep their whole file names.
        stems = Counter(path.stem for path in used)
        for index, path in enumerate(used):
            if stems[path.stem] > 1:
                dataset, _, hr, lr = self.items[index]
                self.items[index] = (dataset, path.name, hr, lr)

    @property
    def names(self) -> list[str]:
        return [name for _, name, _, _ in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        dataset, name, hr, lr = self.items[index]
        return {
            "lr": to_tensor(lr),
            "hr": to_tensor(hr),
            "name": name,
            "dataset": dataset,
            "hr_uint8": hr,
            "lr_uint8": lr,
        }
