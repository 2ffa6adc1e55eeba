"""The Mastodon client API (docs/api/mastodon.md): instance, accounts, media, statuses,
timelines, search and notifications, over the same social, feed and media code as the
Instagram-shaped /api/v1 (api/social_routes.py, api/post_routes.py, api/media_routes.py).

`install(app)` registers it: its routes, the OAuth routes (api/mastodon_oauth.py), the
lists (api/mastodon_lists.py), the conversations (api/mastodon_conversations.py), the
migrations of its tables, and a middleware that answers errors as Mastodon does and routes
the four requests whose method and path both APIs use (see `_mastodon_shaped`)."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from typing import Any, Final

from aiohttp import web

from api import (
    client_address,
    mastodon_conversations,
    mastodon_docs,
    mastodon_lists,
    mastodon_oauth,
    params,
)
from api.context import CONTEXT, RATE, ApiContext
from api.errors import NoSuchResource, NotAuthenticated
from api.mastodon_oauth import Handler, base_url, inputs, user_of
from api.mastodon_paging import (
    PAGE_SIZE_MAX,
    Unprocessable,
    id_param,
    limit_of,
    paged,
    paged_json,
    relationship_response,
    visible_posts,
    window,
)
from api.media_routes import owner_document, receive_upload
from api.post_routes import remove_post
from api.realtime_routes import broker_of
from api.search_routes import SEARCH
from common import ids
from common.db import migrate
from feed import jobs as feed_jobs
from feed.cursor import Cursor
from feed.service import Hydrate
from realtime import events
from social import (
    accounts,
    client_state,
    graph,
    interactions,
    notify,
    oauth,
    oauth_schema,
    post_batch,
    posts,
    ratelimit,
)
from social.errors import AuthFailed, Forbidden, Invalid, NotVisible

routes = web.RouteTableDef()

RELATIONSHIP_IDS_MAX: Final = 40
SEARCH_QUERY_CHARS_MAX: Final = 200
SEARCH_OFFSET_MAX: Final = 200
MEDIA_FIELDS: Final = ("description", "focus")
# A 1x1 grey PNG: Mastodon's "missing" avatar for accounts without a picture.
MISSING_PNG: Final = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg=="
)


def _host(request: web.Request) -> str:
    return request.url.raw_host or request.host


def _path_id(request: web.Request, name: str, what: str) -> int:
    return params.path_id(request, name, what)


# -- instance ------------------------------------------------------------------------------


@routes.get("/api/v1/instance")
@routes.get("/api/v1/instance/")  # as Mastodon.py asks for it
async def instance_v1(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response(mastodon_docs.instance_v1(ctx, base_url(request), _host(request)))


@routes.get("/api/v2/instance")
@routes.get("/api/v2/instance/")
async def instance_v2(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.json_response(mastodon_docs.instance_v2(ctx, base_url(request), _host(request)))


@routes.get(mastodon_docs.MISSING_AVATAR_PATH)
async def missing_avatar(request: web.Request) -> web.Response:
    return web.Response(
        body=MISSING_PNG,
        content_type="image/png",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


# -- accounts ------------------------------------------------------------------------------


async def register(request: web.Request) -> web.Response:
    """POST /api/v1/accounts, Mastodon's registration: an app token (client_credentials)
    signs up a user and gets that user's token."""
    ctx = request.app[CONTEXT]
    grant = await mastodon_oauth.oauth_grant(request)
    assert grant is not None, "routed here for its OAuth token"
    if not oauth.allows(grant.scopes, "write:accounts"):
        raise oauth.outside_scopes()
    body = await inputs(request)
    if str(body.get("agreement", "")).lower() not in ("true", "1", "on"):
        raise Unprocessable("agreement must be accepted")
    await ctx.rate(
        request, "account", client_address.of_request(request, ctx.config.trusted_proxies)
    )
    user = await accounts.create(
        ctx.db,
        ctx.ids,
        ctx.social,
        username=body.get("username"),
        password=body.get("password"),
        email=body.get("email") or None,
    )
    app = await oauth.app_by_id(ctx.db, grant.app_id)
    if app is None:
        raise NotAuthenticated("the token's app is gone")
    issued = await oauth.issue(
        ctx.db,
        ctx.social,
        app,
        user.user_id,
        grant.scopes,
        user_agent=request.headers.get("User-Agent", ""),
        address=client_address.of_request(request, ctx.config.trusted_proxies),
    )
    return web.json_response(mastodon_oauth.token_document(issued))


