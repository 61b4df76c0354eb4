"""`srfeat upscale INPUT... -o OUT`: upscale image files, folders and globs 4x.

Every input is handled on its own: a missing path, a file that is not an image or a corrupt
image gets one error line naming it, the other inputs are still upscaled, and the exit status
says that something failed. An input is never overwritten: an output that is one (the same path,
another spelling of it, a symbolic or hard link to it) is refused, --overwrite or not. An existing
file is replaced only with --overwrite, and an output written earlier in the same call never.
"""

from __future__ import annotations

import argparse
import errno
import glob
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from srfeat import video
from srfeat.commands.arguments import path_argument
from srfeat.path_checks import name_too_long, unwritable_file, unwritable_folder

logger = logging.getLogger(__name__)

# Kept here (not imported from srfeat.data.io) so that `srfeat --help` does not import numpy/PIL.
OUTPUT_EXTENSIONS = {
    "png": ".png",
    "jpg": ".jpg",
    "jpeg": ".jpg",
    "webp": ".webp",
    "tif": ".tif",
    "tiff": ".tif",
    "bmp": ".bmp",
}
GLOB_CHARACTERS = frozenset("*?[")
MAX_OUTSCALE = 16.0  # as srfeat.inference.upscaler.MAX_OUTSCALE (not imported: torch is heavy)
MAX_SKIP_LINES = 10  # skipped folder entries named one by one; the rest are counted by reason


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=path_argument,
        metavar="INPUT",
        help="image files, folders (the images in them) or glob patterns ('photos/*.jpg')",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="results",
        type=path_argument,
        metavar="OUT",
        help="output folder (default: results/), "
        "or for a single input an output file name (its extension sets the format)",
    )
    parser.add_argument(
        "--ext",
        default="auto",
        type=str.lower,  # PNG as png: extensions are matched without case everywhere else
        choices=("auto", *OUTPUT_EXTENSIONS),
        help="output format of images, in any case; jpeg and tiff write .jpg and .tif (default auto: the input's "
        "own format); a video keeps its container",
    )
    parser.add_argument(
        "--suffix", default="", help="added to each output file's name before the extension, e.g. _x4 (default: none)"
    )
    parser.add_argument(
        "--outscale",
        type=float,
        default=None,
        metavar="S",
        help="final scale, if not the model's (the output is resampled with bicubic)",
    )
    parser.add_argument(
        "--model",
        default="default",
        help="a bundled model name (e.g. default), a checkpoint or a `srfeat export` .onnx file (default: default)",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help="detail dial from 0 (default: faithful, smooth) to 1 (gan: sharp, invented texture); "
        "the two networks' weights blended, no slower",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="self-ensemble: average the 8 flips and rotations (slightly more faithful, 8x the time)",
    )
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help="tile size in input pixels (default: chosen from free memory; 0: no tiling)",
    )
    parser.add_argument(
        "--tile-pad",
        type=int,
        default=None,
        metavar="N",
        help="context around each tile in input pixels "
        "(default: the network's receptive radius, which makes tiling exact)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:N or auto (default: the GPU if there is one; the CPU for --backend onnxruntime)",
    )
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--half", action="store_true", help="float16 on the GPU (tiles that overflow are redone in float32)"
    )
    precision.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16: on a GPU, or on a CPU with native bf16 (AVX512-BF16, AMX), where it is about 1.3x faster "
        "than fp32 and a few grey levels off",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the network (pays off over many images on a GPU)"
    )
    parser.add_argument(
        "--backend",
        choices=("torch", "onnxruntime"),
        default=None,
        help="who runs the network: torch (srfeat's path) or onnxruntime (CPU; needs the onnx extra); "
        "default: onnxruntime for a --model .onnx file, else torch",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (never an input: an output that is one is refused)",
    )
    video.add_arguments(parser)


def check_options(args: argparse.Namespace, formats: dict[str, str], readable: frozenset[str]) -> str | None:
    """What is wrong with the options, checked before any file is read or model loaded."""
    try:
        output_is_file(args.output, formats, readable)
    except ValueError as error:
        return str(error)
    if problem := output_location_problem(args.output, formats, readable):
        return problem
    if problem := suffix_problem(args.suffix):
        return problem
    outscale = args.outscale
    if outscale is not None and not (math.isfinite(outscale) and 0 < outscale <= MAX_OUTSCALE):
        return f"--outscale must be a number above 0 and at most {MAX_OUTSCALE:g}, got {outscale}"
    if args.strength is not None and not 0 <= args.strength <= 1:  # NaN fails both comparisons
        return f"--strength must be between 0 and 1 (0 = default, 1 = gan), got {args.strength}"
    if args.tile is not None and args.tile < 0:
        return f"--tile must be a tile size in pixels (or 0 for no tiling), got {args.tile}"
    if args.tile_pad is not None and args.tile_pad < 0:
        return f"--tile-pad must not be negative, got {args.tile_pad}"
    return device_problem(args.device)


