"""The public API as an aiohttp application (docs/api/, /api/openapi.json).

`make_app(config, media, credentials=..., social=..., feed=...)` builds it; its cleanup context
opens the metadata database (media, social and feed tables, migrated), the blob writer, the
ingest path and the hot store, and starts the tus sweeper and the fan-out runner;
`running_api` serves it for tests and `serve_forever` for `pinhole api serve`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import AsyncIterator

from aiohttp import web

from api import (
    explore_routes,
    feed_routes,
    mastodon_routes,
    media_routes,
    message_routes,
    openapi,
    original_routes,
    post_routes,
    realtime_routes,
    search_routes,
    social_routes,
    story_routes,
    tus,
    username_routes,
)
from api.config import ApiConfig
from api.context import CONTEXT, RATE, ApiContext
from api.errors import error_middleware
from api.media_docs import PublicMediaDocuments
from api.metrics import (
    API_CONFIG,
    FANOUT,
    PROCESS_INDEX,
    REQUESTS,
    metrics,
    process_metrics_app,
)
from api.photo_urls import PhotoUrls
from api.upload_limits import open_shared_staging, open_staging
from api.web_routes import add_web_routes
from common.aiohttp_observe import observe_middleware
from common.credentials import Credentials
from common.db import migrate, open_database
from common.errors import rate_limit_headers
from common.ids import IdGenerator
from common.json_logs import AccessLog
from common.request_metrics import RequestMetrics, RequestObserver
from common.signals import stop_event
from directory.writer import BlobWriter
from feed import schema as feed_schema
from feed.config import FeedConfig
from feed.hotstore import open_hot_store
from feed.runner import FanoutRunner
from feed.service import Feed
from realtime.config import RealtimeConfig
from social import messages_schema, search_schema
from social import schema as social_schema
from social.config import SocialConfig
from social.counters import open_counters
from social.explore_config import ExploreConfig
from social.search_config import SearchConfig
from transformer import schema
from transformer.config import MediaConfig
from transformer.ingest import Ingest

log = logging.getLogger("pinhole.api")


def make_app(
    config: ApiConfig,
    media: MediaConfig,
    *,
    credentials: Credentials,
    social: SocialConfig | None = None,
    feed: FeedConfig | None = None,
    realtime: RealtimeConfig | None = None,
    search: SearchConfig | None = None,
    explore: ExploreConfig | None = None,
    access_log: AccessLog | None = None,
    process_index: int = 0,
) -> web.Application:
    """`process_index`: which of [api] processes this one is (ops/api_processes.py): its id
    shard is [media] id_shard + process_index, and with more than one process it counts
    the staging space in the slots the starter prepared (api.upload_limits)."""
    social = social or SocialConfig()
    feed_config = feed or FeedConfig()
    config.check_staging_fits(max(media.limits.image_bytes_max, media.limits.video_bytes_max))
    config.check_processes(redis_url=feed_config.redis_url, id_shard=media.id_shard)
    if not 0 <= process_index < config.processes:
        raise ValueError(f"process index {process_index} is not within 0..{config.processes - 1}")
    requests = RequestMetrics("pinhole_api")
    app = web.Application(
        middlewares=[
            # Outermost: the request id, and the status the error middleware answered.
            observe_middleware(RequestObserver(requests, access_log)),
            error_middleware,
            realtime_routes.publish_notifications,
        ],
        client_max_size=config.json_body_bytes_max,
    )
    app[REQUESTS] = requests
    app[PROCESS_INDEX] = process_index
    app[API_CONFIG] = config

    async def resources(app: web.Application) -> AsyncIterator[None]:
        if not media.database_url:
            await asyncio.to_thread(media.data_dir.mkdir, parents=True, exist_ok=True)
        db = await open_database(media.database, schema=media.database_schema or None)
        hot = open_hot_store(feed_config.redis_url, prefix=feed_config.redis_prefix)
        counters = open_counters(db, feed_config.redis_url, prefix=feed_config.redis_prefix)
        try:
            if config.processes > 1:
                staging = await asyncio.to_thread(open_shared_staging, config, process_index)
            else:
                staging = await asyncio.to_thread(open_staging, config)
            await migrate(db, schema.COMPONENT, schema.MIGRATIONS)
            await tus.migrate_tables(db)
            await migrate(db, social_schema.COMPONENT, social_schema.MIGRATIONS)
            await migrate(db, feed_schema.COMPONENT, feed_schema.MIGRATIONS)
            await migrate(db, messages_schema.COMPONENT, messages_schema.MIGRATIONS)
            await migrate(db, search_schema.COMPONENT, search_schema.MIGRATIONS)
            async with BlobWriter(media.directory_url, credentials=credentials) as writer:
                # Processes making ids at the same time need distinct shards (common/ids.py).
                id_gen = IdGenerator(media.id_shard + process_index)
                ingest = Ingest(media, db, writer, id_gen)
                photo_urls = PhotoUrls(
                    media.photo_url_base,
                    credentials.url_key,
                    ttl_s=media.signed_url_ttl_s,
                    step_s=media.signed_url_step_s,
                )
                app[CONTEXT] = ApiContext(
                    config,
                    media,
                    db,
                    writer,
                    ingest,
                    social,
                    feed_config,
                    hot,
                    Feed(db, hot, feed_config),
                    id_gen,
                    counters,
                    credentials,
                    photo_urls,
                    staging,
                    PublicMediaDocuments(
                        photo_urls, documents_max=config.media_documents_cached_max
                    ),
                )
                yield
        finally:
            await counters.close()
            await hot.close()
            await db.close()

    app.cleanup_ctx.append(resources)
    app.cleanup_ctx.append(tus.sweeper)
    app.cleanup_ctx.append(fanout)
    app.on_response_prepare.append(_rate_headers)
    app.add_routes(media_routes.routes)
    app.add_routes(original_routes.routes)
    app.add_routes(tus.routes)
    app.add_routes(social_routes.routes)
    app.add_routes(post_routes.routes)
    app.add_routes(feed_routes.routes)
    app.add_routes(username_routes.routes)
    mastodon_routes.install(app)  # the Mastodon client API (docs/api/mastodon.md)
    app.add_routes(message_routes.routes)
    story_routes.install(app)  # stories, close friends, highlights (docs/api/stories.md)
    realtime_routes.setup(app, realtime)
    search_routes.setup(app, search)  # search, hashtag and place pages (docs/api/search.md)
    explore_routes.setup(app, explore)  # Explore and its refresh job (docs/api/explore.md)
    app.router.add_get("/api/openapi.json", openapi.serve)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_web_routes(
        app,
        photo_url_base=media.photo_url_base,
        websocket_url=realtime.websocket_url if realtime and realtime.enabled else "",
    )
    return app


async def fanout(app: web.Application) -> AsyncIterator[None]:
    """Runs the feed's fan-out jobs in this process while it serves."""
    runner = app[FANOUT] = FanoutRunner(app[CONTEXT].feed)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def _rate_headers(request: web.Request, response: web.StreamResponse) -> None:
    rate = request.get(RATE)
    if rate is not None and response.status < 400:
        response.headers.update(rate_limit_headers(rate.limit, rate.remaining, rate.reset_s))


