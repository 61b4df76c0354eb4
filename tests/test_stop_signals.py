"""How training and the server meet a stop signal: where they say so, and which they leave ignored.

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


def start_srfeat(*arguments: str, sigint_ignored: bool = True) -> subprocess.Popen[str]:
    wrapper = [sys.executable, "-c", SIGINT_IGNORED] if sigint_ignored else []
    return subprocess.Popen(
        [*wrapper, sys.executable, "-m", "srfeat.cli", *arguments],
        cwd=REPO,
        env=CHILD_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def long_run_config(folder: Path, validation: bool = False) -> tuple[Path, Path]:
    """A tiny config of 500 steps, none of them checkpointed, and its run folder."""
    train, validation_folder = write_image_folders(folder / "images")
    out = folder / "run"
    values = tiny_values(train, validation_folder if validation else None, out)
    values["train"].update({"max_steps": 500, "checkpoint_every": 1000})
    config = folder / "run.yaml"
    config.write_text(yaml.safe_dump(values))
    return config, out


def test_training_started_with_sigint_ignored_goes_on_after_a_ctrl_c(tmp_path: Path) -> None:
    config, out = long_run_config(tmp_path)
    child = start_srfeat("train", str(config), "--no-progress")
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
    child = start_srfeat("serve", "--no-browser", "--device", "cpu", "--port", "0")
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
    # it said "Ctrl+C stops the server", which here stops nothing
    assert "Ctrl+C" not in stderr and "SIGTERM (kill PID) stops the server" in stderr, stderr


def test_with_the_progress_bar_a_ctrl_c_is_answered_on_stderr_not_in_the_redirected_stdout(tmp_path: Path) -> None:
    # tqdm writes to stdout unless told: with the bar on, `srfeat train cfg > log` put "Ctrl-C: finishing this
    # step..." and the validation lines in the log file, and the terminal said nothing to the Ctrl-C
    config, out = long_run_config(tmp_path, validation=True)
    child = start_srfeat("train", str(config), sigint_ignored=False)  # the progress bar on
    try:
        wait_for_logged_steps(child, out, 3)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 128 + signal.SIGINT, stderr
    assert stdout == "", stdout  # an interrupted run has no one-line result
    assert "Ctrl-C: finishing this step" in stderr and "step 2: validation psnr" in stderr, stderr
