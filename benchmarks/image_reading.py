"""How long `srfeat.data.io.read_image` takes for large compressed files, against PIL's decode of the same file.

    python3 -m benchmarks.image_reading                 # 4000x3000 (12 megapixels)
    python3 -m benchmarks.image_reading --size 2000x1500 --rounds 5

The files are made in a temporary folder from scikit-image's astronaut, resized: a JPEG, a JPEG-compressed TIFF
(PIL's writer) and an LZMA-compressed TIFF (tifffile's). What srfeat adds to PIL's
decode is its checks that the file's data holds the pixels its header gives (`srfeat.data.jpeg_check`,
`srfeat.data.tiff_data_check`): the `overhead` column is the median of the per-round differences.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from skimage import data

from benchmarks.common import print_table, whole_number
from srfeat.data.io import read_image


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def make_files(folder: Path, width: int, height: int) -> dict[str, Path]:
    """The benchmark's files, of a photo's content (JPEG of noise would be unlike a photo's)."""
    image = Image.fromarray(data.astronaut()).resize((width, height), Image.Resampling.BICUBIC)
    files = {"JPEG": folder / "photo.jpg", "JPEG TIFF": folder / "jpeg.tif", "LZMA TIFF": folder / "lzma.tif"}
    image.save(files["JPEG"], quality=90)
    image.save(files["JPEG TIFF"], compression="jpeg", quality=90)
    tifffile.imwrite(files["LZMA TIFF"], np.asarray(image), compression="lzma", photometric="rgb")  # PIL writes raw
    return files


def _pil_decode(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _time(function: Callable[[Path], np.ndarray], path: Path) -> float:
    start = time.perf_counter()
    function(path)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--size", type=_size, default=(4000, 3000), help="WIDTHxHEIGHT (default 4000x3000)")
    parser.add_argument("--rounds", type=whole_number(1), default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        files = make_files(Path(folder), *args.size)
        for name, path in files.items():
            read_image(path)  # warm-up: imports, the page cache
            pil, srfeat = [], []
            for _ in range(args.rounds):  # interleaved: drift in the machine's speed affects both alike
                pil.append(_time(_pil_decode, path))
                srfeat.append(_time(read_image, path))
            overhead = statistics.median(s - p for s, p in zip(srfeat, pil, strict=True))
            rows.append(
                (name, f"{path.stat().st_size / 1e6:.1f}", statistics.median(pil), statistics.median(srfeat), overhead)
            )
    print_table(
        f"read_image, {args.size[0]}x{args.size[1]} ({args.rounds} rounds, medians in s)",
        ("file", "MB", "PIL decode", "read_image", "overhead"),
        rows,
    )


if __name__ == "__main__":
    main()
