"""The store's fast path (the whole plain GET from its raw bytes, `StoreHttpApi.fast`) against
the server's parser and handler: the same bytes on the wire, the same counters.

Two lean servers over real loopback sockets on one node: one with the fast path, one
without. Hypothesis writes requests of many shapes (plain, ranged, validators, odd header
spellings, duplicates, wrong credentials, other versions, paths the fast parser does not
take, needles deleted and damaged on disk); each goes to both servers on a fresh
connection, and the answers (less the Date line), the read counters' changes and the
request metrics must be identical. `parse_get` is also checked against llhttp itself: what
it accepts, llhttp parses as one whole message with the same method, target, version,
credential, request id and keep-alive.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httptools
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bench.peers.pagecache import evict
from common.credentials import Purpose
from common.leanhttp import LeanHTTPServer
from store import native
from store.config import StoreConfig
from store.http_api import StoreHttpApi
from store.native import HotRead
from store.node import StoreNode
from store.server import http_limits
from store.volume import data_name
from store.volume_config import VolumeLimits
from tests.conftest import auth, creds
from tests.raw_http import ANSWER_TIMEOUT_S, DATE_LINE, ask, request_counts
from tests.store.damaged_needles import Item, put_damaged

SECRET = b"test-secret-0123456789abcdef"
READ = auth(SECRET, Purpose.READ)["Authorization"]
COOKIE = 0x1234ABCD5678EF90
VID = 1
OTHER_VID = 7  # no such volume on the node
HEAD_BYTES_MAX = 8192


def _built() -> HotRead:
    hot = native.load(enabled=True)
    assert hot is not None, "store/native is not built (pip install -e .)"
    return hot


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    node: StoreNode
    fast_api: StoreHttpApi
    plain_api: StoreHttpApi
    fast: LeanHTTPServer
    plain: LeanHTTPServer
    dat: Path
    next_key: int = 1


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    loop = asyncio.new_event_loop()
    config = StoreConfig(
        data_dir=tmp_path_factory.mktemp("fast") / "node",
        compaction_check_interval_s=0,
        access_log=False,
        volume=VolumeLimits(size_bytes_max=256 * 1024 * 1024),
    )
    credentials = creds(SECRET, "store")
    node = StoreNode(config, credentials=credentials)
    loop.run_until_complete(node.start())
    loop.run_until_complete(node.create_volume(VID))
    node.read_path.hot_read = _built()
    fast_api = StoreHttpApi(node, credentials=credentials)
    plain_api = StoreHttpApi(node, credentials=credentials)
    assert fast_api.fast is not None
    servers = [
        LeanHTTPServer(
            api.handle,
            limits=http_limits(config),
            head_hook=api.head_hook,
            body_limit=api.body_limit,
            fast=fast,
            name=name,
        )
        for api, fast, name in ((fast_api, fast_api.fast, "fast"), (plain_api, None, "plain"))
    ]
    for server in servers:
        loop.run_until_complete(server.start("127.0.0.1", 0))
    world = World(loop, node, fast_api, plain_api, *servers, config.volumes_dir / data_name(VID))
    yield world
    for server in servers:
        loop.run_until_complete(server.close(grace_s=1))
    loop.run_until_complete(node.close())
    loop.close()


def _counters(world: World) -> dict[str, int]:
    return dataclasses.asdict(world.node.read_path.counters)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after}


def _both(world: World, raw: bytes) -> tuple[bytes, bytes]:
    """(the fast server's answer, the plain server's), Date lines cut; the read counters
    must change alike."""
    run = world.loop.run_until_complete
    before = _counters(world)
    fast = run(ask(world.fast.port, raw))
    middle = _counters(world)
    plain = run(ask(world.plain.port, raw))
    after = _counters(world)
    assert _delta(middle, before) == _delta(after, middle), raw
    return DATE_LINE.sub(b"", fast), DATE_LINE.sub(b"", plain)


async def _store(world: World, key: int, items: list[Item]) -> None:
    await put_damaged(world.node, world.dat, VID, key, COOKIE, items)


# Fields a plain GET may carry (the fast path takes it with any of these).
_PLAIN_FIELDS = st.sampled_from(
    [
        ("Host", "store"),
        ("X-Request-Id", "abc-123"),
        ("x-request-id", "not an id!"),
        ("Connection", "close"),
        ("connection", "Keep-Alive"),
        ("User-Agent", "test/1.0"),
        ("Accept", "*/*"),
        ("X-Odd", "\t v \t"),
        ("X-Empty", ""),
    ]
)
# Fields that make it more than plain, or spell the credential oddly. Fields announcing a
# body are left to test_parse_get_*: the server would wait for the body.
OTHER_FIELDS = [
    ("authorization", READ),
    ("AUTHORIZATION", READ + " \t"),
    ("Authorization", "Pinhole wrong"),
    ("Connection", "upgrade"),
    ("Connection", "keep-alive, close"),
    ("Range", "bytes=0-3"),
    ("If-None-Match", "*"),
    ("if-range", '"0"'),
    ("Content-Length", "0"),
]
_OTHER_FIELDS = st.sampled_from(OTHER_FIELDS)
_SEPARATORS = st.sampled_from([": ", ":", ":  ", ":\t"])


@st.composite
def requests(draw: st.DrawFn, key: int, alts: list[int]) -> bytes:
    """Half plain GETs or HEADs of a stored needle (the fast path's), half anything."""
    alt = draw(st.sampled_from(alts))
    fields = draw(st.lists(st.tuples(_PLAIN_FIELDS, _SEPARATORS), max_size=3))
    fields.insert(draw(st.integers(0, len(fields))), (("Authorization", READ), ": "))
    method, version, path = draw(st.sampled_from(["GET", "HEAD"])), "HTTP/1.1", None
    if draw(st.booleans()):  # each part of the request odd on its own, or not
        if not draw(st.integers(0, 3)):
            method = draw(st.sampled_from(["get", "POST", "OPTIONS"]))
        if not draw(st.integers(0, 3)):
            version = "HTTP/1.0"
        if draw(st.booleans()):
            alt = draw(st.integers(0, 3))
            cookie = COOKIE if draw(st.booleans()) else COOKIE ^ 1
            path = draw(
                st.sampled_from(
                    [
                        f"/n/{VID}/{key}/{alt}/{cookie:016x}",
                        f"/n/{VID}/{key + 10**9}/{alt}/{cookie:016x}",
                        f"/n/{OTHER_VID}/{key}/{alt}/{cookie:016x}",
                        f"/n/0{VID}/{key}/{alt}/{cookie:016x}",
                        f"/n/{VID}/{key}/{alt}/{cookie:016X}",
                        f"/n/{VID}/{key}/{alt}/{cookie:016x}?x=1",
                        f"/n/{VID}/{key}/{alt}",
                    ]
                )
            )
        more = draw(st.lists(st.tuples(_OTHER_FIELDS, _SEPARATORS), max_size=2))
        for field in more:
            fields.insert(draw(st.integers(0, len(fields))), field)
        if not draw(st.integers(0, 3)):
            fields = [f for f in fields if f[0][0] != "Authorization"]
    if path is None:
        path = f"/n/{VID}/{key}/{alt}/{COOKIE:016x}"
    lines = "".join(f"{n}{sep}{v}\r\n" for (n, v), sep in fields)
    return f"{method} {path} {version}\r\n{lines}\r\n".encode("latin-1")


_DAMAGE = st.sampled_from(["none", "none", "none", "magic", "key", "data", "footer"])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fast_and_parsed_answers_are_identical(world: World, data: st.DataObject) -> None:
    key = world.next_key
    world.next_key += 1
    items = data.draw(
        st.lists(
            st.tuples(st.integers(0, 3), st.binary(max_size=3000), _DAMAGE, st.booleans()),
            min_size=1,
            max_size=4,
        )
    )
    world.loop.run_until_complete(_store(world, key, items))
    alts = sorted({alt for alt, _, _, _ in items})
    for raw in data.draw(st.lists(requests(key, alts), min_size=1, max_size=6)):
        fast, plain = _both(world, raw)
        assert fast == plain, raw
    assert request_counts(world.fast_api.requests) == request_counts(world.plain_api.requests)


def test_every_odd_part_alone_answers_alike(world: World) -> None:
    """Each way a request differs from the plain GET, alone, on a cached needle: the same
    answer from both servers, and never from the fast path."""
    key = world.next_key
    world.next_key += 1
    world.loop.run_until_complete(_store(world, key, [(0, b"photo" * 10, "none", False)]))
    path = f"/n/{VID}/{key}/0/{COOKIE:016x}"
    cred = f"Authorization: {READ}\r\n"
    odd = [f"GET {path} HTTP/1.1\r\n{cred}{n}: {v}\r\n\r\n" for n, v in OTHER_FIELDS]
    odd += [
        f"get {path} HTTP/1.1\r\n{cred}\r\n",
        f"OPTIONS {path} HTTP/1.1\r\n{cred}\r\n",
        f"GET {path} HTTP/1.0\r\n{cred}\r\n",
        f"GET {path}?x=1 HTTP/1.1\r\n{cred}\r\n",
        f"GET {path.upper()} HTTP/1.1\r\n{cred}\r\n",
        f"GET /n/0{path[3:]} HTTP/1.1\r\n{cred}\r\n",
        f"GET {path} HTTP/1.1\r\n\r\n",
        f"GET {path} HTTP/1.1\r\n{cred}{cred}\r\n",
        f"GET {path} HTTP/1.1\r\n{cred}X-Request-Id: a\r\nX-Request-Id: b\r\n\r\n",
        f"GET {path} HTTP/1.1\r\n{cred}X-Folded: a\r\n b\r\n\r\n",
    ]
    before = world.fast.statistics().requests_fast
    for raw in odd:
        fast, plain = _both(world, raw.encode())
        assert fast == plain, raw
    assert world.fast.statistics().requests_fast == before
    assert request_counts(world.fast_api.requests) == request_counts(world.plain_api.requests)


def _plain_get(key: int, *fields: str) -> bytes:
    extra = "".join(f"{f}\r\n" for f in fields)
    return (
        f"GET /n/{VID}/{key}/0/{COOKIE:016x} HTTP/1.1\r\nHost: store\r\n"
        f"Authorization: {READ}\r\n{extra}\r\n"
    ).encode()


def test_plain_hits_take_the_fast_path(world: World) -> None:
    """Runs after the comparison, so that it did compare the fast path: a plain GET of a
    cached needle is answered by it; ranged, pipelined or wrongly credited ones are not."""
    key = world.next_key
    world.next_key += 1
    world.loop.run_until_complete(_store(world, key, [(0, b"photo" * 100, "none", False)]))
    run = world.loop.run_until_complete
    before = world.fast.statistics().requests_fast
    assert before > 0, "the comparison never took the fast path"
    got = run(ask(world.fast.port, _plain_get(key)))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"photo" * 100)
    assert world.fast.statistics().requests_fast == before + 1

    ranged = run(ask(world.fast.port, _plain_get(key, "Range: bytes=0-4")))
    assert ranged.startswith(b"HTTP/1.1 206 ") and ranged.endswith(b"\r\n\r\nphoto")
    two = run(ask(world.fast.port, _plain_get(key) * 2))
    assert two.count(b"HTTP/1.1 200 OK\r\n") == 2
    wrong = _plain_get(key).replace(READ.encode(), b"Pinhole nope")
    assert run(ask(world.fast.port, wrong)).startswith(b"HTTP/1.1 401 ")
    assert world.fast.statistics().requests_fast == before + 1


