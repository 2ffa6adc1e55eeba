"""The C hot read (store/native) against the pure-Python path: the same answers byte for byte.

One node, two StoreHttpApi on it (the C hot read and the pure-Python path), random needles
put, deleted and damaged on disk, then random GETs and HEADs through both handlers: status
line, every header and the body must be identical, and the C call must have served the
plain hits (so the comparison is not the Python path against itself).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.credentials import Purpose
from common.leanhttp.message import Request, Response, encode_response
from store import native, needle
from store.config import StoreConfig
from store.http_api import _NEEDLE_PATH, StoreHttpApi
from store.native import HotRead
from store.node import StoreNode
from store.registry import VOLUME_ID_MAX
from store.volume import UNIT, data_name
from store.volume_config import VolumeLimits
from tests.conftest import auth, creds
from tests.store.damaged_needles import Item, put_damaged

SECRET = b"test-secret-0123456789abcdef"
READ = auth(SECRET, Purpose.READ)["Authorization"]
COOKIE = 0x1234ABCD5678EF90
DATE = b"Date: Mon, 07 Dec 2026 00:00:00 GMT\r\n"
VID = 1


def _built() -> HotRead:
    hot = native.load(enabled=True)
    assert hot is not None, "store/native is not built (pip install -e .)"
    return hot


@dataclass
class CountingHotRead:
    """The C module, counting the answers it served itself."""

    inner: HotRead
    served: int = 0
    MISS: int = field(init=False)
    REFER: int = field(init=False)
    HASH: str = field(init=False)

    def __post_init__(self) -> None:
        self.MISS, self.REFER, self.HASH = self.inner.MISS, self.inner.REFER, self.inner.HASH

    def answer(
        self, fd: int, offset: int, length: int, key: int, alt_key: int, cookie: int, /
    ) -> tuple[bytes, memoryview] | int:
        got = self.inner.answer(fd, offset, length, key, alt_key, cookie)
        if isinstance(got, tuple):
            self.served += 1
        return got

    def parse_path(self, path: str, /) -> tuple[int, int, int, int] | None:
        return self.inner.parse_path(path)

    def checksum(self, header: bytes, data: bytes | bytearray | memoryview, /) -> int:
        return self.inner.checksum(header, data)


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    node: StoreNode
    hot: CountingHotRead
    c_api: StoreHttpApi
    py_api: StoreHttpApi
    dat: Path
    next_key: int = 1


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    loop = asyncio.new_event_loop()
    config = StoreConfig(
        data_dir=tmp_path_factory.mktemp("native") / "node",
        compaction_check_interval_s=0,
        access_log=False,
        volume=VolumeLimits(size_bytes_max=256 * 1024 * 1024),
    )
    node = StoreNode(config, credentials=creds(SECRET, "store"))
    loop.run_until_complete(node.start())
    loop.run_until_complete(node.create_volume(VID))
    hot = CountingHotRead(_built())
    node.read_path.hot_read = hot
    credentials = creds(SECRET, "store")
    world = World(
        loop,
        node,
        hot,
        StoreHttpApi(node, credentials=credentials),
        StoreHttpApi(node, credentials=credentials, native=False),
        config.volumes_dir / data_name(VID),
    )
    yield world
    loop.run_until_complete(node.close())
    loop.close()


def _wire(world: World, api: StoreHttpApi, req: Request) -> bytes:
    answer = api.handle(req)
    resp = answer if isinstance(answer, Response) else world.loop.run_until_complete(answer)
    head, body, _, _ = encode_response(resp, req.method == "HEAD", False, DATE)
    return head + (bytes(body) if body is not None else b"")


# Where a damaged needle is hit: header (magic, flags, cookie, key, size), data, footer.
_DAMAGE = st.sampled_from(
    ["none", "none", "none", "magic", "flags", "key", "size", "data", "footer"]
)


@st.composite
def needles(draw: st.DrawFn) -> tuple[int, bytes, str, bool]:
    alt = draw(st.integers(0, 3))
    data = draw(st.binary(min_size=0, max_size=3000))
    return alt, data, draw(_DAMAGE), draw(st.booleans())


_HEADERS = st.sampled_from(
    [
        {},
        {},
        {"range": "bytes=0-9"},
        {"range": "bytes=-5"},
        {"range": "bytes=99999-"},
        {"if-none-match": "*"},
        {"if-none-match": '"0000000000000000"'},
        {"authorization": ""},
    ]
)


async def _store(world: World, key: int, items: list[Item]) -> None:
    await put_damaged(world.node, world.dat, VID, key, COOKIE, items)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    items=st.lists(needles(), min_size=1, max_size=5),
    asks=st.lists(
        st.tuples(
            st.integers(0, 4),  # alt_key (4: never stored)
            st.sampled_from(["right", "right", "wrong", "absent_key"]),
            st.sampled_from(["GET", "GET", "HEAD"]),
            _HEADERS,
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_c_and_python_answers_are_identical(
    world: World,
    items: list[tuple[int, bytes, str, bool]],
    asks: list[tuple[int, str, str, dict[str, str]]],
) -> None:
    key = world.next_key
    world.next_key += 1
    world.loop.run_until_complete(_store(world, key, items))
    for alt, cookie_kind, method, extra in asks:
        cookie = COOKIE if cookie_kind != "wrong" else COOKIE ^ 1
        k = key if cookie_kind != "absent_key" else key + 10**9
        headers = {"authorization": READ, **extra}
        path = f"/n/{VID}/{k}/{alt}/{cookie:016x}"
        req = Request(method, path, "", headers, "1.1", True, "127.0.0.1:1")
        assert _wire(world, world.c_api, req) == _wire(world, world.py_api, req), (path, extra)


def test_the_c_path_served_the_plain_hits(world: World) -> None:
    """Runs after the comparison: a live, undamaged needle asked plainly was answered in C
    (and the same needle with a Range header by the Python path)."""
    key = world.next_key
    world.next_key += 1
    world.loop.run_until_complete(_store(world, key, [(0, b"photo" * 100, "none", False)]))
    req = Request(
        "GET", f"/n/{VID}/{key}/0/{COOKIE:016x}", "", {"authorization": READ}, "1.1", True, None
    )
    before = world.hot.served
    wire = _wire(world, world.c_api, req)
    assert world.hot.served == before + 1
    assert wire.startswith(b"HTTP/1.1 200 OK\r\n") and wire.endswith(b"photo" * 100)
    ranged = Request("GET", req.path, "", {**req.headers, "range": "bytes=0-4"}, "1.1", True, None)
    assert _wire(world, world.c_api, ranged).endswith(b"\r\n\r\nphoto")
    assert world.hot.served == before + 1


def test_large_needles_alike(world: World) -> None:
    """Needles past GIL_RELEASE_BYTES_MIN (256 KiB) are read and hashed without the GIL:
    the same answers, intact or damaged."""
    key = world.next_key
    world.next_key += 1
    big = os.urandom(300 * 1024)
    world.loop.run_until_complete(
        _store(world, key, [(0, big, "none", False), (1, big, "data", False)])
    )
    before = world.hot.served
    for alt in (0, 1):
        req = Request(
            "GET",
            f"/n/{VID}/{key}/{alt}/{COOKIE:016x}",
            "",
            {"authorization": READ},
            "1.1",
            True,
            None,
        )
        assert _wire(world, world.c_api, req) == _wire(world, world.py_api, req)
    assert world.hot.served == before + 1


MISS_TRIES = 5


def test_miss_goes_to_the_device(world: World) -> None:
    """A page-cache miss is MISS (not an error): the device read answers it.

    A NOWAIT read of an evicted range starts the kernel's readahead, and on a fast device
    that readahead can finish within the same call, which then serves the bytes. So each
    try evicts again, a served answer must be exact, and one of a few tries must miss."""
    from bench.peers.pagecache import evict

    key = world.next_key
    world.next_key += 1
    data = os.urandom(64 * 1024)
    world.loop.run_until_complete(_store(world, key, [(0, data, "none", False)]))
    loc = world.node.volume(VID).generation.map.get(key, 0)
    assert loc is not None
    answers = []
    for _ in range(MISS_TRIES):
        assert evict(world.dat), "the kernel kept the volume's pages cached"
        fd = os.open(world.dat, os.O_RDONLY)
        try:
            got = world.hot.inner.answer(fd, loc[0] * UNIT, loc[1] * UNIT, key, 0, COOKIE)
        finally:
            os.close(fd)
        if got == world.hot.inner.MISS:
            break
        assert isinstance(got, tuple) and bytes(got[1]) == data
        answers.append(got)
    assert got == world.hot.inner.MISS, f"{len(answers)} evicted reads all served"
    req = Request(
        "GET", f"/n/{VID}/{key}/0/{COOKIE:016x}", "", {"authorization": READ}, "1.1", True, None
    )
    assert _wire(world, world.c_api, req).endswith(data)


def test_unusual_arguments_are_referred_to_python() -> None:
    hot = _built()
    assert hot.answer(-1, 0, 64, 1, 0, 0) == hot.REFER
    assert hot.answer(0, -32, 64, 1, 0, 0) == hot.REFER
    assert hot.answer(0, 0, 0, 1, 0, 0) == hot.REFER
    assert hot.answer(0, 0, 64, 2**64, 0, 0) == hot.REFER
    assert hot.answer(0, 0, 64, 1, 2**32, 0) == hot.REFER


@given(
    key=st.integers(0, needle.KEY_MAX),
    alt=st.integers(0, needle.ALT_KEY_MAX),
    cookie=st.integers(0, needle.COOKIE_MAX),
    data=st.binary(max_size=600),
    deleted=st.booleans(),
)
def test_checksum_is_the_formats(
    key: int, alt: int, cookie: int, data: bytes, deleted: bool
) -> None:
    hot = _built()
    header, tail = needle.encode_parts(key=key, alt_key=alt, cookie=cookie, data=data)
    if deleted:  # the DELETED flag is outside the checksum
        header = header[:4] + bytes([needle.FLAG_DELETED]) + header[5:]
    stored = int.from_bytes(tail[8:16], "little")
    assert hot.checksum(header, data) == stored


def _expected_path(path: str) -> tuple[int, int, int, int] | None:
    """store/http_api.fast_needle_path's fast branch: its regex and limits."""
    m = _NEEDLE_PATH.fullmatch(path)
    if m is None:
        return None
    vid, key, alt = int(m[1]), int(m[2]), int(m[3])
    if vid > VOLUME_ID_MAX or key > needle.KEY_MAX or alt > needle.ALT_KEY_MAX:
        return None
    return vid, key, alt, int(m[4], 16)


