"""The store node's own handler served by aiohttp: the peer of "our own HTTP layer".

ARCHITECTURE.md's decision "Our own HTTP layer for the data path" rests on a comparison:
the same store handler behind aiohttp and behind common/leanhttp. This module keeps that
comparison measurable. It opens a data directory with the same `StoreNode` the real server
uses, builds the same `StoreHttpApi` (routes, credentials, error mapping, request
metrics), and only the HTTP layer differs: an aiohttp request is turned into the lean
server's `Request`, answered by `StoreHttpApi.handle`, and the `Response` written back by
aiohttp. The conversion is part of the aiohttp side's cost; it is about what the lean
server spends building its own `Request` (a header dict and one object).

Run as `python -m bench.peers.aiohttp_store --data DIR --port N --secret-file FILE`; the
process serves on 127.0.0.1 until SIGTERM/SIGINT, on uvloop like `pinhole store serve`.
`AiohttpStoreProcess` starts it as a child for `pinhole bench store`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable
from pathlib import Path
from types import TracebackType

from aiohttp import web

from bench.peers import ServerProcess, free_port
from common.credentials import Credentials, Purpose
from common.leanhttp import Request, Response
from common.signals import stop_event
from store.config import store_config
from store.http_api import StoreHttpApi
from store.memory import tune_allocator
from store.node import StoreNode

HOST = "127.0.0.1"
START_TIMEOUT_S = 120.0


def lean_request(request: web.BaseRequest, body: bytes) -> Request:
    """The lean server's view of an aiohttp request: lower-cased names, repeats joined."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        key = name.lower()
        prev = headers.get(key)
        headers[key] = value if prev is None else f"{prev}, {value}"
    version = f"{request.version.major}.{request.version.minor}"
    return Request(
        request.method,
        request.raw_path.partition("?")[0],
        request.query_string,
        headers,
        version,
        request.keep_alive,
        request.remote,
        body,
    )


def aiohttp_response(answer: Response) -> web.Response:
    """`answer` as aiohttp's response (head_lines, pre-encoded fields, are parsed back)."""
    headers = list(answer.headers)
    if answer.head_lines:
        for line in answer.head_lines.decode("latin-1").split("\r\n"):
            if line:
                name, _, value = line.partition(":")
                headers.append((name, value.strip()))
    # aiohttp's Response does not report a memoryview body's length up front: the
    # needle's view is copied into bytes (about 1 us for 20 KiB), a body it sizes at once.
    return web.Response(
        status=answer.status,
        body=bytes(answer.body) if isinstance(answer.body, memoryview) else answer.body,
        headers=headers,
        content_type=answer.content_type,
    )


def make_app(api: StoreHttpApi, *, body_bytes_max: int) -> web.Application:
    """One catch-all route: StoreHttpApi does all the routing, as on the lean server.
    `body_bytes_max` is the node's needle_data_bytes_max, the lean server's body limit."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read() if request.can_read_body else b""
        req = lean_request(request, body)
        hook = api.head_hook(req)
        if hook is not None:
            return aiohttp_response(hook)
        answer = api.handle(req)
        if isinstance(answer, Awaitable):
            answer = await answer
        return aiohttp_response(answer)

    app = web.Application(client_max_size=body_bytes_max)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def serve(data_dir: Path, port: int, credentials: Credentials) -> None:
    """Serves the node's volumes through aiohttp until SIGTERM or SIGINT."""
    tune_allocator()
    config = store_config({}, data_dir=str(data_dir), host=HOST, port=port)
    node = StoreNode(config, credentials=credentials)
    await node.start()
    api = StoreHttpApi(node, credentials=credentials)
    app = make_app(api, body_bytes_max=config.volume.needle_data_bytes_max)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        with stop_event() as stop:
            await web.TCPSite(runner, HOST, port, backlog=4096).start()
            print(f"aiohttp store peer listening on http://{HOST}:{port}", flush=True)
            await stop.wait()
    finally:
        await runner.cleanup()
        await node.close()


class AiohttpStoreProcess:
    """The aiohttp peer as a child process (same data directory and secret as the node)."""

    def __init__(self, data_dir: Path, secret_file: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.read_authorization = Credentials.from_secret(secret_file.read_bytes().strip()).header(
            Purpose.READ
        )
        self._server = ServerProcess(
            [
                sys.executable, "-m", "bench.peers.aiohttp_store",
                "--data", str(data_dir),
                "--port", str(self.port),
                "--secret-file", str(secret_file),
            ],
            name="aiohttp-store",
            log_path=log_path,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        return self._server.pid

    def __enter__(self) -> AiohttpStoreProcess:
        self._server.start(host=HOST, port=self.port, timeout_s=START_TIMEOUT_S)
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.stop(timeout_s=START_TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    args = parser.parse_args()
    import uvloop

    credentials = Credentials.from_secret(args.secret_file.read_bytes().strip())
    uvloop.run(serve(args.data, args.port, credentials))


if __name__ == "__main__":
    main()
