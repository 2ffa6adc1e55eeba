"""`pinhole api serve`, `pinhole worker serve` and `pinhole jobs list | retry | dead`.

The API reads [api] and [media] of pinhole.toml, a worker [media]; options override single
keys. The jobs commands open the media database directly (the one in [media], or
--media-data / --database-url), so they work while the API and workers run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from common.config import ConfigError
from common.credentials import Credentials
from common.db import Database, migrate, open_database
from common.signals import stop_event
from ops.cli_support import (
    DEFAULT_ROOT,
    EXIT_USAGE,
    CliError,
    credentials_options,
    emit_json,
    load_config,
    run,
    service_credentials,
    setup_logging,
    table,
)
from transformer import jobs, schema
from transformer.config import MediaConfig, media_config


def _media_config(ctx: click.Context, overrides: dict[str, Any]) -> MediaConfig:
    try:
        return media_config(load_config(ctx.obj["config_path"], serving=True), **overrides)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e


def _media_options(f: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--media-data",
                type=click.Path(file_okay=False, path_type=Path),
                help="Where the media database (SQLite) and scratch space live.",
            ),
            click.option("--database-url", help="postgresql+asyncpg://... for the media tables."),
            click.option("--directory-url", help="The directory (where blobs are written)."),
            click.option("--router-url", help="The router (photo URLs, reads of originals)."),
        ]
    ):
        f = option(f)
    return f


def _media_overrides(
    media_data: Path | None,
    database_url: str | None,
    directory_url: str | None,
    router_url: str | None,
) -> dict[str, Any]:
    return {
        "data_dir": str(media_data) if media_data else None,
        "database_url": database_url,
        "directory_url": directory_url,
        "router_url": router_url,
    }


_secret_options = [
    credentials_options,
    click.option("--log-level", default="info", show_default=True),
]


def _with_secret_options(f: Any) -> Any:
    for option in reversed(_secret_options):
        f = option(f)
    return f


def _credentials(
    role: str,
    media: MediaConfig,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
) -> Credentials:
    """The service's credentials: its file, else its share of the secret named on the
    command line or in [media] cluster_secret_file."""
    if credentials_file is None and secret_file is None:
        secret_file = media.cluster_secret_file
    return service_credentials(
        role, credentials_file=credentials_file, secret_file=secret_file, root=root
    )


# -- api ------------------------------------------------------------------------------------


@click.group()
def api() -> None:
    """The public API (/api/v1): accounts, the graph, posts, the feed, uploads and media."""


@api.command("serve")
@click.option("--host", help="Address to listen on.")
@click.option("--port", type=int, help="Port to listen on (0: any free port).")
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where uploads in progress live.",
)
@click.option(
    "--redis-url",
    help="Timelines and rate limits in this Redis (redis://...); default: [feed] redis_url, "
    "else the embedded store.",
)
@_media_options
@_with_secret_options
@click.pass_context
def api_serve(
    ctx: click.Context,
    host: str | None,
    port: int | None,
    data_dir: Path | None,
    redis_url: str | None,
    media_data: Path | None,
    database_url: str | None,
    directory_url: str | None,
    router_url: str | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run the API until SIGINT/SIGTERM."""
    from api.app import serve_forever
    from api.config import api_config
    from feed.config import feed_config
    from social.config import social_config

    setup_logging(log_level)
    overrides = {"host": host, "port": port, "data_dir": str(data_dir) if data_dir else None}
    try:
        document = load_config(ctx.obj["config_path"], serving=True)
        config = api_config(document, **overrides)
        social = social_config(document)
        feed = feed_config(document, redis_url=redis_url)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    media = _media_config(
        ctx, _media_overrides(media_data, database_url, directory_url, router_url)
    )
    creds = _credentials("api", media, credentials_file, secret_file, root)
    run(serve_forever(config, media, credentials=creds, social=social, feed=feed))


# -- worker ---------------------------------------------------------------------------------


@click.group()
def worker() -> None:
    """Media job workers: the photo ladder, the video ladder, expiry of unattached media."""


