"""What a path is, found before any work: a name longer than its file system takes (`name_too_long`), a
folder no file can be written in (`unwritable_folder`), something there that is no regular file (a pipe, a
device: `special_file_kind`), a link to nothing (`broken_link`, `broken_link_reason`), a file where a folder
of the path should be (`file_on_the_way`), two paths that are one file (`same_file`), a path with its links
followed without failing on a loop (`resolved`), what went wrong with a file that is there but cannot be read
and what to do (`unreadable_problem`, `unreadable_advice`, the two in one line: `unreadable_message`), a
character no path holds (`unnameable_character`); and a name that a library taking only UTF-8 names can open
(`utf8_path`). Writing a file, all or nothing, is `srfeat.files`.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that the file system of `folder` (or of its nearest
    existing parent) takes: 255 on Linux's usual ones."""
    if not hasattr(os, "pathconf"):  # POSIX only; Windows' NTFS takes 255 characters
        return 255
    for candidate in (folder, *folder.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):  # not there yet, or no such setting here
            continue
    return 255


def name_too_long(path: Path) -> str | None:
    """Why `path` cannot be made for its name alone (longer than its file system takes), or None."""
    size, limit = len(os.fsencode(path.name)), name_max(path.parent)
    return f"its name is {size} bytes, more than the {limit} the file system takes" if size > limit else None


# Linux's longest path, terminating NUL included: a longer one is ENAMETOOLONG from every call that takes it.
PATH_MAX = 4096


def path_too_long(text: str) -> str | None:
    """Why no file can have the path `text` for its length alone (more than PATH_MAX bytes, or a part
    longer than its file system takes), or None: found before the first `exists()`, whose ENAMETOOLONG
    was a traceback."""
    size = len(os.fsencode(text))
    if size >= PATH_MAX:
        return f"it is {size:,} bytes, more than a path can have ({PATH_MAX - 1:,})"
    path = Path(text)
    longest = max((len(os.fsencode(part)) for part in path.parts), default=0)
    limit = name_max(path.parent)
    return f"a name in it is {longest} bytes, more than the {limit} the file system takes" if longest > limit else None


def unwritable_file(path: Path) -> str | None:
    """Why the file `path` could not be written, found before any work: its name (`name_too_long`)
    or its folder (`unwritable_folder`); None when it can be."""
    return name_too_long(path) or unwritable_folder(path.parent)


# What a path that is there but not a regular file is, as users know it (`stat.S_IFMT` of its mode).
_FILE_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a folder",
}
OTHER_FILE_KIND = "a special file of an unknown kind"


def special_file_kind(path: Path) -> str | None:
    """What `path` is when it is there but no regular file ("a named pipe (FIFO)", "a character
    device", ...), so that an error names it as such, not as "not found" (as `srfeat upscale` does
    for image inputs); None for a regular file or nothing there."""
    try:
        mode = path.stat().st_mode
    except OSError:  # not there (a broken link too), or not to be looked at: the callers' "not found"
        return None
    # The callers say "{path} is {kind}, not a file" and "it is {kind}, not an image file": a noun for the rest
    # too (a Solaris door, a BSD whiteout), as "not a regular file" read "it is not a regular file, not an image file"
    return None if stat.S_ISREG(mode) else _FILE_KINDS.get(stat.S_IFMT(mode), OTHER_FILE_KIND)


def unreadable_advice(error: OSError, again: str) -> str:
    """What to do about a file that is there but whose read failed with `error` (`again`: the caller's advice
    for a damaged file, "download or copy it again"): "cannot read PATH: Input/output error" said what, not
    what to do. Permissions are checked; a failing disk or share gets `again`, from a sound copy."""
    if error.errno in (errno.EACCES, errno.EPERM):
        return "check its permissions (ls -l), or copy it somewhere you can read it"
    if error.errno == errno.EIO:
        return f"the disk or network share gave a read error: {again}"
    return again


def unreadable_problem(path: object, error: OSError, what: str = "") -> str:
    """What went wrong reading `path`, a file that is there: "cannot read [WHAT ]PATH: STRERROR" (`what`: the
    kind of file, "config", "training state"), the system's words without its "[Errno 5]" and the path again."""
    return f"cannot read {what + ' ' if what else ''}{path}: {error.strerror or error}"


