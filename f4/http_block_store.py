"""Blocks on f4 storage node processes (f4/node_http.py), behind the BlockStore protocol.

Each node (failure domain) has the base URL of the process serving it; several nodes may
share one. Every request carries the blocks credential. One urllib3 PoolManager serves all
threads (the name node calls this from executor threads; urllib3's pools are thread-safe).

What a caller sees, whatever the node's answer:
- a connect error, a timeout (CONNECT_TIMEOUT_S, READ_TIMEOUT_S), a 503, or a node the
  process does not serve: BlockUnreachable, as a LocalBlockStore's missing directory;
- a 404 for an object: BlockMissing (absent, or shorter than the range asked for);
- anything else unexpected: NodeAnswered, carrying the node's status and code.
Idempotent requests (GET, HEAD, DELETE, opening an upload, a whole-object PUT) are retried
once after a connection-level failure (a pooled keep-alive connection the node closed when
it restarted); an upload's chunks and commit never are.

Writes keep the protocol's promise (an object that exists is complete): an object of one
chunk at most (`put` of a sidecar or an index copy) is one request the node writes whole;
otherwise the writer buffers up to the node's chunk limit, appends chunks to an upload at
their offsets, and the node renames the upload into place only on commit; an aborted
writer deletes its upload, and a dead one leaves a temporary the node removes (idle
expiry, restart, clean_temporaries).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast

import urllib3
from urllib3.exceptions import HTTPError

from common.credentials import Credentials, Purpose
from f4.block_store import Buffer, put_pieces
from f4.errors import BlockCorrupt, BlockMissing, BlockUnreachable, F4Error, NodeAnswered
from f4.node_disk import OBJECT_TOO_LARGE, RANGE_BYTES_MAX
from f4.node_http import ERROR_HEADER, SIZE_HEADER, UPLOAD_CHUNK_BYTES_MAX, UPLOADS

CONNECT_TIMEOUT_S: Final = 2.0
READ_TIMEOUT_S: Final = 30.0
# Connection pools (one per storage node URL) and connections kept per pool.
POOLS_MAX: Final = 64
MISSING: Final = "block_missing"  # the code of a storage node's 404 for an object
CONNECTIONS_PER_URL_MAX: Final = 16
# A write at least this long is sent at once, from the caller's memory (no copy); shorter
# ones are gathered into chunks of UPLOAD_CHUNK_BYTES_MAX.
SEND_DIRECT_BYTES_MIN: Final = 1 << 20
assert SEND_DIRECT_BYTES_MIN <= UPLOAD_CHUNK_BYTES_MAX


class HttpBlockStore:
    def __init__(
        self,
        urls: Mapping[str, str],
        credentials: Credentials,
        *,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
    ) -> None:
        """`urls`: node name -> base URL of the storage node process serving it."""
        self._urls = {node: url.rstrip("/") for node, url in urls.items()}
        self._auth = credentials.header(Purpose.BLOCKS)
        timeout = urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s)
        self._pool = urllib3.PoolManager(
            num_pools=POOLS_MAX,
            maxsize=CONNECTIONS_PER_URL_MAX,
            timeout=timeout,
            headers={"Authorization": self._auth},
        )
        self._retry_idempotent = urllib3.Retry(
            total=1, connect=1, read=1, redirect=0, status=0, other=0, raise_on_status=False
        )

    def close(self) -> None:
        self._pool.clear()

    # -- requests ----------------------------------------------------------------------------

    def _url(self, node: str, tail: str) -> str:
        base = self._urls.get(node)
        if base is None:
            raise BlockUnreachable(f"node {node} is not in this cell")
        return f"{base}/b/{node}/{tail}"

    def request(
        self,
        method: str,
        node: str,
        tail: str,
        *,
        fields: Mapping[str, int] | None = None,
        body: Buffer | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """One request to the node's process; errors as the module docstring says. 2xx
        answers and the 404 of a missing object are returned (the caller says what that
        means)."""
        url = self._url(node, tail)
        if fields:
            url += "?" + "&".join(f"{k}={v}" for k, v in fields.items())
        # Opening an upload may be repeated too: an upload opened twice leaves one unused,
        # which the node drops once idle; and so may a whole-object PUT (the same bytes
        # replace the same name atomically), but never a chunk or a commit.
        again = method in ("GET", "HEAD", "DELETE") or (
            tail.endswith(UPLOADS) if method == "POST" else method == "PUT" and "/" not in tail
        )
        retries: urllib3.Retry | bool = self._retry_idempotent if again else False
        try:
            resp = self._pool.request(
                method,
                url,
                # urllib3 sends any buffer as it is, with its length (body_to_chunks); its
                # annotation names only bytes.
                body=cast(bytes | None, body),
                retries=retries,
                redirect=False,
            )
        except (HTTPError, OSError) as e:
            raise BlockUnreachable(f"node {node} at {self._urls[node]}: {e}") from None
        if 200 <= resp.status < 300:
            return resp
        code, message = error_of(resp.status, resp.headers.get(ERROR_HEADER), resp.data)
        if resp.status == 404 and code == MISSING:
            return resp
        raise answer_fault(resp.status, code, f"node {node} at {self._urls[node]}: {message}")

    # -- BlockStore --------------------------------------------------------------------------

    def nodes(self) -> list[str]:
        return list(self._urls)

    def node_up(self, node: str) -> bool:
        try:
            return self.request("HEAD", node, "").status == 200
        except (BlockUnreachable, NodeAnswered):
            return False

    def put(self, node: str, name: str, pieces: Iterable[Buffer]) -> None:
        """An object of at most UPLOAD_CHUNK_BYTES_MAX (a sidecar, an index copy) is one
        request (`PUT /b/{node}/{name}`, a single piece sent from the caller's memory); a
        longer one goes through an upload."""
        gathered: list[Buffer] = []
        length = 0
        rest = iter(pieces)
        for piece in rest:
            if length + len(piece) > UPLOAD_CHUNK_BYTES_MAX:
                put_pieces(self.open_writer(node, name), itertools.chain(gathered, [piece], rest))
                return
            gathered.append(piece)
            length += len(piece)
        body = gathered[0] if len(gathered) == 1 else b"".join(gathered)
        self.request("PUT", node, name, body=body)

    def open_writer(self, node: str, name: str) -> HttpBlockWriter:
        return HttpBlockWriter(self, node, name)

    def get_range(self, node: str, name: str, offset: int, length: int) -> bytes:
        if length > RANGE_BYTES_MAX:  # the node answers at most this much at once
            out = bytearray()
            for at in range(offset, offset + length, RANGE_BYTES_MAX):
                out += self.get_range(node, name, at, min(RANGE_BYTES_MAX, offset + length - at))
            return bytes(out)
        resp = self.request("GET", node, name, fields={"offset": offset, "length": length})
        if resp.status == 404 or len(resp.data) != length:
            raise BlockMissing(f"{node}/{name} has no {length} bytes at {offset}")
        return resp.data

    def get_checked_range(self, node: str, block: str, offset: int, length: int) -> bytes:
        """One request: the node checks the range against the block's sidecar."""
        fields = {"offset": offset, "length": length, "checked": 1}
        resp = self.request("GET", node, block, fields=fields)
        if resp.status == 404 or len(resp.data) != length:
            raise BlockMissing(f"{node}/{block} has no {length} bytes at {offset}")
        return resp.data

    def get(self, node: str, name: str) -> bytes:
        try:
            resp = self.request("GET", node, name)
        except NodeAnswered as e:
            if e.code != OBJECT_TOO_LARGE:
                raise
            return self.get_range(node, name, 0, self.size(node, name))
        if resp.status == 404:
            raise BlockMissing(f"{node}/{name} does not exist")
        return resp.data

    def exists(self, node: str, name: str) -> bool:
        try:
            return self.request("HEAD", node, name).status == 200
        except BlockUnreachable:
            return False

    def size(self, node: str, name: str) -> int:
        resp = self.request("HEAD", node, name)
        if resp.status == 404:
            raise BlockMissing(f"{node}/{name} does not exist")
        return int(resp.headers[SIZE_HEADER])

    def delete(self, node: str, name: str) -> None:
        self.request("DELETE", node, name)

    def list(self, node: str) -> list[str]:
        resp = self.request("GET", node, "")
        names: list[str] = _json(resp)["names"]
        return names

    def clean_temporaries(self) -> int:
        """Aborts the uploads open on every reachable node (run, like LocalBlockStore's,
        by the holder of the cell's lock before it writes); returns how many."""
        removed = 0
        for node in self._urls:
            try:
                removed += int(_json(self.request("DELETE", node, UPLOADS))["aborted"])
            except BlockUnreachable:
                continue
        return removed


class HttpBlockWriter:
    """An upload: chunks of at most UPLOAD_CHUNK_BYTES_MAX at their offsets, then commit."""

    def __init__(self, store: HttpBlockStore, node: str, name: str) -> None:
        self._store = store
        self._node = node
        self._name = name
        self._buffer = bytearray()
        self._sent = 0
        resp = store.request("POST", node, f"{name}/{UPLOADS}")
        if resp.status == 404:
            raise BlockMissing(f"{node}/{name}: no upload could be opened")
        self._id = str(_json(resp)["upload"])
        self._tail = f"{name}/{UPLOADS}/{self._id}"

    def write(self, data: Buffer) -> None:
        """Small pieces are gathered into chunks; a piece of at least SEND_DIRECT_BYTES_MIN
        is sent as it is (after what was gathered), in chunks straight from the caller's
        memory, so a migration's 4 MiB windows are never copied here."""
        view = memoryview(data).cast("B")
        chunk_max = UPLOAD_CHUNK_BYTES_MAX
        if len(view) >= SEND_DIRECT_BYTES_MIN:
            if self._buffer:
                self._send(bytes(self._buffer))
                self._buffer.clear()
            for at in range(0, len(view), chunk_max):
                self._send(view[at : at + chunk_max])
            return
        take = min(len(view), chunk_max - len(self._buffer))
        self._buffer += view[:take]
        if len(self._buffer) == chunk_max:
            self._send(bytes(self._buffer))
            self._buffer.clear()
            self._buffer += view[take:]

    def _send(self, chunk: Buffer) -> None:
        self._store.request(
            "PUT", self._node, self._tail, fields={"offset": self._sent}, body=chunk
        )
        self._sent += len(chunk)

    def commit(self) -> None:
        if self._buffer:
            self._send(bytes(self._buffer))
            self._buffer.clear()
        self._store.request("POST", self._node, f"{self._tail}/commit")

    def abort(self) -> None:
        """Deletes the upload; a node that cannot be reached drops it itself later."""
        self._buffer.clear()
        try:
            self._store.request("DELETE", self._node, self._tail)
        except (BlockUnreachable, NodeAnswered):
            pass


def _json(resp: urllib3.BaseHTTPResponse) -> dict[str, Any]:
    doc = json.loads(resp.data)
    if not isinstance(doc, dict):
        raise NodeAnswered("a storage node answered something that is not a JSON object")
    return doc


def error_of(status: int, header: str | None, body: bytes) -> tuple[str, str]:
    """The error's code (the header, which HEAD answers carry too) and message."""
    code = header or "http_error"
    try:
        error = json.loads(body)["error"]
        return str(error.get("code", code)), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError, AttributeError):
        return code, f"HTTP {status}"


def answer_fault(status: int, code: str, message: str) -> F4Error:
    """What a storage node's error answer means to its reader: a corrupt range, a node
    that cannot serve (503, or a node the process does not serve), a missing object, or
    an answer the client does not expect (NodeAnswered)."""
    if status == 503 and code == BlockCorrupt.code:
        return BlockCorrupt(message)
    if status == 503 or (status == 404 and code == "node_not_served"):
        return BlockUnreachable(message)
    if status == 404 and code == MISSING:
        return BlockMissing(message)
    return NodeAnswered(message, status=status, code=code)
