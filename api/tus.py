"""Resumable uploads: tus 1.0.0 (core, creation, termination, expiration and checksum
extensions) at /api/v1/uploads, so stock tus clients upload to pinhole.

Contract:
- Every endpoint but OPTIONS needs the bearer token; an upload exists only for the user who
  created it (anyone else: 404). The tus requests (POST, HEAD, PATCH, DELETE) need
  `Tus-Resumable: 1.0.0` (else 412 with `Tus-Version`); GET is pinhole's JSON status.
- Durability: a PATCH streams its body to <[api] data_dir>/tus/<id>.part in batches of
  WRITE_BATCH_BYTES written off the event loop, fdatasyncs, and only then records the new
  offset and answers 204 `Upload-Offset`. A body cut off (connection lost, or idle for
  BODY_IDLE_S_MAX) keeps what arrived: it is synced and recorded like a whole one, unless the
  PATCH carried `Upload-Checksum`, whose unverifiable chunk is discarded. Each PATCH first
  cuts the file to the recorded offset (tus_store.open_part).
- Serialization: one per-upload asyncio.Lock (app[LOCKS], this process only: one API
  process per data_dir). A PATCH arriving while another request holds it answers 409
  `upload_busy` at once (its offset would be stale by then); DELETE and the ingest retry of
  HEAD wait for it; the sweeper skips a held upload until its next pass. The offset is
  also recorded compare-and-set, so a lost update is a 409, never a silent rewind.
- Creation checks what ingest would refuse whatever the bytes (media_type, filter_id, the
  size limit of the declared type) and allows tus_uploads_per_user_max incomplete uploads
  per user (429 `too_many_uploads`).
- Completion: the request that makes offset == length hands the file to `Ingest.ingest`
  like a multipart upload. Success records the media id, removes the file and answers with
  `Pinhole-Media-Id` (HEAD and GET show it too). `Rejected` removes the upload (row and
  file) and is the answer (4xx JSON). Any other failure, notably NoWritableVolume (503),
  keeps the complete upload: the next HEAD, or a PATCH at the final offset (empty body),
  retries the ingest, so a stock client that resumes (HEAD) gets its media once storage is
  back. A crash between a successful ingest and the record of its id ingests again on
  retry; the first media is then never attached and expires (media unattached_ttl_s).
- Expiry: `tus_expiry_s` after creation (Upload-Expires, RFC 9110 date); then 410, and
  the sweeper (every tus_sweep_interval_s) removes the row and the file. A part file found
  missing or short answers 410 `upload_lost` and the upload is removed.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import json
import logging
import os
import re
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final, Protocol

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from api import tus_store
from api.context import CONTEXT, ApiContext
from api.errors import ApiError, BadRequest, NotFound, error_response
from api.media_docs import iso
from api.openapi_tus import OPENAPI_PATHS
from api.tus_store import PartLost, Upload
from common.db import Database
from transformer.errors import Rejected
from transformer.filters import filter_ids
from transformer.ingest import MEDIA_TYPES

log = logging.getLogger("pinhole.api.tus")

TUS_VERSION: Final = "1.0.0"
EXTENSIONS: Final = "creation,termination,expiration,checksum"
CHECKSUM_ALGORITHMS: Final = ("sha1", "sha256", "md5", "crc32")
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
PREFIX: Final = "/api/v1/uploads"
WRITE_BATCH_BYTES: Final = 1 << 20
# A PATCH body that sends nothing for this long is treated as cut off (keeps what arrived).
BODY_IDLE_S_MAX: Final = 60.0
METADATA_BYTES_MAX: Final = 4096
METADATA_KEYS: Final = ("filename", "filetype", "media_type", "filter_id")
SWEEP_BATCH_MAX: Final = 1000
_UPLOAD_ID: Final = re.compile(r"[0-9a-f]{32}")

__all__ = ["LOCKS", "OPENAPI_PATHS", "UploadLocks", "migrate_tables", "routes", "sweeper"]

routes = web.RouteTableDef()


class UploadLocks:
    """Per-upload asyncio locks of one app; an entry lives while someone holds or awaits it."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    def busy(self, upload_id: str) -> bool:
        entry = self._entries.get(upload_id)
        return entry is not None and entry[0].locked()

    @contextlib.asynccontextmanager
    async def hold(self, upload_id: str, *, wait: bool) -> AsyncIterator[None]:
        """Holds the upload's lock; without `wait`, raises 409 upload_busy when it is held."""
        if not wait and self.busy(upload_id):
            raise ApiError("another request is writing this upload", code="upload_busy",
                           status=409)  # fmt: skip
        lock, users = self._entries.setdefault(upload_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._entries[upload_id]


LOCKS: Final = web.AppKey("tus_locks", UploadLocks)


async def migrate_tables(db: Database) -> None:
    """Creates or upgrades the tus table (component "tus")."""
    await tus_store.migrate_tables(db)


# -- helpers ------------------------------------------------------------------------------


class _Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes, /) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _headers(upload: Upload | None = None) -> dict[str, str]:
    out = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
    if upload is not None:
        out["Upload-Offset"] = str(upload.offset)
        out["Upload-Length"] = str(upload.length)
        out["Upload-Expires"] = email.utils.formatdate(upload.expires_unix_s, usegmt=True)
        if upload.media_id is not None:
            out["Pinhole-Media-Id"] = str(upload.media_id)
    return out