@routes.get("/api/v1/accounts/verify_credentials")
async def verify_credentials(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:accounts")
    async with ctx.db.snapshot() as conn:
        user = await accounts.require(conn, viewer)
    doc = (await mastodon_docs.accounts_of(ctx, [user], base_url(request)))[0]
    pending = len(await graph.pending_requests(ctx.db, viewer, before=None, limit=PAGE_SIZE_MAX))
    doc["source"] = {
        "privacy": "private" if user.is_private else "public",
        "sensitive": False,
        "language": None,
        "note": user.bio,
        "fields": [],
        "follow_requests_count": pending,
    }
    return web.json_response(doc)


@routes.get("/api/v1/accounts/relationships")
async def relationships(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:follows")
    body = await inputs(request)
    wanted = body.get("id", [])
    if isinstance(wanted, str):
        wanted = [wanted]
    if not isinstance(wanted, list) or len(wanted) > RELATIONSHIP_IDS_MAX:
        raise Invalid(f"id[] takes at most {RELATIONSHIP_IDS_MAX} ids")
    out = []
    async with ctx.db.snapshot() as conn:
        for given in wanted:
            try:
                other = ids.parse(str(given))
            except ValueError:
                continue
            if await accounts.get(conn, other) is None:
                continue
            rel = await graph.relationship(conn, viewer, other)
            if rel.blocked_by:
                continue  # who blocks you is hidden, as an absent user (docs/api/social.md)
            back = await graph.relationship(conn, other, viewer)
            out.append(mastodon_docs.relationship(other, rel, requested_by=back.requested))
    return web.json_response(out)


@routes.get("/api/v1/accounts/lookup")
async def lookup(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:accounts")
    acct = (await inputs(request)).get("acct")
    if not isinstance(acct, str) or not acct:
        raise Invalid("acct is required")
    name, _, domain = acct.lstrip("@").partition("@")
    async with ctx.db.snapshot() as conn:
        user = (
            None if domain not in ("", _host(request)) else await accounts.by_username(conn, name)
        )
        if user is None or await graph.blocked_between(conn, viewer, [user.user_id]):
            raise NoSuchResource("Record not found")
    return web.json_response((await mastodon_docs.accounts_of(ctx, [user], base_url(request)))[0])


async def _visible_account(ctx: ApiContext, viewer: int, user_id: int) -> accounts.User:
    async with ctx.db.snapshot() as conn:
        user = await accounts.get(conn, user_id)
        if user is None or await graph.blocked_between(conn, viewer, [user_id]):
            raise NoSuchResource("Record not found")
    return user


@routes.get("/api/v1/accounts/{account_id}")
async def get_account(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:accounts")
    user = await _visible_account(ctx, viewer, _path_id(request, "account_id", "account"))
    return web.json_response((await mastodon_docs.accounts_of(ctx, [user], base_url(request)))[0])


@routes.get("/api/v1/accounts/{account_id}/statuses")
async def account_statuses(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:statuses")
    owner = _path_id(request, "account_id", "account")
    body = await inputs(request)
    limit = limit_of(body)
    try:
        async with ctx.db.snapshot() as conn:
            await graph.require_visible(conn, viewer, owner)
    except NotVisible:
        raise NoSuchResource("Record not found") from None
    except Forbidden:
        return paged(request, [], [], limit)  # a private account's statuses: none shown
    if str(body.get("pinned", "")).lower() in ("true", "1"):
        return paged(request, [], [], limit)  # pinhole has no pinned posts

    async def fetch(before: int | None, n: int) -> list[int]:
        async with ctx.db.snapshot() as conn:
            return await posts.by_author(
                conn, owner, before=before, limit=n, include_processing=viewer == owner
            )

    page = await window(fetch, body, limit)
    docs = await mastodon_docs.statuses(ctx, viewer, page, base_url(request))
    return paged(request, docs, page, limit)


@routes.post("/api/v1/accounts/{account_id}/follow")
async def follow(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:follows")
    other = _path_id(request, "account_id", "account")
    await ctx.rate(request, "follow", viewer)
    try:
        state = await graph.follow(ctx.db, ctx.ids, viewer, other)
    except NotVisible:
        raise NoSuchResource("Record not found") from None
    if state == "following":
        await ctx.feed.followed(viewer, other)
    return await relationship_response(ctx, viewer, other)


@routes.post("/api/v1/accounts/{account_id}/unfollow")
async def unfollow(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:follows")
    other = _path_id(request, "account_id", "account")
    await _visible_account(ctx, viewer, other)
    await graph.unfollow(ctx.db, viewer, other)
    await ctx.feed.unfollowed(viewer, other)
    return await relationship_response(ctx, viewer, other)


@routes.post("/api/v1/accounts/{account_id}/block")
async def block(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:blocks")
    other = _path_id(request, "account_id", "account")
    await graph.block(ctx.db, viewer, other)
    await ctx.feed.unfollowed(viewer, other)
    await ctx.feed.unfollowed(other, viewer)
    return await relationship_response(ctx, viewer, other)


@routes.post("/api/v1/accounts/{account_id}/unblock")
async def unblock(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:blocks")
    other = _path_id(request, "account_id", "account")
    await graph.unblock(ctx.db, viewer, other)
    return await relationship_response(ctx, viewer, other)


# -- media ---------------------------------------------------------------------------------


async def _attachment(ctx: ApiContext, viewer: int, media_id: int) -> dict[str, Any]:
    doc = await owner_document(ctx, media_id, viewer)
    async with ctx.db.snapshot() as conn:
        described = await client_state.descriptions(conn, [media_id])
    return mastodon_docs.media_attachment(doc, description=described.get(media_id))


def _description(fields: dict[str, Any]) -> str | None:
    text = fields.get("description")
    if text is None or text == "":
        return None
    if not isinstance(text, str) or len(text) > client_state.DESCRIPTION_CHARS_MAX:
        raise Unprocessable(
            f"description must be at most {client_state.DESCRIPTION_CHARS_MAX} characters"
        )
    return text


async def _upload(request: web.Request, *, v2: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:media")
    row, fields = await receive_upload(request, viewer, fields_allowed=MEDIA_FIELDS)
    description = _description(fields)
    if description is not None:
        await client_state.describe(ctx.db, row.media_id, description)
    doc = await _attachment(ctx, viewer, row.media_id)
    # v2: 202 while the ladder is made (url null), as Mastodon does for large media.
    return web.json_response(doc, status=202 if v2 and doc["url"] is None else 200)


@routes.post("/api/v2/media")
async def upload_v2(request: web.Request) -> web.Response:
    return await _upload(request, v2=True)


@routes.post("/api/v1/media")
async def upload_v1(request: web.Request) -> web.Response:
    return await _upload(request, v2=False)


async def get_media(request: web.Request) -> web.Response:
    """GET /api/v1/media/{id} with an OAuth token: 206 while processing, as Mastodon."""
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:media")
    media_id = _path_id(request, "media_id", "media")
    doc = await _attachment(ctx, viewer, media_id)
    return web.json_response(doc, status=206 if doc["url"] is None else 200)


@routes.put("/api/v1/media/{media_id}")
async def update_media(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:media")
    media_id = _path_id(request, "media_id", "media")
    await owner_document(ctx, media_id, viewer)  # 404 unless the viewer's own
    body = await inputs(request)
    if "description" in body:
        await client_state.describe(ctx.db, media_id, _description(body))
    return web.json_response(await _attachment(ctx, viewer, media_id))


# -- statuses ------------------------------------------------------------------------------


def _media_ids(body: dict[str, Any]) -> list[str]:
    given = body.get("media_ids", [])
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not all(isinstance(m, str) for m in given):
        raise Invalid("media_ids must be a list of id strings")
    return given


@routes.post("/api/v1/statuses")
async def create_status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:statuses")
    body = await inputs(request)
    if body.get("in_reply_to_id"):
        raise Unprocessable("replies are comments on pinhole (POST /api/v1/posts/{id}/comments)")
    if body.get("poll"):
        raise Unprocessable("pinhole has no polls")
    if body.get("scheduled_at"):
        raise Unprocessable("pinhole does not schedule posts")
    media_ids = _media_ids(body)
    if not media_ids:
        raise Unprocessable("a pinhole post needs at least one photo (media_ids[])")
    caption = body.get("status") or ""
    if not isinstance(caption, str):
        raise Invalid("status must be text")
    async with ctx.db.snapshot() as conn:
        me = await accounts.require(conn, viewer)
        parsed = [ids.parse(m) for m in media_ids if m.isdigit() and len(m) <= 20]
        described = await client_state.descriptions(conn, parsed)
    visibility = body.get("visibility")
    own = "private" if me.is_private else "public"
    if visibility not in (None, "", own):
        raise Unprocessable(f"visibility is per account on pinhole: this account's posts are {own}")
    key = request.headers.get("Idempotency-Key")
    if key is not None:
        params.text(key, "Idempotency-Key")
        if not 0 < len(key) <= client_state.IDEMPOTENCY_KEY_CHARS_MAX:
            raise Invalid(
                f"Idempotency-Key must be 1 to {client_state.IDEMPOTENCY_KEY_CHARS_MAX} characters"
            )
    alt = [described.get(int(m)) if m.isdigit() and len(m) <= 20 else None for m in media_ids]
    post_body = {"media_ids": media_ids, "caption": caption, "alt_text": alt}
    async with ctx.db.transaction(lock=posts.LOCK) as conn:
        post_id = None if key is None else await client_state.replayed(conn, viewer, key)
        created = post_id is None
        if post_id is None:
            request[RATE] = await ratelimit.take_post(conn, ctx.social, viewer)
            post = await posts.create(conn, ctx.ids, ctx.social, viewer, post_body)
            post_id = post.post_id
            await feed_jobs.enqueue(
                conn,
                ctx.ids,
                "publish",
                post_id=post_id,
                author_id=viewer,
                attempts_max=ctx.feed.config.attempts_max,
            )
            if key is not None:
                await client_state.remember(conn, viewer, key, post_id)
    if created:
        await ctx.feed.posted(post_id, viewer)
    docs = await mastodon_docs.statuses(ctx, viewer, [post_id], base_url(request))
    if not docs:
        raise NoSuchResource("Record not found")  # deleted since the key was first used
    return web.json_response(docs[0])


async def _status(request: web.Request, viewer: int, post_id: int) -> web.Response:
    ctx = request.app[CONTEXT]
    docs = await mastodon_docs.statuses(ctx, viewer, [post_id], base_url(request))
    if not docs:
        raise NoSuchResource("Record not found")
    return web.json_response(docs[0])


async def _visible_post(ctx: ApiContext, viewer: int, post_id: int) -> None:
    async with ctx.db.snapshot() as conn:
        await posts.visible(conn, viewer, post_id)


@routes.get("/api/v1/statuses/{status_id}")
async def get_status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:statuses")
    post_id = _path_id(request, "status_id", "status")
    await _visible_post(ctx, viewer, post_id)
    return await _status(request, viewer, post_id)


@routes.get("/api/v1/statuses/{status_id}/context")
async def status_context(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:statuses")
    await _visible_post(ctx, viewer, _path_id(request, "status_id", "status"))
    return web.json_response({"ancestors": [], "descendants": []})


@routes.delete("/api/v1/statuses/{status_id}")
async def delete_status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:statuses")
    post_id = _path_id(request, "status_id", "status")
    docs = await mastodon_docs.statuses(
        ctx, viewer, await visible_posts(ctx, viewer, [post_id]), base_url(request)
    )
    await remove_post(ctx, viewer, post_id)
    if not docs:
        raise NoSuchResource("Record not found")
    return web.json_response(docs[0])


async def _favourite(request: web.Request, *, on: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:favourites")
    post_id = _path_id(request, "status_id", "status")
    if on:
        await ctx.rate(request, "like", viewer)
        await interactions.like(ctx.db, ctx.ids, viewer, post_id)
        events.publish_committed(broker_of(request.app))  # at commit, before the reads
    else:
        await _visible_post(ctx, viewer, post_id)
        await interactions.unlike(ctx.db, viewer, post_id)
    return await _status(request, viewer, post_id)


@routes.post("/api/v1/statuses/{status_id}/favourite")
async def favourite(request: web.Request) -> web.Response:
    return await _favourite(request, on=True)


@routes.post("/api/v1/statuses/{status_id}/unfavourite")
async def unfavourite(request: web.Request) -> web.Response:
    return await _favourite(request, on=False)


async def _bookmark(request: web.Request, *, on: bool) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "write:bookmarks")
    post_id = _path_id(request, "status_id", "status")
    await _visible_post(ctx, viewer, post_id)
    await interactions.save(ctx.db, viewer, post_id, saved=on)
    return await _status(request, viewer, post_id)


@routes.post("/api/v1/statuses/{status_id}/bookmark")
async def bookmark(request: web.Request) -> web.Response:
    return await _bookmark(request, on=True)


@routes.post("/api/v1/statuses/{status_id}/unbookmark")
async def unbookmark(request: web.Request) -> web.Response:
    return await _bookmark(request, on=False)


# -- timelines, search, notifications --------------------------------------------------------


@routes.get("/api/v1/timelines/home")
async def home(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:statuses")
    body = await inputs(request)
    limit = limit_of(body)

    # On SQLite a page's posts are read in the feed's last filtering unit.
    hydrate: Hydrate | None = None
    if ctx.db.quick is not None:
        hydrate = lambda c, ids: post_batch.read_quick_described(c, viewer, ids)  # noqa: E731
    hydrated: dict[tuple[int, ...], Any] = {}

    async def fetch(before: int | None, n: int) -> list[int]:
        page = await ctx.feed.page(viewer, Cursor(before=before), n, hydrate=hydrate)
        ids = [e[0] for e in page.entries]
        if page.hydrated is not None:
            hydrated[tuple(ids)] = page.hydrated
        return ids

    page = await window(fetch, body, limit)
    docs = await mastodon_docs.statuses_json(
        ctx, viewer, page, base_url(request), read=hydrated.get(tuple(page))
    )
    return paged_json(request, docs, page, limit)


@routes.get("/api/v2/search")
async def search(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:search")
    body = await inputs(request)
    q = body.get("q")
    if not isinstance(q, str) or not q.strip():
        raise Invalid("q is required")
    if len(q) > SEARCH_QUERY_CHARS_MAX:
        raise Invalid(f"q must be at most {SEARCH_QUERY_CHARS_MAX} characters")
    kind = body.get("type") or None
    if kind not in (None, "accounts", "statuses", "hashtags"):
        raise Invalid("type must be accounts, statuses or hashtags")
    limit = limit_of(body)
    offset = params.decimal(str(body.get("offset") or 0), "offset", maximum=SEARCH_OFFSET_MAX)
    q = q.strip()
    base = base_url(request)
    found: dict[str, list[Any]] = {"accounts": [], "statuses": [], "hashtags": []}
    if kind in (None, "accounts") and not q.startswith("#"):
        name, _, domain = q.lstrip("@").partition("@")
        if domain in ("", _host(request)) and name.strip():
            # The pinhole search service (social/search.py): ranked, blocks filtered.
            hits = await request.app[SEARCH].find(viewer, name, "accounts", limit=offset + limit)
            async with ctx.db.snapshot() as conn:
                users = await accounts.get_many(conn, [h.entity_id for h in hits])
            shown = [users[h.entity_id] for h in hits if h.entity_id in users][offset:]
            found["accounts"] = await mastodon_docs.accounts_of(ctx, shown, base)
    tag = q.lstrip("#").lower()
    if kind in (None, "statuses", "hashtags") and re.fullmatch(r"\w{1,100}", tag):
        async with ctx.db.snapshot() as conn:
            tagged = await posts.by_hashtag(conn, tag, before=None, limit=offset + limit)
        if kind in (None, "hashtags") and tagged and offset == 0:
            found["hashtags"] = [
                {"name": tag, "url": f"{base}/tags/{tag}", "history": [], "following": False}
            ]
        if kind == "statuses" or (kind is None and q.startswith("#")):
            page = (await visible_posts(ctx, viewer, tagged))[offset:]
            found["statuses"] = await mastodon_docs.statuses(ctx, viewer, page, base)
    return web.json_response(found)


async def notifications(request: web.Request) -> web.Response:
    """GET /api/v1/notifications with an OAuth token: one by one, Mastodon's types."""
    ctx = request.app[CONTEXT]
    viewer = await user_of(request, "read:notifications")
    body = await inputs(request)
    limit = limit_of(body)
    types = body.get("types") or list(mastodon_docs.NOTIFICATION_TYPES.values())
    excluded = body.get("exclude_types") or []
    if not isinstance(types, list) or not isinstance(excluded, list):
        raise Invalid("types[] and exclude_types[] are lists")
    kinds = mastodon_docs.kinds_of([t for t in types if t not in excluded])
    lower = id_param(body, "min_id") or id_param(body, "since_id")
    rows = await notify.page(
        ctx.db, viewer, before=id_param(body, "max_id"), after=lower, limit=limit, kinds=kinds
    )
    base = base_url(request)
    async with ctx.db.snapshot() as conn:
        actors = await accounts.get_many(conn, {r.actor_id for r in rows})
    actor_docs = {
        d["id"]: d for d in await mastodon_docs.accounts_of(ctx, list(actors.values()), base)
    }
    post_ids = sorted({r.post_id for r in rows if r.post_id is not None})
    visible = await visible_posts(ctx, viewer, post_ids)
    status_docs = {d["id"]: d for d in await mastodon_docs.statuses(ctx, viewer, visible, base)}
    items = []
    for r in rows:
        actor = actor_docs.get(str(r.actor_id))
        if actor is None:
            continue
        status_doc = None if r.post_id is None else status_docs.get(str(r.post_id))
        if r.post_id is not None and status_doc is None:
            continue  # the post is gone or hidden: so is what it caused
        items.append(
            mastodon_docs.notification(
                r.notification_id, r.kind, r.created_unix_s, actor, status_doc
            )
        )
    return paged(request, items, [r.notification_id for r in rows], limit)


# -- installation ---------------------------------------------------------------------------


async def _mastodon_shaped(request: web.Request) -> Handler | None:
    """The Mastodon handler of a request whose method and path pinhole's own API also
    serves (POST /api/v1/accounts, GET /api/v1/notifications, GET /api/v1/media/{id},
    GET /api/v1/follow_requests),
    when the request is Mastodon's: when its bearer token is an OAuth token (a user's, or
    for the registration the app token Mastodon requires). Without one (no token, or a
    pinhole session) pinhole's own API answers.
    """
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    wanted = {
        ("POST", "/api/v1/accounts"): register,
        ("GET", "/api/v1/notifications"): notifications,
        ("GET", "/api/v1/media/{media_id}"): get_media,
        ("GET", "/api/v1/follow_requests"): mastodon_lists.follow_requests,
    }.get((request.method, path))
    if wanted is None or await mastodon_oauth.oauth_grant(request) is None:
        return None
    return wanted


def _handlers() -> frozenset[Handler]:
    out = set()
    for table in (
        routes,
        mastodon_oauth.routes,
        mastodon_lists.routes,
        mastodon_conversations.routes,
    ):
        for route in table:
            if isinstance(route, web.RouteDef):
                out.add(route.handler)
    return frozenset(out)


_MASTODON_HANDLERS: Final = _handlers()
_COLLISION_PATHS: Final = (
    "/api/v1/accounts",
    "/api/v1/notifications",
    "/api/v1/media/",
    "/api/v1/follow_requests",
)


@web.middleware
async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Mastodon routes answer errors as Mastodon does; shared paths go to the API whose
    request this is."""
    chosen: Handler | None = handler if request.match_info.handler in _MASTODON_HANDLERS else None
    if chosen is None and request.path.startswith(_COLLISION_PATHS):
        try:
            chosen = await _mastodon_shaped(request)
        except AuthFailed as e:  # a revoked OAuth token: its client is a Mastodon one
            return mastodon_oauth.mastodon_error(request, e)
    try:
        if chosen is None:
            return await handler(request)
        response = await chosen(request)
    except Exception as e:
        if chosen is None:
            raise
        response = mastodon_oauth.mastodon_error(request, e)
    return response


async def _migrations(app: web.Application) -> AsyncIterator[None]:
    db = app[CONTEXT].db
    await migrate(db, oauth_schema.COMPONENT, oauth_schema.MIGRATIONS)
    await migrate(db, client_state.COMPONENT, client_state.MIGRATIONS)
    yield


def install(app: web.Application) -> None:
    """Adds the Mastodon client API to the API application (after its resources)."""
    app.add_routes(mastodon_oauth.routes)
    app.add_routes(routes)
    app.add_routes(mastodon_lists.routes)
    app.add_routes(mastodon_conversations.routes)
    app.middlewares.append(middleware)
    app.cleanup_ctx.append(_migrations)
