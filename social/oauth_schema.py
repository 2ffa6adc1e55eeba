"""The OAuth tables of the Mastodon client API (component `oauth`, its own migrations;
docs/formats/social-schema.md). The rules are in social/oauth.py; social/sessions.py reads
a token's scopes beside its session."""

from __future__ import annotations

from typing import Final

import sqlalchemy as sa
from sqlalchemy.schema import CreateIndex, CreateTable

from common.db import Migration

COMPONENT: Final = "oauth"
SECRET_BYTES: Final = 32  # client ids and secrets, codes, refresh tokens
SECRET_CHARS: Final = (SECRET_BYTES * 4 + 2) // 3  # URL-safe base64 without padding
APP_NAME_CHARS_MAX: Final = 200
APP_WEBSITE_CHARS_MAX: Final = 2000
REDIRECT_URIS_CHARS_MAX: Final = 2000
SCOPES_CHARS_MAX: Final = 300

metadata = sa.MetaData()

oauth_apps = sa.Table(
    "oauth_apps",
    metadata,
    sa.Column("app_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("client_id", sa.String(SECRET_CHARS), nullable=False, unique=True),
    sa.Column("client_secret_sha256", sa.String(64), nullable=False),
    sa.Column("name", sa.String(APP_NAME_CHARS_MAX), nullable=False),
    sa.Column("website", sa.String(APP_WEBSITE_CHARS_MAX), nullable=True),
    sa.Column("redirect_uris", sa.String(REDIRECT_URIS_CHARS_MAX), nullable=False),
    sa.Column("scopes", sa.String(SCOPES_CHARS_MAX), nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
)

oauth_codes = sa.Table(
    "oauth_codes",
    metadata,
    sa.Column("code_sha256", sa.String(64), primary_key=True),
    sa.Column("app_id", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=False),
    sa.Column("scopes", sa.String(SCOPES_CHARS_MAX), nullable=False),
    sa.Column("redirect_uri", sa.String(REDIRECT_URIS_CHARS_MAX), nullable=False),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("used_unix_s", sa.Float, nullable=True),
)

# One row per token issued by /oauth/token. With a user, token_sha256 is also the
# session's key (sessions.token_sha256), so the session decides whether it still lives.
oauth_tokens = sa.Table(
    "oauth_tokens",
    metadata,
    sa.Column("token_sha256", sa.String(64), primary_key=True),
    sa.Column("app_id", sa.BigInteger, nullable=False),
    sa.Column("user_id", sa.BigInteger, nullable=True),  # null: an app token
    sa.Column("scopes", sa.String(SCOPES_CHARS_MAX), nullable=False),
    sa.Column("refresh_sha256", sa.String(64), nullable=True, unique=True),
    sa.Column("created_unix_s", sa.Float, nullable=False),
    sa.Column("revoked_unix_s", sa.Float, nullable=True),
)

_indexes = (
    sa.Index("oauth_tokens_user", oauth_tokens.c.user_id),
    sa.Index("oauth_codes_created", oauth_codes.c.created_unix_s),
)

MIGRATIONS: Final = (
    Migration(
        1,
        "OAuth apps, authorization codes, tokens",
        [CreateTable(t) for t in (oauth_apps, oauth_codes, oauth_tokens)]
        + [CreateIndex(i) for i in _indexes],
    ),
)
