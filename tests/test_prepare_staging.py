"""`srfeat prepare`'s hidden folders in OUT: whose they are (a lock, not a process id: runs in two containers
sharing OUT), and the earlier patches of a swap that fails put back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import CHILD_ENV, REPO, one_error_line, srfeat_cli, start_piped
from skimage import data as samples

from srfeat.data.io import write_png
from srfeat.data.prepare import PATCHES_PER_IMAGE, prepare_patches
from srfeat.errors import SRFeatError
from srfeat.locks import process_exists

ARGS = ("--hr-patch-size", "64", "--workers", "1", "--no-half")

# A `srfeat prepare` in another PID namespace (a container sharing OUT with this one): its process id is
# argv[1], which here is no process at all. It says when its hidden folders are made, and waits for the test.
RUN_IN_ANOTHER_CONTAINER = """
import os
import sys

os.getpid = lambda: int(sys.argv[1])
from srfeat.cli import main
from srfeat.data import prepare

cut = prepare._prepare_all

def stalled(*args, **kwargs):
    print("cutting", flush=True)
    sys.stdin.read()
    return cut(*args, **kwargs)

prepare._prepare_all = stalled
sys.exit(main(["prepare", *sys.argv[2:]]))
"""


def a_dead_process_id() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    assert not process_exists(gone.pid)
    return gone.pid


def test_a_run_in_another_container_keeps_its_folders_while_it_writes(tmp_path: Path) -> None:
    """Two containers writing into one shared OUT: the second run found the first's `.HR.partial-PID`, saw no
    process of that id in its own PID namespace, and removed the folders as a killed run's while the first cut
    its patches into them. The first holds a lock on them: the second says it is writing, and it ends whole."""
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    out = tmp_path / "out"
    foreign = a_dead_process_id()
    first = start_piped([sys.executable, "-c", RUN_IN_ANOTHER_CONTAINER, str(foreign), tmp_path / "src", out, *ARGS])
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "cutting"
        second = srfeat_cli("prepare", "src", "out", *ARGS, cwd=tmp_path)
        line = one_error_line(second)
        assert f"another srfeat prepare is writing into out right now (.HR.partial-{foreign})" in line, line
        assert "removing" not in second.stderr, second.stderr
        _, stderr = first.communicate("", timeout=600)
        assert first.returncode == 0, stderr
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert sorted(path.name for path in out.iterdir()) == ["HR", "LR"]
    assert len(list((out / "HR").iterdir())) == len(list((out / "LR").iterdir())) == PATCHES_PER_IMAGE


def test_a_killed_runs_folders_are_removed_whatever_process_now_has_its_id(tmp_path: Path) -> None:
    """A run killed in a container where it was process 1 left `.HR.partial-1`: process 1 runs in every
    container, and each later run refused OUT ("another srfeat prepare is writing into out right now") for
    good. No process holds the folders' lock: they are removed and the run goes on."""
    assert process_exists(1)
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    for sub in ("HR", "LR"):
        write_png(tmp_path / "out" / f".{sub}.partial-1" / "a_000.png", np.zeros((64, 64, 3), np.uint8))
    result = srfeat_cli("prepare", "src", "out", *ARGS, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "removing out/.HR.partial-1, left by a run that was killed" in result.stderr
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["HR", "LR"]
    assert len(list((tmp_path / "out" / "HR").iterdir())) == PATCHES_PER_IMAGE


def earlier_patches(tmp_path: Path) -> Path:
    """OUT with an earlier run's HR/ and LR/ (one file each), and a source to replace them from."""
    write_png(tmp_path / "src" / "a.png", samples.astronaut()[:100, :100])
    out = tmp_path / "out"
    for sub in ("HR", "LR"):
        (out / sub).mkdir(parents=True)
        (out / sub / "earlier.png").write_bytes(f"earlier {sub}".encode())
    return out


def failing_renames(monkeypatch: pytest.MonkeyPatch, *failing: tuple[str, str]) -> None:
    """Path.rename fails with EACCES for a (source name prefix, target name) in `failing`."""
    rename = Path.rename

    def refused(self: Path, target: str | os.PathLike[str]) -> Path:
        if any(self.name.startswith(source) and Path(target).name == name for source, name in failing):
            raise PermissionError(13, "Permission denied", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", refused)


def test_a_failed_move_into_place_puts_the_earlier_patches_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The swap had moved OUT/HR and OUT/LR aside and the new HR/ in when the new LR/ failed to move: the run
    said "out is as it was", but the earlier patches were only in hidden `.HR.old-PID` and `.LR.old-PID`
    (which the next run removed, the new HR/ being in place)."""
    out = earlier_patches(tmp_path)
    failing_renames(monkeypatch, (".LR.partial-", "LR"))
    with pytest.raises(SRFeatError, match=f"could not write the patches in {out}: Permission denied; {out} is as it"):
        prepare_patches(tmp_path / "src", out, hr_patch_size=64, workers=1, overwrite=True, progress=False)
    assert sorted(path.name for path in out.iterdir()) == ["HR", "LR"]
    for sub in ("HR", "LR"):
        assert [path.read_bytes() for path in (out / sub).iterdir()] == [f"earlier {sub}".encode()]


def test_earlier_patches_that_cannot_be_put_back_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Neither the new LR/ in nor the earlier HR/ back: the one line says where the earlier HR/ is, and it is there
    out = earlier_patches(tmp_path)
    failing_renames(monkeypatch, (".LR.partial-", "LR"), (".HR.old-", "HR"))
    aside = out / f".HR.old-{os.getpid()}"
    with pytest.raises(SRFeatError) as raised:
        prepare_patches(tmp_path / "src", out, hr_patch_size=64, workers=1, overwrite=True, progress=False)
    message = str(raised.value)
    assert "\n" not in message and f"nor the earlier ones back: the earlier HR/ is {aside}" in message, message
    assert [path.read_bytes() for path in aside.iterdir()] == [b"earlier HR"]
    assert [path.read_bytes() for path in (out / "LR").iterdir()] == [b"earlier LR"]
    assert sorted(path.name for path in out.iterdir()) == [aside.name, "LR"]  # the new patches are gone


def test_workers_that_outlive_a_killed_run_do_not_keep_its_folders(tmp_path: Path) -> None:
    """A forked worker inherits the run's locks on its staging folders, and a lock lasts while any copy is open:
    workers still in an image when their run was killed (kill -9 of the main process alone) would keep OUT
    "being written" for as long as they lived. They close their copies: the next run removes the folders."""
    from test_prepare import STALLED_IMAGES

    source, markers = tmp_path / "src", tmp_path / "markers"
    markers.mkdir()
    for name in ("a", "b", "c"):
        write_png(source / f"{name}.png", samples.astronaut()[:64, :64])
    args = [source, tmp_path / "out", "--hr-patch-size", "32", "--no-half"]
    log = tmp_path / "killed.log"  # a file, not a pipe: the orphaned workers would hold a pipe open for an hour
    with log.open("w") as output:
        command = [sys.executable, "-c", STALLED_IMAGES, *map(str, args), "--workers", "2", str(markers)]
        killed = subprocess.Popen(command, cwd=REPO, env=CHILD_ENV, stdout=output, stderr=output)
    try:
        deadline = time.monotonic() + 300
        while len(list(markers.iterdir())) < 2 and time.monotonic() < deadline and killed.poll() is None:
            time.sleep(0.05)  # both workers are in an image they will not finish
        assert len(list(markers.iterdir())) == 2, log.read_text()
        killed.kill()
        killed.wait()
        workers = [int(marker.stem) for marker in markers.iterdir()]
        assert all(process_exists(pid) for pid in workers)
        result = srfeat_cli("prepare", *args, "--workers", "1", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert f"removing {tmp_path / 'out' / '.HR.partial-'}{killed.pid}" in result.stderr, result.stderr
        assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["HR", "LR"]
    finally:
        if killed.poll() is None:
            killed.kill()
            killed.wait()
        for marker in markers.iterdir():
            try:
                os.kill(int(marker.stem), signal.SIGKILL)
            except ProcessLookupError:
                pass
