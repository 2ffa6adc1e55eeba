"""The social layer's configuration: the [social] table of pinhole.toml (limits on text and
lists, and the write rate limits), parsed once into a frozen, validated SocialConfig."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import build


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
    # session_days_max days from its sign-in, then its token answers 401.
    sessions_per_user_max: int = 50
    session_days_max: int = 90
    # Write rate limits per user (fixed windows): posts a day (seed 000), the rest an hour.
    # Sign-ups and failed logins are limited per client address.
    posts_per_day_max: int = 25
    comments_per_hour_max: int = 120
    likes_per_hour_max: int = 500
    follows_per_hour_max: int = 200
    messages_per_hour_max: int = 500
    accounts_per_hour_max: int = 20
    logins_per_hour_max: int = 60

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.password_chars_min > self.password_chars_max:
            raise ValueError("password_chars_min must not exceed password_chars_max")
        if self.page_size_default > self.page_size_max:
            raise ValueError("page_size_default must not exceed page_size_max")


def social_config(document: dict[str, Any], **overrides: Any) -> SocialConfig:
    table = dict(document.get("social", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(SocialConfig, table, where="social.")
