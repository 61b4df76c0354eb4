"""The authors' recipe for training patches (`srfeat prepare`).

Their `data_augmentation/aug_data_div2k.m`: per source image, 130 HR patches: 35 random
crops of the image, 35 of its horizontal mirror, and 10 each of the image rotated by 90,
180 and 270 degrees and of the mirror rotated by 90, 180 and 270 degrees; the 800 DIV2K
training images give the paper's 104,000 pairs. Their README also runs
`aug_data_div2k_half.m` (on by default here, `--no-half` leaves it out): the image
downscaled to half size by MATLAB bicubic, then 5 random crops of each of the same 8
orientations, 40 more patches per image: 170 per image, 136,000 for DIV2K. Each HR patch is
written as PNG to OUT/HR with its MATLAB-bicubic x1/scale LR patch (rounded to uint8) under
the same name in OUT/LR (`<stem>_NNN.png`, and `<stem>_half_NNN.png` for the half-size ones).

A crop of a rotated image is the rotation of a crop of the image at a uniformly random
position, so patches are cut first and then transformed: the same distribution, with far
less copying. Each image draws its positions from its own generators (one for the full-size and one for
the half-size patches), seeded by `--seed` and the file name, so the output does not depend
on the number of workers or the order in which they finish, and the full-size patches are
the same with or without `--half`.
"""

from __future__ import annotations

import logging
import os
import signal
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from srfeat.data.datasets import check_patch_size, distinct_folders
from srfeat.data.io import PathLike, image_size, list_images, read_image, write_png
from srfeat.data.resize import imresize_np
from srfeat.data.staging import (
    PATCH_FOLDERS,
    live_folders,
    locked,
    remove_stale_staging,
    staged,
    swap_in,
    writing_now,
)
from srfeat.errors import (
    ImageReadError,
    InvalidOptionError,
    OptionNames,
    SRFeatError,
    check_flag,
    given,
    is_whole_number,
)
from srfeat.files import folder_made_for
from srfeat.locks import close_inherited_locks
from srfeat.path_checks import name_max, unwritable_folder

logger = logging.getLogger(__name__)

# (number of patches, horizontal mirror first?, quarter turns counter-clockwise): 130 in all.
RECIPE: tuple[tuple[int, bool, int], ...] = (
    (35, False, 0),
    (35, True, 0),
    (10, False, 1),
    (10, False, 2),
    (10, False, 3),
    (10, True, 1),
    (10, True, 2),
    (10, True, 3),
)
PATCHES_PER_IMAGE = sum(count for count, _, _ in RECIPE)
# aug_data_div2k_half.m: the same 8 orientations, 5 crops each, of the image at half size.
HALF_RECIPE: tuple[tuple[int, bool, int], ...] = tuple((5, mirror, turns) for _, mirror, turns in RECIPE)
HALF_PATCHES_PER_IMAGE = sum(count for count, _, _ in HALF_RECIPE)

# Fast PNG compression: tens of thousands of files, written once, read many times.
PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class ImageOutcome:
    """What happened to one source image."""

    path: Path
    written: int = 0
    too_small: bool = False
    half_too_small: bool = False  # --half, but the half-size image is smaller than a patch
    error: str | None = None


def cut_patches(
    image: np.ndarray,
    hr_patch_size: int,
    rng: np.random.Generator,
    recipe: tuple[tuple[int, bool, int], ...] = RECIPE,
) -> list[np.ndarray]:
    """The recipe's HR patches of one HxWx3 image (130 for RECIPE, in its order)."""
    height, width = image.shape[:2]
    patches = []
    for count, mirror, quarter_turns in recipe:
        for _ in range(count):
            top = int(rng.integers(0, height - hr_patch_size + 1))
            left = int(rng.integers(0, width - hr_patch_size + 1))
            patch = image[top : top + hr_patch_size, left : left + hr_patch_size]
            if mirror:
                # The mirror image's crop at column `left` is the mirror of the crop at width - size - left;
                # both are uniform, so mirroring the crop keeps the distribution.
                patch = patch[:, ::-1]
            patches.append(np.ascontiguousarray(np.rot90(patch, quarter_turns)))
    return patches


