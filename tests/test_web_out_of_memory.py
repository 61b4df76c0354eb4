"""A tile, or a model as it loads, that runs out of memory under `srfeat serve`: the page says what its user
can do, and the server's log what whoever runs the server can. The page showed the command line's advice (to
give srfeat serve a smaller --tile; to free the GPU, choose another or use --device cpu), which only whoever
started the server can follow."""

from __future__ import annotations

import json
import logging
import time
import urllib.request

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
import torch
from test_web import Server, call, png_bytes, start_server, stop_server, upload, wait_for_state

from srfeat.inference.devices import out_of_memory_loading
from srfeat.inference.upscaler import Upscaler
from srfeat.web.job import ModelChoice
from srfeat.web.jobs import JobQueue
from srfeat.web.worker import page_error

UPLOAD_SIDE = 40  # under test_web's tile size: one tile, the whole upload

# The network runs out of memory on the upload's tile in the server's process (the CPU allocator's refusal,
# as under `ulimit -v`); anything else it runs (none is this size) as it is.
OUT_OF_MEMORY = f"""
import torch
from srfeat.inference.fused import InferenceGenerator
for_window = InferenceGenerator.for_window  # what runs the network on a tile's window
def runs_out_of_memory(self, batch):
    if tuple(batch.shape[-2:]) == ({UPLOAD_SIDE}, {UPLOAD_SIDE}):
        torch.empty(1 << 60, dtype=torch.uint8)
    return for_window(self, batch)
InferenceGenerator.for_window = runs_out_of_memory
"""


# The server loads `default` as it starts; any network it loads after that (another setting, on a page's
# job) runs out of memory as it goes to the device (the CPU allocator's refusal, as under `ulimit -v`).
LOADING_OUT_OF_MEMORY = """
import torch
from srfeat.inference.fused import InferenceGenerator
to = InferenceGenerator.to
first = []
def fills_memory(self, *args, **kwargs):
    first[:] = first or [self]
    if self is not first[0]:
        torch.empty(1 << 60, dtype=torch.uint8)
    return to(self, *args, **kwargs)
InferenceGenerator.to = fills_memory
"""


def failed_job(server: Server, side: int, *query: str) -> tuple[str, dict[str, object]]:
    """Upload a `side`-pixel photo.png (with `query`) to `server`, wait for its job to fail, and stop the
    server: the job's id and what the page was told of it."""
    session = "memory"
    try:
        events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events", timeout=120)
        try:
            answer = upload(server, session, "photo.png", png_bytes(side), *query)
            assert answer.status == 201, answer.body
            job_id = json.loads(answer.body)["id"]
            wait_for_state(events, job_id, "failed")
            jobs = json.loads(call(server, "GET", f"/api/sessions/{session}/jobs").body)["jobs"]
        finally:
            events.close()
    finally:
        stop_server(server)
    (job,) = [each for each in jobs if each["id"] == job_id]
    return job_id, job


def test_a_tile_out_of_memory_tells_the_page_its_users_options_and_the_log_the_servers() -> None:
    server = start_server(prelude=OUT_OF_MEMORY)
    job_id, job = failed_job(server, UPLOAD_SIDE)
    problem = f"out of memory on cpu upscaling a {UPLOAD_SIDE}x{UPLOAD_SIDE} tile"
    assert job["error"] == (
        f"{problem}; try a smaller image, or ask whoever runs the server to restart it with a smaller --tile"
    )
    assert job["upload_unreadable"] is False, job  # its page offers "Try again" (memory may be free by then)
    log = server.log_text()
    logged = (
        f"ERROR: job {job_id} (photo.png) failed: {problem}; free memory (other programs, or the processes "
        "nvidia-smi lists on a GPU) and run again, or give srfeat upscale or srfeat serve a smaller --tile"
    )
    assert [line for line in server.log if line.startswith("ERROR")] == [logged], log
    assert "Traceback" not in log, log


def test_a_model_out_of_memory_as_a_job_loads_it_tells_the_page_its_users_options_and_the_log_the_servers() -> None:
    """A page's setting that is not loaded yet (gan here) loads its network in the job; where it does not fit,
    the page was told to free memory or use --device cpu, the server's options."""
    server = start_server(prelude=LOADING_OUT_OF_MEMORY)
    job_id, job = failed_job(server, 16, "model=gan")
    problem = "out of memory on cpu loading the model"
    assert job["error"] == f"{problem}; try again later, or ask whoever runs the server to free memory for the model"
    assert job["state"] == "failed" and job["loading"] is False, job  # it said loading, failed, to the end
    log = server.log_text()
    logged = f"ERROR: job {job_id} (photo.png) failed: {problem}; close other programs to free memory, then try again"
    assert [line for line in server.log if line.startswith("ERROR")] == [logged], log
    assert "Traceback" not in log, log


def test_a_model_that_fills_the_servers_gpu_leaves_its_options_to_the_log() -> None:
    """On a GPU (which the test above has not), the command line's advice names another GPU and --device cpu."""
    problem = "out of memory on cuda:0 loading the model: other processes hold its memory (nvidia-smi lists them)"
    said = page_error(out_of_memory_loading(torch.device("cuda:0"), command_line=True))
    assert str(said) == f"{problem}; try again later, or ask whoever runs the server to free memory for the model"
    assert said.logged == f"{problem}; free it, choose another GPU, or use --device cpu"


def test_memory_that_runs_out_as_a_setting_loads_is_said_to_be_the_loads(caplog: pytest.LogCaptureFixture) -> None:
    """An allocation that fails as a job builds its setting's network, outside the `Upscaler`'s own check (a step
    of the server's, the ONNX backend's load): the page was told it ran out of memory upscaling its image, whose
    size had nothing to do with it, and to try a smaller one."""

    def runs_out_of_memory(choice: ModelChoice) -> Upscaler:
        raise MemoryError

    queue = JobQueue(runs_out_of_memory)
    try:
        with caplog.at_level(logging.ERROR, logger="srfeat.web.jobs"):
            job = queue.submit("s", "photo.png", png_bytes(16), ModelChoice(model="gan"), 16, 16)
            deadline = time.monotonic() + 60
            while job.state != "failed" and time.monotonic() < deadline:
                time.sleep(0.02)
            described = queue.describe(job)
    finally:
        queue.stop()
        queue.join()
    problem = "out of memory loading the gan network"
    assert described["error"] == (
        f"{problem}; try again later, or ask whoever runs the server to free memory for the model"
    ), described
    assert described["loading"] is False and described["upload_unreadable"] is False, described
    advice = "free memory (other programs, or the processes nvidia-smi lists on a GPU), then try again"
    assert [record.getMessage() for record in caplog.records] == [
        f"job {job.id} (photo.png) failed: {problem}; {advice}"
    ]
