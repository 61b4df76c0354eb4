"""Write scikit-image's sample photos as PNG files: HR images anyone can regenerate.

The README's comparison figure is made from them, not from the benchmark sets, so the
repository holds no crops of images it has no right to redistribute. Each photo goes into a
folder of its own, so that `srfeat eval --figure` shows one row per photo:

    python3 scripts/sample_photos.py /tmp/photos
    srfeat eval --model default gan --data /tmp/photos/astronaut /tmp/photos/coffee \
        --metrics psnr ssim --figure docs/comparison.png --figure-crop 128
"""

from __future__ import annotations

import argparse
from pathlib import Path

# colour photographs with fine texture (hair, fabric, fur, foam), shipped by scikit-image
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write <name>/<name>.png into (created)")
    args = parser.parse_args()
    from PIL import Image
    from skimage import data

    for name in PHOTOS:
        path = args.out_dir / name / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(getattr(data, name)()).save(path)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
