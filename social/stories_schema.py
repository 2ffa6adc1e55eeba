"""The stories tables and their migrations, a component of their own ("stories";
docs/api/stories.md).

A story lives exactly STORY_LIFETIME_S from its creation: `expires_unix_s` is written once,
as created_unix_s + STORY_LIFETIME_S, and every read filters on it, so expiry never waits
for a sweep. The sweep (social/story_sweep.py) only reclaims: it marks expired rows
`archived_unix_s` (the owner's archive, what highlights are made of) and, a grace period
later, hands the media of stories in no highlight to the media expiry (`reclaimed_unix_s`).

Viewer lists (`story_views`) are written in batches from the hot store (feed/story_store.py),
never one SQL write per view. Ids are Instagram-style (common/ids.py); times Unix seconds.
A change is a new migration appended to MIGRATIONS, never an edit of an applied one.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable, ExecutableDDLElement

from common.db import Migration
from common.jobs.schema import leases_create_steps

COMPONENT: Final = "stories"
HOUR_S: Final = 3600
STORY_LIFETIME_S: Final = 24 * HOUR_S  # exactly: expires_unix_s = created_unix_s + this
AUDIENCES: Final = ("followers", "close_friends")
AUDIENCE_CHARS_MAX: Final = max(len(a) for a in AUDIENCES)
HIGHLIGHT_TITLE_CHARS_MAX: Final = 100  # the column; [social] highlight_title_chars_max <= it

metadata = sa.MetaData()

stories = sa.Table(
    "stories",
    metadata,
    sa.Column("story_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("author_id", sa.BigInteger, nullable=False),
    # One story per media: a media joins one story and is reclaimed with it.
    sa.Column("media_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("media_type", sa.String(8), nullable=False),  # image | video
    sa.Column("can_reply", sa.Boolean, nullable=False),
    sa.Column("audience", sa.String(AUDIENCE_CHARS_MAX), nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("expires_unix_s", sa.Float, nullable=False),
    # Set by the sweep once expired: the row stays, in the owner's archive.
    sa.Column("archived_unix_s", sa.Float, nullable=True),
    # Set by the sweep when the media was handed to the media expiry (needles deleted).
    sa.Column("reclaimed_unix_s", sa.Float, nullable=True),
)

close_friends = sa.Table(
    "close_friends",
    metadata,
    sa.Column("owner_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("friend_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

highlights = sa.Table(
    "highlights",
    metadata,
    sa.Column("highlight_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("owner_id", sa.BigInteger, nullable=False),
    sa.Column("title", sa.String(HIGHLIGHT_TITLE_CHARS_MAX), nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("updated_unix_s", sa.Float, nullable=False),
)

highlight_stories = sa.Table(
    "highlight_stories",
    metadata,
    sa.Column("highlight_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("story_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("position", sa.Integer, nullable=False),
)

# Written in batches (feed/story_views.py): one row per (story, viewer), the first view.
story_views = sa.Table(
    "story_views",
    metadata,
    sa.Column("story_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("viewer_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("viewed_unix_s", sa.Float, nullable=False),
)

_indexes = (
    # The tray and the reel: an author's stories live at a time.
    sa.Index("stories_author", stories.c.author_id, stories.c.expires_unix_s),
    # The sweep: expired rows not yet archived or reclaimed.
    sa.Index("stories_expiry", stories.c.expires_unix_s),
    sa.Index("close_friends_friend", close_friends.c.friend_id, close_friends.c.owner_id),
    sa.Index("highlights_owner", highlights.c.owner_id, highlights.c.highlight_id),
    sa.Index("highlight_stories_story", highlight_stories.c.story_id),
    # Affinity: a viewer's views of an author's stories.
    sa.Index("story_views_viewer", story_views.c.viewer_id, story_views.c.story_id),
)

_STEPS_V1: Final[list[ExecutableDDLElement]] = [
    *(CreateTable(t) for t in (stories, close_friends, highlights, highlight_stories, story_views)),
    *(CreateIndex(i) for i in _indexes),
    # The sweep's LeasedLoop (social/story_sweep.py); IF NOT EXISTS.
    *leases_create_steps(),
]

MIGRATIONS: Final = (
    Migration(1, "stories: stories, close friends, highlights, story views", _STEPS_V1),
)