def device_problem(device: str) -> str | None:
    """--device before the inputs: an unknown name (or a GPU that is not there) was found only once
    every input had been listed and every output planned, after their errors."""
    from srfeat.errors import InvalidOptionError
    from srfeat.inference.upscaler import resolve_device

    try:
        resolve_device(device)
    except InvalidOptionError as error:
        return str(error)
    return None


def suffix_problem(suffix: str) -> str | None:
    """--suffix goes into a file name: a separator would leave -o (or make a folder), a control
    character would split log lines and confuse every tool that lists the file."""
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if separators & set(suffix):
        return f"--suffix {suffix!r} contains a path separator: it is added to the file name; give a folder with -o"
    if any(not character.isprintable() for character in suffix):
        return f"--suffix {suffix!r} contains a control character (a newline?); give printable characters"
    return None


def output_location_problem(spec: str, formats: dict[str, str], readable: frozenset[str]) -> str | None:
    """Why the outputs could not be written under -o (an existing file in the way), found before any
    image is upscaled rather than after each one."""
    path, to_file = Path(spec).expanduser(), output_is_file(spec, formats, readable)
    if not to_file and path.exists() and not path.is_dir():
        return f"-o {spec} is an existing file, not a folder; give a folder, or a file name with an image extension"
    if problem := unwritable_file(path) if to_file else unwritable_folder(path):
        return f"-o {spec}: {problem}; give another -o"
    return None


def broken_link_reason(path: Path) -> str:
    """What is wrong with a symbolic link that does not lead to a file: a loop or a missing target."""
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symbolic link loop ({path} -> {os.readlink(path)} leads back to itself)"
    return f"broken symbolic link (its target {os.readlink(path)} does not exist)"


def skip_reason(path: Path, image_extensions: frozenset[str]) -> str | None:
    """Why a folder entry or glob match is not upscaled; None for an image file."""
    if path.is_symlink() and not path.exists():
        return broken_link_reason(path)
    if path.is_dir():
        return "a folder (folders are not searched recursively; give it as an input of its own)"
    if not path.is_file():
        return "not a regular file"
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() not in image_extensions:
        return f"not an image extension ({path.suffix or 'none'})"
    return None


