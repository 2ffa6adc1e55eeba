"""The OpenAPI description of the tus endpoints (api/tus.py), merged into /api/openapi.json."""

from __future__ import annotations

from typing import Any, Final

_ERR: Final = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
_ID: Final = {"name": "upload_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _h(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


def _e(description: str) -> dict[str, Any]:
    return {"description": description, **_ERR}


_TUS: Final = {"Tus-Resumable": _h("1.0.0")}
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
                {
                    "name": "Tus-Resumable",
                    "in": "header",
                    "required": True,
                    "schema": {"const": "1.0.0"},
                },
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
                "429": _e("too many incomplete uploads for this user"),
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
                {
                    "name": "Upload-Offset",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "integer"},
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
                "409": _e("Upload-Offset mismatch, or another PATCH in progress"),
                "410": _e("expired"),
                "412": _e("unsupported Tus-Resumable"),
                "413": _e("body past Upload-Length, or the media over its limit"),
                "415": _e("wrong Content-Type, or the completed file is not a supported format"),
                "422": _e("the completed file is rejected (see POST /api/v1/media/upload)"),
                "460": _e("checksum mismatch: the chunk was discarded"),
                "503": _e("no writable volume: a later empty PATCH retries the ingest"),
            },
        },
        "delete": {
            "summary": "tus termination: abandon the upload",
            "security": [{"bearer": []}],
            "parameters": [_ID],
            "responses": {
                "204": {"description": "gone", "headers": _TUS},
                "401": _e("no or bad bearer token"),
                "404": _e("no such upload"),
                "410": _e("expired"),
            },
        },
        "get": {
            "summary": "The upload's state as JSON",
            "security": [{"bearer": []}],
            "parameters": [_ID],
            "responses": {
                "200": {"description": "{upload_id, offset, length, expires_at, media_id}"},
                "401": _e("no or bad bearer token"),
                "404": _e("no such upload"),
                "410": _e("expired"),
            },
        },
    },
}
