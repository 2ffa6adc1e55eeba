"""Profile pictures, and the rule that a media belongs to one place: a post, or a profile.

A media is attached (`media.attached_unix_s` set, so it no longer expires) by exactly two
acts: posting it (a `post_media` row, kept even when the post is deleted) and making it
an avatar. So an attached media with no `post_media` row is, or was, an avatar. Neither
may become the other (409 `media_in_use`): replacing an avatar expires its media, which
would otherwise delete a post's photos, and deleting a post expires its media, which would
otherwise delete a profile picture.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common import ids
from social.errors import Invalid, SocialConflict
from social.schema import post_media, users
from transformer import media_store
from transformer.media_store import MediaStatus


def parse_media_id(value: object) -> int:
    if not isinstance(value, str):
        raise Invalid("avatar_media_id must be an id string or null")
    try:
        return ids.parse(value)
    except ValueError:
        raise Invalid(f"avatar_media_id is not an id: {value[:40]!r}") from None


async def in_posts(conn: AsyncConnection, media_ids: Iterable[int]) -> set[int]:
    """The media among `media_ids` that are (or were: deleted posts count) in a post."""
    wanted = sorted(set(media_ids))
    if not wanted:
        return set()
    rows = await conn.execute(
        sa.select(post_media.c.media_id).where(post_media.c.media_id.in_(wanted))
    )
    return {int(r[0]) for r in rows}


def avatar_in_use(media_id: int) -> SocialConflict:
    return SocialConflict(
        f"media {media_id} is or was a profile picture: a media belongs to one place, "
        "upload it again to post it",
        code="media_in_use",
    )


async def set_avatar(conn: AsyncConnection, user_id: int, value: object) -> int | None:
    """Makes `value` (a media id string, or None to remove it) the user's avatar inside the
    caller's transaction and returns the new avatar media id; the replaced avatar's media
    expires now (the workers' sweep deletes its needles). Raises Invalid (bad_media) for a
    media that is not one of the user's ready images, SocialConflict (media_in_use) for one in a
    post. The caller writes the users row."""
    new_id = None
    if value is not None:
        new_id = parse_media_id(value)
        row = (await media_store.rows(conn, [new_id])).get(new_id)
        if (
            row is None
            or row.owner_id != user_id
            or row.media_type != "image"
            or row.status != MediaStatus.READY
        ):
            raise Invalid("avatar_media_id must be one of your ready images", code="bad_media")
        if await in_posts(conn, [new_id]):
            raise SocialConflict(
                f"media {new_id} is in a post: a media belongs to one place, upload it again "
                "to make it your profile picture",
                code="media_in_use",
            )
        await media_store.attach(conn, [new_id], now=time.time())
    old_id = (
        await conn.execute(sa.select(users.c.avatar_media_id).where(users.c.user_id == user_id))
    ).scalar_one_or_none()
    # Only the avatar's own media expires: an avatar made from a post's media before this
    # rule existed stays with its post.
    if old_id is not None and old_id != new_id and not await in_posts(conn, [old_id]):
        await media_store.expire(conn, [old_id], now=time.time())
    return new_id
