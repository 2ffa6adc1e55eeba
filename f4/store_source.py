"""A sealed Haystack volume read through a store node's HTTP API: what a migration reads
when it does not run on the store's host ([f4] haystack_url, `pinhole f4 migrate
--haystack-url`).

    GET /volumes                                  the volumes and their statistics [admin]
    GET /volumes/{id}/dat?offset=O&length=L      raw bytes of the volume file [node or admin]

(docs/api/store.md). `StoreVolumes` answers what the cell asks of a local volume directory
(the volumes there, each one's mode and age) and opens a `StoreVolumeFile` for
f4.needle_source, which scans and reads it exactly as it reads a local file: every needle
is checked there (framing, checksum), whatever carried its bytes.

The age of a volume read this way is the time since its mode last changed
(`state_changed_unix_s`): a sealed volume took no write after it, so its newest needle is
at least that old (the local rule, the data file's last write, can only be older).

A store answers `dat` up to the volume's durable end and names the compaction revision of
the file it read; a file compacted between two reads would shift every offset, so a reader
keeps the first revision it saw and fails (VolumeChanged) on another.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

import urllib3
from urllib3.exceptions import HTTPError

from common.credentials import Credentials, Purpose
from f4.errors import F4Error

# The store's DAT_READ_BYTES_MAX: the most one `dat` answer carries, and the read-ahead
# window (a migration scans and reads in file order).
DAT_READ_BYTES: Final = 8 << 20
CONNECT_TIMEOUT_S: Final = 2.0
READ_TIMEOUT_S: Final = 30.0
END_HEADER: Final = "x-pinhole-volume-end"
REVISION_HEADER: Final = "x-pinhole-compaction-revision"


class StoreUnavailable(F4Error):
    """The store node holding the volume could not be read."""

    status = 503
    code = "store_unavailable"


class VolumeChanged(F4Error):
    """The volume's file was compacted while it was being read: start again."""

    status = 409
    code = "volume_changed"


@dataclass(frozen=True, slots=True)
class StoreVolume:
    volume: int
    mode: str  # writable, read_only, sealed
    reason: str | None
    state_changed_unix_s: float


class _Http:
    def __init__(self, url: str, credentials: Credentials) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": credentials.header(Purpose.ADMIN)}
        self._pool = urllib3.PoolManager(
            num_pools=1,
            maxsize=2,
            timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT_S, read=READ_TIMEOUT_S),
            retries=False,
        )

    def get(self, path: str) -> urllib3.BaseHTTPResponse:
        try:
            resp = self._pool.request("GET", self.url + path, headers=self._headers)
        except HTTPError as e:
            raise StoreUnavailable(f"store node {self.url}: {e}") from None
        if resp.status != 200:
            try:
                message = json.loads(resp.data)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {resp.status}"
            raise StoreUnavailable(f"store node {self.url}{path.split('?')[0]}: {message}")
        return resp

    def close(self) -> None:
        self._pool.clear()


class StoreVolumes:
    """The volumes of one store node, as a migration sees them."""

    def __init__(self, url: str, credentials: Credentials | None) -> None:
        if credentials is None or Purpose.ADMIN not in credentials.tokens:
            raise F4Error("reading volumes from a store node needs the operator's credentials")
        self._http = _Http(url, credentials)
        self._credentials = credentials

    @property
    def url(self) -> str:
        return self._http.url

    def list(self) -> dict[int, StoreVolume]:
        doc: dict[str, Any] = json.loads(self._http.get("/volumes").data)
        return {
            int(v["volume_id"]): StoreVolume(
                int(v["volume_id"]),
                str(v["mode"]),
                v.get("reason"),
                float(v.get("state_changed_unix_s", 0.0)),
            )
            for v in doc["volumes"]
        }

    def open(self, volume: int) -> StoreVolumeFile:
        return StoreVolumeFile(self._http, volume)

    def close(self) -> None:
        self._http.close()


class StoreVolumeFile:
    """One volume's file read by ranges through `dat`, with a read-ahead window of
    DAT_READ_BYTES (f4.needle_source's scan and its needle reads go in file order, so most
    reads are served from the window). What f4.needle_source needs of a file: `read`,
    `size`, `close`."""

    def __init__(self, http: _Http, volume: int) -> None:
        self._http = http
        self.volume = volume
        self.name = f"{http.url}/volumes/{volume}"
        self._end: int | None = None
        self._revision: str | None = None
        self._window_at = 0
        self._window = b""

    def _dat(self, offset: int, length: int) -> bytes:
        resp = self._http.get(f"/volumes/{self.volume}/dat?offset={offset}&length={length}")
        revision = resp.headers.get(REVISION_HEADER)
        if self._revision is None:
            self._revision = revision
        elif revision != self._revision:
            raise VolumeChanged(f"volume {self.volume} on {self._http.url} was compacted")
        self._end = int(resp.headers[END_HEADER])
        return bytes(resp.data)

    def size(self) -> int:
        """The volume's durable end now (a sealed volume's grows only by the tombstones
        of deletes, which the migration reconciles separately)."""
        self._dat(0, 0)
        assert self._end is not None
        return self._end

    def read(self, length: int, offset: int) -> bytes:
        """Up to `length` bytes at `offset` (short only at the end of the file)."""
        at = offset - self._window_at
        if at >= 0 and at + length <= len(self._window):
            return self._window[at : at + length]
        if length >= DAT_READ_BYTES:
            parts = []
            while length > 0:
                part = self._dat(offset, min(length, DAT_READ_BYTES))
                if not part:
                    break
                parts.append(part)
                offset += len(part)
                length -= len(part)
            return b"".join(parts)
        self._window_at, self._window = offset, self._dat(offset, DAT_READ_BYTES)
        return self._window[:length]

    def close(self) -> None:
        self._window = b""
