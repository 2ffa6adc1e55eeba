"""A feed page's ladders on the plain-SQL reader (social/post_batch.py `_media`): read
once per ladder_version, read again for exactly the media whose variant rows changed,
whoever changed them (the database raises the version, transformer/schema.py migration 5)."""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path

import pytest

from common.db import migrate, open_database
from social import post_batch
from transformer import schema

COLUMNS = (
    "media_id, owner_id, media_type, status, fmt, size_bytes, width, height, cookie_hex,"
    " original_volume_id, created_unix_s"
)
VARIANT = "INSERT INTO media_variants VALUES (?, ?, 1, 3, ?, ?, ?)"


async def _database(path: Path) -> sqlite3.Connection:
    db = await open_database(path)
    try:
        await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    finally:
        await db.close()
    c = sqlite3.connect(path, isolation_level=None)
    for media_id in (31, 32, 33):
        c.execute(
            f"INSERT INTO media ({COLUMNS}) VALUES (?, 1, 'image', 'ready', 1, 10, 4, 4, ?, 3, 1)",
            (media_id, f"{media_id:016x}"),
        )
    for media_id in (31, 32):  # 33 is still processing: no variant yet
        c.executemany(VARIANT, [(media_id, r, r * 10, r, r) for r in (150, 640)])
    return c


def _read(
    c: sqlite3.Connection, ids: list[int]
) -> tuple[dict[int, post_batch.MediaWithVariants], list[str]]:
    """The media of `ids` in one read transaction, and the statements it ran."""
    statements: list[str] = []
    c.set_trace_callback(statements.append)
    try:
        c.execute("BEGIN")
        got = post_batch._media(c, ids)
        c.execute("COMMIT")
    finally:
        c.set_trace_callback(None)
    return got, [s for s in statements if s.startswith("SELECT")]


def _ladder(entry: post_batch.MediaWithVariants) -> list[tuple[int, int]]:
    return [(v.rendition, v.size_bytes) for v in entry[1]]


async def test_a_ladder_is_read_again_only_after_its_variants_change(tmp_path: Path) -> None:
    c = await _database(tmp_path / "media.sqlite3")
    first, ran = _read(c, [31, 32, 33])
    assert sum("media_variants" in s for s in ran) == 1
    assert _ladder(first[31]) == [(150, 1500), (640, 6400)]
    assert first[33][1] == () and first[33][0].media_id == 33

    again, ran = _read(c, [31, 32, 33])
    assert not any("media_variants" in s for s in ran), ran
    assert all(again[m] is first[m] for m in (31, 32, 33))

    # Changed behind the API's back, in plain SQL: the next read sees it.
    c.execute("UPDATE media_variants SET size_bytes = 7 WHERE media_id = 31 AND rendition = 640")
    c.executemany(VARIANT, [(33, 150, 99, 150, 150)])
    changed, ran = _read(c, [31, 32, 33])
    variant_reads = [s for s in ran if "media_variants" in s]
    assert len(variant_reads) == 1 and "32" not in variant_reads[0].split("IN")[1]
    assert _ladder(changed[31]) == [(150, 1500), (640, 7)]
    assert _ladder(changed[33]) == [(150, 99)]
    assert changed[32] is first[32]
    c.execute("DELETE FROM media_variants WHERE media_id = 32")
    gone, _ = _read(c, [32])
    assert gone[32][1] == ()
    c.close()


async def test_the_ladders_kept_are_bounded_least_recently_used_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = await _database(tmp_path / "media.sqlite3")
    monkeypatch.setattr(post_batch, "_LADDERS", OrderedDict())
    monkeypatch.setattr(post_batch, "MEDIA_INTERNED_MAX", 2)
    _read(c, [31, 32])
    _read(c, [31])  # 31 used last
    _, ran = _read(c, [33])  # 32 makes room
    assert [r[0] for r in post_batch._LADDERS] == [31, 33]
    _, ran = _read(c, [31, 33])
    assert not any("media_variants" in s for s in ran)
    _, ran = _read(c, [32])
    assert any("media_variants" in s for s in ran)
    assert len(post_batch._LADDERS) == 2
    c.close()
