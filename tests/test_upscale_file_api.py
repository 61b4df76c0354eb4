"""`upscale_file` from Python: paths as `upscale_video` takes them (str, bytes, path-like, `~` expanded),
and refusals that name its keywords (`replace=True`, `outscale`), not `srfeat upscale`'s flags, which the
command line gets (`command_line=True`)."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path
from stat import S_IFIFO

import numpy as np
import pytest
from inference_helpers import tiny_generator
from PIL import Image

from srfeat import Upscaler, path_checks
from srfeat.data.io import write_image
from srfeat.errors import ImageReadError, SRFeatError
from srfeat.files import OutputExistsError
from srfeat.inference.image_files import upscale_file


@pytest.fixture()
def upscaler() -> Upscaler:
    return Upscaler(tiny_generator(), device="cpu", tile=0)


def write_photo(path: Path, width: int = 5, height: int = 6) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 120, np.uint8)).save(path)
    return path


def test_a_home_relative_path_is_the_file_in_home(
    upscaler: Upscaler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`upscale_file(u, "~/in.png", "~/out/x4.png")` looked for a folder named `~` in the working directory
    (the input "not found"), where `upscale_video` expands `~`."""
    home = tmp_path / "home"
    write_photo(home / "in.png")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    assert upscale_file(upscaler, "~/in.png", "~/out/x4.png") == (20, 24)
    assert upscale_file(upscaler, Path("~/in.png"), Path("~/out/path.png")) == (20, 24)
    assert Image.open(home / "out" / "x4.png").size == (20, 24) and (home / "out" / "path.png").is_file()
    assert not (tmp_path / "~").exists()


def test_bytes_paths_are_taken(upscaler: Upscaler, tmp_path: Path) -> None:
    """A bytes path (as os.listdir(b".") gives) was a TypeError from pathlib; `upscale_video` takes one."""
    source = write_photo(tmp_path / "in.png")
    assert upscale_file(upscaler, os.fsencode(source), os.fsencode(tmp_path / "out.png")) == (20, 24)
    assert Image.open(tmp_path / "out.png").size == (20, 24)


def test_an_existing_target_is_refused_naming_replace_from_python_and_overwrite_for_the_command_line(
    upscaler: Upscaler, tmp_path: Path
) -> None:
    """It said "allow replacing it (replace=True, --overwrite)" to both."""
    source, target = write_photo(tmp_path / "in.png"), tmp_path / "kept.png"
    target.write_bytes(b"the user's picture")
    said = f"{target} exists; it is kept: remove it, or allow replacing it "
    for command_line, option in ((False, "(replace=True)"), (True, "(--overwrite)")):
        with pytest.raises(OutputExistsError) as raised:
            upscale_file(upscaler, source, target, replace=False, command_line=command_line)
        assert str(raised.value) == said + option
    assert target.read_bytes() == b"the user's picture"


def test_a_result_over_its_formats_limit_is_refused_naming_outscale_from_python(
    upscaler: Upscaler, tmp_path: Path
) -> None:
    """It said to give "--ext png, or an -o file name ending in .png" or lower "--outscale" to a Python caller
    (the command line's words are test_upscale_cli's)."""
    source = write_photo(tmp_path / "wide.png", width=4100, height=2)  # x4: 16400, over WebP's 16383
    target = tmp_path / "big.webp"
    said = f"cannot write {target}: the result would be 16400x8, over WebP's limit of 16383 pixels per side; "
    with pytest.raises(SRFeatError) as raised:
        upscale_file(upscaler, source, target)
    assert str(raised.value) == said + "write it as PNG or TIFF (a target name ending in .png), or lower outscale"
    with pytest.raises(SRFeatError) as raised:
        upscale_file(upscaler, source, target, command_line=True)
    assert str(raised.value) == said + (
        "write it as PNG or TIFF (--ext png, or an -o file name ending in .png), or lower --outscale"
    )
    assert not target.exists()


def test_a_target_saved_while_the_image_is_upscaled_is_refused_naming_the_callers_option(
    upscaler: Upscaler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file saved at the target's name after `upscale_file` looked (while the network ran) is kept; the
    write's refusal said to allow replacing it "(--overwrite)" to a Python caller too."""
    source, target = write_photo(tmp_path / "in.png"), tmp_path / "saved.png"
    upscale_array = upscaler.upscale_array

    def saving_meanwhile(array: np.ndarray, outscale: float | None = None) -> np.ndarray:
        target.write_bytes(b"saved meanwhile")
        return upscale_array(array, outscale=outscale)

    monkeypatch.setattr(upscaler, "upscale_array", saving_meanwhile)
    said = f"{target} appeared while it was being written (another program?); it is kept: remove it or allow "
    for command_line, option in ((False, "replacing it (replace=True)"), (True, "replacing it (--overwrite)")):
        target.unlink(missing_ok=True)
        with pytest.raises(OutputExistsError) as raised:
            upscale_file(upscaler, source, target, replace=False, command_line=command_line)
        assert str(raised.value) == said + option + ", and run again"
        assert target.read_bytes() == b"saved meanwhile"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "saved.png"]  # no temporary left


