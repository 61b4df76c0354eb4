"""`srfeat eval`: score models on benchmark folders by the standard protocol.

Prints a Markdown table of per-dataset means (and per-image rows with --per-image); writes
JSON records and a side-by-side comparison picture on request.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        nargs="+",
        required=True,
        metavar="M",
        help="models to evaluate: 'bicubic', 'hr' (the ground truth, for no-reference metrics), a bundled name "
        "(e.g. default), a checkpoint path, or a blend: strength=S (the default/gan blend at S in 0..1, as "
        "`srfeat upscale --strength S`), strength=START:STOP:STEP (one model per step, both ends included: "
        "strength=0:1:0.1), blend=A,B,ALPHA ((1 - ALPHA) A + ALPHA B of two generators of one architecture)",
    )
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="DIR", help="folders of HR images (e.g. Set5 Set14 BSD100)"
    )
    parser.add_argument("--scale", type=int, default=4, choices=(2, 4), help="upscaling factor (default 4)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=("psnr", "ssim", "niqe"),
        default=None,
        help="metrics to report (default: psnr ssim niqe, or psnr ssim if NIQE is not installed)",
    )
    parser.add_argument(
        "--rgb", action="store_true", help="PSNR/SSIM on RGB (mean over channels) instead of the Y channel"
    )
    parser.add_argument("--per-image", action="store_true", help="also list every image's scores")
    parser.add_argument("--json", metavar="FILE", help="write the results as a JSON list of records")
    parser.add_argument(
        "--figure", metavar="FILE", help="write a PNG comparing the same crop of bicubic, each model and HR"
    )
    parser.add_argument(
        "--figure-image",
        metavar="NAME",
        help="image (file name without extension) to show in the figure; default: each folder's first",
    )
    parser.add_argument(
        "--figure-crop", type=int, default=96, metavar="PX", help="side of the HR crop shown in the figure (default 96)"
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="run the networks as self-ensembles (the 8 flips and rotations averaged; 8x the time); "
        "rows are named <model>+tta",
    )
    parser.add_argument(
        "--plane",
        metavar="FILE",
        help="write a PNG of the perception-distortion plane: NIQE against PSNR per dataset, strength=... "
        "blends as a curve, HR's NIQE as a line (needs psnr and niqe; e.g. --model bicubic hr strength=0:1:0.1)",
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")


def run(args: argparse.Namespace) -> int:
    from srfeat.evaluation import comparison_figure, evaluate, json_records, markdown_table, write_json
    from srfeat.plane import check_plane_metrics, plane_figure

    if args.plane:
        check_plane_metrics(args.metrics)

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
    )
    print(markdown_table(result, per_image=args.per_image))  # noqa: T201 - the table is the command's output
    if args.json:
        write_json(args.json, result, per_image=args.per_image)
        logger.info("wrote %s", args.json)
    if args.figure:
        comparison_figure(args.figure, result.figure_samples, crop_size=args.figure_crop)
        logger.info("wrote %s", args.figure)
    if args.plane:
        plane_figure(args.plane, json_records(result))
        logger.info("wrote %s", args.plane)
    return 0
