"""OAuth 2 for the Mastodon client API (docs/api/mastodon.md): registered apps, one-use
authorization codes, and access and refresh tokens, each secret stored as its sha256 only
(like sessions: a leaked table yields no usable secret).

A user's access token *is* a session (social/sessions.py): the grant opens a session and
records here which app it belongs to, its scopes and its refresh token. So it lives, idles,
expires and is revoked exactly like a session (GET/DELETE /api/v1/sessions list and end
it), and every existing route accepts it. An app token (client_credentials) has no user
and is no session: it is good only for the app-level routes (sign-up, the app itself).

Scopes are Mastodon's: `read`, `write`, `follow`, `push` and their granular forms
(`read:statuses`); a route names the granular scope it needs and `allows` says whether a
token's scopes cover it (`follow` covers the follow and block scopes of read and write).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final

import sqlalchemy as sa

from common.db import Database
from common.ids import IdGenerator
from social import sessions
from social.config import DAY_S, SocialConfig
from social.errors import AuthFailed, Invalid, SocialError
from social.oauth_schema import (
    APP_NAME_CHARS_MAX,
    APP_WEBSITE_CHARS_MAX,
    REDIRECT_URIS_CHARS_MAX,
    SCOPES_CHARS_MAX,
    SECRET_BYTES,
    SECRET_CHARS,
    oauth_apps,
    oauth_codes,
    oauth_tokens,
)
from social.schema import sessions as session_rows

LOCK: Final = "social"
OOB_REDIRECT: Final = "urn:ietf:wg:oauth:2.0:oob"
CODE_TTL_S: Final = 600  # an authorization code is exchanged within 10 minutes or never
TOP_SCOPES: Final = frozenset({"read", "write", "follow", "push"})
# The granular scopes a client may name (Mastodon's; those pinhole has no route for are
# accepted and simply never needed).
_GRANULAR: Final = {
    "read": [
        "accounts",
        "blocks",
        "bookmarks",
        "favourites",
        "filters",
        "follows",
        "lists",
        "mutes",
        "notifications",
        "search",
        "statuses",
    ],
    "write": [
        "accounts",
        "blocks",
        "bookmarks",
        "conversations",
        "favourites",
        "filters",
        "follows",
        "lists",
        "media",
        "mutes",
        "notifications",
        "reports",
        "statuses",
    ],
}
_FOLLOW_COVERS: Final = frozenset(
    {"read:follows", "write:follows", "read:blocks", "write:blocks", "read:mutes", "write:mutes"}
)
KNOWN_SCOPES: Final = TOP_SCOPES | {f"{top}:{g}" for top, gs in _GRANULAR.items() for g in gs}
DEFAULT_SCOPES: Final = "read"


class OAuthError(Invalid):
    """An OAuth refusal (RFC 6749 §5.2): `code` is the OAuth error name."""

    status = 400


class InvalidClient(OAuthError):
    status = 401
    code = "invalid_client"


class InvalidGrant(OAuthError):
    code = "invalid_grant"


class InvalidScope(OAuthError):
    code = "invalid_scope"


class OutsideScopes(SocialError):
    """A token used beyond its scopes (Mastodon's message)."""

    status = 403
    code = "outside_scopes"


def outside_scopes() -> OutsideScopes:
    return OutsideScopes("This action is outside the authorized scopes")


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: object, *, default: str = DEFAULT_SCOPES) -> frozenset[str]:
    """Scopes as a client sends them (space-separated; `+` too, as some clients send)."""
    if text is None or text == "":
        text = default
    if not isinstance(text, str) or len(text) > SCOPES_CHARS_MAX:
        raise InvalidScope(f"scopes must be a string of at most {SCOPES_CHARS_MAX} characters")
    scopes = frozenset(text.replace("+", " ").split())
    unknown = sorted(scopes - KNOWN_SCOPES)
    if unknown:
        raise InvalidScope(f"unknown scope {unknown[0][:40]!r}")
    if not scopes:
        raise InvalidScope("no scope given")
    return scopes


