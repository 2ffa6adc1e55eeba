"""`pinhole jobs` on a real metadata database holding media and feed jobs: per-queue and
all-queue listings, dead letters, retry, and one-line errors for bad input."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import feed.jobs
import transformer.jobs
from common.db import migrate, open_database
from common.jobs import JobState, JobStore, enqueue
from feed import schema as feed_schema
from tests.ops.test_cli import one_error_line, pinhole
from transformer import schema as media_schema


async def _seed(media_data: Path) -> None:
    """Media job 11 and feed job 22 dead, media job 12 queued."""
    db = await open_database(media_data / "media.sqlite3")
    try:
        await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS)
        await migrate(db, feed_schema.COMPONENT, feed_schema.MIGRATIONS)
        store = JobStore(db)
        async with db.transaction() as conn:
            await enqueue(conn, transformer.jobs.PHOTO, job_id=11, subject_id=11, now=1.0,
                          attempts_max=1)  # fmt: skip
            await enqueue(conn, transformer.jobs.VIDEO, job_id=12, subject_id=12, now=1.0)
            await enqueue(conn, feed.jobs.PUBLISH, job_id=22, subject_id=220, owner_id=2,
                          dedupe_key="publish:220", now=1.0, attempts_max=1)  # fmt: skip
        for queue in (transformer.jobs.QUEUE, feed.jobs.QUEUE):
            job = await store.claim(queue, worker="w", lease_s=30)
            assert job is not None
            assert await store.fail(job, worker="w", error=f"{queue} broke") == JobState.DEAD
    finally:
        await db.close()


@pytest.fixture
def media_data(tmp_path: Path) -> Path:
    (tmp_path / "media").mkdir()
    asyncio.run(_seed(tmp_path / "media"))
    return tmp_path / "media"


def test_list_dead_and_retry_across_queues(media_data: Path, tmp_path: Path) -> None:
    r = pinhole("jobs", "list", "--json", "--media-data", media_data, cwd=tmp_path)
    assert r.code == 0, r
    doc = json.loads(r.out)
    assert doc["counts"] == {
        "f4": {"queued": 0, "running": 0, "done": 0, "dead": 0},
        "feed": {"queued": 0, "running": 0, "done": 0, "dead": 1},
        "media": {"queued": 1, "running": 0, "done": 0, "dead": 1},
    }
    assert [(j["queue"], j["job_id"]) for j in doc["jobs"]] == [
        ("feed", "22"), ("media", "12"), ("media", "11"),
    ]  # fmt: skip

    r = pinhole("jobs", "dead", "--queue", "feed", "--json", "--media-data", media_data,
                cwd=tmp_path)  # fmt: skip
    assert r.code == 0, r
    (dead,) = json.loads(r.out)["jobs"]
    assert (dead["kind"], dead["subject_id"], dead["owner_id"]) == ("publish", "220", "2")
    assert dead["last_error"] == "feed broke"

    r = pinhole("jobs", "dead", "--media-data", media_data, cwd=tmp_path)  # the table
    assert r.code == 0 and "media broke" in r.out and "feed broke" in r.out, r

    # A media job id is not dead in the feed queue.
    r = pinhole("jobs", "retry", "11", "--queue", "feed", "--media-data", media_data, cwd=tmp_path)
    assert r.code == 1 and one_error_line(r) == "pinhole: not dead (or unknown): 11"
    r = pinhole("jobs", "retry", "--all-dead", "--json", "--media-data", media_data, cwd=tmp_path)
    assert r.code == 0 and json.loads(r.out)["requeued"] == ["11", "22"], r
    r = pinhole("jobs", "dead", "--json", "--media-data", media_data, cwd=tmp_path)
    assert json.loads(r.out)["jobs"] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("list", "--queue", "bogus"),
            "pinhole: unknown queue 'bogus' (known: f4, feed, media, all)",
        ),
        (("retry", "01"), "pinhole: a job id must be a decimal number without sign or leading"),
        (("retry",), "pinhole: give job ids or --all-dead (not both)"),
        (("retry", "5", "--all-dead"), "pinhole: give job ids or --all-dead (not both)"),
    ],
)
def test_bad_input_is_one_line(
    media_data: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    r = pinhole("jobs", *args, "--media-data", media_data, cwd=tmp_path)
    assert r.code == 2 and one_error_line(r).startswith(message), r


def test_a_missing_database_is_one_line(tmp_path: Path) -> None:
    r = pinhole("jobs", "list", "--media-data", tmp_path / "nowhere", cwd=tmp_path)
    assert r.code == 1 and "no metadata database" in one_error_line(r)


def test_the_feed_jobs_command_is_gone(tmp_path: Path) -> None:
    assert pinhole("feed", "jobs", "list", cwd=tmp_path).code == 2
