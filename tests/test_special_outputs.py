"""An output path that is a pipe, a device or a socket (or a link to one) is refused in one line, --overwrite or
not, and left as it was: every file is written whole and renamed into place, and the rename put a regular file
where the pipe was (`srfeat eval --json /dev/null --overwrite`, run as root, replaced /dev/null itself). The
tests use named pipes of their own, never /dev/null: on code without the check they would replace it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cli_helpers import one_error_line, srfeat_cli
from PIL import Image

from srfeat.files import OutputIsSpecialError, write_file_atomically

RENAMED_OVER = "srfeat writes a whole file and renames it into place, which would replace it"


def _pipe(path: Path) -> Path:
    os.mkfifo(path)
    return path


def _still_a_pipe(path: Path) -> bool:
    return stat.S_ISFIFO(path.lstat().st_mode)


def _image(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (24, 20), (120, 60, 30)).save(path)
    return path


def test_an_eval_json_that_is_a_pipe_is_refused_before_scoring(tmp_path: Path) -> None:
    (tmp_path / "set").mkdir()
    Image.new("RGB", (48, 48), (90, 10, 200)).save(tmp_path / "set" / "a.png")
    pipe = _pipe(tmp_path / "results.json")
    child = srfeat_cli(
        "eval", "--model", "bicubic", "--data", tmp_path / "set", "--metrics", "psnr", "--json", pipe, "--overwrite"
    )
    line = one_error_line(child)
    assert line == (
        f"ERROR: --json {pipe} is a named pipe (FIFO), not a file: {RENAMED_OVER}; give a file name (the table goes "
        "to standard output)"
    )
    assert "|" not in child.stdout  # refused before any image was scored
    assert _still_a_pipe(pipe)


def test_an_upscale_output_that_is_a_pipe_is_kept(tmp_path: Path) -> None:
    source = _image(tmp_path)
    pipe = _pipe(tmp_path / "out.png")
    line = one_error_line(srfeat_cli("upscale", source, "-o", pipe, "--overwrite"))
    assert line == f"ERROR: {source}: its output {pipe} is a named pipe (FIFO), not a file; it is kept: give another -o"
    assert _still_a_pipe(pipe)


@pytest.mark.parametrize(
    ("name", "command"),
    [
        ("blended.safetensors", ["blend", "default", "gan", "--alpha", "0.5"]),
        ("model.onnx", ["export", "--model", "default"]),
    ],
)
def test_a_checkpoint_or_export_onto_a_pipe_is_refused(tmp_path: Path, name: str, command: list[str]) -> None:
    pipe = _pipe(tmp_path / name)
    line = one_error_line(srfeat_cli(*command, "-o", pipe, "--overwrite"))
    assert line == f"ERROR: {pipe} is a named pipe (FIFO), not a file: {RENAMED_OVER}; give the name of a file"
    assert _still_a_pipe(pipe)
    assert [path.name for path in tmp_path.iterdir()] == [name]  # no temporary left beside it


def test_the_last_check_before_the_rename_keeps_a_pipe_from_python(tmp_path: Path) -> None:
    """Every writer (images, videos, checkpoints, figures, JSON) renames through `srfeat.files`: the check
    there holds whatever its callers checked before."""
    pipe = _pipe(tmp_path / "out.bin")
    link = tmp_path / "link.bin"
    link.symlink_to(pipe)
    for path in (pipe, link):
        with pytest.raises(OutputIsSpecialError, match="is a named pipe"):
            write_file_atomically(path, lambda handle: handle.write(b"data"), 4, replace=True)
    assert _still_a_pipe(pipe) and link.is_symlink()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["link.bin", "out.bin"]
