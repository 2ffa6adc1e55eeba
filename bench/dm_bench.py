"""`pinhole bench dm`: direct-message and notification delivery through the real path.

Processes: a Mosquitto started from pinhole's generated configuration (dynamic security),
the API (`pinhole api serve`, SQLite, its own process) and this process as the load
generator and the subscribed clients (paho-mqtt, credentials issued by the API).

1. mqtt_raw_p99_ms, the baseline: a QoS 1 publish from the API's broker account to a
   subscribed user's topic and back to this process, one at a time, no API involved.
2. dm_delivery_p99_ms at dm_sends_per_s, open loop: `sends` messages POSTed to 1:1 threads
   (`concurrency` sender/recipient pairs, in turn) at a fixed offered rate
   (`send_rate_per_s`), whatever the answers' pace; the recipients' clients subscribe to
   their inbox topics. A message's latency runs from its scheduled start (not the actual
   one: a load generator that fell behind still counts the wait) to the arrival of its
   wake-up. dm_sends_per_s is the rate achieved (sends over the time to the last answer).
   The ratio dm_delivery_over_raw_mqtt_p99 compares it with the baseline of the same run.
3. dm_saturated_sends_per_s and dm_saturated_delivery_p99_ms, closed loop: `concurrency`
   senders each send their next message as soon as the previous one's wake-up arrived;
   api_cpu_us_per_send is the API process's CPU time per send there (psutil).
4. notification_delivery_p99_ms at notifications_per_s, open loop: `followers` accounts
   follow one account and unfollow it again, `follows` follows at `follow_rate_per_s`; from
   the scheduled start of the follow's POST to the arrival of its `follow` notification on
   the followee's topic. notification_saturated_delivery_p99_ms: the followers all at once,
   `concurrency` in flight.
The API runs on SQLite, its rate-limit counters in the Redis at REDIS_URL.
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
from collections.abc import Callable, Coroutine, Iterator
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
LOG_TAIL_CHARS: Final = 4000  # of the API's log, shown when a run fails


@dataclass(frozen=True, slots=True)
class Plan:
    sends: int  # open loop, at send_rate_per_s
    send_rate_per_s: float
    saturated_sends: int  # closed loop, `concurrency` senders
    concurrency: int
    followers: int
    follows: int  # open loop, at follow_rate_per_s (each follower follows and unfollows)
    follow_rate_per_s: float
    raw_pings: int


QUICK: Final = Plan(
    sends=300, send_rate_per_s=50.0, saturated_sends=200, concurrency=4,
    followers=20, follows=100, follow_rate_per_s=20.0, raw_pings=200,
)  # fmt: skip
FULL: Final = Plan(
    sends=3000, send_rate_per_s=100.0, saturated_sends=4000, concurrency=8,
    followers=100, follows=1000, follow_rate_per_s=50.0, raw_pings=2000,
)  # fmt: skip


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
    """One MQTT connection; records when each payload's key arrived (on paho's thread, so
    the event loop's pace does not enter the figure) and wakes the waiters."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, port: int, username: str, password: str, key: str
    ) -> None:
        self._loop = loop
        self._key = key
        self._arrivals: dict[str, list[float]] = {}
        self._waiters: dict[tuple[str, int], asyncio.Future[float]] = {}
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
        if message.dup:  # a QoS 1 redelivery of one already counted
            return
        value = json.loads(message.payload).get(self._key)
        self._loop.call_soon_threadsafe(self._arrived, str(value), now)

    def _arrived(self, key: str, at: float) -> None:
        times = self._arrivals.setdefault(key, [])
        times.append(at)
        waiter = self._waiters.pop((key, len(times)), None)
        if waiter is not None and not waiter.done():
            waiter.set_result(at)

    def subscribe(self, topic: str) -> None:
        self._ready.clear()
        self.client.subscribe(topic, qos=1)
        if not self._ready.wait(WAIT_S_MAX):
            raise RuntimeError(f"no SUBACK for {topic}")

    async def wait(self, key: str, nth: int = 1) -> float:
        """When the nth payload carrying `key` arrived (perf_counter)."""
        times = self._arrivals.get(key, [])
        if len(times) >= nth:
            return times[nth - 1]
        waiter = self._loop.create_future()
        self._waiters[(key, nth)] = waiter
        try:
            return await asyncio.wait_for(waiter, WAIT_S_MAX)
        except TimeoutError:
            raise RuntimeError(f"{key} (#{nth}) never arrived") from None
        finally:
            self._waiters.pop((key, nth), None)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def paced(
    count: int, rate_per_s: float, one: Callable[[int, float], Coroutine[Any, Any, None]]
) -> float:
    """Open loop: starts one(i, scheduled start) at start + i / rate_per_s whatever the
    earlier ones' pace; returns the seconds until the last one finished."""
    t0 = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for i in range(count):
        scheduled = t0 + i / rate_per_s
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, scheduled)))
    await asyncio.gather(*tasks)
    return time.perf_counter() - t0


