"""Ingest: an uploaded file becomes a media (the API calls this for multipart and tus).

Order, so that a rejected upload leaves nothing behind and an acknowledged one is never lost:
1. validate by content (magic bytes, header, limits, a decode check), never by name or
   declared type: `Rejected` (4xx) before anything is stored;
2. write the original to every replica of a logical volume, streamed from the uploaded file
   (BlobWriter.put_file: acknowledged after each replica's fdatasync);
3. one transaction inserts the media row, its original's variant row and its transcode job;
   if that fails, the original's needle is deleted again.
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from pathlib import Path
from typing import Final

from common.db import Database
from common.ids import IdGenerator
from common.photo import Format, alt_key
from directory.writer import BlobWriter
from transformer import jobs, media_store, variants
from transformer.config import MediaConfig
from transformer.errors import Rejected
from transformer.filters import filter_ids
from transformer.image_probe import probe_image_file
from transformer.sniff import ACCEPTED_IMAGE_FORMATS, ACCEPTED_VIDEO_FORMATS, SNIFF_BYTES, sniff
from transformer.video_probe import probe_video

MEDIA_TYPES: Final = ("image", "video")


def _accepted_names() -> str:
    names = [f.name for f in (*ACCEPTED_IMAGE_FORMATS, *ACCEPTED_VIDEO_FORMATS)]
    return ", ".join(names)


class Ingest:
    """Turns validated uploads into media rows with their job. One per API process."""

    def __init__(
        self, config: MediaConfig, db: Database, writer: BlobWriter, ids: IdGenerator
    ) -> None:
        self.config = config
        self.db = db
        self.writer = writer
        self.ids = ids

    async def ingest(
        self, path: Path, *, owner_id: int, media_type: str | None, filter_id: str | None
    ) -> media_store.MediaRow:
        """Validates the file at `path` and stores it as a new media. Raises Rejected for
        bad input, directory.errors.NoWritableVolume when nothing can be written."""
        limits = self.config.limits
        if media_type is not None and media_type not in MEDIA_TYPES:
            raise Rejected("bad_media_type", "media_type must be 'image' or 'video'", status=400)
        size_bytes = (await asyncio.to_thread(path.stat)).st_size
        if size_bytes == 0:
            raise Rejected("empty_file", "the uploaded file is empty", status=400)
        head = await asyncio.to_thread(_read_head, path)
        fmt = sniff(head)
        if fmt in ACCEPTED_IMAGE_FORMATS:
            kind = "image"
        elif fmt in ACCEPTED_VIDEO_FORMATS:
            kind = "video"
        else:
            raise Rejected(
                "unsupported_format",
                f"the file is not a supported image or video ({_accepted_names()})",
                status=415,
            )
        if media_type is not None and media_type != kind:
            raise Rejected(
                "media_type_mismatch", f"media_type is {media_type} but the file is {kind}"
            )
        if filter_id is not None:
            if kind != "image":
                raise Rejected("filter_not_supported", "filters apply to images only")
            if filter_id not in filter_ids():
                raise Rejected(
                    "unknown_filter",
                    f"unknown filter {filter_id!r}; known: {', '.join(filter_ids())}",
                )
        duration_s: float | None = None
        loop = asyncio.get_running_loop()
        if kind == "image":
            if size_bytes > limits.image_bytes_max:
                raise Rejected(
                    "file_too_large",
                    f"images are limited to {limits.image_bytes_max} bytes",
                    status=413,
                )
            # Checked in bounded reads and decoded from the file: the upload is never held
            # whole in memory, here or when it is stored (put_file streams it).
            info = await loop.run_in_executor(
                None, functools.partial(probe_image_file, path, limits)
            )
            width, height = info.width, info.height
        else:
            if size_bytes > limits.video_bytes_max:
                raise Rejected(
                    "file_too_large",
                    f"videos are limited to {limits.video_bytes_max} bytes",
                    status=413,
                )
            vinfo = await probe_video(path, limits)
            width, height, duration_s = vinfo.width, vinfo.height, vinfo.duration_s
        return await self._store(
            path,
            fmt=fmt,
            owner_id=owner_id,
            kind=kind,
            filter_id=filter_id,
            width=width,
            height=height,
            duration_s=duration_s,
        )

    async def _store(
        self,
        path: Path,
        *,
        fmt: Format,
        owner_id: int,
        kind: str,
        filter_id: str | None,
        width: int,
        height: int,
        duration_s: float | None,
    ) -> media_store.MediaRow:
        media_id = self.ids.next_id()
        # Two cookies: the variants' (in every photo URL) and the original's own, which no
        # URL a viewer sees carries, so no public URL leads to the original.
        cookie = secrets.randbits(64)
        original_cookie = secrets.randbits(64)
        original_alt = alt_key(variants.ORIGINAL, fmt)
        ref = await self.writer.put_file(media_id, original_alt, path, cookie=original_cookie)
        now = time.time()
        row = media_store.MediaRow(
            media_id=media_id,
            owner_id=owner_id,
            media_type=kind,
            status=media_store.MediaStatus.PROCESSING,
            fmt=int(fmt),
            size_bytes=ref.size,
            width=width,
            height=height,
            duration_s=duration_s,
            filter_id=filter_id,
            cookie_hex=f"{cookie:016x}",
            original_volume_id=ref.volume_id,
            placeholder=None,
            error_code=None,
            created_unix_s=now,
            ready_unix_s=None,
            expires_unix_s=now + self.config.unattached_ttl_s,
            attached_unix_s=None,
            original_cookie_hex=f"{original_cookie:016x}",
        )
        original = media_store.VariantRow(
            media_id, variants.ORIGINAL, int(fmt), ref.volume_id, ref.size, width, height
        )
        try:
            async with self.db.transaction(lock=jobs.LOCK) as conn:
                await media_store.insert(conn, row)
                await media_store.insert_variant(conn, original)
                await jobs.enqueue(
                    conn,
                    job_id=media_id,
                    media_id=media_id,
                    kind="photo" if kind == "image" else "video",
                    size_bytes=ref.size,
                    attempts_max=self.config.attempts_max,
                    now=now,
                )
        except BaseException:
            # Never referenced: take the original back (the directory retries the delete).
            await asyncio.shield(self.writer.delete(ref.volume_id, media_id, original_alt))
            raise
        return row


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)
