"""An asyncio client for a store node's HTTP API (docs/api/store.md), used by the operator
commands and by the other services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

import aiohttp
import xxhash
from multidict import CIMultiDictProxy

from common import credentials


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


def needle_path(vid: int, key: int, alt_key: int, cookie: int) -> str:
    return f"/n/{vid}/{key}/{alt_key}/{cookie:016x}"


class StoreClient:
    def __init__(
        self,
        base_url: str,
        *,
        secret: bytes | None = None,
        timeout_s: float = 30.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = credentials.authorization_header(secret) if secret else None
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._own_session = session is None
        self._session = session

    async def __aenter__(self) -> Self:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = dict(extra or {})
        if self._auth:
            h["Authorization"] = self._auth
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
    ) -> tuple[int, bytes, CIMultiDictProxy[str]]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.request(
                method, self.base_url + path, json=json, data=data, headers=self._headers(headers)
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
        self, vid: int, key: int, alt_key: int, cookie: int, data: bytes
    ) -> dict[str, Any]:
        checksum = f"{xxhash.xxh3_64_intdigest(data):016x}"
        return dict(
            await self._json(
                "PUT",
                needle_path(vid, key, alt_key, cookie),
                data=data,
                headers={
                    "X-Pinhole-Checksum": checksum,
                    "Content-Type": "application/octet-stream",
                },
                expect=(201,),
            )
        )

    async def get(self, vid: int, key: int, alt_key: int, cookie: int) -> Needle:
        _, body, headers = await self._request("GET", needle_path(vid, key, alt_key, cookie))
        return Needle(body, headers.get("ETag", ""))

    async def delete(self, vid: int, key: int, alt_key: int | None = None) -> int:
        path = f"/n/{vid}/{key}" + (f"/{alt_key}" if alt_key is not None else "")
        doc = await self._json("DELETE", path)
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
