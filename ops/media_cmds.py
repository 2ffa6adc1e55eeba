"""`pinhole api serve` and `pinhole worker serve` (the job commands: ops/jobs_cmds.py).

The API reads [api] and [media] of pinhole.toml, a worker [media]; options override single
keys.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import click
from aiohttp import web

from common.config import ConfigError
from common.credentials import Credentials
from common.signals import stop_event
from ops.cli_support import (
    EXIT_USAGE,
    CliError,
    credentials_options,
    load_config,
    run,
    service_credentials,
    setup_logging,
)
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
@click.option(
    "--realtime-config",
    "realtime_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file whose [realtime] table names the MQTT broker (`pinhole up` writes one); "
    "default: the [realtime] table of --config.",
)
@click.option(
    "--process-index",
    type=click.IntRange(min=0),
    hidden=True,
    help="Which of [api] processes this one is (given by the `api serve` that starts them).",
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
    realtime_file: Path | None,
    process_index: int | None,
    media_data: Path | None,
    database_url: str | None,
    directory_url: str | None,
    router_url: str | None,
    credentials_file: Path | None,
    secret_file: Path | None,
    root: Path,
    log_level: str,
) -> None:
    """Run the API until SIGINT/SIGTERM: [api] processes of them on one port (each exec'd
    by this one, ops/api_processes.py, when more than one)."""
    from api.app import serve_forever
    from api.config import api_config
    from feed.config import feed_config
    from realtime.config import realtime_config
    from social.config import social_config
    from social.explore_config import explore_config
    from social.search_config import search_config

    setup_logging(log_level, service="api")
    overrides = {"host": host, "port": port, "data_dir": str(data_dir) if data_dir else None}
    try:
        document = load_config(ctx.obj["config_path"], serving=True)
        config = api_config(document, **overrides)
        social = social_config(document)
        feed = feed_config(document, redis_url=redis_url)
        realtime = realtime_config(load_config(realtime_file) if realtime_file else document)
        search = search_config(document)
        explore = explore_config(document)
    except ConfigError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    media = _media_config(
        ctx, _media_overrides(media_data, database_url, directory_url, router_url)
    )
    try:
        config.check_processes(redis_url=feed.redis_url, id_shard=media.id_shard)
    except ValueError as e:
        raise CliError(str(e), EXIT_USAGE) from e
    if process_index is not None and process_index >= config.processes:
        raise CliError(f"--process-index must be below api.processes ({config.processes})")
    creds = _credentials("api", media, credentials_file, secret_file, root)
    if config.processes > 1 and process_index is None:
        from ops.api_processes import serve_processes

        try:
            status = run(serve_processes(config, sys.argv[1:]))
        except OSError as e:  # the port taken by another program, the data dir unwritable
            raise CliError(f"cannot start the API processes: {e}") from e
        sys.exit(status)
    if process_index is not None:
        from ops.api_processes import die_with_starter

        die_with_starter()
    run(
        serve_forever(
            config,
            media,
            credentials=creds,
            social=social,
            feed=feed,
            realtime=realtime,
            search=search,
            explore=explore,
            process_index=process_index or 0,
        )
    )


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
    setup_logging(log_level, service="worker")
    media = _media_config(
        ctx, _media_overrides(media_data, database_url, directory_url, router_url)
    )
    creds = _credentials("worker", media, credentials_file, secret_file, root)
    run(_serve_worker(media, creds, name=name, host=host, port=port))


async def _serve_worker(
    media: MediaConfig, credentials: Credentials, *, name: str, host: str, port: int
) -> None:
    from transformer.metrics import WorkerCollector
    from transformer.worker import run_worker

    started = time.time()
    collector = WorkerCollector(name)

    def hold(worker: Any) -> None:
        collector.worker = worker

    with stop_event() as stop:
        async with _health_endpoint(
            host, port, name=name, started=started, credentials=credentials, collector=collector
        ):
            print(f"worker {name} running", flush=True)
            await run_worker(media, credentials=credentials, name=name, stop=stop, started=hold)


@contextlib.asynccontextmanager
async def _health_endpoint(
    host: str,
    port: int,
    *,
    name: str,
    started: float,
    credentials: Credentials,
    collector: Any,
) -> AsyncIterator[None]:
    """GET /healthz on host:port (for `pinhole up` / `status`) and GET /metrics (metrics
    or admin credential); nothing when port is 0."""
    if not port:
        yield
        return
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    from common.aiohttp_observe import observe_middleware
    from common.credentials import Purpose
    from common.json_logs import AccessLog
    from common.request_metrics import RequestMetrics, RequestObserver

    requests = RequestMetrics("pinhole_worker")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    registry.register(requests)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "name": name, "uptime_s": time.time() - started})

    async def metrics(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        if not credentials.allows(auth, Purpose.METRICS, Purpose.ADMIN):
            return web.json_response(
                {"error": {"code": "unauthorized", "message": "a metrics credential is required"}},
                status=401,
            )
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    access_log = AccessLog("worker")
    app = web.Application(middlewares=[observe_middleware(RequestObserver(requests, access_log))])
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()
        access_log.close()
