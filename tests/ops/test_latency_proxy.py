"""The userspace latency proxy (tests/ops/latency_proxy.py) on loopback: bytes whole and in
order, each chunk late by rtt/2 and never serialised behind the others, a round trip
costing the rtt, half-closes passed on, the round trip changed over the control port, bad
arguments refused in one line."""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

import pytest

from tests.ops.latency_proxy import Delay, LatencyProxy, main, set_rtt

HOST: Final = "127.0.0.1"
# A loaded 2-core machine runs a ready task a few ms late now and then; the lower bounds
# below are exact (the proxy never sends early), the upper ones allow this much.
LATE_S_MAX: Final = 0.1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(65536):
        writer.write(chunk)
        await writer.drain()
    writer.close()


async def _proxied(upstream: Handler, rtt_ms: float) -> tuple[LatencyProxy, int, asyncio.Server]:
    server = await asyncio.start_server(upstream, HOST, 0)
    delay = Delay()
    delay.set_rtt_ms(rtt_ms)
    proxy = LatencyProxy((HOST, server.sockets[0].getsockname()[1]), delay)
    return proxy, await proxy.start(HOST, 0), server


@pytest.fixture
async def proxies() -> AsyncIterator[list[tuple[LatencyProxy, asyncio.Server]]]:
    made: list[tuple[LatencyProxy, asyncio.Server]] = []
    yield made
    for proxy, server in made:
        await proxy.close()
        server.close()
        await server.wait_closed()


async def _start(
    made: list[tuple[LatencyProxy, asyncio.Server]], upstream: Handler, rtt_ms: float
) -> tuple[LatencyProxy, int]:
    proxy, port, server = await _proxied(upstream, rtt_ms)
    made.append((proxy, server))
    return proxy, port


async def test_bytes_arrive_whole_and_in_order_both_ways(proxies: list) -> None:
    _, port = await _start(proxies, _echo, rtt_ms=2)
    rng = random.Random(5)
    data = rng.randbytes(3 * 1024 * 1024)
    reader, writer = await asyncio.open_connection(HOST, port)

    async def send() -> None:
        at = 0
        while at < len(data):
            n = rng.randrange(1, 200_000)
            writer.write(data[at : at + n])
            await writer.drain()
            at += n
        writer.write_eof()

    sender = asyncio.create_task(send())
    back = await reader.read(-1)  # until the echo server's close comes through
    await sender
    writer.close()
    assert back == data


async def test_each_chunk_is_late_by_half_the_rtt_and_not_serialised(proxies: list) -> None:
    arrivals: list[tuple[float, int]] = []  # (loop time, bytes received so far)
    done = asyncio.Event()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        total = 0
        while chunk := await reader.read(65536):
            total += len(chunk)
            arrivals.append((asyncio.get_running_loop().time(), total))
        writer.close()
        done.set()

    one_way_s, pieces, piece_bytes, gap_s = 0.2, 10, 100, 0.01
    _, port = await _start(proxies, sink, rtt_ms=2000 * one_way_s)
    _, writer = await asyncio.open_connection(HOST, port)
    loop = asyncio.get_running_loop()
    sent = []
    for _ in range(pieces):
        writer.write(b"x" * piece_bytes)
        await writer.drain()
        sent.append(loop.time())
        await asyncio.sleep(gap_s)
    writer.write_eof()
    await asyncio.wait_for(done.wait(), 5)
    writer.close()
    assert arrivals[-1][1] == pieces * piece_bytes
    for i, sent_at in enumerate(sent):
        arrived_at = next(t for t, total in arrivals if total >= (i + 1) * piece_bytes)
        late_s = arrived_at - sent_at
        # A proxy that slept per chunk before reading the next would deliver piece i about
        # (i + 1) * one_way_s after the first was sent, far outside this window.
        assert one_way_s <= late_s < one_way_s + LATE_S_MAX, (i, late_s)


async def _round_trips(port: int, n: int) -> list[float]:
    reader, writer = await asyncio.open_connection(HOST, port)
    loop = asyncio.get_running_loop()
    took = []
    try:
        for i in range(n):
            start = loop.time()
            writer.write(b"ping %d\n" % i)
            assert await reader.readline() == b"ping %d\n" % i
            took.append(loop.time() - start)
    finally:
        writer.close()
    return took


async def test_a_round_trip_costs_the_rtt_which_the_control_port_changes(
    proxies: list,
) -> None:
    proxy, port = await _start(proxies, _echo, rtt_ms=0)
    control = await proxy.start_control(HOST, 0)
    assert statistics.median(await _round_trips(port, 5)) < LATE_S_MAX
    await set_rtt(HOST, control, 80)
    took = await _round_trips(port, 5)
    assert min(took) >= 0.080, took
    assert statistics.median(took) < 0.080 + LATE_S_MAX, took
    await set_rtt(HOST, control, 0)
    assert statistics.median(await _round_trips(port, 5)) < LATE_S_MAX
    with pytest.raises(ValueError, match="rtt_ms must be within"):
        await set_rtt(HOST, control, -1)
    with pytest.raises(ValueError, match="rtt_ms must be within"):
        await set_rtt(HOST, control, float("nan"))
    assert proxy.delay.one_way_s == 0.0


async def test_a_half_close_passes_through_and_the_answer_comes_back(proxies: list) -> None:
    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await reader.read(-1)
        writer.write(b"got %d" % len(got))
        await writer.drain()
        writer.close()

    _, port = await _start(proxies, count, rtt_ms=10)
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(b"a" * 12345)
    writer.write_eof()
    assert await asyncio.wait_for(reader.read(-1), 5) == b"got 12345"
    writer.close()


async def test_without_an_upstream_the_connection_ends(proxies: list) -> None:
    proxy, port = await _start(proxies, _echo, rtt_ms=0)
    free = await asyncio.start_server(_echo, HOST, 0)
    proxy.upstream = (HOST, free.sockets[0].getsockname()[1])
    free.close()
    await free.wait_closed()
    reader, writer = await asyncio.open_connection(HOST, port)
    assert await asyncio.wait_for(reader.read(-1), 5) == b""
    writer.close()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--listen", "127.0.0.1", "--upstream", "127.0.0.1:1"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:99999", "--upstream", "127.0.0.1:1"], "is not HOST:PORT"),
        (["--listen", ":1", "--upstream", "127.0.0.1:1", "--rtt-ms", "5"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--rtt-ms", "-3"], "within"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--rtt-ms", "x"], "x"),
    ],
)
def test_bad_arguments_are_one_line_errors(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("latency_proxy: error:") and error in last, last
