"""The OpenAPI 3.1 document of the public API, served at /api/openapi.json. Every route
the application registers is described here (tests/api/test_media.py checks both ways, and
tests/api/test_schemathesis.py that the answers match it).

Answers that come from the shared machinery rather than a route (api/params.py's input
checks, bearer sessions, the JSON body limit, ids in paths) are added to every operation
they apply to in one place, `_shared_errors`."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from api import (
    openapi_explore,
    openapi_mastodon,
    openapi_messages,
    openapi_search,
    openapi_social,
    openapi_stories,
    tus,
    username_routes,
)
from transformer.media_store import GONE, MediaStatus

_ERROR_REF: Final = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


def _header(description: str, kind: str = "integer") -> dict[str, Any]:
    return {"description": description, "schema": {"type": kind}}


_AUTH_ERRORS: Final = {"401": _error("no or bad bearer token")}
RETRY_AFTER: Final = {"Retry-After": _header("seconds")}
QUOTA_HEADERS: Final = {
    **RETRY_AFTER,
    "X-RateLimit-Limit": _header("the daily limit that was reached (uploads or bytes)"),
    "X-RateLimit-Remaining": _header("what is left of it"),
    "X-RateLimit-Reset": _header("seconds until the oldest upload of the day leaves the window"),
}


def quota_error() -> dict[str, Any]:
    return {
        **_error("over uploads_per_day_max or upload_bytes_per_day_max (upload_quota_exceeded)"),
        "headers": QUOTA_HEADERS,
    }


def unavailable_error(description: str) -> dict[str, Any]:
    return {**_error(description), "headers": RETRY_AFTER}


# The statuses a client sees: a gone media (expired, deleted) is answered as not found.
_MEDIA_STATUSES_SHOWN: Final = [str(s) for s in MediaStatus if s not in GONE]

MEDIA_SCHEMA: Final = {
    "type": "object",
    "required": ["media_id", "media_type", "status", "urls", "variants"],
    "properties": {
        "media_id": {"type": "string", "description": "64-bit id as a decimal string"},
        "media_type": {"enum": ["image", "video"]},
        "status": {"enum": _MEDIA_STATUSES_SHOWN},
        "width": {"type": "integer"},
        "height": {"type": "integer"},
        "duration_s": {"type": ["number", "null"]},
        "filter_id": {"type": ["string", "null"]},
        "placeholder": {"type": ["string", "null"], "description": "blurhash, 4x3"},
        "created_at": {"type": "string", "format": "date-time"},
        "ready_at": {"type": ["string", "null"], "format": "date-time"},
        "expires_at": {
            "type": ["string", "null"],
            "format": "date-time",
            "description": "unattached media expires then and its photos are deleted",
        },
        "original_url": {
            "type": "string",
            "description": "owner only: the API path that downloads the upload as sent "
            "(GET, with the owner's session); no photo URL leads to it",
        },
        "urls": {
            "type": "object",
            "description": "variant name -> photo URL (negotiated: the router picks AVIF, "
            "WebP or JPEG from Accept); 'hls' is the master playlist of a video",
            "additionalProperties": {"type": "string"},
        },
        "variants": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {
                    "width": {"type": "integer"},
                    "height": {"type": "integer"},
                    "formats": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
        },
        "error": {"type": "object", "properties": {"code": {"type": "string"}}},
    },
}

MEDIA_PATHS: Final[dict[str, Any]] = {
    "/api/v1/media/upload": {
        "post": {
            "summary": "Upload a photo or video",
            "description": "The original is stored on every replica before the answer; "
            "variants follow (status processing -> ready). Validation is by content.",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "required": ["file"],
                            "properties": {
                                "file": {"type": "string", "format": "binary"},
                                "media_type": {"enum": ["image", "video"]},
                                "filter_id": {
                                    "enum": ["clarendon", "gingham", "juno", "lark", "moon"]
                                },
                            },
                        }
                    }
                },
            },
            "responses": {
                "201": {
                    "description": "stored; variants in progress",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Media"}}
                    },
                },
                "400": _error(
                    "malformed form or multipart body, unknown field, a name that is not text, "
                    "empty file"
                ),
                **_AUTH_ERRORS,
                "408": _error("the body arrived below upload_body_rate_bytes_per_s_min"),
                "413": _error("file over the image or video size limit"),
                "415": _error("not a JPEG, PNG, HEIC, WebP, MP4 or MOV file"),
                "422": _error("corrupt, truncated, too many pixels, bad dimensions, too long"),
                "429": quota_error(),
                "503": unavailable_error(
                    "no writable volume, too many uploads in progress, or the staging space is full"
                ),
            },
        }
    },
    "/api/v1/media/{media_id}": {
        "get": {
            "summary": "A media and the URLs of its variants",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "media_id", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "wait_s",
                    "in": "query",
                    "schema": {"type": "number", "minimum": 0},
                    "description": "wait up to this long for a processing media to finish",
                },
            ],
            "responses": {
                "200": {
                    "description": "the media",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Media"}}
                    },
                },
                "400": _error("bad wait_s"),
                **_AUTH_ERRORS,
                "404": _error("no such media (or not yours, or expired)"),
            },
        }
    },
    "/api/v1/media/{media_id}/original": {
        "get": {
            "summary": "The original upload, bytes as received (EXIF and GPS included): its "
            "owner only",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "media_id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "responses": {
                "200": {
                    "description": "the file, Content-Disposition: attachment, "
                    "Cache-Control: private, no-store",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
                },
                **_AUTH_ERRORS,
                "404": _error("no such media (or not yours, or expired)"),
                "503": _error("the original cannot be read right now"),
            },
        }
    },
    "/healthz": {
        "get": {
            "summary": "Liveness: the process serves and its database answers",
            "responses": {
                "200": {
                    "description": "{ok: true, process, pid, uploads_inflight, staging_bytes}: "
                    "process is which of [api] processes answered (0..processes-1)"
                }
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus text of the API process (internal metrics or admin "
            "credential; docs/operations/metrics.md)",
            "responses": {
                "200": {"description": "Prometheus text exposition 0.0.4"},
                "401": _error("no metrics or admin internal credential"),
            },
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1 JSON"}},
        }
    },
}


def _shared_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """`paths` with the answers any operation gives through the shared machinery, where the
    operation does not describe them itself: 400 for malformed parameters or bodies (bad
    JSON, NUL or lone surrogates in text, a limit or cursor out of range: api/params.py),
    401 when it needs a session, 404 for an id in the path that names nothing, 413 for a
    JSON body over json_body_bytes_max."""
    out: dict[str, Any] = {}
    for path, item in paths.items():
        out[path] = {}
        for method, op in item.items():
            shared: dict[str, Any] = {}
            parameters = op.get("parameters", [])
            body = op.get("requestBody", {}).get("content", {})
            if parameters or body:
                shared["400"] = _error("malformed input (the error names the parameter)")
            if op.get("security"):
                shared["401"] = _error("no bearer token, or a revoked one")
            if any(p["in"] == "path" for p in parameters):
                shared["404"] = _error("the path names nothing (or nothing visible to you)")
            if "application/json" in body:
                shared["413"] = _error("body over json_body_bytes_max")
            out[path][method] = {**op, "responses": {**shared, **op["responses"]}}
    return out


def _merged(paths: dict[str, Any], more: dict[str, Any]) -> dict[str, Any]:
    """`paths` with the operations of `more` (a path both name keeps both's methods)."""
    out = dict(paths)
    for path, item in more.items():
        out[path] = {**out.get(path, {}), **item}
    return out


def document() -> dict[str, Any]:
    paths = {
        **MEDIA_PATHS,
        **tus.OPENAPI_PATHS,
        **openapi_social.PATHS,
        **openapi_messages.PATHS,
        **openapi_stories.PATHS,
        **username_routes.OPENAPI_PATHS,
        **openapi_search.PATHS,
        **openapi_explore.PATHS,
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "pinhole API", "version": "1"},
        # The Mastodon routes describe every answer themselves, in Mastodon's error shape.
        "paths": _merged(_shared_errors(paths), openapi_mastodon.PATHS),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        }
                    },
                },
                "Media": MEDIA_SCHEMA,
                **openapi_social.SCHEMAS,
                **openapi_mastodon.SCHEMAS,
                **openapi_messages.SCHEMAS,
                **openapi_stories.SCHEMAS,
                **openapi_search.SCHEMAS,
            },
        },
    }


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())
