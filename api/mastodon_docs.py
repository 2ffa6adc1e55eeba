"""Mastodon's entities (Account, Status, MediaAttachment, Relationship, Notification,
Instance) made from pinhole's own documents (api/social_docs.py, api/media_docs.py), so the
privacy of photo URLs is decided in one place: signed URLs for private accounts, never an
original's URL. Ids are strings, times ISO 8601 with milliseconds as Mastodon writes them.
Pure functions, except `statuses` and `accounts`, which hydrate a page in a few queries."""

from __future__ import annotations

import html
import re
from typing import Any, Final

from api.context import ApiContext
from api.media_docs import iso
from api.responses import dumps, open_object
from api.social_docs import avatar_document, avatars, documents_of, post_document, post_parts
from social import client_state, post_batch, text
from social.accounts import User
from social.graph import Relationship
from social.post_batch import PostBatch

VERSION: Final = "4.3.0 (compatible; pinhole 0.1.0)"
MASTODON_API_VERSION: Final = 2  # instance v2 `api_versions.mastodon` of Mastodon 4.3
MISSING_AVATAR_PATH: Final = "/avatars/original/missing.png"
SUPPORTED_MIME_TYPES: Final = (
    "image/jpeg",
    "image/png",
    "image/webp",
    "image/heic",
    "image/heif",
    "image/avif",
    "video/mp4",
    "video/quicktime",
)
# Mastodon's media sizes by role: the full-size photo and the preview.
_URL_RENDITIONS: Final = ("1080", "640", "320")
_PREVIEW_RENDITIONS: Final = ("640", "320", "1080")
NOTIFICATION_TYPES: Final = {
    "like": "favourite",
    "follow": "follow",
    "follow_request": "follow_request",
    "mention": "mention",
    "comment": "mention",  # a comment is a reply on Mastodon, told as a mention (Pixelfed)
}
_HASHTAG: Final = re.compile(r"#(\w+)")
_MENTION: Final = re.compile(r"(?<![\w@])@([a-z0-9._]{1,30})", re.IGNORECASE)


def mastodon_time(unix_s: float | None) -> str | None:
    stamp = iso(unix_s)
    return None if stamp is None else stamp.replace("Z", ".000Z")


def account(user: User, *, avatar_url: str | None, base: str) -> dict[str, Any]:
    avatar = avatar_url or base + MISSING_AVATAR_PATH
    return {
        "id": str(user.user_id),
        "username": user.username,
        "acct": user.username,
        "display_name": user.full_name,
        "locked": user.is_private,
        "bot": False,
        "discoverable": not user.is_private,
        "group": False,
        "created_at": mastodon_time(user.created_unix_s),
        "note": html.escape(user.bio),
        "url": f"{base}/@{user.username}",
        "uri": f"{base}/users/{user.username}",
        "avatar": avatar,
        "avatar_static": avatar,
        "header": base + MISSING_AVATAR_PATH,
        "header_static": base + MISSING_AVATAR_PATH,
        "followers_count": user.follower_count,
        "following_count": user.following_count,
        "statuses_count": user.post_count,
        "last_status_at": None,
        "emojis": [],
        "fields": [],
    }


async def accounts_of(ctx: ApiContext, users: list[User], base: str) -> list[dict[str, Any]]:
    pics = await avatars(ctx, users)
    return [account(u, avatar_url=_avatar_url(pics.get(u.user_id)), base=base) for u in users]


def _avatar_url(doc: dict[str, Any] | None) -> str | None:
    if doc is None:
        return None
    urls: dict[str, str] = doc.get("urls", {})
    return urls.get("150_square") or urls.get("150") or next(iter(urls.values()), None)


def _size(width: int, height: int) -> dict[str, Any]:
    return {
        "width": width,
        "height": height,
        "size": f"{width}x{height}",
        "aspect": round(width / height, 6) if height else None,
    }