def image_seed(seed: int, path: Path, half: bool = False) -> np.random.SeedSequence:
    """A per-image seed from the global one and the file name (stable across runs and machines)."""
    # fsencode: the name's bytes on disk (UTF-8 for UTF-8 names), also for one that is not UTF-8
    # (a Latin-1 name from an old archive), which str.encode("utf-8") refuses.
    entropy = [seed, zlib.crc32(os.fsencode(path.name))]
    return np.random.SeedSequence(entropy + [1] if half else entropy)


def half_size(image: np.ndarray) -> np.ndarray:
    """imresize(image, 1/2, 'bicubic') as MATLAB computes it on uint8: ceil(H/2) x ceil(W/2),
    rounded after each 1-D pass."""
    return imresize_np(image, 0.5, round_each_pass=True)


def matlab_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """An LR patch as `aug_data_div2k.m` makes it: imresize(hr, 1/scale, 'bicubic') on uint8, which
    MATLAB rounds after each 1-D pass (about 1 value in 10 is 1 off the protocol's single rounding,
    `bicubic_downscale`)."""
    return imresize_np(hr, 1.0 / scale, round_each_pass=True)


def _write_pairs(patches: list[np.ndarray], folders: dict[str, Path], prefix: str, scale: int) -> None:
    for number, hr in enumerate(patches):
        name = f"{prefix}_{number:03d}.png"
        write_png(folders["HR"] / name, hr, compress_level=PNG_COMPRESS_LEVEL)
        write_png(folders["LR"] / name, matlab_downscale(hr, scale), compress_level=PNG_COMPRESS_LEVEL)


def prepare_image(
    path: Path, folders: dict[str, Path], hr_patch_size: int, scale: int, seed: int, half: bool = True
) -> ImageOutcome:
    """Cut, downscale and write one image's patches to folders["HR"] and folders["LR"] (runs in a
    worker process)."""
    try:
        image = read_image(path)
    except ImageReadError as error:
        return ImageOutcome(path, error=str(error))
    if min(image.shape[:2]) < hr_patch_size:
        return ImageOutcome(path, too_small=True)
    patches = cut_patches(image, hr_patch_size, np.random.default_rng(image_seed(seed, path)))
    _write_pairs(patches, folders, path.stem, scale)
    if not half:
        return ImageOutcome(path, written=len(patches))
    halved = half_size(image)
    if min(halved.shape[:2]) < hr_patch_size:
        return ImageOutcome(path, written=len(patches), half_too_small=True)
    half_patches = cut_patches(
        halved, hr_patch_size, np.random.default_rng(image_seed(seed, path, half=True)), HALF_RECIPE
    )
    _write_pairs(half_patches, folders, f"{path.stem}_half", scale)
    return ImageOutcome(path, written=len(patches) + len(half_patches))


