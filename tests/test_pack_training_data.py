"""scripts/pack_training_data.py as a user runs it: a subprocess on a small datasets folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from srfeat.data.datasets import BenchmarkDataset, RandomCropDataset
from srfeat.data.io import read_image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pack_training_data.py"


def make_sets(root: Path) -> dict[str, list[np.ndarray]]:
    """Tiny stand-ins for T91, BSDS200 and Set5: crops of scikit-image's photos, as PNG."""
    photos = [data.astronaut(), data.coffee(), data.chelsea()]
    sets: dict[str, list[np.ndarray]] = {}
    for name, size in (("T91", 40), ("BSDS200", 48), ("Set5", 36)):
        (root / name).mkdir(parents=True)
        sets[name] = []
        for index, photo in enumerate(photos):
            crop = np.ascontiguousarray(photo[100 : 100 + size, 120 : 120 + size + 4 * index])
            Image.fromarray(crop).save(root / name / f"img{index}.png")
            sets[name].append(crop)
    return sets


def pack(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--datasets", str(tmp_path / "datasets"), "--vgg", "none", *extra],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_packs_lossless_and_jpeg_sets_that_the_loaders_read(tmp_path: Path) -> None:
    sets = make_sets(tmp_path / "datasets")
    out = tmp_path / "devdata" / "train291"
    result = pack(tmp_path, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "total sent" in result.stdout and "BSDS200: 3 images, jpeg q98" in result.stdout
    manifest = json.loads((out / "PACKED.json").read_text())
    assert manifest["sets"]["BSDS200"]["format"] == "jpeg q98 4:2:0"
    for name in ("T91", "Set5"):  # lossless: the same pixels
        for index, pixels in enumerate(sets[name]):
            assert np.array_equal(read_image(out / name / f"img{index}.webp"), pixels)
    for index, pixels in enumerate(sets["BSDS200"]):
        packed = read_image(out / "BSDS200" / f"img{index}.jpg")
        assert packed.shape == pixels.shape
        assert np.abs(packed.astype(int) - pixels.astype(int)).mean() < 3
    crops = RandomCropDataset([out / "T91", out / "BSDS200"], hr_patch_size=32, scale=4)
    assert len(crops) == 6 and crops[0]["hr"].shape == (3, 32, 32)
    benchmark = BenchmarkDataset(out / "Set5", scale=4)
    assert benchmark.names == ["img0", "img1", "img2"]


def first_pack(tmp_path: Path, out: Path) -> tuple[dict, dict[str, int]]:
    """Pack made-up sets into `out` with the default limit: its manifest and each set's bytes."""
    make_sets(tmp_path / "datasets")
    first = pack(tmp_path, "--out", str(out))
    assert first.returncode == 0, first.stderr
    manifest = json.loads((out / "PACKED.json").read_text())
    return manifest, {name: info["bytes"] for name, info in manifest["sets"].items()}


def test_lowers_jpeg_quality_to_fit_and_fails_when_nothing_fits(tmp_path: Path) -> None:
    out = tmp_path / "devdata" / "train291"
    manifest, sizes = first_pack(tmp_path, out)
    tree = manifest["tree_bytes"] / 2**20
    # a limit that leaves BSDS200 less than its q98 size: a lower quality is chosen
    limit = tree + (sizes["T91"] + sizes["Set5"] + sizes["BSDS200"] * 0.9 + 4096) / 2**20  # 4096: PACKED.json
    second = pack(tmp_path, "--out", str(out), "--limit-mib", f"{limit:.6f}", "--margin-mib", "0")
    assert second.returncode == 0, second.stderr
    quality = int(json.loads((out / "PACKED.json").read_text())["sets"]["BSDS200"]["format"].split()[1][1:])
    assert quality < 98
    none_fits = pack(tmp_path, "--out", str(out), "--limit-mib", f"{tree:.6f}", "--margin-mib", "0")
    assert none_fits.returncode != 0 and "does not fit" in none_fits.stderr
    assert (out / "PACKED.json").is_file()  # the previous pack is kept


@pytest.mark.parametrize("layout", ["foreign folder", "missing set"])
def test_refuses_to_replace_a_foreign_folder_and_names_a_missing_set(tmp_path: Path, layout: str) -> None:
    make_sets(tmp_path / "datasets")
    out = tmp_path / "mine"
    if layout == "foreign folder":
        out.mkdir()
        (out / "notes.txt").write_text("keep me")
        result = pack(tmp_path, "--out", str(out))
        assert result.returncode != 0 and "not written by this script" in result.stderr
        assert (out / "notes.txt").read_text() == "keep me"
    else:
        for path in (tmp_path / "datasets" / "Set5").iterdir():
            path.unlink()
        (tmp_path / "datasets" / "Set5").rmdir()
        result = pack(tmp_path, "--out", str(out))
        assert result.returncode != 0 and "Set5 not found" in result.stderr
        assert not out.exists()


def test_counts_what_else_travels_in_the_folder_and_removes_a_killed_runs_staging(tmp_path: Path) -> None:
    """Files in subfolders of .devdata/ were left out of the budget (the pack then failed as over the
    limit, or travelled over it), and a killed run's staging folder stayed there to travel."""
    out = tmp_path / "devdata" / "train291"
    manifest, sizes = first_pack(tmp_path, out)
    leftover = tmp_path / "devdata" / ".train291.12345.tmp" / "T91"
    leftover.mkdir(parents=True)
    (leftover / "img0.webp").write_bytes(b"\0" * 50_000)
    kept = tmp_path / "devdata" / "notes" / "blob.bin"
    kept.parent.mkdir()
    kept.write_bytes(b"\0" * sizes["BSDS200"])
    # room for the sets at 90% of BSDS200's q98 size once the kept blob is counted
    limit = manifest["tree_bytes"] + sizes["T91"] + sizes["Set5"] + sizes["BSDS200"] * 1.9 + 4096
    second = pack(tmp_path, "--out", str(out), "--limit-mib", f"{limit / 2**20:.6f}", "--margin-mib", "0")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "q98" not in json.loads((out / "PACKED.json").read_text())["sets"]["BSDS200"]["format"]
    assert not leftover.parent.exists() and kept.is_file()


def test_a_copy_that_is_not_a_git_checkout_is_told_so_in_one_line(tmp_path: Path) -> None:
    """The tree's size is counted with git: an archive's copy (no .git) got git's traceback, after the packing."""
    copy = tmp_path / "archive" / "scripts"
    copy.mkdir(parents=True)
    shutil.copy(SCRIPT, copy / SCRIPT.name)
    make_sets(tmp_path / "datasets")
    result = subprocess.run(
        [sys.executable, str(copy / SCRIPT.name), "--datasets", str(tmp_path / "datasets"), "--vgg", "none"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)},
    )
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "is not a git checkout" in result.stderr, result.stderr
    assert not (tmp_path / "archive" / ".devdata").exists()
