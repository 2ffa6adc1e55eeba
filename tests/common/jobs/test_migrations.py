"""Existing databases upgrade in place: the media and feed queues' rows and the
directory's leases move into the job framework's tables, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

import feed.jobs
import transformer.jobs
from common.db import Database, migrate
from common.jobs import JobState, JobStore
from common.jobs.lease import holders
from directory import schema as directory_schema
from feed import schema as feed_schema
from social import post_batch
from transformer import schema as media_schema


async def test_media_jobs_move_with_their_lane_size_and_state(db: Database) -> None:
    await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS[:2])
    async with db.transaction() as conn:
        for job_id, kind, lane, size, state, attempts in (
            (5, "video", 1, 900, "queued", 0),
            (6, "photo", 0, 50, "dead", 3),
            (7, "rekey", 0, 70, "running", 1),
        ):
            await conn.execute(
                sa.text(
                    "INSERT INTO media_jobs (job_id, media_id, kind, lane, size_bytes, state,"
                    " attempts, attempts_max, run_after_unix_s, lease_owner,"
                    " lease_expires_unix_s, last_error, created_unix_s, updated_unix_s)"
                    " VALUES (:id, :id, :kind, :lane, :size, :state, :attempts, 3, 10,"
                    " :owner, :expires, :error, 1, 2)"
                ),
                {
                    "id": job_id, "kind": kind, "lane": lane, "size": size, "state": state,
                    "attempts": attempts, "owner": "w" if state == "running" else None,
                    "expires": 99.0 if state == "running" else None,
                    "error": "boom" if state == "dead" else None,
                },
            )  # fmt: skip
    assert await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS) == [3, 4, 5]
    store = JobStore(db)
    moved = {j.job_id: j for j in await store.listing(transformer.jobs.QUEUE)}
    assert set(moved) == {5, 6, 7}
    video, photo, rekey = moved[5], moved[6], moved[7]
    assert (video.kind, video.subject_id, video.priority, video.weight) == ("video", 5, 1, 900)
    assert video.dedupe_key == "5" and video.state == JobState.QUEUED
    assert (photo.state, photo.attempts, photo.last_error) == (JobState.DEAD, 3, "boom")
    assert (rekey.lease_owner, rekey.lease_expires_unix_s, rekey.attempts_max) == ("w", 99.0, 3)
    async with db.snapshot() as conn:
        tables = await conn.run_sync(lambda c: sa.inspect(c).get_table_names())
    assert "media_jobs" not in tables
    # The moved photo claims before the video (its lane), once retried.
    assert await store.retry(transformer.jobs.QUEUE, [6]) == [6]
    claimed = await store.claim(transformer.jobs.QUEUE, worker="w", lease_s=5)
    assert claimed is not None and claimed.job_id == 6


async def test_feed_jobs_move_with_their_author_and_dedupe_key(db: Database) -> None:
    await migrate(db, feed_schema.COMPONENT, feed_schema.MIGRATIONS[:1])
    async with db.transaction() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO feed_jobs (job_id, kind, post_id, author_id, state, attempts,"
                " run_after_unix_s, created_unix_s, updated_unix_s)"
                " VALUES (41, 'publish', 400, 4, 'queued', 2, 10, 1, 2),"
                " (42, 'retract', 400, 4, 'done', 0, 10, 1, 2)"
            )
        )
    assert await migrate(db, feed_schema.COMPONENT, feed_schema.MIGRATIONS) == [2]
    # The media component's later migration finds the table there and adds nothing twice.
    await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS)
    moved = {j.job_id: j for j in await JobStore(db).listing(feed.jobs.QUEUE)}
    publish, retract = moved[41], moved[42]
    assert (publish.subject_id, publish.owner_id, publish.dedupe_key) == (400, 4, "publish:400")
    assert (publish.attempts, publish.attempts_max) == (2, feed.jobs.PUBLISH.retry.attempts_max)
    assert retract.state == JobState.DONE and retract.dedupe_key == "retract:400"


async def test_directory_leases_move_under_their_prefix(db: Database) -> None:
    await migrate(db, directory_schema.COMPONENT, directory_schema.MIGRATIONS[:1])
    async with db.transaction() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO directory_leases (name, holder, expires_unix_s)"
                " VALUES ('health', 'host:1', 123.5)"
            )
        )
    assert await migrate(db, directory_schema.COMPONENT, directory_schema.MIGRATIONS) == [2, 3]
    assert await holders(db) == {"directory.health": ("host:1", 123.5)}


async def test_media_variants_gain_their_covering_index(db: Database) -> None:
    await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS[:3])
    async with db.transaction() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO media_variants (media_id, rendition, fmt, volume_id, size_bytes,"
                " width, height) VALUES (9, 1080, 1, 3, 100, 1080, 1350),"
                " (9, 640, 1, 3, 50, 640, 800)"
            )
        )
    assert await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS) == [4, 5]

    def look(c: sa.Connection) -> tuple[list[str], list[tuple[object, ...]]]:
        indexes = {
            i["name"]: i["column_names"] for i in sa.inspect(c).get_indexes("media_variants")
        }
        fields = ", ".join(post_batch._VARIANT_FIELDS)
        query = (
            f"SELECT {fields} FROM media_variants WHERE media_id IN (9, 10)"
            " ORDER BY media_id, rendition, fmt"
        )
        plan: list[tuple[object, ...]] = []
        if c.dialect.name == "sqlite":  # the feed page's ladder read uses it alone
            plan = [tuple(r) for r in c.execute(sa.text("EXPLAIN QUERY PLAN " + query))]
        rows = [tuple(r) for r in c.execute(sa.text(query))]
        assert rows == [(9, 640, 1, 3, 50, 640, 800), (9, 1080, 1, 3, 100, 1080, 1350)]
        return indexes["media_variants_cover"], plan

    async with db.snapshot() as conn:
        columns, plan = await conn.run_sync(look)
    assert columns == list(post_batch._VARIANT_FIELDS)
    if plan:
        assert any("COVERING INDEX media_variants_cover" in str(step) for step in plan), plan


async def test_every_change_to_a_media_s_variants_raises_its_ladder_version(db: Database) -> None:
    """Migration 5 on an existing database: the version starts at 0 and the database
    itself raises it for every insert, update and delete of the media's variant rows
    (whoever writes them), only for that media, and not when the change rolls back."""
    await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS[:4])
    columns = (
        "media_id, owner_id, media_type, status, fmt, size_bytes, width, height,"
        " cookie_hex, original_volume_id, created_unix_s"
    )
    async with db.transaction() as conn:
        for media_id in (21, 22):
            await conn.execute(
                sa.text(
                    f"INSERT INTO media ({columns}) VALUES"
                    " (:m, 1, 'image', 'ready', 1, 10, 4, 4, '00000000000000aa', 3, 1.0)"
                ),
                {"m": media_id},
            )
        await conn.execute(
            sa.text(
                "INSERT INTO media_variants (media_id, rendition, fmt, volume_id, size_bytes,"
                " width, height) VALUES (21, 640, 1, 3, 50, 640, 800)"
            )
        )
    assert await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS) == [5]

    async def versions() -> dict[int, int]:
        async with db.snapshot() as conn:
            rows = await conn.execute(sa.text("SELECT media_id, ladder_version FROM media"))
            return {int(m): int(v) for m, v in rows}

    assert await versions() == {21: 0, 22: 0}
    variant = (
        "INSERT INTO media_variants (media_id, rendition, fmt, volume_id, size_bytes, width,"
        " height) VALUES (:m, :r, 1, 3, 100, :r, :r)"
    )
    async with db.transaction() as conn:
        await conn.execute(sa.text(variant), [{"m": 21, "r": 1080}, {"m": 21, "r": 320}])
    assert await versions() == {21: 2, 22: 0}
    async with db.transaction() as conn:
        await conn.execute(
            sa.text(
                "UPDATE media_variants SET volume_id = 9 WHERE media_id = 21 AND rendition = 640"
            )
        )
    assert await versions() == {21: 3, 22: 0}
    async with db.transaction() as conn:
        await conn.execute(sa.text("DELETE FROM media_variants WHERE media_id = 21"))
        await conn.execute(sa.text(variant), {"m": 22, "r": 150})
    assert await versions() == {21: 6, 22: 1}
    with pytest.raises(RuntimeError):
        async with db.transaction() as conn:
            await conn.execute(sa.text(variant), {"m": 22, "r": 640})
            raise RuntimeError("rolled back")
    assert await versions() == {21: 6, 22: 1}
    # A row moved to another media (nothing does this today) raises both.
    async with db.transaction() as conn:
        await conn.execute(sa.text("UPDATE media_variants SET media_id = 21 WHERE media_id = 22"))
    assert await versions() == {21: 7, 22: 2}
