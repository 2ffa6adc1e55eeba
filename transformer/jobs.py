"""The media queue of the job framework (common/jobs): its kinds, and what a job's death
and retry do to its media.

A job row is inserted in the same transaction as its media row (`enqueue`), so an
acknowledged upload always has its job; its dedupe key is the media id: one job per media,
which a re-key later reuses (transformer/rekey.py). Claim order: the photo lane (photos and
re-keys) before video, smaller first within a lane. The attempt that reaches attempts_max
dead-letters the job and fails its media; `pinhole jobs retry` makes it processing again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from sqlalchemy.ext.asyncio import AsyncConnection

from common import jobs as framework
from common.jobs import Job, JobKind, JobQueue, RetryPolicy
from transformer import media_store
from transformer.config import MediaConfig

QUEUE: Final = "media"
# The media tables' write lock: the queue's own transactions and the pipeline's (ingest,
# publish, re-key) take the same one.
LOCK: Final = "media_jobs"
PHOTO_LANE: Final = 0
VIDEO_LANE: Final = 1


async def _fail_media(conn: AsyncConnection, dead: Sequence[Job]) -> None:
    await media_store.fail_processing(conn, [j.subject_id for j in dead])


async def _reprocess_media(conn: AsyncConnection, retried: Sequence[Job]) -> None:
    await media_store.reprocess_failed(conn, [j.subject_id for j in retried])


def retry_policy(config: MediaConfig) -> RetryPolicy:
    return RetryPolicy(config.attempts_max, config.backoff_s_base, config.backoff_s_max)


_DEFAULT_RETRY: Final = retry_policy(MediaConfig())

framework.register_queue(JobQueue(QUEUE, lock=LOCK, on_dead=_fail_media, on_retry=_reprocess_media))

# "photo" and "video" make a media's variants; "rekey" rewrites them under a new cookie
# (transformer/rekey.py). Re-keys share the photo lane: they copy bytes, they do not
# transcode, and an owner waiting to be private should not wait behind videos.
PHOTO: Final = framework.register(JobKind("photo", QUEUE, _DEFAULT_RETRY, priority=PHOTO_LANE))
VIDEO: Final = framework.register(JobKind("video", QUEUE, _DEFAULT_RETRY, priority=VIDEO_LANE))
REKEY: Final = framework.register(JobKind("rekey", QUEUE, _DEFAULT_RETRY, priority=PHOTO_LANE))
KINDS: Final = {k.name: k for k in (PHOTO, VIDEO, REKEY)}


async def enqueue(
    conn: AsyncConnection,
    *,
    job_id: int,
    media_id: int,
    kind: str,
    size_bytes: int,
    attempts_max: int,
    now: float,
) -> None:
    """Records a media's job inside the caller's transaction (the one that inserts it)."""
    await framework.enqueue(
        conn,
        KINDS[kind],
        job_id=job_id,
        subject_id=media_id,
        now=now,
        weight=size_bytes,
        attempts_max=attempts_max,
    )
