"""Who holds a file: process ids and advisory locks (flock), shared by the writers of temporaries
(`srfeat.files`), training run folders and prepare's staging folders.

A lock, not a process id alone, tells a live writer from a dead one: a process id is reused, and
one in another PID namespace (a container) is not seen at all. Locks held on folders are counted
(`hold_lock`) so that a forked worker can close its copies (`close_inherited_locks`).
"""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """Whether a process of this id runs (the writer of a temporary, say)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


# The descriptors of the folder locks this process holds (a training run folder's, prepare's staging
# folders'). A forked worker inherits them, and a flock lasts while any copy is open: a worker that
# outlived its run (the run killed) kept the folders locked. Workers close their copies
# (`close_inherited_locks`); the parent's stay locked.
_held_locks: list[int] = []


def hold_lock(descriptor: int) -> None:
    """Count `descriptor` among the locks a forked worker closes (`close_inherited_locks`)."""
    _held_locks.append(descriptor)


def let_go_lock(descriptor: int) -> None:
    """Close a descriptor given to `hold_lock`, which releases its lock."""
    _held_locks.remove(descriptor)
    os.close(descriptor)


def close_inherited_locks() -> None:
    """In a forked worker: close its copies of the locks its parent holds (never unlock them: that would
    release the parent's lock too), so that a worker outliving a killed run does not keep them for good."""
    for descriptor in _held_locks:
        try:
            os.close(descriptor)
        except OSError:
            pass  # not inherited (a spawned worker)
    _held_locks.clear()


def lock_exclusive(descriptor: int, wait: bool) -> bool | None:
    """An exclusive flock on an open file: True once taken, False where a live process holds it (not
    `wait`), None where there are no locks (Windows, some network file systems)."""
    try:
        import fcntl
    except ImportError:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True
