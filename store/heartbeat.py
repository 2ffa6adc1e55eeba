"""The store node's heartbeat to the directory.

Every `heartbeat_interval_s` the node posts `POST {directory_url}/heartbeat` with the
internal credential:

    {"node_id", "role": "store", "url", "failure_domain", "free_bytes",
     "volumes": [volume statistics, as in GET /volumes]}

A new node registers with its first heartbeat; a node that was down rejoins with its next
one. The directory answers {"interval_s": s}, which becomes the interval (within
(0, HEARTBEAT_INTERVAL_S_MAX]). A change of the node's volumes (created, deleted, pulled,
state changed) sends the next beat at once. The directory being away is logged once per
outage (and once when it is back), never per beat; beats go on at the same interval.

aiohttp's client: this is not on the data path. The heartbeat sees the node only through
`BeatingNode`: what it reads, nothing more.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any, Final, Protocol

import aiohttp

from common.credentials import Credentials, Purpose
from store.config import HEARTBEAT_INTERVAL_S_MAX
from store.volume import VolumeStatistics

log = logging.getLogger("pinhole.store")

# One beat waits at most this long for the directory's answer.
HEARTBEAT_TIMEOUT_S_MAX: Final = 5.0


class BeatingNode(Protocol):
    """What the heartbeat reads of its node."""

    @property
    def node_id(self) -> str: ...

    @property
    def failure_domain(self) -> str: ...

    @property
    def changed(self) -> asyncio.Event: ...

    def free_bytes(self) -> int: ...

    def volume_statistics(self) -> list[VolumeStatistics]: ...


@dataclass(frozen=True, slots=True)
class HeartbeatStatistics:
    directory_url: str
    url: str
    interval_s: float
    beats_sent: int
    beats_failed: int
    last_ok_unix_s: float | None
    directory_reachable: bool


class Heartbeat:
    def __init__(
        self,
        node: BeatingNode,
        *,
        directory_url: str,
        url: str,
        credentials: Credentials,
        interval_s: float,
    ) -> None:
        self._node = node
        self.directory_url = directory_url.rstrip("/")
        self.url = url
        self.interval_s = interval_s
        self._auth = credentials.header(Purpose.NODE)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self.beats_sent = 0
        self.beats_failed = 0
        self.last_ok_unix_s: float | None = None
        self._failing_since: float | None = None
        self._reachable = False

    def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=min(HEARTBEAT_TIMEOUT_S_MAX, 5 * self.interval_s))
        )
        self._task = asyncio.create_task(self._run(), name="store-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def payload(self) -> dict[str, Any]:
        node = self._node
        return {
            "node_id": node.node_id,
            "role": "store",
            "url": self.url,
            "failure_domain": node.failure_domain,
            "free_bytes": node.free_bytes(),
            "volumes": [asdict(v) for v in node.volume_statistics()],
        }

    async def beat(self) -> bool:
        """Sends one heartbeat; True when the directory took it."""
        assert self._session is not None, "start() first"
        try:
            async with self._session.post(
                self.directory_url + "/heartbeat",
                json=self.payload(),
                headers={"Authorization": self._auth},
            ) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise _Refused(f"HTTP {resp.status}: {body[:200].decode(errors='replace')}")
                self._adopt_interval(body)
        except (aiohttp.ClientError, TimeoutError, _Refused) as e:
            self.beats_failed += 1
            if self._failing_since is None:
                self._failing_since = time.monotonic()
                log.warning(
                    "heartbeat to the directory %s failed (%s); retrying every %.1f s quietly",
                    self.directory_url,
                    e or e.__class__.__name__,
                    self.interval_s,
                )
            self._reachable = False
            return False
        self.beats_sent += 1
        self.last_ok_unix_s = time.time()
        self._reachable = True
        if self._failing_since is not None:
            log.info(
                "the directory %s answers heartbeats again after %.1f s",
                self.directory_url,
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
        return True

    def _adopt_interval(self, body: bytes) -> None:
        import json

        try:
            interval = json.loads(body).get("interval_s")
        except (ValueError, AttributeError):
            return
        if (
            isinstance(interval, int | float)
            and not isinstance(interval, bool)
            and 0 < interval <= HEARTBEAT_INTERVAL_S_MAX
        ):
            self.interval_s = float(interval)

    async def _run(self) -> None:
        changed = self._node.changed
        while True:
            changed.clear()
            try:
                await self.beat()
            except Exception:  # a bug must not silence the node for good
                log.exception("heartbeat failed")
            try:
                await asyncio.wait_for(changed.wait(), self.interval_s)
            except TimeoutError:
                pass

    def statistics(self) -> HeartbeatStatistics:
        return HeartbeatStatistics(
            directory_url=self.directory_url,
            url=self.url,
            interval_s=self.interval_s,
            beats_sent=self.beats_sent,
            beats_failed=self.beats_failed,
            last_ok_unix_s=self.last_ok_unix_s,
            directory_reachable=self._reachable,
        )


class _Refused(Exception):
    """The directory answered, but not 200."""