def media_attachment(doc: dict[str, Any], *, description: str | None) -> dict[str, Any]:
    """A MediaAttachment from a pinhole media document (of a post, or the owner's view).
    While the media is processing `url` and `preview_url` are null (POST /api/v2/media
    then answers 202)."""
    urls: dict[str, str] = doc.get("urls", {})
    variants: dict[str, dict[str, Any]] = doc.get("variants", {})
    url = doc.get("url") or next((urls[r] for r in _URL_RENDITIONS if r in urls), None)
    if url is None and urls:
        url = urls.get("hls") or next(iter(urls.values()))
    preview = next((urls[r] for r in _PREVIEW_RENDITIONS if r in urls), url)
    meta: dict[str, Any] = {}
    if doc.get("width") and doc.get("height"):
        meta["original"] = _size(doc["width"], doc["height"])
    small = next((variants[r] for r in ("320", "640") if r in variants), None)
    if small is not None:
        meta["small"] = _size(small["width"], small["height"])
    kind = doc.get("media_type")
    return {
        "id": doc["media_id"],
        "type": kind if kind in ("image", "video") else "unknown",
        "url": url,
        "preview_url": preview,
        "remote_url": None,
        "preview_remote_url": None,
        "text_url": None,
        "meta": meta,
        "description": description,
        "blurhash": doc.get("placeholder"),
    }


