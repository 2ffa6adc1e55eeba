"""Places: what a post's author says it was taken at (a name and coarse coordinates),
shared by every post that names the same place. Only the place chosen is public; the
camera's position never is (the media ladder strips EXIF).

A post names a place by id (`{"place_id": "..."}`) or by name and coordinates
(`{"name": ..., "latitude": ..., "longitude": ...}`): the coordinates are rounded to
[search] place_coordinate_decimals and the place with the same folded name and rounded
coordinates is reused, else created (and indexed) in the caller's transaction.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from common import ids
from common.ids import IdGenerator
from social import search_index
from social.errors import Invalid, NotVisible
from social.search_config import SearchConfig
from social.search_schema import places, post_places
from social.search_text import fold

LATITUDE_MAX = 90.0
LONGITUDE_MAX = 180.0


@dataclass(frozen=True, slots=True)
class Place:
    place_id: int
    name: str
    latitude: float
    longitude: float
    post_count: int


def _place(row: Any) -> Place:
    return Place(row.place_id, row.name, row.latitude, row.longitude, row.post_count)


def _coordinate(body: dict[str, Any], name: str, limit: float, decimals: int) -> float:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"place.{name} must be a number")
    # The range first: a huge integer would overflow a float; NaN fails every comparison.
    if not -limit <= value <= limit or not math.isfinite(value):
        raise Invalid(f"place.{name} must be between {-limit:g} and {limit:g}")
    return round(float(value), decimals) + 0.0  # + 0.0: -0.0 and 0.0 are one place


async def get_many(conn: AsyncConnection, place_ids: list[int]) -> dict[int, Place]:
    if not place_ids:
        return {}
    rows = await conn.execute(sa.select(places).where(places.c.place_id.in_(sorted(place_ids))))
    return {r.place_id: _place(r) for r in rows}


async def require(conn: AsyncConnection, place_id: int) -> Place:
    found = (await get_many(conn, [place_id])).get(place_id)
    if found is None:
        raise NotVisible("no such place")
    return found


async def resolve(
    conn: AsyncConnection, id_gen: IdGenerator, config: SearchConfig, author_id: int, body: Any
) -> Place:
    """The place a new post names (see the module docstring); Invalid for a malformed one
    or an unknown place id (code no_such_place)."""
    if not isinstance(body, dict):
        raise Invalid("place must be an object")
    if "place_id" in body:
        if set(body) != {"place_id"}:
            raise Invalid("place: give either place_id or name, latitude and longitude")
        value = body["place_id"]
        try:
            place_id = ids.parse(value) if isinstance(value, str) else -1
        except ValueError:
            place_id = -1
        found = (await get_many(conn, [place_id])).get(place_id)
        if found is None:
            raise Invalid("place: no such place", code="no_such_place")
        return found
    if set(body) != {"name", "latitude", "longitude"}:
        raise Invalid("place must have name, latitude and longitude (or only place_id)")
    name = body["name"]
    if not isinstance(name, str) or not name.strip():
        raise Invalid("place.name must be a non-empty string")
    name = " ".join(name.split())
    key = fold(name)
    if len(name) > config.place_name_chars_max or len(key) > config.place_name_chars_max:
        raise Invalid(f"place.name must be at most {config.place_name_chars_max} characters")
    decimals = config.place_coordinate_decimals
    latitude = _coordinate(body, "latitude", LATITUDE_MAX, decimals)
    longitude = _coordinate(body, "longitude", LONGITUDE_MAX, decimals)
    c = places.c
    row = (
        await conn.execute(
            sa.select(places).where(
                c.name_key == key, c.latitude == latitude, c.longitude == longitude
            )
        )
    ).first()
    if row is not None:
        return _place(row)
    place = Place(id_gen.next_id(), name, latitude, longitude, 0)
    await conn.execute(
        places.insert().values(
            place_id=place.place_id,
            name=name,
            name_key=key,
            latitude=latitude,
            longitude=longitude,
            coordinate_decimals=decimals,
            created_by=author_id,
            created_unix_s=time.time(),
            post_count=0,
        )
    )
    await search_index.place_added(conn, place.place_id, key)
    return place


def place_document(place: Place) -> dict[str, Any]:
    return {
        "place_id": str(place.place_id),
        "name": place.name,
        "latitude": place.latitude,
        "longitude": place.longitude,
        "post_count": place.post_count,
    }


async def of_posts(conn: AsyncConnection, post_ids: list[int]) -> dict[int, Place]:
    """The place of each of these posts that has one."""
    if not post_ids:
        return {}
    rows = await conn.execute(
        sa.select(post_places.c.post_id, places)
        .select_from(post_places.join(places, places.c.place_id == post_places.c.place_id))
        .where(post_places.c.post_id.in_(sorted(set(post_ids))))
    )
    return {r.post_id: _place(r) for r in rows}
