"""The web app's work queue: one upscale at a time, in order, cancelled when its page goes away.

Jobs belong to a session (one open page). Uploads wait in one queue shared by all sessions and
a single worker thread runs them, each through `srfeat.inference.image_files.upscale_file`, the
function `srfeat upscale` uses, so a download is the file the command line would write. The
upload and the result live in memory; the worker writes the input and output to a temporary
folder only because that function works on files, and removes the folder when the job ends
(`srfeat.web.worker`).

A session is alive while its page asks for its jobs (`poll`, every half second) or a client
holds its event stream open. When it falls silent (the tab was closed or reloaded, the browser
crashed) it is given `grace_seconds` to come back (`HIDDEN_PAGE_GRACE_SECONDS` for a page that
said it was hidden); then its queued jobs are dropped, its running job stops after the tile in
progress, and its results are freed.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from srfeat.errors import SRFeatError
from srfeat.files import megabytes
from srfeat.hardware import return_freed_memory
from srfeat.inference.upscaler import Upscaler
from srfeat.web.job import Job, JobCancelledError, ModelChoice, QueueFullError, safe_file_name
from srfeat.web.worker import Upscalers, remove_stale_temporaries, upscale_job

logger = logging.getLogger(__name__)

__all__ = [
    "Job",
    "JobCancelledError",
    "JobQueue",
    "ModelChoice",
    "QueueFullError",
    "remove_stale_temporaries",
    "safe_file_name",
]

# A page that says goodbye (closed or reloaded) is given this long to come back before its jobs
# are cancelled: a reload asks again well within it, a closed tab's job stops soon after.
RELOAD_GRACE_SECONDS = 3.0
PAGE_GRACE_SECONDS = 10.0  # how long a page may fall silent (not said goodbye, not hidden) before it counts as closed
# A hidden tab's timers are slowed by the browser (Chromium: to once a minute after 5 minutes
# hidden), so a hidden page's polls may come a minute apart: it is given this long between them.
HIDDEN_PAGE_GRACE_SECONDS = 180.0
# All pages together may have this many times --max-queued waiting: a bound on the queue (and on
# the work of listing it) that one script opening many sessions cannot lift.
PAGES_IN_THE_QUEUE = 10


@dataclass
class _Session:
    streams: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    last_started: float = -1.0  # when its last job began (-1: none yet), for taking turns
    leaving: bool = False  # its page said goodbye: it ends after RELOAD_GRACE_SECONDS unless it comes back
    hidden: bool = False  # its page's last poll said it was hidden (its polls may come slowly)
    # The page (one load of it) that said goodbye, None before any did: its polls still on their way do
    # not count. A poll that names no page (a script's, as the README shows it) counts until then.
    left_page: str | None = None

    def silence_allowed(self, grace_seconds: float) -> float:
        """How long the session may go unheard of before it counts as closed."""
        if self.leaving:
            return min(grace_seconds, RELOAD_GRACE_SECONDS)
        return max(grace_seconds, HIDDEN_PAGE_GRACE_SECONDS) if self.hidden else grace_seconds


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
        self._sessions: dict[str, _Session] = {}
        self._upscalers = Upscalers(make_upscaler)
        self._stopping = False
        self._seconds_per_pixel: float | None = None  # the pace of the last finished job, for time left
        self.version = 0  # bumped on every change the pages should see
        self._instance = secrets.token_hex(4)  # in `poll`'s versions: a restarted server's 5 is not this one's
        self._threads = [
            threading.Thread(target=self._work, name="srfeat-web-worker", daemon=True),
            threading.Thread(target=self._reap, name="srfeat-web-sessions", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    # -- sessions ---------------------------------------------------------------------------

    def stream_opened(self, session: str) -> None:
        with self._lock:
            state = self._sessions.setdefault(session, _Session())
            state.streams += 1
            state.leaving = False

    def poll(self, session: str, page: str, hidden: bool, since: str = "") -> tuple[str, list[dict[str, Any]] | None]:
        """A look at a session's jobs by `page` (one load of it), which keeps the session alive (`hidden`:
        the page is hidden, and its polls may come slowly) unless that page said goodbye (a poll sent as
        the tab closed): the version of the queue, and the jobs (None while the version is still `since`)."""
        with self._lock:
            state = self._sessions.setdefault(session, _Session())
            if state.left_page is None or page != state.left_page:
                state.last_seen, state.leaving, state.hidden = time.monotonic(), False, hidden
            version = f"{self._instance}.{self.version}"
            return version, None if since == version else self._describe_session_locked(session)

    def session_leaving(self, session: str, page: str = "") -> None:
        """`page` said goodbye: end the session once it has had no stream for `RELOAD_GRACE_SECONDS`
        (its stream may still look open for a moment) unless another page polls it (a reload)."""
        with self._lock:
            state = self._sessions.get(session)
            if state is not None:
                state.leaving, state.left_page = True, page
                state.last_seen = time.monotonic()

    def stream_closed(self, session: str) -> None:
        with self._lock:
            state = self._sessions.get(session)
            if state is not None:
                state.streams = max(0, state.streams - 1)
                state.last_seen = time.monotonic()

    def close_session(self, session: str, reason: str) -> None:
        """Drop a session's queued jobs, stop its running one, free its results."""
        with self._lock:
            if self._sessions.pop(session, None) is not None:
                logger.info("session %s ended: %s", session[:8], reason)
            for job in [job for job in self._jobs.values() if job.session == session]:
                self._cancel_locked(job, reason)
                if job.state != "running":
                    del self._jobs[job.id]
            self._changed_locked()

    def _reap(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                now = time.monotonic()
                gone = [
                    name
                    for name, state in self._sessions.items()
                    if state.streams == 0 and now - state.last_seen > state.silence_allowed(self.grace_seconds)
                ]
            for session in gone:
                self.close_session(session, "its page was closed")
            time.sleep(min(0.5, self.grace_seconds / 4))

    # -- jobs -------------------------------------------------------------------------------

    def _check_room_locked(self, session: str, name: str, incoming_bytes: int) -> None:
        if self._stopping:  # the worker has ended: a job queued now would show "queued" until the page gave up
            raise QueueFullError(f"{name} was not taken: the server is stopping", 503)
        waiting = sum(job.session == session for job in self._waiting)
        if waiting >= self.max_waiting_per_session:
            raise QueueFullError(
                f"{name} is refused: {waiting} images of this page are already waiting, the most this server queues "
                "per page (--max-queued); add more when some are done",
                429,
            )
        if len(self._waiting) >= PAGES_IN_THE_QUEUE * self.max_waiting_per_session:
            raise QueueFullError(
                f"{name} is refused: {len(self._waiting)} images of all pages are waiting, the most this server "
                f"queues ({PAGES_IN_THE_QUEUE} times --max-queued); add it when some are done",
                429,
            )
        held = self._held_bytes_locked()
        if held + incoming_bytes > self.max_held_bytes:
            raise QueueFullError(
                f"{name} is refused: this server holds {held / 2**20:.1f} MB of images and results, and its limit "
                f"is {self.max_held_bytes / 2**20:g} MB (--max-held-mb); remove finished images from the page, "
                "or try again when other pages have closed",
                503,
            )

    def _held_bytes_locked(self) -> int:
        """Bytes held by all jobs: uploads (shared by `again` copies: counted once), results, views."""
        held: dict[int, int] = {}
        for job in self._jobs.values():
            for blob in (job.data, job.result, *(view for view, _ in job.views.values())):
                if blob:
                    held[id(blob)] = len(blob)
        return sum(held.values())

    def keep_view(self, job: Job, kind: str, view: tuple[bytes, str]) -> None:
        """Hold `job`'s `kind` view, or `QueueFullError` (507) when it would take the bytes held past
        `max_held_bytes` (a view sent as the file it shows holds nothing more)."""
        with self._lock:
            held = self._held_bytes_locked()
            job.views[kind] = view
            if self._held_bytes_locked() > max(held, self.max_held_bytes):
                del job.views[kind]
                raise QueueFullError(
                    f"the {kind} view of {job.name} ({len(view[0]) / 2**20:.1f} MB) would take what this server "
                    f"holds ({held / 2**20:.1f} MB) past its limit of {self.max_held_bytes / 2**20:g} MB "
                    "(--max-held-mb); remove finished images from the page, or download the result",
                    507,
                )

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
    ) -> Job:
        """Queue a job, or `QueueFullError` when the session has `max_waiting_per_session` waiting,
        the job would take the bytes held past `max_held_bytes`, or the server is stopping."""
        job = Job(secrets.token_urlsafe(12), session, name, data, choice, width, height, client_ref=client_ref)
        with self._lock:
            shared = any(other.data is data for other in self._jobs.values())  # `again`: the same upload
            self._check_room_locked(session, name, 0 if shared else len(data))
            self._sessions.setdefault(session, _Session()).last_seen = time.monotonic()
            self._jobs[job.id] = job
            self._waiting.append(job)
            self._changed_locked()
        logger.info("job %s: %s (%dx%d, %s) queued", job.id, name, width, height, choice.label)
        return job

    def get(self, session: str, job_id: str) -> Job | None:
        """The session's job `job_id`, if it has it. Asking for one keeps the session open as `poll` does (a
        script that waits on its result, 409 until done, as the README's curl does), unless its page said goodbye."""
        with self._lock:
            job = self._jobs.get(job_id)
            # A removed job that is still running (until its tile ends) is gone for its page already.
            if job is None or job.session != session or job.removed:
                return None
            state = self._sessions.get(session)
            if state is not None and not state.leaving:
                state.last_seen = time.monotonic()
            return job

    def _run_order_locked(self) -> list[Job]:
        """The waiting jobs in the order they will run: round by round, one job of each session per
        round; within a round, sessions that waited longest since their last start go first."""
        rank: dict[str, int] = {}
        keyed = []
        for job in self._waiting:  # in the order they came
            turn = rank.get(job.session, 0)
            rank[job.session] = turn + 1
            state = self._sessions.get(job.session)
            keyed.append(((turn, state.last_started if state is not None else -1.0), job))
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
        finished = job.finished if job.finished is not None else now
        return {
            "id": job.id,
            "ref": job.client_ref,
            "name": job.name,
            "model": job.choice.model,
            "strength": job.choice.strength,
            "label": job.choice.label,
            "width": job.width,
            "height": job.height,
            "state": job.state,
            "loading": job.loading,
            "ahead": ahead,
            "tiles_done": job.tiles_done,
            "tiles_total": job.tiles_total,
            "seconds_left": job.seconds_left(now, self._seconds_per_pixel),
            "seconds": None if job.started is None else round(finished - job.started, 2),
            "error": job.error,
            "notes": job.notes,
            "result_name": job.result_name if job.state == "done" else None,
            "result_width": job.result_width,
            "result_height": job.result_height,
            "result_bytes": len(job.result) if job.result is not None else None,
        }

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
                if job.session in self._sessions:
                    self._sessions[job.session].last_started = job.started
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
            upscaler = self._upscalers.get(job.choice)
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
            self._fail(job, str(error).replace("\n", " "))
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
            held = self._held_bytes_locked()
            if held + len(result) <= self.max_held_bytes:
                job.result, job.result_width, job.result_height = result, width, height
                job.notes = notes
                job.state = "done"
        if job.state != "done":  # kept, it would have held later uploads out (503) past what the server may hold
            larger = "start the server with a larger --max-held-mb"
            alone = len(result) + len(job.data) > self.max_held_bytes  # no removing of other images makes room
            self._fail(
                job,
                f"its result, {job.result_name} ({megabytes(len(result))}), would take what this server holds "
                f"({megabytes(held)}) past its limit of {self.max_held_bytes / 2**20:g} MB (--max-held-mb); "
                + (larger if alone else f"remove finished images from the page and upload it again, or {larger}"),
            )
            return
        logger.info("job %s: %s -> %s (%dx%d)", job.id, job.name, job.result_name, width, height)

    def _fail(self, job: Job, message: str) -> None:
        with self._lock:
            job.state = "failed"
            job.error = message
        logger.error("job %s (%s) failed: %s", job.id, job.name, message)

    def prepare(self, choice: ModelChoice) -> None:
        """Build the network for `choice` now (before serving: bad weights fail at start, not on
        the first upload, and the first upload does not wait for the build)."""
        with self._lock:
            self._upscalers.get(choice)
