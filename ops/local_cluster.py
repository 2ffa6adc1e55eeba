"""The local cluster of `pinhole up`: which services run, how each is started, and the
registry that lets `up`, `status` and `down` find them again.

Every service is its own process (`python -m ops.cli <role> serve ...`) in its own session,
with its data under the cluster's root and its output in `<root>/logs/<name>.log`. The
registry `<root>/services.json` records each service's pid, url and command. A pid only
counts as the service while /proc/<pid>/cmdline still names that service (pids get reused).

Ports are laid out from one base (default 8700): directory base, store-i base+i, cache
base+50, f4 storage node f4-node-h base+60+h, f4 name node base+70, the f4 watcher
(`pinhole f4 watch`, the cell's coordinator) base+71, router base+80, API
base+90, worker-i's health endpoint base+90+i; the MQTT broker (Mosquitto, real-time push)
base+45 and its WebSocket listener base+46, its generated config under <root>/mqtt.

The f4 cell: F4_HOSTS storage node processes share the cell's 14 failure domains (disks
n00..n13, 4+4+3+3), each process a rack of its own, so every stripe survives the loss of
any one of them; the name node serves migrated volumes to the cache and the router. They
read <root>/f4.toml (written by `up`), which `pinhole --config <root>/f4.toml f4 ...` uses
too.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import aiohttp

from common import credentials
from common.credentials import Credentials, Purpose
from realtime.mosquitto_conf import BrokerFiles, BrokerMissing

PORT_BASE_DEFAULT: Final = 8700
STORES_DEFAULT: Final = 4
STORES_MIN: Final = 3
STORES_MAX: Final = 40
CACHE_PORT_OFFSET: Final = 50
MQTT_PORT_OFFSET: Final = 45  # above the stores (STORES_MAX), below the cache
MQTT_WEBSOCKET_PORT_OFFSET: Final = 46
MQTT_DIR: Final = "mqtt"
F4_NODE_PORT_OFFSET: Final = 60
F4_NAME_PORT_OFFSET: Final = 70
F4_WATCH_PORT_OFFSET: Final = 71
F4_HOSTS: Final = 4
F4_DISKS: Final = 14  # one stripe's blocks, each on a disk of its own
F4_CONFIG_FILE: Final = "f4.toml"
ROUTER_PORT_OFFSET: Final = 80
API_PORT_OFFSET: Final = 90
WORKERS_DEFAULT: Final = 2
WORKERS_MAX: Final = 9
# Two racks of stores: placement "011" (one replica in another rack, one on another host
# of the primary's rack) holds with any one store lost.
PLACEMENT_DEFAULT: Final = "011"
REGISTRY_FILE: Final = "services.json"
CREDENTIALS_DIR: Final = "credentials"
STOP_GRACE_S: Final = 30.0
HEALTH_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    role: str
    url: str
    argv: tuple[str, ...]

    def log_path(self, root: Path) -> Path:
        return root / "logs" / f"{self.name}.log"


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything of one local cluster lives."""

    root: Path
    port_base: int = PORT_BASE_DEFAULT
    stores: int = STORES_DEFAULT
    host: str = "127.0.0.1"
    extra_store_args: tuple[str, ...] = field(default=())
    workers: int = WORKERS_DEFAULT
    f4_watch: bool = True  # run `pinhole f4 watch` (the cell's coordinator)
    # `pinhole --config F up`: every service is started with `--config F` (absolute); the
    # f4 processes read <root>/f4.toml, whose [f4] table takes F's [f4] keys under the
    # layout's own.
    config_file: Path | None = None

    @property
    def config_args(self) -> tuple[str, ...]:
        return ("--config", str(self.config_file)) if self.config_file is not None else ()

    @property
    def directory_url(self) -> str:
        return f"http://{self.host}:{self.port_base}"

    @property
    def router_url(self) -> str:
        return f"http://{self.host}:{self.port_base + ROUTER_PORT_OFFSET}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port_base + API_PORT_OFFSET}"

    @property
    def cache_url(self) -> str:
        return f"http://{self.host}:{self.port_base + CACHE_PORT_OFFSET}"

    @property
    def secret_file(self) -> Path:
        return self.root / credentials.SECRET_FILE_NAME

    def credentials_file(self, role: str) -> Path:
        """What the services of `role` hold (common/credentials.py SERVICE_GRANTS)."""
        return self.root / CREDENTIALS_DIR / f"{role}.json"

    def operator_credentials(self) -> Credentials:
        """Everything, from the cluster secret: what `pinhole` commands use."""
        return Credentials.from_secret(
            credentials.load_secret(secret_file=self.secret_file, default_dir=None)
        )

    @property
    def broker_files(self) -> BrokerFiles:
        return BrokerFiles(
            self.root / MQTT_DIR,
            self.host,
            self.port_base + MQTT_PORT_OFFSET,
            self.port_base + MQTT_WEBSOCKET_PORT_OFFSET,
        )

    @property
    def placement(self) -> str:
        # Three stores fit one rack only: three hosts of it.
        return PLACEMENT_DEFAULT if self.stores >= 4 else "002"

    def store_url(self, i: int) -> str:
        return f"http://{self.host}:{self.port_base + i}"

    def f4_node_url(self, h: int) -> str:
        return f"http://{self.host}:{self.port_base + F4_NODE_PORT_OFFSET + h}"

    @property
    def f4_name_url(self) -> str:
        return f"http://{self.host}:{self.port_base + F4_NAME_PORT_OFFSET}"

    @property
    def f4_watch_url(self) -> str:
        return f"http://{self.host}:{self.port_base + F4_WATCH_PORT_OFFSET}"

    @property
    def f4_config_file(self) -> Path:
        return self.root / F4_CONFIG_FILE

    def f4_disks(self, h: int) -> list[str]:
        """The disks (failure domains) of f4 storage node h (1-based): 4, 4, 3, 3."""
        return [f"n{d:02d}" for d in range(F4_DISKS) if d % F4_HOSTS == h - 1]

    def f4_config(self) -> str:
        """The [f4] table of the local cell (TOML)."""
        # In disk order, so neighbours in the list sit on different processes: a stripe's
        # blocks and a volume's three index copies go to consecutive nodes.
        host_of = {d: h for h in range(1, F4_HOSTS + 1) for d in self.f4_disks(h)}
        nodes = ",\n".join(
            f'  {{ name = "{d}", rack = "f4-node-{h}", url = "{self.f4_node_url(h)}" }}'
            for d, h in sorted(host_of.items())
        )
        return (
            "# Written by `pinhole up`: the local f4 cell (docs/operations/f4.md).\n"
            "[f4]\n"
            f"{self._f4_keys_of_config_file()}"
            f'cell_root = "{self.root / "f4"}"\n'
            f'haystack_dir = "{self.root / "store-1" / "volumes"}"\n'
            "age_s_min = 0.0  # a sealed volume migrates at once (production: 90 days)\n"
            f'directory_url = "{self.directory_url}"\n'
            f'cluster_secret_file = "{self.secret_file}"\n'
            f'name_host = "{self.host}"\n'
            f"name_port = {self.port_base + F4_NAME_PORT_OFFSET}\n"
            f'watch_host = "{self.host}"\n'
            f"watch_port = {self.port_base + F4_WATCH_PORT_OFFSET}\n"
            f"nodes = [\n{nodes},\n]\n"
        )

    def _f4_keys_of_config_file(self) -> str:
        """The scalar keys of the --config file's [f4] table the layout does not set, as
        TOML lines (the layout's keys follow and win)."""
        if self.config_file is None:
            return ""
        from common.config import load_toml

        own = {"cell_root", "haystack_dir", "age_s_min", "directory_url",
               "cluster_secret_file", "name_host", "name_port", "watch_host", "watch_port",
               "nodes"}  # fmt: skip
        table = load_toml(self.config_file).get("f4", {})
        lines = []
        for key, value in table.items():
            if key in own or not isinstance(value, str | int | float | bool):
                continue
            text = json.dumps(value) if not isinstance(value, bool) else str(value).lower()
            lines.append(f"{key} = {text}\n")
        return "".join(lines)

    def services(self) -> list[Service]:
        """In start order: the directory, the store nodes, the cache, the f4 storage nodes
        and name node, the router, the API, the media workers."""
        py = (sys.executable, "-m", "ops.cli", *self.config_args)

        def creds(role: str) -> tuple[str, str]:
            return ("--credentials", str(self.credentials_file(role)))

        out = [
            Service(
                "directory",
                "directory",
                self.directory_url,
                (*py, "directory", "serve", "--data", str(self.root / "directory"),
                 "--host", self.host, "--port", str(self.port_base),
                 "--placement", self.placement, *creds("directory")),
            )
        ]  # fmt: skip
        for i in range(1, self.stores + 1):
            rack = 1 + (i - 1) // 2 % 2 if self.stores >= 4 else 1
            out.append(
                Service(
                    f"store-{i}",
                    "store",
                    self.store_url(i),
                    (*py, "store", "serve", "--data", str(self.root / f"store-{i}"),
                     "--host", self.host, "--port", str(self.port_base + i),
                     "--node-id", f"store-{i}",
                     "--failure-domain", f"dc1/rack{rack}/host{i}",
                     "--directory-url", self.directory_url, *creds("store"),
                     *self.extra_store_args),
                )
            )  # fmt: skip
        out.append(
            Service(
                "cache-1",
                "cache",
                self.cache_url,
                (*py, "cache", "serve", "--host", self.host,
                 "--port", str(self.port_base + CACHE_PORT_OFFSET), "--node-id", "cache-1",
                 "--directory-url", self.directory_url, *creds("cache")),
            )
        )  # fmt: skip
        f4 = (sys.executable, "-m", "ops.cli", "--config", str(self.f4_config_file), "f4")
        for h in range(1, F4_HOSTS + 1):
            disks = [a for d in self.f4_disks(h) for a in ("--node", d)]
            out.append(
                Service(
                    f"f4-node-{h}",
                    "f4-node",
                    self.f4_node_url(h),
                    (*f4, "node", "serve", *disks, "--host", self.host,
                     "--port", str(self.port_base + F4_NODE_PORT_OFFSET + h),
                     *creds("f4-node")),
                )
            )  # fmt: skip
        out.append(
            Service(
                "f4-name",
                "f4-name",
                self.f4_name_url,
                (*f4, "name", "serve", *creds("f4-name")),
            )
        )
        out.append(
            Service(
                "router-1",
                "router",
                self.router_url,
                (*py, "router", "serve", "--host", self.host,
                 "--port", str(self.port_base + ROUTER_PORT_OFFSET),
                 "--directory-url", self.directory_url, *creds("router")),
            )
        )  # fmt: skip
        mqtt = self.broker_files
        try:
            broker_argv: tuple[str, ...] = mqtt.argv()
        except BrokerMissing:  # start-up then fails naming it (scripts/bootstrap installs it)
            broker_argv = ("mosquitto", "-c", str(mqtt.config_file))
        out.append(Service("mqtt", "mqtt", f"mqtt://{self.host}:{mqtt.port}", broker_argv))
        media = ("--media-data", str(self.root / "media"), "--directory-url",
                 self.directory_url, "--router-url", self.router_url)  # fmt: skip
        out.append(
            Service(
                "api",
                "api",
                self.api_url,
                (*py, "api", "serve", "--host", self.host,
                 "--port", str(self.port_base + API_PORT_OFFSET),
                 "--data", str(self.root / "api"), *media, *creds("api"),
                 "--realtime-config", str(mqtt.realtime_file)),
            )
        )  # fmt: skip
        for i in range(1, self.workers + 1):
            port = self.port_base + API_PORT_OFFSET + i
            out.append(
                Service(
                    f"worker-{i}",
                    "worker",
                    f"http://{self.host}:{port}",
                    (*py, "worker", "serve", "--name", f"worker-{i}", "--host", self.host,
                     "--port", str(port), *media, *creds("worker")),
                )
            )  # fmt: skip
        # Last: it queues and runs the f4 jobs on the API's metadata database.
        if self.f4_watch:
            out.append(
                Service(
                    "f4-watch",
                    "f4-watch",
                    self.f4_watch_url,
                    (*f4, "watch", "--media-data", str(self.root / "media")),
                )
            )
        return out


