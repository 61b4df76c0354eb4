"""Copy a trained generator into the package as a bundled model (fp16 safetensors).

python3 scripts/ship_weights.py runs/default/generator_best.safetensors default
python3 scripts/ship_weights.py runs/default/generator_best.safetensors default --output "$OUT/default.safetensors"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

# `python3 scripts/NAME.py` puts scripts/ first on the path, not the checkout: this checkout's srfeat,
# not whichever is installed (another worktree's, a release), whose package the weights would go into.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from srfeat.errors import SRFeatError
from srfeat.weights import bundled_dir, load_generator, save_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("checkpoint", help="a generator .safetensors or a training state")
    parser.add_argument("name", help="bundled model name, e.g. default or gan")
    parser.add_argument(
        "--output", metavar="FILE", help="write the fp16 file here instead of the package (e.g. to bring it back)"
    )
    args = parser.parse_args()
    target = Path(args.output) if args.output else Path(bundled_dir()) / f"{args.name}.safetensors"
    try:
        generator = load_generator(args.checkpoint)
        target.parent.mkdir(parents=True, exist_ok=True)
        # fp16 halves the package; the network runs in fp32 after loading (differences < 1 grey level)
        save_generator(generator, target, dtype=torch.float16)
    except SRFeatError as error:  # not a generator, or a target that cannot be written
        sys.exit(f"error: {error}")
    target.chmod(0o644)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
