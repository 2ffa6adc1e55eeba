"""A TCP proxy that delays every byte by half a round trip in each direction: link latency
in userspace, for kernels without `sch_netem` (what Toxiproxy's latency toxic does).

    python -m tests.ops.latency_proxy --listen 10.213.7.11:8701 \
        --upstream 127.0.0.1:8701 --control 10.213.7.11:8711 --rtt-ms 0

It accepts on `--listen` (the address a store advertises to the directory), connects each
client to `--upstream` (the store itself, listening on loopback in the same namespace) and
copies bytes both ways through a `DelayLine` per direction. A delay line is a FIFO of
(due time, chunk): the reading side stamps each chunk with the loop time it arrived plus
rtt/2 and moves on at once; the writing side waits for the head's due time, writes it, and
takes the next. Chunks that arrive 0.1 ms apart therefore leave 0.1 ms apart, each rtt/2
after it arrived, and byte order is kept; nothing sleeps per chunk in a way that would
serialise them (the failure mode of a naive `await sleep(d); write()` loop in the reader).

What it does not model: the TCP handshake is answered by the proxy's kernel at once (a
client that opens a connection per request pays no extra round trip for it, where a real
link would charge one), and there is no bandwidth limit, loss or jitter. Python's epoll
timeouts are whole milliseconds rounded up, so a chunk leaves up to about 1 ms late.

The round trip can change while connections are open: `--control` accepts one line per
connection, `rtt_ms <float>\\n`, and answers `ok <float>\\n` once new chunks carry the new
delay (chunks already queued keep theirs), or `error <reason>\\n`. `set_rtt` is the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

log = logging.getLogger("pinhole.latency_proxy")

CHUNK_BYTES_MAX: Final = 64 * 1024
# Chunks in flight per direction; with CHUNK_BYTES_MAX this bounds a delay line's memory to
# 16 MiB. A full line stops reading, so TCP flow control pushes back on the sender.
QUEUED_CHUNKS_MAX: Final = 256
# A round trip larger than this is a typo, not a link (a satellite hop is about 600 ms).
RTT_MS_MAX: Final = 10_000.0
UPSTREAM_CONNECT_S_MAX: Final = 5.0
CONTROL_LINE_BYTES_MAX: Final = 128
CONTROL_S_MAX: Final = 5.0

_EOF: Final = b""


@dataclass
class Delay:
    """The one-way delay every new chunk gets, shared by all connections of a proxy."""

    one_way_s: float = 0.0

    def set_rtt_ms(self, rtt_ms: float) -> None:
        if not (math.isfinite(rtt_ms) and 0.0 <= rtt_ms <= RTT_MS_MAX):
            raise ValueError(f"rtt_ms must be within 0..{RTT_MS_MAX:g}, not {rtt_ms!r}")
        self.one_way_s = rtt_ms / 2000.0


class DelayLine:
    """One direction of one connection: reader -> (due, chunk) FIFO -> writer."""

    def __init__(self, delay: Delay) -> None:
        self._delay = delay
        self._queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS_MAX)

    async def pump_in(self, reader: asyncio.StreamReader) -> None:
        """Stamps and queues what `reader` yields, then the end of the stream."""
        loop = asyncio.get_running_loop()
        while True:
            chunk = await reader.read(CHUNK_BYTES_MAX)
            await self._queue.put((loop.time() + self._delay.one_way_s, chunk))
            if chunk == _EOF:
                return

    async def pump_out(self, writer: asyncio.StreamWriter) -> None:
        """Writes each queued chunk at its due time; the end of the stream half-closes
        `writer` (the other direction may still carry an answer)."""
        loop = asyncio.get_running_loop()
        while True:
            due, chunk = await self._queue.get()
            wait_s = due - loop.time()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if chunk == _EOF:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


class LatencyProxy:
    """Forwards connections accepted on (host, port) to `upstream`, each direction delayed
    by `delay`. `start` binds; `close` stops accepting and drops open connections."""

    def __init__(self, upstream: tuple[str, int], delay: Delay) -> None:
        self.upstream = upstream
        self.delay = delay
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listens on (host, port); returns the port (useful with port 0)."""
        server = await asyncio.start_server(self._accepted, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def start_control(self, host: str, port: int) -> int:
        server = await asyncio.start_server(self._control, host, port)
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _accepted(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await self._forward(c_reader, c_writer)
        finally:
            self._connections.discard(task)

    async def _forward(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter
    ) -> None:
        try:
            u_reader, u_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), UPSTREAM_CONNECT_S_MAX
            )
        except (OSError, TimeoutError) as e:
            # As a real host with nothing listening would: the client sees the connection
            # end (it cannot see a refusal any more, the handshake already happened).
            log.info("upstream %s:%d: %s", *self.upstream, e)
            await _close(c_writer)
            return
        to_upstream, to_client = DelayLine(self.delay), DelayLine(self.delay)
        pumps = [
            to_upstream.pump_in(c_reader),
            to_upstream.pump_out(u_writer),
            to_client.pump_in(u_reader),
            to_client.pump_out(c_writer),
        ]
        tasks = [asyncio.create_task(p) for p in pumps]
        try:
            # Both directions end normally (each side's end of stream went through), or one
            # pump fails (a reset, a broken pipe): then the connection is over both ways.
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    log.debug("connection ended: %r", t.exception())
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await _close(u_writer)
            await _close(c_writer)

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), CONTROL_S_MAX)
            answer = self._command(line[:CONTROL_LINE_BYTES_MAX])
            writer.write(answer.encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError) as e:
            log.info("control connection: %s", e)
        finally:
            await _close(writer)

    def _command(self, line: bytes) -> str:
        words = line.decode("ascii", "replace").split()
        if len(words) != 2 or words[0] != "rtt_ms":
            return "error expected `rtt_ms <milliseconds>`"
        try:
            rtt_ms = float(words[1])
            self.delay.set_rtt_ms(rtt_ms)
        except ValueError as e:
            return f"error {e}"
        log.info("rtt now %g ms", rtt_ms)
        return f"ok {rtt_ms:g}"