# -- the registry --------------------------------------------------------------------------------


@dataclass(slots=True)
class Running:
    name: str
    role: str
    url: str
    pid: int
    started_unix_s: float
    log: str
    argv: list[str]


def read_registry(root: Path) -> dict[str, Running]:
    path = root / REGISTRY_FILE
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        return {}  # a torn registry only costs the pids: status then reports "stopped"
    return {name: Running(**entry) for name, entry in doc.get("services", {}).items()}


def write_registry(root: Path, running: dict[str, Running]) -> None:
    path = root / REGISTRY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"services": {n: asdict(r) for n, r in running.items()}}, indent=2))
    os.replace(tmp, path)


def layout_file(root: Path) -> Path:
    return root / "cluster.json"


def save_layout(layout: Layout) -> None:
    doc = {
        "port_base": layout.port_base,
        "stores": layout.stores,
        "host": layout.host,
        "workers": layout.workers,
        "f4_watch": layout.f4_watch,
        "config_file": str(layout.config_file) if layout.config_file is not None else None,
    }
    layout_file(layout.root).write_text(json.dumps(doc, indent=2))


def load_layout(root: Path) -> Layout | None:
    """The layout an earlier `up` recorded for this root, if any."""
    try:
        doc = json.loads(layout_file(root).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return Layout(
        root=root,
        port_base=doc["port_base"],
        stores=doc["stores"],
        host=doc["host"],
        workers=doc.get("workers", WORKERS_DEFAULT),
        f4_watch=doc.get("f4_watch", True),
        config_file=Path(doc["config_file"]) if doc.get("config_file") else None,
    )


def alive(entry: Running) -> bool:
    """The process is running and is still this service (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{entry.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        with open(f"/proc/{entry.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
    except (OSError, IndexError):
        return False
    if cmdline == [b""]:
        # Read while the kernel is still setting the new image up: it is there, and the
        # pid was handed out a moment ago, so it is ours.
        return True
    want = [a.encode() for a in entry.argv[1:]]
    return cmdline[1 : 1 + len(want)] == want


# Services this process started: kept so that their Popen objects are not collected while
# the service runs (and so that `stop` can reap them).
_children: dict[int, subprocess.Popen[bytes]] = {}
# Set to a directory, every service this process starts runs under cProfile (profiled()).
PROFILE_DIR_ENV: Final = "PINHOLE_PROFILE_DIR"


def profiled(service: Service) -> list[str]:
    """The service's argv, run under cProfile when PROFILE_DIR_ENV names a directory (a
    developer's tool: `<dir>/<service>.prof` is written when the service stops cleanly)."""
    return profiled_argv(service.argv, service.name)


def profiled_argv(argv: Sequence[str], name: str) -> list[str]:
    """`argv` (`python -m module ...`) under cProfile writing `<dir>/<name>.prof` when
    PROFILE_DIR_ENV names a directory; else `argv` as it is. Commands a benchmark runs
    (a migration, a rebuild) are profiled this way too."""
    argv = list(argv)
    where = os.environ.get(PROFILE_DIR_ENV)
    if not where or argv[:2] != [sys.executable, "-m"]:
        return argv
    out = Path(where).resolve() / f"{name}.prof"
    return [sys.executable, "-m", "cProfile", "-o", str(out), *argv[1:]]


def start(service: Service, root: Path) -> Running:
    log_path = service.log_path(root)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {service.name}\n".encode())
        log.flush()
        argv = profiled(service)
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal is for `up`, not the services
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=Path.cwd(),
        )
    _children[proc.pid] = proc
    return Running(
        service.name,
        service.role,
        service.url,
        proc.pid,
        time.time(),
        str(log_path),
        argv,
    )


