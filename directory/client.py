"""An asyncio client for the directory's HTTP API (docs/api/directory.md).

Every method raises DirectoryError(status, code, message): the directory's JSON error, or
status 0 with code `unreachable` / `timeout` when it could not be reached."""

from __future__ import annotations

import json
from typing import Any, Self

import aiohttp

from common import request_ids
from common.credentials import Credentials, Purpose
from directory.errors import DirectoryError

__all__ = ["DirectoryClient", "DirectoryError"]

_R, _W, _N, _A = Purpose.READ, Purpose.WRITE, Purpose.NODE, Purpose.ADMIN


class DirectoryClient:
    def __init__(
        self,
        base_url: str,
        *,
        credentials: Credentials | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """Each call sends the first credential `credentials` holds among the purposes its
        route takes (none when it holds none: the directory answers 401)."""
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._own_session = session is None
        self._session = session

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        expect: tuple[int, ...] = (200,),
        purposes: tuple[Purpose, ...] = (_A,),
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, trace_configs=[request_ids.trace_config()]
            )
        headers: dict[str, str] = {}
        creds = self._credentials
        held = None if creds is None else next((p for p in purposes if creds.holds(p)), None)
        if creds is not None and held is not None:
            headers["Authorization"] = creds.header(held)
        try:
            async with self._session.request(
                method, self.base_url + path, json=body, headers=headers, timeout=self._timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                content_type = resp.content_type
        except aiohttp.ClientError as e:
            raise DirectoryError(0, "unreachable", f"cannot reach {self.base_url}: {e}") from e
        except TimeoutError as e:
            raise DirectoryError(0, "timeout", f"{self.base_url} did not answer in time") from e
        if status not in expect:
            code, message = "http_error", raw[:200].decode(errors="replace")
            try:
                err = json.loads(raw)["error"]
                code, message = str(err["code"]), str(err["message"])
            except (ValueError, KeyError, TypeError):
                pass
            raise DirectoryError(status, code, message)
        if content_type != "application/json":
            return raw.decode(errors="replace")
        try:
            return json.loads(raw)
        except ValueError:
            raise DirectoryError(status, "bad_response", f"{path} answered no JSON") from None

    # -- nodes -----------------------------------------------------------------------------

    async def heartbeat(
        self,
        *,
        node_id: str,
        role: str,
        url: str,
        failure_domain: str = "",
        free_bytes: int = 0,
        volumes: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        body = {
            "node_id": node_id,
            "role": role,
            "url": url,
            "failure_domain": failure_domain,
            "free_bytes": free_bytes,
            "volumes": volumes or [],
        }
        return dict(await self._call("POST", "/heartbeat", body=body, purposes=(_N,)))

    async def nodes(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/nodes"))["nodes"])

    async def caches(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/caches", purposes=(_R, _A)))["caches"])

    # -- volumes ---------------------------------------------------------------------------

    async def volumes(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/volumes"))["volumes"])

    async def volume(self, vid: int) -> dict[str, Any]:
        return dict(await self._call("GET", f"/volumes/{vid}", purposes=(_R, _W, _A)))

    async def writable(self) -> dict[str, Any]:
        """{"volumes": [{volume_id, replicas: [url], node_ids: [id]}], "alerts": [...]}"""
        return dict(await self._call("GET", "/writable", purposes=(_W, _A)))

    async def create_volumes(self, count: int) -> list[dict[str, Any]]:
        doc = await self._call("POST", "/volumes", body={"count": count}, expect=(201,))
        return list(doc["volumes"])

    async def set_readonly(
        self, vid: int, reason: str, *, node_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if node_id is not None:
            body["node_id"] = node_id
        return dict(
            await self._call("POST", f"/volumes/{vid}/readonly", body=body, purposes=(_W, _A))
        )

    async def set_writable(self, vid: int) -> dict[str, Any]:
        return dict(await self._call("POST", f"/volumes/{vid}/writable", body={}))

    # -- deletes and repairs ---------------------------------------------------------------

    async def delete(self, vid: int, key: int, alt_key: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"volume_id": vid, "key": str(key)}
        if alt_key is not None:
            body["alt_key"] = alt_key
        return dict(await self._call("POST", "/deletes", body=body, purposes=(_W, _A)))

    async def report_repair(
        self, vid: int, key: int, alt_key: int, node_id: str, reason: str
    ) -> dict[str, Any]:
        body = {
            "volume_id": vid,
            "key": str(key),
            "alt_key": alt_key,
            "node_id": node_id,
            "reason": reason,
        }
        return dict(
            await self._call(
                "POST", "/repairs", body=body, expect=(202,), purposes=(_R, _N, _W, _A)
            )
        )

    async def repairs(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/repairs"))["repairs"])

    # -- replica moves ---------------------------------------------------------------------

    async def plan_replication(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/plan/replication"))["moves"])

    async def plan_balance(self) -> list[dict[str, Any]]:
        return list((await self._call("GET", "/plan/balance"))["moves"])

    async def add_replica(
        self, vid: int, node_id: str, *, replaces: str | None = None
    ) -> dict[str, Any]:
        body = {"node_id": node_id, "replaces": replaces}
        return dict(await self._call("POST", f"/volumes/{vid}/replicas", body=body))

    async def replica_ready(self, vid: int, node_id: str) -> dict[str, Any]:
        return dict(await self._call("POST", f"/volumes/{vid}/replicas/{node_id}/ready", body={}))

    async def remove_replica(self, vid: int, node_id: str) -> dict[str, Any]:
        return dict(await self._call("DELETE", f"/volumes/{vid}/replicas/{node_id}"))

    # -- the f4 tier -----------------------------------------------------------------------

    async def f4_begin(self, vid: int, node_id: str) -> dict[str, Any]:
        body = {"node_id": node_id}
        return dict(await self._call("POST", f"/volumes/{vid}/f4/begin", body=body))

    async def f4_switch(self, vid: int, node_id: str) -> dict[str, Any]:
        """The lv plus {"released": [{node_id, size_bytes, ok, error}], "bytes_released"}."""
        body = {"node_id": node_id}
        return dict(await self._call("POST", f"/volumes/{vid}/f4/switch", body=body))

    async def f4_abort(self, vid: int, node_id: str) -> dict[str, Any]:
        body = {"node_id": node_id}
        return dict(await self._call("POST", f"/volumes/{vid}/f4/abort", body=body))

    # -- status ----------------------------------------------------------------------------

    async def status(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/status"))

    async def healthz(self) -> dict[str, Any]:
        return dict(await self._call("GET", "/healthz", purposes=()))

    async def metrics(self) -> str:
        return str(await self._call("GET", "/metrics", purposes=(Purpose.METRICS, _A)))
