"""What every API handler reaches through `request.app[CONTEXT]`: config, the media
database, the blob writer, the ingest path, the count of uploads in flight and the tus
locks. Opened and closed by api.app's cleanup context; no module-level singletons."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from api import auth
from api.config import ApiConfig
from api.errors import Busy
from common.db import Database
from directory.writer import BlobWriter
from transformer.config import MediaConfig
from transformer.ingest import Ingest


@dataclass
class ApiContext:
    config: ApiConfig
    media: MediaConfig
    db: Database
    writer: BlobWriter
    ingest: Ingest
    token: str
    uploads_inflight: int = 0
    # tus: one lock per upload being written (PATCH, DELETE, the sweeper), this process only.
    tus_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def user_id(self, request: web.Request) -> int:
        """The authenticated user; raises Unauthorized."""
        return auth.user_id(request, self.token)

    @contextlib.contextmanager
    def upload_slot(self) -> Iterator[None]:
        """Holds one of uploads_inflight_max slots while an upload is received; raises Busy
        (503) when all are taken rather than queueing unbounded uploads."""
        if self.uploads_inflight >= self.config.uploads_inflight_max:
            raise Busy("too many uploads in progress; retry shortly")
        self.uploads_inflight += 1
        try:
            yield
        finally:
            self.uploads_inflight -= 1


CONTEXT: Final = web.AppKey("context", ApiContext)