def stop(entries: list[Running], *, grace_s: float = STOP_GRACE_S) -> list[str]:
    """SIGTERM to each, SIGKILL to those still running after `grace_s`. Returns the names
    that had to be killed."""
    for e in entries:
        if alive(e):
            with contextlib.suppress(ProcessLookupError):
                os.kill(e.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    pending = [e for e in entries if alive(e)]
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        _reap()
        pending = [e for e in pending if alive(e)]
    for e in pending:
        with contextlib.suppress(ProcessLookupError):
            os.kill(e.pid, signal.SIGKILL)
    _reap()
    return [e.name for e in pending]


def _reap() -> None:
    """Collects exited children of this process (services started by this `up`)."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


async def health(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    """The service's /healthz answer, or None when it does not answer 200 in time (the MQTT
    broker, an mqtt:// URL: its listener accepts a connection)."""
    if url.startswith("mqtt://"):
        return await _listening(url)
    try:
        async with session.get(
            url + "/healthz", timeout=aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
        ) as r:
            if r.status != 200:
                return None
            doc = await r.json(content_type=None)
            return doc if isinstance(doc, dict) else {"ok": True}
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None


async def _listening(url: str) -> dict[str, Any] | None:
    import asyncio

    host, _, port = url.removeprefix("mqtt://").rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port)), HEALTH_TIMEOUT_S
        )
    except (OSError, TimeoutError, ValueError):
        return None
    writer.close()
    return {"ok": True}


