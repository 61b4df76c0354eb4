"""What `srfeat upscale` will do, planned before the model loads: the files its inputs name (`expand_inputs`:
folders and globs give their images, every other entry reported as skipped, with the reason), where each
output goes (`plan_outputs`: an error line for each that would overwrite an input, an existing file without
--overwrite, or another input's output) and which videos can be upscaled as asked (`check_video_jobs`).
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from srfeat import video
from srfeat.path_checks import broken_link_reason, file_on_the_way, name_too_long, resolved, special_file_kind

logger = logging.getLogger("srfeat.commands.upscale")  # the plan's warnings keep the logger they always had

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
MAX_SKIP_LINES = 10  # skipped folder entries named one by one; the rest are counted by reason


def skip_reason(path: Path, image_extensions: frozenset[str]) -> str | None:
    """Why a folder entry or glob match is not upscaled; None for an image file."""
    if path.is_symlink() and not path.exists():
        return broken_link_reason(path)
    if path.is_dir():
        return "a folder (folders are not searched recursively; give it as an input of its own)"
    if not path.is_file():
        return f"{special_file_kind(path) or 'something other than a file'}, not an image file"
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
        elif path.is_symlink() and not path.exists():  # a link to a device exists: it is said to be one below
            errors.append(f"input {spec}: {broken_link_reason(path)}")
            found = []
        elif kind := special_file_kind(path):  # a pipe, a device: named as what it is
            errors.append(f"input {spec} is {kind}, not an image file or folder: name an image file")
            found = []
        elif (in_the_way := file_on_the_way(path)) is not None:
            errors.append(f"input {spec}: {in_the_way} is a file, not a folder: name an image file or folder")
            found = []
        else:
            errors.append(f"input not found: {spec}")
            found = []
        files.extend(found)
    first: dict[Path, Path] = {}  # the first mention of each file wins; a repeat would only redo it
    for path in files:
        first.setdefault(resolved(path), path)
    unique = [path for path in files if first[resolved(path)] is path]
    for path in files:
        if first[resolved(path)] is not path and path != first[resolved(path)]:
            logger.warning("skipped %s: the same file as %s (given or linked twice)", path, first[resolved(path)])
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
        key: path for path in reversed(files) for key in (resolved(path), file_identity(path))
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
        destination = resolved(target)
        if mismatch := video.output_mismatch(source, target):
            errors.append(mismatch)
        elif destination in taken:
            errors.append(
                f"{source}: its output {target} is also the output of {taken[destination]}; "
                "use --suffix or --ext, or rename"
            )
        elif (same := inputs.get(destination) or inputs.get(file_identity(target))) is not None:  # --overwrite or not
            named = "" if same == target else f" ({same}, the same file)"
            errors.append(
                f"{source}: the output {target} is an input{named}; choose another -o or --suffix "
                "(an input is never replaced, not even with --overwrite)"
            )
        elif problem := name_too_long(target):  # the input's name and the suffix: known before the upscale
            errors.append(f"{source}: cannot write {target}: {problem}; give a shorter --suffix, or rename")
        elif target.is_dir() and not target.is_symlink():  # --overwrite would fail only after the upscale
            errors.append(f"{source}: its output {target} is a folder; it is kept: give another -o or --suffix")
        elif kind := special_file_kind(target):  # a pipe or device: --overwrite renamed the result over it
            errors.append(f"{source}: its output {target} is {kind}, not a file; it is kept: give another -o")
        elif (target.exists() or target.is_symlink()) and not args.overwrite:  # a link to nothing is taken too
            errors.append(f"{source}: output {target} exists; use --overwrite to replace it")
        else:
            taken[destination] = source
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