def _max_size(ctx: ApiContext) -> int:
    return max(ctx.media.limits.image_bytes_max, ctx.media.limits.video_bytes_max)


def _int_header(request: web.Request, name: str) -> int:
    text = request.headers.get(name, "")
    if not (text.isascii() and text.isdigit()):
        raise BadRequest(f"{name} must be a non-negative integer")
    return int(text)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _tus(handler: Handler) -> Handler:
    """Refuses a request without `Tus-Resumable: 1.0.0`: 412 with `Tus-Version` (answered
    here, since the error middleware's answers carry no handler headers)."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.Response:
        if request.headers.get("Tus-Resumable") != TUS_VERSION:
            response = error_response(
                412, "tus_version_unsupported", f"Tus-Resumable must be {TUS_VERSION}"
            )
            response.headers.update({"Tus-Resumable": TUS_VERSION, "Tus-Version": TUS_VERSION})
            return response
        return await handler(request)

    return checked


def parse_metadata(text: str) -> dict[str, str]:
    """Upload-Metadata (`key base64,key base64,key`): the recognised keys (METADATA_KEYS)
    with their decoded values; other keys are ignored. Raises BadRequest."""
    if len(text) > METADATA_BYTES_MAX:
        raise BadRequest(f"Upload-Metadata is longer than {METADATA_BYTES_MAX} bytes")
    out: dict[str, str] = {}
    seen: set[str] = set()
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = pair.partition(" ")
        value = value.strip()
        if " " in value or key in seen:
            raise BadRequest("Upload-Metadata must be unique 'key base64value' pairs")
        seen.add(key)
        if key not in METADATA_KEYS:
            continue
        try:
            out[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
    return out


def _check_metadata(ctx: ApiContext, meta: dict[str, str], length: int) -> None:
    """What ingest would refuse whatever the bytes, refused before they are sent; the
    length against Tus-Max-Size, or the limit of the declared media_type."""
    limits = ctx.media.limits
    media_type = meta.get("media_type") or None
    filter_id = meta.get("filter_id") or None
    if media_type is not None and media_type not in MEDIA_TYPES:
        raise Rejected("bad_media_type", "media_type must be 'image' or 'video'", status=400)
    if filter_id is not None:
        if media_type == "video":
            raise Rejected("filter_not_supported", "filters apply to images only")
        if filter_id not in filter_ids():
            raise Rejected(
                "unknown_filter", f"unknown filter {filter_id!r}; known: {', '.join(filter_ids())}"
            )
        media_type = "image"
    limit = {"image": limits.image_bytes_max, "video": limits.video_bytes_max}.get(
        media_type or "", _max_size(ctx)
    )
    if length > limit:
        raise Rejected(
            "file_too_large", f"the upload exceeds the limit of {limit} bytes", status=413
        )


def _check(upload: Upload | None, owner_id: int) -> Upload:
    if upload is None or upload.owner_id != owner_id:
        raise NotFound("no such upload")
    if upload.expires_unix_s <= time.time():
        raise ApiError("the upload has expired", code="upload_expired", status=410)
    return upload


async def _owned(request: web.Request, ctx: ApiContext) -> Upload:
    """The requested upload of the authenticated user; raises 401, 404 or 410."""
    owner_id = ctx.user_id(request)
    upload_id = request.match_info["upload_id"]
    if not _UPLOAD_ID.fullmatch(upload_id):
        raise NotFound("no such upload")
    return _check(await tus_store.get(ctx.db, upload_id), owner_id)


async def _reload(ctx: ApiContext, upload: Upload) -> Upload:
    """The row again (under the upload's lock: a waiter may find it changed or gone)."""
    return _check(await tus_store.get(ctx.db, upload.upload_id), upload.owner_id)


async def _remove(ctx: ApiContext, upload_id: str) -> None:
    """File first, then row (see tus_store)."""
    await asyncio.to_thread(
        tus_store.remove_part, tus_store.part_path(ctx.config.data_dir, upload_id)
    )
    await tus_store.delete(ctx.db, upload_id)


async def _lost(ctx: ApiContext, upload: Upload) -> ApiError:
    log.error("upload %s: its part file is missing or short; removed", upload.upload_id)
    await _remove(ctx, upload.upload_id)
    return ApiError("the upload's data is lost; start again", code="upload_lost", status=410)


# -- handlers -----------------------------------------------------------------------------


@routes.options(PREFIX)
async def options(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    headers = {
        **_headers(),
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(_max_size(ctx)),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
    return web.Response(status=204, headers=headers)


@routes.post(PREFIX)
@_tus
async def create(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    owner_id = ctx.user_id(request)
    if "Upload-Defer-Length" in request.headers:
        raise BadRequest("Upload-Defer-Length is not supported: send Upload-Length")
    length = _int_header(request, "Upload-Length")
    if length == 0:
        raise BadRequest("Upload-Length must be at least 1")
    meta = parse_metadata(request.headers.get("Upload-Metadata", ""))
    _check_metadata(ctx, meta, length)
    now = time.time()
    upload = Upload(
        uuid.uuid4().hex, owner_id, length, 0, json.dumps(meta), now,
        now + ctx.config.tus_expiry_s, None,
    )  # fmt: skip
    per_owner_max = ctx.config.tus_uploads_per_user_max
    if not await tus_store.create(ctx.db, upload, per_owner_max=per_owner_max, now=now):
        raise ApiError(
            f"at most {per_owner_max} incomplete uploads per user; finish or delete one",
            code="too_many_uploads",
            status=429,
        )
    try:
        path = tus_store.part_path(ctx.config.data_dir, upload.upload_id)
        await asyncio.to_thread(tus_store.create_part, path)
    except BaseException:
        await asyncio.shield(tus_store.delete(ctx.db, upload.upload_id))
        raise
    headers = _headers(upload)
    headers["Location"] = str(request.url.with_path(f"{PREFIX}/{upload.upload_id}"))
    return web.Response(status=201, headers=headers)


@routes.head(PREFIX + "/{upload_id}")
@_tus
async def head(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    upload = await _owned(request, ctx)
    if upload.received and upload.media_id is None:  # its ingest failed: retry it now
        async with request.app[LOCKS].hold(upload.upload_id, wait=True):
            upload = await _reload(ctx, upload)
            if upload.media_id is None:
                with ctx.upload_slot():
                    upload = await _ingest(ctx, upload)
    return web.Response(status=200, headers=_headers(upload))


@routes.get(PREFIX + "/{upload_id}", allow_head=False)
async def status(request: web.Request) -> web.Response:
    """JSON: upload_id, offset and length (bytes), expires_at (ISO 8601), media_id (string)
    or null. No side effect (HEAD retries a failed ingest; GET does not)."""
    ctx = request.app[CONTEXT]
    upload = await _owned(request, ctx)
    doc = {
        "upload_id": upload.upload_id,
        "offset": upload.offset,
        "length": upload.length,
        "expires_at": iso(upload.expires_unix_s),
        "media_id": None if upload.media_id is None else str(upload.media_id),
    }
    return web.json_response(doc, headers=_headers())


@routes.delete(PREFIX + "/{upload_id}")
@_tus
async def terminate(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    upload = await _owned(request, ctx)
    async with request.app[LOCKS].hold(upload.upload_id, wait=True):
        await _remove(ctx, upload.upload_id)
    return web.Response(status=204, headers=_headers())


@routes.patch(PREFIX + "/{upload_id}")
@_tus
async def patch(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    upload = await _owned(request, ctx)
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise ApiError(
            f"Content-Type must be {OFFSET_CONTENT_TYPE}", code="bad_content_type", status=415
        )
    offset = _int_header(request, "Upload-Offset")
    checksum = _checksum_header(request)
    async with request.app[LOCKS].hold(upload.upload_id, wait=False):
        upload = await _reload(ctx, upload)
        if offset != upload.offset:
            raise ApiError(
                f"Upload-Offset {offset} does not match the upload's offset {upload.offset}",
                code="offset_mismatch",
                status=409,
            )
        room = upload.length - upload.offset
        if (request.content_length or 0) > room:
            raise _past_length(room)
        if room or upload.media_id is None:
            with ctx.upload_slot():
                if room:
                    upload = await _receive(request, ctx, upload, checksum)
                if upload.received and upload.media_id is None:
                    upload = await _ingest(ctx, upload)
    return web.Response(status=204, headers=_headers(upload))


def _past_length(room: int) -> ApiError:
    return ApiError(f"the body goes past Upload-Length ({room} bytes left)",
                    code="length_exceeded", status=413)  # fmt: skip


def _checksum_header(request: web.Request) -> tuple[_Hasher, bytes] | None:
    """Upload-Checksum: a fresh hasher of its algorithm and the expected digest."""
    text = request.headers.get("Upload-Checksum")
    if text is None:
        return None
    algorithm, _, value = text.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(f"unsupported checksum algorithm {algorithm!r}", code="bad_checksum")
    try:
        expected = base64.b64decode(value.strip(), validate=True)
    except binascii.Error:
        raise BadRequest("the Upload-Checksum value is not base64", code="bad_checksum") from None
    return (_Crc32() if algorithm == "crc32" else hashlib.new(algorithm)), expected


async def _receive(
    request: web.Request, ctx: ApiContext, upload: Upload, checksum: tuple[_Hasher, bytes] | None
) -> Upload:
    """Appends the body at the recorded offset; returns the upload at its new recorded
    offset (unchanged for an empty body). See the module docstring for a cut-off body."""
    room = upload.length - upload.offset
    path = tus_store.part_path(ctx.config.data_dir, upload.upload_id)
    try:
        fd = await asyncio.to_thread(tus_store.open_part, path, upload.offset)
    except PartLost:
        raise await _lost(ctx, upload) from None
    received = 0
    whole = True
    batch: list[bytes] = []
    batch_bytes = 0
    try:
        while True:
            try:
                async with asyncio.timeout(BODY_IDLE_S_MAX):
                    chunk = await request.content.readany()
            except (OSError, TimeoutError, HttpProcessingError) as e:
                log.info("upload %s: body cut off after %d bytes (%r)", upload.upload_id,
                         received, e)  # fmt: skip
                whole = False
                break
            if not chunk:
                break
            received += len(chunk)
            if received > room:
                raise _past_length(room)  # written bytes are past the offset: cut next time
            if checksum is not None:
                checksum[0].update(chunk)
            batch.append(chunk)
            batch_bytes += len(chunk)
            if batch_bytes >= WRITE_BATCH_BYTES:
                await asyncio.to_thread(tus_store.append, fd, b"".join(batch))
                batch, batch_bytes = [], 0
        if checksum is not None and not (whole and checksum[0].digest() == checksum[1]):
            await asyncio.to_thread(tus_store.cut_part, path, upload.offset)
            if not whole:
                raise BadRequest("the body ended early; the chunk was discarded",
                                 code="incomplete_body")  # fmt: skip
            raise ApiError("Upload-Checksum does not match the body; the chunk was discarded",
                           code="checksum_mismatch", status=460)  # fmt: skip
        if batch:
            await asyncio.to_thread(tus_store.append, fd, b"".join(batch))
        if received:
            await asyncio.to_thread(os.fdatasync, fd)
    finally:
        os.close(fd)  # no fsync pending (done above, or the bytes are not acknowledged)
    if not received:
        return upload
    new_offset = upload.offset + received
    if not await tus_store.record_offset(
        ctx.db, upload.upload_id, expected=upload.offset, offset=new_offset
    ):
        raise ApiError("the upload changed meanwhile", code="upload_busy", status=409)
    return dataclasses.replace(upload, offset=new_offset)


async def _ingest(ctx: ApiContext, upload: Upload) -> Upload:
    """Ingests a received upload. The caller holds the upload's lock and an upload slot."""
    path = tus_store.part_path(ctx.config.data_dir, upload.upload_id)
    try:
        await asyncio.to_thread(tus_store.cut_part, path, upload.length)
    except PartLost:
        raise await _lost(ctx, upload) from None
    meta = upload.metadata
    try:
        row = await ctx.ingest.ingest(
            path,
            owner_id=upload.owner_id,
            media_type=meta.get("media_type") or None,
            filter_id=meta.get("filter_id") or None,
        )
    except Rejected:
        await _remove(ctx, upload.upload_id)
        raise
    await tus_store.record_media(ctx.db, upload.upload_id, row.media_id)
    await asyncio.to_thread(tus_store.remove_part, path)
    return dataclasses.replace(upload, media_id=row.media_id)


# -- expiry -------------------------------------------------------------------------------


async def sweep_once(ctx: ApiContext, locks: UploadLocks, *, now: float | None = None) -> int:
    """Removes up to SWEEP_BATCH_MAX uploads expired at `now` (Unix s; default the current
    time), row and file, skipping any a request holds; returns how many were removed."""
    gone = await tus_store.expired(
        ctx.db, now=time.time() if now is None else now, limit=SWEEP_BATCH_MAX
    )
    removed = 0
    for upload in gone:
        if locks.busy(upload.upload_id):
            continue  # a request is using it: the next pass
        async with locks.hold(upload.upload_id, wait=False):
            await _remove(ctx, upload.upload_id)
        removed += 1
    return removed


async def sweeper(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx (after the one that sets app[CONTEXT]): sets app[LOCKS], the per-upload
    lock registry the handlers use, and runs sweep_once every tus_sweep_interval_s until the
    app stops."""
    ctx = app[CONTEXT]
    locks = app[LOCKS] = UploadLocks()

    async def forever() -> None:
        while True:
            try:
                if removed := await sweep_once(ctx, locks):
                    log.info("reclaimed %d expired uploads", removed)
            except Exception:
                log.exception("tus sweep failed; retrying next interval")
            await asyncio.sleep(ctx.config.tus_sweep_interval_s)

    task = asyncio.create_task(forever(), name="tus-sweeper")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