async def set_rtt(host: str, control_port: int, rtt_ms: float) -> None:
    """Sets a running proxy's round trip; ValueError with its answer when it refuses."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, control_port), CONTROL_S_MAX
    )
    try:
        writer.write(f"rtt_ms {rtt_ms!r}\n".encode())
        await writer.drain()
        answer = (await asyncio.wait_for(reader.readline(), CONTROL_S_MAX)).decode().strip()
    finally:
        await _close(writer)
    if not answer.startswith("ok "):
        raise ValueError(f"proxy at {host}:{control_port}: {answer or 'no answer'}")


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _rtt_ms(text: str) -> float:
    try:
        Delay().set_rtt_ms(float(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    return float(text)


async def _serve(args: argparse.Namespace, stopped: Callable[[], Awaitable[None]]) -> None:
    delay = Delay()
    delay.set_rtt_ms(args.rtt_ms)
    proxy = LatencyProxy(args.upstream, delay)
    await proxy.start(*args.listen)
    if args.control is not None:
        await proxy.start_control(*args.control)
    log.info("listening on %s:%d -> %s:%d, rtt %g ms", *args.listen, *args.upstream, args.rtt_ms)
    try:
        await stopped()
    finally:
        await proxy.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="latency_proxy", description=__doc__.split("\n")[0])
    parser.add_argument("--listen", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--upstream", type=_address, required=True, metavar="HOST:PORT")
    parser.add_argument("--control", type=_address, metavar="HOST:PORT")
    parser.add_argument("--rtt-ms", type=_rtt_ms, default=0.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    async def until_signal() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    asyncio.run(_serve(args, until_signal))


if __name__ == "__main__":
    main()