@worker.command("serve")
@click.option("--name", default="worker", show_default=True, help="Name in job leases.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Health endpoint address.")
@click.option("--port", type=int, default=0, help="Health endpoint port (0: none).")
@_media_options
@_with_secret_options
@click.pass_context
def worker_serve(
    ctx: click.Context,
    name: str,
    host: str,
    port: int,
    media_data: Path | None,
    database_url: str | None,
    directory_url: str | None,
    router_url: str | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run one worker (one job at a time) until SIGINT/SIGTERM; start one per spare core."""
    setup_logging(log_level)
    media = _media_config(
        ctx, _media_overrides(media_data, database_url, directory_url, router_url)
    )
    creds = _credentials("worker", media, credentials_file, secret_file, root)
    run(_serve_worker(media, creds, name=name, host=host, port=port))


async def _serve_worker(
    media: MediaConfig, credentials: Credentials, *, name: str, host: str, port: int
) -> None:
    from transformer.worker import run_worker

    started = time.time()
    with stop_event() as stop:
        async with _health_endpoint(host, port, name=name, started=started):
            print(f"worker {name} running", flush=True)
            await run_worker(media, credentials=credentials, name=name, stop=stop)


@contextlib.asynccontextmanager
async def _health_endpoint(
    host: str, port: int, *, name: str, started: float
) -> AsyncIterator[None]:
    """GET /healthz on host:port (for `pinhole up` / `status`); nothing when port is 0."""
    if not port:
        yield
        return

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "name": name, "uptime_s": time.time() - started})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()


# -- jobs -----------------------------------------------------------------------------------


@click.group("jobs")
def jobs_group() -> None:
    """The media job queue: list jobs, see the dead letters, retry them."""


async def _open(media: MediaConfig) -> Database:
    if not media.database_url and not (media.data_dir / "media.sqlite3").exists():
        raise CliError(f"no media database in {media.data_dir} (is --media-data right?)")
    db = await open_database(media.database, schema=media.database_schema or None)
    await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
    return db


def _rows(listed: list[jobs.Job]) -> list[list[str]]:
    now = time.time()
    return [
        [
            str(j.job_id),
            j.kind,
            j.state,
            f"{j.attempts}/{j.attempts_max}",
            str(j.size_bytes),
            f"{max(0.0, j.run_after_unix_s - now):.0f}s" if j.state == "queued" else "",
            (j.last_error or "")[:60],
        ]
        for j in listed
    ]


_HEADERS = ["job", "kind", "state", "attempts", "bytes", "runs in", "last error"]


def _list(ctx: click.Context, state: str | None, limit: int, json_output: bool) -> None:
    media = _media_config(ctx, {"data_dir": ctx.obj.get("media_data")})

    async def go() -> tuple[list[jobs.Job], dict[str, int]]:
        db = await _open(media)
        try:
            return await jobs.listing(db, state=state, limit=limit), await jobs.counts(db)
        finally:
            await db.close()

    listed, counts = run(go())
    if json_output:
        emit_json({"counts": counts, "jobs": [j.as_json() for j in listed]})
        return
    click.echo("  ".join(f"{k} {v}" for k, v in counts.items()))
    if listed:
        click.echo(table(_rows(listed), _HEADERS))


def _media_data_option(f: Any) -> Any:
    return click.option(
        "--media-data",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_ROOT / "media",
        show_default=True,
        help="Where the media database lives.",
    )(f)


@jobs_group.command("list")
@click.option("--state", type=click.Choice(jobs.STATES), help="Only jobs in this state.")
@click.option("--limit", type=click.IntRange(1, jobs.LIST_ROWS_MAX), default=50, show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@_media_data_option
@click.pass_context
def jobs_list(
    ctx: click.Context, state: str | None, limit: int, json_output: bool, media_data: Path
) -> None:
    """Jobs, newest first, with the count in each state."""
    ctx.obj["media_data"] = str(media_data)
    _list(ctx, state, limit, json_output)


@jobs_group.command("dead")
@click.option("--limit", type=click.IntRange(1, jobs.LIST_ROWS_MAX), default=50, show_default=True)
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@_media_data_option
@click.pass_context
def jobs_dead(ctx: click.Context, limit: int, json_output: bool, media_data: Path) -> None:
    """The dead letters: jobs that failed their last attempt, with their last error."""
    ctx.obj["media_data"] = str(media_data)
    _list(ctx, "dead", limit, json_output)


@jobs_group.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Retry every dead job.")
@click.option("--json", "json_output", is_flag=True, help="Print JSON.")
@_media_data_option
@click.pass_context
def jobs_retry(
    ctx: click.Context,
    job_ids: tuple[str, ...],
    all_dead: bool,
    json_output: bool,
    media_data: Path,
) -> None:
    """Put dead jobs back in the queue with a fresh attempt budget."""
    if bool(job_ids) == all_dead:
        raise CliError("give job ids or --all-dead (not both)", EXIT_USAGE)
    try:
        wanted = [int(j) for j in job_ids] if job_ids else None
    except ValueError:
        raise CliError("job ids are decimal numbers", EXIT_USAGE) from None
    media = _media_config(ctx, {"data_dir": str(media_data)})

    async def go() -> list[int]:
        db = await _open(media)
        try:
            return await jobs.retry(db, wanted)
        finally:
            await db.close()

    requeued = run(go())
    missing = sorted(set(wanted or []) - set(requeued))
    if json_output:
        emit_json({"requeued": [str(j) for j in requeued], "not_dead": [str(j) for j in missing]})
    else:
        click.echo(f"requeued {len(requeued)} job(s)")
    if missing:
        raise CliError(f"not dead (or unknown): {', '.join(str(j) for j in missing)}")
