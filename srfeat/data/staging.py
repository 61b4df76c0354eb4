"""OUT's hidden folders in `srfeat prepare`: the patches are staged there, swapped into place as OUT/HR
and OUT/LR once all are written, and those of a run that was killed are removed by the next run.

A run stages its patches in `.HR.partial-PID` and `.LR.partial-PID`; the swap moves OUT/HR and OUT/LR
aside (`.HR.old-PID`, `.LR.old-PID`), moves the staged folders in, and only then removes the old ones,
so that OUT/HR and OUT/LR are always one run's; a swap that fails puts the old ones back.

A run holds a lock (flock) on each of its staging folders while it lives, and the next run removes
only folders that no process holds: a process id says nothing across PID namespaces, where two
containers writing into one shared OUT may both be process 1, or see no process of the other's id
(each removed the other's patches as it cut them). Where there are no locks (Windows, some network
file systems) the process id in the name is all there is to go on. Swaps, and the removal of the
folders of killed runs, take a lock on OUT itself, so that one never sees another half done.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from srfeat.errors import SRFeatError
from srfeat.locks import hold_lock, let_go_lock, lock_exclusive, process_exists

logger = logging.getLogger(__name__)

PATCH_FOLDERS = ("HR", "LR")
# What a run leaves in OUT when it is killed (kill -9, out of memory) before it can clean up.
_LEFT_BY_A_RUN = re.compile(r"\.(HR|LR)\.(partial|old)-(\d+)")


def _open_folder(path: Path) -> int | None:
    """A descriptor of the folder `path` (a link to one: its target), or None where it cannot be opened (gone, a
    broken link; Windows, which opens no folder)."""
    try:
        return os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None


def writing_now(out: Path, name: str, *, command_line: bool = False) -> str:
    """The refusal of `out` while another run writes into it: it names `prepare_patches`' out, or `srfeat
    prepare`'s OUT with `command_line`."""
    other = "OUT" if command_line else "out"
    return (
        f"another srfeat prepare is writing into {out} right now ({name}): wait for it to end, or choose another "
        + other
    )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        status = os.lstat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


def _claim(folder: Path, out: Path, command_line: bool) -> tuple[int | None, tuple[int, int]]:
    """Make the staging folder `folder` (never take one that is there: another run's, whatever its process id)
    and lock it: the descriptor that holds the lock (None where there are no locks), and the folder's identity."""
    for _ in range(3):
        try:
            folder.mkdir()
        except FileExistsError:
            raise SRFeatError(writing_now(out, folder.name, command_line=command_line)) from None
        descriptor = _open_folder(folder)
        if descriptor is None:  # a folder that cannot be opened (Windows): nothing to lock; or removed at once
            identity = _identity(folder)
            if identity is not None:
                return None, identity
            continue
        taken = lock_exclusive(descriptor, wait=True)
        status = os.fstat(descriptor)
        if _identity(folder) == (status.st_dev, status.st_ino):  # not removed between its making and its lock
            if taken is None:
                os.close(descriptor)
                return None, (status.st_dev, status.st_ino)
            hold_lock(descriptor)  # a worker closes its copy (`locks.close_inherited_locks`)
            return descriptor, (status.st_dev, status.st_ino)
        os.close(descriptor)
    raise SRFeatError(f"{folder} kept being removed by another process while this run made it; run again")


@contextmanager
def staged(out: Path, *, command_line: bool = False) -> Iterator[dict[str, Path]]:
    """This run's staging folders in OUT (made, with OUT if need be), locked while the block runs; those still
    there at its end (the run failed or was stopped) are removed, still locked. `command_line`: as `writing_now`'s."""
    out.mkdir(parents=True, exist_ok=True)
    folders = {sub: out / f".{sub}.partial-{os.getpid()}" for sub in PATCH_FOLDERS}
    made: list[tuple[Path, tuple[int, int]]] = []
    with ExitStack() as held:
        try:
            for folder in folders.values():
                descriptor, identity = _claim(folder, out, command_line)
                made.append((folder, identity))
                if descriptor is not None:
                    held.callback(let_go_lock, descriptor)
            yield folders
        finally:  # by identity: once swapped in, the name may be another run's (of this id, in another container)
            for folder, identity in made:
                if _identity(folder) == identity:
                    shutil.rmtree(folder, ignore_errors=True)


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


def _abandoned(entry: Path, pid: int) -> tuple[bool, int | None]:
    """Whether no live run holds the hidden folder `entry` (of process `pid`), and the descriptor that now
    holds its lock (None: none taken). Where it cannot be locked (no flock here, a broken link) its process
    id decides: abandoned when no process of it runs, or it is this one's (an earlier process's)."""
    descriptor = _open_folder(entry)
    taken = None if descriptor is None else lock_exclusive(descriptor, wait=False)
    if taken:
        return True, descriptor
    if descriptor is not None:
        os.close(descriptor)
    return (False if taken is False else pid == os.getpid() or not process_exists(pid)), None


def live_folders(out: Path) -> list[str]:
    """The hidden folders in OUT that a run still going (another `srfeat prepare`) holds."""
    live = []
    for entry in sorted(out.iterdir()) if out.is_dir() else []:
        match = _LEFT_BY_A_RUN.fullmatch(entry.name)
        if match is None:
            continue
        abandoned, descriptor = _abandoned(entry, int(match.group(3)))
        if descriptor is not None:
            os.close(descriptor)
        if not abandoned:
            live.append(entry.name)
    return live


def remove_stale_staging(out: Path) -> None:
    """The hidden folders of runs that were killed: staged patches (which may be hundreds of
    thousands of files) and old folders already replaced. A live run's are kept (it holds their
    lock), and so is an old folder whose replacement is not in place."""
    if not out.is_dir():
        return
    with locked(out):  # a swap is never seen half done
        for entry in sorted(out.iterdir()):
            match = _LEFT_BY_A_RUN.fullmatch(entry.name)
            if match is None or (match.group(2) == "old" and not (out / match.group(1)).is_dir()):
                continue
            abandoned, descriptor = _abandoned(entry, int(match.group(3)))
            if not abandoned:
                continue
            try:  # removed while locked: no run can claim it meanwhile
                logger.info("removing %s, left by a run that was killed", entry)
                remove_retired(entry)
            finally:
                if descriptor is not None:
                    os.close(descriptor)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on OUT while the block runs (waiting for another run's), so that two runs into one OUT
    (two terminals) cannot leave one's HR/ beside the other's LR/; where there is no flock, nothing is locked."""
    descriptor = _open_folder(out)
    if descriptor is None:  # Windows
        yield
        return
    try:
        if lock_exclusive(descriptor, wait=True) is None:  # a file system without locks (some network ones)
            logger.debug("%s cannot be locked", out)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def swap_in(out: Path, staging: dict[str, Path], overwrite: bool, *, command_line: bool = False) -> None:
    """The staged HR/ and LR/ replace OUT's (an earlier run's patches go only now, on success).

    Both old folders are moved aside before either new one moves in, and removed last, so that a
    failure cannot leave one run's HR/ beside another run's LR/ (pairs that do not match); a move
    that fails puts them back (`_put_back`). Without `overwrite`, an HR/ or LR/ made while this run
    cut (another run's) is kept: the refusal names `prepare_patches`' overwrite=True and out, or with
    `command_line` `srfeat prepare`'s --overwrite and OUT.
    """
    appeared = [out / sub for sub in staging if (out / sub).exists() or (out / sub).is_symlink()]
    if appeared and not overwrite:
        raise SRFeatError(
            f"{appeared[0]} appeared while this run cut its patches (another srfeat prepare?): it is kept, and "
            f"this run's patches are discarded; run again with {'--overwrite' if command_line else 'overwrite=True'} "
            f"to replace it, or choose another {'OUT' if command_line else 'out'}"
        )
    retired: list[tuple[Path, Path]] = []  # (where an old folder was, where it went)
    moved: list[tuple[Path, Path]] = []  # (a staged folder, where it went)
    try:
        for sub in staging:
            old = out / sub
            if old.exists() or old.is_symlink():  # a broken link too: the new folder cannot be renamed onto it
                retired.append((old, out / f".{sub}.old-{os.getpid()}"))
                old.rename(retired[-1][1])
        for sub, folder in staging.items():
            folder.rename(out / sub)
            moved.append((folder, out / sub))
    except OSError as error:
        _put_back(out, retired, moved, error)
        raise
    for _, aside in retired:
        remove_retired(aside)


def _put_back(out: Path, retired: list[tuple[Path, Path]], moved: list[tuple[Path, Path]], error: OSError) -> None:
    """After a failed move of the swap: the new folders back where they were staged (to be discarded) and the
    old ones back as OUT/HR and OUT/LR; where that fails too, the one-line error names where the old ones are."""
    for staged_at, target in reversed(moved):
        try:
            target.rename(staged_at)
        except OSError:
            pass  # its old folder cannot go back over it: named below
    stranded = []
    for original, aside in reversed(retired):
        try:
            aside.rename(original)
        except OSError:
            stranded.append((original, aside))
    if stranded:
        where = "; ".join(f"the earlier {original.name}/ is {aside}" for original, aside in reversed(stranded))
        raise SRFeatError(
            f"could not move the new patches into {out} ({error.strerror or error}), nor the earlier ones back: "
            f"{where}: move it back yourself"
        ) from error
