"""The OpenAPI 3.1 document of the public API, served at /api/openapi.json. Every route
the application registers is described here (tests/api/test_openapi.py checks both ways)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from api import openapi_social, tus

_ERROR_REF: Final = {"$ref": "#/components/schemas/Error"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}}


_AUTH_ERRORS: Final = {"401": _error("no or bad bearer token")}

MEDIA_SCHEMA: Final = {
    "type": "object",
    "required": ["media_id", "media_type", "status", "urls", "variants"],
    "properties": {
        "media_id": {"type": "string", "description": "64-bit id as a decimal string"},
        "media_type": {"enum": ["image", "video"]},
        "status": {"enum": ["processing", "ready", "failed"]},
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
        "original_url": {"type": "string", "description": "the upload as sent; owner only"},
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
                "400": _error("malformed form, unknown field, empty file"),
                **_AUTH_ERRORS,
                "413": _error("file over the image or video size limit"),
                "415": _error("not a JPEG, PNG, HEIC, WebP, MP4 or MOV file"),
                "422": _error("corrupt, truncated, too many pixels, bad dimensions, too long"),
                "503": _error("no writable volume, or too many uploads in progress"),
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
    "/healthz": {
        "get": {
            "summary": "Liveness: the process serves and its database answers",
            "responses": {"200": {"description": "{ok: true, uploads_inflight}"}},
        }
    },
    "/api/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": {"description": "OpenAPI 3.1 JSON"}},
        }
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "pinhole API", "version": "1"},
        "paths": {**MEDIA_PATHS, **tus.OPENAPI_PATHS, **openapi_social.PATHS},
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
            },
        },
    }


async def serve(request: web.Request) -> web.Response:
    return web.json_response(document())
