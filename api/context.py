"""What every API handler reaches through `request.app[CONTEXT]`: config, the metadata
database (media, social and feed tables), the blob writer, the ingest path, the hot store
and the feed, the id generator, the rate-limit counters, the credentials and photo URLs, the
staging space and the count of uploads in flight. Opened and closed by
api.app's cleanup context; no module-level singletons."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

from api import auth
from api.config import ApiConfig
from api.errors import NotAuthenticated, UploadsBusy
from api.media_docs import POST_JSON_CACHED_MAX, PublicMediaDocuments, PublicPostDocuments
from api.photo_urls import PhotoUrls
from api.upload_limits import Staging
from common.credentials import Credentials
from common.db import Database
from common.ids import IdGenerator
from directory.writer import BlobWriter
from feed.config import FeedConfig
from feed.hotstore import HotStore
from feed.service import Feed
from social import oauth, ratelimit, sessions
from social.config import SocialConfig
from social.counters import Counters
from transformer.config import MediaConfig
from transformer.ingest import Ingest


def _post_json() -> PublicPostDocuments[bytes]:
    return PublicPostDocuments(documents_max=POST_JSON_CACHED_MAX)


@dataclass
class ApiContext:
    config: ApiConfig
    media: MediaConfig
    db: Database
    writer: BlobWriter
    ingest: Ingest
    social: SocialConfig
    feed_config: FeedConfig
    hot: HotStore
    feed: Feed
    ids: IdGenerator
    counters: Counters
    credentials: Credentials
    photo_urls: PhotoUrls
    staging: Staging
    # Public media documents remembered by their rows (feed pages render the same photos
    # again and again).
    public_media: PublicMediaDocuments
    # Public posts' documents, remembered by what they are made of (api/media_docs.py).
    public_posts: PublicPostDocuments[dict[str, Any]] = field(default_factory=PublicPostDocuments)
    # The same for the Mastodon API's statuses (api/mastodon_docs.py).
    public_statuses: PublicPostDocuments[dict[str, Any]] = field(
        default_factory=PublicPostDocuments
    )
    # The home feeds' pieces: a public post's JSON without the viewer's flags, encoded once
    # (api/social_docs.py `documents_json`, api/mastodon_docs.py `statuses_json`).
    public_post_json: PublicPostDocuments[bytes] = field(default_factory=_post_json)
    public_status_json: PublicPostDocuments[bytes] = field(default_factory=_post_json)
    # Uploads being received by this process (uploads_inflight_max is per process).
    uploads_inflight: int = 0

    async def user_id(self, request: web.Request) -> int:
        """The user of the request's session; raises NotAuthenticated / AuthFailed (401),
        and OutsideScopes (403) for an OAuth token (a Mastodon app's session) without
        `read` for a GET or `write` for a change."""
        token = auth.bearer(request)
        if not token.isascii():  # undecodable header bytes arrive as lone surrogates
            raise NotAuthenticated("the token is not valid")
        user_id, scopes = await sessions.authenticate_scoped(self.db, token, self.social)
        if scopes is not None:
            needed = "read" if request.method in ("GET", "HEAD") else "write"
            if needed not in scopes:
                raise oauth.outside_scopes()
        return user_id

    async def rate(self, request: web.Request, action: str, subject: int | str) -> None:
        """Counts one rate-limited write; its X-RateLimit-* headers go on the response
        (api.app), a 429 beyond the limit."""
        request[RATE] = await ratelimit.take(self.counters, self.social, action, str(subject))

    @contextlib.contextmanager
    def upload_slot(self) -> Iterator[None]:
        """Holds one of uploads_inflight_max slots while an upload is received; raises UploadsBusy
        (503) when all are taken rather than queueing unbounded uploads."""
        if self.uploads_inflight >= self.config.uploads_inflight_max:
            raise UploadsBusy("too many uploads in progress; retry shortly")
        self.uploads_inflight += 1
        try:
            yield
        finally:
            self.uploads_inflight -= 1


CONTEXT: Final = web.AppKey("context", ApiContext)
RATE: Final = web.RequestKey("rate", ratelimit.Rate)
