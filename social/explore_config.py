"""Explore configuration: the [explore] table of pinhole.toml, parsed once into a frozen,
validated ExploreConfig (docs/api/explore.md lists every field and weight)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import build


@dataclass(frozen=True, slots=True)
class ExploreConfig:
    # The candidate pool: live posts at most this old, the newest candidate_posts_max.
    candidate_age_max_s: float = 30 * 86400.0
    candidate_posts_max: int = 20_000
    # Co-engagement: the viewer's latest likes used, and the other likers of each of them.
    viewer_likes_max: int = 200
    likers_per_post_max: int = 500
    # Trending: likes within trending_window_s count, their weight halves every
    # trending_half_life_s of the post's age; expectation = the author's mean likes per
    # post, plus trending_prior_likes (smooths authors with few posts).
    trending_window_s: float = 2 * 86400.0
    trending_half_life_s: float = 12 * 3600.0
    trending_prior_likes: int = 2
    # Ranking weights in percent (each term is scaled to 0..1 over the candidates).
    co_engagement_weight_pct: int = 100
    interest_weight_pct: int = 40
    trending_weight_pct: int = 30
    popularity_weight_pct: int = 10
    # The precomputed list: its length, and the diversification of each page_posts chunk.
    list_posts_max: int = 240
    page_posts_default: int = 24
    page_posts_max: int = 60
    per_author_per_page_max: int = 2
    per_hashtag_per_page_max: int = 4
    # The refresh job: accounts active within active_s get a list every refresh_interval_s;
    # a list older than stale_s is recomputed on read (once).
    refresh_interval_s: float = 600.0
    active_s: float = 7 * 86400.0
    stale_s: float = 3600.0
    refresh_users_per_pass_max: int = 5_000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in (
            "candidate_posts_max",
            "list_posts_max",
            "page_posts_max",
            "per_author_per_page_max",
            "per_hashtag_per_page_max",
            "trending_half_life_s",
            "refresh_interval_s",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        if not 1 <= self.page_posts_default <= self.page_posts_max:
            raise ValueError("page_posts_default must be between 1 and page_posts_max")
        if self.page_posts_max > self.list_posts_max:
            raise ValueError("page_posts_max must not exceed list_posts_max")


def explore_config(document: dict[str, Any], **overrides: Any) -> ExploreConfig:
    table = dict(document.get("explore", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(ExploreConfig, table, where="explore.")
