"""`srfeat eval`: score models on benchmark folders by the standard protocol.

Prints a Markdown table of per-dataset means (and per-image rows with --per-image); writes
JSON records and a side-by-side comparison picture on request.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from srfeat.commands.arguments import BLEND_HELP, DEVICE_HELP, MODEL_HELP, MODEL_METAVAR, TTA_HELP, path_argument

if TYPE_CHECKING:
    from srfeat.evaluation import FigureSample

logger = logging.getLogger(__name__)

FIGURE_CROP = 96  # --figure-crop's default


def positive_int(text: str) -> int:
    from srfeat.errors import shown

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)} is not a whole number of pixels") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 pixel, got {value}")
    return value


def _figure_formats() -> set[str]:
    from matplotlib.backend_bases import FigureCanvasBase

    return set(FigureCanvasBase.get_supported_filetypes())


def _format_problem(name: str) -> str | None:
    """Why matplotlib cannot write pictures of this format here, or None: a small figure with text is
    rendered in memory, since some writers need an outside program for text only (.pgf runs a TeX
    system) and would otherwise fail with a traceback after the whole evaluation."""
    import io

    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    figure.suptitle("srfeat")
    try:
        figure.savefig(io.BytesIO(), format=name)
    except Exception as error:  # noqa: BLE001 - each writer raises its own kinds (RuntimeError, OSError...)
        return (str(error).strip().splitlines() or [type(error).__name__])[0]
    return None


def _check_not_an_input(option: str, value: str, path: Path, args: argparse.Namespace) -> None:
    """An output is neither a model file nor in a --data folder, --overwrite or not: it would replace the
    checkpoint or an HR image, and a new file there is read as one of the set's images by the next run."""
    from srfeat.errors import SRFeatError
    from srfeat.evaluation import network_names
    from srfeat.path_checks import resolved, same_file
    from srfeat.weights import generator_path
    from srfeat.weights.blend import expand_blend_specs

    for folder in args.data:
        if resolved(path).parent == resolved(Path(folder)):
            raise SRFeatError(
                f"{option} {value} is in the --data folder {folder}, whose every file is read as an image of the "
                "set: write it elsewhere"
            )
    for name in network_names(expand_blend_specs(args.model)):
        if same_file(path, generator_path(name)):
            raise SRFeatError(f"{option} {value} is the model {name}: choose another name (the model would be lost)")


TABLE_ON_STDOUT = " (the table goes to standard output)"  # for a --json of /dev/stdout


def check_outputs(args: argparse.Namespace) -> None:
    """--json, --figure and --plane checked before any image is read, so that a typo does not
    cost the evaluation: not a folder, not an input, a folder that can be made and written, a format
    the writer knows, no file given twice, and no existing file replaced without --overwrite."""
    from srfeat.errors import SRFeatError
    from srfeat.path_checks import resolved, special_file_kind, unwritable_file

    outputs = [
        (option, value)
        for option, value in (("--json", args.json), ("--figure", args.figure), ("--plane", args.plane))
        if value
    ]
    seen: dict[Path, str] = {}
    for option, value in outputs:
        path = Path(value).expanduser()
        key = resolved(path)
        if key in seen:
            raise SRFeatError(f"{option} {value} is also the {seen[key]} file: give each output its own name")
        seen[key] = option
        if option != "--json":
            formats = _figure_formats()
            if path.suffix.lstrip(".").lower() not in formats:
                raise SRFeatError(
                    f"{option} {value}: unknown picture format {path.suffix or '(no suffix)'}; "
                    f"end the name in one of {', '.join('.' + name for name in sorted(formats))} (e.g. .png)"
                )
            problem = _format_problem(path.suffix.lstrip(".").lower())
            if problem is not None:
                raise SRFeatError(f"{option} {value}: cannot write {path.suffix} pictures here ({problem}); use .png")
        if path.is_dir():
            raise SRFeatError(f"{option} {value} is a folder: give a file name inside it")
        _check_not_an_input(option, value, path, args)
        if (kind := special_file_kind(path)) is not None:  # /dev/null, /dev/stdout: --overwrite renamed a file over it
            raise SRFeatError(
                f"{option} {value} is {kind}, not a file: srfeat writes a whole file and renames it into place, "
                f"which would replace it; give a file name{TABLE_ON_STDOUT if option == '--json' else ''}"
            )
        if (path.exists() or path.is_symlink()) and not args.overwrite:  # a link to nothing, or a loop, too
            raise SRFeatError(f"{option} {value} exists: pass --overwrite to replace it, or choose another name")
        reason = unwritable_file(path)
        if reason is not None:
            raise SRFeatError(f"{option} {value} cannot be written: {reason}; choose another path")


def _refuse_outputs_that_appeared(args: argparse.Namespace) -> None:
    """Without --overwrite, a --json, --figure or --plane file that appeared while the models ran (none was
    there for `check_outputs`) is refused before any is written: the writers' own refusal would come after
    the files before it were written (the writers are told `command_line` for a file saved after this)."""
    from srfeat.errors import SRFeatError

    if args.overwrite:
        return
    for option, value in (("--json", args.json), ("--figure", args.figure), ("--plane", args.plane)):
        if value and ((path := Path(value).expanduser()).exists() or path.is_symlink()):
            raise SRFeatError(
                f"{option} {value} appeared while the models were evaluated; it is kept: pass --overwrite to "
                "replace it, or choose another name"
            )


