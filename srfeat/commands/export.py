"""`srfeat export --model default -o model.onnx`: a generator as ONNX for other runtimes and apps.

`--strength S` exports the detail dial's blend of `default` and `gan` (`srfeat.weights.blend`).

The file takes float32 NCHW RGB in [0, 1] of any batch, height and width and returns the 4x
image, clamped, as chaiNNer and most tools expect; BatchNorm is folded, the model's name,
scale, training data and licence are in its metadata. See `srfeat.export.onnx`.
"""

from __future__ import annotations

import argparse
import logging

from srfeat.commands.arguments import (
    BLEND_HELP,
    MODEL_HELP,
    MODEL_METAVAR,
    OUTPUT_FLAGS,
    OUTPUT_METAVAR,
    STRENGTH_HELP,
    path_argument,
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="default",
        metavar=MODEL_METAVAR,
        help=f"{MODEL_HELP}{BLEND_HELP}; default: default",
    )
    parser.add_argument(
        "--strength",
        type=float,
        default=None,
        metavar="S",
        help=STRENGTH_HELP,
    )
    parser.add_argument(
        *OUTPUT_FLAGS,
        dest="output",
        required=True,
        type=path_argument,
        metavar=OUTPUT_METAVAR,
        help="the ONNX file to write, e.g. model.onnx",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="float16 weights and arithmetic (half the file; float32 input and output)"
    )
    parser.add_argument(
        "--opset", type=int, default=None, help="ONNX opset (default: 18, read by every current runtime)"
    )
    parser.add_argument(
        "--training-data",
        default=None,
        metavar="TEXT",
        help="what the model was trained on, for the file's metadata (default: a bundled model's card, "
        "else 'not recorded')",
    )
    parser.add_argument(
        "--license",
        default=None,
        metavar="TEXT",
        help="the model's licence, for the file's metadata (default: a bundled model's card, else 'not recorded')",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from srfeat.export.onnx import OPSET, check_output_path, export_onnx, model_info, require_onnx
    from srfeat.weights.blend import load_blended

    require_onnx()  # before the checkpoint is read: a missing extra is the first thing to fix
    check_output_path(args.output, args.overwrite, command_line=True)  # before the export's seconds of work
    info = model_info(args.model, args.strength, args.training_data, args.license, command_line=True)
    generator = load_blended(args.model, args.strength, command_line=True)
    result = export_onnx(
        generator,
        args.output,
        info,
        fp16=args.fp16,
        opset=OPSET if args.opset is None else args.opset,
        overwrite=args.overwrite,
        command_line=True,
    )
    if result.max_difference is None:  # said, not skipped silently: the check the README promises did not run
        logger.warning(
            "onnxruntime is not installed: %s was not run and compared with PyTorch; "
            'pip install -e ".[onnx]" in srfeat\'s folder to check exports',
            result.path,
        )
    checked = (
        f"; onnxruntime's output within {result.max_difference:.2g} of PyTorch's on a test input"
        if result.max_difference is not None
        else ""
    )
    logger.info("wrote %s (%s, %.1f MB)%s", result.path, info.name, result.size_bytes / 1e6, checked)
    return 0
