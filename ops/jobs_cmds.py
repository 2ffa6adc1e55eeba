"""`pinhole jobs list | dead | retry [--queue media|feed|f4|all] [--json]`: every job queue
(common/jobs) and its dead letters, for operators.

The commands open the metadata database directly (the one in [media], or --media-data /
--database-url), migrated first, so they work while the API and workers run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

import f4.jobs
import feed.jobs
import transformer.jobs
from common.config import ConfigError
from common.db import Database, migrate, open_database
from common.ids import ID_MAX, parse_decimal
from common.jobs import Job, JobState, JobStore, UnknownQueue, admin
from common.jobs.queue import LIST_ROWS_MAX
from feed import schema as feed_schema
from ops.cli_support import (
    EXIT_USAGE,
    CliError,
    emit_json,
    load_config,
    metadata_database_options,
    run,
    table,
)
from transformer import schema as media_schema
from transformer.config import media_config

T = TypeVar("T")
QUEUE_CHOICES = (transformer.jobs.QUEUE, feed.jobs.QUEUE, f4.jobs.QUEUE, admin.ALL_QUEUES)
_HEADERS = ["job", "queue", "kind", "subject", "state", "attempts", "runs in", "last error"]


@click.group("jobs")
def jobs_group() -> None:
    """Every job queue (media transcodes, feed fan-out, f4 migrations and rebuilds): list
    jobs, see the dead letters, retry them."""


def _common_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--queue",
                metavar="|".join(QUEUE_CHOICES),
                default=admin.ALL_QUEUES,
                show_default=True,
                help="Which queue.",
            ),
            click.option("--json", "json_output", is_flag=True, help="Print JSON."),
        ]
    ):
        f = option(f)
    return metadata_database_options(f)


def _with_store(
    ctx: click.Context,
    media_data: Path,
    database_url: str | None,
    use: Callable[[JobStore], Awaitable[T]],
) -> T:
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

    async def go() -> T:
        db: Database = await open_database(media.database, schema=media.database_schema or None)
        try:
            await migrate(db, media_schema.COMPONENT, media_schema.MIGRATIONS)
            await migrate(db, feed_schema.COMPONENT, feed_schema.MIGRATIONS)
            await migrate(db, f4.jobs.COMPONENT, f4.jobs.MIGRATIONS)
            return await use(JobStore(db))
        finally:
            await db.close()

    return run(go())


def _queues(name: str) -> list[str]:
    try:
        return admin.queues_named(name)
    except UnknownQueue as e:
        raise CliError(e.message, EXIT_USAGE) from e


def _rows(listed: list[Job]) -> list[list[str]]:
    now = time.time()
    return [
        [
            str(j.job_id),
            j.queue,
            j.kind,
            str(j.subject_id),
            j.state,
            f"{j.attempts}/{j.attempts_max}",
            f"{max(0.0, j.run_after_unix_s - now):.0f}s" if j.state == JobState.QUEUED else "",
            (j.last_error or "")[:60],
        ]
        for j in listed
    ]


def _list(
    ctx: click.Context,
    *,
    queue: str,
    state: JobState | None,
    limit: int,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    queues = _queues(queue)

    async def use(store: JobStore) -> tuple[list[Job], list[Any]]:
        listed = await admin.listing(store, queues, state=state, limit=limit)
        return listed, await admin.statistics(store, queues)

    listed, stats = _with_store(ctx, media_data, database_url, use)
    if json_output:
        emit_json(
            {
                "counts": {s.queue: s.as_json() for s in stats},
                "jobs": [j.as_json() for j in listed],
            }
        )
        return
    for s in stats:
        click.echo(f"{s.queue}: " + "  ".join(f"{k} {v}" for k, v in s.as_json().items()))
    if listed:
        click.echo(table(_rows(listed), _HEADERS))


_limit_option = click.option(
    "--limit", type=click.IntRange(1, LIST_ROWS_MAX), default=50, show_default=True
)


@jobs_group.command("list")
@click.option(
    "--state", type=click.Choice([str(s) for s in JobState]), help="Only jobs in this state."
)
@_limit_option
@_common_options
@click.pass_context
def jobs_list(
    ctx: click.Context,
    state: str | None,
    limit: int,
    queue: str,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    """Jobs, newest first, with the count in each state per queue."""
    _list(
        ctx,
        queue=queue,
        state=None if state is None else JobState(state),
        limit=limit,
        json_output=json_output,
        media_data=media_data,
        database_url=database_url,
    )


@jobs_group.command("dead")
@_limit_option
@_common_options
@click.pass_context
def jobs_dead(
    ctx: click.Context,
    limit: int,
    queue: str,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    """The dead letters: jobs that failed their last attempt, with their last error."""
    _list(
        ctx,
        queue=queue,
        state=JobState.DEAD,
        limit=limit,
        json_output=json_output,
        media_data=media_data,
        database_url=database_url,
    )


@jobs_group.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead job (of --queue).")
@_common_options
@click.pass_context
def jobs_retry(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    all_dead: bool,
    queue: str,
    json_output: bool,
    media_data: Path,
    database_url: str | None,
) -> None:
    """Put dead jobs back in their queue with a fresh attempt budget."""
    if bool(job_ids) == all_dead:
        raise CliError("give job ids or --all-dead (not both)", EXIT_USAGE)
    try:
        wanted = [parse_decimal(j, maximum=ID_MAX, what="a job id") for j in job_ids]
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from None
    queues = _queues(queue)

    async def use(store: JobStore) -> list[int]:
        return await admin.retry(store, queues, wanted or None)

    requeued = _with_store(ctx, media_data, database_url, use)
    missing = sorted(set(wanted) - set(requeued))
    if json_output:
        emit_json({"requeued": [str(j) for j in requeued], "not_dead": [str(j) for j in missing]})
    else:
        click.echo(f"requeued {len(requeued)} job(s)")
    if missing:
        raise CliError(f"not dead (or unknown): {', '.join(str(j) for j in missing)}")
