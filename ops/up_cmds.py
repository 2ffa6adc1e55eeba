"""`pinhole up`: the local cluster on loopback, on embedded defaults.

What exists so far is the store node, so `up` runs one store node as its own process with
its data under --data, creates volume 1, and (with --demo) stores a few demo photos. It
stays in the foreground; Ctrl-C stops it. Run again on the same --data, it brings back the
same node with its data.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import aiohttp
import click

from common import credentials
from ops.cli_support import DEFAULT_ROOT, EXIT_FAILED, CliError, run
from store.client import StoreClient, needle_path
from store.config import DEFAULT_PORT

DEMO_FILE = "demo.json"
DEMO_PHOTOS = 6
NODE_START_S_MAX = 30.0


def demo_png(seed: int, size: int = 256) -> bytes:
    """A small gradient PNG (no image library needed)."""
    r0, g0, b0 = (seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row += bytes(((r0 + x) % 256, (g0 + y) % 256, (b0 + x + y) % 256))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"".join(rows), 6))
        + chunk(b"IEND", b"")
    )


async def _wait_healthy(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + NODE_START_S_MAX
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise CliError(f"the store node exited with status {proc.returncode}", EXIT_FAILED)
            try:
                async with s.get(url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise CliError(f"the store node did not answer on {url} within {NODE_START_S_MAX:.0f} s")


async def _seed_demo(url: str, secret: bytes, root: Path) -> list[str]:
    path = root / DEMO_FILE
    if path.exists():
        demo = json.loads(path.read_text())
    else:
        base = int(time.time() * 1000) << 23
        demo = [
            {"key": base + i, "alt_key": 0, "cookie": secrets.randbits(64)}
            for i in range(DEMO_PHOTOS)
        ]
        async with StoreClient(url, secret=secret) as c:
            for i, d in enumerate(demo):
                await c.put(1, d["key"], d["alt_key"], d["cookie"], demo_png(i))
        path.write_text(json.dumps(demo, indent=2))
    return [url + needle_path(1, d["key"], d["alt_key"], d["cookie"]) for d in demo]


@click.command()
@click.option(
    "--data",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_ROOT,
    show_default=True,
    help="All of the cluster's data lives here.",
)
@click.option(
    "--port", type=int, default=DEFAULT_PORT, show_default=True, help="The store node's port."
)
@click.option("--demo/--no-demo", default=False, help="Store a few demo photos.")
def up(root: Path, port: int, demo: bool) -> None:
    """Start the local cluster in the foreground (Ctrl-C stops it)."""
    root.mkdir(parents=True, exist_ok=True)
    credentials.ensure_secret_file(root)
    secret = credentials.load_secret(
        secret_file=root / credentials.SECRET_FILE_NAME, default_dir=None
    )
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable, "-m", "ops.cli", "store", "serve",
        "--data", str(root / "store-1"),
        "--port", str(port),
        "--node-id", "store-1",
        "--failure-domain", "dc1/rack1/store-1",
        "--secret-file", str(root / credentials.SECRET_FILE_NAME),
        "--create-volume", "1",
    ]  # fmt: skip

    # From here on SIGTERM means what Ctrl-C means: stop the cluster, leave nothing behind.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    stopped_by_user = False
    with open(root / "store-1.log", "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=log, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        try:

            async def start() -> list[str]:
                await _wait_healthy(url, proc)
                return await _seed_demo(url, secret, root) if demo else []

            urls = run(start())
            click.echo(f"pinhole local cluster (data in {root}/)")
            click.echo(f"  store-1   {url}   log: {root}/store-1.log")
            click.echo(f"  secret    {root}/{credentials.SECRET_FILE_NAME}")
            for u in urls:
                click.echo(f"  demo      {u}")
            click.echo(f"try: pinhole volume list --node {url}    (Ctrl-C stops the cluster)")
            while proc.poll() is None:
                time.sleep(0.2)
        except KeyboardInterrupt:
            stopped_by_user = True
        finally:
            # Stop the node whatever happened; a second signal must not cut this short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if not stopped_by_user:
        raise CliError(
            f"the store node exited with status {proc.returncode}; see {root}/store-1.log"
        )
