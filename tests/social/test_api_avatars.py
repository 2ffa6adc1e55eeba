"""A media belongs to one place through the real API: a post's media cannot become the
avatar, an avatar's (current or former) cannot be posted, and changing the avatar expires
only the previous avatar's own media."""

from __future__ import annotations

from typing import Any

from social.schema import users
from tests.api.conftest import MediaEnv
from tests.social.conftest import Client, user
from transformer.schema import media


async def media_row(env: MediaEnv, media_id: str) -> Any:
    async with env.ctx.db.snapshot() as conn:
        return (await conn.execute(media.select().where(media.c.media_id == int(media_id)))).one()


async def avatar(client: Client, media_id: str | None) -> tuple[int, Any, Any]:
    return await client.call("PATCH", "/api/v1/accounts/me", {"avatar_media_id": media_id})


def in_use(answer: tuple[int, Any, Any]) -> bool:
    status, doc, _ = answer
    return status == 409 and doc["error"]["code"] == "media_in_use" and "one place" in str(doc)


async def test_a_media_belongs_to_one_place(social_env: MediaEnv) -> None:
    env = social_env
    uid, una = await user(env, "una")
    posted = await una.post("mine")
    in_post = posted["media"][0]["media_id"]
    # A post's media does not become the avatar.
    assert in_use(await avatar(una, in_post))
    assert (await una.me())["avatar_media_id"] is None
    # The avatar's media is not posted, nor is a former avatar's.
    first, second = await una.photo(50), await una.photo(60)
    status, doc, _ = await avatar(una, first)
    assert status == 200 and doc["avatar_media_id"] == first
    assert in_use(await una.call("POST", "/api/v1/posts", {"media_ids": [first]}))
    assert (await avatar(una, second))[0] == 200
    assert in_use(await una.call("POST", "/api/v1/posts", {"media_ids": [first]}))
    assert in_use(await una.call("POST", "/api/v1/posts", {"media_ids": [second]}))
    assert (await una.me())["post_count"] == 1  # the refused posts left nothing
    # The replaced avatar's media expires now; the post's media does not.
    expired = await media_row(env, first)
    assert expired.expires_unix_s is not None and expired.attached_unix_s is not None
    assert (await media_row(env, in_post)).expires_unix_s is None

    # An avatar made of a post's media before this rule: replacing it leaves the post's
    # photos alone.
    async with env.ctx.db.transaction() as conn:
        await conn.execute(
            users.update().where(users.c.user_id == int(uid)).values(avatar_media_id=int(in_post))
        )
    status, doc, _ = await avatar(una, None)
    assert status == 200 and doc["avatar_media_id"] is None
    assert (await media_row(env, in_post)).expires_unix_s is None
    status, doc, _ = await una.call("GET", f"/api/v1/posts/{posted['post_id']}")
    assert status == 200 and [m["media_id"] for m in doc["media"]] == [in_post]
