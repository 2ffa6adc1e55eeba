"""The write path: one blob onto every replica of a writable logical volume.

`BlobWriter.put` (bytes) and `BlobWriter.put_file` (a file, streamed) acknowledge only
when every replica answered 201 (each has the needle on disk). When a replica fails (an
error status, no answer within replica_timeout_s, no connection), the writer reports the
logical volume read-only to the directory (naming the node), asks the directory to delete
the partial write when some replica took it (those replicas reclaim the bytes; the delete
is retried until each has it), and retries on another writable volume.

A node that could not be reached (or did not answer in time) is avoided for
unreachable_node_avoid_s: volumes with a replica on it are not tried, so one dead node
costs one failed attempt, not one per volume it holds, and the write lands on a volume
without it before the directory has noticed. When the list holds no other volume the
writer asks the directory again (short backoff: the directory grows new volumes once it
sees the node down) until put_retry_s_max has passed since the put began; no attempt
starts after that. Then `NoWritableVolume`, whose message says what was tried and why it
failed and whose `retry_after_s` callers pass on (503 with Retry-After). A put thus takes
at most about put_retry_s_max plus one replica_timeout_s.

The writable list is cached for writable_cache_s (the directory is not asked per write);
a volume that failed here is skipped until the list is refreshed without it.

Volume choice: a put without `volume_id` goes to the writer's current volume, drawn at
random from the writable list at every refresh (and again when it fails). Concurrent puts
of one writer thus land in the same volume on each replica and share its group commit
(one fdatasync per batch); spreading them over several volumes splits every replica's
batches and costs each store node about 40% more CPU per write. Over time and over many
writers the draws spread the load across volumes.

Cost: the replica PUTs are the data path, so they go over the lean HTTP client
(common/leanhttp, about a third of aiohttp's CPU per request); the directory calls stay on
aiohttp. Per put the writer computes the data's xxh3_64 once (X-Pinhole-Checksum, the same
for every replica and attempt; the credential is derived once per writer), builds the
replica PUTs once (LeanHTTPClient.request_each: one encoded head for all but each request
line and Host, the same body object) and writes them back to back before awaiting any
answer, with no task per replica, and touches the directory only when the cached list is
stale or a replica failed. Against a task per replica this cut the writer's instructions
per 3-replica put by about a sixth (callgrind: 325 k to 274 k, 3.2x to 2.6x a single PUT's;
ARCHITECTURE.md, "A replicated put built once, written back to back"). `put_file` reads the
file once on a thread for its checksum; then every replica's request streams it on its own
task (the page cache serves the repeats), so no put holds the whole file in memory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import secrets
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
import xxhash

from common import request_ids
from common.credentials import Credentials, Purpose
from common.leanhttp.client import (
    ClientResponse,
    FileBody,
    HttpClientError,
    HttpTimeoutError,
    LeanHTTPClient,
)
from directory.client import DirectoryClient
from directory.errors import DirectoryError, NoWritableVolume
from store.client import StoreClientError, needle_path

log = logging.getLogger("pinhole.writer")

WRITABLE_CACHE_S_DEFAULT: Final = 1.0
VOLUME_ATTEMPTS_MAX: Final = 8
PUT_RETRY_S_MAX_DEFAULT: Final = 10.0
# About the directory's default node_timeout_s: by then it no longer lists the node's
# volumes itself.
UNREACHABLE_NODE_AVOID_S_DEFAULT: Final = 5.0
# Waits between two asks for the writable list while none of it is usable.
RETRY_BACKOFF_S_MIN: Final = 0.05
RETRY_BACKOFF_S_MAX: Final = 1.0
# The store answers a PUT with a short JSON document (or a JSON error).
REPLICA_RESPONSE_BYTES_MAX: Final = 64 * 1024
# put_file's checksum pass reads the file in pieces of this size.
CHECKSUM_CHUNK_BYTES: Final = 1024 * 1024
# Replica failures that say nothing about the volume, only that its node is not there.
_NODE_FAILURES: Final = frozenset(("unreachable", "timeout"))

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
class _Payload:
    """What every replica receives in every attempt of one put."""

    body: bytes | FileBody
    size: int
    headers: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class _PutFailures:
    """What one put tried and why it failed: the message of its NoWritableVolume."""

    volumes: set[int] = field(default_factory=set)
    causes: set[str] = field(default_factory=set)  # "node <id> <error code>"
    directory_error: DirectoryError | None = None  # the last ask for the list, if it failed

    def add(self, vid: int, failed: list[tuple[str, StoreClientError]]) -> None:
        self.volumes.add(vid)
        self.causes.update(f"node {node_id} {error.code}" for node_id, error in failed)

    def message(self, retry_s: float, *, skipped: int, avoided: list[str]) -> str:
        """`skipped` volumes were not tried because they have a replica on one of the
        unreachable nodes `avoided`."""
        parts = []
        if self.volumes:
            causes = "; ".join(sorted(self.causes))
            parts.append(f"{_volumes(len(self.volumes))} failed ({causes})")
        if skipped:
            nodes = "node" if len(avoided) == 1 else "nodes"
            parts.append(
                f"{_volumes(skipped)} skipped (on unreachable {nodes} {', '.join(avoided)})"
            )
        if self.directory_error is not None:
            parts.append(f"asking the directory failed ({self.directory_error})")
        elif parts:
            parts.append("the directory lists none other")
        else:
            parts.append("the directory lists no writable volume")
        return f"no writable volume accepted the write within {retry_s:g} s: " + ", ".join(parts)


def _volumes(n: int) -> str:
    return "1 volume" if n == 1 else f"{n} volumes"


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
        put_retry_s_max: float = PUT_RETRY_S_MAX_DEFAULT,
        unreachable_node_avoid_s: float = UNREACHABLE_NODE_AVOID_S_DEFAULT,
    ) -> None:
        """`session` (aiohttp) carries the directory calls, `http` the replica PUTs; the
        writer creates (and closes) whichever is not given. Durations are seconds: see the
        module docstring for what each bounds."""
        if not replica_timeout_s > 0 or volume_attempts_max < 1:
            raise ValueError("replica_timeout_s must be > 0 and volume_attempts_max >= 1")
        if writable_cache_s < 0 or put_retry_s_max < 0 or unreachable_node_avoid_s < 0:
            raise ValueError(
                "writable_cache_s, put_retry_s_max and unreachable_node_avoid_s must be >= 0"
            )
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession(trace_configs=[request_ids.trace_config()])
        self._own_http = http is None
        self._http = http
        self.directory = DirectoryClient(
            directory_url, credentials=credentials, session=self._session
        )
        self._auth = credentials.header(Purpose.WRITE)
        self._replica_timeout_s = replica_timeout_s
        self._writable_cache_s = writable_cache_s
        self._volume_attempts_max = volume_attempts_max
        self._put_retry_s_max = put_retry_s_max
        self._unreachable_node_avoid_s = unreachable_node_avoid_s
        self._listed: tuple[_Volume, ...] = ()  # the directory's last answer
        self._usable: tuple[_Volume, ...] = ()  # listed minus failed and avoided
        self._current: _Volume | None = None  # where puts without volume_id go
        self._writable_at = -1e18
        self._failed: set[int] = set()
        self._avoided: dict[str, float] = {}  # unreachable node id -> loop time to retry it
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
                await self._fetch_writable()
        return self._usable

    async def _refresh_writable(self, requested_at: float) -> None:
        """Asks the directory again unless it answered since `requested_at` (loop time):
        one request for every put that waits for new volumes at once."""
        async with self._refresh_lock:
            if self._writable_at < requested_at:
                await self._fetch_writable()

    async def _fetch_writable(self) -> None:
        doc = await self.directory.writable()
        self._listed = tuple(_volume(v) for v in doc["volumes"])
        self._writable_at = asyncio.get_running_loop().time()
        listed = {v.volume_id for v in self._listed}
        self._failed &= listed  # the directory still lists it: keep avoiding it
        self._set_usable(draw=True)

    def _set_usable(self, *, draw: bool) -> None:
        failed = self._failed
        avoided = self._avoided
        if avoided:
            now = asyncio.get_running_loop().time()
            for node_id in [n for n, until in avoided.items() if until <= now]:
                del avoided[node_id]
        usable = self._usable = tuple(
            v
            for v in self._listed
            if v.volume_id not in failed and not (avoided and any(n in avoided for n in v.node_ids))
        )
        if draw or self._current not in usable:
            self._current = random.choice(usable) if usable else None

    def _forget(self, vid: int, unreachable: list[str]) -> None:
        self._failed.add(vid)
        until = asyncio.get_running_loop().time() + self._unreachable_node_avoid_s
        for node_id in unreachable:
            self._avoided[node_id] = until
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
        avoid_volume_ids: frozenset[int] = frozenset(),
    ) -> BlobRef:
        """Writes `data` as needle (key, alt_key) on every replica of one writable volume
        (`volume_id` preferred while it is writable; never one of `avoid_volume_ids`).
        Raises NoWritableVolume."""
        checksum = xxhash.xxh3_64_intdigest(data)
        return await self._put(
            key, alt_key, data, len(data), checksum, cookie, volume_id, avoid_volume_ids
        )

    async def put_file(
        self,
        key: int,
        alt_key: int,
        path: str | os.PathLike[str],
        *,
        cookie: int | None = None,
        volume_id: int | None = None,
    ) -> BlobRef:
        """`put` of the contents of the file at `path`, streamed to every replica (never
        read whole into memory). The file must not change until the put returns. Raises
        NoWritableVolume, or OSError when the file cannot be read."""
        size, checksum = await asyncio.to_thread(_file_digest, path)
        body = FileBody(path, 0, size)
        return await self._put(key, alt_key, body, size, checksum, cookie, volume_id, frozenset())

    async def _put(
        self,
        key: int,
        alt_key: int,
        body: bytes | FileBody,
        size: int,
        checksum: int,
        cookie: int | None,
        volume_id: int | None,
        avoid_volume_ids: frozenset[int],
    ) -> BlobRef:
        if cookie is None:
            cookie = secrets.randbits(64)
        http = self._http
        if http is None:
            http = self._http = LeanHTTPClient(response_bytes_max=REPLICA_RESPONSE_BYTES_MAX)
        # The same head fields for every replica and every attempt.
        headers = (
            ("Authorization", self._auth),
            ("X-Pinhole-Checksum", f"{checksum:016x}"),
            ("Content-Type", "application/octet-stream"),
        )
        payload = _Payload(body, size, headers)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._put_retry_s_max
        tried: set[int] = set()
        failures: _PutFailures | None = None
        backoff = RETRY_BACKOFF_S_MIN
        waited_at: float | None = None  # set after a wait: the list must be newer than this
        while True:
            try:
                if waited_at is None:
                    candidates = await self._writable_volumes()
                else:
                    await self._refresh_writable(waited_at)
                    candidates = self._usable
                if failures is not None:
                    failures.directory_error = None
            except DirectoryError as e:
                candidates = ()
                failures = failures or _PutFailures()
                failures.directory_error = e
            if tried or avoid_volume_ids:
                candidates = tuple(
                    v
                    for v in candidates
                    if v.volume_id not in tried and v.volume_id not in avoid_volume_ids
                )
            attempts_left = len(tried) < self._volume_attempts_max
            # The first attempt always runs; no later one starts after the deadline.
            if candidates and attempts_left and (not tried or loop.time() < deadline):
                chosen = None
                if volume_id is not None:
                    chosen = next((v for v in candidates if v.volume_id == volume_id), None)
                if chosen is None:
                    current = self._current
                    chosen = current if current in candidates else random.choice(candidates)
                tried.add(chosen.volume_id)
                ref, failed = await self._put_on(http, chosen, key, alt_key, cookie, payload)
                if ref is not None:
                    return ref
                failures = failures or _PutFailures()
                failures.add(chosen.volume_id, failed)
                waited_at = None
                continue
            now = loop.time()
            if now >= deadline or not attempts_left:
                raise self._no_writable_volume(failures or _PutFailures(), tried)
            # Nothing left to try in the list: give the directory time to list more.
            await asyncio.sleep(min(backoff, deadline - now))
            backoff = min(2 * backoff, RETRY_BACKOFF_S_MAX)
            waited_at = loop.time()

    def _no_writable_volume(self, failures: _PutFailures, tried: set[int]) -> NoWritableVolume:
        avoided = self._avoided
        skipped = [
            v
            for v in self._listed
            if v.volume_id not in tried and any(n in avoided for n in v.node_ids)
        ]
        nodes = sorted({n for v in skipped for n in v.node_ids if n in avoided})
        message = failures.message(self._put_retry_s_max, skipped=len(skipped), avoided=nodes)
        if len(tried) >= self._volume_attempts_max:
            message += f" (gave up after volume_attempts_max={self._volume_attempts_max})"
        return NoWritableVolume(message, retry_after_s=max(1.0, math.ceil(self._put_retry_s_max)))

    async def _put_on(
        self,
        http: LeanHTTPClient,
        lv: _Volume,
        key: int,
        alt_key: int,
        cookie: int,
        payload: _Payload,
    ) -> tuple[BlobRef | None, list[tuple[str, StoreClientError]]]:
        """One attempt on every replica of `lv`: the BlobRef, or None and the failed
        replicas (node id, error)."""
        vid = lv.volume_id
        path = needle_path(vid, key, alt_key, cookie)
        urls = lv.urls
        body = payload.body
        results: list[bytes | StoreClientError]
        if isinstance(body, FileBody):
            results = await self._replica_puts_streamed(
                http, [url + path for url in urls], body, payload.headers
            )
        else:
            # Every replica at once, built once: one head, one body object, all written
            # before any answer is awaited, no task per replica (request_each).
            answers = await http.request_each(
                "PUT",
                [url + path for url in urls],
                headers=payload.headers,
                body=body,
                timeout_s=self._replica_timeout_s,
            )
            results = [_replica_result(url + path, a) for url, a in zip(urls, answers, strict=True)]
        failed = [
            (node_id, r)
            for node_id, r in zip(lv.node_ids, results, strict=True)
            if isinstance(r, StoreClientError)
        ]
        if not failed:
            first = results[0]
            assert isinstance(first, bytes)
            return BlobRef(vid, key, alt_key, cookie, payload.size, _etag(first)), []
        self._forget(vid, [node_id for node_id, e in failed if e.code in _NODE_FAILURES])
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
        return None, failed

    async def _replica_puts_streamed(
        self,
        http: LeanHTTPClient,
        urls: list[str],
        body: FileBody,
        headers: tuple[tuple[str, str], ...],
    ) -> list[bytes | StoreClientError]:
        """put_file's replica PUTs: each streams the file on its own, the others on their
        own tasks and the first from here (one task fewer than gathering them all)."""
        loop = asyncio.get_running_loop()
        others = [
            loop.create_task(self._replica_put_streamed(http, url, body, headers))
            for url in urls[1:]
        ]
        try:
            results = [await self._replica_put_streamed(http, urls[0], body, headers)]
            for task in others:
                results.append(await task)
        except BaseException:
            for task in others:
                if not task.cancel() and not task.cancelled():
                    task.exception()  # retrieved: no "exception was never retrieved" log
            raise
        return results

    async def _replica_put_streamed(
        self,
        http: LeanHTTPClient,
        url: str,
        body: FileBody,
        headers: tuple[tuple[str, str], ...],
    ) -> bytes | StoreClientError:
        """One replica's PUT of a file body (a failed replica is returned, not raised)."""
        try:
            resp = await http.request(
                "PUT", url, headers=headers, body_file=body, timeout_s=self._replica_timeout_s
            )
        except HttpClientError as e:
            return _replica_result(url, e)
        return _replica_result(url, resp)

    async def delete(self, volume_id: int, key: int, alt_key: int | None = None) -> dict[str, Any]:
        """Deletes one variant (or every variant) everywhere, through the directory."""
        return await self.directory.delete(volume_id, key, alt_key)


