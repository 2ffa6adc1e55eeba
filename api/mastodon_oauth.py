"""The Mastodon client API's plumbing and OAuth 2 (docs/api/mastodon.md): reading input as
Mastodon clients send it (query, JSON, form or multipart, `name[]` lists), authenticating
with a scope, the error shape Mastodon answers, and the OAuth routes: POST /api/v1/apps,
GET/POST /oauth/authorize (with the out-of-band redirect), POST /oauth/token (password,
authorization_code, refresh_token and client_credentials grants), POST /oauth/revoke and
/.well-known/oauth-authorization-server. The rules live in social/oauth.py."""

from __future__ import annotations

import base64
import binascii
import html
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from api import auth, client_address, params
from api.context import CONTEXT, RATE
from api.errors import ApiError, NotAuthenticated
from common.errors import PinholeError
from social import oauth, ratelimit, sessions, signin
from social.errors import AuthFailed, Invalid

log = logging.getLogger("pinhole.api")
routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Apps registered per client address an hour (registration needs no account).
APPS_PER_ADDRESS_HOUR_MAX: Final = 30
_FORM_TYPES: Final = ("application/x-www-form-urlencoded", "multipart/form-data")


class NeedsUser(ApiError):
    """An app token (client_credentials) on a route that acts as a user."""

    status = 422
    code = "needs_user"


def base_url(request: web.Request) -> str:
    return str(request.url.origin())


async def inputs(request: web.Request) -> dict[str, Any]:
    """The request's parameters: the query, then the body (JSON object, URL-encoded or
    multipart form). `name[]` keys (repeated) become a list under `name`; every value is
    checked to be storable text (api/params.py)."""
    out: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, str):
            params.text(value, f"parameter {key[:40]!r}")
        if key.endswith("[]"):
            out.setdefault(key[:-2], []).append(value)
        else:
            out[key] = value

    for key, value in request.query.items():
        put(params.text(key, "a parameter name"), value)
    if request.method in ("POST", "PUT", "PATCH") and request.can_read_body:
        if request.content_type == "application/json":
            for key, value in (await params.json_body(request)).items():
                if isinstance(value, list) and key.endswith("[]"):
                    out[key[:-2]] = value
                else:
                    out[key] = value
        elif request.content_type in _FORM_TYPES:
            try:
                form = await request.post()
            except (HttpProcessingError, ValueError, LookupError, RuntimeError, Warning):
                # aiohttp's refusals of the form's framing (as api/media_routes.py's).
                raise Invalid("the form body is malformed") from None
            for key, field in form.items():
                if not isinstance(field, str):
                    raise Invalid(f"unexpected file in form field {key[:40]!r}")
                put(params.text(key, "a parameter name"), field)
    return out


async def oauth_grant(request: web.Request) -> oauth.Grant | None:
    """The OAuth grant of the request's bearer token; None when it is a pinhole session (or
    there is no token: the route then answers 401 itself)."""
    header = request.headers.get("Authorization", "")
    if not header:
        return None
    token = auth.bearer(request)
    if not token.isascii():
        raise NotAuthenticated("the token is not valid")
    return await oauth.grant_of(request.app[CONTEXT].db, token)


async def user_of(request: web.Request, scope: str) -> int:
    """The user acting, when the token's scopes cover `scope` (a granular scope such as
    "read:statuses"). A pinhole session (POST /api/v1/sessions) holds every scope."""
    ctx = request.app[CONTEXT]
    token = auth.bearer(request)
    if not token.isascii():
        raise NotAuthenticated("the token is not valid")
    try:
        user_id, scopes = await sessions.authenticate_scoped(ctx.db, token, ctx.social)
    except AuthFailed:
        grant = await oauth.grant_of(ctx.db, token)
        if grant is not None and grant.user_id is None:
            raise NeedsUser("This method requires an authenticated user") from None
        raise
    if scopes is not None and not oauth.allows(scopes, scope):
        raise oauth.outside_scopes()
    return user_id


def error_body(e: PinholeError, *, oauth_route: bool) -> dict[str, str]:
    if oauth_route:
        code = e.code if isinstance(e, oauth.OAuthError) else _oauth_code(e)
        return {"error": code, "error_description": e.message}
    return {"error": e.message}


def _oauth_code(e: PinholeError) -> str:
    if isinstance(e, AuthFailed):
        return "invalid_grant"
    if e.status == 429:
        return "rate_limited"
    return "invalid_request"


