"""Files that are there but cannot be read (a failing disk or network share: EIO; no permission: EACCES), and
config paths no file system takes: each is one line that says what is wrong and what to do, never a traceback
(`srfeat upscale --model x.onnx`, `srfeat convert`, `srfeat train` each ended in one) nor "cannot read PATH:
Input/output error" alone. A read that fails with EIO is made with a link to /proc/self/mem, whose first page
no process maps: reading it fails so, in whatever process opens it."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image

FAILING_READ = Path("/proc/self/mem")
DISK_ADVICE = "the disk or network share gave a read error: "


def _reads_fail() -> bool:
    try:
        with FAILING_READ.open("rb") as handle:
            handle.read(16)
    except OSError:
        return True
    return False


needs_failing_read = pytest.mark.skipif(
    not FAILING_READ.exists() or not _reads_fail(), reason="no /proc/self/mem whose read fails (Linux has one)"
)


def _failing(tmp_path: Path, name: str) -> Path:
    """A file named `name` whose read fails with EIO (a link to /proc/self/mem)."""
    path = tmp_path / name
    path.symlink_to(FAILING_READ)
    return path


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (24, 20), (120, 60, 30)).save(path)
    return path


@needs_failing_read
@pytest.mark.parametrize(
    ("name", "again"),
    [
        ("weights.safetensors", "download or copy it again, or give another checkpoint"),
        ("weights.pt", "download or copy it again, or give another checkpoint"),
        ("model.onnx", "copy it again, or export it again with `srfeat export`"),
    ],
)
def test_a_model_that_cannot_be_read_says_what_to_do(tmp_path: Path, name: str, again: str) -> None:
    model = _failing(tmp_path, name)
    line = one_error_line(srfeat_cli("upscale", _image(tmp_path), "--model", model, "-o", tmp_path / "out"))
    assert line == f"ERROR: cannot read {model}: Input/output error; {DISK_ADVICE}{again}"
    assert not (tmp_path / "out").exists()


@needs_failing_read
def test_authors_weights_that_cannot_be_read_are_one_line(tmp_path: Path) -> None:
    weights = _failing(tmp_path, "SRFeat_full.npz")
    line = one_error_line(srfeat_cli("convert", weights, "-o", tmp_path / "out.safetensors"))
    assert line == f"ERROR: cannot read {weights}: Input/output error; {DISK_ADVICE}download or copy it again"
    assert not (tmp_path / "out.safetensors").exists()


@needs_failing_read
def test_a_config_that_cannot_be_read_is_one_line(tmp_path: Path) -> None:
    config = _failing(tmp_path, "stage1.yaml")
    line = one_error_line(srfeat_cli("train", config, "--dry-run"))
    assert line == (
        f"ERROR: cannot read config {config}: Input/output error; {DISK_ADVICE}copy it again, or give another config"
    )


@needs_failing_read
def test_a_training_state_that_cannot_be_read_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    config = tmp_path / "config.yaml"
    config.write_text(f"data:\n  train_dirs: [{tmp_path / 'images'}]\n")
    run = tmp_path / "run"
    run.mkdir()
    state = _failing(run, "state.pt")
    line = one_error_line(srfeat_cli("train", config, "--dry-run", "--resume", "-o", run))
    assert line.startswith(f"ERROR: cannot read training state {state}: Input/output error; {DISK_ADVICE}copy it")


def _write_only_sysfs_file() -> Path | None:
    """A file that even root may not read (a write-only sysfs attribute such as a PCI device's `rescan`), or None."""
    for pattern in ("class/*/*", "bus/*/*", "devices/*/*/*", "devices/*/*"):
        for path in sorted(Path("/sys").glob(pattern)):
            try:
                if path.is_file() and path.stat().st_mode & 0o777 == 0o200:
                    return path
            except OSError:
                continue
    return None


def _permission_denied(tmp_path: Path, name: str) -> Path:
    """A file named `name` whose open fails with EACCES: one of no permissions, or, for root, who reads
    any file, a link to a write-only sysfs attribute (skipped where there is none)."""
    path = tmp_path / name
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        path.write_bytes(b"x" * 64)
        path.chmod(0)
        return path
    target = _write_only_sysfs_file()
    if target is None:
        pytest.skip("running as root, and no write-only sysfs file to stand for a file root may not read")
    path.symlink_to(target)
    return path


PERMISSION_ADVICE = "Permission denied; check its permissions (ls -l), or copy it somewhere you can read it"


def test_a_model_without_read_permission_says_to_check_it(tmp_path: Path) -> None:
    model = _permission_denied(tmp_path, "weights.safetensors")
    line = one_error_line(srfeat_cli("upscale", _image(tmp_path), "--model", model, "-o", tmp_path / "out"))
    assert line == f"ERROR: cannot read {model}: {PERMISSION_ADVICE}"


def test_an_image_without_read_permission_says_to_check_it(tmp_path: Path) -> None:
    """It was "[Errno 13] Permission denied: 'PATH'; skip or replace this file": the path twice, and advice to
    replace a file that is sound. The other inputs are still upscaled, and eval leaves it out with the same line."""
    (tmp_path / "set").mkdir()
    image = _permission_denied(tmp_path / "set", "locked.png")
    good = _image(tmp_path / "set")
    child = srfeat_cli("upscale", image, good, "-o", tmp_path / "out")
    assert f"ERROR: cannot read image {image}: {PERMISSION_ADVICE}" in child.stderr.splitlines(), child.stderr
    assert child.returncode == 1 and (tmp_path / "out" / "photo.png").is_file()
    child = srfeat_cli("eval", "--model", "bicubic", "--data", tmp_path / "set", "--metrics", "psnr")
    assert child.returncode == 0, child.stderr
    assert f"WARNING: cannot read image {image}: {PERMISSION_ADVICE}" in child.stderr.splitlines(), child.stderr


@pytest.mark.parametrize(
    ("key", "yaml_text", "shown"),
    [
        ("out_dir", 'out_dir: "runs/a\\0b"', "'\\x00'"),
        ("out_dir", 'out_dir: "runs/\\ud800"', "'\\ud800'"),
        ("data.train_dirs[0]", 'data:\n  train_dirs: ["ima\\0ges"]', "'\\x00'"),
        ("validation.dir", 'validation:\n  dir: "Set\\ud8005"', "'\\ud800'"),
    ],
)
def test_a_config_path_no_file_name_can_hold_is_one_line(tmp_path: Path, key: str, yaml_text: str, shown: str) -> None:
    """YAML's escapes write a NUL or a lone surrogate, which argv cannot: each was a traceback."""
    (tmp_path / "images").mkdir()
    config = tmp_path / "config.yaml"
    train_dirs = "" if key.startswith("data.") else f"data:\n  train_dirs: [{tmp_path / 'images'}]\n"
    config.write_text(train_dirs + yaml_text + "\n")
    line = one_error_line(srfeat_cli("train", config, "--dry-run", cwd=tmp_path))
    assert line == (
        f"ERROR: {config}: config key {key} holds {shown}, which no file name can hold: give the path without it"
    )


@pytest.mark.parametrize(
    ("link_name", "command", "said"),
    [
        ("weights.safetensors", ["upscale", "photo.png", "--model", "LINK", "-o", "out/"], "generator weights LINK: "),
        ("model.onnx", ["upscale", "photo.png", "--model", "LINK", "-o", "out/"], "ONNX model LINK: "),
        ("weights.pt", ["blend", "LINK", "gan", "--alpha", "0.5", "-o", "b.safetensors"], "generator weights LINK: "),
        ("SRFeat_full.npz", ["convert", "LINK", "-o", "c.safetensors"], "LINK: "),
        ("stage1.yaml", ["train", "LINK", "--dry-run"], "config LINK: "),
        ("Set5", ["eval", "--model", "bicubic", "--data", "LINK"], "image folder LINK: "),
        ("DIV2K", ["prepare", "LINK", "patches"], "image folder LINK: "),
        ("images", ["train", "config.yaml", "--dry-run", "data.train_dirs=[LINK]"], "training folder is a "),
    ],
)
def test_a_link_to_nothing_is_named_as_one_not_as_not_found(
    tmp_path: Path, link_name: str, command: list[str], said: str
) -> None:
    """A name `ls` lists was "not found" (a model, a config, an image folder), where an input image's link
    to nothing was named as such; the user looked for a typo."""
    _image(tmp_path)
    (tmp_path / "config.yaml").write_text("data:\n  train_dirs: [images]\n")
    (tmp_path / link_name).symlink_to(f"gone-{link_name}")
    child = srfeat_cli(*[part.replace("LINK", link_name) for part in command], cwd=tmp_path)
    line = one_error_line(child)
    assert line.startswith("ERROR: " + said.replace("LINK", link_name)), line
    assert f"broken symbolic link (its target gone-{link_name} does not exist)" in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "patches").exists()


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["eval", "--model", "bicubic", "--data", "PIPE"], "image folder is a named pipe (FIFO), not a folder: PIPE"),
        (["prepare", "PIPE", "patches"], "image folder is a named pipe (FIFO), not a folder: PIPE"),
        (
            ["train", "config.yaml", "--dry-run", "data.train_dirs=[PIPE]"],
            "training folder is a named pipe (FIFO), not a folder: PIPE",
        ),
    ],
)
def test_a_pipe_given_as_an_image_folder_is_named_as_one(tmp_path: Path, command: list[str], said: str) -> None:
    """It was "a file, not a folder", where an input or a model that is a pipe is named as such."""
    (tmp_path / "config.yaml").write_text("data:\n  train_dirs: [images]\n")
    os.mkfifo(tmp_path / "pipe")
    line = one_error_line(srfeat_cli(*[part.replace("PIPE", "pipe") for part in command], cwd=tmp_path))
    assert line.startswith("ERROR: " + said.replace("PIPE", "pipe")), line


