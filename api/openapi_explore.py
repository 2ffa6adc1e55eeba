"""The OpenAPI description of Explore (docs/api/explore.md); its page is the `PostPage`
schema of api/openapi_search.py."""

from __future__ import annotations

from typing import Any, Final

from api.openapi_social import _op
from social.explore_config import ExploreConfig

_DEFAULTS: Final = ExploreConfig()

PATHS: Final[dict[str, Any]] = {
    "/api/v1/explore": {
        "get": _op(
            "Explore: posts from accounts you do not follow, personalised (co-engagement, "
            "your hashtags and places, trending), precomputed and diversified",
            parameters=[
                {
                    "name": "cursor",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "next_cursor of a page",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": _DEFAULTS.page_posts_max,
                    },
                },
            ],
            errors={"400": "bad input (the JSON error body names it)"},
            schema="PostPage",
        )
    },
}