def scope_text(scopes: frozenset[str]) -> str:
    return " ".join(sorted(scopes))


def allows(scopes: frozenset[str], needed: str) -> bool:
    """True when a token with `scopes` may do what needs the granular scope `needed`."""
    top = needed.split(":", 1)[0]
    return needed in scopes or top in scopes or ("follow" in scopes and needed in _FOLLOW_COVERS)


def covered(asked: frozenset[str], granted: frozenset[str]) -> bool:
    """Every asked scope lies within the granted ones (an app's registration)."""
    return all(s in granted or s.split(":", 1)[0] in granted for s in asked)


@dataclass(frozen=True, slots=True)
class App:
    app_id: int
    client_id: str
    name: str
    website: str | None
    redirect_uris: tuple[str, ...]
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Grant:
    """What a token allows: its user (None for an app token), its app and scopes."""

    user_id: int | None
    app_id: int
    scopes: frozenset[str]


@dataclass(frozen=True, slots=True)
class Issued:
    access_token: str
    refresh_token: str | None
    scopes: frozenset[str]
    created_unix_s: float


def _app(row: sa.Row[tuple[object, ...]]) -> App:
    return App(
        app_id=int(row.app_id),
        client_id=row.client_id,
        name=row.name,
        website=row.website,
        redirect_uris=tuple(row.redirect_uris.split()),
        scopes=frozenset(row.scopes.split()),
    )


def _text(value: object, what: str, chars_max: int, *, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise Invalid(f"{what} is required")
        return None
    if not isinstance(value, str) or len(value) > chars_max:
        raise Invalid(f"{what} must be a string of at most {chars_max} characters")
    return value


async def register_app(
    db: Database,
    id_gen: IdGenerator,
    *,
    name: object,
    redirect_uris: object,
    scopes: object,
    website: object,
) -> tuple[App, str]:
    """A new app and its client secret (the only time the secret exists in clear)."""
    app_name = _text(name, "client_name", APP_NAME_CHARS_MAX, required=True)
    uris_text = _text(redirect_uris, "redirect_uris", REDIRECT_URIS_CHARS_MAX, required=True)
    assert app_name is not None and uris_text is not None
    uris = tuple(uris_text.split())
    for uri in uris:
        if uri != OOB_REDIRECT and not uri.partition(":")[0].isalnum():
            raise Invalid("redirect_uris must be absolute URIs or " + OOB_REDIRECT)
    site = _text(website, "website", APP_WEBSITE_CHARS_MAX, required=False)
    granted = parse_scopes(scopes)
    client_id = secrets.token_urlsafe(SECRET_BYTES)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    app_id = id_gen.next_id()
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            oauth_apps.insert().values(
                app_id=app_id,
                client_id=client_id,
                client_secret_sha256=digest(secret),
                name=app_name,
                website=site,
                redirect_uris="\n".join(uris),
                scopes=scope_text(granted),
                created_unix_s=time.time(),
            )
        )
    return App(app_id, client_id, app_name, site, uris, granted), secret


async def app_by_client_id(db: Database, client_id: object) -> App | None:
    if not isinstance(client_id, str) or not 0 < len(client_id) <= SECRET_CHARS:
        return None
    async with db.snapshot() as conn:
        row = (
            await conn.execute(sa.select(oauth_apps).where(oauth_apps.c.client_id == client_id))
        ).first()
    return None if row is None else _app(row)


async def client(db: Database, client_id: object, client_secret: object) -> App:
    """The app these client credentials name; InvalidClient otherwise."""
    app = await app_by_client_id(db, client_id)
    if app is None or not isinstance(client_secret, str) or len(client_secret) > 200:
        raise InvalidClient("unknown client or wrong client secret")
    async with db.snapshot() as conn:
        stored = (
            await conn.execute(
                sa.select(oauth_apps.c.client_secret_sha256).where(
                    oauth_apps.c.app_id == app.app_id
                )
            )
        ).scalar_one()
    if not secrets.compare_digest(stored, digest(client_secret)):
        raise InvalidClient("unknown client or wrong client secret")
    return app