def _number(limit: int) -> st.SearchStrategy[str]:
    values = st.one_of(
        st.integers(0, 20), st.integers(limit - 3, limit + 3), st.integers(0, 10**21)
    )
    return st.one_of(
        values.map(str),
        st.tuples(st.sampled_from(["0", "00", "-", "+", " ", "", "x"]), values.map(str)).map(
            "".join
        ),
        st.text(alphabet="0123456789/éa", max_size=22),
    )


_COOKIES = st.one_of(
    st.text(alphabet="0123456789abcdef", min_size=16, max_size=16),
    st.text(alphabet="0123456789abcdefABCDEFg/é", min_size=14, max_size=18),
)


@given(
    prefix=st.sampled_from(["/n/", "/n/", "/n/", "/n", "/m/", "n/", "//n/", "/n//"]),
    vid=_number(VOLUME_ID_MAX),
    key=_number(needle.KEY_MAX),
    alt=_number(needle.ALT_KEY_MAX),
    cookie=_COOKIES,
    tail=st.sampled_from(["", "", "", "/", "?", "x"]),
)
def test_the_c_path_parser_is_the_fast_branchs(
    prefix: str, vid: str, key: str, alt: str, cookie: str, tail: str
) -> None:
    path = f"{prefix}{vid}/{key}/{alt}/{cookie}{tail}"
    assert _built().parse_path(path) == _expected_path(path), path


