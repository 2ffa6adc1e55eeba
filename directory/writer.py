"""The write path: one blob onto every replica of a writable logical volume.

`BlobWriter.put` acknowledges only when every replica answered 201 (each has the needle
on disk). When a replica fails (an error status, no answer within replica_timeout_s, no
connection), the writer reports the logical volume read-only to the directory (naming the
node), asks the directory to delete the partial write when some replica took it (those
replicas reclaim the bytes; the delete is retried until each has it), and retries on
another writable volume. `NoWritableVolume` when none is left: callers answer 503.

The writable list is cached for writable_cache_s (the directory is not asked per write);
a volume that failed here is skipped until the list is refreshed without it.

Volume choice: a put without `volume_id` goes to the writer's current volume, drawn at
random from the writable list at every refresh (and again when it fails). Concurrent puts
of one writer thus land in the same volume on each replica and share its group commit
(one fdatasync per batch); spreading them over several volumes splits every replica's
batches and costs each store node about 40% more CPU per write. Over time and over many
writers the draws spread the load across volumes.

Cost: the replica PUTs are the data path, so they go over the lean HTTP client
(common/leanhttp, about a third of aiohttp's CPU per request); the directory calls stay
on aiohttp. Per put the writer computes the data's xxh3_64 once (X-Pinhole-Checksum, the
same for every replica and attempt; the credential is derived once per writer), sends the
first replica's PUT from the caller's task and one task per other replica, and touches the
directory only when the cached list is stale or a replica failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import xxhash

from common.credentials import Credentials, Purpose
from common.leanhttp.client import HttpClientError, HttpTimeoutError, LeanHTTPClient
from directory.client import DirectoryClient
from directory.errors import DirectoryError, NoWritableVolume
from store.client import StoreClientError, needle_path

log = logging.getLogger("pinhole.writer")

WRITABLE_CACHE_S_DEFAULT: Final = 1.0
VOLUME_ATTEMPTS_MAX: Final = 8
# The store answers a PUT with a short JSON document (or a JSON error).
REPLICA_RESPONSE_BYTES_MAX: Final = 64 * 1024

__all__ = ["BlobRef", "BlobWriter", "NoWritableVolume"]


@dataclass(frozen=True, slots=True)
class BlobRef:
    volume_id: int
    key: int
    alt_key: int
    cookie: int
    size: int
    etag: str


@dataclass(frozen=True, slots=True)
class _Volume:
    """A writable logical volume as the writer uses it: replica base URLs (no trailing
    slash) and the node id of each, in the same order."""

    volume_id: int
    urls: tuple[str, ...]
    node_ids: tuple[str, ...]


class BlobWriter:
    def __init__(
        self,
        directory_url: str,
        *,
        credentials: Credentials,
        session: aiohttp.ClientSession | None = None,
        http: LeanHTTPClient | None = None,
        replica_timeout_s: float = 10.0,
        writable_cache_s: float = WRITABLE_CACHE_S_DEFAULT,
        volume_attempts_max: int = VOLUME_ATTEMPTS_MAX,
    ) -> None:
        """`session` (aiohttp) carries the directory calls, `http` the replica PUTs; the
        writer creates (and closes) whichever is not given."""
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession()
        self._own_http = http is None
        self._http = http
        self.directory = DirectoryClient(
            directory_url, credentials=credentials, session=self._session
        )
        self._auth = credentials.header(Purpose.WRITE)
        self._replica_timeout_s = replica_timeout_s
        self._writable_cache_s = writable_cache_s
        self._volume_attempts_max = volume_attempts_max
        self._listed: tuple[_Volume, ...] = ()  # the directory's last answer
        self._usable: tuple[_Volume, ...] = ()  # listed minus failed
        self._current: _Volume | None = None  # where puts without volume_id go
        self._writable_at = -1e18
        self._failed: set[int] = set()
        self._refresh_lock = asyncio.Lock()

    async def __aenter__(self) -> BlobWriter:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None
        if self._own_session:
            await self._session.close()

    # -- the writable list -----------------------------------------------------------------

    async def _writable_volumes(self) -> tuple[_Volume, ...]:
        """The usable writable volumes: the cached list while it is fresh (no await, no
        lock), else one refresh shared by every caller that finds it stale."""
        loop = asyncio.get_running_loop()
        if loop.time() - self._writable_at < self._writable_cache_s:
            return self._usable
        async with self._refresh_lock:
            if loop.time() - self._writable_at >= self._writable_cache_s:
                doc = await self.directory.writable()
                self._listed = tuple(_volume(v) for v in doc["volumes"])
                self._writable_at = loop.time()
                listed = {v.volume_id for v in self._listed}
                self._failed &= listed  # the directory still lists it: keep avoiding it
                self._set_usable(draw=True)
        return self._usable

    def _set_usable(self, *, draw: bool) -> None:
        failed = self._failed
        usable = self._usable = tuple(v for v in self._listed if v.volume_id not in failed)
        if draw or self._current not in usable:
            self._current = random.choice(usable) if usable else None

    def _forget(self, vid: int) -> None:
        self._failed.add(vid)
        self._set_usable(draw=False)

    # -- writes ----------------------------------------------------------------------------

    async def put(
        self,
        key: int,
        alt_key: int,
        data: bytes,
        *,
        cookie: int | None = None,
        volume_id: int | None = None,
    ) -> BlobRef:
        """Writes `data` as needle (key, alt_key) on every replica of one writable volume
        (`volume_id` preferred while it is writable). Raises NoWritableVolume."""
        if cookie is None:
            cookie = secrets.randbits(64)
        http = self._http
        if http is None:
            http = self._http = LeanHTTPClient(response_bytes_max=REPLICA_RESPONSE_BYTES_MAX)
        # The same head fields for every replica and every attempt.
        headers = (
            ("Authorization", self._auth),
            ("X-Pinhole-Checksum", f"{xxhash.xxh3_64_intdigest(data):016x}"),
            ("Content-Type", "application/octet-stream"),
        )
        tried: set[int] = set()
        for _ in range(self._volume_attempts_max):
            candidates = await self._writable_volumes()
            if tried:
                candidates = tuple(v for v in candidates if v.volume_id not in tried)
            if not candidates:
                break
            chosen = None
            if volume_id is not None:
                chosen = next((v for v in candidates if v.volume_id == volume_id), None)
            if chosen is None:
                current = self._current
                chosen = current if current in candidates else random.choice(candidates)
            tried.add(chosen.volume_id)
            ref = await self._put_on(http, chosen, key, alt_key, cookie, data, headers)
            if ref is not None:
                return ref
        raise NoWritableVolume(f"no writable volume took key {key}/{alt_key}")

    async def _put_on(
        self,
        http: LeanHTTPClient,
        lv: _Volume,
        key: int,
        alt_key: int,
        cookie: int,
        data: bytes,
        headers: tuple[tuple[str, str], ...],
    ) -> BlobRef | None:
        vid = lv.volume_id
        path = needle_path(vid, key, alt_key, cookie)
        urls = lv.urls
        # Every replica at once: the others on their own tasks, the first one from here
        # (one task fewer per put than gathering them all).
        loop = asyncio.get_running_loop()
        others = [
            loop.create_task(self._replica_put(http, url + path, headers, data)) for url in urls[1:]
        ]
        try:
            results = [await self._replica_put(http, urls[0] + path, headers, data)]
            for task in others:
                results.append(await task)
        except BaseException:
            for task in others:
                if not task.cancel() and not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" log
            raise
        failed = [
            (node_id, r)
            for node_id, r in zip(lv.node_ids, results, strict=True)
            if isinstance(r, StoreClientError)
        ]
        if not failed:
            first = results[0]
            assert isinstance(first, bytes)
            return BlobRef(vid, key, alt_key, cookie, len(data), _etag(first))
        self._forget(vid)
        node_id, error = failed[0]
        log.warning(
            "volume %d: replica %s failed a write (%s); trying another", vid, node_id, error
        )
        try:
            await self.directory.set_readonly(vid, _reason(error), node_id=node_id)
        except DirectoryError as e:
            log.error("could not report volume %d read-only: %s", vid, e)
        if len(failed) < len(urls):
            try:
                await self.directory.delete(vid, key, alt_key)
            except DirectoryError as e:
                log.error("could not queue the delete of a partial write on %d: %s", vid, e)
        return None

    async def _replica_put(
        self, http: LeanHTTPClient, url: str, headers: tuple[tuple[str, str], ...], data: bytes
    ) -> bytes | StoreClientError:
        """One replica's PUT: the 201 answer's body, or the failure as a StoreClientError
        (returned, not raised: a failed replica is an expected outcome)."""
        try:
            resp = await http.request(
                "PUT", url, headers=headers, body=data, timeout_s=self._replica_timeout_s
            )
        except HttpTimeoutError:
            return StoreClientError(0, "timeout", f"{url} did not answer in time")
        except HttpClientError as e:
            return StoreClientError(0, "unreachable", f"cannot reach {url}: {e}")
        if resp.status == 201:
            return resp.body
        code, message = "http_error", resp.body[:200].decode(errors="replace")
        try:
            err = json.loads(resp.body)["error"]
            code, message = str(err["code"]), str(err["message"])
        except (ValueError, KeyError, TypeError):
            pass
        return StoreClientError(resp.status, code, message)

    async def delete(self, volume_id: int, key: int, alt_key: int | None = None) -> dict[str, Any]:
        """Deletes one variant (or every variant) everywhere, through the directory."""
        return await self.directory.delete(volume_id, key, alt_key)


def _volume(doc: dict[str, Any]) -> _Volume:
    urls = tuple(str(u).rstrip("/") for u in doc["replicas"])
    node_ids = tuple(str(n) for n in (doc.get("node_ids") or urls))
    if not urls or len(node_ids) != len(urls):
        raise DirectoryError(0, "bad_response", f"writable volume without replicas: {doc}")
    return _Volume(int(doc["volume_id"]), urls, node_ids)


def _etag(answer: bytes) -> str:
    """The ETag of the store's PUT answer ({"etag": "\\"<16 hex>\\"", ...})."""
    try:
        return str(json.loads(answer)["etag"])
    except (ValueError, KeyError, TypeError):
        return ""


def _reason(error: StoreClientError) -> str:
    return error.code
