"""`pinhole search reindex [--json]`: rebuilds the search index (accounts, hashtags,
places) and the hashtag and place counts from the source tables (social/search_index.py),
for operators: after a restore, or when an index table was dropped or damaged.

The command opens the metadata database directly (the one in [media], or --media-data /
--database-url), migrated first. The rebuild is one write transaction on the social lock:
sign-ups and posts wait for it (seconds for 100,000 accounts), and none is lost or
indexed twice.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from common.config import ConfigError
from common.db import migrate, open_database
from ops.cli_support import (
    EXIT_USAGE,
    CliError,
    emit_json,
    load_config,
    metadata_database_options,
    run,
    show_progress,
)
from social import accounts, search_index, search_schema
from social import schema as social_schema
from transformer import schema as media_schema
from transformer.config import media_config


@click.group("search")
def search_group() -> None:
    """The search index of accounts, hashtags and places."""


class _Bars:
    """One tqdm bar per kind, on a terminal only."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bars: dict[str, Any] = {}

    def __call__(self, kind: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self._bars.get(kind)
        if bar is None:
            bar = self._bars[kind] = tqdm(total=total, desc=f"reindex {kind}", unit="row")
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


@search_group.command("reindex")
@click.option("--json", "json_output", is_flag=True, help="Print JSON for scripts.")
@metadata_database_options
@click.pass_context
def reindex(
    ctx: click.Context, json_output: bool, media_data: Path, database_url: str | None
) -> None:
    """Drop and rebuild the search index tables, with a progress bar per kind."""
    try:
        media = media_config(
            load_config(ctx.obj["config_path"], serving=True),
            data_dir=str(media_data),
            database_url=database_url,
        )
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    if not media.database_url and not (media.data_dir / "media.sqlite3").exists():
        raise CliError(f"no metadata database in {media.data_dir} (is --media-data right?)")
    bars = _Bars(show_progress(json_output))

    async def go() -> dict[str, int]:
        db = await open_database(media.database, schema=media.database_schema or None)
        try:
            await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS)
            await migrate(db, social_schema.COMPONENT, social_schema.MIGRATIONS)
            await migrate(db, search_schema.COMPONENT, search_schema.MIGRATIONS)
            async with db.transaction(lock=accounts.LOCK) as conn:
                await search_schema.drop_index_tables(conn)
                await search_schema.create_index_tables(conn)
                return await search_index.rebuild(conn, bars)
        finally:
            bars.close()
            await db.close()

    started = time.monotonic()
    done = run(go())
    seconds = round(time.monotonic() - started, 3)
    if json_output:
        emit_json({"indexed": done, "seconds": seconds})
        return
    click.echo(
        "reindexed " + ", ".join(f"{n} {kind}" for kind, n in done.items()) + f" in {seconds} s"
    )