def _png_with_chunk(path: Path, kind: bytes, body: bytes) -> Path:
    """A sound 24x20 PNG with one more chunk after its header."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 20), (10, 20, 30)).save(buffer, "PNG")
    data = buffer.getvalue()
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    path.write_bytes(data[:33] + chunk + data[33:])  # 33: the signature and the IHDR chunk
    return path


@pytest.mark.parametrize(("kind", "head"), [(b"zTXt", b"Comment\0\0"), (b"iTXt", b"Comment\0\x01\0\0\0")])
def test_a_png_text_bomb_is_said_in_a_users_words(tmp_path: Path, kind: bytes, head: bytes) -> None:
    """It was PIL's "Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK", a constant's name."""
    bomb = _png_with_chunk(tmp_path / "notes.png", kind, head + zlib.compress(b"a" * (8 << 20), 9))
    child = srfeat_cli("upscale", bomb, "-o", tmp_path / "out")
    assert child.returncode == 1 and "Traceback" not in child.stderr, child.stderr
    said = (
        f"ERROR: cannot read image {bomb}: its text (a PNG zTXt or iTXt chunk) inflates to more than 1 MB, far "
        "beyond any picture's notes (a decompression bomb?); skip or replace this file"
    )
    assert said in child.stderr.splitlines(), child.stderr


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["upscale", "photo.png/b.png", "-o", "out/"], "input photo.png/b.png: photo.png is a file, not a folder"),
        (
            ["upscale", "photo.png", "--model", "photo.png/x.safetensors", "-o", "out/"],
            "generator weights photo.png/x.safetensors: photo.png is a file, not a folder",
        ),
    ],
)
def test_a_path_through_a_file_names_the_file(tmp_path: Path, command: list[str], said: str) -> None:
    """`photo.png/b.png` was "not found", which sent its user looking for a typo in `b.png`."""
    _image(tmp_path)
    line = one_error_line(srfeat_cli(*command, cwd=tmp_path))
    assert line.startswith(f"ERROR: {said}"), line
    assert not (tmp_path / "out").exists()
