"""The size limits that must agree across tiers, checked when a service starts.

An upload the API accepts (at most [media.limits] image_bytes_max or video_bytes_max) is
stored whole as the original's needle and read back whole by a worker through a router and
a cache node. Every tier on that path must therefore take a body of that size:

| tier | limit | key |
|---|---|---|
| the API | the upload | `[media.limits] image_bytes_max`, `video_bytes_max` |
| a store node | one needle's data | `[store.volume] needle_data_bytes_max` |
| a cache node | a body from a store | `[cache] response_bytes_max` |
| a router | an answer from a cache or store | `[router] photo_bytes_max` |

A configuration where one is smaller would accept uploads that can never be processed
(the job dead-letters after its attempts): every `pinhole ... serve` and `pinhole up` read
the same pinhole.toml and refuse to start with one line naming the keys.
docs/operations/security.md lists every limit.
"""

from __future__ import annotations

from typing import Any

from cache.config import cache_config
from common.config import ConfigError
from router.config import router_config
from store.config import store_config
from transformer.config import media_config


def upload_path_problems(document: dict[str, Any]) -> list[str]:
    """What in the parsed pinhole.toml makes an accepted upload unable to pass a tier (empty
    when nothing). Raises ConfigError for a table that does not parse."""
    limits = media_config(document).limits
    biggest = max(limits.image_bytes_max, limits.video_bytes_max)
    which = (
        "video_bytes_max"
        if limits.video_bytes_max >= limits.image_bytes_max
        else ("image_bytes_max")
    )
    tiers = (
        ("store.volume.needle_data_bytes_max", store_config(document).volume.needle_data_bytes_max),
        ("cache.response_bytes_max", cache_config(document).response_bytes_max),
        ("router.photo_bytes_max", router_config(document).photo_bytes_max),
    )
    return [
        f"{key} = {value} is below media.limits.{which} = {biggest}: an upload of that size "
        "would be accepted and could never be processed"
        for key, value in tiers
        if value < biggest
    ]


def check_upload_path(document: dict[str, Any]) -> None:
    """Raises ConfigError naming the first mismatch (the commands print it as one line)."""
    problems = upload_path_problems(document)
    if problems:
        raise ConfigError(problems[0])
