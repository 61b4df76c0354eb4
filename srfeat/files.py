"""Writing files all or nothing, and cleaning up after writers that were killed.

Every file srfeat writes (images, checkpoints, generator weights) goes to a temporary name in
the same folder, `.NAME.PID.tmp`, and is renamed over NAME only when it is complete: a process
killed mid-write leaves the old file intact (a NAME too long for that, within the file system's
limit, gives `.HASH.PID.tmp`). The writer's process id in the name, and a lock the writer holds
on it (`writing_temporary`), tell a stale temporary (its writer is gone) from one being written
right now by another process (in another PID namespace too: a container), so the next run that
writes NAME removes the stale ones (`remove_stale_temporaries`). A full disk is
reported as `DiskFullError`, naming the file and the space it needed, with the temporary
removed so that the failed write does not keep the disk full. A failed write also removes the
folders it made for the file while they are empty (`folder_made_for`). A pipe, device or socket at NAME is
never renamed over (`refuse_special_output`). What a path is before
anything is written there (a name too long, a folder no file can be written in) is `srfeat.path_checks`.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from srfeat.errors import SRFeatError
from srfeat.locks import lock_exclusive, process_exists
from srfeat.path_checks import name_max, resolved, same_file, special_file_kind, unwritable_folder

logger = logging.getLogger(__name__)

MB = 1024 * 1024
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(SRFeatError, OSError):
    """No space (or quota) left for a file; the previous version of it is kept."""


# What a temporary's name adds to the file's: the leading dot, and `.PID.tmp` with Linux's
# largest process id (pid_max at most 4194304, 7 digits).
_TEMPORARY_EXTRA_BYTES = len(".") + len(".4194304.tmp")


class NotAFolderError(SRFeatError, NotADirectoryError):
    """A file is where an output's folder would be made (`x.jpg/out.png` with `x.jpg` a photo)."""


def _temporary_stem(path: Path) -> str:
    """`path`'s name, or where the temporary's additions would take that past the file system's
    limit, a hash of it: an output named right up to the limit can still be written."""
    encoded = os.fsencode(path.name)
    if len(encoded) + _TEMPORARY_EXTRA_BYTES <= name_max(path.parent):
        return path.name
    return hashlib.sha256(encoded).hexdigest()[:32]


def temporary_path(path: Path) -> Path:
    """Where this process writes `path` before renaming it into place."""
    return path.with_name(f".{_temporary_stem(path)}.{os.getpid()}.tmp")


