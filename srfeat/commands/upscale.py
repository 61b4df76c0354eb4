"""`srfeat upscale INPUT... -o OUT`: upscale image files, folders and globs 4x.

Every input is handled on its own: a missing path, a file that is not an image or a corrupt
image gets one error line naming it, the other inputs are still upscaled, and the exit status
says that something failed. An input is never overwritten: an output that is one (the same path,
another spelling of it, a symbolic or hard link to it) is refused, --overwrite or not. An existing
file is replaced only with --overwrite, and an output written earlier in the same call never. Which files
the inputs name and where each output goes is planned in `srfeat.commands.upscale_jobs`.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path

from srfeat import video
from srfeat.commands.arguments import (
    BLEND_HELP,
    DEVICE_HELP,
    MODEL_HELP,
    MODEL_METAVAR,
    OUTPUT_FLAGS,
    OUTPUT_METAVAR,
    STRENGTH_HELP,
    TILE_HELP,
    TTA_HELP,
    add_precision_arguments,
    path_argument,
    precision,
    tell_of_bf16,
    tile_problem,
)
from srfeat.commands.upscale_jobs import (
    OUTPUT_EXTENSIONS,
    Job,
    check_video_jobs,
    expand_inputs,
    output_is_file,
    plan_outputs,
)
from srfeat.path_checks import unwritable_file, unwritable_folder

logger = logging.getLogger(__name__)

MAX_OUTSCALE = 16.0  # as srfeat.inference.upscaler.MAX_OUTSCALE (not imported: torch is heavy)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        type=path_argument,
        metavar="INPUT",
        help="image files, folders (the images in them) or glob patterns ('photos/*.jpg')",
    )
    parser.add_argument(
        *OUTPUT_FLAGS,
        dest="output",
        default="results",
        type=path_argument,
        metavar=OUTPUT_METAVAR,
        help="output folder (default: results/), "
        "or for a single input an output file name (its extension sets the format)",
    )
    parser.add_argument(
        "--ext",
        default="auto",
        type=str.lower,  # PNG as png: extensions are matched without case everywhere else
        choices=("auto", *OUTPUT_EXTENSIONS),
        help="output format of images (PNG or png alike); jpeg and tiff write .jpg and .tif (default auto: the input's "
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
        help=f"final scale, if not the model's, above 0 and at most {MAX_OUTSCALE:g} (the output is resampled "
        "with bicubic)",
    )
    parser.add_argument(
        "--model",
        default="default",
        metavar=MODEL_METAVAR,
        help=f"{MODEL_HELP}{BLEND_HELP}; also a `srfeat export` .onnx file; default: default",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help=STRENGTH_HELP,
    )
    parser.add_argument("--tta", action="store_true", help=TTA_HELP)
    parser.add_argument(
        "--tile",
        type=int,
        default=None,
        metavar="N",
        help=TILE_HELP,
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
        help=f"{DEVICE_HELP}; auto is the CPU for --backend onnxruntime",
    )
    add_precision_arguments(parser, half_note="; the output's size is not halved (that is --outscale)")
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
    if problem := strength_with_model_problem(args.model, args.strength):
        return problem
    if problem := tile_problem(args.tile):
        return problem
    if args.tile_pad is not None and args.tile_pad < 0:
        return f"--tile-pad must not be negative, got {args.tile_pad}"
    return device_problem(args.device)


def strength_with_model_problem(model: str, strength: float | None) -> str | None:
    """--strength with a model it does not go with, before the inputs (a missing input was said first, then this
    on the next try). An exported .onnx file's own refusal (export with --strength instead) comes as it loads."""
    from srfeat.weights.blend import strength_model_problem

    if strength is None or model.lower().endswith(".onnx"):
        return None
    return strength_model_problem(model, strength, command_line=True)


def device_problem(device: str) -> str | None:
    """--device before the inputs: an unknown name (or a GPU that is not there) was found only once
    every input had been listed and every output planned, after their errors."""
    from srfeat.errors import InvalidOptionError
    from srfeat.inference.upscaler import resolve_device

    try:
        resolve_device(device, command_line=True)
    except InvalidOptionError as error:
        return str(error)
    return None


def suffix_problem(suffix: str) -> str | None:
    """--suffix goes into a file name: a separator would leave -o (or make a folder), a control
    character would split log lines and confuse every tool that lists the file."""
    from srfeat.errors import shown

    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if separators & set(suffix):
        return (
            f"--suffix {shown(suffix)} contains a path separator: it is added to the file name; give a folder with -o"
        )
    if any(not character.isprintable() for character in suffix):
        return f"--suffix {shown(suffix)} contains a control character (a newline?); give printable characters"
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
    dtype = precision(args)
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
        command_line=True,
    )
    logger.info("%s with %s", count_inputs(jobs), upscaler)
    tell_of_bf16(upscaler.device, dtype, upscaler.backend)
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
                    upscaler, job.source, job.target, outscale=args.outscale, replace=args.overwrite, command_line=True
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