def content_html(caption: str, base: str) -> str:
    """The caption as Mastodon's status HTML: escaped, hashtags and mentions as links,
    paragraphs and line breaks kept."""
    escaped = html.escape(caption)

    def tag(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        return (
            f'<a href="{base}/tags/{name}" class="mention hashtag" rel="tag">'
            f"#<span>{m.group(1)}</span></a>"
        )

    def mention(m: re.Match[str]) -> str:
        name = m.group(1).lower()
        return (
            f'<span class="h-card"><a href="{base}/@{name}" class="u-url mention">'
            f"@<span>{m.group(1)}</span></a></span>"
        )

    linked = _MENTION.sub(mention, _HASHTAG.sub(tag, escaped))
    paragraphs = [p.replace("\n", "<br />") for p in linked.split("\n\n") if p]
    return "".join(f"<p>{p}</p>" for p in paragraphs)


def status(
    post: dict[str, Any],
    author: dict[str, Any],
    *,
    base: str,
    descriptions: dict[int, str],
    hashtags_max: int,
) -> dict[str, Any]:
    """A Status from a pinhole post document and its author's Account."""
    caption: str = post["caption"]
    tags = text.hashtags(caption, limit=hashtags_max)
    media = [
        media_attachment(m, description=m.get("alt_text") or descriptions.get(int(m["media_id"])))
        for m in post["media"]
    ]
    return {
        "id": post["post_id"],
        "uri": f"{base}/users/{author['username']}/statuses/{post['post_id']}",
        "url": f"{base}/@{author['username']}/{post['post_id']}",
        "created_at": mastodon_time_from_iso(post["created_at"]),
        "account": author,
        "content": content_html(caption, base),
        "text": caption,
        "visibility": "private" if author["locked"] else "public",
        "sensitive": False,
        "spoiler_text": "",
        "media_attachments": media,
        "application": None,
        "mentions": [],
        "tags": [{"name": t, "url": f"{base}/tags/{t}"} for t in tags],
        "emojis": [],
        "reblogs_count": 0,
        "favourites_count": post["like_count"],
        "replies_count": post["comment_count"],
        "in_reply_to_id": None,
        "in_reply_to_account_id": None,
        "reblog": None,
        "poll": None,
        "card": None,
        "language": None,
        "edited_at": None,
        "favourited": post["viewer_has_liked"],
        "reblogged": False,
        "muted": False,
        "bookmarked": post["viewer_has_saved"],
        "pinned": False,
        "filtered": [],
    }


def mastodon_time_from_iso(stamp: str | None) -> str | None:
    return None if stamp is None else stamp.replace("Z", ".000Z")


async def statuses(
    ctx: ApiContext,
    viewer: int,
    post_ids: list[int],
    base: str,
    *,
    read: tuple[PostBatch, dict[int, str]] | None = None,
) -> list[dict[str, Any]]:
    """Statuses of the given posts in that order, hydrated in one batch (posts gone
    meanwhile are left out): one read unit (Database.read) for the posts, authors, media,
    flags and media descriptions, unless `read` is that batch already
    (`post_batch.read_quick_described` in the feed's unit). The caller has checked the
    viewer may see them."""
    if not post_ids:
        return []

    if read is None:
        read = await post_batch.read_batch_described(ctx.db, viewer, post_ids)
    batch, described = read
    # A public author's status from an interned batch is made once per content (its post's
    # parts, the base URL and its media's descriptions) and remembered; the viewer's
    # flags go on a copy.
    remembered = ctx.public_statuses if batch.interned else None
    accounts: dict[int, dict[str, Any]] = {}

    def account_of(user: User) -> dict[str, Any]:
        doc = accounts.get(user.user_id)
        if doc is None:
            avatar = _avatar_url(avatar_document(ctx, batch, user))
            doc = accounts[user.user_id] = account(user, avatar_url=avatar, base=base)
        return doc

    def made(post_id: int, author: User) -> dict[str, Any]:
        return status(
            documents_of(ctx, batch, [post_id])[0],
            account_of(author),
            base=base,
            descriptions=described,
            hashtags_max=ctx.social.hashtags_per_post_max,
        )

    out = []
    for post_id in post_ids:
        post = batch.found.get(post_id)
        author = batch.authors.get(post.author_id) if post is not None else None
        if post is None or author is None:
            continue
        if remembered is None or author.is_private:
            out.append(made(post_id, author))
            continue
        parts = post_parts(batch, post, author)
        extra = (base, tuple(described.get(m.media_id) for m in post.media))
        shared = remembered.get(parts, extra)
        if shared is None:
            fresh = made(post_id, author)
            fresh["favourited"] = fresh["bookmarked"] = False  # the viewer's: on each copy
            shared = remembered.put(parts, fresh, extra)
        doc = dict(shared)
        doc["favourited"] = post_id in batch.liked
        doc["bookmarked"] = post_id in batch.saved
        out.append(doc)
    return out


# The viewer's flags closing a status's remembered JSON, by (favourited, bookmarked).
_STATUS_FLAGS: Final = {
    (liked, saved): b"," + dumps({"favourited": liked, "bookmarked": saved})[1:]
    for liked in (False, True)
    for saved in (False, True)
}
# A post document's flags while its Status is made without the viewer's.
_NO_POST_FLAGS: Final = {"viewer_has_liked": False, "viewer_has_saved": False}


async def statuses_json(
    ctx: ApiContext,
    viewer: int,
    post_ids: list[int],
    base: str,
    *,
    read: tuple[PostBatch, dict[int, str]] | None = None,
) -> list[bytes]:
    """`statuses` encoded as JSON, one object each: a public author's status from an
    interned batch is encoded once per content without the viewer's flags and remembered
    as bytes (`ApiContext.public_status_json`; "favourited" and "bookmarked" then come
    last); the rest is made as `statuses` makes it and encoded per answer."""
    if not post_ids:
        return []
    if read is None:
        read = await post_batch.read_batch_described(ctx.db, viewer, post_ids)
    batch, described = read
    if not batch.interned:
        return [dumps(d) for d in await statuses(ctx, viewer, post_ids, base, read=read)]
    remembered = ctx.public_status_json
    out: list[bytes] = []
    for post_id in post_ids:
        post = batch.found.get(post_id)
        author = batch.authors.get(post.author_id) if post is not None else None
        if post is None or author is None:
            continue
        if author.is_private:
            made = await statuses(ctx, viewer, [post_id], base, read=read)
            out.extend(dumps(d) for d in made)
            continue
        parts = post_parts(batch, post, author)
        extra = (base, tuple(described.get(m.media_id) for m in post.media))
        head = remembered.get(parts, extra)
        if head is None:
            doc = status(
                post_document(ctx, batch, post, author, None) | _NO_POST_FLAGS,
                account(
                    author, avatar_url=_avatar_url(avatar_document(ctx, batch, author)), base=base
                ),
                base=base,
                descriptions=described,
                hashtags_max=ctx.social.hashtags_per_post_max,
            )
            del doc["favourited"], doc["bookmarked"]  # the viewer's: appended per answer
            head = remembered.put(parts, open_object(doc), extra)
        out.append(head + _STATUS_FLAGS[post_id in batch.liked, post_id in batch.saved])
    return out


def relationship(user_id: int, rel: Relationship, *, requested_by: bool) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "following": rel.following,
        "showing_reblogs": rel.following,
        "notifying": False,
        "languages": None,
        "followed_by": rel.followed_by,
        "blocking": rel.blocking,
        "blocked_by": False,  # never told: a blocker is as absent (docs/api/social.md)
        "muting": False,
        "muting_notifications": False,
        "requested": rel.requested,
        "requested_by": requested_by,
        "domain_blocking": False,
        "endorsed": False,
        "note": "",
    }


