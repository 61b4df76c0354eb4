"""`srfeat` as a user runs it, a child process, and the one error line a refusal must be."""

from __future__ import annotations

import fcntl
import os
import resource
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def srfeat_cli(
    *args: str | Path,
    cwd: Path = REPO,
    timeout: float = 300,
    memory_limit: int | None = None,
    env: dict[str, str] | None = None,
    file_size_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`srfeat ARGS...` in `cwd`, this checkout's package (`run_child` says the rest)."""
    return run_child(
        [sys.executable, "-m", "srfeat.cli", *args],
        cwd=cwd,
        timeout=timeout,
        memory_limit=memory_limit,
        env=env,
        file_size_limit=file_size_limit,
    )


def python_code(code: str, *args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`python -c CODE ARGS...` in `cwd`, with this checkout's package: a run of srfeat with something patched."""
    return run_child([sys.executable, "-c", code, *args], cwd=cwd)


def run_child(
    command: Sequence[str | Path],
    *,
    cwd: Path = REPO,
    timeout: float = 300,
    memory_limit: int | None = None,
    env: dict[str, str] | None = None,
    file_size_limit: int | None = None,
) -> subprocess.CompletedProcess[str]:
    """`command` in `cwd`, this checkout's package on its path, its output captured; `memory_limit`: its address
    space, in bytes; `env`: variables set for it besides (e.g. SRFEAT_DATASETS); `file_size_limit`: the largest
    file it may write, in bytes (a write past it is short, or fails with EFBIG, as on a full disk)."""

    def limit_resources() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
        if file_size_limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the write past it kills the child
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        list(map(str, command)),
        cwd=cwd,
        env={**CHILD_ENV, **(env or {})},
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_resources if memory_limit is not None or file_size_limit is not None else None,
    )


def srfeat_cli_writing_to(stdout: str, *args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """`srfeat ARGS...` whose standard output is "a full disk" (/dev/full) or "a reader that went away"
    (a pipe closed before the child writes, so its write fails with EPIPE every time); stderr captured."""
    if stdout == "a reader that went away":
        reader, target = os.pipe()
        os.close(reader)
    else:
        assert stdout == "a full disk", stdout
        target = os.open("/dev/full", os.O_WRONLY)
    try:
        return subprocess.run(
            [sys.executable, "-m", "srfeat.cli", *map(str, args)],
            cwd=cwd,
            env=CHILD_ENV,
            stdout=target,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=300,
        )
    finally:
        os.close(target)


# In the child: the patched function asks the CPU allocator for 2**60 bytes first, which it refuses with
# its own error (a RuntimeError), as under `ulimit -v` or in a container without overcommit.
RUNS_OUT_OF_MEMORY = """
import sys, torch
import {module} as patched
original = patched.{name}
def runs_out_of_memory(*args, **kwargs):
    if {when}:
        torch.empty(1 << 60, dtype=torch.uint8)
    return original(*args, **kwargs)
patched.{name} = runs_out_of_memory
from srfeat.cli import main
sys.exit(main(sys.argv[1:]))
"""


def srfeat_cli_out_of_memory(module: str, name: str, when: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`srfeat ARGS...` in which `module.name` (a function, or a class's method) runs out of memory
    whenever the Python expression `when` (of its `args`) is true."""
    return python_code(RUNS_OUT_OF_MEMORY.format(module=module, name=name, when=when), *args)


def one_error_line(child: subprocess.CompletedProcess[str], *, returncode: int = 1, only: bool = False) -> str:
    """The run ended with `returncode`, no traceback and exactly one ERROR line, which is returned;
    `only`: and nothing else was printed but INFO lines (no warning, no usage block)."""
    assert child.returncode == returncode and "Traceback" not in child.stderr, (child.returncode, child.stderr)
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    others = [line for line in lines if not line.startswith(("INFO:", "ERROR"))]
    assert len(errors) == 1 and not (only and others), child.stderr
    return errors[0]


def one_input_error(child: subprocess.CompletedProcess[str]) -> str:
    """The error line about the one input of a failed `srfeat upscale`, before its summary ("1 of 1 input(s)
    failed"), which is returned; no warning, no traceback."""
    assert child.returncode == 1 and "Traceback" not in child.stderr and "WARNING" not in child.stderr, child.stderr
    errors = [line for line in child.stderr.splitlines() if line.startswith("ERROR")]
    assert errors[1:] == ["ERROR: 1 of 1 input(s) failed"], child.stderr
    return errors[0]


def start_piped(command: Sequence[str | Path], **popen: Any) -> subprocess.Popen[str]:
    """`command` started in the repository with CHILD_ENV, its standard streams pipes of text (a test
    tells it when to go on through stdin and reads where it has got to from stdout)."""
    return subprocess.Popen(
        [str(part) for part in command],
        cwd=REPO,
        env=CHILD_ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


# Sets SIGHUP's disposition (and, with "terminal", takes the pseudo-terminal on fd 0 as the session's
# controlling terminal), then becomes the command: no `preexec_fn`, unsafe where the test run has threads.
HANGUP_WRAPPER = """
import fcntl, os, signal, sys, termios
disposition, terminal, *command = sys.argv[1:]
if terminal == "terminal":
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
signal.signal(signal.SIGHUP, signal.SIG_IGN if disposition == "ignored" else signal.SIG_DFL)
os.execvp(command[0], command)
"""


def with_hangup(command: Sequence[str | Path], ignored: bool, terminal: bool = False) -> list[str]:
    """`command` started with SIGHUP ignored, as `nohup` starts it, or at its default action (set, not
    inherited: under `nohup pytest` the test run ignores it too); its process id is the command's."""
    how = ["ignored" if ignored else "default", "terminal" if terminal else "-"]
    return [sys.executable, "-c", HANGUP_WRAPPER, *how, *map(str, command)]


class Terminal:
    """A pseudo-terminal to run a child in, as a terminal window or an SSH session runs a command:
    the child leads a session of its own, whose controlling terminal this is, and reads and writes it
    as stdin, stdout and stderr. `hang_up` is the window closed, the connection dropped: the kernel
    sends the child SIGHUP, and every later write to the terminal fails (EIO)."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # for progress bars
        self._slave: int | None = slave
        self._output = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)

    def start(self, command: Sequence[str | Path], cwd: Path = REPO) -> subprocess.Popen[bytes]:
        """`command` on this terminal (in `cwd`, with CHILD_ENV), with SIGHUP at its default action."""
        assert self._slave is not None
        try:
            child = subprocess.Popen(
                with_hangup(command, ignored=False, terminal=True),
                cwd=cwd,
                env=CHILD_ENV,
                stdin=self._slave,
                stdout=self._slave,
                stderr=self._slave,
                start_new_session=True,
            )
        finally:
            os.close(self._slave)
            self._slave = None
        self._reader.start()
        return child

    def _read(self) -> None:  # the terminal's screen; a terminal that is not read fills and blocks its writer
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.1)[0]:
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the child and its processes have all closed the terminal
                return
            if not data:
                return
            with self._lock:
                self._output += data

    def text(self) -> str:
        """What the child wrote to the terminal so far."""
        with self._lock:
            return self._output.decode(errors="replace")

    def wait_for(self, text: str, child: subprocess.Popen[bytes], timeout: float = 300) -> None:
        """Until the child wrote `text` (it fails if the child exits first)."""
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert child.poll() is None and time.monotonic() < deadline, (child.poll(), self.text())
            time.sleep(0.02)

    def hang_up(self) -> None:
        """The terminal closed: its master end is closed (after the last of the screen is read)."""
        self._stop.set()
        if self._reader.ident is not None:  # started
            self._reader.join(timeout=60)
        os.close(self.master)
