"""A migration run from another host: the sealed volume read through a real store node's
HTTP API ([f4] haystack_url, f4/store_source.py) migrates exactly as from the volume's
directory: the same live needles, every blob read back equal, deletes left out, a volume
that takes writes refused, and clear errors for an unreachable store or missing
credentials."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common import credentials
from common.credentials import Credentials, Purpose
from f4 import store_source
from f4.blob import BlobId
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.errors import BlobAbsent, F4Error
from f4.needle_source import NeedleSource
from f4.reader import Reader
from f4.store_source import StoreUnavailable
from tests.f4.helpers import random_blobs, sealed_volume

VID = 7
WRITABLE_VID = 8
BLOCK_BYTES = 64 * 1024  # the blobs are up to 40 kB
REPO = Path(__file__).resolve().parents[2]


class StoreProcess:
    def __init__(self, data: Path, secret_file: Path) -> None:
        self.data = data
        self.secret_file = secret_file
        self.log = data.parent / "store.log"
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "ops.cli", "store", "serve",
            "--data", str(self.data), "--port", "0",
            "--secret-file", str(self.secret_file),
            "--create-volume", str(WRITABLE_VID), "--log-level", "info",
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, cwd=self.data.parent)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = self.log.read_text()
            for line in text.splitlines():
                if "listening on http://" in line:
                    self.url = line.split("listening on ", 1)[1].split()[0].rstrip("/")
                    return
            assert self.proc.poll() is None, text[-2000:]
            time.sleep(0.05)
        raise AssertionError(f"the store did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def operator(tmp_path: Path) -> Credentials:
    secret = credentials.ensure_secret_file(tmp_path / "secret")
    return Credentials.from_secret(secret.read_bytes().strip())


@pytest.fixture
def store(tmp_path: Path, operator: Credentials) -> Iterator[tuple[StoreProcess, dict]]:
    rng = random.Random(11)
    blobs = random_blobs(rng, 60, size_max=40_000)
    deleted = {(5000 + i, 1 << 8 | 1): (rng.getrandbits(64), rng.randbytes(900)) for i in range(5)}
    data = tmp_path / "store"
    sealed_volume(data / "volumes", VID, blobs, deleted)
    proc = StoreProcess(data, next((tmp_path / "secret").iterdir()))
    proc.start()
    try:
        yield proc, {"blobs": blobs, "deleted": deleted}
    finally:
        proc.stop()


def _cell(tmp_path: Path, url: str, creds: Credentials | None) -> Cell:
    config = F4Config(
        cell_root=tmp_path / "cell",
        haystack_dir=tmp_path / "nowhere",
        haystack_url=url,
        nodes=tuple(F4Node(f"n{i:02d}", f"r{i:02d}") for i in range(14)),
        block_bytes=BLOCK_BYTES,
        age_s_min=0.0,
    )
    return Cell(config, credentials=creds)


def test_a_volume_read_over_http_migrates_as_from_its_directory(
    tmp_path: Path,
    operator: Credentials,
    store: tuple[StoreProcess, dict],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    proc, made = store
    # A small read-ahead window: scans and needle reads cross windows and need several
    # answers, as a real volume's do with the 8 MiB one.
    monkeypatch.setattr(store_source, "DAT_READ_BYTES", 64 * 1024)
    cell = _cell(tmp_path, proc.url, operator)
    try:
        assert cell.haystack_volumes() == [VID, WRITABLE_VID]
        writable = cell.candidate(WRITABLE_VID, time.time())
        assert (writable.due, writable.reason) == (False, "takes writes (not sealed)")
        due = cell.candidate(VID, time.time())
        assert due.due, due.reason
        over_http = cell.source(VID)
        local = NeedleSource(proc.data / "volumes", VID)
        try:
            assert over_http.live_needles() == local.live_needles()
            assert over_http.size() == local.size()
            for ref in local.live_needles()[:10]:
                assert over_http.read(ref) == local.read(ref)
        finally:
            over_http.close()
            local.close()

        mark = cell.migrate(VID)
        assert mark["blobs"] == mark["blobs_checked"] == len(made["blobs"])
        reader = Reader(cell.store, cell.keys)
        for (key, alt), (cookie, data) in made["blobs"].items():
            assert reader.read(VID, key, alt, cookie) == data
        for (key, alt), (cookie, _data) in made["deleted"].items():
            with pytest.raises(BlobAbsent):
                reader.read(VID, key, alt, cookie)
            assert cell.keys.get(BlobId(VID, key, alt)) is None
    finally:
        cell.close()


def test_an_unreachable_store_and_missing_credentials_are_clear_errors(
    tmp_path: Path, operator: Credentials
) -> None:
    with pytest.raises(F4Error, match="operator's credentials"):
        _cell(tmp_path, "http://127.0.0.1:1", None)
    blocks_only = Credentials(
        tokens={Purpose.BLOCKS: operator.tokens[Purpose.BLOCKS]}, verifiers={}
    )
    with pytest.raises(F4Error, match="operator's credentials"):
        _cell(tmp_path, "http://127.0.0.1:1", blocks_only)
    cell = _cell(tmp_path, "http://127.0.0.1:1", operator)
    try:
        with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:1"):
            cell.haystack_volumes()
    finally:
        cell.close()

    config = tmp_path / "pinhole.toml"
    config.write_text(
        f'[f4]\ncell_root = "{tmp_path / "cell2"}"\nage_s_min = 0\n'
        f'cluster_secret_file = "{next((tmp_path / "secret").iterdir())}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ops.cli", "--config", str(config), "f4", "migrate",
         "--haystack-url", "http://127.0.0.1:1", "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "127.0.0.1:1" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
