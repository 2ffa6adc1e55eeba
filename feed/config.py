"""The feed's configuration: the [feed] table of pinhole.toml, parsed once into a frozen,
validated FeedConfig. Durations are seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import build


@dataclass(frozen=True, slots=True)
class FeedConfig:
    # "" = the embedded hot store (this process's memory: timelines are rebuilt from SQL
    # after a restart); else a redis:// URL. Every key starts with redis_prefix.
    redis_url: str = ""
    redis_prefix: str = "pinhole:"
    # push | pull | hybrid (the benchmark compares the three; hybrid is the product).
    strategy: str = "hybrid"
    # An author with at least this many followers is not fanned out: their posts sit in
    # one list per author, merged at read time.
    fanout_threshold: int = 10_000
    # A timeline (and a celebrity's list) keeps its newest entries only.
    timeline_entries_max: int = 800
    # Followers who have not read their feed for this long are skipped by fan-out; their
    # timeline expires and is rebuilt from SQL when they return.
    inactive_days: float = 30.0
    # Followers read and pushed per fan-out batch (one SQL page, one Redis pipeline).
    fanout_batch_max: int = 1000
    # A follow copies this many of the followee's newest posts into the timeline.
    backfill_posts_max: int = 800
    # Page sizes of GET /api/v1/feed.
    page_size_default: int = 20
    page_size_max: int = 50
    # Ranked mode: candidates considered (newest first), and the score's weights:
    # recency * 0.5^(age / half-life) + relationship * log1p(interactions with the author)
    # + engagement * log1p(likes + 2 * comments).
    ranked_candidates_max: int = 200
    rank_recency_weight: float = 1.0
    rank_recency_half_life_s: float = 6 * 3600.0
    rank_relationship_weight: float = 0.5
    rank_engagement_weight: float = 0.25
    # Fan-out jobs: retries back off from backoff_s_base to backoff_s_max; a job is
    # dead-lettered after attempts_max attempts; a claimed job is leased for lease_s. A
    # post whose media is still processing is looked at again every wait_media_s.
    attempts_max: int = 8
    backoff_s_base: float = 0.5
    backoff_s_max: float = 60.0
    lease_s: float = 30.0
    wait_media_s: float = 0.5
    poll_interval_s: float = 0.2

    def __post_init__(self) -> None:
        if self.strategy not in ("push", "pull", "hybrid"):
            raise ValueError("strategy must be push, pull or hybrid")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis_url must be a redis:// URL")
        for name in (
            "fanout_threshold",
            "timeline_entries_max",
            "fanout_batch_max",
            "page_size_default",
            "page_size_max",
            "ranked_candidates_max",
            "attempts_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.backfill_posts_max < 0:
            raise ValueError("backfill_posts_max must not be negative")
        if self.page_size_default > self.page_size_max:
            raise ValueError("page_size_default must not exceed page_size_max")
        for name in (
            "inactive_days",
            "rank_recency_half_life_s",
            "backoff_s_base",
            "backoff_s_max",
            "lease_s",
            "wait_media_s",
            "poll_interval_s",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")


def feed_config(document: dict[str, Any], **overrides: Any) -> FeedConfig:
    table = dict(document.get("feed", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(FeedConfig, table, where="feed.")
