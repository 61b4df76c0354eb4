"""`srfeat` as a user runs it, a child process, and the one error line a refusal must be."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def srfeat_cli(
    *args: str | Path,
    cwd: Path = REPO,
    timeout: float = 300,
    memory_limit: int | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`srfeat ARGS...` in `cwd`, this checkout's package; `memory_limit`: its address space, in bytes;
    `env`: variables set for it besides (e.g. SRFEAT_DATASETS)."""

    def limit_memory() -> None:
        if memory_limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return subprocess.run(
        [sys.executable, "-m", "srfeat.cli", *map(str, args)],
        cwd=cwd,
        env={**CHILD_ENV, **(env or {})},
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=limit_memory if memory_limit is not None else None,
    )


def one_error_line(child: subprocess.CompletedProcess[str], *, returncode: int = 1, only: bool = False) -> str:
    """The run ended with `returncode`, no traceback and exactly one ERROR line, which is returned;
    `only`: and nothing else was printed but INFO lines (no warning, no usage block)."""
    assert child.returncode == returncode and "Traceback" not in child.stderr, (child.returncode, child.stderr)
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    others = [line for line in lines if not line.startswith(("INFO:", "ERROR"))]
    assert len(errors) == 1 and not (only and others), child.stderr
    return errors[0]
