"""A Mosquitto broker of the test's own, started from the configuration pinhole generates
(realtime/mosquitto_conf.py: dynamic-security plugin, no anonymous access, a WebSocket
listener), and MQTT clients (paho-mqtt 2.x, VERSION2 callbacks) that record what they get.

Under CI=true a missing mosquitto fails the test instead of skipping it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from realtime.config import RealtimeConfig, realtime_config_file
from realtime.mosquitto_conf import BrokerFiles, BrokerMissing, binary

BROKER_START_S_MAX = 10.0
WAIT_S_MAX = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_mosquitto() -> None:
    try:
        binary()
    except BrokerMissing as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e} (CI=true: the real-time tests must run)")
        pytest.skip(str(e))


@dataclass
class Broker:
    files: BrokerFiles
    process: subprocess.Popen[bytes]

    @property
    def config(self) -> RealtimeConfig:
        return realtime_config_file(self.files.realtime_file)


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + BROKER_START_S_MAX
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not listen in time")


@contextlib.contextmanager
def running_broker(root: Path) -> Iterator[Broker]:
    require_mosquitto()
    files = BrokerFiles(root, "127.0.0.1", free_port(), free_port())
    files.write()
    log = root / "mosquitto.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(files.argv(), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(files.port, process, log)
        yield Broker(files, process)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with running_broker(tmp_path / "mqtt") as b:
        yield b


@dataclass
class Client:
    """One MQTT connection; what it receives is kept in `got` (topic, payload)."""

    port: int
    username: str
    password: str
    client_id: str
    got: list[tuple[str, bytes]] = field(default_factory=list)
    granted: dict[int, list[Any]] = field(default_factory=dict)
    connect_reason: Any = None
    disconnected: threading.Event = field(default_factory=threading.Event)
    _connected: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _client: mqtt.Client | None = None

    def start(self) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        c.username_pw_set(self.username, self.password)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_subscribe = self._on_subscribe
        c.on_disconnect = lambda *a: self.disconnected.set()
        c.connect("127.0.0.1", self.port, 30)
        c.loop_start()
        self._client = c

    def _on_connect(self, c: Any, u: Any, flags: Any, reason: Any, props: Any) -> None:
        self.connect_reason = reason
        self._connected.set()

    def _on_message(self, c: Any, u: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.got.append((message.topic, bytes(message.payload)))

    def _on_subscribe(self, c: Any, u: Any, mid: int, reasons: list[Any], props: Any) -> None:
        self.granted[mid] = reasons

    async def connected(self) -> Any:
        await asyncio.to_thread(self._connected.wait, WAIT_S_MAX)
        return self.connect_reason

    async def subscribe(self, topic: str) -> bool:
        """True when the broker granted the subscription."""
        assert self._client is not None
        _, mid = self._client.subscribe(topic, qos=1)
        deadline = time.monotonic() + WAIT_S_MAX
        while mid not in self.granted:
            assert time.monotonic() < deadline, "no SUBACK"
            await asyncio.sleep(0.01)
        return not any(r.is_failure for r in self.granted[mid])

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        assert self._client is not None
        self._client.publish(topic, payload, qos=qos)

    async def wait_for(self, predicate: Any) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + WAIT_S_MAX
        while True:
            with self._lock:
                got = list(self.got)
            if any(predicate(t, p) for t, p in got):
                return got
            assert time.monotonic() < deadline, f"never received; got {got}"
            await asyncio.sleep(0.01)

    def stop(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()


@contextlib.asynccontextmanager
async def mqtt_client(
    port: int, username: str, password: str, client_id: str | None = None
) -> AsyncIterator[Client]:
    client = Client(port, username, password, client_id or username)
    await asyncio.to_thread(client.start)
    try:
        yield client
    finally:
        await asyncio.to_thread(client.stop)
