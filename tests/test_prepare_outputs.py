"""`srfeat prepare`: patch names that cannot clash, an OUT/HR that is a link, file names that are not UTF-8,
links and sidecar files among the sources, an OUT that cannot be written or fills up."""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import CHILD_ENV, one_error_line, srfeat_cli
from skimage import data as samples

from srfeat.data.io import read_image, write_png
from srfeat.data.prepare import HALF_PATCHES_PER_IMAGE, PATCHES_PER_IMAGE, matlab_downscale
from srfeat.errors import SRFeatError


def assert_pairs_match(out: Path) -> None:
    """Every LR patch is its HR patch downscaled: the two folders belong to one run."""
    hr_names = sorted(path.name for path in (out / "HR").iterdir())
    assert hr_names == sorted(path.name for path in (out / "LR").iterdir())
    for name in hr_names[::17]:
        np.testing.assert_array_equal(read_image(out / "LR" / name), matlab_downscale(read_image(out / "HR" / name), 4))


def test_a_source_named_as_another_images_half_patches_is_refused(tmp_path: Path) -> None:
    # a.png's half-size patches are a_half_NNN.png, the names of a_half.png's own patches: the two
    # overwrote each other (300 files for "340 pairs"; with workers, HR of one image beside LR of the other)
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:200, :200])
    write_png(tmp_path / "src" / "a_half.png", samples.coffee()[:200, :200])
    result = srfeat_cli("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", cwd=tmp_path)
    line = one_error_line(result)
    assert "a.png" in line and "a_half.png" in line and "--no-half" in line, line
    assert not (tmp_path / "out").exists()
    result = srfeat_cli("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", "--no-half", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "out" / "HR").iterdir())) == 2 * PATCHES_PER_IMAGE


