"""Model files as a mutation fuzz left them (bytes flipped, fields edited, files cut): each case here is the
smallest form of one it found that came back as something other than a one-line refusal or a working model."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image

from srfeat.errors import WeightsError

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def onnx_with_bytes_in_metadata(path: Path, garbage: bytes) -> Path:
    """srfeat's stand-in export whose `license` metadata value is `garbage`: ONNX files store strings as bytes,
    unchecked, so a flipped byte there is read back as it is."""
    from test_onnx_export import srfeat_like_onnx

    marker = b"LICENSE-TEXT-MARKER"
    srfeat_like_onnx(path, license=marker.decode())
    data = path.read_bytes()
    assert data.count(marker) == 1
    path.write_bytes(data.replace(marker, garbage.ljust(len(marker), b"x")))
    return path


@pytest.mark.parametrize("garbage", [b"not recorde\x80", b"\xff", b"caf\xc3"])
def test_an_onnx_file_whose_metadata_is_not_utf8_is_refused_in_one_line(tmp_path: Path, garbage: bytes) -> None:
    """ONNX Runtime's Python side decodes the metadata when asked for it: a UnicodeDecodeError came back."""
    from srfeat.inference import Upscaler

    path = onnx_with_bytes_in_metadata(tmp_path / "flipped.onnx", garbage)
    with pytest.raises(WeightsError, match=r"flipped\.onnx holds metadata or names that are not UTF-8 text"):
        Upscaler(path, device="cpu")


def test_the_cli_refuses_an_onnx_file_whose_metadata_is_not_utf8_in_one_line(tmp_path: Path) -> None:
    path = onnx_with_bytes_in_metadata(tmp_path / "flipped.onnx", b"\x80")
    Image.new("RGB", (8, 8), (90, 120, 150)).save(tmp_path / "in.png")
    out = tmp_path / "out"
    child = srfeat_cli("upscale", tmp_path / "in.png", "-o", out, "--model", path, "--backend", "onnxruntime")
    line = one_error_line(child, only=True)
    assert "flipped.onnx holds metadata or names that are not UTF-8 text (byte 0x80)" in line, line
    assert "export it again" in line and not out.exists()