def _warn_crop_clamped(crop: int, samples: Sequence[FigureSample]) -> None:
    """A warning naming the images smaller than --figure-crop, whose crop is their shorter side (the figure
    shows no more than the image; the side asked for was taken without a word)."""
    from srfeat.evaluation import printable_name  # on one line, as the table shows it

    smaller = [sample for sample in samples if min(sample.hr.shape[:2]) < crop]
    if smaller:
        logger.warning(
            "--figure-crop %d is larger than %s: the figure shows a crop of %s px",
            crop,
            ", ".join(
                printable_name(f"{s.dataset}/{s.image}") + f" ({s.hr.shape[1]}x{s.hr.shape[0]})" for s in smaller
            ),
            ", ".join(str(size) for size in dict.fromkeys(min(s.hr.shape[:2]) for s in smaller)),
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        action="extend",  # `--model a --model b` is both, not b alone
        nargs="+",
        required=True,
        metavar=MODEL_METAVAR,
        help=f"{MODEL_HELP}{BLEND_HELP}, several for a row each; also 'bicubic', 'hr' (the ground truth, for "
        "no-reference metrics) and strength=START:STOP:STEP (one model per step, both ends included: "
        "strength=0:1:0.1)",
    )
    parser.add_argument(
        "--data",
        action="extend",
        nargs="+",
        required=True,
        type=path_argument,
        metavar="DIR",
        help="folders of HR images (e.g. Set5 Set14 BSD100)",
    )
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4), help="upscaling factor (default 4)")
    parser.add_argument(
        "--metrics",
        action="extend",
        nargs="+",
        choices=("psnr", "ssim", "niqe"),
        default=None,
        help="metrics to report (default: psnr ssim niqe)",
    )
    parser.add_argument(
        "--rgb", action="store_true", help="PSNR/SSIM on RGB (mean over channels) instead of the Y channel"
    )
    parser.add_argument("--per-image", action="store_true", help="also list every image's scores")
    parser.add_argument(
        "--json", type=path_argument, metavar="FILE", help="write the results as a JSON list of records"
    )
    parser.add_argument(
        "--figure",
        type=path_argument,
        metavar="FILE",
        help="write a figure (.png, .pdf, .svg...) comparing the same crop of bicubic, each model and HR",
    )
    parser.add_argument(
        "--figure-image",
        metavar="NAME",
        help="image to show in the figure (its file name, with or without extension); default: each folder's first",
    )
    parser.add_argument(
        "--figure-crop",
        type=positive_int,
        default=FIGURE_CROP,
        metavar="PX",
        help="side of the HR crop shown in the figure (default 96)",
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help=f"{TTA_HELP}; rows are named <model>+tta",
    )
    parser.add_argument(
        "--plane",
        type=path_argument,
        metavar="FILE",
        help="write a figure (.png, .pdf, .svg...) of the perception-distortion plane: NIQE against PSNR per "
        "dataset, strength=... blends as a curve, HR's NIQE as a line (needs psnr and niqe; e.g. --model "
        "bicubic hr strength=0:1:0.1)",
    )
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --json, --figure and --plane files that exist"
    )


def run(args: argparse.Namespace) -> int:
    from srfeat.cli import write_output
    from srfeat.errors import SRFeatError
    from srfeat.evaluation import BICUBIC, GROUND_TRUTH, evaluate, json_records, markdown_table, write_json
    from srfeat.figures import comparison_figure
    from srfeat.plane import check_plane_metrics, plane_figure

    if args.plane:
        check_plane_metrics(args.metrics, args.model)
    check_outputs(args)
    given = [
        option
        for option, value in (("--figure-image", args.figure_image), ("--figure-crop", args.figure_crop))
        if value not in (None, FIGURE_CROP)
    ]
    if given and not args.figure:  # taken without a word, and the figure the user expected never came
        logger.warning(
            "%s %s to --figure, which is not given: no figure is written (add --figure FILE.png)",
            " and ".join(given),
            "apply" if len(given) > 1 else "applies",
        )
    if args.tta and all(model in (BICUBIC, GROUND_TRUTH) for model in args.model):  # rows as without it
        logger.warning(
            "--tta applies to networks, and --model names none (%s run as they are): it changes nothing",
            " and ".join(dict.fromkeys(args.model)),
        )

    result = evaluate(
        args.model,
        args.data,
        metrics=args.metrics,
        scale=args.scale,
        device=args.device,
        test_y_channel=not args.rgb,
        figure_image=args.figure_image,
        keep_figure_samples=args.figure is not None,
        tta=args.tta,
        command_line=True,
    )
    try:
        write_output(markdown_table(result, per_image=args.per_image) + "\n")  # the table is the command's output
        unshown = None
    except SRFeatError as error:  # `> /dev/full`: the files below are the evaluation's record all the same
        unshown = error
    _refuse_outputs_that_appeared(args)
    if args.json:
        write_json(args.json, result, per_image=args.per_image, replace=args.overwrite, command_line=True)
        logger.info("wrote %s", args.json)
    if args.figure:
        _warn_crop_clamped(args.figure_crop, result.figure_samples)
        comparison_figure(
            args.figure, result.figure_samples, crop_size=args.figure_crop, replace=args.overwrite, command_line=True
        )
        logger.info("wrote %s", args.figure)
    if args.plane:
        plane_figure(args.plane, json_records(result), replace=args.overwrite, command_line=True)
        logger.info("wrote %s", args.plane)
    if unshown is not None:
        raise unshown
    return 0
