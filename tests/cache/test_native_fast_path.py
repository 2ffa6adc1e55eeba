"""The cache's fast path (a hit answered from the raw bytes of its read, `CacheHttpApi.fast`)
against the server's parser and handler: the same bytes on the wire, the same counters.

One cache node behind two lean servers over real sockets, one with the fast path and one
without, in front of a real store node. Every request of a matrix (cached and uncached
needles; GET and HEAD; validators, odd fields and spellings, wrong or missing credentials,
another version, odd paths, uncached reads that go to the store without being admitted) goes
to both on a fresh connection: the answers (less the Date line), the node's counters and
the request metrics must be identical, and only the plain hits may take the fast path.
"""

from __future__ import annotations

import dataclasses

import pytest

from cache.http_api import CacheHttpApi
from cache.server import http_limits
from common.credentials import Purpose
from common.leanhttp import LeanHTTPServer
from store import native
from tests.cache.conftest import SECRET, VID, Cache, Store
from tests.conftest import auth, creds
from tests.raw_http import DATE_LINE, ask, request_counts

READ = auth(SECRET, Purpose.READ)["Authorization"]
COOKIE = 0x0123456789ABCDEF

pytestmark = pytest.mark.skipif(
    native.request_parser() is None, reason="needs the C parser (PINHOLE_STORE_NATIVE=0 here)"
)


async def test_fast_and_parsed_answers_are_identical(cache: Cache, stores: list[Store]) -> None:
    store = stores[0]
    cached, uncached = 100, 200
    for key in (cached, uncached):
        await store.put(key, 0, COOKIE, b"photo-%d" % key * 50)
    # Admitted through the real miss path: a hit from now on.
    status, _, _ = await cache.get(cached, 0, COOKIE, [store.url])
    assert status == 200 and cache.node.lookup((VID, cached, 0, COOKIE)) is not None

    node = cache.node
    apis = [CacheHttpApi(node, credentials=creds(SECRET, "cache"), native=n) for n in (True, False)]
    fast_api, plain_api = apis
    assert fast_api.fast is not None and plain_api.fast is None
    fast_server, plain = (
        LeanHTTPServer(api.handle, limits=http_limits(node.config), fast=api.fast) for api in apis
    )
    for server in (fast_server, plain):
        await server.start("127.0.0.1", 0)
    try:
        etag = cache.node.lookup((VID, cached, 0, COOKIE)).etag  # type: ignore[union-attr]
        cred = f"Authorization: {READ}\r\n"
        no_admit = f"X-Pinhole-Replicas: {store.url}\r\nX-Pinhole-Admit: 0\r\n"
        requests: list[tuple[str, bool]] = []  # (raw, whether the fast path may take it)
        for method in ("GET", "HEAD"):
            hit = f"/c/{VID}/{cached}/0/{COOKIE:016x}"
            miss = f"/c/{VID}/{uncached}/0/{COOKIE:016x}"
            requests += [
                (f"{method} {hit} HTTP/1.1\r\n{cred}\r\n", True),
                (f"{method} {hit} HTTP/1.1\r\nHost: c\r\n{cred}X-Request-Id: r-1\r\n\r\n", True),
                (f"{method} {hit} HTTP/1.1\r\n{cred}{no_admit}\r\n", True),
                (f"{method} {hit} HTTP/1.1\r\n{cred}Connection: close\r\n\r\n", True),
                (f"{method} {hit} HTTP/1.1\r\n{cred}If-None-Match: {etag}\r\n\r\n", False),
                (f'{method} {hit} HTTP/1.1\r\n{cred}If-None-Match: "x"\r\n\r\n', False),
                (f"{method} {hit} HTTP/1.1\r\nAuthorization: Pinhole-Internal no\r\n\r\n", False),
                (f"{method} {hit} HTTP/1.1\r\n\r\n", False),
                (f"{method} {hit} HTTP/1.0\r\n{cred}\r\n", False),
                (f"{method} {hit}?x=1 HTTP/1.1\r\n{cred}\r\n", False),
                (f"{method} /c/0{VID}/{cached}/0/{COOKIE:016x} HTTP/1.1\r\n{cred}\r\n", False),
                (f"{method} /n/{VID}/{cached}/0/{COOKIE:016x} HTTP/1.1\r\n{cred}\r\n", False),
                (f"{method} {hit} HTTP/1.1\r\n{cred}{cred}\r\n", False),
                (f"{method} {miss} HTTP/1.1\r\n{cred}\r\n", False),  # a miss: 400, no replicas
                (f"{method} {miss} HTTP/1.1\r\n{cred}{no_admit}\r\n", False),  # from the store
            ]
        requests.append((f"DELETE {miss[:-19]} HTTP/1.1\r\n\r\n", False))  # 401: no credential
        for raw, may_be_fast in requests:
            before = dataclasses.asdict(cache.node.statistics())
            fast_before = fast_server.statistics().requests_fast
            fast = await ask(fast_server.port, raw.encode())
            middle = dataclasses.asdict(cache.node.statistics())
            took_fast = fast_server.statistics().requests_fast - fast_before
            slow = await ask(plain.port, raw.encode())
            after = dataclasses.asdict(cache.node.statistics())
            assert DATE_LINE.sub(b"", fast) == DATE_LINE.sub(b"", slow), raw
            assert {k: middle[k] - before[k] for k in before if isinstance(before[k], int)} == {
                k: after[k] - middle[k] for k in before if isinstance(before[k], int)
            }, raw
            assert took_fast == (1 if may_be_fast else 0), raw
        assert request_counts(fast_api.requests) == request_counts(plain_api.requests)
    finally:
        for server in (fast_server, plain):
            await server.close(grace_s=1)