def unreadable_message(path: object, error: OSError, again: str, what: str = "") -> str:
    """The one line for a file that is there but whose read failed: `unreadable_problem`, then what to do
    (`unreadable_advice`, with the caller's `again`)."""
    return f"{unreadable_problem(path, error, what)}; {unreadable_advice(error, again)}"


def unnameable_character(text: str) -> str | None:
    """The first character of `text` that no path can hold (NUL; a surrogate that stands for no byte of an
    undecodable name, as YAML's "\\ud800" writes), or None: the operating system is never given it."""
    if "\0" in text:
        return "\0"
    try:
        os.fsencode(text)
    except UnicodeEncodeError as error:
        return text[error.start]
    return None


def broken_link_reason(path: Path) -> str:
    """What is wrong with `path`, a symbolic link that leads to nothing: a loop, or a missing target, named.
    For a folder's scan ("skipped PATH: ...") and for a named input ("input PATH: ..."), both: the scans of
    training and evaluation folders had a vaguer line of their own ("its target is missing, or a loop")."""
    target = os.readlink(path)
    try:
        path.stat()
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"symbolic link loop ({path} -> {target} leads back to itself)"
    return f"broken symbolic link (its target {target} does not exist)"


def file_on_the_way(path: Path) -> Path | None:
    """The file that one of `path`'s folders is (`photo.jpg` of `photo.jpg/x.png`), or None: such a path is
    no typo of a name to look for, as "not found" sent its user to do."""
    try:
        return next((parent for parent in path.parents if parent.is_file()), None)
    except OSError:  # a folder's name longer than the file system takes: the callers' "not found"
        return None


def broken_link(path: Path) -> str | None:
    """Why nothing is at `path` when it is a symbolic link that leads nowhere (`broken_link_reason`), as
    `srfeat upscale` says of an input; None where nothing is there at all: "not found" of a name that `ls`
    lists sent its user looking for a typo."""
    return broken_link_reason(path) if path.is_symlink() and not path.exists() else None


def resolved(path: Path) -> Path:
    """`path` made absolute, its symbolic links followed as far as they lead: `Path.resolve` raised
    RuntimeError ("Symlink loop from ...") before Python 3.13, a traceback for an output named by the user
    that is, or lies in, a link loop. A loop is left as it is; writing to it then fails, or replaces the link."""
    return Path(os.path.realpath(path))


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (hard and symbolic links too); False when either is missing."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def unwritable_folder(folder: Path) -> str | None:
    """Why no file can be written in `folder` (made first if missing), found before any work: the
    nearest path that exists up the tree is a file, a broken link, or a folder we may not write
    in. None when it can be written: a nameless file is made there and dropped, the one test that
    read-only mounts, ACLs and running as root cannot fool (`os.access` says yes to root)."""
    try:
        nearest = next((f for f in (folder, *folder.parents) if f.exists() or f.is_symlink()), None)
    except OSError as error:  # a folder on the way that we may not look into
        return f"cannot look into {error.filename or folder}: {error.strerror or error}"
    if nearest is None:
        return None
    if not nearest.exists():
        return f"{nearest} is a broken symbolic link"
    if not nearest.is_dir():
        return f"{nearest} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as error:
        return f"cannot write in {nearest} ({error.strerror or error})"
    return None


@contextmanager
def utf8_path(path: str | os.PathLike[str]) -> Iterator[str]:
    """A name for `path` that a library taking only UTF-8 names can open (safetensors, torch.load,
    libtiff through PIL): the name itself where it is UTF-8, else `/dev/fd/N` of a descriptor held
    open for the block. A name that is not UTF-8 (`caf\\xe9.safetensors`, made on a Latin-1 system;
    Python holds it with surrogates) was refused ("Path ... is not valid UTF-8", "surrogates not
    allowed"): a good checkpoint called damaged, a TIFF output a traceback.
    """
    name = os.fspath(path)
    try:
        name.encode()
    except UnicodeEncodeError:
        if not Path("/dev/fd").is_dir():  # Windows has no such names; a system without /dev/fd keeps the error
            yield name
            return
        descriptor = os.open(name, os.O_RDONLY)
        try:
            yield f"/dev/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    yield name
