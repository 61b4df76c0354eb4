"""When `srfeat serve` counts a page as closed: the queue's sessions, driven directly (no server, no browser)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from srfeat.errors import SRFeatError
from srfeat.inference.upscaler import Upscaler
from srfeat.web.job import ModelChoice
from srfeat.web.jobs import JobQueue

GRACE_SECONDS = 0.2  # a silent page's allowance, short so that the reaper picks the session soon


def _no_network(_choice: ModelChoice) -> Upscaler:
    # Each job fails at once, and its failed card stays while its session lives: what the end would free.
    raise SRFeatError("no network in this test")


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within 60 s"
        time.sleep(0.02)


def test_a_page_that_polls_after_the_reaper_picked_its_session_keeps_it() -> None:
    """The reaper picked the silent sessions under the lock, let it go, then ended each: a poll in between
    (a reload, a laptop waking) still had its session ended and its jobs cancelled. Now the end looks
    again under the lock; and a session that stays silent is still ended."""
    queue = JobQueue(_no_network, grace_seconds=GRACE_SECONDS)
    end = queue._sessions._end  # what the reaper calls for each session it picked (with the lock let go)
    kept_after_the_poll: list[list[str]] = []
    picked = threading.Event()

    def poll_between_pick_and_end(session: str, reason: str) -> None:
        if not picked.is_set():
            queue.poll(session, "reloaded-page", hidden=False)  # the page came back just then
            end(session, reason)
            kept_after_the_poll.append([job.name for job in queue.session_jobs(session)])
            picked.set()
        else:
            end(session, reason)

    queue._sessions._end = poll_between_pick_and_end
    try:
        queue.submit("returning", "kept.png", b"an upload", ModelChoice(), 16, 16)
        assert picked.wait(60), "the reaper never picked the silent session"
        assert kept_after_the_poll == [["kept.png"]]
        _wait_until(lambda: not queue.session_jobs("returning"), "the end of the session once silent again")
    finally:
        queue.stop()
        queue.join()


def test_closing_a_session_ends_it_at_once_however_recently_it_was_heard_from() -> None:
    """`POST /api/sessions/S/close` (`close_session`) is no question of silence: it ends the session now."""
    queue = JobQueue(_no_network)
    try:
        queue.submit("closed", "gone.png", b"an upload", ModelChoice(), 16, 16)
        _wait_until(lambda: [job.state for job in queue.session_jobs("closed")] == ["failed"], "the job's end")
        queue.poll("closed", "page", hidden=False)
        queue.close_session("closed", "its page was closed")
        assert queue.session_jobs("closed") == []
    finally:
        queue.stop()
        queue.join()