def test_a_closing_fast_answer_closes_the_connection(world: World) -> None:
    key = world.next_key
    world.next_key += 1
    world.loop.run_until_complete(_store(world, key, [(0, b"x" * 10, "none", False)]))
    before = world.fast.statistics().requests_fast

    async def ask_without_ending() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", world.fast.port)
        try:
            writer.write(_plain_get(key, "Connection: close"))
            # The client does not end its side: only the server's close ends this read.
            return await asyncio.wait_for(reader.read(), ANSWER_TIMEOUT_S)
        finally:
            writer.close()

    got = world.loop.run_until_complete(ask_without_ending())
    assert b"\r\nConnection: close\r\n" in got and got.endswith(b"\r\n\r\n" + b"x" * 10)
    assert world.fast.statistics().requests_fast == before + 1


def test_a_cold_get_tries_the_page_cache_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain GET whose pages are not cached: the fast path's read misses and the handler
    the server falls back to reads from the device, without a second try of the page cache
    (which could find the pages the first try's readahead brought in)."""
    key = world.next_key
    world.next_key += 1
    world.loop.run_until_complete(_store(world, key, [(0, b"cold" * 1000, "none", False)]))
    assert evict(world.dat), "the kernel kept the volume's pages cached"
    read_path = world.node.read_path
    tries: list[tuple[int, int, int, int]] = []
    answer_cached = read_path.answer_cached

    def counted(vid: int, key: int, alt_key: int, cookie: int) -> tuple[bytes, memoryview] | int:
        tries.append((vid, key, alt_key, cookie))
        return answer_cached(vid, key, alt_key, cookie)

    monkeypatch.setattr(read_path, "answer_cached", counted)
    before = _counters(world)
    fast_before = world.fast.statistics().requests_fast
    got = world.loop.run_until_complete(ask(world.fast.port, _plain_get(key)))
    assert got.startswith(b"HTTP/1.1 200 OK\r\n") and got.endswith(b"cold" * 1000)
    assert tries == [(VID, key, 0, COOKIE)]
    delta = _delta(_counters(world), before)
    assert (delta["reads"], delta["reads_from_disk"], delta["reads_from_cache"]) == (1, 1, 0)
    assert world.fast.statistics().requests_fast == fast_before
    # Now cached: the fast path answers it, still one try.
    got = world.loop.run_until_complete(ask(world.fast.port, _plain_get(key)))
    assert got.endswith(b"cold" * 1000) and len(tries) == 2
    assert world.fast.statistics().requests_fast == fast_before + 1


# -- parse_get against llhttp -------------------------------------------------------------


class _Message:
    """What llhttp made of some bytes."""

    def __init__(self) -> None:
        self.url = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.complete = 0
        self.parser: httptools.HttpRequestParser | None = None
        self.keep_alive: bool | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.keep_alive = self.parser.should_keep_alive()  # llhttp resets it at the end

    def on_message_complete(self) -> None:
        self.complete += 1


def _field(fields: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    values = [v.rstrip(b" \t").decode("latin-1") for n, v in fields if n.lower() == name]
    assert len(values) <= 1
    return values[0] if values else None


_RAW_PIECES = st.sampled_from(
    [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"/n/1/2/3/00000000000000ff",
        b"/n/1/2/3/00000000000000ff?q",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: s\r\n",
        b"Authorization: Pinhole t\r\n",
        b"authorization:Pinhole u \r\n",
        b"X-Request-Id: r-1\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive\r\n",
        b"Content-Length: 3\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"X-Folded: a\r\n b\r\n",
        b"Bad Name: v\r\n",
        b"X-Lf: v\n",
        b"X-Cr: v\rw\r\n",
        b"X-Obs: \xe9\r\n",
        b"X-Nul: a\x00b\r\n",
        b"\r\n",
        b"\r\n",
        b"abc",
    ]
)


@given(st.lists(_RAW_PIECES, max_size=10), st.booleans())
@example([b"authorization:Pinhole u \r\n", b"Connection: close\r\n", b"\r\n"], True)
@example([b"HEAD ", b"/n/1/2/3/00000000000000ff", b" HTTP/1.1\r\n", b"\r\n"], False)
def test_parse_get_accepts_only_what_llhttp_reads_the_same(
    pieces: list[bytes], well_started: bool
) -> None:
    hot = _built()
    raw = b"".join(pieces)
    if well_started:
        raw = b"GET /n/1/2/3/00000000000000ff HTTP/1.1\r\n" + raw
    got = hot.parse_get(raw, HEAD_BYTES_MAX, b"/n/")
    if got is None:
        return
    head_only, vid, key, alt, cookie, authorization, request_id, close = got
    msg = _Message()
    parser = msg.parser = httptools.HttpRequestParser(msg)
    parser.feed_data(raw)  # raises if llhttp finds it malformed
    assert msg.complete == 1
    assert parser.get_method() == (b"HEAD" if head_only else b"GET")
    assert parser.get_http_version() == "1.1"
    assert msg.keep_alive is not close
    assert msg.url == b"/n/%d/%d/%d/%016x" % (vid, key, alt, cookie)
    assert _field(msg.fields, b"authorization") == authorization
    assert _field(msg.fields, b"x-request-id") == request_id
    for name, _ in msg.fields:
        assert name.lower() not in (b"content-length", b"transfer-encoding", b"range")


def test_parse_get_declines_what_is_not_plain() -> None:
    hot = _built()
    ok = b"GET /n/1/2/3/00000000000000ff HTTP/1.1\r\nAuthorization: Pinhole t\r\n\r\n"
    assert hot.parse_get(ok, HEAD_BYTES_MAX, b"/n/") == (
        False,
        1,
        2,
        3,
        0xFF,
        "Pinhole t",
        None,
        False,
    )
    cache_path = ok.replace(b"/n/", b"/c/", 1)  # the cache's paths, under their own prefix
    assert hot.parse_get(cache_path, HEAD_BYTES_MAX, b"/c/") == hot.parse_get(
        ok, HEAD_BYTES_MAX, b"/n/"
    )
    assert hot.parse_get(ok, HEAD_BYTES_MAX, b"/c/") is None
    assert hot.parse_get(cache_path, HEAD_BYTES_MAX, b"/n/") is None
    with pytest.raises(TypeError):
        hot.parse_get(ok, HEAD_BYTES_MAX, b"/nn/")
    assert hot.parse_get(ok, len(ok) - 1, b"/n/") is None  # over the head limit
    assert hot.parse_get(ok + b"G", HEAD_BYTES_MAX, b"/n/") is None  # bytes after the head
    assert hot.parse_get(ok[:-2], HEAD_BYTES_MAX, b"/n/") is None  # not yet whole
    for field in (
        b"Range: bytes=0-1",
        b"If-None-Match: *",
        b"Content-Length: 0",
        b"Authorization: Pinhole again",
        b"Connection: upgrade",
        b"X-Obs: \xe9",
    ):
        assert hot.parse_get(ok[:-2] + field + b"\r\n\r\n", HEAD_BYTES_MAX, b"/n/") is None, field