def test_a_source_folder_given_twice_is_used_once_and_a_clash_names_its_files(tmp_path: Path) -> None:
    # `prepare src src out` said "two source images share a file name ... rename one", naming none
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    result = srfeat_cli("prepare", "src", "./src/", "out", "--hr-patch-size", "64", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "given twice" in result.stderr
    assert len(list((tmp_path / "out" / "HR").iterdir())) == PATCHES_PER_IMAGE
    write_png(tmp_path / "other" / "a.png", samples.coffee()[:100, :100])
    result = srfeat_cli("prepare", "src", "other", "out2", "--hr-patch-size", "64", "--workers", "1", cwd=tmp_path)
    line = one_error_line(result)
    assert "share a file name" in line and "src/a.png" in line and "other/a.png" in line, line


def test_overwrite_of_an_out_whose_hr_is_a_link_keeps_the_pairs_matched(tmp_path: Path) -> None:
    # OUT/HR a symbolic link (patches kept on another disk): the swap moved the new HR/ in, then
    # failed on rmtree of the link with a traceback, leaving the new HR/ beside the old LR/
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:200, :200])
    args = ("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1")
    assert srfeat_cli(*args, "--seed", "1", cwd=tmp_path).returncode == 0
    (tmp_path / "out" / "HR").rename(tmp_path / "elsewhere")
    (tmp_path / "out" / "HR").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    old = sorted(path.name for path in (tmp_path / "elsewhere").iterdir())
    result = srfeat_cli(*args, "--seed", "2", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["HR", "LR"]  # nothing hidden left
    assert_pairs_match(tmp_path / "out")
    assert len(list((tmp_path / "out" / "HR").iterdir())) == PATCHES_PER_IMAGE + HALF_PATCHES_PER_IMAGE
    assert sorted(path.name for path in (tmp_path / "elsewhere").iterdir()) == old  # the link's target is not ours


def test_a_file_name_that_is_not_utf8_is_prepared(tmp_path: Path) -> None:
    # a Latin-1 name (caf\xe9.png from an old archive) stopped the run with a UnicodeEncodeError traceback
    source = tmp_path / "src"
    write_png(source / "cafe.png", samples.astronaut()[:100, :100])
    os.rename(os.fsencode(source / "cafe.png"), os.fsencode(source) + b"/caf\xe9.png")
    args = ("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", "--no-half")
    result = srfeat_cli(*args, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    names = os.listdir(os.fsencode(tmp_path / "out" / "HR"))
    assert len(names) == PATCHES_PER_IMAGE and b"caf\xe9_000.png" in names


def test_the_hidden_folders_of_a_killed_run_are_removed_by_the_next(tmp_path: Path) -> None:
    # a run killed (kill -9, out of memory) left .HR.partial-PID and .LR.partial-PID in OUT (hundreds of
    # thousands of files at DIV2K's size) for good, and an OUT holding only them was "not empty: pass --overwrite"
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    killed = subprocess.Popen(["true"])
    killed.wait()
    for sub in ("HR", "LR"):
        write_png(tmp_path / "out" / f".{sub}.partial-{killed.pid}" / "a_000.png", np.zeros((64, 64, 3), np.uint8))
    args = ("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", "--no-half")
    result = srfeat_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["HR", "LR"]
    assert_pairs_match(tmp_path / "out")
    running = tmp_path / "out" / f".HR.partial-{os.getpid()}"  # a run still going (this process, holding its
    write_png(running / "a_000.png", np.zeros((64, 64, 3), np.uint8))  # lock): kept, and named, even with --overwrite
    descriptor = os.open(running, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        refused = srfeat_cli(*args, "--overwrite", cwd=tmp_path)
    finally:
        os.close(descriptor)
    assert refused.returncode == 1 and "another srfeat prepare is writing into out right now" in refused.stderr
    assert (running / "a_000.png").is_file()


def test_no_progress_bar_goes_into_a_pipe(tmp_path: Path) -> None:
    """`srfeat prepare ... 2>&1 | tail` got tqdm's bar redrawn into the pipe (upscale and eval draw it
    on a terminal only)."""
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:96, :96])
    result = srfeat_cli("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "prepare:" not in result.stderr and "img/s" not in result.stderr, result.stderr


def test_a_sidecar_file_beside_an_image_is_no_name_clash(tmp_path: Path) -> None:
    # A photo editor's 0001.xmp beside 0001.png stopped the run: "two source images share a file name"
    write_png(tmp_path / "src" / "0001.png", samples.astronaut()[:100, :100])
    (tmp_path / "src" / "0001.xmp").write_text('<x:xmpmeta xmlns:x="adobe:ns:meta/"/>')
    (tmp_path / "src" / "0000.aae").write_text("<plist/>")  # before its image in the listing, too
    write_png(tmp_path / "src" / "0000.png", samples.coffee()[:100, :100])
    args = ("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", "--no-half")
    result = srfeat_cli(*args, cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "cannot read image src/0001.xmp" in result.stderr  # skipped, and said
    assert len(list((tmp_path / "out" / "HR").iterdir())) == 2 * PATCHES_PER_IMAGE


def test_a_link_to_another_source_image_is_cut_once(tmp_path: Path) -> None:
    # a.png, b.png -> a.png and a hard link c.png: a's patches were cut three times (weighed triple in training)
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    (tmp_path / "src" / "b.png").symlink_to("a.png")
    os.link(tmp_path / "src" / "a.png", tmp_path / "src" / "c.png")
    result = srfeat_cli("prepare", "src", "out", "--hr-patch-size", "64", "--workers", "1", "--no-half", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "src/b.png is the same file as src/a.png" in result.stderr
    assert "src/c.png is the same file as src/a.png" in result.stderr
    assert {path.name[:2] for path in (tmp_path / "out" / "HR").iterdir()} == {"a_"}
    assert len(list((tmp_path / "out" / "HR").iterdir())) == PATCHES_PER_IMAGE


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    # A write that failed (a full disk; here the file size limit) was an OSError traceback
    import resource

    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("kept")
    for workers in ("1", "2"):
        child = subprocess.run(
            [sys.executable, "-m", "srfeat.cli", "prepare", "src", "out", "--hr-patch-size", "64"]
            + ["--workers", workers, "--overwrite"],
            cwd=tmp_path,
            env=CHILD_ENV,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096)),
        )
        line = one_error_line(child)
        assert "could not write the patches in out: File too large; out is as it was" in line, line
        assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["mine.txt"]


def test_an_out_that_cannot_be_written_is_refused_before_any_patch(tmp_path: Path) -> None:
    # mkdir of the hidden folders failed with a PermissionError traceback
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    (tmp_path / "ro").mkdir()
    out = tmp_path / "ro" / "out"
    try:  # a folder no one may write in, root included (chmod does not bind root)
        subprocess.run(["chattr", "+i", str(tmp_path / "ro")], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("chattr +i is not available here (needs root and a file system that supports it)")
    try:
        line = one_error_line(srfeat_cli("prepare", "src", out, "--hr-patch-size", "64", cwd=tmp_path))
    finally:
        subprocess.run(["chattr", "-i", str(tmp_path / "ro")], check=True)
    assert f"output folder {out}: cannot write in {tmp_path / 'ro'}" in line and "choose another OUT" in line, line


def test_an_hr_folder_made_while_the_run_cut_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another run (or the user) put OUT/HR in place while this one cut: it was replaced without --overwrite
    from srfeat.data import prepare

    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    out = tmp_path / "out"
    cut = prepare.prepare_image

    def cut_while_another_run_finishes(path: Path, *args: Any) -> prepare.ImageOutcome:
        (out / "HR").mkdir(exist_ok=True)
        (out / "HR" / "theirs.png").write_bytes(b"another run's patch")
        return cut(path, *args)

    monkeypatch.setattr(prepare, "prepare_image", cut_while_another_run_finishes)
    with pytest.raises(SRFeatError, match="out/HR appeared while this run cut its patches"):
        prepare.prepare_patches(tmp_path / "src", out, hr_patch_size=64, workers=1, progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["HR"]
    assert [path.name for path in (out / "HR").iterdir()] == ["theirs.png"]
    prepare.prepare_patches(tmp_path / "src", out, hr_patch_size=64, workers=1, progress=False, overwrite=True)
    assert len(list((out / "HR").iterdir())) == PATCHES_PER_IMAGE  # theirs replaced, with --overwrite


def test_an_image_whose_patch_names_are_too_long_is_named_before_any_is_cut(tmp_path: Path) -> None:
    # A 245-byte name fits, its patches' (<stem>_half_000.png, 258 bytes) do not: the run cut the other
    # images first, then stopped with "File name too long", naming no file
    long_stem = "x" * 245
    write_png(tmp_path / "src" / f"{long_stem}.png", samples.astronaut()[:100, :100])
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    line = one_error_line(srfeat_cli("prepare", "src", "out", "--hr-patch-size", "32", "--workers", "1", cwd=tmp_path))
    assert f"the patches of src/{long_stem}.png would be named" in line and "258 bytes, more than the 255" in line
    assert "rename the image" in line and not (tmp_path / "out").exists()


@pytest.mark.parametrize("failure", ["every image too small", "ctrl-c"])
def test_a_failed_run_leaves_none_of_the_folders_it_made_above_out(
    tmp_path: Path, failure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # OUT itself was removed, the folders made above it (new/deeper/) were left
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    (tmp_path / "there").mkdir()
    out = tmp_path / "there" / "new" / "deeper" / "out"
    if failure == "every image too small":
        line = one_error_line(srfeat_cli("prepare", "src", out, "--hr-patch-size", "128", cwd=tmp_path))
        assert "no patches written: every source image was unreadable or smaller than 128 px" in line, line
    else:
        from srfeat.data import prepare

        def interrupted(*args: object) -> prepare.ImageOutcome:
            raise KeyboardInterrupt

        monkeypatch.setattr(prepare, "prepare_image", interrupted)
        with pytest.raises(KeyboardInterrupt):
            prepare.prepare_patches(tmp_path / "src", out, hr_patch_size=64, workers=1, progress=False)
    assert list((tmp_path / "there").iterdir()) == []


def test_prepare_patches_names_its_keywords_to_python_and_the_command_its_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`prepare_patches` from Python was told to "pass --overwrite", "choose another OUT", that "--seed" or
    "--workers" was wrong, and of an "SRC" given twice: the words of `srfeat prepare`, which keeps them
    (`command_line=True`)."""
    from srfeat.data import prepare
    from srfeat.errors import SRFeatError

    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    out = tmp_path / "out"
    write_png(out / "mine.png", np.zeros((8, 8, 3), np.uint8))

    def refusal(command_line: bool, seed: int = 0, workers: int = 1) -> str:  # prepare_patches' defaults
        with pytest.raises(SRFeatError) as raised:
            prepare.prepare_patches(
                tmp_path / "src",
                out,
                hr_patch_size=64,
                seed=seed,
                workers=workers,
                progress=False,
                command_line=command_line,
            )
        return str(raised.value)

    for command_line, words in (
        (False, ("overwrite=True", "out", "seed", "workers")),
        (True, ("--overwrite", "OUT", "--seed", "--workers")),
    ):
        overwrite, other, seed, workers = words
        assert refusal(command_line) == (
            f"output folder {out} is not empty: pass {overwrite} to replace its HR/ and LR/ patches, "
            f"or choose another {other}"
        )
        assert refusal(command_line, seed=-1) == f"{seed} must be 0 or more, got -1"
        assert refusal(command_line, workers=0).startswith(f"{workers} must be in 1..")
    with caplog.at_level(logging.WARNING, logger="srfeat"), pytest.raises(SRFeatError):
        prepare.prepare_patches([tmp_path / "src", tmp_path / "src"], out, hr_patch_size=64, progress=False)
    assert f"sources {tmp_path / 'src'} is given twice" in caplog.text, caplog.text
    (out / "mine.png").unlink()
    cut = prepare.prepare_image

    def cut_while_another_run_finishes(path: Path, *args: Any) -> prepare.ImageOutcome:
        (out / "HR").mkdir(exist_ok=True)
        return cut(path, *args)

    monkeypatch.setattr(prepare, "prepare_image", cut_while_another_run_finishes)
    for command_line, (overwrite, other) in ((False, ("overwrite=True", "out")), (True, ("--overwrite", "OUT"))):
        with pytest.raises(SRFeatError) as raised:
            prepare.prepare_patches(
                tmp_path / "src", out, hr_patch_size=64, workers=1, progress=False, command_line=command_line
            )
        assert str(raised.value).endswith(
            f"this run's patches are discarded; run again with {overwrite} to replace it, or choose another {other}"
        )
        assert sorted(path.name for path in out.iterdir()) == ["HR"]
        (out / "HR").rmdir()
