"""Hosts made of network namespaces, for the multi-host tests (tests/ops/test_netns.py).

A `Lab` is a bridge in the root namespace (the "switch", with an address of its own so the
test process reaches every host) and one namespace per host, each joined to the bridge by a
veth pair: `<ns>` holds `eth0` with the host's address, the root namespace holds the other
end (`Host.link`), a port of the bridge. Cutting a host's link is `ip link set <link> down`
in the root namespace: nothing reaches the host and nothing leaves it, while its processes
keep running, as when a top-of-rack port or cable fails.

Names carry the test process's pid, so two runs on one machine do not collide; interface
names stay within the kernel's IFNAMSIZ (15 characters). Everything a Lab made is removed
when it closes, also after a failure half-way: the processes started in its namespaces
(those it recorded, then any still inside them), the namespaces, the links, the bridge.

Needs root and a kernel with network namespaces, veth and bridges; `unavailable()` says why
not (the test then skips outside CI and fails under CI=true).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

IFNAMSIZ_MAX: Final = 15
SUBNET_PREFIX: Final = "10.213"
BRIDGE_HOST: Final = 254  # the root namespace's address on the bridge: .254
COMMAND_S_MAX: Final = 20.0
STOP_GRACE_S: Final = 10.0
REPO: Final = Path(__file__).resolve().parents[2]


class LabError(Exception):
    """An `ip` or `tc` command failed; the message has its stderr."""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_S_MAX, check=False)
    if check and p.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {p.stderr.strip() or p.returncode}")
    return p


def unavailable() -> str | None:
    """Why this process cannot build a lab (None: it can): not root, or `ip netns` fails."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, veth links, a bridge)"
    probe = f"phprobe{os.getpid()}"
    try:
        sh("ip", "netns", "add", probe)
    except (LabError, OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns add` fails here: {e}"
    finally:
        sh("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    netns: str
    link: str  # the root namespace's end of the host's veth pair
    ip: str


@dataclass
class Lab:
    tag: str
    bridge: str
    subnet: str
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def root_ip(self) -> str:
        return f"{self.subnet}.{BRIDGE_HOST}"

    def add_host(self, name: str, index: int) -> Host:
        """Host `name` at <subnet>.<index> in a namespace of its own, linked to the bridge."""
        host = Host(name, f"{self.tag}-{name}", f"{self.tag}{name}", f"{self.subnet}.{index}")
        assert len(host.link) <= IFNAMSIZ_MAX, host.link
        self.hosts[name] = host  # recorded first: close() removes what was half made
        sh("ip", "netns", "add", host.netns)
        sh("ip", "link", "add", host.link, "type", "veth", "peer", "name", "eth0",
           "netns", host.netns)  # fmt: skip
        sh("ip", "link", "set", host.link, "master", self.bridge)
        sh("ip", "link", "set", host.link, "up")
        inside = ("ip", "netns", "exec", host.netns)
        sh(*inside, "ip", "link", "set", "lo", "up")
        sh(*inside, "ip", "addr", "add", f"{host.ip}/24", "dev", "eth0")
        sh(*inside, "ip", "link", "set", "eth0", "up")
        return host

    def cut(self, name: str) -> None:
        sh("ip", "link", "set", self.hosts[name].link, "down")

    def restore(self, name: str) -> None:
        sh("ip", "link", "set", self.hosts[name].link, "up")

    def spawn(self, name: str, argv: Sequence[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
        """`argv` in host `name`'s namespace (`ip netns exec` execs it: the pid is its own)."""
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[name].netns, *argv],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=pinhole_env(),
            cwd=REPO,
        )
        self.processes.append(p)
        return p

    def close(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
                p.wait()
        for host in self.hosts.values():
            # Whatever still runs inside a namespace of this lab was started by this test
            # (e.g. the services `pinhole up --join --detach` left behind after a failure).
            pids = sh("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            sh("ip", "link", "del", host.link, check=False)
            sh("ip", "netns", "del", host.netns, check=False)
        sh("ip", "link", "del", self.bridge, check=False)


def pinhole_env() -> dict[str, str]:
    """The environment of a `pinhole` command here: this checkout, no caller's secret."""
    env = {k: v for k, v in os.environ.items() if k != "PINHOLE_CLUSTER_SECRET"}
    env["PYTHONPATH"] = str(REPO)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def pinhole_argv(*args: object) -> list[str]:
    return [sys.executable, "-m", "ops.cli", *(str(a) for a in args)]


@contextlib.contextmanager
def lab() -> Iterator[Lab]:
    """An empty lab (the bridge); closed, with all it holds, on exit."""
    pid = os.getpid()
    tag = f"ph{pid % 100000}"
    made = Lab(tag=tag, bridge=f"{tag}br", subnet=f"{SUBNET_PREFIX}.{pid % 250}")
    try:
        sh("ip", "link", "add", made.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{made.root_ip}/24", "dev", made.bridge)
        sh("ip", "link", "set", made.bridge, "up")
        yield made
    finally:
        made.close()
