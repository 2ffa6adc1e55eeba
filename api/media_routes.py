"""Media endpoints: POST /api/v1/media/upload (multipart) and GET /api/v1/media/{media_id}.

A multipart upload is admitted under the user's quota (the count before the body is read,
the bytes once it is), an upload slot, the staging space and the minimum body rate
(api.upload_limits). It is spooled to a temporary file under <api data_dir>/incoming while
it arrives (never held whole in memory), counted against the media limits as it streams,
then handed to transformer.ingest, which validates by content and stores the original
durably before the answer. The temporary file is removed whatever happens. A malformed
multipart body (framing, headers, names or filenames that are not text) is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
import warnings
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from api import params, upload_limits
from api.context import CONTEXT, ApiContext
from api.errors import BadApiRequest, NoSuchResource, TooLarge
from api.media_docs import media_document
from common import ids
from social import accounts
from transformer import media_store

SPOOL_FLUSH_BYTES: Final = 1 << 20
SPOOL_CHUNK_BYTES: Final = 256 * 1024
MEDIA_WAIT_POLL_S: Final = 0.05
FORM_FIELDS: Final = ("media_type", "filter_id")

routes = web.RouteTableDef()

T = TypeVar("T")


def _bad_multipart(detail: str) -> BadApiRequest:
    return BadApiRequest(f"the multipart body is malformed: {detail}", code="bad_multipart")


async def _parsed(step: Awaitable[T]) -> T:
    """One step of aiohttp's multipart parser; its refusals of the framing (boundaries,
    part headers, encodings) become a 400 instead of escaping as a 5xx. Warning too: the
    parser warns about a malformed Content-Disposition, which is an exception wherever
    warnings are errors (`python -W error`, the test suite)."""
    try:
        return await step
    except (HttpProcessingError, ValueError, KeyError, LookupError, RuntimeError, Warning) as e:
        raise _bad_multipart(type(e).__name__) from None


def _disposition(part: BodyPartReader) -> tuple[str | None, str | None]:
    """The part's (name, filename). aiohttp only warns about a malformed
    Content-Disposition and drops what it cannot read; here that is a 400, and so is a
    name or filename that is not text (undecodable bytes, NUL)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, disposition = parse_content_disposition(part.headers.get("Content-Disposition"))
        name = content_disposition_filename(disposition, "name")
        filename = content_disposition_filename(disposition, "filename")
    if caught:
        raise _bad_multipart("a part's Content-Disposition cannot be read")
    if name is not None:
        params.text(name, "a form field name")
    if filename is not None:
        params.text(filename, "a file name")
    return name, filename


async def _text_field(part: BodyPartReader, name: str, limit: int) -> str:
    raw = bytearray()
    while chunk := await _parsed(part.read_chunk(limit + 1)):
        raw += chunk
        if len(raw) > limit:
            raise BadApiRequest(f"form field {name!r} is longer than {limit} bytes")
    try:
        return params.text(raw.decode("utf-8").strip(), f"form field {name!r}")
    except UnicodeDecodeError:
        raise BadApiRequest(f"form field {name!r} is not UTF-8") from None


@dataclass
class _Spooled:
    """The spool file's bytes, each counted in the staging space before it is written."""

    size_bytes: int = 0


async def _spool(
    ctx: ApiContext, part: BodyPartReader, path: Path, limit: int, spooled: _Spooled
) -> None:
    """Streams a file part to `path`; raises TooLarge past `limit` bytes, StagingFull when
    the staging space cannot take the next chunk."""
    buffered: list[bytes] = []
    buffered_bytes = 0
    file = await asyncio.to_thread(open, path, "wb")
    try:
        while chunk := await _parsed(part.read_chunk(SPOOL_CHUNK_BYTES)):
            if spooled.size_bytes + len(chunk) > limit:
                raise TooLarge(
                    f"the file exceeds the upload limit of {limit} bytes", code="file_too_large"
                )
            ctx.staging.reserve(len(chunk))
            spooled.size_bytes += len(chunk)
            buffered.append(chunk)
            buffered_bytes += len(chunk)
            if buffered_bytes >= SPOOL_FLUSH_BYTES:
                await asyncio.to_thread(file.write, b"".join(buffered))
                buffered, buffered_bytes = [], 0
        if buffered:
            await asyncio.to_thread(file.write, b"".join(buffered))
    finally:
        await asyncio.to_thread(file.close)


