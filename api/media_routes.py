"""Media endpoints: POST /api/v1/media/upload (multipart) and GET /api/v1/media/{media_id}.

A multipart upload is spooled to a temporary file under <api data_dir>/incoming while it
arrives (never held whole in memory), counted against the media limits as it streams, then
handed to transformer.ingest, which validates by content and stores the original durably
before the answer. The temporary file is removed whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any, Final

from aiohttp import BodyPartReader, web

from api.context import CONTEXT, ApiContext
from api.errors import BadRequest, NotFound, TooLarge
from api.media_docs import media_document
from common import ids
from social import accounts
from transformer import media_store

SPOOL_FLUSH_BYTES: Final = 1 << 20
MEDIA_WAIT_POLL_S: Final = 0.05

routes = web.RouteTableDef()


async def _text_field(part: BodyPartReader, limit: int) -> str:
    raw = bytearray()
    while chunk := await part.read_chunk(limit + 1):
        raw += chunk
        if len(raw) > limit:
            raise BadRequest(f"form field {part.name!r} is longer than {limit} bytes")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise BadRequest(f"form field {part.name!r} is not UTF-8") from None


async def _spool(part: BodyPartReader, path: Path, limit: int) -> int:
    """Streams a file part to `path`; raises TooLarge past `limit` bytes."""
    total = 0
    buffered: list[bytes] = []
    buffered_bytes = 0
    file = await asyncio.to_thread(open, path, "wb")
    try:
        while chunk := await part.read_chunk(256 * 1024):
            total += len(chunk)
            if total > limit:
                raise TooLarge(
                    f"the file exceeds the upload limit of {limit} bytes", code="file_too_large"
                )
            buffered.append(chunk)
            buffered_bytes += len(chunk)
            if buffered_bytes >= SPOOL_FLUSH_BYTES:
                await asyncio.to_thread(file.write, b"".join(buffered))
                buffered, buffered_bytes = [], 0
        if buffered:
            await asyncio.to_thread(file.write, b"".join(buffered))
    finally:
        await asyncio.to_thread(file.close)
    return total


@routes.post("/api/v1/media/upload")
async def upload(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    owner_id = await ctx.user_id(request)
    if not request.content_type.startswith("multipart/form-data"):
        raise BadRequest("the body must be multipart/form-data with a 'file' part")
    limits = ctx.media.limits
    limit = max(limits.image_bytes_max, limits.video_bytes_max)
    incoming = ctx.config.data_dir / "incoming"
    path = incoming / f"{uuid.uuid4().hex}.upload"
    fields: dict[str, str] = {}
    got_file = False
    with ctx.upload_slot():
        try:
            await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
            reader = await request.multipart()
            for _ in range(ctx.config.form_parts_max):
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, BodyPartReader):
                    raise BadRequest("nested multipart bodies are not accepted")
                if part.name == "file":
                    if got_file:
                        raise BadRequest("only one 'file' part is accepted")
                    await _spool(part, path, limit)
                    got_file = True
                elif part.name in ("media_type", "filter_id"):
                    fields[part.name] = await _text_field(part, ctx.config.form_field_bytes_max)
                else:
                    raise BadRequest(f"unknown form field {part.name!r}")
            else:
                raise BadRequest(f"at most {ctx.config.form_parts_max} form parts")
            if not got_file:
                raise BadRequest("the form has no 'file' part")
            row = await ctx.ingest.ingest(
                path,
                owner_id=owner_id,
                media_type=fields.get("media_type") or None,
                filter_id=fields.get("filter_id") or None,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, path)
    doc = await _document(ctx, row.media_id, owner_id)
    return web.json_response(doc, status=201, headers={"Location": f"/api/v1/media/{row.media_id}"})


async def _document(ctx: ApiContext, media_id: int, viewer_id: int) -> dict[str, Any]:
    got = await media_store.get(ctx.db, media_id)
    # Someone else's media, or one that is gone, is simply not there (no existence leak).
    if got is None or got[0].owner_id != viewer_id or got[0].status in ("expired", "deleted"):
        raise NotFound("no such media")
    row, rows = got
    async with ctx.db.snapshot() as conn:
        owner = await accounts.get(conn, viewer_id)
    private = owner is not None and owner.is_private
    return media_document(row, rows, urls=ctx.photo_urls.for_owner(private=private), owner=True)


@routes.get("/api/v1/media/{media_id}")
async def get_media(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    viewer_id = await ctx.user_id(request)
    try:
        media_id = ids.parse(request.match_info["media_id"])
    except ValueError:
        raise NotFound("no such media") from None
    wait_text = request.query.get("wait_s", "0")
    try:
        wait_s = float(wait_text)
    except ValueError:
        raise BadRequest("wait_s must be a number of seconds") from None
    if not 0 <= wait_s <= ctx.config.media_wait_s_max:
        raise BadRequest(f"wait_s must be within 0..{ctx.config.media_wait_s_max}")
    deadline = time.monotonic() + wait_s
    doc = await _document(ctx, media_id, viewer_id)
    while doc["status"] == "processing" and time.monotonic() < deadline:
        await asyncio.sleep(MEDIA_WAIT_POLL_S)
        doc = await _document(ctx, media_id, viewer_id)
    return web.json_response(doc)
