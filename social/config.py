"""The social layer's configuration: the [social] table of pinhole.toml (limits on text and
lists, sessions, the write rate limits and the sign-in throttles), parsed once into a
frozen, validated SocialConfig."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from common.config import build
from social.stories_schema import HIGHLIGHT_TITLE_CHARS_MAX

DAY_S: Final = 86400


@dataclass(frozen=True, slots=True)
class SocialConfig:
    password_chars_min: int = 8
    password_chars_max: int = 256
    caption_chars_max: int = 2200
    comment_chars_max: int = 2200
    alt_text_chars_max: int = 500
    location_chars_max: int = 100
    bio_chars_max: int = 150
    full_name_chars_max: int = 100
    post_media_max: int = 10
    tagged_users_max: int = 20
    hashtags_per_post_max: int = 30
    mentions_per_post_max: int = 20
    # Pages of lists (followers, comments, grid, notifications): default and maximum size.
    page_size_default: int = 20
    page_size_max: int = 100
    # Sessions a user may hold at once; the oldest is revoked beyond it. A session lasts
    # session_days_max days from its sign-in, and ends sooner when unused for
    # session_idle_days_max days; its last use is written at most once per session_touch_s
    # (so a request is not a write, and "idle" is known to within that many seconds).
    sessions_per_user_max: int = 50
    session_days_max: int = 90
    session_idle_days_max: int = 30
    session_touch_s: int = 300
    # Write rate limits per user (fixed windows): posts a day (seed 000), the rest an hour.
    # Sign-ups are limited per client address.
    posts_per_day_max: int = 25
    comments_per_hour_max: int = 120
    likes_per_hour_max: int = 500
    follows_per_hour_max: int = 200
    messages_per_hour_max: int = 500
    accounts_per_hour_max: int = 20
    # Failed sign-ins (and wrong current passwords of a password change): per client
    # address an hour; per account and client address in 15 minutes; per account in 15
    # minutes over the addresses that never signed in to it (so an attacker spreading
    # guesses over many addresses cannot lock the account's owner out).
    sign_in_failures_per_address_max: int = 60
    sign_in_failures_per_account_address_max: int = 10
    sign_in_failures_per_account_max: int = 100
    # Stories (docs/api/stories.md). Stories an author may post in any 24 hours; the length
    # of a video story; accounts on one close-friends list; highlights per user, stories per
    # highlight and a highlight's title. The sweep hands an expired story's media to the
    # media expiry story_reclaim_grace_s after its expiry (unless it is in a highlight),
    # every story_sweep_interval_s, at most story_sweep_batch_max stories a pass.
    stories_per_day_max: int = 100
    story_video_s_max: int = 60
    close_friends_max: int = 1000
    highlights_per_user_max: int = 100
    highlight_stories_max: int = 100
    highlight_title_chars_max: int = 30
    story_reclaim_grace_s: int = 3600
    story_sweep_interval_s: int = 60
    story_sweep_batch_max: int = 500
    # The tray: authors in it at most; how long a viewer's cached tray lives at most (it
    # is also dropped when a followed author posts and is stale once its earliest story
    # expires). Affinity orders authors whose stories are all seen or all unseen: the
    # weighted sum of the viewer's DMs to the author, likes and comments on the author's
    # posts and views of the author's stories (profile visits are not recorded).
    story_tray_authors_max: int = 100
    story_tray_cache_s_max: int = 300
    story_affinity_dm_weight: int = 8
    story_affinity_like_weight: int = 1
    story_affinity_comment_weight: int = 3
    story_affinity_view_weight: int = 2
    # Views: the viewer lists go to SQL in batches of at most this many rows, at most this
    # many milliseconds after the view (the count is in the hot store at once).
    story_views_flush_batch_max: int = 500
    story_views_flush_interval_ms: int = 1000

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.password_chars_min > self.password_chars_max:
            raise ValueError("password_chars_min must not exceed password_chars_max")
        if self.page_size_default > self.page_size_max:
            raise ValueError("page_size_default must not exceed page_size_max")
        if self.session_idle_days_max > self.session_days_max:
            raise ValueError("session_idle_days_max must not exceed session_days_max")
        if self.session_touch_s >= self.session_idle_days_max * DAY_S:
            raise ValueError("session_touch_s must be shorter than session_idle_days_max")
        if self.highlight_title_chars_max > HIGHLIGHT_TITLE_CHARS_MAX:
            raise ValueError(
                f"highlight_title_chars_max must not exceed {HIGHLIGHT_TITLE_CHARS_MAX}"
            )
        if self.sign_in_failures_per_account_address_max > self.sign_in_failures_per_account_max:
            raise ValueError(
                "sign_in_failures_per_account_address_max must not exceed "
                "sign_in_failures_per_account_max"
            )


def social_config(document: dict[str, Any], **overrides: Any) -> SocialConfig:
    table = dict(document.get("social", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(SocialConfig, table, where="social.")