def mastodon_error(request: web.Request, e: Exception) -> web.Response:
    """Any failure of a Mastodon route as Mastodon answers it: `{"error": "..."}` (OAuth
    routes: `{"error": code, "error_description": ...}`), with the same status pinhole
    gives it; never a 5xx for bad input."""
    oauth_route = request.path.startswith("/oauth/")
    if isinstance(e, PinholeError) and 400 <= e.status <= 599 and e.code != PinholeError.code:
        if e.status >= 500 and not isinstance(e, ApiError):
            log.error("%s %s refused: %s", request.method, request.path, e.message)
        response = web.json_response(error_body(e, oauth_route=oauth_route), status=e.status)
        response.headers.update(e.headers())
        if e.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="pinhole"'
        return response
    if isinstance(e, web.HTTPException):
        response = web.json_response({"error": e.reason}, status=e.status)
        if e.status == 405 and "Allow" in e.headers:
            response.headers["Allow"] = e.headers["Allow"]
        return response
    log.error("request %s %s failed", request.method, request.path, exc_info=e)
    return web.json_response({"error": "internal server error"}, status=500)


# -- apps -------------------------------------------------------------------------------


def _app_document(app: oauth.App, *, secret: str | None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(app.app_id),
        "name": app.name,
        "website": app.website,
        "scopes": sorted(app.scopes),
        "redirect_uri": "\n".join(app.redirect_uris),
        "redirect_uris": list(app.redirect_uris),
        "vapid_key": "",
    }
    if secret is not None:
        doc["client_id"] = app.client_id
        doc["client_secret"] = secret
        doc["client_secret_expires_at"] = 0
    return doc


