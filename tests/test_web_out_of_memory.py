"""A tile that runs out of memory under `srfeat serve`: the page says what its user can do, and the server's
log what whoever runs the server can. The page showed the command line's advice, to give srfeat serve a
smaller --tile, which only whoever started the server can."""

from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("starlette", reason='srfeat serve needs the web extra: pip install -e ".[web]"')
pytest.importorskip("playwright.sync_api", reason='the browser tests need Playwright: pip install -e ".[test]"')
from test_web import call, png_bytes, start_server, stop_server, upload, wait_for_state

UPLOAD_SIDE = 40  # under test_web's tile size: one tile, the whole upload

# The network runs out of memory on the upload's tile in the server's process (the CPU allocator's refusal,
# as under `ulimit -v`); anything else it runs (none is this size) as it is.
OUT_OF_MEMORY = f"""
import torch
from srfeat.inference.fused import InferenceGenerator
forward = InferenceGenerator.forward
def runs_out_of_memory(self, batch, *args):
    if tuple(batch.shape[-2:]) == ({UPLOAD_SIDE}, {UPLOAD_SIDE}):
        torch.empty(1 << 60, dtype=torch.uint8)
    return forward(self, batch, *args)
InferenceGenerator.forward = runs_out_of_memory
"""


def test_a_tile_out_of_memory_tells_the_page_its_users_options_and_the_log_the_servers() -> None:
    server = start_server(prelude=OUT_OF_MEMORY)
    session = "memory"
    try:
        events = urllib.request.urlopen(f"{server.url}api/sessions/{session}/events", timeout=120)
        try:
            answer = upload(server, session, "photo.png", png_bytes(UPLOAD_SIDE))
            assert answer.status == 201, answer.body
            job_id = json.loads(answer.body)["id"]
            wait_for_state(events, job_id, "failed")
            jobs = json.loads(call(server, "GET", f"/api/sessions/{session}/jobs").body)["jobs"]
        finally:
            events.close()
    finally:
        stop_server(server)
    problem = f"out of memory on cpu upscaling a {UPLOAD_SIDE}x{UPLOAD_SIDE} tile"
    (job,) = [each for each in jobs if each["id"] == job_id]
    assert job["error"] == (
        f"{problem}; try a smaller image, or ask whoever runs the server to restart it with a smaller --tile"
    )
    log = server.log_text()
    logged = (
        f"ERROR: job {job_id} (photo.png) failed: {problem}; free memory (other programs, or the processes "
        "nvidia-smi lists on a GPU) and run again, or give srfeat upscale or srfeat serve a smaller --tile"
    )
    assert [line for line in server.log if line.startswith("ERROR")] == [logged], log
    assert "Traceback" not in log, log
