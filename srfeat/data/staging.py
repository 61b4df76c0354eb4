"""OUT's hidden folders in `srfeat prepare`: the patches are staged there, swapped into place as OUT/HR
and OUT/LR once all are written, and those of a run that was killed are removed by the next run.

A run stages its patches in `.HR.partial-PID` and `.LR.partial-PID`; the swap moves OUT/HR and OUT/LR
aside (`.HR.old-PID`, `.LR.old-PID`), moves the staged folders in, and only then removes the old ones,
so that OUT/HR and OUT/LR are always one run's.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from srfeat.errors import SRFeatError
from srfeat.files import process_exists

logger = logging.getLogger(__name__)

PATCH_FOLDERS = ("HR", "LR")


def staging_folders(out: Path) -> dict[str, Path]:
    """Hidden folders in OUT that receive this run's patches until all are written."""
    return {sub: out / f".{sub}.partial-{os.getpid()}" for sub in PATCH_FOLDERS}


def remove_retired(path: Path) -> None:
    """An earlier run's HR/ or LR/, moved aside: a folder is deleted; a symbolic link (patches kept
    on another disk) or a file is unlinked, and what a link points to is left alone."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
    except OSError as error:  # the new patches are in place: say what is left, do not fail the run
        logger.warning("could not remove the earlier patches moved to %s (%s): delete it yourself", path, error)


# What a run leaves in OUT when it is killed (kill -9, out of memory) before it can clean up.
_LEFT_BY_A_RUN = re.compile(r"\.(HR|LR)\.(partial|old)-(\d+)")


def live_run(name: str) -> bool:
    """Whether `name` is a hidden folder of a run that is still going (another `srfeat prepare`)."""
    match = _LEFT_BY_A_RUN.fullmatch(name)
    return match is not None and int(match.group(3)) != os.getpid() and process_exists(int(match.group(3)))


def remove_stale_staging(out: Path) -> None:
    """The hidden folders of runs that were killed: staged patches (which may be hundreds of
    thousands of files) and old folders already replaced. A live run's are kept (its process id is
    in the name), and so is an old folder whose replacement is not in place."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        match = _LEFT_BY_A_RUN.fullmatch(entry.name)
        if match is None:
            continue
        pid = int(match.group(3))
        if pid != os.getpid() and process_exists(pid):
            continue
        if match.group(2) == "old" and not (out / match.group(1)).is_dir():
            continue
        logger.info("removing %s, left by a run that was killed", entry)
        remove_retired(entry)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on OUT while the block runs (waiting for another run's), so that two runs into one OUT
    (two terminals) cannot leave one's HR/ beside the other's LR/; where there is no flock, nothing is locked."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    descriptor = os.open(out, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as error:  # a file system without locks (some network ones)
            logger.debug("%s cannot be locked (%s)", out, error)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def swap_in(out: Path, staging: dict[str, Path], overwrite: bool) -> None:
    """The staged HR/ and LR/ replace OUT's (an earlier run's patches go only now, on success).

    Both old folders are moved aside before either new one moves in, and removed last, so that a
    failure cannot leave one run's HR/ beside another run's LR/ (pairs that do not match).
    Without `overwrite`, an HR/ or LR/ made while this run cut (another run's) is kept.
    """
    appeared = [out / sub for sub in staging if (out / sub).exists() or (out / sub).is_symlink()]
    if appeared and not overwrite:
        raise SRFeatError(
            f"{appeared[0]} appeared while this run cut its patches (another srfeat prepare?): it is kept, and "
            "this run's patches are discarded; run again with --overwrite to replace it, or choose another OUT"
        )
    retired: list[Path] = []
    for sub in staging:
        old = out / sub
        if old.exists() or old.is_symlink():  # a broken link too: the new folder cannot be renamed onto it
            retired.append(out / f".{sub}.old-{os.getpid()}")
            old.rename(retired[-1])
    for sub, folder in staging.items():
        folder.rename(out / sub)
    for path in retired:
        remove_retired(path)


def discard(out: Path, staging: dict[str, Path], created_out: bool) -> None:
    """A failed or interrupted run's staged patches go; OUT as it was before stays."""
    for folder in staging.values():
        shutil.rmtree(folder, ignore_errors=True)
    if created_out and out.is_dir() and not any(out.iterdir()):
        out.rmdir()
