"""Several API processes on one port ([api] processes > 1): the `pinhole api serve` that is
started (by `pinhole up`, a service manager, the feed benchmark) starts N API processes
and watches them.

- Each is exec'd (`python -m ops.cli <the same arguments> --process-index i --port P`),
  never forked from this process: the per-process state made at import (the request ids'
  random prefix, common/ids.py generators) must differ, and a fresh interpreter is the
  only way to be sure it does.
- They bind host:P with SO_REUSEPORT; the kernel spreads connections over them. Port 0
  is made concrete first: this process binds a free port with SO_REUSEPORT and keeps
  that socket (bound, never listening: it takes no connection) while they run, so no
  other program takes the port in between.
- Before they start, the staging count their data dir shares is prepared
  (api.upload_limits prepare_shared_staging): spools left by stopped processes removed,
  tus part files measured.
- They start and stop together: SIGINT/SIGTERM here is passed to each; when one exits,
  the others are stopped and this process exits non-zero, so whatever supervises it
  restarts the whole set (the shared staging count is measured afresh each start).
- "api listening on http://host:P/api/v1" is printed once every process has printed its
  own line; their standard output is passed through, their standard error is ours.
- A process dies with its starter, even a starter killed by SIGKILL (`die_with_starter`):
  none outlives it holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Any, Final

from api.config import ApiConfig
from api.upload_limits import prepare_shared_staging
from common.signals import stop_event

log = logging.getLogger("pinhole.api.processes")

START_S_MAX: Final = 120.0
STOP_S_MAX: Final = 30.0
LISTENING: Final = b" listening on "
# Set by the starter in the environment of the processes it starts: its pid.
STARTER_PID_ENV: Final = "PINHOLE_API_STARTER_PID"
PR_SET_PDEATHSIG: Final = 1  # <linux/prctl.h>


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (0: a free one) with SO_REUSEPORT, not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def process_argv(argv: Sequence[str], index: int, port: int) -> list[str]:
    """Process `index`'s command: this one's arguments, then its index and the concrete
    port (click keeps the last of an option given twice)."""
    return [
        sys.executable, "-m", "ops.cli", *argv,
        "--process-index", str(index), "--port", str(port),
    ]  # fmt: skip


def die_with_starter() -> None:
    """In a process the starter exec'd (STARTER_PID_ENV set): the kernel sends it SIGTERM
    when the starter ends, however it ends; a starter already gone is SIGTERM now."""
    starter = os.environ.get(STARTER_PID_ENV)
    if starter is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != int(starter):  # it died before the prctl: nothing would tell us
        os.kill(os.getpid(), signal.SIGTERM)


async def serve_processes(config: ApiConfig, argv: Sequence[str]) -> int:
    """Runs config.processes API processes until SIGINT/SIGTERM or until one exits; returns
    the exit status (0 after a stop asked for, 1 when a process ended on its own)."""
    await asyncio.to_thread(prepare_shared_staging, config)
    with reserve_port(config.host, config.port) as sock, stop_event() as stop:
        port = int(sock.getsockname()[1])
        procs = [
            await asyncio.create_subprocess_exec(
                *process_argv(argv, i, port),
                stdout=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                env={**os.environ, STARTER_PID_ENV: str(os.getpid())},
            )
            for i in range(config.processes)
        ]
        listening = [asyncio.Event() for _ in procs]
        relays = [
            asyncio.create_task(_relay(p, ready)) for p, ready in zip(procs, listening, strict=True)
        ]
        exits = [asyncio.create_task(p.wait()) for p in procs]
        stopped = asyncio.create_task(stop.wait())
        try:
            ready = asyncio.gather(*(e.wait() for e in listening))
            starting: list[asyncio.Future[Any]] = [ready, stopped, *exits]
            done, _ = await asyncio.wait(
                starting,
                timeout=START_S_MAX,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if ready in done:
                print(
                    f"api listening on http://{config.host}:{port}/api/v1 "
                    f"({config.processes} processes)",
                    flush=True,
                )
                await asyncio.wait([stopped, *exits], return_when=asyncio.FIRST_COMPLETED)
            else:
                ready.cancel()
            status = 0 if stopped.done() else 1
            if status:
                ended = [i for i, p in enumerate(procs) if p.returncode is not None]
                why = f"process {ended[0]} exited" if ended else "not listening in time"
                log.error("api processes stopping: %s", why)
        finally:
            stopped.cancel()
            await _stop_all(procs)
            for task in relays:
                task.cancel()
            await asyncio.gather(*relays, *exits, return_exceptions=True)
    return status


async def _relay(proc: asyncio.subprocess.Process, listening: asyncio.Event) -> None:
    """Passes the process's standard output through; sets `listening` at its line."""
    assert proc.stdout is not None
    out = sys.stdout.buffer
    while line := await proc.stdout.readline():
        if LISTENING in line:
            listening.set()
        out.write(line)
        out.flush()


async def _stop_all(procs: Sequence[asyncio.subprocess.Process]) -> None:
    """SIGTERM to every process still running, SIGKILL to those not gone in STOP_S_MAX."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    waits = [asyncio.create_task(p.wait()) for p in procs]
    await asyncio.wait(waits, timeout=STOP_S_MAX)
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    await asyncio.gather(*waits)
