"""Checked block ranges for an event loop: what the name node's read path awaits.

A node the cell's config gives a url (a storage node process) is read with one keep-alive
request on LeanHTTPClient, the node checking the range against the block's sidecar before
it answers (`GET ...?checked=1`, docs/api/f4-node.md); any other node is read by the
cell's BlockStore on the caller's executor. Either way the answer is the BlockStore's:
the bytes, or BlockCorrupt, BlockMissing, BlockUnreachable, NodeAnswered
(f4.http_block_store.answer_fault gives both clients one meaning for a node's answer).

A process that could not be reached is skipped for PROCESS_DOWN_S (its blocks read as
unreachable at once, so reads of them go degraded without a failed connect each).

`get_checked_ranges` is a degraded read's fetch: the ranges a process holds go in one
`POST /ranges` (docs/api/f4-node.md), the processes asked at the same time. Where a cell
has fewer processes than a stripe has blocks (every local cell, any cell under 14 nodes),
a reconstruction is then 3 or 4 requests instead of 10 (measured in ARCHITECTURE.md).

Why not HttpBlockStore on a thread pool, as before: a healthy read then cost a thread
hand-off and urllib3's request machinery, and a degraded read ten of each (measured in
ARCHITECTURE.md: the name node's CPU per read, healthy and degraded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import Final

from common.credentials import Credentials, Purpose
from common.leanhttp.client import HttpClientError, LeanHTTPClient
from f4.block_store import BlockStore
from f4.errors import BlockMissing, BlockUnreachable, F4Error, NodeAnswered
from f4.http_block_store import (
    CONNECT_TIMEOUT_S,
    CONNECTIONS_PER_URL_MAX,
    READ_TIMEOUT_S,
    answer_fault,
    error_of,
)
from f4.node_disk import RANGE_BYTES_MAX
from f4.node_http import ERROR_HEADER, RANGES_HEADER, RANGES_MAX

_ERROR_HEADER: Final = ERROR_HEADER.lower()
_RANGES_HEADER: Final = RANGES_HEADER.lower()
# node, block, offset, length
Want = tuple[str, str, int, int]
# A storage node process that could not be reached (refused, reset, timed out) is not
# asked again for this long: reads of its blocks go degraded at once instead of each
# paying a failed connect first (f4's backoff). A 503 from a live process does not count.
PROCESS_DOWN_S: Final = 1.0


class AsyncBlocks:
    def __init__(
        self,
        store: BlockStore,
        executor: Executor,
        *,
        urls: Mapping[str, str] | None = None,
        credentials: Credentials | None = None,
        timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        """`urls`: node -> base URL of its storage node process (read over HTTP with the
        blocks credential of `credentials`); other nodes go to `store` on `executor`."""
        self._store = store
        self._executor = executor
        self._urls = {node: url.rstrip("/") for node, url in (urls or {}).items()}
        if self._urls and credentials is None:
            raise ValueError("storage nodes need the blocks credential")
        self._headers = (
            (("Authorization", credentials.header(Purpose.BLOCKS)),) if credentials else ()
        )
        self._timeout_s = timeout_s
        self._http: LeanHTTPClient | None = None
        self._down_until: dict[str, float] = {}  # base URL -> loop time

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def client_errors(self) -> dict[str, int]:
        """Requests to storage nodes that failed before an answer, by kind."""
        return dict(self._http.statistics().errors_by_kind) if self._http else {}

    def _client(self) -> LeanHTTPClient:
        if self._http is None:
            self._http = LeanHTTPClient(
                connections_per_origin_max=CONNECTIONS_PER_URL_MAX,
                response_bytes_max=RANGE_BYTES_MAX,
                connect_timeout_s=CONNECT_TIMEOUT_S,
            )
        return self._http

    async def get_checked_range(self, node: str, block: str, offset: int, length: int) -> bytes:
        base = self._urls.get(node)
        if base is None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, self._store.get_checked_range, node, block, offset, length
            )
        loop = asyncio.get_running_loop()
        if self._down_until.get(base, 0.0) > loop.time():
            raise BlockUnreachable(f"node {node} at {base}: unreachable moments ago")
        url = f"{base}/b/{node}/{block}?offset={offset}&length={length}&checked=1"
        try:
            resp = await self._client().request(
                "GET", url, headers=self._headers, timeout_s=self._timeout_s
            )
        except HttpClientError as e:
            self._down_until[base] = loop.time() + PROCESS_DOWN_S
            raise BlockUnreachable(f"node {node} at {base}: {e}") from None
        self._down_until.pop(base, None)
        if resp.status == 200:
            if len(resp.body) != length:
                raise BlockMissing(f"{node}/{block} has no {length} bytes at {offset}")
            return resp.body
        code, message = error_of(resp.status, resp.headers.get(_ERROR_HEADER), resp.body)
        raise answer_fault(resp.status, code, f"node {node} at {base}: {message}")

    def url_of(self, node: str) -> str | None:
        """The base URL of `node`'s storage node process, None for a node read through the
        BlockStore or a process being skipped (PROCESS_DOWN_S after a failure)."""
        base = self._urls.get(node)
        if base is None or self._down_until.get(base, 0.0) > asyncio.get_running_loop().time():
            return None
        return base

    def reachable(self, node: str) -> bool:
        """False while `node`'s process is being skipped (PROCESS_DOWN_S after a failure)."""
        base = self._urls.get(node)
        if base is None:
            return True
        return self._down_until.get(base, 0.0) <= asyncio.get_running_loop().time()

    async def get_checked_ranges(self, wants: Sequence[Want]) -> list[bytes | F4Error]:
        """Each range as get_checked_range answers it, in order, a fault as a value: the
        ranges of one storage node process in one POST /ranges (at most RANGES_MAX and
        RANGE_BYTES_MAX each), the processes asked at the same time."""
        out: list[bytes | F4Error] = [BlockMissing("not read")] * len(wants)
        by_process: dict[str | None, list[int]] = {}
        for i, want in enumerate(wants):
            by_process.setdefault(self._urls.get(want[0]), []).append(i)
        fetches = []
        for base, indices in by_process.items():
            batch: list[int] = []
            batch_bytes = 0
            for i in indices:
                length = wants[i][3]
                if batch and (len(batch) == RANGES_MAX or batch_bytes + length > RANGE_BYTES_MAX):
                    fetches.append(self._fetch(base, wants, batch, out))
                    batch, batch_bytes = [], 0
                batch.append(i)
                batch_bytes += length
            fetches.append(self._fetch(base, wants, batch, out))
        await asyncio.gather(*fetches)
        return out

    async def _fetch(
        self, base: str | None, wants: Sequence[Want], batch: list[int], out: list[bytes | F4Error]
    ) -> None:
        if base is None or len(batch) == 1:
            for i in batch:
                try:
                    out[i] = await self.get_checked_range(*wants[i])
                except F4Error as e:
                    out[i] = e
            return
        loop = asyncio.get_running_loop()
        if self._down_until.get(base, 0.0) > loop.time():
            for i in batch:
                out[i] = BlockUnreachable(f"{base}: unreachable moments ago")
            return
        body = "".join(f"{n} {b} {o} {ln}\n" for n, b, o, ln in (wants[i] for i in batch))
        try:
            resp = await self._client().request(
                "POST",
                f"{base}/ranges",
                headers=self._headers,
                body=body.encode(),
                timeout_s=self._timeout_s,
            )
        except HttpClientError as e:
            self._down_until[base] = loop.time() + PROCESS_DOWN_S
            for i in batch:
                out[i] = BlockUnreachable(f"{base}: {e}")
            return
        self._down_until.pop(base, None)
        if resp.status != 200:
            code, message = error_of(resp.status, resp.headers.get(_ERROR_HEADER), resp.body)
            for i in batch:
                out[i] = answer_fault(resp.status, code, f"{base}: {message}")
            return
        entries = resp.headers.get(_RANGES_HEADER, "").split(",")
        wanted = sum(wants[i][3] for i, e in zip(batch, entries, strict=False) if e == "200")
        if len(entries) != len(batch) or len(resp.body) != wanted:
            for i in batch:
                out[i] = NodeAnswered(
                    f"{base}: a ranges answer that does not match its request",
                    status=resp.status,
                    code="bad_ranges_answer",
                )
            return
        view = memoryview(resp.body)
        at = 0
        for i, entry in zip(batch, entries, strict=True):
            node, block, _, length = wants[i]
            if entry == "200":
                out[i] = bytes(view[at : at + length])
                at += length
                continue
            status, _, code = entry.partition(":")
            out[i] = answer_fault(
                int(status) if status.isdigit() else 502, code, f"node {node} at {base}: {block}"
            )