def requested_scopes(app: App, asked: object) -> frozenset[str]:
    """The scopes asked for (the app's own when none), which its registration must cover."""
    scopes = parse_scopes(asked, default=scope_text(app.scopes))
    if not covered(scopes, app.scopes):
        raise InvalidScope("the requested scopes exceed those the app registered")
    return scopes


def check_redirect(app: App, redirect_uri: object) -> str:
    uri = redirect_uri if isinstance(redirect_uri, str) and redirect_uri else None
    if uri is None and len(app.redirect_uris) == 1:
        uri = app.redirect_uris[0]
    if uri is None or uri not in app.redirect_uris:
        raise InvalidGrant("redirect_uri is not one the app registered")
    return uri


async def new_code(
    db: Database, app: App, user_id: int, scopes: frozenset[str], redirect_uri: str
) -> str:
    code = secrets.token_urlsafe(SECRET_BYTES)
    now = time.time()
    async with db.transaction(lock=LOCK) as conn:
        # Expired codes go as new ones come: the table holds at most CODE_TTL_S of them.
        await conn.execute(
            oauth_codes.delete().where(oauth_codes.c.created_unix_s < now - CODE_TTL_S)
        )
        await conn.execute(
            oauth_codes.insert().values(
                code_sha256=digest(code),
                app_id=app.app_id,
                user_id=user_id,
                scopes=scope_text(scopes),
                redirect_uri=redirect_uri,
                created_unix_s=now,
            )
        )
    return code


async def redeem_code(
    db: Database, app: App, code: object, redirect_uri: object
) -> tuple[int, frozenset[str]]:
    """The (user, scopes) of an unused, unexpired code of this app; it is used up now."""
    if not isinstance(code, str) or not 0 < len(code) <= 200:
        raise InvalidGrant("the authorization code is not valid")
    now = time.time()
    c = oauth_codes.c
    async with db.transaction(lock=LOCK) as conn:
        row = (
            await conn.execute(sa.select(oauth_codes).where(c.code_sha256 == digest(code)))
        ).first()
        if (
            row is None
            or row.app_id != app.app_id
            or row.used_unix_s is not None
            or row.created_unix_s < now - CODE_TTL_S
        ):
            raise InvalidGrant("the authorization code is not valid (used, expired or unknown)")
        if isinstance(redirect_uri, str) and redirect_uri and redirect_uri != row.redirect_uri:
            raise InvalidGrant("redirect_uri differs from the authorization request's")
        await conn.execute(
            oauth_codes.update().where(c.code_sha256 == row.code_sha256).values(used_unix_s=now)
        )
    return int(row.user_id), frozenset(row.scopes.split())


async def issue(
    db: Database,
    config: SocialConfig,
    app: App,
    user_id: int | None,
    scopes: frozenset[str],
    *,
    user_agent: str,
    address: str,
) -> Issued:
    """A new access token (a session when there is a user) with a refresh token (users
    only)."""
    now = time.time()
    refresh: str | None = None
    if user_id is None:
        token = secrets.token_urlsafe(SECRET_BYTES)
    else:
        token = await sessions.open_session(
            db,
            user_id,
            per_user_max=config.sessions_per_user_max,
            user_agent=user_agent,
            address=address,
        )
        refresh = secrets.token_urlsafe(SECRET_BYTES)
    async with db.transaction(lock=LOCK) as conn:
        await conn.execute(
            oauth_tokens.insert().values(
                token_sha256=digest(token),
                app_id=app.app_id,
                user_id=user_id,
                scopes=scope_text(scopes),
                refresh_sha256=None if refresh is None else digest(refresh),
                created_unix_s=now,
            )
        )
    return Issued(token, refresh, scopes, now)