async def _receive_form(
    request: web.Request,
    ctx: ApiContext,
    path: Path,
    spooled: _Spooled,
    fields_allowed: tuple[str, ...],
) -> dict[str, str]:
    """Reads the form: the file spooled to `path`, the other fields returned."""
    limits = ctx.media.limits
    limit = max(limits.image_bytes_max, limits.video_bytes_max)
    fields: dict[str, str] = {}
    got_file = False
    reader = await _parsed(request.multipart())
    for _ in range(ctx.config.form_parts_max):
        part = await _parsed(reader.next())
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise BadApiRequest("nested multipart bodies are not accepted")
        name, _ = _disposition(part)
        if name == "file":
            if got_file:
                raise BadApiRequest("only one 'file' part is accepted")
            await _spool(ctx, part, path, limit, spooled)
            got_file = True
        elif name in fields_allowed:
            fields[name] = await _text_field(part, name, ctx.config.form_field_bytes_max)
        else:
            raise BadApiRequest(f"unknown form field {name!r}")
    else:
        raise BadApiRequest(f"at most {ctx.config.form_parts_max} form parts")
    if not got_file:
        raise BadApiRequest("the form has no 'file' part")
    return fields


@routes.post("/api/v1/media/upload")
async def upload(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    owner_id = await ctx.user_id(request)
    row, _ = await receive_upload(request, owner_id, fields_allowed=FORM_FIELDS)
    doc = await owner_document(ctx, row.media_id, owner_id)
    return web.json_response(doc, status=201, headers={"Location": f"/api/v1/media/{row.media_id}"})


async def receive_upload(
    request: web.Request, owner_id: int, *, fields_allowed: tuple[str, ...]
) -> tuple[media_store.MediaRow, dict[str, str]]:
    """Receives a multipart upload (a `file` part and the text fields named in
    `fields_allowed`) under every limit above and ingests it: the new media's row and the
    text fields. The Mastodon API's POST /api/v2/media shares it."""
    ctx = request.app[CONTEXT]
    if not request.content_type.startswith("multipart/form-data"):
        raise BadApiRequest("the body must be multipart/form-data with a 'file' part")
    # The count now, before a body is read for nothing; the bytes once they are known.
    await upload_limits.check_quota(ctx.db, ctx.config, owner_id)
    incoming = ctx.config.data_dir / "incoming"
    path = incoming / f"{uuid.uuid4().hex}.upload"
    spooled = _Spooled()
    with ctx.upload_slot():
        try:
            await asyncio.to_thread(incoming.mkdir, parents=True, exist_ok=True)
            async with upload_limits.paced(request.content, ctx.config):
                fields = await _receive_form(request, ctx, path, spooled, fields_allowed)
            await upload_limits.check_quota(
                ctx.db, ctx.config, owner_id, incoming_bytes=spooled.size_bytes
            )
            row = await ctx.ingest.ingest(
                path,
                owner_id=owner_id,
                media_type=fields.get("media_type") or None,
                filter_id=fields.get("filter_id") or None,
            )
        finally:
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(os.unlink, path)
            ctx.staging.release(spooled.size_bytes)
    return row, fields


async def owner_document(ctx: ApiContext, media_id: int, viewer_id: int) -> dict[str, Any]:
    got = await media_store.get(ctx.db, media_id)
    # Someone else's media, or one that is gone, is simply not there (no existence leak).
    if got is None or got[0].owner_id != viewer_id or got[0].status in media_store.GONE:
        raise NoSuchResource("no such media")
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
        raise NoSuchResource("no such media") from None
    wait_text = request.query.get("wait_s", "0")
    try:
        wait_s = float(wait_text)
    except ValueError:
        raise BadApiRequest("wait_s must be a number of seconds") from None
    if not 0 <= wait_s <= ctx.config.media_wait_s_max:
        raise BadApiRequest(f"wait_s must be within 0..{ctx.config.media_wait_s_max}")
    deadline = time.monotonic() + wait_s
    doc = await owner_document(ctx, media_id, viewer_id)
    while doc["status"] == media_store.MediaStatus.PROCESSING and time.monotonic() < deadline:
        await asyncio.sleep(MEDIA_WAIT_POLL_S)
        doc = await owner_document(ctx, media_id, viewer_id)
    return web.json_response(doc)
