"""`pinhole bench dm`: direct-message and notification delivery through the real path.

Processes: a Mosquitto started from pinhole's generated configuration (dynamic security),
the API (`pinhole api serve`, SQLite, its own process) and this process as the load
generator and the subscribed clients (paho-mqtt, credentials issued by the API).

1. mqtt_raw_p99_ms, the baseline: a QoS 1 publish from the API's broker account to a
   subscribed user's topic and back to this process, one at a time, no API involved.
2. dm_delivery_p99_ms and dm_sends_per_s: `concurrency` senders each POST messages to
   their 1:1 thread; the recipients' clients subscribe to their inbox topics; a message's
   latency runs from the start of its POST to the arrival of its wake-up. The ratio
   dm_delivery_over_raw_mqtt_p99 compares it with the baseline of the same run;
   api_cpu_us_per_send is the API process's CPU time per send (psutil).
The API runs on SQLite, its rate-limit counters in the Redis at REDIS_URL.

3. notification_delivery_p99_ms: followers follow one account (`concurrency` at once); from
   the start of the POST to the arrival of the `follow` notification on its topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import paho.mqtt.client as mqtt
import psutil
from paho.mqtt.enums import CallbackAPIVersion

from bench.report import Goals, publish, run_header
from common.credentials import Credentials
from realtime import topics
from realtime.mosquitto_conf import BrokerFiles

GOALS: Final[Goals] = {
    "dm_delivery_p99_ms": ("<", 50.0),
    "notification_delivery_p99_ms": ("<", 100.0),
}
PASSWORD: Final = "bench password 0123"
REDIS_URL: Final = "redis://127.0.0.1:6379/0"
START_S_MAX: Final = 30.0
WAIT_S_MAX: Final = 30.0


@dataclass(frozen=True, slots=True)
class Plan:
    sends: int
    concurrency: int
    followers: int
    raw_pings: int


QUICK: Final = Plan(sends=200, concurrency=4, followers=20, raw_pings=200)
FULL: Final = Plan(sends=4000, concurrency=8, followers=200, raw_pings=2000)


def log(message: str) -> None:
    print(f"[bench dm] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


class Receiver:
    """One MQTT connection; records when each payload's key arrived."""

    def __init__(self, port: int, username: str, password: str, key: str) -> None:
        self.arrived: dict[str, float] = {}
        self._key = key
        self._lock = threading.Lock()
        self._ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username)
        c.username_pw_set(username, password)
        c.on_message = self._on_message
        c.on_subscribe = lambda *a: self._ready.set()
        c.connect("127.0.0.1", port, 30)
        c.loop_start()
        self.client = c

    def _on_message(self, c: Any, u: Any, message: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        value = json.loads(message.payload).get(self._key)
        with self._lock:
            self.arrived.setdefault(str(value), now)

    def subscribe(self, topic: str) -> None:
        self._ready.clear()
        self.client.subscribe(topic, qos=1)
        if not self._ready.wait(WAIT_S_MAX):
            raise RuntimeError(f"no SUBACK for {topic}")

    async def wait(self, key: str) -> float:
        deadline = time.monotonic() + WAIT_S_MAX
        while True:
            with self._lock:
                if key in self.arrived:
                    return self.arrived[key]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{key} never arrived")
            await asyncio.sleep(0.001)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def processes(scratch: Path) -> Iterator[tuple[BrokerFiles, str, subprocess.Popen[bytes]]]:
    """The broker and the API, stopped on exit."""
    files = BrokerFiles(scratch / "mqtt", "127.0.0.1", free_port(), free_port())
    files.write()
    secret = os.urandom(32)
    creds = scratch / "api-credentials.json"
    Credentials.for_service(secret, "api").write(creds)
    config = scratch / "pinhole.toml"
    config.write_text(
        "[social]\naccounts_per_hour_max = 1000000\nmessages_per_hour_max = 1000000\n"
        "follows_per_hour_max = 1000000\nsign_in_failures_per_address_max = 1000000\n"
        # Rate-limit counters in Redis, as a deployment has them (SQL counters would add a
        # write transaction to every send); keys expire with their window.
        f'[feed]\nredis_url = "{REDIS_URL}"\nredis_prefix = "bench-dm-{os.urandom(4).hex()}:"\n'
    )
    port = free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        with open(scratch / "mosquitto.log", "wb") as out:
            started.append(subprocess.Popen(files.argv(), stdout=out, stderr=subprocess.STDOUT))
        argv = [
            sys.executable, "-m", "ops.cli", "--config", str(config), "api", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--data", str(scratch / "api"),
            "--media-data", str(scratch / "media"),
            # The media cluster is not needed for messages: nothing listens there.
            "--directory-url", f"http://127.0.0.1:{free_port()}",
            "--router-url", f"http://127.0.0.1:{free_port()}",
            "--credentials", str(creds), "--realtime-config", str(files.realtime_file),
        ]  # fmt: skip
        with open(scratch / "api.log", "wb") as out:
            started.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))
        yield files, f"http://127.0.0.1:{port}", started[-1]
    finally:
        for p in reversed(started):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