@routes.post("/api/v1/apps")
async def create_app(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await inputs(request)
    address = client_address.of_request(request, ctx.config.trusted_proxies)
    got = await ctx.counters.incr(f"oauth_app:{address}", window_s=ratelimit.HOUR_S)
    if got.count > APPS_PER_ADDRESS_HOUR_MAX:
        raise ratelimit.refused("apps", APPS_PER_ADDRESS_HOUR_MAX, ratelimit.HOUR_S, got.reset_s)
    uris = body.get("redirect_uris")
    if isinstance(uris, list):
        uris = "\n".join(u for u in uris if isinstance(u, str))
    app, secret = await oauth.register_app(
        ctx.db,
        ctx.ids,
        name=body.get("client_name"),
        redirect_uris=uris,
        scopes=body.get("scopes"),
        website=body.get("website"),
    )
    return web.json_response(_app_document(app, secret=secret))


@routes.get("/api/v1/apps/verify_credentials")
async def verify_app(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    grant = await oauth_grant(request)
    if grant is None:
        raise NotAuthenticated("an OAuth token is required")
    app = await oauth.app_by_id(ctx.db, grant.app_id)
    if app is None:
        raise NotAuthenticated("the token's app is gone")
    return web.json_response(_app_document(app, secret=None))


@routes.get("/.well-known/oauth-authorization-server")
async def server_metadata(request: web.Request) -> web.Response:
    base = base_url(request)
    return web.json_response(
        {
            "issuer": base + "/",
            "authorization_endpoint": base + "/oauth/authorize",
            "token_endpoint": base + "/oauth/token",
            "revocation_endpoint": base + "/oauth/revoke",
            "app_registration_endpoint": base + "/api/v1/apps",
            "scopes_supported": sorted(oauth.KNOWN_SCOPES),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query", "fragment", "form_post"],
            "grant_types_supported": [
                "authorization_code",
                "password",
                "client_credentials",
                "refresh_token",
            ],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "code_challenge_methods_supported": [],
            "service_documentation": base + "/api/openapi.json",
        }
    )


# -- authorize ----------------------------------------------------------------------------

_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize {app} on pinhole</title></head>
<body><main>
<h1>Authorize {app}</h1>
<p>{app} asks for: {scopes}</p>
{error}
<form method="post" action="/oauth/authorize">
<input type="hidden" name="client_id" value="{client_id}">
<input type="hidden" name="redirect_uri" value="{redirect_uri}">
<input type="hidden" name="scope" value="{scope}">
<input type="hidden" name="state" value="{state}">
<label>Username <input name="username" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password"
 required></label>
<button type="submit">Authorize</button>
</form></main></body></html>
"""

_CODE_PAGE: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Authorization code</title></head>
<body><main><h1>Authorization code</h1>
<p>Copy this code and paste it into {app}:</p>
<p><code id="code">{code}</code></p></main></body></html>
"""


async def _authorize_request(
    body: dict[str, Any], request: web.Request
) -> tuple[oauth.App, str, frozenset[str]]:
    ctx = request.app[CONTEXT]
    app = await oauth.app_by_client_id(ctx.db, body.get("client_id"))
    if app is None:
        raise oauth.InvalidClient("unknown client_id")
    redirect_uri = oauth.check_redirect(app, body.get("redirect_uri"))
    scopes = oauth.requested_scopes(app, body.get("scope"))
    return app, redirect_uri, scopes


def _page(
    app: oauth.App, redirect_uri: str, scopes: frozenset[str], state: str, error: str
) -> web.Response:
    e = html.escape
    return web.Response(
        text=_PAGE.format(
            app=e(app.name),
            scopes=e(", ".join(sorted(scopes))),
            client_id=e(app.client_id),
            redirect_uri=e(redirect_uri),
            scope=e(oauth.scope_text(scopes)),
            state=e(state),
            error=f'<p role="alert">{e(error)}</p>' if error else "",
        ),
        content_type="text/html",
        status=401 if error else 200,
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"},
    )


@routes.get("/oauth/authorize")
async def authorize_page(request: web.Request) -> web.Response:
    body = await inputs(request)
    if body.get("response_type", "code") != "code":
        raise oauth.OAuthError("response_type must be code", code="unsupported_response_type")
    app, redirect_uri, scopes = await _authorize_request(body, request)
    state = body.get("state")
    return _page(app, redirect_uri, scopes, state if isinstance(state, str) else "", "")


@routes.post("/oauth/authorize")
async def authorize(request: web.Request) -> web.Response:
    """The sign-in form's answer: the user's password, checked under the sign-in
    throttles (social/signin.py), grants a code for the app."""
    ctx = request.app[CONTEXT]
    body = await inputs(request)
    app, redirect_uri, scopes = await _authorize_request(body, request)
    state = body.get("state") if isinstance(body.get("state"), str) else ""
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise Invalid("username and password are required")
    try:
        user, _ = await signin.sign_in(
            ctx.db,
            ctx.counters,
            ctx.social,
            username=username,
            password=password,
            address=client_address.of_request(request, ctx.config.trusted_proxies),
        )
    except AuthFailed:
        return _page(app, redirect_uri, scopes, str(state), "Wrong username or password.")
    code = await oauth.new_code(ctx.db, app, user.user_id, scopes, redirect_uri)
    if redirect_uri == oauth.OOB_REDIRECT:
        return web.Response(
            text=_CODE_PAGE.format(app=html.escape(app.name), code=html.escape(code)),
            content_type="text/html",
            headers={"Cache-Control": "no-store"},
        )
    query = {"code": code} | ({"state": state} if state else {})
    sep = "&" if "?" in redirect_uri else "?"
    return web.Response(
        status=302,
        headers={"Location": redirect_uri + sep + urlencode(query), "Cache-Control": "no-store"},
    )


# -- token ----------------------------------------------------------------------------------


def token_document(issued: oauth.Issued) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "access_token": issued.access_token,
        "token_type": "Bearer",
        "scope": oauth.scope_text(issued.scopes),
        "created_at": int(issued.created_unix_s),
    }
    if issued.refresh_token is not None:
        doc["refresh_token"] = issued.refresh_token
    return doc


async def _client(request: web.Request, body: dict[str, Any]) -> oauth.App:
    client_id, secret = body.get("client_id"), body.get("client_secret")
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            pair = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise oauth.InvalidClient("malformed Basic credentials") from None
        client_id, _, secret = pair.partition(":")
    return await oauth.client(request.app[CONTEXT].db, client_id, secret)


@routes.post("/oauth/token")
async def token(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await inputs(request)
    app = await _client(request, body)
    grant_type = body.get("grant_type")
    agent = request.headers.get("User-Agent", "")
    address = client_address.of_request(request, ctx.config.trusted_proxies)
    if grant_type == "password":
        # The username is pinhole's; toot sends it as "username" too, from a prompt
        # labelled "email" (Mastodon's password grant takes the email address).
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise oauth.OAuthError("username and password are required", code="invalid_request")
        scopes = oauth.requested_scopes(app, body.get("scope"))
        user, request[RATE] = await signin.sign_in(
            ctx.db, ctx.counters, ctx.social, username=username, password=password, address=address
        )
        issued = await oauth.issue(
            ctx.db, ctx.social, app, user.user_id, scopes, user_agent=agent, address=address
        )
    elif grant_type == "authorization_code":
        user_id, scopes = await oauth.redeem_code(
            ctx.db, app, body.get("code"), body.get("redirect_uri")
        )
        issued = await oauth.issue(
            ctx.db, ctx.social, app, user_id, scopes, user_agent=agent, address=address
        )
    elif grant_type == "refresh_token":
        issued = await oauth.refresh(
            ctx.db,
            ctx.social,
            app,
            body.get("refresh_token"),
            body.get("scope"),
            user_agent=agent,
            address=address,
        )
    elif grant_type == "client_credentials":
        scopes = oauth.requested_scopes(app, body.get("scope"))
        issued = await oauth.issue(
            ctx.db, ctx.social, app, None, scopes, user_agent=agent, address=address
        )
    else:
        raise oauth.OAuthError(
            "grant_type must be password, authorization_code, refresh_token or client_credentials",
            code="unsupported_grant_type",
        )
    return web.json_response(
        token_document(issued), headers={"Cache-Control": "no-store", "Pragma": "no-cache"}
    )


@routes.post("/oauth/revoke")
async def revoke(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await inputs(request)
    app = await _client(request, body)
    await oauth.revoke(ctx.db, app, body.get("token"))
    return web.json_response({})
