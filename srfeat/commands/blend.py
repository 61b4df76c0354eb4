"""`srfeat blend A B --alpha ALPHA -o OUT.safetensors`: network interpolation of two generators.

Writes (1 - a) A + a B, weight by weight, as an ordinary generator checkpoint that loads
wherever one does (`srfeat upscale --model OUT.safetensors`, `Upscaler(OUT)`, `srfeat eval`).
A and B are bundled names, checkpoint paths or blend specs (`strength=S`, `blend=A,B,ALPHA`) of the
same architecture, typically a stage-1 (MSE) generator and the stage-2 (GAN) generator fine-tuned
from it.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from srfeat.commands.arguments import BLEND_HELP, MODEL_HELP, OUTPUT_FLAGS, OUTPUT_METAVAR, path_argument

logger = logging.getLogger(__name__)


def check_weights_output(output: Path, overwrite: bool, inputs: Sequence[Path]) -> None:
    """OUT of `srfeat blend` / `srfeat convert`, checked before any weights are read: a
    .safetensors file name, not a folder, never one of the inputs (--overwrite or not: the
    input would be gone), no existing file replaced without --overwrite, in a folder that can
    be made and written."""
    from srfeat.errors import SRFeatError
    from srfeat.path_checks import resolved, same_file, unwritable_file
    from srfeat.weights.file_kinds import named_safetensors, only_the_safetensors_suffix

    # A folder first: "." and "/" have no name to suggest a suffix for (with_suffix raised a traceback)
    if output.is_dir():
        raise SRFeatError(f"the output {output} is a folder; give a file name ending in .safetensors")
    if only_the_safetensors_suffix(output):
        example = output.with_name("generator.safetensors")
        raise SRFeatError(f"the output {output} has no name before .safetensors: give one, e.g. {example}")
    if not named_safetensors(output):
        raise SRFeatError(
            f"the output {output} must end in .safetensors (a srfeat generator checkpoint, "
            f"e.g. {output.with_suffix('.safetensors')})"
        )
    for source in inputs:
        if source.is_file() and (resolved(output) == resolved(source) or same_file(output, source)):
            raise SRFeatError(f"the output {output} is the input {source}: choose another -o (the input would be lost)")
    if output.exists() and not overwrite:
        raise SRFeatError(f"output {output} exists; use --overwrite to replace it")
    reason = unwritable_file(output)
    if reason is not None:
        raise SRFeatError(f"the output {output} cannot be made: {reason}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_a", metavar="A", help=f"the generator at alpha 0: {MODEL_HELP}{BLEND_HELP}")
    parser.add_argument("model_b", metavar="B", help="the generator at alpha 1, named as A is")
    parser.add_argument(
        "--alpha",
        type=float,
        required=True,
        metavar="ALPHA",
        help="weight of B, from 0 (A) to 1 (B); `srfeat blend default gan --alpha S` is `srfeat upscale --strength S`",
    )
    parser.add_argument(
        *OUTPUT_FLAGS,
        dest="output",
        required=True,
        type=path_argument,
        metavar=OUTPUT_METAVAR,
        help="the blended generator, a .safetensors file (float32)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args: argparse.Namespace) -> int:
    from srfeat.path_checks import same_file
    from srfeat.weights import generator_path, save_generator
    from srfeat.weights.blend import blend_generators, check_alpha, models_read

    alpha = check_alpha(args.alpha, "--alpha")
    output = Path(args.output).expanduser()
    # The files that will be read: a bundled name is its file in the package, which -o must not replace either;
    # a blend spec reads its models'.
    inputs = [generator_path(model) for name in (args.model_a, args.model_b) for model in models_read(name)]
    check_weights_output(output, args.overwrite, inputs)
    if args.model_a == args.model_b or (len(inputs) == 2 and same_file(*inputs)):
        logger.warning("A and B are the same model (%s): the blend is a copy of it", args.model_a)
    generator = blend_generators(args.model_a, args.model_b, alpha)
    # written to a temporary file and renamed: nothing half-written
    save_generator(generator, output, replace=args.overwrite, command_line=True)
    logger.info("wrote %s: %g x %s + %g x %s", output, 1.0 - alpha, args.model_a, alpha, args.model_b)
    return 0
