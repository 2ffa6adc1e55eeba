"""The direct-message tables and their migrations, a component of their own ("messages";
docs/formats/social-schema.md, docs/api/messages.md).

A thread orders its messages by `seq` (1, 2, 3 ... per thread, the same order for every
member) and every change in it (a new message, a reaction, an unsend) by `change_seq`, a
second per-thread counter: a client that kept the highest change_seq it saw resumes with
`after_seq` and gets each changed message once, at its latest state. Both counters live on
the thread row and move inside the write transaction that makes the change, so two senders
never get the same number. Ids are Instagram-style (common/ids.py); times Unix seconds.

A change is a new migration appended to MIGRATIONS, never an edit of an applied one.
"""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Migration

COMPONENT: Final = "messages"
CLIENT_ID_CHARS_MAX: Final = 64
TITLE_CHARS_MAX: Final = 100
EMOJI_CHARS_MAX: Final = 16
# "<lower user id>:<higher user id>" of a 1:1 thread: two 19-digit ids and a colon.
DIRECT_KEY_CHARS_MAX: Final = 19 + 1 + 19

metadata = sa.MetaData()

dm_threads = sa.Table(
    "dm_threads",
    metadata,
    sa.Column("thread_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("kind", sa.String(8), nullable=False),  # direct | group
    # One 1:1 thread per pair of users (null for groups).
    sa.Column("direct_key", sa.String(DIRECT_KEY_CHARS_MAX), nullable=True, unique=True),
    sa.Column("title", sa.String(TITLE_CHARS_MAX), nullable=True),
    sa.Column("created_by", sa.BigInteger, nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("last_seq", sa.Integer, nullable=False),  # messages so far
    sa.Column("last_change_seq", sa.Integer, nullable=False),  # changes so far
    # The newest message's id: ids sort by time, so the inbox orders and pages by it.
    sa.Column("last_message_id", sa.BigInteger, nullable=True),
)

dm_members = sa.Table(
    "dm_members",
    metadata,
    sa.Column("thread_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    # inbox, or requests: the member does not follow the thread's creator and has not
    # accepted yet (a reply accepts).
    sa.Column("folder", sa.String(8), nullable=False),
    sa.Column("accepted", sa.Boolean, nullable=False),
    sa.Column("last_read_seq", sa.Integer, nullable=False),
    sa.Column("joined_unix_s", sa.Float, nullable=False),
    # Mirrors dm_threads.last_message_id so the inbox is one index range per member.
    sa.Column("last_message_id", sa.BigInteger, nullable=True),
)

dm_messages = sa.Table(
    "dm_messages",
    metadata,
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("thread_id", sa.BigInteger, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("change_seq", sa.Integer, nullable=False),
    sa.Column("sender_id", sa.BigInteger, nullable=False),
    sa.Column("client_id", sa.String(CLIENT_ID_CHARS_MAX), nullable=False),
    sa.Column("kind", sa.String(12), nullable=False),  # text | media | post | story_reply
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("media_id", sa.BigInteger, nullable=True),
    sa.Column("post_id", sa.BigInteger, nullable=True),
    sa.Column("story_id", sa.BigInteger, nullable=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    # Unsent (deleted for everyone): the content columns are cleared in the same change.
    sa.Column("unsent_unix_s", sa.Float, nullable=True),
    sa.UniqueConstraint("thread_id", "seq", name="dm_messages_seq"),
    # A retried send (same client id from the same sender in the same thread) finds the
    # message the first attempt made instead of making a second one.
    sa.UniqueConstraint("thread_id", "sender_id", "client_id", name="dm_messages_client"),
)

dm_reactions = sa.Table(
    "dm_reactions",
    metadata,
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("emoji", sa.String(EMOJI_CHARS_MAX), nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

# Delete for me: the message stays for the others, this member no longer sees it.
dm_hidden = sa.Table(
    "dm_hidden",
    metadata,
    sa.Column("user_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("message_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

# Broker credentials handed to signed-in clients (realtime/): one row per broker client,
# tied to the session that asked, so signing out revokes it.
realtime_clients = sa.Table(
    "realtime_clients",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

_indexes = (
    sa.Index("dm_members_inbox", dm_members.c.user_id, dm_members.c.last_message_id),
    sa.Index("dm_messages_changes", dm_messages.c.thread_id, dm_messages.c.change_seq),
    # A retried first message of a new group finds the thread its first attempt made.
    sa.Index("dm_messages_sender", dm_messages.c.sender_id, dm_messages.c.client_id),
    sa.Index("realtime_clients_user", realtime_clients.c.user_id),
    sa.Index("realtime_clients_session", realtime_clients.c.token_sha256),
)

MIGRATIONS: Final = (
    Migration(
        1,
        "direct messages: threads, members, messages, reactions, hidden; realtime clients",
        [
            CreateTable(t)
            for t in (
                dm_threads,
                dm_members,
                dm_messages,
                dm_reactions,
                dm_hidden,
                realtime_clients,
            )
        ]
        + [CreateIndex(i) for i in _indexes],
    ),
)
