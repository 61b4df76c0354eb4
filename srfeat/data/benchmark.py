"""Whole benchmark images for validation and `srfeat eval`: HR mod-cropped to the scale, LR by the protocol."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from srfeat.data.datasets import Sample
from srfeat.data.image_folders import as_folders, holds_no_image
from srfeat.data.io import PathLike, image_size, list_images, read_image_noting_losses
from srfeat.data.protocol import bicubic_downscale, check_whole_number, mod_crop, to_tensor
from srfeat.errors import ImageReadError, SRFeatError
from srfeat.hardware import host_available_memory, one_line_if_out_of_memory

logger = logging.getLogger("srfeat.data.datasets")  # the datasets' messages keep the logger they always had


class BenchmarkSample(Sample):
    """A benchmark image: the pair, its dataset's name, and the uint8 (H, W, C) arrays the protocol scores."""

    dataset: str
    hr_uint8: np.ndarray
    lr_uint8: np.ndarray


# The peak memory of scoring one image, per byte of its uint8 HR: the protocol's bicubic (down, and up for the
# `bicubic` baseline) works in float64 on the whole image. Measured: 20 at 4000x4000 (`/usr/bin/time -f %M srfeat
# eval --model bicubic`, against a 200x200 image), 12 for `bicubic_downscale` alone.
EVALUATION_WORKING_BYTES = 20


class BenchmarkDataset(Dataset[BenchmarkSample]):
    """Whole images for validation and `srfeat eval`: HR mod-cropped to the scale, LR by the protocol.

    All images are decoded at construction (benchmark sets are small, and `srfeat eval` scores
    every image with each of many models), so unreadable files are reported right away, by name,
    and `names` lists the ones that are used. A folder whose decoded images would take more than
    half the available memory, or whose largest image would not fit beside them while it is scored
    (`EVALUATION_WORKING_BYTES`), is refused from the file headers, before any is decoded. `limit`
    keeps the first that many readable images (training validation's `max_images`). Besides the
    float tensors, items carry the exact uint8 arrays as `hr_uint8` / `lr_uint8` (HxWx3 numpy),
    which the metrics need; `files` is the file of each item; `reduced` names the files of which 8-bit
    RGB lost "alpha" or "depth".
    """

    def __init__(self, folders: PathLike | Sequence[PathLike], scale: int = 4, limit: int | None = None) -> None:
        scale = check_whole_number(scale, "scale")  # "4" was a TypeError from the memory estimate
        if limit is not None:
            limit = check_whole_number(limit, "limit")
        self.scale = scale
        self.folders = as_folders(folders)
        self.items: list[tuple[str, str, np.ndarray, np.ndarray]] = []
        self.skipped: list[Path] = []
        self.reduced: dict[Path, list[str]] = {}  # what 8-bit RGB lost of each file used: "alpha", "depth"
        candidates: list[tuple[Path, Path]] = []  # (folder, image), headers read
        decoded_bytes = 0
        largest: tuple[int, Path | None] = (0, None)  # HR bytes (uint8) of the largest image, and its file
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
                    largest = max(largest, (height * width * 3, path), key=lambda item: item[0])
                candidates.append((folder, path))
        available = host_available_memory()
        if decoded_bytes > available / 2:
            raise SRFeatError(
                f"the images of {', '.join(map(str, self.folders))} take about {decoded_bytes / 1e9:.1f} GB decoded, "
                f"more than half of the {available / 1e9:.1f} GB of memory available: evaluate fewer images at a "
                "time (split the folder)"
            )
        # A 144-megapixel HR (under PIL's limit) passed the check above and took 5 GB more to downscale and
        # 8 GB to score: killed, or a traceback under a memory limit.
        working = largest[0] * EVALUATION_WORKING_BYTES
        if largest[1] is not None and decoded_bytes + working > available:
            raise SRFeatError(
                f"{largest[1]}: scoring this {largest[0] / 3e6:.3g}-megapixel image takes about "
                f"{working / 1e9:.1f} GB of memory at its peak (the protocol's bicubic works in float64 on the whole "
                f"image), beside {decoded_bytes / 1e9:.1f} GB of decoded images, and {available / 1e9:.1f} GB is "
                "available: evaluate a smaller image (crop or downscale it)"
            )
        used: list[Path] = []  # the file of each item
        for folder, path in candidates:
            if limit is not None and len(self.items) >= limit:
                break
            # under a memory limit (ulimit -v) an allocation fails rather than the process being killed
            with one_line_if_out_of_memory(
                lambda path=path: (
                    f"{path}: out of memory decoding it or making its LR "
                    "image: evaluate a smaller image (crop or downscale it)"
                )
            ):
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
            raise SRFeatError(holds_no_image(self.folders[0], 0, 0, 0, scale))
        if not self.items:
            raise SRFeatError(f"no readable images in {', '.join(map(str, self.folders))}")
        # Images are named by stem (`baby`), but `baby.png` beside `baby.bmp` would give two rows of one
        # name in `srfeat eval --per-image` and its JSON: those keep their whole file names.
        self.files = used  # the file of each item: `figure_image="baby.png"` finds the image named `baby`
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

    def __getitem__(self, index: int) -> BenchmarkSample:
        dataset, name, hr, lr = self.items[index]
        return {
            "lr": to_tensor(lr),
            "hr": to_tensor(hr),
            "name": name,
            "dataset": dataset,
            "hr_uint8": hr,
            "lr_uint8": lr,
        }
