"""Files PIL cannot identify, said as what they are: each was PIL's "cannot identify image file", a text file
named .png and a damaged PNG alike, and a signed 16-bit colour TIFF too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import tifffile
from cli_helpers import srfeat_cli
from PIL import Image, features

from srfeat.data.io import image_size, read_image
from srfeat.errors import ImageReadError

RNG = np.random.default_rng(44)


def error_lines(child: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The error lines of a run, by the file name each names."""
    assert "Traceback" not in child.stderr, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.startswith("ERROR: cannot read image")]
    return {line.split(": ")[1].split("/")[-1]: line for line in lines}


def make_unidentified(folder: Path) -> None:
    folder.mkdir()
    (folder / "notes.png").write_text("<html><body>404 Not Found</body></html>\n")  # a saved error page
    (folder / "noise.jpg").write_bytes(RNG.integers(1, 256, 300, dtype=np.uint8).tobytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + RNG.integers(0, 256, 60, dtype=np.uint8).tobytes())
    ramp = np.arange(-60, 60, dtype=np.int16).reshape(8, 15) * 500
    tifffile.imwrite(folder / "signed16.tif", np.stack([ramp] * 3, axis=-1), photometric="rgb")
    Image.new("RGB", (12, 10), (200, 30, 30)).save(folder / "good.png")


def test_a_file_pil_cannot_identify_is_named_as_what_it_is(tmp_path: Path, model_path: Path) -> None:
    make_unidentified(tmp_path / "in")
    child = srfeat_cli("upscale", tmp_path / "in", "-o", tmp_path / "out", "--model", model_path)
    assert child.returncode == 1, child.stderr
    errors = error_lines(child)
    assert "cannot identify image file" not in child.stderr, child.stderr
    expected = {
        "notes.png": "notes.png: it holds text, not a PNG image; skip or replace this file",
        "noise.jpg": "noise.jpg: it is not in an image format srfeat reads (PNG, JPEG, ",
        "broken.png": "broken.png: it starts as a PNG file but cannot be decoded (damaged, cut short",
        "signed16.tif": "signed16.tif: a TIFF of 3 sample(s) of 16-bit signed integer per pixel, which srfeat does not "
        "read (signed samples only as grey); convert it to unsigned 8- or 16-bit",
    }
    assert sorted(errors) == sorted(expected), child.stderr
    for name, said in expected.items():
        assert said in errors[name] and "\n" not in errors[name], errors[name]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["good.png"]


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow reads no AVIF")
def test_a_damaged_avif_is_an_avif_file_with_its_article(tmp_path: Path) -> None:
    # Before: "it starts as a AVIF file but cannot be decoded (damaged, cut short, or a AVIF variant ...)". Damaged
    # at its whole length (its meta box's content zeroed): one cut short is said to be so (test_damaged_images).
    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "whole.avif")
    damaged = bytearray((tmp_path / "whole.avif").read_bytes())
    damaged[48:200] = bytes(152)
    (tmp_path / "damaged.avif").write_bytes(bytes(damaged))
    child = srfeat_cli("upscale", tmp_path / "damaged.avif", "-o", tmp_path / "out")
    line = error_lines(child)["damaged.avif"]
    assert "it starts as an AVIF file but cannot be decoded (damaged, cut short, or an AVIF variant" in line, line


@pytest.mark.parametrize("read", [read_image, image_size])
def test_a_folder_scan_and_a_read_say_the_same(tmp_path: Path, read) -> None:
    """A dataset's scan reads sizes from the header (`image_size`): it says what a read says."""
    make_unidentified(tmp_path / "in")
    for name, said in [("notes.png", "it holds text, not a PNG image"), ("signed16.tif", "16-bit signed integer")]:
        with pytest.raises(ImageReadError, match=said):
            read(tmp_path / "in" / name)