async def refresh(
    db: Database,
    config: SocialConfig,
    app: App,
    refresh_token: object,
    asked: object,
    *,
    user_agent: str,
    address: str,
) -> Issued:
    """Exchanges a refresh token for a new access and refresh token (rotation: the old
    pair is revoked). A refresh token lasts session_days_max days from its issue."""
    if not isinstance(refresh_token, str) or not 0 < len(refresh_token) <= 200:
        raise InvalidGrant("the refresh token is not valid")
    now = time.time()
    t = oauth_tokens.c
    async with db.transaction(lock=LOCK) as conn:
        row = (
            await conn.execute(
                sa.select(oauth_tokens).where(t.refresh_sha256 == digest(refresh_token))
            )
        ).first()
        if (
            row is None
            or row.app_id != app.app_id
            or row.revoked_unix_s is not None
            or row.user_id is None
            or row.created_unix_s < now - config.session_days_max * DAY_S
        ):
            raise InvalidGrant("the refresh token is not valid (used, revoked or unknown)")
        granted = frozenset(row.scopes.split())
        scopes = parse_scopes(asked, default=scope_text(granted))
        if not covered(scopes, granted):
            raise InvalidScope("a refresh cannot widen the token's scopes")
        await conn.execute(
            oauth_tokens.update()
            .where(t.token_sha256 == row.token_sha256)
            .values(revoked_unix_s=now)
        )
        await conn.execute(
            session_rows.update()
            .where(session_rows.c.token_sha256 == row.token_sha256)
            .values(revoked_unix_s=now)
        )
    # The new pair is issued after the old one's revocation commits: a crash between
    # them costs the user a sign-in, never two live pairs from one refresh token.
    return await issue(
        db, config, app, int(row.user_id), scopes, user_agent=user_agent, address=address
    )


async def revoke(db: Database, app: App, token: object) -> None:
    """Revokes an access token of this app (or the pair a refresh token belongs to); an
    unknown token is no error (RFC 7009)."""
    if not isinstance(token, str) or not 0 < len(token) <= 200:
        return
    now = time.time()
    t = oauth_tokens.c
    async with db.transaction(lock=LOCK) as conn:
        row = (
            await conn.execute(
                sa.select(t.token_sha256).where(
                    t.app_id == app.app_id,
                    sa.or_(t.token_sha256 == digest(token), t.refresh_sha256 == digest(token)),
                )
            )
        ).first()
        if row is None:
            return
        await conn.execute(
            oauth_tokens.update()
            .where(t.token_sha256 == row.token_sha256)
            .values(revoked_unix_s=now)
        )
        s = session_rows
        await conn.execute(
            s.update()
            .where(s.c.token_sha256 == row.token_sha256, s.c.revoked_unix_s.is_(None))
            .values(revoked_unix_s=now)
        )


async def grant_of(db: Database, token: str) -> Grant | None:
    """The grant of an OAuth token, None when the token is not one (a pinhole session, or
    nothing). Raises AuthFailed for a revoked OAuth token; whether a user's token still
    lives is the session's to say (sessions.authenticate)."""
    t = oauth_tokens.c
    async with db.snapshot() as conn:
        row = (
            await conn.execute(
                sa.select(t.user_id, t.app_id, t.scopes, t.revoked_unix_s).where(
                    t.token_sha256 == digest(token)
                )
            )
        ).first()
    if row is None:
        return None
    if row.revoked_unix_s is not None:
        raise AuthFailed("the token is not valid (revoked)")
    return Grant(
        None if row.user_id is None else int(row.user_id),
        int(row.app_id),
        frozenset(row.scopes.split()),
    )


async def app_by_id(db: Database, app_id: int) -> App | None:
    async with db.snapshot() as conn:
        row = (
            await conn.execute(sa.select(oauth_apps).where(oauth_apps.c.app_id == app_id))
        ).first()
    return None if row is None else _app(row)
