"""`srfeat prepare SRC OUT`: cut HR/LR training patches by the authors' recipe.

170 pairs per image, as the authors' README prepares DIV2K: 130 by aug_data_div2k.m and 40 of
the image at half size by aug_data_div2k_half.m (`--no-half`: the 130 alone, the paper's
104,000 pairs for DIV2K).
"""

from __future__ import annotations

import argparse
import os

from srfeat.commands.arguments import path_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", nargs="+", type=path_argument, metavar="SRC", help="folder(s) of HR images (e.g. DIV2K_train_HR)"
    )
    parser.add_argument("out", type=path_argument, metavar="OUT", help="output folder; patches go to OUT/HR and OUT/LR")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: the same seed writes identical files (default 0)"
    )
    parser.add_argument(
        "--hr-patch-size", type=int, default=296, metavar="PX", help="HR patch side (default 296, the paper's)"
    )
    parser.add_argument(
        "--scale", type=int, default=4, choices=(2, 4), help="downscaling factor for the LR patches (default 4)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        metavar="N",
        # the bound srfeat.data.prepare.MAX_WORKERS checks (not imported here: `--help` stays fast)
        help=f"parallel processes, 1..{max(8, 2 * (os.cpu_count() or 1))} (default: CPU count, at most 8); "
        "a failed run leaves OUT as it was",
    )
    parser.add_argument(
        "--half",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="half-size images, not fp16 (as srfeat upscale --half is): also cut 40 patches per image from the "
        "image shrunk to half its width and height (aug_data_div2k_half.m; default on, as the authors' README runs "
        "it; --no-half: 130 per image)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the patches in a non-empty OUT (once all new ones are written)",
    )


def run(args: argparse.Namespace) -> int:
    from srfeat.data.prepare import prepare_patches

    prepare_patches(
        args.src,
        args.out,
        hr_patch_size=args.hr_patch_size,
        scale=args.scale,
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        half=args.half,
        command_line=True,
    )
    return 0
