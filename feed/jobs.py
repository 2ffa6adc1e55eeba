"""The feed queue of the job framework (common/jobs): fan-out jobs, `publish` inserted in
the transaction that records a post and `retract` in the one that deletes it, so no
acknowledged post misses its fan-out. One job per kind and post (the dedupe key). They
are claimed due first; waiting for a post's media to turn ready is a deferral, not a
failed attempt (feed/runner.py)."""

from __future__ import annotations

from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from common import jobs as framework
from common.ids import IdGenerator
from common.jobs import JobKind, JobQueue, RetryPolicy
from feed.config import FeedConfig

QUEUE: Final = "feed"
LOCK: Final = "feed_jobs"


def retry_policy(config: FeedConfig) -> RetryPolicy:
    return RetryPolicy(config.attempts_max, config.backoff_s_base, config.backoff_s_max)


_DEFAULT_RETRY: Final = retry_policy(FeedConfig())

framework.register_queue(JobQueue(QUEUE, lock=LOCK))
PUBLISH: Final = framework.register(JobKind("publish", QUEUE, _DEFAULT_RETRY))
RETRACT: Final = framework.register(JobKind("retract", QUEUE, _DEFAULT_RETRY))
KINDS: Final = {k.name: k for k in (PUBLISH, RETRACT)}


async def enqueue(
    conn: AsyncConnection,
    id_gen: IdGenerator,
    kind: str,
    *,
    post_id: int,
    author_id: int,
    attempts_max: int,
    now: float | None = None,
) -> None:
    """Records a fan-out job inside the caller's transaction (one per kind and post),
    dead-lettered after `attempts_max` attempts ([feed] attempts_max)."""
    await framework.enqueue(
        conn,
        KINDS[kind],
        job_id=id_gen.next_id(),
        subject_id=post_id,
        owner_id=author_id,
        dedupe_key=f"{kind}:{post_id}",
        attempts_max=attempts_max,
        now=framework.SystemClock().now() if now is None else now,
    )
