"""`srfeat blend A B --alpha a -o OUT.safetensors`: network interpolation of two generators.

Writes (1 - a) A + a B, weight by weight, as an ordinary generator checkpoint that loads
wherever one does (`srfeat upscale --model OUT.safetensors`, `Upscaler(OUT)`, `srfeat eval`).
A and B are bundled names or checkpoint paths of the same architecture, typically a stage-1
(MSE) generator and the stage-2 (GAN) generator fine-tuned from it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_a", metavar="A", help="the generator at alpha 0: a bundled name (default) or a checkpoint"
    )
    parser.add_argument("model_b", metavar="B", help="the generator at alpha 1: a bundled name (gan) or a checkpoint")
    parser.add_argument(
        "--alpha",
        type=float,
        required=True,
        metavar="a",
        help="weight of B, from 0 (A) to 1 (B); `srfeat blend default gan --alpha S` is `srfeat upscale --strength S`",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="OUT", help="the blended generator, a .safetensors file (float32)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from srfeat.errors import SRFeatError
    from srfeat.weights import save_generator
    from srfeat.weights.blend import blend_generators, check_alpha

    alpha = check_alpha(args.alpha)
    output = Path(args.output).expanduser()
    if output.suffix != ".safetensors":
        raise SRFeatError(
            f"the output {output} must be a .safetensors file (e.g. {output.with_suffix('.safetensors')})"
        )
    if output.is_dir():
        raise SRFeatError(f"the output {output} is a folder; give a file name ending in .safetensors")
    if output.exists() and not args.overwrite:
        raise SRFeatError(f"output {output} exists; use --overwrite to replace it")
    generator = blend_generators(args.model_a, args.model_b, alpha)
    save_generator(generator, output)  # written to a temporary file and renamed: nothing half-written
    logger.info("wrote %s: %g x %s + %g x %s", output, 1.0 - alpha, args.model_a, alpha, args.model_b)
    return 0
