"""`srfeat prepare`: the authors' recipe (130 patches per image, 40 more at half size), reproducible,
parallel, safe with OUT.

Kept fast with one or two scikit-image photos (the issue's five-BSDS200-image check, 650
pairs, is the same code on more images and was run by hand).
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import one_error_line, srfeat_cli, start_piped
from skimage import data as samples

from srfeat.commands import prepare as prepare_command
from srfeat.data.datasets import bicubic_downscale
from srfeat.data.io import read_image, write_png
from srfeat.data.prepare import (
    HALF_PATCHES_PER_IMAGE,
    HALF_RECIPE,
    MAX_WORKERS,
    PATCHES_PER_IMAGE,
    cut_patches,
    half_size,
    matlab_downscale,
    prepare_patches,
)
from srfeat.data.resize import imresize
from srfeat.errors import InvalidOptionError, SRFeatError
from srfeat.locks import process_exists

REPO = Path(__file__).resolve().parents[1]


def matlab_uint8_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB's imresize(hr, 1/scale) on uint8, which rounds each 1-D pass: height first (MATLAB's
    order on a tie), rounded, then width (a resize to the same length is exactly the identity)."""
    image = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)
    height, width = image.shape[1] // scale, image.shape[2] // scale
    tall = imresize(image, size=(height, image.shape[2])).round().clamp(0, 255)
    return imresize(tall, size=(height, width)).round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8)


def test_lr_patches_are_rounded_after_each_pass_as_matlab_rounds_uint8() -> None:
    hr = samples.astronaut()[:296, :296]
    lr = matlab_downscale(hr, 4)
    np.testing.assert_array_equal(lr, matlab_uint8_downscale(hr, 4))
    off = np.abs(lr.astype(int) - bicubic_downscale(hr, 4).astype(int))
    assert (
        1 <= off.max() <= 2 and 0.02 < (off > 0).mean() < 0.3
    )  # against the protocol's single rounding: 1 value in 10