def summary(latencies_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": percentile(latencies_ms, 0.5),
        "p99_ms": percentile(latencies_ms, 0.99),
        "max_ms": max(latencies_ms, default=0.0),
    }


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
    except BaseException:
        # The scratch directory goes with the run: show why the API failed first.
        with contextlib.suppress(OSError):
            log("the API's log ends with:\n" + (scratch / "api.log").read_text()[-LOG_TAIL_CHARS:])
        raise
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
        if r.status == 204:
            return None
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
    loop = asyncio.get_running_loop()
    r = await asyncio.to_thread(
        Receiver, loop, int(grant["port"]), grant["username"], grant["password"], key
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


async def dm_phases(
    http: aiohttp.ClientSession, url: str, api: subprocess.Popen[bytes], plan: Plan
) -> dict[str, Any]:
    """The open-loop and the closed-loop DM runs (module docstring, 2 and 3)."""
    pairs = []
    for i in range(plan.concurrency):
        sender = await account(http, url, f"sender{i}")
        recipient = await account(http, url, f"recipient{i}")
        pairs.append((sender, recipient))
    receivers = [await receiver(http, url, r[1], "inbox", "message_id") for _, r in pairs]
    threads: list[str] = []
    for (_, s_token), (r_id, _) in pairs:
        first = await call(
            http, url, "POST", "/api/v1/messages", s_token,
            {"recipient_ids": [str(r_id)], "client_id": "warm", "text": "hi"},
        )  # fmt: skip
        threads.append(first["thread_id"])

    async def send(pair: int, client_id: str, start: float) -> float:
        (_, token), _ = pairs[pair]
        doc = await call(
            http, url, "POST", f"/api/v1/threads/{threads[pair]}/messages", token,
            {"client_id": client_id, "text": f"message {client_id}"},
        )  # fmt: skip
        return (await receivers[pair].wait(doc["message_id"]) - start) * 1000

    log(f"DM sends, open loop at {plan.send_rate_per_s:g}/s")
    open_latencies: list[float] = []

    async def one(i: int, scheduled: float) -> None:
        open_latencies.append(await send(i % len(pairs), f"o{i}", scheduled))

    proc = psutil.Process(api.pid)
    open_elapsed = await paced(plan.sends, plan.send_rate_per_s, one)

    log(f"DM sends, closed loop ({plan.concurrency} senders)")
    closed_latencies: list[float] = []
    per_sender = plan.saturated_sends // plan.concurrency

    async def sender_loop(pair: int) -> None:
        for n in range(per_sender):
            closed_latencies.append(await send(pair, f"c{n}", time.perf_counter()))

    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    await asyncio.gather(*(sender_loop(i) for i in range(plan.concurrency)))
    closed_elapsed = time.perf_counter() - t0
    cpu = sum(proc.cpu_times()[:2]) - cpu0
    for r in receivers:
        await asyncio.to_thread(r.close)
    return {
        "open": {
            "sends": len(open_latencies),
            "offered_per_s": plan.send_rate_per_s,
            "elapsed_s": open_elapsed,
            **summary(open_latencies),
        },
        "saturated": {
            "sends": len(closed_latencies),
            "concurrency": plan.concurrency,
            "elapsed_s": closed_elapsed,
            "api_cpu_s": cpu,
            **summary(closed_latencies),
        },
    }


async def notification_phases(http: aiohttp.ClientSession, url: str, plan: Plan) -> dict[str, Any]:
    """The open-loop and the closed-loop follow notifications (module docstring, 4)."""
    target_id, target_token = await account(http, url, "popular")
    watcher = await receiver(http, url, target_token, "notifications", "actor_id")
    followers = [await account(http, url, f"fan{i}") for i in range(plan.followers)]
    follows_done = [0] * len(followers)
    turns = [asyncio.Lock() for _ in followers]

    async def follow(f: int, start: float | None) -> float:
        """One follow and its notification's latency (ms), then the unfollow that lets the
        follower follow again; from `start`, or from the POST's own start."""
        user_id, token = followers[f]
        async with turns[f]:
            t = time.perf_counter() if start is None else start
            await call(http, url, "POST", "/api/v1/follows", token, {"followee_id": str(target_id)})
            follows_done[f] += 1
            latency = (await watcher.wait(str(user_id), follows_done[f]) - t) * 1000
            await call(http, url, "DELETE", f"/api/v1/follows/{target_id}", token)
        return latency

    log(f"notifications, open loop at {plan.follow_rate_per_s:g}/s")
    open_latencies: list[float] = []

    async def one(i: int, scheduled: float) -> None:
        open_latencies.append(await follow(i % len(followers), scheduled))

    open_elapsed = await paced(plan.follows, plan.follow_rate_per_s, one)

    log(f"notifications, {plan.concurrency} at once")
    closed_latencies: list[float] = []
    gate = asyncio.Semaphore(plan.concurrency)

    async def gated(f: int) -> None:
        async with gate:
            closed_latencies.append(await follow(f, None))

    await asyncio.gather(*(gated(f) for f in range(len(followers))))
    await asyncio.to_thread(watcher.close)
    return {
        "open": {
            "follows": len(open_latencies),
            "offered_per_s": plan.follow_rate_per_s,
            "elapsed_s": open_elapsed,
            **summary(open_latencies),
        },
        "saturated": {
            "follows": len(closed_latencies),
            "concurrency": plan.concurrency,
            **summary(closed_latencies),
        },
    }


async def run(plan: Plan, scratch: Path) -> dict[str, Any]:
    with processes(scratch) as (files, url, api):
        async with aiohttp.ClientSession() as http:
            await wait_up(http, url, api)
            log("accounts")
            baseline_id, baseline_token = await account(http, url, "baseline")
            target = await receiver(http, url, baseline_token, "inbox", "message_id")
            log("raw MQTT baseline")
            raw = await raw_baseline(files, baseline_id, target, plan.raw_pings)
            await asyncio.to_thread(target.close)
            dm = await dm_phases(http, url, api, plan)
            notes = await notification_phases(http, url, plan)
    return {
        "mqtt_raw": {"pings": len(raw), **summary(raw)},
        "dm": dm,
        "notifications": notes,
    }


def figures_of(detail: dict[str, Any]) -> dict[str, float]:
    """The headline figures of one run's detail (also `pinhole bench social`'s)."""
    dm, saturated = detail["dm"]["open"], detail["dm"]["saturated"]
    raw, notes = detail["mqtt_raw"], detail["notifications"]
    return {
        "dm_delivery_p99_ms": round(dm["p99_ms"], 2),
        "dm_sends_per_s": round(dm["sends"] / dm["elapsed_s"], 1),
        "dm_saturated_delivery_p99_ms": round(saturated["p99_ms"], 2),
        "dm_saturated_sends_per_s": round(saturated["sends"] / saturated["elapsed_s"], 1),
        "mqtt_raw_p99_ms": round(raw["p99_ms"], 3),
        "dm_delivery_over_raw_mqtt_p99": round(dm["p99_ms"] / max(raw["p99_ms"], 1e-3), 1),
        "api_cpu_us_per_send": round(saturated["api_cpu_s"] / saturated["sends"] * 1e6),
        "notification_delivery_p99_ms": round(notes["open"]["p99_ms"], 2),
        "notifications_per_s": round(notes["open"]["follows"] / notes["open"]["elapsed_s"], 1),
        "notification_saturated_delivery_p99_ms": round(notes["saturated"]["p99_ms"], 2),
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
    doc = {
        **run_header("dm", quick=quick),
        "elapsed_s": round(time.monotonic() - t0, 1),
        "figures": figures_of(detail),
        "goals": {k: f"{op} {v}" for k, (op, v) in GOALS.items()},
        "plan": asdict(plan),
        "detail": detail,
    }
    publish(doc, GOALS, json_path=json_path, plot_path=plot_path)
    return doc
