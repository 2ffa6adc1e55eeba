"""The OpenAPI description of the tus endpoints (api/tus.py), merged into /api/openapi.json.
Every error answer carries Tus-Resumable, as the protocol asks."""

from __future__ import annotations

from typing import Any, Final

_ERR: Final = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ID: Final = {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _h(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


_TUS: Final = {"Tus-Resumable": _h("1.0.0")}
_RETRY: Final = {"Retry-After": {"description": "seconds", "schema": {"type": "integer"}}}
_QUOTA: Final = {
    **_RETRY,
    "X-RateLimit-Limit": {"description": "the daily limit reached", "schema": {"type": "integer"}},
    "X-RateLimit-Remaining": {"description": "what is left of it", "schema": {"type": "integer"}},
    "X-RateLimit-Reset": {"description": "seconds", "schema": {"type": "integer"}},
}


def _e(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "headers": {**_TUS, **(headers or {})}, **_ERR}


_STATUS: Final = {
    "type": "object",
    "required": ["upload_id", "offset", "length", "expires_at", "media_id"],
    "properties": {
        "upload_id": {"type": "string"},
        "offset": {"type": "integer", "description": "bytes acknowledged (on disk)"},
        "length": {"type": "integer"},
        "expires_at": {"type": "string", "description": "RFC 9110 date"},
        "media_id": {"type": ["string", "null"], "description": "once complete"},
    },
}
_VERSION: Final = {
    "name": "Tus-Resumable",
    "in": "header",
    "required": True,
    "schema": {"const": "1.0.0"},
}
_OFFSET: Final = {
    **_TUS,
    "Upload-Offset": _h("bytes acknowledged (on disk)"),
    "Upload-Expires": _h("RFC 9110 date after which the upload is gone"),
    "Pinhole-Media-Id": _h("the media made from the upload, once complete"),
}

OPENAPI_PATHS: Final[dict[str, Any]] = {
    "/api/v1/uploads": {
        "options": {
            "summary": "tus: what the server supports",
            "responses": {
                "204": {
                    "description": "capabilities",
                    "headers": {
                        **_TUS,
                        "Tus-Version": _h("1.0.0"),
                        "Tus-Extension": _h("creation,termination,expiration,checksum"),
                        "Tus-Max-Size": _h("bytes"),
                        "Tus-Checksum-Algorithm": _h("sha1,sha256,md5,crc32"),
                    },
                }
            },
        },
        "post": {
            "summary": "tus creation: start a resumable upload",
            "security": [{"bearer": []}],
            "parameters": [
                {
                    "name": "Upload-Length",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 1},
                },
                {
                    "name": "Upload-Metadata",
                    "in": "header",
                    "description": "filename, filetype, media_type, filter_id (base64 values)",
                    "schema": {"type": "string"},
                },
                _VERSION,
            ],
            "responses": {
                "201": {
                    "description": "created",
                    "headers": {"Location": _h("the upload's URL"), **_OFFSET},
                },
                "400": _e("bad Upload-Length or Upload-Metadata; deferred length"),
                "401": _e("no or bad bearer token"),
                "412": _e("unsupported Tus-Resumable"),
                "413": _e("Upload-Length over Tus-Max-Size"),
                "429": _e(
                    "too many incomplete uploads for this user (too_many_uploads), or the "
                    "daily upload quota would be passed (upload_quota_exceeded)",
                    _QUOTA,
                ),
                "503": _e("the staging space cannot take Upload-Length now", _RETRY),
            },
        },
    },
    "/api/v1/uploads/{upload_id}": {
        "head": {
            "summary": "tus: the acknowledged offset",
            "security": [{"bearer": []}],
            "parameters": [_ID],
            "responses": {
                "200": {"description": "offset", "headers": {**_OFFSET, "Upload-Length": _h("")}},
                "401": {"description": "no or bad bearer token"},
                "404": {"description": "no such upload"},
                "410": {"description": "expired"},
            },
        },
        "patch": {
            "summary": "tus: append bytes at Upload-Offset",
            "security": [{"bearer": []}],
            "parameters": [
                _ID,
                _VERSION,
                {
                    "name": "Upload-Offset",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "integer", "minimum": 0},
                },
                {
                    "name": "Upload-Checksum",
                    "in": "header",
                    "description": "'<algorithm> <base64 digest>' of this chunk",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "content": {
                    "application/offset+octet-stream": {
                        "schema": {"type": "string", "format": "binary"}
                    }
                }
            },
            "responses": {
                "204": {"description": "appended (and on disk)", "headers": _OFFSET},
                "400": _e("bad headers; body ended early with a checksum"),
                "401": _e("no or bad bearer token"),
                "404": _e("no such upload"),
                "408": _e(
                    "the body arrived below upload_body_rate_bytes_per_s_min; what arrived is "
                    "kept (unless it carried a checksum)"
                ),
                "409": _e(
                    "Upload-Offset mismatch (offset_mismatch), or another request is writing "
                    "the upload (upload_locked)"
                ),
                "410": _e("expired"),
                "412": _e("unsupported Tus-Resumable"),
                "413": _e("body past Upload-Length, or the media over its limit"),
                "415": _e("wrong Content-Type, or the completed file is not a supported format"),
                "422": _e("the completed file is rejected (see POST /api/v1/media/upload)"),
                "460": _e("checksum mismatch: the chunk was discarded"),
                "503": _e(
                    "no writable volume (a later empty PATCH retries the ingest), too many "
                    "uploads in progress, or the staging space is full (what arrived is kept)",
                    _RETRY,
                ),
            },
        },
        "delete": {
            "summary": "tus termination: abandon the upload",
            "security": [{"bearer": []}],
            "parameters": [_ID, _VERSION],
            "responses": {
                "204": {"description": "gone", "headers": _TUS},
                "401": _e("no or bad bearer token"),
                "404": _e("no such upload"),
                "409": _e("another request is writing the upload (upload_locked)"),
                "410": _e("expired"),
                "412": _e("unsupported Tus-Resumable"),
            },
        },
        "get": {
            "summary": "The upload's state as JSON",
            "security": [{"bearer": []}],
            "parameters": [_ID],
            "responses": {
                "200": {
                    "description": "the upload",
                    "headers": _TUS,
                    "content": {"application/json": {"schema": _STATUS}},
                },
                "401": _e("no or bad bearer token"),
                "404": _e("no such upload"),
                "410": _e("expired"),
            },
        },
    },
}