def _images_among(paths: list[Path], image_extensions: frozenset[str]) -> list[Path]:
    """The image files among `paths`. A warning line per path skipped, with the reason, for the
    first MAX_SKIP_LINES; the rest are counted, a line per reason (3,000 lines would bury the run)."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in paths:
        reason = skip_reason(path, image_extensions)
        if reason is None:
            found.append(path)
        else:
            skipped.append((path, reason))
    for path, reason in skipped[:MAX_SKIP_LINES]:
        logger.warning("skipped %s: %s", path, reason)
    rest = Counter(reason.split(" (")[0] for _, reason in skipped[MAX_SKIP_LINES:])
    for reason, count in rest.items():
        logger.warning("skipped %d more path(s): %s", count, reason)
    return found


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def expand_inputs(inputs: list[str], image_extensions: frozenset[str]) -> tuple[list[Path], list[str]]:
    """Files to upscale, in order and without repeats, and one error line per input that gave none.

    A named file is taken whatever its extension (a file that is not an image fails when it is
    read, by name); a folder or a glob gives its files with image extensions, and every other
    entry is reported as skipped, with the reason.
    """
    files: list[Path] = []
    errors: list[str] = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = _images_among(sorted(path.iterdir()), image_extensions)
            if not found:
                errors.append(f"no images in folder {path} (looked for {', '.join(sorted(image_extensions))})")
        elif path.is_file():
            found = [path]
        elif GLOB_CHARACTERS & set(spec):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
            found = _images_among(matches, image_extensions)
            if not found:
                errors.append(f"no image files match {spec}")
        elif path.is_symlink():
            errors.append(f"input {spec}: {broken_link_reason(path)}")
            found = []
        elif path.exists():
            errors.append(f"input {spec} is neither a file nor a folder (a pipe, socket or device): name an image file")
            found = []
        else:
            errors.append(f"input not found: {spec}")
            found = []
        files.extend(found)
    first: dict[Path, Path] = {}  # the first mention of each file wins; a repeat would only redo it
    for path in files:
        first.setdefault(path.resolve(), path)
    unique = [path for path in files if first[path.resolve()] is path]
    for path in files:
        if first[path.resolve()] is not path and path != first[path.resolve()]:
            logger.warning("skipped %s: the same file as %s (given or linked twice)", path, first[path.resolve()])
    return unique, errors


def output_is_file(spec: str, formats: dict[str, str], readable: frozenset[str]) -> bool:
    """Whether -o names a file (an image extension) or a folder; ValueError for an unknown extension.

    An existing folder, a name ending in a separator or a name without extension is a folder.
    """
    path = Path(spec).expanduser()
    if spec.endswith(("/", os.sep)) or path.is_dir() or not path.suffix:
        return False
    suffix = path.suffix.lower()
    if suffix in formats:
        return True
    if (unwritten := video.unwritten_extension(spec, suffix)) is not None:
        raise ValueError(unwritten)
    writable = ", ".join(sorted(formats))
    if suffix in readable:  # an image format (read-only video containers were answered above)
        images = ", ".join(sorted(set(formats) - set(video.WRITTEN_CONTAINERS)))
        raise ValueError(f"-o {spec}: {suffix} images are read but not written; name the file {images}")
    raise ValueError(
        f"-o {spec}: unknown image extension {suffix}; give a file name ending in {writable}, "
        "or a folder (end it with /)"
    )


def plan_outputs(
    files: list[Path], args: argparse.Namespace, formats: dict[str, str], readable: frozenset[str] = frozenset()
) -> tuple[list[Job], list[str]]:
    """Where each input goes, and an error line for each that would overwrite something."""
    output = Path(args.output).expanduser()
    to_file = output_is_file(args.output, formats, readable)
    if to_file and len(files) > 1:
        return [], [f"-o {output} is a file name but there are {len(files)} inputs; give a folder"]
    if to_file:
        warn_naming_options_ignored(output, args, formats)
    elif args.ext != "auto" and any(video.is_video(source) for source in files):
        logger.warning(
            "--ext %s applies to images: a video keeps its container (%s; others become .mkv), or -o NAME.ext names it",
            args.ext,
            ", ".join(video.WRITTEN_CONTAINERS),
        )
    # Each input by its path and by its file (a hard link is one too), the first named of a file kept.
    inputs: dict[object, Path] = {
        key: path for path in reversed(files) for key in (path.resolve(), file_identity(path))
    }
    inputs.pop(None, None)  # one gone since it was listed: its read says so
    jobs: list[Job] = []
    errors: list[str] = []
    taken: dict[Path, Path] = {}
    for source in files:
        if to_file:
            target = output
        elif video.is_video(source):
            target = output / f"{source.stem}{args.suffix}{video.output_extension(source)}"
        else:
            extension = OUTPUT_EXTENSIONS[args.ext] if args.ext != "auto" else source.suffix.lower()
            if extension not in formats:
                extension = ".png"  # an input format we read but do not write (as srfeat.inference.image_files)
            target = output / f"{source.stem}{args.suffix}{extension}"
        resolved = target.resolve()
        if mismatch := video.output_mismatch(source, target):
            errors.append(mismatch)
        elif resolved in taken:
            errors.append(
                f"{source}: its output {target} is also the output of {taken[resolved]}; "
                "use --suffix or --ext, or rename"
            )
        elif (same := inputs.get(resolved) or inputs.get(file_identity(target))) is not None:  # --overwrite or not
            named = "" if same == target else f" ({same}, the same file)"
            errors.append(
                f"{source}: the output {target} is an input{named}; choose another -o or --suffix "
                "(an input is never replaced, not even with --overwrite)"
            )
        elif problem := name_too_long(target):  # the input's name and the suffix: known before the upscale
            errors.append(f"{source}: cannot write {target}: {problem}; give a shorter --suffix, or rename")
        elif target.is_dir() and not target.is_symlink():  # --overwrite would fail only after the upscale
            errors.append(f"{source}: its output {target} is a folder; it is kept: give another -o or --suffix")
        elif (target.exists() or target.is_symlink()) and not args.overwrite:  # a link to nothing is taken too
            errors.append(f"{source}: output {target} exists; use --overwrite to replace it")
        else:
            taken[resolved] = source
            jobs.append(Job(source, target))
    return jobs, errors


def file_identity(path: Path) -> tuple[int, int] | None:
    """The file a path leads to (device and inode: every link to a file has its), or None where there is none."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino


