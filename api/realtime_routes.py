"""Real-time push in the API (docs/api/realtime.md): the broker client opened with the app,
per-client broker credentials, the typing relay, the sweep of signed-out clients, and the
middleware that publishes a request's notifications once its handler returned (after
commit). With no [realtime] broker every publish is skipped; catch-up has everything."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from api import auth
from api.context import CONTEXT
from realtime import dynsec, events, topics
from realtime.broker import Broker, RealtimeOff, running_broker_client
from realtime.config import RealtimeConfig
from social import graph, realtime_clients, sessions
from social.messages import member_ids

log = logging.getLogger("pinhole.api.realtime")

routes = web.RouteTableDef()


@dataclass
class Realtime:
    config: RealtimeConfig
    broker: Broker | None = None


REALTIME: Final = web.AppKey("realtime", Realtime)


def setup(app: web.Application, config: RealtimeConfig | None) -> None:
    """Registers the routes and the broker client (after the context: it needs the db)."""
    app[REALTIME] = Realtime(config or RealtimeConfig())
    app.cleanup_ctx.append(_broker)
    app.add_routes(routes)


def broker_of(app: web.Application) -> Broker | None:
    return app[REALTIME].broker


async def _broker(app: web.Application) -> AsyncIterator[None]:
    realtime = app[REALTIME]
    async with running_broker_client(realtime.config) as broker:
        realtime.broker = broker
        sweeper = None
        if broker is not None:
            broker.typing_handler = lambda user, thread: relay_typing(app, user, thread)
            sweeper = asyncio.create_task(_sweep(app, broker))
        try:
            yield
        finally:
            realtime.broker = None
            if sweeper is not None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper


async def _sweep(app: web.Application, broker: Broker) -> None:
    while True:
        await asyncio.sleep(app[REALTIME].config.revoke_sweep_s)
        try:
            await sweep_signed_out(app, broker)
        except Exception as e:  # the broker or the database is down: next round
            log.warning("realtime sweep failed: %s", e)


async def revoke_signed_out(request: web.Request) -> None:
    """Called by the sign-out routes after the sessions are revoked: their broker clients go
    now (the periodic sweep retries when the broker is unreachable)."""
    broker = broker_of(request.app)
    if broker is not None:
        with contextlib.suppress(Exception):
            await sweep_signed_out(request.app, broker)


async def sweep_signed_out(app: web.Application, broker: Broker) -> int:
    """Deletes from the broker the clients whose session no longer authenticates."""
    db = app[CONTEXT].db
    names = await realtime_clients.signed_out(db, app[CONTEXT].social)
    for name in names:
        await broker.revoke(name)
        await realtime_clients.forget(db, name)
    return len(names)


async def relay_typing(app: web.Application, user_id: int, thread_id: int) -> None:
    """A client published typing: forward it to the thread's other members when the user is
    a member, minus blocks either way; anything else is dropped."""
    broker = broker_of(app)
    db = app[CONTEXT].db
    async with db.snapshot() as conn:
        try:
            members = await member_ids(conn, thread_id, user_id)
        except Exception:
            return
        blocked = await graph.blocked_between(conn, user_id, members)
    others = tuple(m for m in members if m != user_id and m not in blocked)
    events.thread_event(
        broker, "typing", thread_id=thread_id, actor_id=user_id, recipients=others,
        include_actor=False,
    )  # fmt: skip


@web.middleware
async def publish_notifications(request: web.Request, handler: Handler) -> web.StreamResponse:
    with events.collecting() as pending:
        response = await handler(request)
    if pending:
        events.publish_notifications(broker_of(request.app), pending)
    return response


@routes.post("/api/v1/realtime/credentials")
async def issue_credentials(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    realtime = request.app[REALTIME]
    if realtime.broker is None:
        raise RealtimeOff("this deployment has no real-time broker; poll the API instead")
    broker, config = realtime.broker, realtime.config
    username, password = dynsec.new_username(), dynsec.new_password()
    surplus = await realtime_clients.record(
        ctx.db,
        username=username,
        user_id=viewer,
        token_sha256=sessions.digest(auth.bearer(request)),
        per_user_max=config.credentials_per_user_max,
    )
    for old in surplus:
        await broker.revoke(old)
        await realtime_clients.forget(ctx.db, old)
    try:
        await broker.grant(username, password, viewer)
    except BaseException:
        await realtime_clients.forget(ctx.db, username)
        raise
    return web.json_response(
        {
            "username": username,
            "password": password,
            "client_id": username,
            "host": config.client_host,
            "port": config.client_port,
            "websocket_url": config.websocket_url or None,
            "topics": {
                "subscribe": topics.subscribe_pattern(viewer),
                "inbox": topics.inbox(viewer),
                "notifications": topics.notifications(viewer),
                "threads": f"{topics.user_root(viewer)}/threads/+",
                "typing": f"{topics.PREFIX}/in/{viewer}/typing/{{thread_id}}",
            },
        },
        status=201,
    )