async def healthz(request: web.Request) -> web.Response:
    """Liveness for `pinhole up` / `status`: the process serves and its database answers.
    Says which of the API processes answered (`process`, `pid`): any of them may."""
    ctx = request.app[CONTEXT]
    async with ctx.db.snapshot() as conn:
        await conn.exec_driver_sql("SELECT 1")
    return web.json_response(
        {
            "ok": True,
            "process": request.app[PROCESS_INDEX],
            "pid": os.getpid(),
            "uploads_inflight": ctx.uploads_inflight,
            "staging_bytes": ctx.staging.statistics().used_bytes,
        }
    )


@contextlib.asynccontextmanager
async def running_api(
    config: ApiConfig,
    media: MediaConfig,
    *,
    credentials: Credentials,
    social: SocialConfig | None = None,
    feed: FeedConfig | None = None,
    realtime: RealtimeConfig | None = None,
    search: SearchConfig | None = None,
    explore: ExploreConfig | None = None,
    access_log: AccessLog | None = None,
    process_index: int = 0,
) -> AsyncIterator[tuple[web.Application, int]]:
    """Serves the API on config.host:config.port (0: a free port); yields (app, port).
    `access_log`: where its one line per request goes (none: only the request metrics).
    With [api] processes > 1 the port is bound with SO_REUSEPORT, shared with the others."""
    app = make_app(
        config,
        media,
        credentials=credentials,
        social=social,
        feed=feed,
        realtime=realtime,
        search=search,
        explore=explore,
        access_log=access_log,
        process_index=process_index,
    )
    runner = web.AppRunner(
        app,
        access_log=None,
        max_line_size=config.header_bytes_max,
        max_field_size=config.header_bytes_max,
    )
    await runner.setup()
    inner: web.AppRunner | None = None
    try:
        site = web.TCPSite(runner, config.host, config.port, reuse_port=config.processes > 1)
        await site.start()
        if config.processes > 1:
            # Its own metrics for the process a scrape reaches (api/metrics.py). A socket
            # file left by a process of an earlier set is replaced.
            path = config.metrics_socket(process_index)
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(path.unlink)
            inner = web.AppRunner(process_metrics_app(app), access_log=None)
            await inner.setup()
            await web.UnixSite(inner, str(path)).start()
        yield app, int(runner.addresses[0][1])
    finally:
        if inner is not None:
            await inner.cleanup()
        await runner.cleanup()


async def serve_forever(
    config: ApiConfig,
    media: MediaConfig,
    *,
    credentials: Credentials,
    social: SocialConfig | None = None,
    feed: FeedConfig | None = None,
    ready: asyncio.Event | None = None,
    realtime: RealtimeConfig | None = None,
    search: SearchConfig | None = None,
    explore: ExploreConfig | None = None,
    process_index: int = 0,
) -> None:
    """Serves until SIGINT or SIGTERM."""
    access_log = AccessLog("api")
    with stop_event() as stop, contextlib.closing(access_log):
        async with running_api(
            config,
            media,
            credentials=credentials,
            social=social,
            feed=feed,
            realtime=realtime,
            search=search,
            explore=explore,
            access_log=access_log,
            process_index=process_index,
        ) as (
            _,
            port,
        ):
            # What start-up made (modules, the app, its routes) lives as long as the
            # process: frozen out of the collector's sight, it is not walked again by each
            # full collection (ARCHITECTURE.md, "where the CPU really goes").
            gc.freeze()
            if config.processes > 1:  # ops/api_processes.py waits for every one's line
                print(
                    f"api process {process_index} of {config.processes} listening on "
                    f"http://{config.host}:{port}/api/v1",
                    flush=True,
                )
            else:
                print(f"api listening on http://{config.host}:{port}/api/v1", flush=True)
            if ready is not None:
                ready.set()
            await stop.wait()
            log.info("api stopping")
