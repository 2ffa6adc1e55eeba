"""f4's checked read with the store's C helpers (store/native: `chunk_sums_match`,
`pread_cached`) against the pure-Python path: the same verdicts, the same bytes, the same
errors; and a storage node answering a cached checked range inside the protocol callback."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.peers.pagecache import evict
from common.credentials import Credentials, Purpose
from common.leanhttp.message import Request, Response
from f4 import local_block_store, sidecar
from f4.errors import BlockCorrupt
from f4.local_block_store import WouldBlock, read_cached
from f4.node_disk import NodeDisks
from f4.node_http import NodeHttpApi
from store import native
from tests.f4.helpers import put_block_with_sidecar

BLOCK = "v1.s0.b0.blk"


def _c() -> native.ForF4:
    from store.native import _hot_read  # built by the editable install, or this fails

    module: native.ForF4 = _hot_read
    return module


def test_f4_uses_the_c_helpers_unless_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    c = _c()
    if os.environ.get(native.ENV_SWITCH, "1") == "0":
        assert sidecar._native_match is None and local_block_store._pread_cached is None
    else:
        assert sidecar._native_match is c.chunk_sums_match
        assert local_block_store._pread_cached is c.pread_cached
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.for_f4() is None
    monkeypatch.setenv(native.ENV_SWITCH, "1")
    assert native.for_f4() is c


def _verdict(check: object, data: bytes, packed: bytes, chunk: int) -> str:
    try:
        check(data, 0, packed, chunk)  # type: ignore[operator]
    except BlockCorrupt as e:
        return f"corrupt: {e}"
    return "ok"


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=0, max_size=5000),
    chunk=st.sampled_from([1, 7, 64, 1024, 4096]),
    flips=st.lists(st.integers(min_value=0), max_size=3),
    sum_flip=st.none() | st.integers(min_value=0),
    cut=st.integers(min_value=-2, max_value=2),
)
def test_c_and_python_chunk_checks_agree(
    data: bytes, chunk: int, flips: list[int], sum_flip: int | None, cut: int
) -> None:
    packed = bytearray(sidecar.pack_sums(sidecar.chunk_sums(data, chunk)))
    damaged = bytearray(data)
    for at in flips:
        if damaged:
            damaged[at % len(damaged)] ^= 1 << (at % 8)
    if sum_flip is not None and packed:
        packed[sum_flip % len(packed)] ^= 1
    # Sums missing or one too many: the C call is not asked, Python says what is wrong.
    if cut < 0:
        packed = packed[: max(0, len(packed) + 8 * cut)]
    elif cut > 0:
        packed += bytes(8 * cut)
    got = _verdict(sidecar.check_packed, bytes(damaged), bytes(packed), chunk)
    want = _verdict(sidecar.check_packed_python, bytes(damaged), bytes(packed), chunk)
    assert got == want
    if not flips and sum_flip is None and cut == 0:
        assert got == "ok"
        assert _c().chunk_sums_match(bytes(damaged), bytes(packed), chunk) == -1


def test_the_c_check_names_the_first_bad_chunk() -> None:
    data = bytearray(random.Random(3).randbytes(10 * 1024 + 5))
    packed = sidecar.pack_sums(sidecar.chunk_sums(data, 1024))
    data[7 * 1024 + 3] ^= 0x80
    data[9 * 1024] ^= 1
    assert _c().chunk_sums_match(data, packed, 1024) == 7
    with pytest.raises(ValueError):
        _c().chunk_sums_match(data, packed[:-8], 1024)
    with pytest.raises(ValueError):
        _c().chunk_sums_match(data, packed, 0)


@pytest.mark.parametrize("path_kind", ["c", "python"])
def test_cached_reads_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path_kind: str
) -> None:
    if path_kind == "python":
        monkeypatch.setattr(local_block_store, "_pread_cached", None)
    path = tmp_path / "f"
    data = random.Random(1).randbytes(1 << 20)
    path.write_bytes(data)
    got = read_cached(path, "f", 4096, 300_000)  # past GIL_RELEASE_BYTES_MIN
    assert got == data[4096 : 4096 + 300_000]
    assert read_cached(path, "f", 0, 0) == b""
    with pytest.raises(WouldBlock):  # past the end
        read_cached(path, "f", len(data) - 10, 20)
    assert evict(path)
    with pytest.raises(WouldBlock):
        read_cached(path, "f", 4096, 8192)


def test_pread_cached_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        _c().pread_cached(-1, 10, 0)
    with pytest.raises(ValueError):
        _c().pread_cached(0, -1, 0)
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        assert _c().pread_cached(fd, 10, 0) is None  # a short read
    finally:
        os.close(fd)


def _node(tmp_path: Path) -> tuple[NodeHttpApi, bytes, Credentials]:
    chunk = sidecar.CHUNK_BYTES
    data = random.Random(2).randbytes(64 * chunk)
    put_block_with_sidecar(tmp_path, "n00", BLOCK, data)
    creds = Credentials.from_secret(b"node-test-secret-0123456789abcd")
    return NodeHttpApi(NodeDisks(tmp_path, ["n00"]), credentials=creds), data, creds


def _get(creds: Credentials, offset: int, length: int) -> Request:
    headers = {"authorization": creds.header(Purpose.BLOCKS)}
    query = f"offset={offset}&length={length}&checked=1"
    return Request("GET", f"/b/n00/{BLOCK}", query, headers, "1.1", True, None)


def test_a_cached_checked_range_is_answered_in_the_callback(tmp_path: Path) -> None:
    api, data, creds = _node(tmp_path)
    chunk = sidecar.CHUNK_BYTES
    try:
        answer = api.handle(_get(creds, 8 * chunk, 5 * chunk))
        assert isinstance(answer, Response)  # no Task, no disk thread
        assert answer.status == 200 and bytes(answer.body) == data[8 * chunk : 13 * chunk]
        assert api.counters["checked_reads_inline"] == 1
        assert api.counters["checked_reads_threaded"] == 0

        async def later(req: Request) -> Response:
            answer = api.handle(req)
            assert not isinstance(answer, Response)
            return await answer

        # Not in the page cache: the disk threads read it, the same bytes.
        assert evict(tmp_path / "n00" / BLOCK)
        resp = asyncio.run(later(_get(creds, 8 * chunk, 5 * chunk)))
        assert resp.status == 200 and bytes(resp.body) == data[8 * chunk : 13 * chunk]
        assert api.counters["checked_reads_threaded"] == 1
        # Corrupt: the usual way answers it, as it always has (503 block_corrupt).
        path = tmp_path / "n00" / BLOCK
        raw = bytearray(path.read_bytes())
        raw[9 * chunk] ^= 1
        path.write_bytes(raw)
        resp = asyncio.run(later(_get(creds, 8 * chunk, 5 * chunk)))
        assert resp.status == 503
        assert dict(resp.headers)["X-Pinhole-Error"] == "block_corrupt"
        assert api.counters["ranges_corrupt"] == 1
        # Malformed: the usual 400.
        resp = asyncio.run(later(_get(creds, 8 * chunk + 1, 5 * chunk)))
        assert resp.status == 400
    finally:
        api.close()