@contextmanager
def unless_held(temporary: Path) -> Iterator[bool | None]:
    """The lock of a claimed temporary (`writing_temporary`), taken for the block unless a live process
    holds it: yields True when taken (its writer is gone, whatever its process id), False when a live
    process holds it or `temporary` cannot be opened (gone already, not ours to read), None where there
    are no locks (Windows, some network file systems: the caller falls back on the process id)."""
    try:
        descriptor = os.open(temporary, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        yield False
        return
    try:
        yield lock_exclusive(descriptor, wait=False)
    finally:
        os.close(descriptor)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporaries of `path` left by killed writers; returns what was removed.

    A temporary is stale when the process that wrote it no longer exists, or is this process
    (a previous process of the same id, since this one is not writing `path` yet), and no process
    holds its lock (`writing_temporary`): a process id says nothing across PID namespaces, where
    two containers writing into one shared folder may both be process 1, or see no process of the
    other's id. Names without a process id (`NAME.tmp`, `.NAME.tmp`) are kept: older srfeat wrote
    them, but so may the user (an input named photo.png.tmp), and nothing a user had may be deleted.
    """
    pattern = re.compile(rf"\.{re.escape(_temporary_stem(path))}\.(\d+)\.tmp")
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:  # no folder yet: nothing to clean
        return []
    for sibling in siblings:
        match = pattern.fullmatch(sibling.name)
        pid = int(match.group(1)) if match else None
        if pid is None or not (pid == os.getpid() or not process_exists(pid)) or not sibling.is_file():
            continue
        with unless_held(sibling) as free:
            if free is not False:  # no live writer holds it
                sibling.unlink(missing_ok=True)
                removed.append(sibling)
    if removed:
        logger.info("removed %d temporary file(s) of %s left by a killed run", len(removed), path)
    return removed


def _claim(temporary: Path, path: Path) -> int | None:
    """Make `temporary` (never open one that is there: that is another writer's) and lock it; the
    descriptor that holds the lock, or None where there are no locks (Windows: nothing held open)."""
    for _ in range(3):
        try:
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:  # kept by remove_stale_temporaries: its writer, of our process id, is alive
            raise OutputExistsError(
                f"{path} is being written by another process right now ({temporary.name} is in use, in another "
                "PID namespace: another container?); wait for it to end, or choose another name"
            ) from None
        if lock_exclusive(descriptor, wait=True) is None:
            os.close(descriptor)
            return None
        try:
            if os.stat(temporary).st_ino == os.fstat(descriptor).st_ino:
                return descriptor
        except FileNotFoundError:
            pass
        os.close(descriptor)  # a cleaner took it for stale between its making and its lock: make it again
    raise OutputExistsError(f"{path}: its temporary {temporary.name} kept being removed by another process; run again")


def _locked_elsewhere(folder: Path) -> bool:
    """Whether a lock is held on `folder` through another open file (of another process, mostly): a training
    run's folder, which `srfeat train` locks while it trains. False where it cannot be opened or locked."""
    try:
        descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError:  # gone (rmdir says so next), or a system that opens no folder (Windows)
        return False
    try:
        return lock_exclusive(descriptor, wait=False) is False
    finally:
        os.close(descriptor)


@contextmanager
def folder_made_for(path: Path) -> Iterator[None]:
    """`path`'s folder, made with any missing parents; those this call made are removed again, deepest first,
    when the block fails and they are still empty: a failed `-o new/deeper/out.png` left `new/deeper/` behind.
    A folder that was there before, another process made, that holds anything, or that another process holds
    a lock on (a second `srfeat train` made the run folder, the first took it and will write there) is kept."""
    missing = list(itertools.takewhile(lambda folder: not folder.is_dir(), (path.parent, *path.parent.parents)))
    made = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError as error:
            if not folder.is_dir():  # a file (or a broken link) where the folder goes: was a bare FileExistsError
                reason = unwritable_folder(folder) or f"{folder} is not a folder"
                raise NotAFolderError(f"cannot write {path}: {reason}; give a path in a folder") from error
            continue
        made.append(folder)
    try:
        yield
    except BaseException:
        for folder in reversed(made):
            if _locked_elsewhere(folder):  # in use, still empty: this one and those above it stay
                break
            try:
                folder.rmdir()
            except OSError:  # not empty (another writer's file), or gone: this one and those above it stay
                break
        raise


@contextmanager
def writing_temporary(path: Path) -> Iterator[Path]:
    """`path`'s temporary (`temporary_path`), made for this process and locked while the block writes it
    (by its name: PIL, tifffile and PyAV open it again), removed after the block unless renamed into
    place, with the folders made for it when the block fails (`folder_made_for`). Stale temporaries of
    `path` are removed first; a live writer's never are, whatever its id."""
    with folder_made_for(path), _writing_temporary(path) as temporary:
        yield temporary


@contextmanager
def _writing_temporary(path: Path) -> Iterator[Path]:
    remove_stale_temporaries(path)
    temporary = temporary_path(path)
    descriptor = _claim(temporary, path)
    try:
        yield temporary
    finally:
        try:  # unlinked while still locked: once unlocked, the name may be another writer's
            temporary.unlink(missing_ok=True)
        finally:
            if descriptor is not None:
                os.close(descriptor)  # releases the lock


@dataclass(frozen=True)
class PendingFile:
    """One file of an all-or-nothing write: where it goes, how to write it, about how big it is."""

    path: Path
    write: Callable[[BinaryIO], object]
    size: int


class OutputExistsError(SRFeatError, FileExistsError):
    """The output appeared (another program, another run) while it was being made: it is kept."""


class OutputIsInputError(SRFeatError, ValueError):
    """The output is the same file as an input (the same path, another spelling of it, a symbolic or hard
    link to it): writing it would replace the input, so it is refused, whatever the overwrite option says."""


def refuse_output_is_input(source: Path, target: Path) -> None:
    """`OutputIsInputError` where `target` is `source` (as FFmpeg refuses "Output same as Input"); the
    resolved paths are compared too, for a `target` that does not exist yet under a new spelling."""
    if resolved(target) == resolved(source) or same_file(target, source):
        raise OutputIsInputError(
            f"the output {target} is the input {source} (the same file): choose another output; "
            "an input is never replaced, replace=True or not"
        )


# Filesystems without hard links (FAT, exFAT, some network and FUSE mounts) refuse os.link with these.
_NO_HARD_LINK_ERRNOS = (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS)


class OutputIsSpecialError(SRFeatError, ValueError):
    """The output is a pipe, a device or a socket (or a link to one): the whole file renamed over it would
    replace it (`--json /dev/null --overwrite`, as root, put a regular file in the place of /dev/null), so it
    is refused, whatever the overwrite option says."""


def refuse_special_output(path: Path) -> None:
    """`OutputIsSpecialError` where `path` is (or links to) something that is no regular file nor folder
    (a folder's refusal is its caller's: "give a file name in it")."""
    kind = special_file_kind(path)
    if kind is not None and kind != "a folder":
        raise OutputIsSpecialError(
            f"{path} is {kind}, not a file: srfeat writes a whole file and renames it into place, which would "
            "replace it; give the name of a file"
        )


def replace_option(command_line: bool) -> str:
    """The option that allows replacing an existing file, as its caller gives it: the keyword from Python
    (`write_image`, `upscale_file`, `save_generator`...), the flag with `command_line` (a command's)."""
    return "--overwrite" if command_line else "replace=True"


def refuse_existing(path: Path, replace: bool, *, command_line: bool = False) -> None:
    """With `replace` False, an existing `path` (a link to nothing too) is `OutputExistsError`: said before
    any work, as `move_into_place`'s "appeared while it was being written" is for one that did. It names
    the option its caller gave (`replace_option`). A pipe, device or socket is refused, `replace` or not
    (`refuse_special_output`)."""
    refuse_special_output(path)
    if not replace and (path.exists() or path.is_symlink()):
        option = replace_option(command_line)
        raise OutputExistsError(f"{path} exists; it is kept: remove it, or allow replacing it ({option})")


def _appeared(path: Path, command_line: bool) -> OutputExistsError:
    return OutputExistsError(
        f"{path} appeared while it was being written (another program?); it is kept: "
        f"remove it or allow replacing it ({replace_option(command_line)}), and run again"
    )


def move_into_place(temporary: Path, path: Path, replace: bool = True, *, command_line: bool = False) -> None:
    """Rename the complete `temporary` to `path`. With `replace` False an existing `path` is never
    replaced, not even one that appeared after the caller checked (a photo saved while a large
    upscale ran): the temporary is hard-linked to `path`, which fails if it exists, in one step.
    Where the filesystem has no hard links, `path` is checked just before the rename instead. The
    refusal names the option its caller gave (`replace_option`). A pipe, device or socket is never
    replaced (`refuse_special_output`): the last check, made whatever the callers checked before."""
    refuse_special_output(path)
    if replace:
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise _appeared(path, command_line) from None
    except OSError as error:
        if error.errno not in _NO_HARD_LINK_ERRNOS:
            raise
        if path.exists() or path.is_symlink():
            raise _appeared(path, command_line) from None
        os.replace(temporary, path)
    else:
        temporary.unlink()


@contextmanager
def disk_full_named(path: Path) -> Iterator[None]:
    """A full disk (or quota) while `path` is written raised as `DiskFullError`, which names it and says
    what to do; other errors as they are."""
    try:
        yield
    except OSError as error:
        if error.errno not in FULL_DISK_ERRNOS:
            raise
        raise DiskFullError(
            f"not enough disk space to write {path.name} in {path.parent} ({_free_space(path.parent)}: "
            f"{error.strerror or error}); "
            "free some space and run again (the previous version of the file, if any, is kept)"
        ) from error


def free_bytes(folder: Path) -> int | None:
    """The bytes free for `folder`, or None where its file system reports no size at all (/proc, some
    network and FUSE mounts say 0 of 0): such a write was refused as "0 MB free" before it began."""
    usage = shutil.disk_usage(folder)
    return None if usage.total == 0 else usage.free


def _free_space(folder: Path) -> str:
    try:  # the nearest folder that is there: a failed write removes those it made (`folder_made_for`)
        free = free_bytes(next(f for f in (folder, *folder.parents) if f.is_dir()))
    except OSError:
        free = None
    return "free space unknown" if free is None else f"{megabytes(free)} free"


def megabytes(size: int) -> str:
    return f"{size / MB:.0f} MB" if size >= 10 * MB else f"{size / MB:.2f} MB"


def _disk_full(paths: Sequence[Path], needed: int, cause: str) -> DiskFullError:
    folder = paths[0].parent
    names = " and ".join(path.name for path in paths)
    return DiskFullError(
        f"not enough disk space to write {names} in {folder}: {megabytes(needed)} needed, {_free_space(folder)} "
        f"({cause}); "
        "free some space and run again (the previous version of each file, if any, is kept)"
    )


def write_files_atomically(files: Sequence[PendingFile], replace: bool = True, *, command_line: bool = False) -> None:
    """Write every file to its temporary, then rename them all into place; on any failure none
    is replaced and no temporary stays (on a signal too: the cleanup is in `finally`). With
    `replace` False an existing file is never replaced (`move_into_place`): `OutputExistsError`,
    naming the option its caller gave (`replace_option`)."""
    if not files:
        return
    for file in files:
        if file.path.is_dir():  # the rename failed after the writing: IsADirectoryError, naming the temporary
            raise SRFeatError(f"{file.path} is a folder: give the name of a file (in it, or beside it) to write")
        refuse_existing(file.path, replace, command_line=command_line)
    current = files[0]
    with ExitStack() as claimed:  # each temporary removed on leaving, unless renamed into place
        for file in files:  # the folders made here removed if the write fails (`folder_made_for`)
            claimed.enter_context(folder_made_for(file.path))
            remove_stale_temporaries(file.path)
        needed = sum(file.size for file in files)
        free = free_bytes(files[0].path.parent)
        if free is not None and needed > free:  # refuse before writing a byte that would fill the disk
            raise _disk_full([file.path for file in files], needed, "checked before writing")
        try:
            temporaries = [claimed.enter_context(writing_temporary(file.path)) for file in files]
            for current, temporary in zip(files, temporaries, strict=True):
                with open(temporary, "wb") as handle:  # mode 0666 less the umask, as any new file
                    current.write(handle)
                    handle.flush()
                    os.fsync(handle.fileno())
            for file, temporary in zip(files, temporaries, strict=True):
                move_into_place(temporary, file.path, replace, command_line=command_line)
        except OSError as error:
            if error.errno in FULL_DISK_ERRNOS:
                raise _disk_full([current.path], current.size, error.strerror or "disk full") from error
            raise


def write_file_atomically(
    path: Path, write: Callable[[BinaryIO], object], size: int, replace: bool = True, *, command_line: bool = False
) -> None:
    write_files_atomically([PendingFile(path, write, size)], replace, command_line=command_line)
