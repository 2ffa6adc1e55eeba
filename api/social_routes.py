"""Accounts, passwords, sessions, profiles and the follow graph (docs/api/social.md)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from api import auth, client_address, params
from api.context import CONTEXT, RATE, ApiContext
from api.errors import NoSuchResource
from api.media_docs import iso
from api.realtime_routes import broker_of, revoke_signed_out
from api.social_docs import avatars, post_documents, user_document
from realtime import events
from social import accounts, graph, posts, search_index, sessions, signin
from social import avatars as profile_pictures
from social.errors import Invalid
from social.schema import users
from transformer import rekey

routes = web.RouteTableDef()


def _client(request: web.Request) -> str:
    return client_address.of_request(request, request.app[CONTEXT].config.trusted_proxies)


@routes.post("/api/v1/accounts")
async def sign_up(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await params.json_body(request)
    await ctx.rate(request, "account", _client(request))
    user = await accounts.create(
        ctx.db,
        ctx.ids,
        ctx.social,
        username=body.get("username"),
        password=body.get("password"),
        email=body.get("email"),
    )
    return web.json_response(
        user_document(user, me=True), status=201, headers={"Location": "/api/v1/accounts/me"}
    )


@routes.post("/api/v1/sessions")
async def sign_in(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await params.json_body(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise Invalid("username and password are required strings")
    address = _client(request)
    user, request[RATE] = await signin.sign_in(
        ctx.db, ctx.counters, ctx.social, username=username, password=password, address=address
    )
    token = await sessions.open_session(
        ctx.db,
        user.user_id,
        per_user_max=ctx.social.sessions_per_user_max,
        user_agent=request.headers.get("User-Agent", ""),
        address=address,
    )
    return web.json_response({"token": token, "user_id": str(user.user_id)}, status=201)


@routes.get("/api/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    found = await sessions.live_sessions(ctx.db, viewer, ctx.social, token=auth.bearer(request))
    return web.json_response(
        {
            "sessions": [
                {
                    "session_id": s.public_id,
                    "created_at": iso(s.created_unix_s),
                    "last_used_at": iso(s.last_used_unix_s),
                    "user_agent": s.user_agent,
                    "address": s.address,
                    "current": s.current,
                }
                for s in found
            ]
        }
    )


@routes.delete("/api/v1/sessions")
async def sign_out_everywhere(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    await sessions.sign_out_everywhere(ctx.db, viewer)
    await revoke_signed_out(request)
    return web.Response(status=204)


@routes.delete("/api/v1/sessions/current")
async def sign_out(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.user_id(request)
    await sessions.revoke(ctx.db, auth.bearer(request))
    await revoke_signed_out(request)
    return web.Response(status=204)


@routes.delete("/api/v1/sessions/{session_id}")
async def revoke_session(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    session_id = request.match_info["session_id"]
    if not sessions.is_public_id(session_id) or not await sessions.revoke_by_id(
        ctx.db, viewer, session_id, ctx.social
    ):
        raise NoSuchResource("no such session")
    await revoke_signed_out(request)
    return web.Response(status=204)


@routes.post("/api/v1/accounts/me/password")
async def change_password(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    revoked, request[RATE] = await signin.change_password(
        ctx.db,
        ctx.counters,
        ctx.social,
        user_id=viewer,
        token=auth.bearer(request),
        body=await params.json_body(request),
        address=_client(request),
    )
    await revoke_signed_out(request)
    return web.json_response({"sessions_revoked": revoked})


async def _me(ctx: ApiContext, user_id: int) -> dict[str, Any]:
    async with ctx.db.snapshot() as conn:
        user = await accounts.require(conn, user_id)
    return user_document(user, avatar=(await avatars(ctx, [user])).get(user_id), me=True)


@routes.get("/api/v1/accounts/me")
async def get_me(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response(await _me(ctx, await ctx.user_id(request)))


@routes.patch("/api/v1/accounts/me")
async def patch_me(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    changes = accounts.profile_changes(body, ctx.social)
    async with ctx.db.transaction(lock=accounts.LOCK) as conn:
        if "avatar_media_id" in body:
            changes["avatar_media_id"] = await profile_pictures.set_avatar(
                conn, viewer, body["avatar_media_id"]
            )
        accepted: list[int] = []
        if changes.get("is_private") is False:
            accepted = await graph.approve_all_requests(conn, ctx.ids, viewer)
        elif (
            changes.get("is_private") is True
            and not (await accounts.require(conn, viewer)).is_private
        ):
            # The public URLs handed out so far must stop working: re-key the posts' media
            # (their profile picture stays public). Same transaction as the switch.
            await rekey.request(conn, await posts.media_of_author(conn, viewer), now=time.time())
        if changes:
            changes["updated_unix_s"] = time.time()
            await conn.execute(users.update().where(users.c.user_id == viewer).values(**changes))
            if "full_name" in changes:
                await search_index.account_changed(conn, viewer)
    for follower in accepted:
        await ctx.feed.followed(follower, viewer)
    return web.json_response(await _me(ctx, viewer))


@routes.get("/api/v1/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    user_id = params.path_id(request, "user_id", "user")
    async with ctx.db.snapshot() as conn:
        user = await accounts.require(conn, user_id)
        rel = await graph.relationship(conn, viewer, user_id)
    if rel.blocked_by or rel.blocking:
        raise NoSuchResource("no such user")
    doc = user_document(user, avatar=(await avatars(ctx, [user])).get(user_id))
    doc["relationship"] = {
        "following": rel.following,
        "followed_by": rel.followed_by,
        "requested": rel.requested,
    }
    return web.json_response(doc)


@routes.get("/api/v1/users/{user_id}/posts")
async def user_posts(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    user_id = params.path_id(request, "user_id", "user")
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    before = params.id_cursor(request)
    async with ctx.db.snapshot() as conn:
        await graph.require_visible(conn, viewer, user_id)
        found = await posts.by_author(
            conn, user_id, before=before, limit=size + 1, include_processing=viewer == user_id
        )
    shown = found[:size]
    docs = await post_documents(ctx, viewer, shown)
    more = len(found) > size
    return web.json_response(
        params.page_document(docs, "posts", cursor=str(shown[-1]) if more else None)
    )


async def _follow_list(request: web.Request, direction: str) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    user_id = params.path_id(request, "user_id", "user")
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    async with ctx.db.snapshot() as conn:
        await graph.require_visible(conn, viewer, user_id)
    found = await graph.follow_list(
        ctx.db, user_id, direction=direction, before=params.id_cursor(request), limit=size + 1
    )
    shown = found[:size]
    async with ctx.db.snapshot() as conn:
        users = await accounts.get_many(conn, shown)
        hidden = await graph.blocked_between(conn, viewer, shown)
    listed = [users[u] for u in shown if u in users and u not in hidden]
    pics = await avatars(ctx, listed)
    docs = [user_document(u, avatar=pics.get(u.user_id)) for u in listed]
    more = len(found) > size
    return web.json_response(
        params.page_document(docs, "users", cursor=str(shown[-1]) if more else None)
    )


@routes.get("/api/v1/users/{user_id}/followers")
async def followers(request: web.Request) -> web.Response:
    return await _follow_list(request, "followers")


@routes.get("/api/v1/users/{user_id}/following")
async def following(request: web.Request) -> web.Response:
    return await _follow_list(request, "following")


@routes.post("/api/v1/follows")
async def follow(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    followee = posts.parse_id(body.get("followee_id"), "followee_id")
    await ctx.rate(request, "follow", viewer)
    state = await graph.follow(ctx.db, ctx.ids, viewer, followee)
    events.publish_committed(broker_of(request.app))  # before the backfill below
    if state == "following":
        await ctx.feed.followed(viewer, followee)
    return web.json_response({"followee_id": str(followee), "state": state}, status=201)


@routes.delete("/api/v1/follows/{user_id}")
async def unfollow(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    followee = params.path_id(request, "user_id", "user")
    await graph.unfollow(ctx.db, viewer, followee)
    await ctx.feed.unfollowed(viewer, followee)
    return web.Response(status=204)


@routes.get("/api/v1/follow_requests")
async def follow_requests(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    size = params.limit(
        request, default=ctx.social.page_size_default, maximum=ctx.social.page_size_max
    )
    found = await graph.pending_requests(
        ctx.db, viewer, before=params.id_cursor(request), limit=size + 1
    )
    shown = found[:size]
    async with ctx.db.snapshot() as conn:
        users = await accounts.get_many(conn, [r for _, r in shown])
    docs = [{"request_id": str(q), "user": user_document(users[r])} for q, r in shown if r in users]
    more = len(found) > size
    return web.json_response(
        params.page_document(docs, "requests", cursor=str(shown[-1][0]) if more else None)
    )


async def _answer(request: web.Request, *, approve: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    requester = params.path_id(request, "user_id", "follow request")
    await graph.answer_request(ctx.db, ctx.ids, viewer, requester, approve=approve)
    if approve:
        await ctx.feed.followed(requester, viewer)
    return web.Response(status=204)


@routes.post("/api/v1/follow_requests/{user_id}/approve")
async def approve(request: web.Request) -> web.Response:
    return await _answer(request, approve=True)


@routes.post("/api/v1/follow_requests/{user_id}/deny")
async def deny(request: web.Request) -> web.Response:
    return await _answer(request, approve=False)


@routes.post("/api/v1/blocks")
async def block(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    body = await params.json_body(request)
    blocked = posts.parse_id(body.get("user_id"), "user_id")
    await graph.block(ctx.db, viewer, blocked)
    await ctx.feed.unfollowed(viewer, blocked)
    await ctx.feed.unfollowed(blocked, viewer)
    return web.json_response({"user_id": str(blocked), "blocked": True}, status=201)


@routes.delete("/api/v1/blocks/{user_id}")
async def unblock(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await ctx.user_id(request)
    await graph.unblock(ctx.db, viewer, params.path_id(request, "user_id", "user"))
    return web.Response(status=204)