def test_a_source_or_target_in_a_link_loop_is_an_srfeat_error(upscaler: Upscaler, tmp_path: Path) -> None:
    """A link loop as either path was RuntimeError ("Symlink loop from ...") from `Path.resolve` before Python
    3.13, not the documented `ImageReadError` / `OutputExistsError`."""
    source = write_photo(tmp_path / "in.png")
    (tmp_path / "loop.png").symlink_to("loop.png")
    with pytest.raises(ImageReadError, match="loop.png"):
        upscale_file(upscaler, tmp_path / "loop.png", tmp_path / "out.png")
    with pytest.raises(OutputExistsError, match="loop.png exists"):
        upscale_file(upscaler, source, tmp_path / "loop.png", replace=False)
    assert os.readlink(tmp_path / "loop.png") == "loop.png" and not (tmp_path / "out.png").exists()


def _release_readers(pipe: Path, seconds: float) -> None:
    """For `seconds`, open `pipe` for writing and close it whenever a reader waits on it: the reader then
    gets an empty file rather than waiting forever (the old code, which read it, fails rather than hangs)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader yet
            pass
        time.sleep(0.05)


def test_a_pipe_a_folder_or_an_empty_file_as_the_source_is_named_as_what_it_is(
    upscaler: Upscaler, tmp_path: Path
) -> None:
    """A pipe was opened to be read as a PNG and waited forever for a writer; a folder was "image not found",
    and an empty file PIL's "cannot identify image file". The pipe is named as one, not as "a pipe, socket or
    device"."""
    os.mkfifo(tmp_path / "pipe.png")
    threading.Thread(target=_release_readers, args=(tmp_path / "pipe.png", 20), daemon=True).start()
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").touch()
    for name, said in [
        ("pipe.png", "it is a named pipe (FIFO), not an image file"),
        ("folder.png", "it is a folder, not an image file"),
        ("empty.png", "the file is empty (0 bytes)"),
    ]:
        with pytest.raises(ImageReadError, match=re.escape(f"cannot read image {tmp_path / name}: {said}")):
            upscale_file(upscaler, tmp_path / name, tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_a_special_file_of_a_kind_not_in_the_table_is_named_in_a_sentence_that_reads(
    upscaler: Upscaler, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A special file outside `_FILE_KINDS` (a Solaris door, a BSD whiteout: none can be made here, so a pipe
    stands for one with pipes taken out of the table) was "it is not a regular file, not an image file"."""
    monkeypatch.setattr(
        path_checks, "_FILE_KINDS", {mode: kind for mode, kind in path_checks._FILE_KINDS.items() if mode != S_IFIFO}
    )
    os.mkfifo(tmp_path / "door.png")
    threading.Thread(target=_release_readers, args=(tmp_path / "door.png", 20), daemon=True).start()
    said = f"cannot read image {tmp_path / 'door.png'}: it is a special file of an unknown kind, not an image file"
    with pytest.raises(ImageReadError, match=re.escape(said)):
        upscale_file(upscaler, tmp_path / "door.png", tmp_path / "out.png")
    assert not (tmp_path / "out.png").exists()


def test_a_target_under_a_file_is_one_line_before_the_source_is_read(upscaler: Upscaler, tmp_path: Path) -> None:
    """`upscale_file(u, src, "photo.jpg/x.png")`, `photo.jpg` a file, was a bare FileExistsError from making the
    folder, after the upscale; `write_image` to such a path the same. Each is one line naming the file in the way,
    and the file is kept."""
    source = write_photo(tmp_path / "in.png")
    in_the_way = write_photo(tmp_path / "photo.jpg")
    before = in_the_way.read_bytes()
    for target in (in_the_way / "x.png", in_the_way / "deeper" / "x.png"):
        with pytest.raises(
            SRFeatError, match=re.escape(f"cannot write {target}: {in_the_way} is a file, not a folder")
        ):
            upscale_file(upscaler, source, target)
        with pytest.raises(
            SRFeatError, match=re.escape(f"cannot write {target}: {in_the_way} is a file, not a folder")
        ):
            write_image(target, np.zeros((4, 4, 3), np.uint8))
    assert in_the_way.read_bytes() == before
