"""Resumable uploads: the tus 1.0.0 protocol (core, creation, termination, expiration and
checksum extensions) at /api/v1/uploads, so stock tus clients upload to pinhole.

Durability: a PATCH's bytes are written to <[api] data_dir>/tus/<id>.part, fdatasync'ed,
and only then is the new offset recorded and acknowledged. A PATCH cut off mid-body keeps
(and acknowledges to the next HEAD) what arrived, unless it carried Upload-Checksum: an
unverifiable chunk is dropped. Each PATCH first cuts the file to the recorded offset, so
bytes written before a crash but never recorded are not trusted.

One writer at a time, across processes: a PATCH, a DELETE and the sweeper hold an exclusive
flock on the upload's part file while they change it, so the API processes sharing a data
dir ([api] processes) never write one upload at once; a request finding it held answers
409 `upload_locked` at once (a tus client retries after a HEAD), the sweeper passes it by
until its next round. The kernel drops the lock with its holder, so a killed process leaves
no upload locked.

Limits (api.upload_limits): a creation counts against the user's daily upload quota at
its Upload-Length (429) and needs that much room in the staging space (503); a PATCH is
received in an upload slot, its bytes counted in the staging space as they arrive, at the
minimum body rate. A body cut short (connection lost, too slow: 408, staging full: 503)
keeps what arrived, as tus expects, unless it carried Upload-Checksum; any other failure
cuts the file back to the recorded offset, so it holds exactly the acknowledged bytes.

The PATCH that completes an upload ingests it, in its upload slot, exactly like a multipart
upload (transformer.ingest): on success the media id is recorded, the file removed and the
answer carries `Pinhole-Media-Id`; a `Rejected` deletes the upload and is the answer (4xx);
when the cluster has no writable volume (503) the complete upload is kept, and a later empty
PATCH at the final offset retries the ingest. Uploads expire `tus_expiry_s` after creation
(410), and a sweeper reclaims their rows and files.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import fcntl
import hashlib
import json
import logging
import os
import re
import time
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from api import params, tus_store, upload_limits
from api.context import CONTEXT, ApiContext
from api.errors import ApiError, BadApiRequest, BodyTooSlow, NoSuchResource, StagingFull
from api.openapi_tus import OPENAPI_PATHS
from common.db import Database
from transformer.errors import Rejected

log = logging.getLogger("pinhole.api.tus")

TUS_VERSION: Final = "1.0.0"
EXTENSIONS: Final = "creation,termination,expiration,checksum"
CHECKSUM_ALGORITHMS: Final = ("sha1", "sha256", "md5", "crc32")
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
WRITE_BATCH_BYTES: Final = 1 << 20
# On shutdown, a sweep in progress gets this long to end before it is cancelled.
SWEEP_STOP_S_MAX: Final = 5.0
METADATA_KEYS: Final = ("filename", "filetype", "media_type", "filter_id")
PREFIX: Final = "/api/v1/uploads"
_UPLOAD_ID: Final = re.compile(r"[0-9a-f]{32}")

routes = web.RouteTableDef()

__all__ = ["OPENAPI_PATHS", "migrate_tables", "routes", "sweeper"]


def _http_date(unix_s: float) -> str:
    return email.utils.formatdate(unix_s, usegmt=True)


def _headers(upload: tus_store.Upload | None = None) -> dict[str, str]:
    out = {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store"}
    if upload is not None:
        out["Upload-Offset"] = str(upload.offset)
        out["Upload-Length"] = str(upload.length)
        out["Upload-Expires"] = _http_date(upload.expires_unix_s)
        if upload.media_id is not None:
            out["Pinhole-Media-Id"] = str(upload.media_id)
    return out


def _part(ctx: ApiContext, upload_id: str) -> Path:
    return ctx.config.data_dir / "tus" / f"{upload_id}.part"


def _max_size(ctx: ApiContext) -> int:
    return max(ctx.media.limits.image_bytes_max, ctx.media.limits.video_bytes_max)


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        error = ApiError(
            f"Tus-Resumable must be {TUS_VERSION}", code="tus_version_unsupported", status=412
        )
        raise error


def parse_metadata(text: str, *, bytes_max: int) -> dict[str, str]:
    """Upload-Metadata: `key base64,key base64,key`; only known keys are kept."""
    if len(text) > bytes_max:
        raise BadApiRequest(f"Upload-Metadata is longer than {bytes_max} bytes")
    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = pair.partition(" ")
        if not key or not key.isascii() or " " in value.strip():
            raise BadApiRequest("Upload-Metadata must be 'key base64value' pairs")
        # ValueError covers binascii.Error, UnicodeDecodeError and b64decode's refusal of
        # non-ASCII text (undecodable header bytes).
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError:
            raise BadApiRequest(f"Upload-Metadata value of {key!r} is not base64 UTF-8") from None
        if key in METADATA_KEYS:
            out[key] = decoded
    return out


async def _owned(request: web.Request, ctx: ApiContext) -> tus_store.Upload:
    owner_id = await ctx.user_id(request)
    upload_id = request.match_info["upload_id"]
    # Ids are uuid4 hex: anything else names no upload and never reaches SQL.
    upload = await tus_store.get(ctx.db, upload_id) if _UPLOAD_ID.fullmatch(upload_id) else None
    if upload is None or upload.owner_id != owner_id:
        raise NoSuchResource("no such upload")
    if upload.expires_unix_s <= time.time():
        raise ApiError("the upload has expired", code="upload_expired", status=410)
    return upload


async def migrate_tables(db: Database) -> None:
    await tus_store.migrate_tables(db)


# -- handlers -----------------------------------------------------------------------------


@routes.options(PREFIX)
async def options(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    headers = {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": EXTENSIONS,
        "Tus-Max-Size": str(_max_size(ctx)),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
    return web.Response(status=204, headers=headers)


@routes.post(PREFIX)
async def create(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    owner_id = await ctx.user_id(request)
    _check_version(request)
    if "Upload-Defer-Length" in request.headers:
        raise BadApiRequest("Upload-Defer-Length is not supported: send Upload-Length")
    length = params.header_int(request, "Upload-Length")
    if length == 0:
        raise BadApiRequest("an upload needs at least one byte")
    if length > _max_size(ctx):
        raise ApiError(
            f"Upload-Length exceeds Tus-Max-Size {_max_size(ctx)}",
            code="file_too_large",
            status=413,
        )
    meta = parse_metadata(
        request.headers.get("Upload-Metadata", ""), bytes_max=ctx.config.tus_metadata_bytes_max
    )
    await upload_limits.check_quota(ctx.db, ctx.config, owner_id, incoming_bytes=length)
    ctx.staging.check(length)
    now = time.time()
    upload = tus_store.Upload(
        uuid.uuid4().hex, owner_id, length, 0, json.dumps(meta), now,
        now + ctx.config.tus_expiry_s, None,
    )  # fmt: skip
    part = _part(ctx, upload.upload_id)
    await asyncio.to_thread(_create_file, part)
    if not await tus_store.create(
        ctx.db, upload, per_owner_max=ctx.config.tus_uploads_per_user_max
    ):
        await _remove(ctx, part)
        raise ApiError(
            f"at most {ctx.config.tus_uploads_per_user_max} incomplete uploads per user",
            code="too_many_uploads",
            status=429,
        )
    headers = _headers(upload)
    headers["Location"] = str(request.url.with_path(f"{PREFIX}/{upload.upload_id}"))
    del headers["Upload-Length"]
    return web.Response(status=201, headers=headers)


@routes.head(PREFIX + "/{upload_id}")
async def head(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return web.Response(status=200, headers=_headers(await _owned(request, ctx)))


@routes.get(PREFIX + "/{upload_id}", allow_head=False)
async def status(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    upload = await _owned(request, ctx)
    doc = {
        "upload_id": upload.upload_id,
        "offset": upload.offset,
        "length": upload.length,
        "expires_at": _http_date(upload.expires_unix_s),
        "media_id": None if upload.media_id is None else str(upload.media_id),
    }
    return web.json_response(doc, headers={"Tus-Resumable": TUS_VERSION})


@routes.delete(PREFIX + "/{upload_id}")
async def terminate(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    _check_version(request)
    upload = await _owned(request, ctx)
    async with _locked(ctx, upload.upload_id):
        await tus_store.delete(ctx.db, upload.upload_id)
        await _remove(ctx, _part(ctx, upload.upload_id))
    return web.Response(status=204, headers={"Tus-Resumable": TUS_VERSION})


@routes.patch(PREFIX + "/{upload_id}")
async def patch(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    _check_version(request)
    if request.content_type != OFFSET_CONTENT_TYPE:
        raise ApiError(
            f"Content-Type must be {OFFSET_CONTENT_TYPE}", code="bad_content_type", status=415
        )
    upload = await _owned(request, ctx)
    offset = params.header_int(request, "Upload-Offset")
    checksum = _checksum_header(request)
    async with _locked(ctx, upload.upload_id) as fd:
        upload = await _owned(request, ctx)  # fresh, under the lock
        if offset != upload.offset:
            raise ApiError(
                f"Upload-Offset {offset} does not match the upload's offset {upload.offset}",
                code="offset_mismatch",
                status=409,
            )
        if upload.media_id is None:
            if fd is None:  # its bytes are gone (removed by hand, a crash mid-sweep)
                await tus_store.delete(ctx.db, upload.upload_id)
                raise NoSuchResource("no such upload")
            with ctx.upload_slot():
                if upload.offset < upload.length:
                    _check_room(request, ctx, upload)
                    upload = await _receive(request, ctx, upload, checksum, fd)
                if upload.offset == upload.length:
                    upload = await _complete(ctx, upload)
    return web.Response(status=204, headers=_headers(upload))


def _check_room(request: web.Request, ctx: ApiContext, upload: tus_store.Upload) -> None:
    """StagingFull before reading a body the staging space cannot take now."""
    coming = upload.length - upload.offset
    if request.content_length is not None:
        coming = min(coming, request.content_length)
    ctx.staging.check(coming)


class UploadLocked(ApiError):
    def __init__(self) -> None:
        super().__init__(
            "another request is writing this upload; retry after a HEAD",
            code="upload_locked",
            status=409,
        )


@contextlib.asynccontextmanager
async def _locked(ctx: ApiContext, upload_id: str) -> AsyncIterator[int | None]:
    """The upload's part file open for writing under an exclusive flock, for the block:
    yields its descriptor, or None when the upload has no file (completed, removed).
    Raises UploadLocked when another request, of any process, holds it."""
    fd = await asyncio.to_thread(_open_locked, _part(ctx, upload_id))
    try:
        yield fd
    finally:
        if fd is not None:
            await asyncio.to_thread(os.close, fd)  # the lock goes with the descriptor


def _checksum_header(request: web.Request) -> tuple[str, bytes] | None:
    text = request.headers.get("Upload-Checksum")
    if text is None:
        return None
    algorithm, _, value = text.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadApiRequest(f"unsupported checksum algorithm {algorithm!r}")
    try:
        return algorithm, base64.b64decode(value, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise BadApiRequest("Upload-Checksum value is not base64") from None


class _Crc32:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


class _Body:
    """A PATCH body on its way to the file: its checksum, and the bytes received (each
    counted in the staging space) and written."""

    def __init__(self, room: int, checksum: tuple[str, bytes] | None) -> None:
        self.room = room
        self.hasher: Any = None
        if checksum is not None:
            self.hasher = _Crc32() if checksum[0] == "crc32" else hashlib.new(checksum[0])
        self.received = 0
        self.written = 0
        self.batch: list[bytes] = []
        self.batch_bytes = 0

    def add(self, chunk: bytes) -> None:
        if self.received + len(chunk) > self.room:
            raise ApiError("the body goes past Upload-Length", code="length_exceeded", status=413)
        if self.hasher is not None:
            self.hasher.update(chunk)
        self.received += len(chunk)
        self.batch.append(chunk)
        self.batch_bytes += len(chunk)

    def take(self) -> bytes:
        data = b"".join(self.batch)
        self.batch, self.batch_bytes = [], 0
        self.written += len(data)
        return data


async def _read_body(
    request: web.Request, ctx: ApiContext, fd: int, body: _Body
) -> ApiError | None:
    """Reads the body into the file (unsynced); returns why it stopped early when it was
    cut short by the server (too slow, no staging room), None when it ended or the
    connection was lost (then body.received tells how much arrived)."""
    try:
        async with upload_limits.paced(request.content, ctx.config):
            while True:
                try:
                    chunk = await request.content.readany()
                except (ConnectionError, asyncio.IncompleteReadError, OSError, HttpProcessingError):
                    return None
                if not chunk:
                    return None
                ctx.staging.reserve(len(chunk))
                try:
                    body.add(chunk)
                except ApiError:
                    ctx.staging.release(len(chunk))
                    raise
                if body.batch_bytes >= WRITE_BATCH_BYTES:
                    await asyncio.to_thread(_write, fd, body.take())
    except (BodyTooSlow, StagingFull) as e:
        return e


async def _receive(
    request: web.Request,
    ctx: ApiContext,
    upload: tus_store.Upload,
    checksum: tuple[str, bytes] | None,
    fd: int,
) -> tus_store.Upload:
    """Streams the body into the part file (`fd`, locked) after the upload's bytes, makes
    them durable and records the new offset; returns the upload with it. Raises
    BodyTooSlow / StagingFull after recording what arrived before the body was cut."""
    dropped = await asyncio.to_thread(_cut_at, fd, upload.offset)
    ctx.staging.release(dropped)
    body = _Body(upload.length - upload.offset, checksum)
    try:
        stopped = await _read_body(request, ctx, fd, body)
        ended = body.received == body.room or request.content.is_eof()
        if not ended:
            why = stopped.code if stopped is not None else "connection lost"
            log.info(
                "upload %s: body cut after %d bytes (%s)", upload.upload_id, body.received, why
            )
        if checksum is not None:
            if stopped is not None:
                raise stopped
            if not ended:
                raise ApiError("the body ended early", code="incomplete_body", status=400)
            if body.hasher.digest() != checksum[1]:
                raise ApiError("Upload-Checksum does not match the body", code="checksum_mismatch",
                               status=460)  # fmt: skip
        await asyncio.to_thread(_write_and_sync, fd, body.take())
    except Exception:
        # Nothing of a refused body stays: the file goes back to the acknowledged offset.
        await asyncio.to_thread(os.ftruncate, fd, upload.offset)
        ctx.staging.release(body.received)
        raise
    except BaseException:
        # Cancelled: what reached the file is cut (and released) by the next PATCH.
        ctx.staging.release(body.received - body.written)
        raise
    new_offset = upload.offset + body.received
    await tus_store.update(ctx.db, upload.upload_id, offset=new_offset)
    if stopped is not None:
        raise stopped
    return _replace(upload, offset=new_offset)


def _replace(upload: tus_store.Upload, **changes: Any) -> tus_store.Upload:
    import dataclasses

    return dataclasses.replace(upload, **changes)


async def _complete(ctx: ApiContext, upload: tus_store.Upload) -> tus_store.Upload:
    meta = upload.metadata
    part = _part(ctx, upload.upload_id)
    try:
        row = await ctx.ingest.ingest(
            part,
            owner_id=upload.owner_id,
            media_type=meta.get("media_type") or None,
            filter_id=meta.get("filter_id") or None,
        )
    except Rejected:
        await tus_store.delete(ctx.db, upload.upload_id)
        await _remove(ctx, part)
        raise
    await tus_store.update(ctx.db, upload.upload_id, media_id=row.media_id)
    await _remove(ctx, part)
    return _replace(upload, media_id=row.media_id)


# -- files --------------------------------------------------------------------------------


def _create_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)


def _open_locked(path: Path) -> int | None:
    """The part file open for writing, flock'ed (see `_locked`); None when it is not there.
    Never creates it: an upload's file is made with its row, and one that is gone must not
    come back empty."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadLocked() from None
        # The holder before us may have removed the file while we waited to open it: a lock
        # on a removed file guards nothing.
        try:
            here = os.stat(path)
        except FileNotFoundError:
            here = None
        held = os.fstat(fd)
        if here is None or (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            os.close(fd)
            return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd


def _cut_at(fd: int, offset: int) -> int:
    """Cuts the part file to `offset` and places writes there; returns how many bytes past
    it were cut (written, never acknowledged)."""
    size = os.fstat(fd).st_size
    os.ftruncate(fd, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return max(0, size - offset)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _write_and_sync(fd: int, data: bytes) -> None:
    _write(fd, data)
    os.fdatasync(fd)


def _unlink(path: Path) -> int:
    """Removes the file; returns its size (0 when it was not there)."""
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    return size


async def _remove(ctx: ApiContext, part: Path) -> None:
    """Removes a part file and gives its bytes back to the staging space."""
    ctx.staging.release(await asyncio.to_thread(_unlink, part))


# -- expiry -------------------------------------------------------------------------------


async def sweep_once(ctx: ApiContext, *, now: float | None = None) -> int:
    """Removes every expired upload (row and file) no request is writing; returns how many.
    Every API process sweeps; two that meet on an upload do its removal once each, which
    is harmless (the second finds no file and no row)."""
    gone = await tus_store.expired(ctx.db, now=time.time() if now is None else now)
    swept = 0
    for upload in gone:
        try:
            async with _locked(ctx, upload.upload_id):
                await _remove(ctx, _part(ctx, upload.upload_id))
                await tus_store.delete(ctx.db, upload.upload_id)
        except UploadLocked:
            continue  # being written: the next round
        swept += 1
    return swept


async def sweeper(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: reclaims expired uploads every tus_sweep_interval_s."""
    ctx = app[CONTEXT]

    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            try:
                swept = await sweep_once(ctx)
                if swept:
                    log.info("reclaimed %d expired uploads", swept)
            except Exception:
                log.exception("tus sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ctx.config.tus_sweep_interval_s)

    task = asyncio.create_task(loop())
    try:
        yield
    finally:
        # A sweep in progress ends first: cancelled inside a transaction, its connection
        # would go to the driver's forced close, which can stall on SQLite.
        stop.set()
        _, running = await asyncio.wait({task}, timeout=SWEEP_STOP_S_MAX)
        for t in running:
            t.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
