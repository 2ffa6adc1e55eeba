"""`pinhole feed jobs list|retry`: the fan-out queue and its dead letters, for operators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from common.db import Database, migrate, open_database
from feed import jobs, schema
from ops.cli_support import DEFAULT_ROOT, EXIT_USAGE, CliError, emit_json, run, table
from ops.media_cmds import _media_config


@click.group("feed")
def feed_group() -> None:
    """The feed: fan-out jobs (they run inside every API process)."""


@feed_group.group("jobs")
def feed_jobs() -> None:
    """Fan-out jobs: list them, retry dead letters."""


def _data_option(f: Any) -> Any:
    return click.option(
        "--media-data",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_ROOT / "media",
        show_default=True,
        help="Where the metadata database lives (the API's [media] data_dir).",
    )(f)


async def _open(ctx: click.Context, media_data: Path) -> Database:
    media = _media_config(ctx, {"data_dir": str(media_data)})
    if not media.database_url and not (media.data_dir / "media.sqlite3").exists():
        raise CliError(f"no metadata database in {media.data_dir} (is --media-data right?)")
    db = await open_database(media.database, schema=media.database_schema or None)
    await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    return db


@feed_jobs.command("list")
@click.option("--state", type=click.Choice(("queued", "running", "done", "dead")))
@click.option("--limit", type=click.IntRange(1, jobs.LIST_ROWS_MAX), default=50, show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@_data_option
@click.pass_context
def jobs_list(
    ctx: click.Context, state: str | None, limit: int, json_output: bool, media_data: Path
) -> None:
    """Fan-out jobs, newest first, with the count in each state (--state dead: the dead
    letters with their last error)."""

    async def go() -> tuple[list[jobs.Job], dict[str, int]]:
        db = await _open(ctx, media_data)
        try:
            return await jobs.listing(db, state=state, limit=limit), await jobs.counts(db)
        finally:
            await db.close()

    listed, counts = run(go())
    if json_output:
        emit_json({"counts": counts, "jobs": [j.as_json() for j in listed]})
        return
    click.echo("  ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no jobs")
    rows = [
        [str(j.job_id), j.kind, str(j.post_id), j.state, str(j.attempts), (j.last_error or "")[:60]]
        for j in listed
    ]
    if rows:
        click.echo(table(rows, ["job", "kind", "post", "state", "attempts", "last error"]))


@feed_jobs.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@_data_option
@click.pass_context
def jobs_retry(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    all_dead: bool,
    json_output: bool,
    media_data: Path,
) -> None:
    """Put dead fan-out jobs back in the queue with a fresh attempt count."""
    if bool(job_ids) == all_dead:
        raise CliError("give job ids or --all-dead (not both)", EXIT_USAGE)
    try:
        wanted = [int(j) for j in job_ids] if job_ids else None
    except ValueError:
        raise CliError("job ids are decimal numbers", EXIT_USAGE) from None

    async def go() -> list[int]:
        db = await _open(ctx, media_data)
        try:
            return await jobs.retry(db, wanted)
        finally:
            await db.close()

    retried = run(go())
    if json_output:
        emit_json({"retried": [str(j) for j in retried]})
    else:
        click.echo(f"retried {len(retried)} job(s)")
    if wanted and len(retried) != len(wanted):
        raise CliError("some of those jobs are not dead (or do not exist)", 1)