def run_prepare(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    prepare_command.add_arguments(parser)
    return prepare_command.run(parser.parse_args(list(argv)))


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    folder = tmp_path / "src"
    write_png(folder / "chelsea.png", samples.chelsea())  # 300x451: fits the paper's 296 px patch
    write_png(folder / "small.png", samples.coffee()[:120, :200])  # too small for 296
    return folder


def test_recipe_counts_and_orientations() -> None:
    # A 2x2 image with distinct corners: the 8 orientations of a 2x2 "patch" are all different.
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    patches = cut_patches(image, 2, np.random.default_rng(0))
    assert PATCHES_PER_IMAGE == len(patches) == 130
    expected = [image] * 35 + [image[:, ::-1]] * 35
    expected += [np.rot90(image, k) for k in (1, 2, 3) for _ in range(10)]
    expected += [np.rot90(image[:, ::-1], k) for k in (1, 2, 3) for _ in range(10)]
    for patch, reference in zip(patches, expected, strict=True):
        np.testing.assert_array_equal(patch, reference)


def test_prepare_writes_130_pairs_per_image_with_quarter_size_lr(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        assert run_prepare(str(source), str(out), "--workers", "1", "--seed", "3") == 0
    assert "small.png" in caplog.text  # listed as too small
    hr_files = sorted((out / "HR").iterdir())
    lr_files = sorted((out / "LR").iterdir())
    assert len(hr_files) == len(lr_files) == 130
    assert [path.name for path in hr_files] == [path.name for path in lr_files]
    for hr_path, lr_path in zip(hr_files[::13], lr_files[::13], strict=True):
        hr, lr = read_image(hr_path), read_image(lr_path)
        assert hr.shape == (296, 296, 3) and lr.shape == (74, 74, 3)
        np.testing.assert_array_equal(lr, matlab_uint8_downscale(hr, 4))
    # HR patches are crops of the photo (the first 35 unflipped and unrotated).
    photo = samples.chelsea()
    first = read_image(hr_files[0])
    windows = np.lib.stride_tricks.sliding_window_view(photo, (296, 296), axis=(0, 1))[:, :, 0, :8, :8]
    assert (windows == first[:8, :8, 0]).all(axis=(2, 3)).any()


def test_same_seed_gives_identical_files_any_worker_count(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_png(source / "astronaut.png", samples.astronaut()[::4, ::4])  # 128x128
    write_png(source / "coffee.png", samples.coffee()[::4, ::4])  # 100x150
    prepare_patches(source, tmp_path / "a", hr_patch_size=64, seed=5, workers=1, progress=False)
    prepare_patches(source, tmp_path / "b", hr_patch_size=64, seed=5, workers=2, progress=False)
    prepare_patches(source, tmp_path / "c", hr_patch_size=64, seed=6, workers=1, progress=False)
    files_a = sorted(path.relative_to(tmp_path / "a") for path in (tmp_path / "a").rglob("*.png"))
    assert len(files_a) == 2 * (130 + 40 + 130)  # astronaut's half (64 px) fits a patch, coffee's (50x75) does not
    assert files_a == sorted(path.relative_to(tmp_path / "b") for path in (tmp_path / "b").rglob("*.png"))
    assert all((tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes() for name in files_a)
    assert any((tmp_path / "a" / name).read_bytes() != (tmp_path / "c" / name).read_bytes() for name in files_a)


def test_non_empty_out_needs_overwrite(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_png(out / "HR" / "stale_999.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(
        SRFeatError, match="pass overwrite=True to replace its HR/ and LR/ patches, or choose another out$"
    ):
        prepare_patches(source, out, hr_patch_size=96, progress=False)
    assert [path.name for path in (out / "HR").iterdir()] == ["stale_999.png"]  # untouched
    prepare_patches(source, out, hr_patch_size=96, overwrite=True, progress=False)
    names = {path.name for path in (out / "HR").iterdir()}
    # both photos fit 96 px; only chelsea's half (150x226) does
    assert "stale_999.png" not in names and len(names) == 2 * 130 + 40


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overwrite": "no"}, "overwrite must be True or False, got str 'no'"),  # replaced OUT's patches
        ({"overwrite": True, "half": "no"}, "half must be True or False, got str 'no'"),  # cut the half patches
        ({"overwrite": True, "hr_patch_size": "96"}, "hr_patch_size must be a whole number, got str '96'"),
        ({"overwrite": True, "hr_patch_size": 96.0}, "hr_patch_size must be a whole number, got float 96.0"),
        ({"overwrite": True, "seed": 1.5}, "seed must be a whole number, got float 1.5"),
        ({"overwrite": True, "workers": "2"}, "workers must be a whole number, got str '2'"),
    ],
)
def test_options_of_the_wrong_kind_from_python_are_refused_and_out_is_kept(
    source: Path, tmp_path: Path, options: dict[str, object], message: str
) -> None:
    """`prepare_patches(..., overwrite="no")` deleted the patches in OUT (a string is true); numbers given as
    strings or floats were TypeErrors from inside."""
    out = tmp_path / "out"
    write_png(out / "HR" / "mine_001.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InvalidOptionError, match=re.escape(message)):
        prepare_patches(source, out, **{"hr_patch_size": 96, "progress": False, **options})
    assert [path.name for path in (out / "HR").iterdir()] == ["mine_001.png"]


@pytest.mark.parametrize(("size", "scale"), [("0", "4"), ("-5", "4"), ("6", "4"), ("3", "2")])
def test_a_patch_size_off_the_scale_names_the_flags_in_plain_words(
    source: Path, tmp_path: Path, size: str, scale: str
) -> None:
    # Before: `srfeat prepare --hr-patch-size 0` was told about "hr_patch_size", a name it never typed, then
    # "got int 0"; 6 was "the HR patch size 6 must be a positive multiple of the scale 4", named by neither flag.
    child = srfeat_cli("prepare", source, tmp_path / "out", "--hr-patch-size", size, "--scale", scale, cwd=tmp_path)
    expected = f"ERROR: --hr-patch-size must be a positive multiple of --scale ({scale}), got {size}"
    assert one_error_line(child) == expected
    assert not (tmp_path / "out").exists()


def test_a_run_into_an_out_that_another_run_filled_meanwhile_keeps_its_patches(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `srfeat prepare` into one new OUT (two terminals, a script): both found it empty, and the one
    that ended last replaced the other's patches without --overwrite (and had their folder moves
    interleaved, one's HR/ could end beside the other's LR/: pairs that do not match). The other run
    here is a real process, run to its end between this one's check of OUT and its first patch."""
    from srfeat.data import prepare

    out = tmp_path / "out"
    check = prepare._check_output

    def meanwhile(*args, **kwargs):
        check(*args, **kwargs)
        other = srfeat_cli("prepare", source, out, "--hr-patch-size", "96", "--seed", "7", cwd=tmp_path)
        assert other.returncode == 0, other.stderr

    monkeypatch.setattr(prepare, "_check_output", meanwhile)
    with pytest.raises(SRFeatError, match="out/HR appeared while this run cut its patches"):
        prepare_patches(source, out, hr_patch_size=96, progress=False)
    monkeypatch.undo()
    theirs = tmp_path / "theirs"
    prepare_patches(source, theirs, hr_patch_size=96, seed=7, progress=False)
    for sub in ("HR", "LR"):
        files = sorted(path.name for path in (out / sub).iterdir())
        assert files == sorted(path.name for path in (theirs / sub).iterdir())
        assert all((out / sub / name).read_bytes() == (theirs / sub / name).read_bytes() for name in files[:5])
    assert sorted(path.name for path in out.iterdir()) == ["HR", "LR"]  # no staged folder left


STALLED_PREPARE = """
import sys
from srfeat.cli import main
from srfeat.data import prepare

cut = prepare._prepare_all

def stalled(*args, **kwargs):  # its hidden folders made: says so, and waits for the test
    print("cutting", flush=True)
    sys.stdin.read()
    return cut(*args, **kwargs)

prepare._prepare_all = stalled
sys.exit(main(["prepare", *sys.argv[1:]]))
"""


def test_a_run_into_an_out_another_run_is_writing_says_so(source: Path, tmp_path: Path) -> None:
    """A second `srfeat prepare` into the OUT of one still running was told OUT "is not empty: pass
    --overwrite", where the user saw nothing (the first run's folders are hidden until its end)."""
    out = tmp_path / "out"
    args = [str(source), str(out), "--hr-patch-size", "96"]
    first = start_piped([sys.executable, "-c", STALLED_PREPARE, *args])
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "cutting"
        message = one_error_line(srfeat_cli("prepare", *args, cwd=tmp_path))
        assert f"another srfeat prepare is writing into {out} right now (.HR.partial-{first.pid})" in message
        _, stderr = first.communicate("", timeout=600)  # the first run goes on, as if nothing happened
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            first.kill()
    assert len(list((out / "HR").iterdir())) == 2 * 130 + 40


def test_nothing_usable_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write_png(source / "small.png", samples.coffee()[:50, :50])
    (source / "notes.txt").write_text("not an image")
    with pytest.raises(SRFeatError, match="no patches written"):
        run_prepare(str(source), str(tmp_path / "out"), "--workers", "1")
    with pytest.raises(SRFeatError, match="multiple of"):
        prepare_patches(source, tmp_path / "out2", hr_patch_size=30, scale=4)


def test_half_recipe_is_5_crops_of_each_orientation() -> None:
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    patches = cut_patches(image, 2, np.random.default_rng(0), HALF_RECIPE)
    assert HALF_PATCHES_PER_IMAGE == len(patches) == 40
    orientations = [image, image[:, ::-1]] + [np.rot90(image, k) for k in (1, 2, 3)]
    orientations += [np.rot90(image[:, ::-1], k) for k in (1, 2, 3)]
    for index, patch in enumerate(patches):
        np.testing.assert_array_equal(patch, orientations[index // 5])


def test_half_writes_170_pairs_for_a_1000_px_image(tmp_path: Path) -> None:
    """The must-show: `srfeat prepare --half` on one 1000x1000 image writes 130 + 40 pairs."""
    from PIL import Image

    source = tmp_path / "src"
    photo = np.asarray(Image.fromarray(samples.astronaut()).resize((1000, 1000), Image.Resampling.BICUBIC))
    write_png(source / "astronaut.png", photo)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "srfeat.cli", "prepare", str(source), str(tmp_path / "out"), "--half"]
    result = subprocess.run([*command, "--workers", "1"], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    hr_files = sorted((tmp_path / "out" / "HR").iterdir())
    assert len(hr_files) == len(list((tmp_path / "out" / "LR").iterdir())) == 170
    half_files = [path for path in hr_files if "_half_" in path.name]
    assert len(half_files) == 40
    # the first half-size patch is an unflipped crop of the image downscaled by MATLAB bicubic to 500x500
    halved = half_size(photo)
    assert halved.shape == (500, 500, 3)
    first = read_image(half_files[0])
    windows = np.lib.stride_tricks.sliding_window_view(halved, (296, 296), axis=(0, 1))[:, :, 0, :8, :8]
    assert (windows == first[:8, :8, 0]).all(axis=(2, 3)).any()
    lr = read_image(tmp_path / "out" / "LR" / half_files[0].name)
    np.testing.assert_array_equal(lr, matlab_uint8_downscale(first, 4))
    # --no-half writes the same 130 full-size pairs and nothing else
    result = subprocess.run(
        [*command[:-1], str(tmp_path / "no_half"), "--no-half", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    full_files = sorted((tmp_path / "no_half" / "HR").iterdir())
    assert [path.name for path in full_files] == [path.name for path in hr_files if "_half_" not in path.name]
    assert all(path.read_bytes() == (tmp_path / "out" / "HR" / path.name).read_bytes() for path in full_files[::26])


def test_images_too_small_at_half_size_keep_their_130_and_are_listed(
    source: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        outcomes = prepare_patches(source, tmp_path / "out", hr_patch_size=296, progress=False)
    chelsea = next(outcome for outcome in outcomes if outcome.path.name == "chelsea.png")
    assert chelsea.written == 130 and chelsea.half_too_small  # 300x451 halves to 150x226
    assert "smaller than 296 px at half size" in caplog.text and "chelsea.png" in caplog.text


@pytest.mark.parametrize("workers", ["0", "-3", str(MAX_WORKERS + 1)])
def test_workers_out_of_range_are_refused_before_any_process_starts(tmp_path: Path, workers: str) -> None:
    # --workers 100000 used to fork thousands of processes; 0 and -3 ran serially without a word
    write_png(tmp_path / "src" / "a.png", samples.coffee()[:40, :40])
    result = srfeat_cli("prepare", "src", "out", "--hr-patch-size", "32", "--workers", workers, cwd=tmp_path)
    assert "--workers must be in 1.." in one_error_line(result)
    assert not (tmp_path / "out").exists()


def test_a_negative_seed_is_one_line(tmp_path: Path) -> None:
    write_png(tmp_path / "src" / "a.png", samples.coffee()[:40, :40])
    result = srfeat_cli(
        "prepare", "src", "out", "--hr-patch-size", "32", "--workers", "1", "--seed", "-1", cwd=tmp_path
    )
    assert "--seed must be 0 or more" in one_error_line(result)


@pytest.mark.parametrize("source_name", ["out/HR", "out"])
def test_a_source_where_the_patches_go_is_refused_and_kept(tmp_path: Path, source_name: str) -> None:
    # `prepare out/HR out --overwrite` used to delete out/HR, the source images, before reading them
    source = tmp_path / source_name
    write_png(source / "a.png", samples.coffee()[:40, :40])
    before = sorted(path.name for path in source.iterdir())
    result = srfeat_cli(
        "prepare", source_name, "out", "--hr-patch-size", "32", "--workers", "1", "--overwrite", cwd=tmp_path
    )
    assert "is where the patches go" in one_error_line(result)
    assert sorted(path.name for path in source.iterdir()) == before


def test_overwrite_keeps_the_old_patches_when_the_new_run_writes_none(source: Path, tmp_path: Path) -> None:
    # --overwrite used to delete OUT/HR and OUT/LR first: a run that then wrote nothing lost them
    out = tmp_path / "out"
    prepare_patches(source, out, hr_patch_size=96, workers=1, progress=False, half=False)
    old = {path.name: path.read_bytes() for path in sorted((out / "HR").iterdir())[:5]}
    small = tmp_path / "small"
    write_png(small / "tiny.png", samples.coffee()[:50, :50])
    result = srfeat_cli(
        "prepare", str(small), str(out), "--hr-patch-size", "96", "--workers", "1", "--overwrite", cwd=tmp_path
    )
    assert "no patches written" in one_error_line(result) and "is as it was" in result.stderr
    assert "tiny.png" in result.stderr  # the warning names the skipped image
    assert {name: (out / "HR" / name).read_bytes() for name in old} == old
    assert len(list((out / "HR").iterdir())) == len(list((out / "LR").iterdir())) == 2 * PATCHES_PER_IMAGE
    assert sorted(path.name for path in out.iterdir()) == ["HR", "LR"]  # no staging folder left


def test_a_failed_run_leaves_no_output_folder(tmp_path: Path) -> None:
    write_png(tmp_path / "src" / "tiny.png", samples.coffee()[:50, :50])
    one_error_line(srfeat_cli("prepare", "src", "out", "--hr-patch-size", "96", "--workers", "1", cwd=tmp_path))
    assert not (tmp_path / "out").exists()  # it used to hold empty HR/ and LR/


STALLED_IMAGES = """
import os, sys, time
from pathlib import Path
import srfeat.data.prepare as prepare
from srfeat.cli import main

cut, markers = prepare.prepare_image, Path(sys.argv[-1])

def stalled(path, staging, *args):  # the first image is cut; every later one takes an hour
    if path.name != "a.png":
        (markers / f"{os.getpid()}.pid").touch()
        time.sleep(3600)
    return cut(path, staging, *args)

prepare.prepare_image = stalled
sys.argv = ["srfeat", "prepare", *sys.argv[1:-1]]
sys.exit(main())
"""


def stalled_run_arguments(tmp_path: Path) -> tuple[Path, Path, list[Path | str]]:
    """OUT (with earlier patches), the markers folder and STALLED_IMAGES' arguments: four images cut by two
    workers over --overwrite, each worker stalled on its image."""
    source, out, markers = tmp_path / "src", tmp_path / "out", tmp_path / "markers"
    for folder in (source, out / "HR", out / "LR", markers):
        folder.mkdir(parents=True)
    for name in ("a", "b", "c", "d"):
        write_png(source / f"{name}.png", samples.astronaut()[:64, :64])
    (out / "HR" / "earlier.png").write_bytes(b"earlier")
    return out, markers, [source, out, "--hr-patch-size", "32", "--workers", "2", "--overwrite", markers]


@pytest.mark.parametrize(
    "stop",
    [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
    ids=["sigterm-to-the-command", "ctrl-c-to-all", "hangup-to-all"],
)
def test_a_stop_signal_ends_the_workers_at_once_and_keeps_out_as_it_was(tmp_path: Path, stop: signal.Signals) -> None:
    """With --workers, SIGTERM (and Ctrl-C, which reaches the workers too: each handed back its
    KeyboardInterrupt as a result and went on) waited for every image submitted to be cut; the
    earlier patches of an --overwrite run are kept, the staged ones removed, no worker is left.
    SIGHUP (the terminal closed; the shell sends it to the whole job) killed the command and left
    its staging folders for the next run to remove."""
    from cli_helpers import CHILD_ENV, with_hangup

    out, markers, args = stalled_run_arguments(tmp_path)
    child = subprocess.Popen(
        with_hangup([sys.executable, "-c", STALLED_IMAGES, *map(str, args)], ignored=False),
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Ctrl-C: the terminal signals the process group
    )
    try:
        deadline = time.monotonic() + 120
        while not any(markers.iterdir()) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)  # a worker is in an image it will not finish
        assert child.poll() is None, child.communicate()
        if stop != signal.SIGTERM:
            os.killpg(child.pid, stop)
        else:
            child.send_signal(stop)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
    assert child.returncode == 128 + stop and "Traceback" not in stderr, (child.returncode, stderr)
    assert [line for line in stderr.splitlines() if line.startswith("ERROR")] == [
        "ERROR: interrupted"
        if stop == signal.SIGINT
        else f"ERROR: terminated ({stop.name}); files being written were removed"
    ], stderr
    assert sorted(p.name for p in out.iterdir()) == ["HR", "LR"]
    assert [p.name for p in (out / "HR").iterdir()] == ["earlier.png"]
    for marker in markers.iterdir():  # a worker that outlived the command would hold the CPU for an hour
        deadline = time.monotonic() + 10
        while process_exists(int(marker.stem)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not process_exists(int(marker.stem)), marker.stem


def test_stopped_workers_leave_no_thread_of_the_pool_for_python_s_exit() -> None:
    """Stopping the workers ended the executor's manager thread unseen: Python's exit hook then woke it through a
    pipe the thread was closing, and a stopped run printed an OSError traceback (Bad file descriptor) after its
    one line, now and then. The thread is over when the workers are stopped."""
    from concurrent.futures import ProcessPoolExecutor

    from srfeat.data.prepare import _stop_workers

    pool = ProcessPoolExecutor(max_workers=1)
    pool.submit(time.sleep, 3600)  # an image the worker would not finish
    manager: threading.Thread | None = getattr(pool, "_executor_manager_thread", None)  # typeshed mistypes it
    assert manager is not None and manager.is_alive()
    _stop_workers(pool)
    assert not manager.is_alive()


def test_a_worker_killed_alone_is_one_line_and_keeps_out_as_it_was(tmp_path: Path) -> None:
    """The out-of-memory killer picks one worker (each holds a whole image), or a signal reaches it alone: the
    run ended in a BrokenProcessPool traceback. Now one line, the other worker ended, OUT's earlier patches kept."""
    out, markers, args = stalled_run_arguments(tmp_path)
    child = start_piped([sys.executable, "-c", STALLED_IMAGES, *args], start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)  # both workers are in an image they will not finish
        assert len(list(markers.iterdir())) == 2, child.communicate()
        victim, other = sorted(int(marker.stem) for marker in markers.iterdir())
        os.kill(victim, signal.SIGKILL)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
    line = one_error_line(subprocess.CompletedProcess([], child.returncode, "", stderr))
    assert "a --workers process was killed while it cut patches" in line and "fewer --workers" in line, line
    assert sorted(p.name for p in out.iterdir()) == ["HR", "LR"]
    assert [p.name for p in (out / "HR").iterdir()] == ["earlier.png"]
    deadline = time.monotonic() + 30
    while process_exists(other) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_exists(other)  # not left to sleep out its hour