# -- starting and waiting ------------------------------------------------------------------------


class ClusterError(Exception):
    """A service did not come up; the message names it and its log."""


START_S_MAX: Final = 60.0


def write_service_credentials(layout: Layout) -> None:
    """Each role's credentials file (mode 0600), derived from the cluster secret: a service
    gets its share and never the secret itself. Rewritten at every start, so a changed
    grant table or secret reaches every service."""
    secret = credentials.load_secret(secret_file=layout.secret_file, default_dir=None)
    directory = layout.root / CREDENTIALS_DIR
    directory.mkdir(mode=0o700, exist_ok=True)
    for role in credentials.SERVICE_GRANTS:
        Credentials.for_service(secret, role).write(layout.credentials_file(role))


def write_f4_config(layout: Layout) -> None:
    path = layout.f4_config_file
    tmp = path.with_suffix(".tmp")
    tmp.write_text(layout.f4_config())
    tmp.replace(path)


def start_missing(layout: Layout) -> tuple[dict[str, Running], list[str]]:
    """Starts every service of the layout that is not running (the directory first, and
    waited for: stores register with it at start). Returns the registry and the names
    started."""
    import asyncio

    write_service_credentials(layout)
    write_f4_config(layout)
    try:
        layout.broker_files.write()
    except BrokerMissing as e:
        raise ClusterError(f"{e}; run scripts/bootstrap") from e
    running = read_registry(layout.root)
    started = []
    for service in layout.services():
        entry = running.get(service.name)
        if entry is not None and alive(entry):
            continue
        running[service.name] = start(service, layout.root)
        started.append(service.name)
        write_registry(layout.root, running)
        if service.role == "directory":
            asyncio.run(wait_healthy([running[service.name]]))
    return running, started