async def wait_up(http: aiohttp.ClientSession, url: str, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_S_MAX
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError("the API exited; see its log in the scratch directory")
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(url + "/healthz") as r:
                if r.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError("the API did not start")


async def call(
    http: aiohttp.ClientSession, url: str, method: str, path: str, token: str = "", body: Any = None
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.request(method, url + path, json=body, headers=headers) as r:
        doc = await r.json()
        if r.status >= 400:
            raise RuntimeError(f"{method} {path}: {r.status} {doc}")
        return doc


async def account(http: aiohttp.ClientSession, url: str, name: str) -> tuple[int, str]:
    body = {"username": name, "password": PASSWORD}
    user = await call(http, url, "POST", "/api/v1/accounts", body=body)
    session = await call(http, url, "POST", "/api/v1/sessions", body=body)
    return int(user["user_id"]), str(session["token"])


async def receiver(
    http: aiohttp.ClientSession, url: str, token: str, topic_key: str, key: str
) -> Receiver:
    grant = await call(http, url, "POST", "/api/v1/realtime/credentials", token)
    r = await asyncio.to_thread(
        Receiver, int(grant["port"]), grant["username"], grant["password"], key
    )
    await asyncio.to_thread(r.subscribe, grant["topics"][topic_key])
    return r


def _raw_publisher(files: BrokerFiles) -> mqtt.Client:
    """A connection of the API's broker account (what the API publishes with)."""
    publisher = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-raw")
    publisher.username_pw_set("pinhole-api", files.admin_password_file.read_text().strip())
    publisher.connect("127.0.0.1", files.port, 30)
    publisher.loop_start()
    return publisher


async def raw_baseline(
    files: BrokerFiles, user_id: int, target: Receiver, pings: int
) -> list[float]:
    publisher = await asyncio.to_thread(_raw_publisher, files)
    out = []
    try:
        for i in range(pings):
            key = f"raw-{i}"
            t0 = time.perf_counter()
            publisher.publish(topics.inbox(user_id), json.dumps({"message_id": key}), qos=1)
            out.append((await target.wait(key) - t0) * 1000)
    finally:
        publisher.disconnect()
        publisher.loop_stop()
    return out


async def run(plan: Plan, scratch: Path) -> dict[str, Any]:
    with processes(scratch) as (files, url, api):
        async with aiohttp.ClientSession() as http:
            await wait_up(http, url, api)
            log("accounts")
            pairs = []
            for i in range(plan.concurrency):
                sender = await account(http, url, f"sender{i}")
                recipient = await account(http, url, f"recipient{i}")
                pairs.append((sender, recipient))
            receivers = [await receiver(http, url, r[1], "inbox", "message_id") for _, r in pairs]
            log("raw MQTT baseline")
            raw = await raw_baseline(files, pairs[0][1][0], receivers[0], plan.raw_pings)

            log("DM sends")
            latencies: list[float] = []
            threads: dict[int, str] = {}
            for i, ((_, s_token), (r_id, _)) in enumerate(pairs):
                first = await call(
                    http, url, "POST", "/api/v1/messages", s_token,
                    {"recipient_ids": [str(r_id)], "client_id": "warm", "text": "hi"},
                )  # fmt: skip
                threads[i] = first["thread_id"]
            per_sender = plan.sends // plan.concurrency

            async def sender_loop(i: int) -> None:
                (_, token), _ = pairs[i]
                for n in range(per_sender):
                    t0 = time.perf_counter()
                    doc = await call(
                        http, url, "POST", f"/api/v1/threads/{threads[i]}/messages", token,
                        {"client_id": f"m{n}", "text": f"message {n}"},
                    )  # fmt: skip
                    latencies.append((await receivers[i].wait(doc["message_id"]) - t0) * 1000)

            proc = psutil.Process(api.pid)
            cpu0 = sum(proc.cpu_times()[:2])
            t0 = time.perf_counter()
            await asyncio.gather(*(sender_loop(i) for i in range(plan.concurrency)))
            elapsed = time.perf_counter() - t0
            cpu = sum(proc.cpu_times()[:2]) - cpu0
            sends = per_sender * plan.concurrency

            log("notifications")
            target_id, target_token = await account(http, url, "popular")
            watcher = await receiver(http, url, target_token, "notifications", "actor_id")
            followers = [await account(http, url, f"fan{i}") for i in range(plan.followers)]
            note_latencies: list[float] = []
            gate = asyncio.Semaphore(plan.concurrency)

            async def follow(user: tuple[int, str]) -> None:
                async with gate:
                    t = time.perf_counter()
                    await call(
                        http, url, "POST", "/api/v1/follows", user[1],
                        {"followee_id": str(target_id)},
                    )  # fmt: skip
                    note_latencies.append((await watcher.wait(str(user[0])) - t) * 1000)

            await asyncio.gather(*(follow(f) for f in followers))
            for r in (*receivers, watcher):
                await asyncio.to_thread(r.close)
    return {
        "mqtt_raw": {
            "pings": len(raw),
            "p50_ms": percentile(raw, 0.5),
            "p99_ms": percentile(raw, 0.99),
        },
        "dm": {
            "sends": sends,
            "concurrency": plan.concurrency,
            "elapsed_s": elapsed,
            "p50_ms": percentile(latencies, 0.5),
            "p99_ms": percentile(latencies, 0.99),
            "api_cpu_s": cpu,
        },
        "notifications": {
            "follows": len(note_latencies),
            "p50_ms": percentile(note_latencies, 0.5),
            "p99_ms": percentile(note_latencies, 0.99),
        },
    }


def main(
    *, quick: bool, json_path: Path | None, work_dir: Path | None, plot_path: Path | None
) -> dict[str, Any]:
    plan = QUICK if quick else FULL
    base = work_dir or Path(".pinhole")
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-dm-", dir=base) as scratch:
        detail = asyncio.run(run(plan, Path(scratch)))
    dm, raw, notes = detail["dm"], detail["mqtt_raw"], detail["notifications"]
    figures = {
        "dm_delivery_p99_ms": round(dm["p99_ms"], 2),
        "dm_sends_per_s": round(dm["sends"] / dm["elapsed_s"], 1),
        "mqtt_raw_p99_ms": round(raw["p99_ms"], 3),
        "dm_delivery_over_raw_mqtt_p99": round(dm["p99_ms"] / max(raw["p99_ms"], 1e-3), 1),
        "api_cpu_us_per_send": round(dm["api_cpu_s"] / dm["sends"] * 1e6),
        "notification_delivery_p99_ms": round(notes["p99_ms"], 2),
    }
    doc = {
        **run_header("dm", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "figures": figures,
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "plan": asdict(plan),
        "detail": detail,
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