def notification_type(kind: str) -> str:
    return NOTIFICATION_TYPES[kind]


def kinds_of(types: list[str]) -> set[str]:
    """pinhole's notification kinds behind Mastodon types."""
    return {k for k, t in NOTIFICATION_TYPES.items() if t in types}


def notification(
    notification_id: int,
    kind: str,
    created_unix_s: float,
    actor: dict[str, Any],
    status_doc: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "id": str(notification_id),
        "type": notification_type(kind),
        "created_at": mastodon_time(created_unix_s),
        "group_key": f"ungrouped-{notification_id}",
        "account": actor,
        "status": status_doc,
    }


def instance_v1(ctx: ApiContext, base: str, host: str) -> dict[str, Any]:
    return {
        "uri": host,
        "title": "pinhole",
        "short_description": "Photos on pinhole",
        "description": "A pinhole photo-sharing instance.",
        "email": "",
        "version": VERSION,
        "urls": {"streaming_api": ""},
        "stats": {"user_count": 0, "status_count": 0, "domain_count": 1},
        "thumbnail": None,
        "languages": ["en"],
        "registrations": True,
        "approval_required": False,
        "invites_enabled": False,
        "configuration": _configuration(ctx),
        "contact_account": None,
        "rules": [],
    }


def instance_v2(ctx: ApiContext, base: str, host: str) -> dict[str, Any]:
    configuration = _configuration(ctx)
    configuration["urls"] = {"streaming": None}
    configuration["vapid"] = {"public_key": ""}
    configuration["translation"] = {"enabled": False}
    return {
        "domain": host,
        "title": "pinhole",
        "version": VERSION,
        "source_url": "",
        "description": "A pinhole photo-sharing instance.",
        "usage": {"users": {"active_month": 0}},
        "thumbnail": {"url": base + MISSING_AVATAR_PATH, "blurhash": None, "versions": {}},
        "icon": [],
        "languages": ["en"],
        "configuration": configuration,
        "registrations": {"enabled": True, "approval_required": False, "message": None},
        "api_versions": {"mastodon": MASTODON_API_VERSION},
        "contact": {"email": "", "account": None},
        "rules": [],
    }


def _configuration(ctx: ApiContext) -> dict[str, Any]:
    limits = ctx.media.limits
    return {
        "accounts": {"max_featured_tags": 0, "max_pinned_statuses": 0},
        "statuses": {
            "max_characters": ctx.social.caption_chars_max,
            "max_media_attachments": ctx.social.post_media_max,
            "characters_reserved_per_url": 23,
        },
        "media_attachments": {
            "supported_mime_types": list(SUPPORTED_MIME_TYPES),
            "description_limit": client_state.DESCRIPTION_CHARS_MAX,
            "image_size_limit": limits.image_bytes_max,
            "image_matrix_limit": limits.image_pixels_max,
            "video_size_limit": limits.video_bytes_max,
            "video_frame_rate_limit": int(limits.video_frame_rate_max),
            "video_matrix_limit": limits.video_side_px_max * limits.video_side_px_max,
        },
        "polls": {
            "max_options": 0,
            "max_characters_per_option": 0,
            "min_expiration": 0,
            "max_expiration": 0,
        },
    }
