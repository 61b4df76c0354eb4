"""What the web app's queue has room for: uploads waiting, per page and in all, and the bytes held.

Every upload is held in memory until its page goes, so the queue (`srfeat.web.jobs`) takes a new one
only while its session has fewer than `max_waiting_per_session` waiting (--max-queued), all sessions
together fewer than `PAGES_IN_THE_QUEUE` times that, and all jobs together hold at most
`max_held_bytes` (--max-held-mb: uploads, results and the views made of them). Here are those counts
and the refusals that say which limit was met and what to do; apart from the queue, which asks them
holding its lock, because they are the limits a user sets and reads back, not the queue's order or
its worker.
"""

from __future__ import annotations

from collections.abc import Iterable

from srfeat.files import megabytes
from srfeat.web.job import Job, QueueFullError

__all__ = ["PAGES_IN_THE_QUEUE", "check_room", "held_bytes", "result_refusal", "view_refusal"]

# All pages together may have this many times --max-queued waiting: a bound on the queue (and on
# the work of listing it) that one script opening many sessions cannot lift.
PAGES_IN_THE_QUEUE = 10


def held_bytes(jobs: Iterable[Job]) -> int:
    """Bytes held by `jobs`: uploads (shared by `again` copies: counted once), results, views."""
    held: dict[int, int] = {}
    for job in jobs:
        for blob in (job.data, job.result, *(view for view, _ in job.views.values())):
            if blob:
                held[id(blob)] = len(blob)
    return sum(held.values())


def check_room(
    name: str,
    session: str,
    incoming_bytes: int,
    jobs: Iterable[Job],
    waiting: list[Job],
    max_waiting_per_session: int,
    max_held_bytes: int,
) -> None:
    """`QueueFullError` when `session`'s upload `name` of `incoming_bytes` has no room beside `jobs`, of
    which `waiting` wait."""
    waiting_here = sum(job.session == session for job in waiting)
    if waiting_here >= max_waiting_per_session:
        raise QueueFullError(
            f"{name} is refused: {waiting_here} images of this page are already waiting, the most this server "
            "queues per page (--max-queued); add more when some are done",
            429,
        )
    if len(waiting) >= PAGES_IN_THE_QUEUE * max_waiting_per_session:
        raise QueueFullError(
            f"{name} is refused: {len(waiting)} images of all pages are waiting, the most this server "
            f"queues ({PAGES_IN_THE_QUEUE} times --max-queued); add it when some are done",
            429,
        )
    held = held_bytes(jobs)
    if held + incoming_bytes > max_held_bytes:
        raise QueueFullError(
            f"{name} is refused: this server holds {held / 2**20:.1f} MB of images and results, and its limit "
            f"is {max_held_bytes / 2**20:g} MB (--max-held-mb); remove finished images from the page, "
            "or try again when other pages have closed",
            503,
        )


def view_refusal(job: Job, kind: str, view_bytes: int, held: int, max_held_bytes: int) -> QueueFullError:
    """The refusal (507) of `job`'s `kind` view of `view_bytes`, which would take the `held` bytes past
    `max_held_bytes`."""
    return QueueFullError(
        f"the {kind} view of {job.name} ({view_bytes / 2**20:.1f} MB) would take what this server "
        f"holds ({held / 2**20:.1f} MB) past its limit of {max_held_bytes / 2**20:g} MB "
        "(--max-held-mb); remove finished images from the page, or download the result",
        507,
    )


def result_refusal(job: Job, result_bytes: int, held: int, max_held_bytes: int) -> str:
    """Why `job` failed: its result of `result_bytes` would take the `held` bytes past `max_held_bytes`.
    (Kept, it would have held later uploads out, 503, past what the server may hold.)"""
    larger = "start the server with a larger --max-held-mb"
    alone = result_bytes + len(job.data) > max_held_bytes  # no removing of other images makes room
    return (
        f"its result, {job.result_name} ({megabytes(result_bytes)}), would take what this server holds "
        f"({megabytes(held)}) past its limit of {max_held_bytes / 2**20:g} MB (--max-held-mb); "
        + (larger if alone else f"remove finished images from the page and upload it again, or {larger}")
    )
