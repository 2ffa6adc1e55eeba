"""An asyncio client for a store node's HTTP API (docs/api/store.md), used by the operator
commands and by the other services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Self

import aiohttp
import xxhash
from multidict import CIMultiDictProxy

from common import request_ids
from common.credentials import Credentials, Purpose


class StoreClientError(Exception):
    """The node answered with an error (status and the JSON error code) or could not be
    reached (status 0)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})" if status else message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class Needle:
    data: bytes
    etag: str


@dataclass(frozen=True, slots=True)
class InternalNeedle:
    """An internal read's answer: the data, its ETag and the needle's cookie."""

    data: bytes
    etag: str
    cookie: int


@dataclass(frozen=True, slots=True)
class DatChunk:
    """Raw bytes of a volume file (GET /volumes/{id}/dat), with the volume's durable end and
    the compaction revision of the file they were read from."""

    data: bytes
    volume_end: int
    compaction_revision: int


_READ: Final = (Purpose.READ,)
_WRITE: Final = (Purpose.WRITE,)


def needle_path(vid: int, key: int, alt_key: int, cookie: int) -> str:
    return f"/n/{vid}/{key}/{alt_key}/{cookie:016x}"


class StoreClient:
    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """Each call sends the credential of its purpose (read, write, node, admin) when
        `credentials` holds it, else none (the node answers 401)."""
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._own_session = session is None
        self._session = session

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, trace_configs=[request_ids.trace_config()]
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(
        self, purposes: tuple[Purpose, ...], extra: dict[str, str] | None
    ) -> dict[str, str]:
        h = dict(extra or {})
        creds = self._credentials
        if creds is not None:
            held = next((p for p in purposes if creds.holds(p)), None)
            if held is not None:
                h["Authorization"] = creds.header(held)
        return h

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        expect: tuple[int, ...] = (200,),
        purposes: tuple[Purpose, ...] = (Purpose.ADMIN,),
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, trace_configs=[request_ids.trace_config()]
            )
        try:
            async with self._session.request(
                method,
                self.base_url + path,
                json=json,
                data=data,
                headers=self._headers(purposes, headers),
            ) as resp:
                body = await resp.read()
                if resp.status not in expect:
                    code, message = "http_error", body[:200].decode(errors="replace")
                    try:
                        err = (await resp.json(content_type=None))["error"]
                        code, message = err["code"], err["message"]
                    except (ValueError, KeyError, TypeError):
                        pass
                    raise StoreClientError(resp.status, code, message)
                return resp.status, body, resp.headers
        except aiohttp.ClientError as e:
            raise StoreClientError(0, "unreachable", f"cannot reach {self.base_url}: {e}") from e
        except TimeoutError as e:
            raise StoreClientError(0, "timeout", f"{self.base_url} did not answer in time") from e

    async def _json(self, method: str, path: str, *, key: str | None = None, **kw: Any) -> Any:
        """The JSON answer (or its `key`); an answer that is not the store API's JSON is a
        StoreClientError, not a traceback."""
        import json as jsonlib

        status, body, _ = await self._request(method, path, **kw)
        try:
            doc = jsonlib.loads(body)
            if key is not None:
                doc = doc[key]
            if not isinstance(doc, dict | list):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise StoreClientError(
                status, "bad_response", f"{self.base_url}{path} did not answer with the store API"
            ) from None
        return doc

    # -- data ------------------------------------------------------------------------------

    async def put(
        self, vid: int, key: int, alt_key: int, cookie: int, data: bytes, *, repair: bool = False
    ) -> dict[str, Any]:
        """Writes a needle. `repair`: a good copy of a needle the node holds corrupt (also
        taken by a volume read-only because full or by an operator)."""
        checksum = f"{xxhash.xxh3_64_intdigest(data):016x}"
        headers = {"X-Pinhole-Checksum": checksum, "Content-Type": "application/octet-stream"}
        if repair:
            headers["X-Pinhole-Repair"] = "1"
        return dict(
            await self._json(
                "PUT",
                needle_path(vid, key, alt_key, cookie),
                data=data,
                headers=headers,
                expect=(201,),
                purposes=_WRITE,
            )
        )

    async def internal_read(self, vid: int, key: int, alt_key: int) -> InternalNeedle:
        """Reads a needle without its cookie (credential): the bytes and the cookie."""
        _, body, headers = await self._request("GET", f"/n/{vid}/{key}/{alt_key}", purposes=_READ)
        try:
            cookie = int(headers["X-Pinhole-Cookie"], 16)
        except (KeyError, ValueError):
            raise StoreClientError(200, "bad_response", "no X-Pinhole-Cookie header") from None
        return InternalNeedle(body, headers.get("ETag", ""), cookie)

    async def get(self, vid: int, key: int, alt_key: int, cookie: int) -> Needle:
        _, body, headers = await self._request(
            "GET", needle_path(vid, key, alt_key, cookie), purposes=_READ
        )
        return Needle(body, headers.get("ETag", ""))

    async def delete(self, vid: int, key: int, alt_key: int | None = None) -> int:
        path = f"/n/{vid}/{key}" + (f"/{alt_key}" if alt_key is not None else "")
        doc = await self._json("DELETE", path, purposes=_WRITE)
        try:
            return int(doc["deleted"])
        except (KeyError, TypeError, ValueError):
            raise StoreClientError(200, "bad_response", "the delete answer has no count") from None

    # -- administration --------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return dict(await self._json("GET", "/status"))

    async def volumes(self) -> list[dict[str, Any]]:
        return list(await self._json("GET", "/volumes", key="volumes"))

    async def volume(self, vid: int) -> dict[str, Any]:
        return dict(await self._json("GET", f"/volumes/{vid}"))

    async def create_volume(self, vid: int) -> dict[str, Any]:
        return dict(await self._json("POST", "/volumes", json={"volume_id": vid}, expect=(201,)))

    async def set_mode(self, vid: int, mode: str) -> dict[str, Any]:
        return dict(await self._json("POST", f"/volumes/{vid}/state", json={"mode": mode}))

    async def start_job(
        self, vid: int, kind: str, *, bytes_per_s_max: float | None = None
    ) -> dict[str, Any]:
        body = {"bytes_per_s_max": bytes_per_s_max} if bytes_per_s_max else {}
        return dict(await self._json("POST", f"/volumes/{vid}/{kind}", json=body, expect=(202,)))

    async def job(self, vid: int, kind: str) -> dict[str, Any]:
        return dict(await self._json("GET", f"/volumes/{vid}/{kind}"))

    async def delete_volume(self, vid: int) -> dict[str, Any]:
        """Closes the volume on the node and removes its files (and a pull of it)."""
        return dict(await self._json("DELETE", f"/volumes/{vid}"))

    async def read_dat(self, vid: int, offset: int, length: int) -> DatChunk:
        """Raw bytes [offset, offset + length) of the volume file, cut at its durable end
        (length at most 8 MiB). 416 (StoreClientError) when offset is past the end."""
        _, body, headers = await self._request(
            "GET",
            f"/volumes/{vid}/dat?offset={offset}&length={length}",
            purposes=(Purpose.NODE, Purpose.ADMIN),
        )
        try:
            end = int(headers["X-Pinhole-Volume-End"])
            revision = int(headers["X-Pinhole-Compaction-Revision"])
        except (KeyError, ValueError):
            raise StoreClientError(
                200, "bad_response", "the volume file answer lacks its headers"
            ) from None
        return DatChunk(body, end, revision)

    async def start_pull(
        self, vid: int, source: str, *, bytes_per_s_max: float | None = None
    ) -> dict[str, Any]:
        """Starts copying volume `vid` from the store node at `source` onto this node: 202
        job (poll with job(vid, "pull")); 409 when the volume is here or a pull runs."""
        body: dict[str, Any] = {"source": source}
        if bytes_per_s_max:
            body["bytes_per_s_max"] = bytes_per_s_max
        return dict(await self._json("POST", f"/volumes/{vid}/pull", json=body, expect=(202,)))

    async def scrub(self, vid: int, *, bytes_per_s_max: float | None = None) -> dict[str, Any]:
        """Starts one scrub pass of the volume now: 202 job (poll with job(vid, "scrub"))."""
        return await self.start_job(vid, "scrub", bytes_per_s_max=bytes_per_s_max)

    async def wait_job(
        self, vid: int, kind: str, *, poll_s: float = 0.1, timeout_s: float = 3600.0
    ) -> dict[str, Any]:
        """Polls the job until it is no longer running; its last state."""
        import asyncio

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            job = await self.job(vid, kind)
            if job.get("state") != "running":
                return job
            if loop.time() > deadline:
                raise StoreClientError(0, "timeout", f"the {kind} of volume {vid} is still running")
            await asyncio.sleep(poll_s)