def warn_naming_options_ignored(output: Path, args: argparse.Namespace, formats: dict[str, str]) -> None:
    """-o FILE names the output itself: a --suffix, or an --ext of another format than the file's,
    would be silently dropped (a script that reuses one command line would not see why)."""
    ignored = [f"--suffix {args.suffix}"] if args.suffix else []
    if args.ext != "auto" and formats[OUTPUT_EXTENSIONS[args.ext]] != formats.get(output.suffix.lower()):
        ignored.append(f"--ext {args.ext}")
    if ignored:
        logger.warning("-o %s names the output file: %s ignored", output, " and ".join(ignored))


def check_video_jobs(files: list[Path], jobs: list[Job], args: argparse.Namespace) -> tuple[list[Job], list[str]]:
    """Before the model loads: the jobs left once each video that cannot be read (no video stream in it)
    or written as asked (its output folder, --codec, --crf) has its error line; a warning if video
    options meet no video."""
    if not any(video.is_video(path) for path in files):
        video.warn_unused_options(args)
        return jobs, []
    problems = {job: video.check_video_job(job.source, job.target, args) for job in jobs if video.is_video(job.source)}
    return [job for job in jobs if problems.get(job) is None], [line for line in problems.values() if line]


def count_inputs(jobs: list[Job]) -> str:
    """What the run will upscale, for its first log line: "3 image(s)", "1 video(s)" or both."""
    videos = sum(1 for job in jobs if video.is_video(job.source))
    parts = [f"{count} {kind}(s)" for count, kind in ((len(jobs) - videos, "image"), (videos, "video")) if count]
    return " and ".join(parts)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from srfeat.data.io import FORMATS, IMAGE_EXTENSIONS
    from srfeat.errors import ImageReadError, SRFeatError
    from srfeat.hardware import return_freed_memory
    from srfeat.inference import Upscaler
    from srfeat.inference.image_files import upscale_file

    formats = {**FORMATS, **video.WRITTEN_CONTAINERS}
    readable = IMAGE_EXTENSIONS | video.VIDEO_EXTENSIONS
    problem = check_options(args, formats, readable)
    if problem is not None:
        raise SRFeatError(problem)
    files, errors = expand_inputs(args.inputs, readable)
    jobs, output_errors = plan_outputs(files, args, formats, readable)
    jobs, video_errors = check_video_jobs(files, jobs, args)
    errors += output_errors + video_errors
    for error in errors:
        logger.error("%s", error)
    if not jobs:
        if len(errors) > 1:  # one problem is its own summary; several get a last line that says none ran
            logger.error("nothing to upscale: every input has a problem above")
        return 1
    dtype = "fp16" if args.half else "bf16" if args.bf16 else "fp32"
    upscaler = Upscaler(
        args.model,
        device=args.device,
        dtype=dtype,
        tile=args.tile,
        tile_pad=args.tile_pad,
        compile=args.compile,
        progress=True,
        strength=args.strength,
        tta=args.tta,
        backend=args.backend,
    )
    logger.info("%s with %s", count_inputs(jobs), upscaler)
    failures = len(errors)
    with logging_redirect_tqdm():
        # disable=None: a bar on a terminal only, not in logs and pipes.
        for job in tqdm(jobs, desc="inputs", unit="input", disable=True if len(jobs) == 1 else None):
            return_freed_memory()  # what the last input freed, before this one's sizes take over
            if video.is_video(job.source):
                failures += not video.upscale_video_job(job.source, job.target, upscaler, args)
                continue
            try:
                width, height = upscale_file(
                    upscaler, job.source, job.target, outscale=args.outscale, replace=args.overwrite
                )
            except ImageReadError as error:
                logger.error("%s", error)  # on one line, control characters escaped: cli.OneLineFormatter
                failures += 1
                continue
            except SRFeatError as error:  # e.g. a broken model's NaN output: this file fails, not silently
                logger.error("%s: %s", job.source, error)
                failures += 1
                continue
            except OSError as error:
                logger.error("cannot write %s (from %s): %s", job.target, job.source, error)
                failures += 1
                continue
            logger.info("%s -> %s (%dx%d)", job.source, job.target, width, height)
    if failures:
        logger.error("%d of %d input(s) failed", failures, len(jobs) + len(errors))
        return 1
    return 0
