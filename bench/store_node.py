"""A pinhole store node as a benchmark server: its own process, its pid for CPU accounting."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from bench.peers import ServerProcess, free_port
from common.credentials import Credentials, Purpose

HOST = "127.0.0.1"


class StoreNodeProcess:
    def __init__(
        self,
        data_dir: Path,
        secret_file: Path,
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """`env`: the node's whole environment (None: this process's)."""
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        creds = Credentials.from_secret(secret_file.read_bytes().strip())
        # Writes (PUT), reads (the GETs of the benchmark) and the node's own figures.
        self.authorization = creds.header(Purpose.WRITE)
        self.read_authorization = creds.header(Purpose.READ)
        self._admin = {"Authorization": creds.header(Purpose.ADMIN)}
        self._server = ServerProcess(
            [
                sys.executable, "-m", "ops.cli", "store", "serve",
                "--data", str(data_dir),
                "--host", HOST,
                "--port", str(self.port),
                "--secret-file", str(secret_file),
                "--log-level", "warning",
            ],
            name="pinhole-store",
            log_path=log_path,
            env=env,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self._server.pid

    def __enter__(self) -> StoreNodeProcess:
        self._server.start(host=HOST, port=self.port, timeout_s=120)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(timeout_s=120)

    def volume(self, vid: int = 1) -> dict[str, object]:
        req = urllib.request.Request(f"{self.url}/volumes/{vid}", headers=self._admin)
        with urllib.request.urlopen(req, timeout=10) as r:
            return dict(json.loads(r.read()))

    def syncs_per_write(self, vid: int = 1) -> float:
        v = self.volume(vid)
        writes = int(v["writes"])  # type: ignore[call-overload]
        return round(int(v["syncs"]) / writes, 4) if writes else 0.0  # type: ignore[call-overload]

    def read_sources(self) -> tuple[int, int]:
        """(reads served from the page cache, reads that went to the device) so far."""
        req = urllib.request.Request(f"{self.url}/status", headers=self._admin)
        with urllib.request.urlopen(req, timeout=10) as r:
            doc = json.loads(r.read())
        return int(doc["reads_from_cache"]), int(doc["reads_from_disk"])