def test_the_c_path_parser_at_the_limits() -> None:
    hot = _built()
    top = f"/n/{VOLUME_ID_MAX}/{needle.KEY_MAX}/{needle.ALT_KEY_MAX}/{'f' * 16}"
    assert hot.parse_path(top) == (VOLUME_ID_MAX, needle.KEY_MAX, needle.ALT_KEY_MAX, 2**64 - 1)
    assert hot.parse_path(f"/n/{VOLUME_ID_MAX + 1}/1/1/{'0' * 16}") is None
    assert hot.parse_path(f"/n/1/{needle.KEY_MAX + 1}/1/{'0' * 16}") is None
    assert hot.parse_path(f"/n/1/1/{needle.ALT_KEY_MAX + 1}/{'0' * 16}") is None
    assert hot.parse_path(f"/n/01/1/1/{'0' * 16}") is None
    assert hot.parse_path("/n/0/0/0/" + "0" * 16) == (0, 0, 0, 0)


def test_the_switch(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert native.load(enabled=False) is None
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.load(enabled=True) is None
    monkeypatch.setenv(native.ENV_SWITCH, "1")
    assert native.load(enabled=True) is not None
    # An extension that did not build: the Python path, said once in the log.
    monkeypatch.setitem(sys.modules, "store.native._hot_read", None)
    monkeypatch.delattr(native, "_hot_read", raising=False)
    with caplog.at_level(logging.WARNING, logger="pinhole.store"):
        assert native.load(enabled=True) is None
    assert "the C extension is not built" in caplog.text


# Lengths that take each of XXH3's code paths (0, 1-3, 4-8, 9-16, 17-128, 129-240, then
# the striped loop over 1 KiB blocks and its tail), around their edges.
XXH3_LENGTHS = (0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1023, 1024, 1025, 4096, 65_537)
_BOTH_BUILDS = r"""
import json, os, random, sys
from store import needle
from store.native import _hot_read as hot
from f4 import sidecar
rng = random.Random(int(sys.argv[1]))
out = {"hash": hot.HASH, "bad": []}
for n in json.loads(sys.argv[2]):
    data = rng.randbytes(n)
    header, tail = needle.encode_parts(key=n + 1, alt_key=7, cookie=n * 31, data=data)
    if hot.checksum(header, data) != int.from_bytes(tail[8:16], "little"):
        out["bad"].append(("checksum", n))
    packed = sidecar.pack_sums(sidecar.sums_of(data, 64)) if n else b""
    if n and hot.chunk_sums_match(data, packed, 64) != -1:
        out["bad"].append(("chunks", n))
print(json.dumps(out))
"""


@pytest.mark.parametrize("build", ["baseline", "native"])
def test_both_xxh3_builds_agree_with_the_format(build: str, tmp_path: Path) -> None:
    """The baseline build (what a CPU without AVX2 runs, kept with PINHOLE_STORE_XXH3 =
    baseline) and the one chosen here give the format's sums at every XXH3 code path."""
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PINHOLE_STORE_XXH3"}
    if build == "baseline":
        env["PINHOLE_STORE_XXH3"] = "baseline"
    done = subprocess.run(
        [sys.executable, "-c", _BOTH_BUILDS, "5", json.dumps(XXH3_LENGTHS)],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(done.stdout)
    if build == "baseline":
        assert got["hash"] == "baseline"
    assert got["bad"] == []
