"""`srfeat upscale INPUT... -o OUT`: upscale image files, folders and globs 4x.

Every input is handled on its own: a missing path, a file that is not an image or a corrupt
image gets one error line naming it, the other inputs are still upscaled, and the exit status
says that something failed. Nothing is overwritten (an input, an existing file, or an output
written earlier in the same call) unless --overwrite is given.
"""

from __future__ import annotations

import argparse
import glob
import logging
from dataclasses import dataclass
from pathlib import Path

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files, folders (the images in them) or glob patterns ('photos/*.jpg')",
    )
    parser.add_argument(
        "-o",
        "--output",
        default="results",
        metavar="OUT",
        help="output folder (default: results/), "
        "or for a single input an output file name (its extension sets the format)",
    )
    parser.add_argument(
        "--ext",
        default="auto",
        choices=("auto", "png", "jpg", "webp", "tif", "bmp"),
        help="output format (default auto: the input's own format)",
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
        "--model", default="default", help="a bundled model name (e.g. default) or a checkpoint path (default: default)"
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
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: the GPU if there is one)")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument(
        "--half", action="store_true", help="float16 on the GPU (tiles that overflow are redone in float32)"
    )
    precision.add_argument(
        "--bf16",
        action="store_true",
        help="bfloat16 on the GPU (also accepted on a CPU, where the default fp32 is faster)",
    )
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the network (pays off over many images on a GPU)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing output files (and inputs, if an output path is an input)",
    )


@dataclass(frozen=True)
class Job:
    source: Path
    target: Path


def expand_inputs(inputs: list[str], image_extensions: frozenset[str]) -> tuple[list[Path], list[str]]:
    """Files to upscale, in order and without repeats, and one error line per input that gave none.

    A named file is taken whatever its extension (a file that is not an image fails when it is
    read, by name); a folder or a glob gives its files with image extensions.
    """
    files: list[Path] = []
    errors: list[str] = []
    for spec in inputs:
        path = Path(spec).expanduser()
        if path.is_dir():
            found = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and p.suffix.lower() in image_extensions and not p.name.startswith(".")
            )
            if not found:
                errors.append(f"no images in folder {path} (looked for {', '.join(sorted(image_extensions))})")
        elif path.is_file():
            found = [path]
        elif GLOB_CHARACTERS & set(spec):
            matches = [Path(p) for p in sorted(glob.glob(str(path), recursive=True))]
            found = [p for p in matches if p.is_file() and p.suffix.lower() in image_extensions]
            if not found:
                errors.append(f"no image files match {spec}")
        else:
            errors.append(f"input not found: {spec}")
            found = []
        files.extend(found)
    unique = {p.resolve(): p for p in reversed(files)}  # the first mention of each file wins
    return [p for p in files if unique[p.resolve()] is p], errors


def plan_outputs(files: list[Path], args: argparse.Namespace, formats: dict[str, str]) -> tuple[list[Job], list[str]]:
    """Where each input goes, and an error line for each that would overwrite something."""
    output = Path(args.output).expanduser()
    to_file = output.suffix.lower() in formats and not output.is_dir()
    if to_file and len(files) > 1:
        return [], [f"-o {output} is a file name but there are {len(files)} inputs; give a folder"]
    inputs = {p.resolve() for p in files}
    jobs: list[Job] = []
    errors: list[str] = []
    taken: dict[Path, Path] = {}
    for source in files:
        if to_file:
            target = output
        else:
            extension = OUTPUT_EXTENSIONS[args.ext] if args.ext != "auto" else source.suffix.lower()
            if extension not in formats:
                extension = ".png"  # an input format we read but do not write
            target = output / f"{source.stem}{args.suffix}{extension}"
        resolved = target.resolve()
        if resolved in taken:
            errors.append(
                f"{source}: its output {target} is also the output of {taken[resolved]}; "
                "use --suffix or --ext, or rename"
            )
        elif resolved in inputs and not args.overwrite:
            errors.append(f"{source}: the output {target} is an input; give another -o or --suffix (or --overwrite)")
        elif target.exists() and not args.overwrite:
            errors.append(f"{source}: output {target} exists; use --overwrite to replace it")
        else:
            taken[resolved] = source
            jobs.append(Job(source, target))
    return jobs, errors


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from srfeat.data.io import FORMATS, IMAGE_EXTENSIONS, read_raw_image, write_image
    from srfeat.errors import ImageReadError
    from srfeat.inference import Upscaler

    files, errors = expand_inputs(args.inputs, IMAGE_EXTENSIONS)
    jobs, output_errors = plan_outputs(files, args, FORMATS)
    errors += output_errors
    for error in errors:
        logger.error("%s", error)
    if not jobs:
        logger.error("nothing to upscale")
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
    )
    logger.info("%d image(s) with %s", len(jobs), upscaler)
    failures = len(errors)
    with logging_redirect_tqdm():
        # disable=None: a bar on a terminal only, not in logs and pipes.
        for job in tqdm(jobs, desc="images", unit="image", disable=True if len(jobs) == 1 else None):
            try:
                raw = read_raw_image(job.source)
            except ImageReadError as error:
                logger.error("%s", str(error).replace("\n", " "))
                failures += 1
                continue
            result = upscaler.upscale_array(raw.array, outscale=args.outscale)
            try:
                write_image(job.target, result, icc_profile=raw.icc_profile, exif=raw.exif)
            except OSError as error:
                logger.error("cannot write %s (from %s): %s", job.target, job.source, str(error).replace("\n", " "))
                failures += 1
                continue
            logger.info("%s -> %s (%dx%d)", job.source, job.target, result.shape[1], result.shape[0])
    if failures:
        logger.error("%d of %d input(s) failed", failures, len(jobs) + len(errors))
        return 1
    return 0