async def wait_healthy(entries: list[Running], *, timeout_s: float = START_S_MAX) -> None:
    import asyncio

    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        waiting = {e.name: e for e in entries}
        while waiting:
            for name, e in list(waiting.items()):
                if not alive(e):
                    raise ClusterError(
                        f"{name} exited during start-up; see {e.log}: {log_tail(Path(e.log))}"
                    )
                if await health(s, e.url) is not None:
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                names = ", ".join(sorted(waiting))
                raise ClusterError(f"{names} did not answer within {timeout_s:.0f} s")
            if waiting:
                await asyncio.sleep(0.1)


async def wait_up(
    layout: Layout, running: dict[str, Running], *, timeout_s: float = START_S_MAX
) -> None:
    """Until every service answers /healthz and the directory hands out a writable volume."""
    import asyncio

    await wait_healthy(list(running.values()), timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                admin = {"Authorization": layout.operator_credentials().header(Purpose.ADMIN)}
                async with s.get(layout.directory_url + "/writable", headers=admin) as r:
                    doc = await r.json(content_type=None)
                    if r.status == 200 and doc.get("volumes"):
                        return
            except (aiohttp.ClientError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(
                    "the directory has no writable volume yet; see "
                    f"{layout.root}/logs/directory.log"
                )
            await asyncio.sleep(0.2)


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a service's log, on one line (for error messages)."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:])


def free_port_base(span: int = API_PORT_OFFSET + WORKERS_MAX + 1) -> int:
    """A base port with `span` free ports above it (for tests and benchmarks), taken below
    the kernel's ephemeral range so that outgoing connections never take one meanwhile."""
    import random
    import socket

    try:
        ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32_768
    high = max(ephemeral_low, 12_000 + span) - span
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10_000, high)
        ok = True
        for p in range(base, base + span):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise ClusterError("no free block of ports")
