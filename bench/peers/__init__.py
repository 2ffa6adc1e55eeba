"""Benchmark peers: the programs `pinhole bench store` measures beside the store node.

Each module is one concern; import from the modules themselves:

- `debian`: find a command, install its Debian package when missing (`Availability`).
- `cpu`: CPU seconds used by a process tree (`ProcessCpu`), CPU microseconds per request.
- `pagecache`: evict, warm and inspect a file's pages in the kernel page cache.
- `hashed_tree`: one file per photo under two levels of hashed directories.
- `nginx`, `swift`: HTTP servers run as children (`NginxServer`, `SwiftObjectServer`).
- `fio`: raw disk figures from fio's JSON output (`FioJob`, `run_fio`).
- `wrk`: HTTP load with wrk and its Lua scripts (`run_wrk`, `WrkResult`).

This package module holds what the server wrappers share: `ServerProcess`, a child in its
own process group that is killed (with everything it forked) on stop or interpreter exit,
and `free_port`.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psutil

PROBE_REQUEST = b"HEAD / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
WATCHDOG_CODE = """
import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.stdin.buffer.read()  # returns when every write end is closed, e.g. our parent died
try:
    os.killpg(int(sys.argv[1]), signal.SIGKILL)
except OSError:
    pass
"""
"""Run beside each server: SIGKILLs its process group once the pipe from us closes."""

_live_servers: set[ServerProcess] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that was free a moment ago (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def accepts_connections(host: str, port: int) -> bool:
    """True when something listens on `host:port`."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def answers_http(host: str, port: int, *, timeout_s: float = 1.0) -> bool:
    """True when `host:port` accepts a connection and replies with an HTTP status line."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(PROBE_REQUEST)
            return sock.recv(5) == b"HTTP/"
    except OSError:
        return False


class ServerProcess:
    """A server run as a child in a new session; stopping it kills its process group.

    The child's stdout and stderr go to `log_path`. Servers still running when the
    interpreter exits are stopped by an atexit hook, so a failed test leaves no orphans;
    should this process be killed outright (SIGKILL, no atexit), a small watchdog process
    holding the read end of a pipe from us kills the server's process group when the
    pipe closes.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None
        self.watchdog: subprocess.Popen[bytes] | None = None
        self.watchdog_pipe_fd: int | None = None

    @property
    def pid(self) -> int:
        """The child's process id (it leads its own process group)."""
        if self.process is None:
            raise RuntimeError(f"{self.name} is not started")
        return self.process.pid

    def start(self, *, host: str, port: int, timeout_s: float = 30.0) -> None:
        """Start the child and wait up to `timeout_s` seconds until it answers HTTP."""
        if self.process is not None:
            raise RuntimeError(f"{self.name} is already started")
        if accepts_connections(host, port):
            # Otherwise the readiness probe could be answered by whoever holds the port.
            raise RuntimeError(f"{self.name}: {host}:{port} is already in use")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        _live_servers.add(self)
        try:
            self.start_watchdog()
            self.wait_until_answering(host, port, timeout_s=timeout_s)
        except BaseException:
            self.stop()
            raise

    def start_watchdog(self) -> None:
        """Start the process that kills the server's group if we die without stopping it."""
        assert self.process is not None
        read_fd, write_fd = os.pipe()  # both non-inheritable (PEP 446)
        try:
            self.watchdog = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG_CODE, str(self.process.pid)],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(write_fd)
            raise
        finally:
            os.close(read_fd)
        self.watchdog_pipe_fd = write_fd

    def stop_watchdog(self) -> None:
        """Close our end of the watchdog's pipe and reap it."""
        if self.watchdog_pipe_fd is not None:
            os.close(self.watchdog_pipe_fd)
            self.watchdog_pipe_fd = None
        if self.watchdog is not None:
            try:
                self.watchdog.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
                self.watchdog.wait()
            self.watchdog = None

    def wait_until_answering(self, host: str, port: int, *, timeout_s: float) -> None:
        """Poll `host:port` until it answers HTTP; raise with the log's tail if it dies."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"{self.name} exited with {code}: {self.log_tail()}")
            if answers_http(host, port):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not answer on {host}:{port} within {timeout_s:.0f} s: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.05)

    def pids(self) -> list[int]:
        """The child's pid followed by every live descendant's pid (e.g. worker processes)."""
        if self.process is None or self.process.poll() is not None:
            return []
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [self.process.pid, *(child.pid for child in children)]

    def log_tail(self, lines: int = 15) -> str:
        """The last `lines` lines of the child's log, joined with " | "."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        tail = [line for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(tail) if tail else "(empty log)"

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM the leader, SIGKILL the group after `timeout_s` seconds; the exit code."""
        process = self.process
        if process is None:
            return None
        _live_servers.discard(self)
        group = process.pid
        members = processes(self.pids())
        if process.poll() is None:
            # The leader first, so it can take its workers down in order.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                signal_group(group, signal.SIGKILL)
                process.wait(timeout=timeout_s)
        # Workers the leader did not take down with it (or that ignored SIGTERM).
        signal_group(group, signal.SIGKILL)
        wait_until_dead(members, timeout_s=timeout_s)
        self.stop_watchdog()
        return process.returncode


def processes(pids: Sequence[int]) -> list[psutil.Process]:
    """psutil handles for the `pids` that still exist."""
    handles = []
    for pid in pids:
        try:
            handles.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    return handles


def wait_until_dead(members: Sequence[psutil.Process], *, timeout_s: float) -> None:
    """Wait up to `timeout_s` seconds until each process has exited (zombies count)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = []
        for member in members:
            try:
                if member.is_running() and member.status() != psutil.STATUS_ZOMBIE:
                    alive.append(member)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return
        time.sleep(0.01)


def signal_group(group: int, signum: int) -> None:
    """Send `signum` to process group `group`, ignoring a group that is already gone."""
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live_servers):
        server.stop(timeout_s=3.0)


LOOPBACK = "127.0.0.1"


class WorkerPoolServer:
    """What a peer with a master process and `workers` worker processes shares (nginx,
    Swift): waiting for the workers, stopping, pids, use as a context manager. Subclasses
    set `server` in their start()."""

    display_name = "server"
    workers: int
    port: int
    server: ServerProcess | None

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. "http://127.0.0.1:8080"."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> None:
        raise NotImplementedError

    def wait_for_workers(self, *, timeout_s: float) -> None:
        """Wait up to `timeout_s` seconds until all `workers` worker processes exist."""
        deadline = time.monotonic() + timeout_s
        while len(self.pids()) < 1 + self.workers:
            if time.monotonic() > deadline:
                have = len(self.pids()) - 1
                raise TimeoutError(f"{self.display_name} has {have} of {self.workers} workers")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop the master and its workers; safe to call twice."""
        if self.server is not None:
            self.server.stop()
            self.server = None

    def pids(self) -> list[int]:
        """The master's pid followed by the workers' pids (empty when not running)."""
        return self.server.pids() if self.server is not None else []

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
