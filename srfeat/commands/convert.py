"""`srfeat convert SRFeat_full.npz [-o OUT.safetensors]`: the authors' released weights as a srfeat checkpoint.

The authors' `models/SRFeat_init.npz` (stage 1) and `models/SRFeat_full.npz` (stage 2) are
tensorlayer files of their TF1 generator; the result is a safetensors generator that
`srfeat upscale --model` and `srfeat eval --model` take. Their weights are AGPL-licensed:
convert your own copy, srfeat does not ship them.
"""

from __future__ import annotations

import argparse
import logging

from srfeat.commands.arguments import OUTPUT_FLAGS, OUTPUT_METAVAR, path_argument


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "src", type=path_argument, metavar="SRC", help="the authors' SRFeat_init.npz or SRFeat_full.npz"
    )
    parser.add_argument(
        *OUTPUT_FLAGS,  # --out was its first name, kept
        dest="out",
        type=path_argument,
        metavar=OUTPUT_METAVAR,
        help="output .safetensors file (default: SRC with the suffix .safetensors)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from srfeat.commands.blend import check_weights_output
    from srfeat.errors import WeightsError
    from srfeat.path_checks import special_file_kind
    from srfeat.weights import save_generator
    from srfeat.weights.authors import GIVE_THEIRS, load_authors_generator, read_tensorlayer_npz

    src = Path(args.src).expanduser()
    kind = special_file_kind(src)
    if kind is not None and not src.is_dir():  # a folder is refused with this advice by the reader
        raise WeightsError(f"{src} is {kind}, not a file: {GIVE_THEIRS}")
    if src.is_dir():
        # refused as the input before OUT is named from it: "." and "/" have no name to take a suffix, and a
        # folder named gen.safetensors was otherwise blamed as an output folder, an -o the user never gave
        read_tensorlayer_npz(src)
    out = Path(args.out).expanduser() if args.out else src.with_suffix(".safetensors")
    if out == src and src.is_file():
        # `convert gen.safetensors`: what the input is says more than "-o is the input"
        read_tensorlayer_npz(src)
    check_weights_output(out, args.overwrite, [src])
    generator = load_authors_generator(src)
    save_generator(generator, out, replace=args.overwrite, command_line=True)  # atomic: a temporary renamed over OUT
    logging.getLogger("srfeat").info(
        "wrote %s: SRFeat generator x%d, %d features, %d blocks, %s parameters",
        out,
        generator.scale,
        generator.num_features,
        generator.num_blocks,
        f"{sum(p.numel() for p in generator.parameters()):,}",
    )
    return 0