def _single_threaded_worker() -> None:
    # Parallelism is over images; torch's own threads in every worker would oversubscribe the CPU.
    import torch

    torch.set_num_threads(1)
    # Ctrl-C reaches the whole process group: the main process stops the workers (`_stop_workers`);
    # a worker's own KeyboardInterrupt was handed back as its image's result, and it went on to the next.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # SIGHUP and SIGTERM still end a worker: the main process stops the workers on either anyway, and a worker
    # whose run was killed (kill -9) then dies with its terminal rather than cut on unseen.
    close_inherited_locks()  # nor may a worker outliving a killed run keep its staging folders


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Ends the workers of an interrupted or failed run now, before its staging folders are removed.

    `shutdown` alone runs every image already submitted: Ctrl-C and SIGTERM waited for the whole
    folder to be cut. The images not started are cancelled; those in flight end with their worker.
    """
    # SIGKILL: a worker holds nothing but its part of the staging folders, which go next; a SIGTERM
    # handler it inherited (a caller's own) could keep it cutting.
    kill = getattr(pool, "kill_workers", None)  # Python 3.14
    if kill is not None:
        kill()
    else:  # before 3.14 the executor offers no public way to end a worker in the middle of an image
        workers = list((getattr(pool, "_processes", None) or {}).values())  # shutdown forgets them
        # and its manager thread, which the second `shutdown` then no longer waits for: at exit, Python's
        # own hook wrote to the thread's wake-up pipe while the thread closed it (OSError, Bad file descriptor)
        manager = getattr(pool, "_executor_manager_thread", None)
        pool.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            process.kill()
        if manager is not None:
            manager.join()
    pool.shutdown(wait=True, cancel_futures=True)


# Each worker is a process with its own torch: more than this is a mistake, not a speed-up.
MAX_WORKERS = max(8, 2 * (os.cpu_count() or 1))


# `prepare_patches`' options in a message: its keywords from Python, `srfeat prepare`'s flags and arguments
prepare_option = OptionNames(
    {
        "sources": "SRC",
        "out": "OUT",
        "overwrite": "--overwrite",
        "seed": "--seed",
        "workers": "--workers",
        "hr_patch_size": "--hr-patch-size",
        "scale": "--scale",
        "half": "--no-half",
    },
    {"overwrite": "overwrite=True", "half": "half=False"},
)


def _check_output(out: Path, folders: list[Path], overwrite: bool, command_line: bool) -> None:
    """OUT can take the patches, and no source lies where they go; writes nothing."""
    other = f"choose another {prepare_option('out', command_line=command_line)}"
    if out.exists() and not out.is_dir():
        raise SRFeatError(f"output {out} exists and is not a folder: {other}")
    targets = [out.resolve(), *((out / sub).resolve() for sub in PATCH_FOLDERS)]
    for folder in folders:
        source = folder.resolve()
        if any(source == target or target in source.parents for target in targets[1:]) or source == targets[0]:
            raise SRFeatError(
                f"source {folder} is where the patches go ({out}, its HR/ or LR/): "
                f"their files would mix with (or replace) the source images; {other}"
            )
    unwritable = unwritable_folder(out)
    if unwritable:
        raise SRFeatError(f"output folder {out}: {unwritable}: {other}")
    live = live_folders(out)
    if live:  # hidden folders of a live run: "not empty" sent the user looking for nothing
        raise SRFeatError(writing_now(out, live[0], command_line=command_line))
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SRFeatError(
            f"output folder {out} is not empty: pass {prepare_option('overwrite', command_line=command_line)} "
            f"to replace its HR/ and LR/ patches, or {other}"
        )


def _is_image(path: Path) -> bool:
    try:
        image_size(path)
    except ImageReadError:
        return False
    return True


def _distinct_files(paths: list[Path]) -> list[Path]:
    """The paths, a file that one of them links to (a symbolic or hard link) kept once, with a
    warning: its patches would be cut twice, and the image weigh double in training."""
    kept: dict[tuple[int, int], Path] = {}
    for path in paths:
        status = path.stat()
        first = kept.setdefault((status.st_dev, status.st_ino), path)
        if first is not path:
            logger.warning("%s is the same file as %s (a link): its patches are cut once", path, first)
    return list(kept.values())


def _check_patch_names(paths: list[Path], half: bool, command_line: bool) -> None:
    """No two images would write patches of one name (`<stem>_NNN.png`; with `half`, also
    `<stem>_half_NNN.png`, which are the names of an image called `<stem>_half`'s own patches).
    A file that is not an image (`0001.xmp` beside `0001.png`: a photo editor's sidecar) writes
    none: it is skipped later, with a warning."""
    by_stem: dict[str, Path] = {}
    for path in paths:
        first = by_stem.setdefault(path.stem, path)
        if first is not path and _is_image(path):
            if _is_image(first):
                raise SRFeatError(
                    f"two source images share a file name (without extension): {first} and {path}; "
                    "their patches would overwrite each other: rename one"
                )
            by_stem[path.stem] = path
    if not half:
        return
    for stem, path in by_stem.items():
        clash = by_stem.get(f"{stem}_half")
        if clash is not None and _is_image(path) and _is_image(clash):
            raise SRFeatError(
                f"the half-size patches of {path} ({stem}_half_NNN.png) would overwrite those of {clash}: "
                f"rename {clash.name}, or pass {prepare_option('half', command_line=command_line)}"
            )


def _check_name_lengths(paths: list[Path], out: Path, half: bool) -> None:
    """Every patch name (`<stem>_half_NNN.png` the longest) fits OUT's file system, found before any is cut."""
    limit = name_max(out)
    for path in paths:
        longest = f"{path.stem}_half_000.png" if half else f"{path.stem}_000.png"
        if len(os.fsencode(longest)) > limit and _is_image(path):  # a file that is not one writes none
            raise SRFeatError(
                f"the patches of {path} would be named {longest[:20]}...{longest[-16:]}, {len(os.fsencode(longest))} "
                f"bytes, more than the {limit} the file system of {out} takes: rename the image"
            )


def prepare_patches(
    sources: PathLike | Sequence[PathLike],
    out: PathLike,
    hr_patch_size: int = 296,
    scale: int = 4,
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    half: bool = True,
    *,
    command_line: bool = False,
) -> list[ImageOutcome]:
    """Write the recipe's HR/LR patch pairs of every image in `sources` to OUT/HR and OUT/LR.

    `half` adds the 40 patches of each image at half size (aug_data_div2k_half.m). Images
    smaller than the patch are listed in the log and skipped, as are unreadable files; images
    whose half is smaller get only their full-size patches, and are listed too. Returns one
    outcome per source file. The flags are True or False and the numbers whole numbers, else an
    `srfeat.errors.InvalidOptionError` before anything is read. Messages name these keywords (`out`,
    `overwrite=True`, `workers`); `command_line` (`srfeat prepare`'s) names its arguments instead (`OUT`,
    `--overwrite`, `--workers`).
    """
    # overwrite="no" replaced OUT's patches (a string is true); a patch size of "296" or 296.0 was a TypeError
    overwrite, progress, half = (
        check_flag(flag, name) for flag, name in ((overwrite, "overwrite"), (progress, "progress"), (half, "half"))
    )
    for name, value in (("hr_patch_size", hr_patch_size), ("scale", scale), ("seed", seed), ("workers", workers)):
        if not is_whole_number(value):
            raise InvalidOptionError(f"{name} must be a whole number, got {given(value)}")
    hr_patch_size, scale, seed, workers = int(hr_patch_size), int(scale), int(seed), int(workers)
    # named as the caller gave it: `srfeat prepare --hr-patch-size 0` was told about "hr_patch_size"
    patch_name, scale_name = (prepare_option(name, command_line=command_line) for name in ("hr_patch_size", "scale"))
    check_patch_size(hr_patch_size, scale, (patch_name, scale_name))
    if seed < 0:
        raise SRFeatError(f"{prepare_option('seed', command_line=command_line)} must be 0 or more, got {seed}")
    if not 1 <= workers <= MAX_WORKERS:
        raise SRFeatError(
            f"{prepare_option('workers', command_line=command_line)} must be in 1..{MAX_WORKERS} (each is a "
            f"process; 1 works in this one), got {workers}"
        )
    folders = [Path(sources)] if isinstance(sources, (str, os.PathLike)) else [Path(source) for source in sources]
    folders = distinct_folders(folders, prepare_option("sources", command_line=command_line), "its images are cut once")
    paths = _distinct_files([path for folder in folders for path in list_images(folder)])
    if not paths:
        raise SRFeatError(f"no files in {', '.join(map(str, folders))}: give a folder of HR images")
    _check_patch_names(paths, half, command_line)
    out = Path(out)
    _check_name_lengths(paths, out, half)
    remove_stale_staging(out)
    _check_output(out, folders, overwrite, command_line)
    # Patches go to hidden folders first and replace OUT/HR and OUT/LR only once all are written,
    # so a run that fails or is stopped leaves an earlier run's patches (--overwrite) as they were.
    created_out = not out.exists()
    try:
        # OUT and any missing folders above it, removed again (while empty) if the run fails or is stopped:
        # its staging folders, removed at their block's end unless swapped in, are all it puts in them
        with folder_made_for(out / PATCH_FOLDERS[0]), staged(out, command_line=command_line) as staging:
            workers = min(workers, len(paths))
            outcomes = _prepare_all(paths, staging, hr_patch_size, scale, seed, workers, progress, half, command_line)
            _report_skipped(outcomes, hr_patch_size)
            if not any(outcome.written for outcome in outcomes):
                raise SRFeatError(
                    f"no patches written: every source image was unreadable or smaller than {hr_patch_size} px"
                    + (f"; {out} is as it was" if not created_out else "")
                )
            with locked(out):  # another run into OUT swaps before or after this one, never between its moves
                swap_in(out, staging, overwrite, command_line=command_line)
    except OSError as error:
        if isinstance(error, SRFeatError):  # an image that cannot be read is a warning: not this
            raise
        kept = f"{out} is as it was" if not created_out else f"no {out} was left"
        raise SRFeatError(f"could not write the patches in {out}: {error.strerror or error}; {kept}") from error
    written = sum(outcome.written for outcome in outcomes)
    logger.info("wrote %d HR/LR pairs from %d image(s) to %s", written, sum(1 for o in outcomes if o.written), out)
    return outcomes


def _prepare_all(
    paths: list[Path],
    staging: dict[str, Path],
    hr_patch_size: int,
    scale: int,
    seed: int,
    workers: int,
    progress: bool,
    half: bool,
    command_line: bool,
) -> list[ImageOutcome]:
    """Every image's patches written to the staging folders; one outcome per path, in order."""
    outcomes: list[ImageOutcome] = []
    bar = tqdm(
        total=len(paths), desc="prepare", unit="img", disable=None if progress else True
    )  # None: a terminal only
    if workers <= 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # small patches: one thread is fastest, more only contend
        try:
            for path in paths:
                outcomes.append(prepare_image(path, staging, hr_patch_size, scale, seed, half))
                bar.update()
        finally:
            torch.set_num_threads(threads)
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_single_threaded_worker)
        try:
            futures = {
                pool.submit(prepare_image, path, staging, hr_patch_size, scale, seed, half): index
                for index, path in enumerate(paths)
            }
            finished: dict[int, ImageOutcome] = {}
            for future in as_completed(futures):
                finished[futures[future]] = future.result()
                bar.update()
        except BaseException as error:
            _stop_workers(pool)
            if isinstance(error, BrokenProcessPool):  # a worker alone ended, not the run: it was a traceback
                process, workers_option = ("--workers process", "--workers") if command_line else ("worker", "workers")
                raise SRFeatError(
                    f"a {process} was killed while it cut patches (out of memory? each holds a whole image): "
                    f"no patches were put in place; run again, with fewer {workers_option} if memory is short"
                ) from error
            raise
        pool.shutdown()
        outcomes = [finished[index] for index in range(len(paths))]
    bar.close()
    return outcomes


def _report_skipped(outcomes: list[ImageOutcome], hr_patch_size: int) -> None:
    too_small = [outcome.path.name for outcome in outcomes if outcome.too_small]
    if too_small:
        logger.warning(
            "%d image(s) smaller than %d px skipped: %s", len(too_small), hr_patch_size, ", ".join(too_small)
        )
    half_too_small = [outcome.path.name for outcome in outcomes if outcome.half_too_small]
    if half_too_small:
        logger.warning(
            "%d image(s) smaller than %d px at half size: only their %d full-size patches written: %s",
            len(half_too_small),
            hr_patch_size,
            PATCHES_PER_IMAGE,
            ", ".join(half_too_small),
        )
    for outcome in outcomes:
        if outcome.error:
            logger.warning("%s", outcome.error)
