"""The image folders datasets read (`srfeat.data.datasets`): folders given once, scanned from the
file headers (too small, unreadable and empty ones named), and images decoded on access, a file
that fails replaced by the next readable one."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from srfeat.data.io import PathLike, image_size, list_images, read_image
from srfeat.errors import ImageReadError, SRFeatError
from srfeat.path_checks import resolved

logger = logging.getLogger("srfeat.data.datasets")  # the datasets' messages keep the logger they always had


def as_folders(folders: PathLike | Sequence[PathLike]) -> list[Path]:
    """One folder or a list of them, as paths; none at all is an error."""
    if isinstance(folders, (str, Path)) or not isinstance(folders, Sequence):
        folders = [folders]
    paths = [Path(folder) for folder in folders]
    if not paths:
        raise SRFeatError("no image folders given")
    return paths


def distinct_folders(folders: Sequence[PathLike], option: str, outcome: str) -> list[Path]:
    """The folders, a folder given twice (under any name) kept once, with a warning that names
    `option` and the `outcome` ("evaluated once"): twice would only weigh its images double."""
    kept: dict[Path, Path] = {}
    for folder in map(Path, folders):
        key = resolved(folder)
        if key in kept:
            logger.warning("%s %s is given twice (the same folder as %s): %s", option, folder, kept[key], outcome)
            continue
        kept[key] = folder
    return list(kept.values())


def holds_no_image(folder: Path, files: int, unreadable: int, too_small: int, min_size: int) -> str:
    """Why `folder` gave no usable image, with the count of what was skipped."""
    if files:
        skipped = [f"{unreadable} not readable as images"] * bool(unreadable)
        skipped += [f"{too_small} smaller than {min_size}x{min_size}"] * bool(too_small)
        return f"{folder} holds no usable image ({files} file(s) skipped: {', '.join(skipped)})"
    entries = list(folder.iterdir())
    subfolders = sum(1 for entry in entries if entry.is_dir() and not entry.name.startswith("."))
    if subfolders:  # DIV2K/ for DIV2K/DIV2K_train_HR/: subfolders are not read
        return f"{folder} holds no image files, only {subfolders} subfolder(s) (not read): give the folder of images"
    others = sum(1 for entry in entries if not entry.name.startswith("."))  # pipes, devices: list_images names each
    if others:  # "only hidden ones" was said of them
        return f"{folder} holds no image files, only {others} entry(s) that are not files (named above)"
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
            barren.append(holds_no_image(folder, len(files), *skipped, min_size))
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


class LazyImages:
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
