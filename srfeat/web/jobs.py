"""The web app's work queue: one upscale at a time, in order, cancelled when its page goes away.

Jobs belong to a session (one open page). Uploads wait in one queue shared by all sessions and
a single worker thread runs them, each through the steps of `srfeat.inference.image_files.upscale_file`, the
function `srfeat upscale` uses, so a download is the file the command line would write. The
upload and the result live in memory; the worker writes the input and output to a temporary
folder only because that function works on files, and removes the folder when the job ends
(`srfeat.web.worker`).

When a page counts as closed, and its session ends, is `srfeat.web.sessions`; `close_session` here
then drops its queued jobs, stops its running job after the tile in progress, and frees its results.
How many uploads it takes, and the bytes it may hold, is `srfeat.web.room`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from srfeat.errors import SRFeatError
from srfeat.hardware import return_freed_memory
from srfeat.inference.upscaler import Upscaler
from srfeat.web.job import Job, JobCancelledError, ModelChoice, QueueFullError, safe_file_name
from srfeat.web.room import PAGES_IN_THE_QUEUE, check_room, held_bytes, result_refusal, view_refusal
from srfeat.web.sessions import PAGE_GRACE_SECONDS, Sessions
from srfeat.web.worker import (
    PageError,
    Upscalers,
    loading,
    loading_error,
    page_error,
    remove_stale_temporaries,
    upscale_job,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PAGES_IN_THE_QUEUE",
    "Job",
    "JobCancelledError",
    "JobQueue",
    "ModelChoice",
    "QueueFullError",
    "remove_stale_temporaries",
    "safe_file_name",
]


class JobQueue:
    """All jobs of all sessions; one worker thread runs them, the sessions taking turns (the next
    job is the oldest waiting one of the session served least recently), so that one page's
    hundred images do not hold up another page's one.

    `make_upscaler(choice)` builds the network for a setting (called in the worker thread).
    Every upload is held in memory until its page goes, so the queue takes a new one only while
    its session has fewer than `max_waiting_per_session` waiting, all sessions together fewer than
    `PAGES_IN_THE_QUEUE` times that (a script can open any number of sessions), and all jobs
    together hold at most `max_held_bytes` (uploads, results and the views made of them); a job whose
    result would take them past it fails, saying so.
    """

    def __init__(
        self,
        make_upscaler: Callable[[ModelChoice], Upscaler],
        grace_seconds: float = PAGE_GRACE_SECONDS,
        max_waiting_per_session: int = 100,
        max_held_bytes: int = 2 * 2**30,
    ) -> None:
        self.grace_seconds = grace_seconds
        self.max_waiting_per_session = max_waiting_per_session
        self.max_held_bytes = max_held_bytes
        self._lock = threading.Condition()
        self._jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []
        self._running: Job | None = None
        self._sessions = Sessions(self._lock, grace_seconds, self._close_silent_session)
        self._upscalers = Upscalers(make_upscaler)
        self._stopping = False
        self._seconds_per_pixel: float | None = None  # the pace of the last finished job, for time left
        self.version = 0  # bumped on every change the pages should see
        self._instance = secrets.token_hex(4)  # in `poll`'s versions: a restarted server's 5 is not this one's
        self._threads = [
            threading.Thread(target=self._work, name="srfeat-web-worker", daemon=True),
            self._sessions.reaper,
        ]
        for thread in self._threads:
            thread.start()

    # -- sessions ---------------------------------------------------------------------------

    def stream_opened(self, session: str) -> None:
        with self._lock:
            self._sessions.stream_opened(session)

    def poll(self, session: str, page: str, hidden: bool, since: str = "") -> tuple[str, list[dict[str, Any]] | None]:
        """A look at a session's jobs by `page` (one load of it), which keeps the session alive (`hidden`:
        the page is hidden, and its polls may come slowly) unless that page said goodbye (a poll sent as
        the tab closed): the version of the queue, and the jobs (None while the version is still `since`)."""
        with self._lock:
            self._sessions.polled(session, page, hidden)
            version = f"{self._instance}.{self.version}"
            return version, None if since == version else self._describe_session_locked(session)

    def session_leaving(self, session: str, page: str = "") -> None:
        """`page` said goodbye: end the session once it has had no stream for `sessions.RELOAD_GRACE_SECONDS`
        (its stream may still look open for a moment) unless another page polls it (a reload)."""
        with self._lock:
            self._sessions.leaving(session, page)

    def stream_closed(self, session: str) -> None:
        with self._lock:
            self._sessions.stream_closed(session)

    def close_session(self, session: str, reason: str) -> None:
        """Drop a session's queued jobs, stop its running one, free its results."""
        with self._lock:
            self._close_session_locked(session, reason)

    def _close_silent_session(self, session: str, reason: str) -> None:
        """`close_session` for the reaper: only if the session is still silent. The reaper picked it and let
        the lock go; a poll since then (the page came back: a reload, a laptop waking) keeps it."""
        with self._lock:
            if self._sessions.silent(session):
                self._close_session_locked(session, reason)

    def _close_session_locked(self, session: str, reason: str) -> None:
        if self._sessions.forget(session):
            logger.info("session %s ended: %s", session[:8], reason)
        for job in [job for job in self._jobs.values() if job.session == session]:
            self._cancel_locked(job, reason)
            if job.state != "running":
                del self._jobs[job.id]
        self._changed_locked()

    # -- jobs -------------------------------------------------------------------------------

    def _check_room_locked(self, session: str, name: str, incoming_bytes: int) -> None:
        if self._stopping:  # the worker has ended: a job queued now would show "queued" until the page gave up
            raise QueueFullError(f"{name} was not taken: the server is stopping", 503)
        check_room(
            name,
            session,
            incoming_bytes,
            self._jobs.values(),
            self._waiting,
            self.max_waiting_per_session,
            self.max_held_bytes,
        )

    def keep_view(self, job: Job, kind: str, view: tuple[bytes, str]) -> None:
        """Hold `job`'s `kind` view, or `QueueFullError` (507) when it would take the bytes held past
        `max_held_bytes` (a view sent as the file it shows holds nothing more)."""
        with self._lock:
            held = held_bytes(self._jobs.values())
            job.views[kind] = view
            if held_bytes(self._jobs.values()) > max(held, self.max_held_bytes):
                del job.views[kind]
                raise view_refusal(job, kind, len(view[0]), held, self.max_held_bytes)

    def check_room(self, session: str, name: str, incoming_bytes: int) -> None:
        """`QueueFullError` when an upload of `incoming_bytes` would be refused for want of room: asked
        before the bytes are sent, so that a page holding an upload back need not send it again and again."""
        with self._lock:
            self._check_room_locked(session, name, incoming_bytes)

    def submit(
        self,
        session: str,
        name: str,
        data: bytes,
        choice: ModelChoice,
        width: int,
        height: int,
        client_ref: str = "",
        result_extension: str = "",
        result_keeps: tuple[str, ...] = (),
    ) -> Job:
        """Queue a job, or `QueueFullError` when the session has `max_waiting_per_session` waiting,
        the job would take the bytes held past `max_held_bytes`, or the server is stopping;
        `result_extension` and `result_keeps` as `inspect_upload` found them ("": the upload's own)."""
        job = Job(secrets.token_urlsafe(12), session, name, data, choice, width, height, client_ref=client_ref)
        job.result_extension, job.result_keeps = result_extension, result_keeps
        with self._lock:
            shared = any(other.data is data for other in self._jobs.values())  # `again`: the same upload
            self._check_room_locked(session, name, 0 if shared else len(data))
            self._sessions.submitted(session)
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._changed_locked()
        logger.info("job %s: %s (%dx%d, %s) queued", job.id, name, width, height, choice.label)
        return job

    def again(self, job: Job, choice: ModelChoice) -> tuple[Job, bool]:
        """`job`'s upload queued once more with another setting, as `submit` queues one, its result in the format
        of `job`'s (a PNG for a `.jpg` upload with transparency or 16 bits); and whether that job is new. Where the
        upload has a job of that setting already (queued, running or done), that job: the same network on the same
        file makes the same result, and "Again" pressed without choosing another detail made a second card
        identical to the first."""
        with self._lock:  # a Condition's lock is reentrant: `submit` takes it again, and no other "again" comes between
            for other in self._jobs.values():
                same_upload = other.data is job.data and other.session == job.session and not other.removed
                if same_upload and other.choice == choice and other.state in ("queued", "running", "done"):
                    return other, False
            return self.submit(
                job.session,
                job.name,
                job.data,
                choice,
                job.width,
                job.height,
                result_extension=job.result_extension,
                result_keeps=job.result_keeps,
            ), True

    def get(self, session: str, job_id: str) -> Job | None:
        """The session's job `job_id`, if it has it. Asking for one keeps the session open as `poll` does (a
        script that waits on its result, 409 until done, as the README's curl does), unless its page said goodbye."""
        with self._lock:
            job = self._jobs.get(job_id)
            # A removed job that is still running (until its tile ends) is gone for its page already.
            if job is None or job.session != session or job.removed:
                return None
            self._sessions.asked_for_job(session)
            return job

    def _run_order_locked(self) -> list[Job]:
        """The waiting jobs in the order they will run: round by round, one job of each session per
        round; within a round, sessions that waited longest since their last start go first."""
        rank: dict[str, int] = {}
        keyed = []
        for job in self._waiting:  # in the order they came
            turn = rank.get(job.session, 0)
            rank[job.session] = turn + 1
            keyed.append(((turn, self._sessions.last_started(job.session)), job))
        keyed.sort(key=lambda pair: pair[0])  # stable: ties keep the order they came in
        return [job for _, job in keyed]

    def session_jobs(self, session: str) -> list[Job]:
        with self._lock:
            return [job for job in self._jobs.values() if job.session == session and not job.removed]

    def remove(self, session: str, job_id: str) -> bool:
        """Cancel a job if it has not finished, and forget it."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.session != session:
                return False
            self._cancel_locked(job, "removed from its page")
            job.removed = True
            if job.state != "running":
                del self._jobs[job_id]
            self._changed_locked()
            return True

    def describe(self, job: Job) -> dict[str, Any]:
        """What the page shows for a job (JSON)."""
        with self._lock:
            return self._describe_locked(job, self._places_locked())

    def describe_session(self, session: str) -> list[dict[str, Any]]:
        """What the page shows for each of a session's jobs (the run order worked out once)."""
        with self._lock:
            return self._describe_session_locked(session)

    def _describe_session_locked(self, session: str) -> list[dict[str, Any]]:
        places = self._places_locked()
        jobs = [job for job in self._jobs.values() if job.session == session and not job.removed]
        return [self._describe_locked(job, places) for job in jobs]

    def _places_locked(self) -> dict[str, int]:
        """Each waiting job's number of jobs ahead of it (the running one included)."""
        running = self._running is not None
        return {job.id: place + running for place, job in enumerate(self._run_order_locked())}

    def _describe_locked(self, job: Job, places: dict[str, int]) -> dict[str, Any]:
        now = time.monotonic()
        ahead = places.get(job.id) if job.state == "queued" else None
        return job.describe(now, ahead, self._seconds_per_pixel)

    def _cancel_locked(self, job: Job, reason: str) -> None:
        if job.state == "queued":
            self._waiting.remove(job)
            job.state = "cancelled"
            job.error = f"cancelled: {reason}"
            logger.info("job %s (%s) cancelled before it started: %s", job.id, job.name, reason)
        elif job.state == "running":
            job.cancel.set()
            job.error = f"cancelled: {reason}"

    def _changed_locked(self) -> None:
        self.version += 1
        self._lock.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Cancel everything: queued jobs at once, the running one after its current tile."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
            self._sessions.stop()
            for job in list(self._waiting):
                self._cancel_locked(job, "the server stopped")
            running = self._running
            if running is not None:
                self._cancel_locked(running, "the server stopped")
                logger.info("waiting for job %s (%s) to stop after its current tile", running.id, running.name)
            self._lock.notify_all()

    def join(self, timeout: float = 60.0) -> None:
        """Wait (up to `timeout`) for the worker to finish, so that its temporary folder is removed."""
        self._threads[0].join(timeout)

    # -- the worker -------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._waiting) or self._stopping)
                if self._stopping:
                    return
                job = self._run_order_locked()[0]
                self._waiting.remove(job)
                job.state = "running"
                job.started = time.monotonic()
                self._sessions.job_started(job.session, job.started)
                self._running = job
                self._changed_locked()
            self._run(job)
            return_freed_memory()  # a day of images of many sizes must not pile up freed buffers
            with self._lock:
                self._running = None
                if self._stopping:
                    return
                job.finished = time.monotonic()
                job.data = job.data if job.state == "done" else b""
                if job.removed or job.session not in self._sessions:
                    self._jobs.pop(job.id, None)  # its page is gone or let it go: nobody will ask for it
                self._changed_locked()

    def _run(self, job: Job) -> None:
        def on_tile(done: int, total: int) -> None:
            if job.cancel.is_set():
                raise JobCancelledError
            with self._lock:
                if done == 0:
                    job.tiles_started = time.monotonic()
                job.tiles_done, job.tiles_total = done, total
                self._changed_locked()

        try:
            with self._lock:
                job.loading = job.choice not in self._upscalers
                self._changed_locked()
            try:
                with loading(job.choice.label):
                    upscaler = self._upscalers.get(job.choice)
            except SRFeatError as error:
                raise loading_error(error, job.choice.label) from error
            with self._lock:
                job.loading = False
                self._changed_locked()
            upscaler.on_tile = on_tile
            try:
                result, width, height, notes = upscale_job(upscaler, job)
            finally:
                upscaler.on_tile = None
            if job.cancel.is_set():
                raise JobCancelledError
        except JobCancelledError:
            with self._lock:
                job.state = "cancelled"
            logger.info("job %s (%s) %s", job.id, job.name, job.error or "cancelled")
            return
        except SRFeatError as error:
            # upscale_job's errors and the network's load's (a setting not built yet, `loading_error`) are the page's
            said = error if isinstance(error, PageError) else page_error(error)
            message, logged = str(said).replace("\n", " "), said.logged.replace("\n", " ")
            self._fail(job, message, logged, upload_unreadable=said.upload_unreadable)
            return
        except MemoryError:
            self._fail(job, f"out of memory upscaling this {job.width}x{job.height} image; try a smaller one")
            return
        except Exception as error:  # a bug: the page still hears about it, the log gets the traceback
            logger.exception("job %s (%s) failed", job.id, job.name)
            self._fail(job, f"internal error ({type(error).__name__}: {error}); see the server's log")
            return
        with self._lock:
            if job.tiles_started is not None:
                self._seconds_per_pixel = (time.monotonic() - job.tiles_started) / (job.width * job.height)
            held = held_bytes(self._jobs.values())
            if held + len(result) <= self.max_held_bytes:
                job.result, job.result_width, job.result_height = result, width, height
                job.notes = notes
                job.state = "done"
        if job.state != "done":  # kept, it would have held later uploads out (503) past what the server may hold
            self._fail(job, result_refusal(job, len(result), held, self.max_held_bytes))
            return
        logger.info("job %s: %s -> %s (%dx%d)", job.id, job.name, job.result_name, width, height)

    def _fail(self, job: Job, message: str, logged: str | None = None, upload_unreadable: bool = False) -> None:
        """`job` failed, saying `message` on its page and `logged` (default: the same) in the server's log;
        `upload_unreadable`: as its upload is no image srfeat reads (its page offers no "Try again" then)."""
        with self._lock:
            job.state = "failed"
            job.upload_unreadable = upload_unreadable
            job.loading = False  # in the same change: a load that failed showed "loading" to the end, or "upscaling"
            job.error = message
        logger.error("job %s (%s) failed: %s", job.id, job.name, message if logged is None else logged)

    def prepare(self, choice: ModelChoice) -> None:
        """Build the network for `choice` now (before serving: bad weights fail at start, not on
        the first upload, and the first upload does not wait for the build)."""
        with self._lock:
            self._upscalers.get(choice)
