"""The web app's sessions: which pages are open, and when one counts as closed.

A session is one open page. It is alive while its page asks for its jobs (`JobQueue.poll`, every
half second) or a client holds its event stream open. When it falls silent (the tab was closed or
reloaded, the browser crashed) it is given `grace_seconds` to come back (`HIDDEN_PAGE_GRACE_SECONDS`
for a page that said it was hidden); then the queue ends it (`JobQueue.close_session`): its queued
jobs are dropped, its running job stops after the tile in progress, and its results are freed.

Apart from the queue (`srfeat.web.jobs`), which holds the jobs and runs them, because this is a
question of its own: what is known of each page, the rules that turn its silence into its end,
and the thread that applies them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["HIDDEN_PAGE_GRACE_SECONDS", "PAGE_GRACE_SECONDS", "RELOAD_GRACE_SECONDS", "Session", "Sessions"]

# A page that says goodbye (closed or reloaded) is given this long to come back before its jobs
# are cancelled: a reload asks again well within it, a closed tab's job stops soon after.
RELOAD_GRACE_SECONDS = 3.0
PAGE_GRACE_SECONDS = 10.0  # how long a page may fall silent (not said goodbye, not hidden) before it counts as closed
# A hidden tab's timers are slowed by the browser (Chromium: to once a minute after 5 minutes
# hidden), so a hidden page's polls may come a minute apart: it is given this long between them.
HIDDEN_PAGE_GRACE_SECONDS = 180.0


@dataclass
class Session:
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


class Sessions:
    """Every session the queue knows of, and the thread (`reaper`, started by the queue) that ends
    those silent for longer than they may be, through `end(session, reason)`.

    The methods other than the reaper's do not lock: the queue calls them holding `lock`, its own,
    which the reaper takes to look at the sessions (and lets go before calling `end`). A poll may come
    between the two (a reload, a laptop waking), so `end` takes the lock again and ends the session
    only if it is still `silent`.
    """

    def __init__(self, lock: threading.Condition, grace_seconds: float, end: Callable[[str, str], None]) -> None:
        self.grace_seconds = grace_seconds
        self._lock = lock
        self._end = end
        self._sessions: dict[str, Session] = {}
        self._stopping = False
        self.reaper = threading.Thread(target=self._reap, name="srfeat-web-sessions", daemon=True)

    def __contains__(self, session: str) -> bool:
        return session in self._sessions

    def stream_opened(self, session: str) -> None:
        state = self._sessions.setdefault(session, Session())
        state.streams += 1
        state.leaving = False

    def stream_closed(self, session: str) -> None:
        state = self._sessions.get(session)
        if state is not None:
            state.streams = max(0, state.streams - 1)
            state.last_seen = time.monotonic()

    def polled(self, session: str, page: str, hidden: bool) -> None:
        """`page` asked for the session's jobs: the session is alive, unless that page said goodbye."""
        state = self._sessions.setdefault(session, Session())
        if state.left_page is None or page != state.left_page:
            state.last_seen, state.leaving, state.hidden = time.monotonic(), False, hidden

    def leaving(self, session: str, page: str) -> None:
        """`page` said goodbye (`JobQueue.session_leaving`)."""
        state = self._sessions.get(session)
        if state is not None:
            state.leaving, state.left_page = True, page
            state.last_seen = time.monotonic()

    def submitted(self, session: str) -> None:
        """The session queued a job."""
        self._sessions.setdefault(session, Session()).last_seen = time.monotonic()

    def asked_for_job(self, session: str) -> None:
        """The session asked for one of its jobs: alive as a poll keeps it, unless its page said goodbye."""
        state = self._sessions.get(session)
        if state is not None and not state.leaving:
            state.last_seen = time.monotonic()

    def job_started(self, session: str, when: float) -> None:
        if session in self._sessions:
            self._sessions[session].last_started = when

    def last_started(self, session: str) -> float:
        """When the session's last job began (-1 if none has, or the session is gone)."""
        state = self._sessions.get(session)
        return state.last_started if state is not None else -1.0

    def silent(self, session: str) -> bool:
        """Whether the session has no stream open and has gone unheard of for longer than it may: a closed page."""
        state = self._sessions.get(session)
        if state is None or state.streams > 0:
            return False
        return time.monotonic() - state.last_seen > state.silence_allowed(self.grace_seconds)

    def forget(self, session: str) -> bool:
        """Drop the session; whether it was there."""
        return self._sessions.pop(session, None) is not None

    def stop(self) -> None:
        """The reaper ends at its next look."""
        self._stopping = True

    def _reap(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                gone = [name for name in self._sessions if self.silent(name)]
            for session in gone:
                self._end(session, "its page was closed")
            time.sleep(min(0.5, self.grace_seconds / 4))
