"""JSON documents of users and posts, hydrated in batches: one read snapshot, one query
per kind (posts, their media and variants, authors, the viewer's likes and saves) for a
whole page. Every id is a string."""

from __future__ import annotations

from typing import Any

from api.context import ApiContext
from api.media_docs import iso, media_document
from social import accounts, interactions, places, posts
from social.accounts import User
from social.places import place_document
from transformer import media_store


def _avatar_url(doc: dict[str, Any] | None) -> str | None:
    if doc is None:
        return None
    urls = doc.get("urls", {})
    return urls.get("150_square") or urls.get("150") or next(iter(urls.values()), None)


def user_document(
    user: User, *, avatar: dict[str, Any] | None = None, me: bool = False
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "user_id": str(user.user_id),
        "username": user.username,
        "full_name": user.full_name,
        "bio": user.bio,
        "profile_pic_url": _avatar_url(avatar),
        "is_private": user.is_private,
        "is_verified": user.is_verified,
        "follower_count": user.follower_count,
        "following_count": user.following_count,
        "post_count": user.post_count,
        "created_at": iso(user.created_unix_s),
    }
    if me:
        doc["email"] = user.email
        doc["avatar_media_id"] = None if user.avatar_media_id is None else str(user.avatar_media_id)
    return doc


def author_document(user: User, avatar: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "user_id": str(user.user_id),
        "username": user.username,
        "full_name": user.full_name,
        "profile_pic_url": _avatar_url(avatar),
        "is_verified": user.is_verified,
        "is_private": user.is_private,
    }


async def avatars(ctx: ApiContext, users: list[User]) -> dict[int, dict[str, Any]]:
    wanted = [u.avatar_media_id for u in users if u.avatar_media_id is not None]
    if not wanted:
        return {}
    async with ctx.db.snapshot() as conn:
        got = await media_store.get_many(conn, wanted)
    # Profile pictures are public, of private accounts too (as on every photo service).
    urls = ctx.photo_urls.public()
    return {
        u.user_id: media_document(*got[u.avatar_media_id], urls=urls, owner=False)
        for u in users
        if u.avatar_media_id is not None and u.avatar_media_id in got
    }


async def post_documents(ctx: ApiContext, viewer: int, post_ids: list[int]) -> list[dict[str, Any]]:
    """Documents of the given posts in that order (posts gone meanwhile are left out)."""
    if not post_ids:
        return []
    async with ctx.db.snapshot() as conn:
        found = await posts.get_many(conn, post_ids)
        authors = await accounts.get_many(conn, {p.author_id for p in found.values()})
        media_ids = [m.media_id for p in found.values() for m in p.media]
        media_ids += [u.avatar_media_id for u in authors.values() if u.avatar_media_id]
        media = await media_store.get_many(conn, media_ids)
        liked, saved = await interactions.viewer_flags(conn, viewer, found)
        chosen = await places.of_posts(conn, list(found))
    public = ctx.photo_urls.public()
    signed = ctx.photo_urls.signed() if any(a.is_private for a in authors.values()) else public
    out = []
    for post_id in post_ids:
        post = found.get(post_id)
        author = authors.get(post.author_id) if post is not None else None
        if post is None or author is None:
            continue
        avatar = (
            media_document(*media[author.avatar_media_id], urls=public, owner=False)
            if author.avatar_media_id in media
            else None
        )
        items = []
        for m in post.media:
            got = media.get(m.media_id)
            if got is None:
                continue
            # A private account's photos travel only as signed, expiring URLs.
            doc = media_document(*got, urls=signed if author.is_private else public, owner=False)
            urls = doc["urls"]
            doc["url"] = urls.get("1080") or urls.get("hls") or next(iter(urls.values()), None)
            doc["alt_text"] = m.alt_text
            items.append(doc)
        out.append(
            {
                "post_id": str(post.post_id),
                "author": author_document(author, avatar),
                "media": items,
                "caption": post.caption,
                "location": post.location,
                "place": place_document(chosen[post_id]) if post_id in chosen else None,
                "tagged_users": [str(u) for u in post.tagged],
                "status": post.status,
                "like_count": post.like_count,
                "comment_count": post.comment_count,
                "created_at": iso(post.created_unix_s),
                "viewer_has_liked": post.post_id in liked,
                "viewer_has_saved": post.post_id in saved,
            }
        )
    return out