def _volume(doc: dict[str, Any]) -> _Volume:
    urls = tuple(str(u).rstrip("/") for u in doc["replicas"])
    node_ids = tuple(str(n) for n in (doc.get("node_ids") or urls))
    if not urls or len(node_ids) != len(urls):
        raise DirectoryError(0, "bad_response", f"writable volume without replicas: {doc}")
    return _Volume(int(doc["volume_id"]), urls, node_ids)


def _replica_result(url: str, answer: ClientResponse | HttpClientError) -> bytes | StoreClientError:
    """One replica's outcome: the 201 answer's body, or the failure as a StoreClientError
    (a failed replica is an expected outcome, not an exception). Anything but a 201 fails
    the replica, whatever its body says."""
    if isinstance(answer, HttpTimeoutError):
        return StoreClientError(0, "timeout", f"{url} did not answer in time")
    if isinstance(answer, HttpClientError):
        return StoreClientError(0, "unreachable", f"cannot reach {url}: {answer}")
    if answer.status == 201:
        return answer.body
    code, message = "http_error", answer.body[:200].decode(errors="replace")
    try:
        err = json.loads(answer.body)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (ValueError, KeyError, TypeError):
        pass
    return StoreClientError(answer.status, code, message)


def _file_digest(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(size, xxh3_64) of the file at `path`, read once in CHECKSUM_CHUNK_BYTES pieces."""
    digest = xxhash.xxh3_64()
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHECKSUM_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.intdigest()


def _etag(answer: bytes) -> str:
    """The ETag of the store's PUT answer ({"etag": "\\"<16 hex>\\"", ...})."""
    try:
        return str(json.loads(answer)["etag"])
    except (ValueError, KeyError, TypeError):
        return ""


def _reason(error: StoreClientError) -> str:
    return error.code
