"""Signals a command was started with ignored stay ignored.

sh starts a script's background job (`srfeat train ... &`) with SIGINT ignored, so that the Ctrl-C
that stops the script, sent to the whole foreground group, leaves the job running; Python then sets
no KeyboardInterrupt handler. Training's and the server's own stop handlers replaced that ignore,
and the Ctrl-C meant for the script stopped them too.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml
from training_helpers import tiny_values, wait_for_logged_steps, write_image_folders

REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

# Ignores SIGINT (set, not inherited: the test run's own may be either), then becomes the command; no
# `preexec_fn`, unsafe where the test run has threads.
SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); os.execvp(sys.argv[1], sys.argv[1:])"
)


def start_with_sigint_ignored(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", SIGINT_IGNORED, sys.executable, "-m", "srfeat.cli", *arguments],
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_training_started_with_sigint_ignored_goes_on_after_a_ctrl_c(tmp_path: Path) -> None:
    train = write_image_folders(tmp_path / "images")[0]
    out = tmp_path / "run"
    values = tiny_values(train, None, out)
    values["train"].update({"max_steps": 500, "checkpoint_every": 1000})
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    child = start_with_sigint_ignored("train", str(config), "--no-progress")
    try:
        wait_for_logged_steps(child, out, 3)
        child.send_signal(signal.SIGINT)
        wait_for_logged_steps(child, out, 8)  # fails if the run stopped at the step in flight
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGTERM, stderr
    assert "Ctrl-C" not in stderr and "interrupted (SIGTERM)" in stderr, stderr


def test_a_server_started_with_sigint_ignored_serves_on_after_a_ctrl_c() -> None:
    child = start_with_sigint_ignored("serve", "--no-browser", "--device", "cpu", "--port", "0")
    try:
        assert child.stdout is not None
        found = re.search(r"http://[\w.\[\]:]+/", child.stdout.readline())  # once it listens
        if found is None:
            child.kill()
            pytest.fail(f"srfeat serve printed no URL: {child.communicate(timeout=60)}")
        child.send_signal(signal.SIGINT)
        for _ in range(3):  # a stop would have begun at once; uvicorn checks for one every 0.1 s
            with urllib.request.urlopen(found.group(0), timeout=60) as page:
                assert page.status == 200
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, stderr
    assert "stopped (SIGTERM)" in stderr and "SIGINT" not in stderr, stderr
