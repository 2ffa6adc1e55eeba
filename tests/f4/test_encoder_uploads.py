"""The one-request put a storage node takes for an object of one chunk (a sidecar, an
index copy, a block of one window), through a real storage node process."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from common import credentials
from common.credentials import Credentials, Purpose
from f4.block_store import block_name
from f4.http_block_store import HttpBlockStore
from f4.local_block_store import TEMP_SUFFIX
from f4.node_http import UPLOAD_CHUNK_BYTES_MAX
from tests.f4.test_node_service import NodeProcess, _code, _raw

VID = 4


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return credentials.ensure_secret_file(tmp_path / "secret")


@pytest.fixture
def operator(secret_file: Path) -> Credentials:
    return Credentials.from_secret(secret_file.read_bytes().strip())


def test_an_object_of_one_chunk_is_put_in_one_request(
    tmp_path: Path, secret_file: Path, operator: Credentials
) -> None:
    proc = NodeProcess(tmp_path, "p", ["n00"], secret_file)
    name = block_name(VID, 0, 0)
    try:
        proc.start()
        url = f"{proc.url}/b/n00/{name}"
        header = operator.header(Purpose.BLOCKS)
        first = random.Random(3).randbytes(100_000)
        answer = _raw("PUT", url, header, first)
        assert answer.status == 200 and json.loads(answer.data) == {"size": len(first)}
        assert (proc.blocks / "n00" / name).read_bytes() == first
        second = random.Random(4).randbytes(50_000)  # replaces the object whole
        assert _raw("PUT", url, header, second).status == 200
        assert (proc.blocks / "n00" / name).read_bytes() == second
        assert list((proc.blocks / "n00").iterdir()) == [proc.blocks / "n00" / name]

        bad = _raw("PUT", f"{proc.url}/b/n00/{name}.tmp", header, b"x")
        assert bad.status == 400 and _code(bad) == "bad_name"
        assert _raw("PUT", url, None, b"x").status == 401
        too_long = _raw("PUT", url, header, bytes(UPLOAD_CHUNK_BYTES_MAX + 1))
        assert too_long.status == 413
        assert (proc.blocks / "n00" / name).read_bytes() == second

        # Through the client: one chunk or less is put whole, more goes through an upload.
        store = HttpBlockStore({"n00": proc.url}, operator)
        big = random.Random(5).randbytes(UPLOAD_CHUNK_BYTES_MAX + 12_345)
        store.put("n00", name, [big[:1000], big[1000:]])
        assert store.get("n00", name) == big
        store.put("n00", name, [first[:10], first[10:]])
        assert store.get("n00", name) == first
        assert store.clean_temporaries() == 0
        assert not list((proc.blocks / "n00").glob(f"*{TEMP_SUFFIX}"))
        store.close()
    finally:
        proc.stop()
