"""Request ids, JSON log lines and request metrics (common/request_ids.py, json_logs.py,
request_metrics.py, leanhttp/observe.py), through a real lean server and client."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Awaitable
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common import request_ids
from common.json_logs import ACCESS_LINES_MAX, AccessLog, JsonFormatter
from common.leanhttp import LeanHTTPClient, LeanHTTPServer, Request, Response
from common.leanhttp.observe import observed
from common.request_metrics import LATENCY_BUCKETS_S, RequestMetrics, RequestObserver


def test_accept_keeps_well_formed_ids_and_replaces_others() -> None:
    assert request_ids.accept("abc-123_x.y:z") == "abc-123_x.y:z"
    for bad in (None, "", "a b", 'a"b', "a\\b", "x" * (request_ids.REQUEST_ID_CHARS_MAX + 1)):
        new = request_ids.accept(bad)
        assert new != bad and request_ids.accept(new) == new
    assert request_ids.accept(None) != request_ids.accept(None)


def _parse(metrics: RequestMetrics) -> dict[str, object]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_request_metrics_count_by_route_and_status_class() -> None:
    m = RequestMetrics("pinhole_t")
    m.observe("GET", "/a/{id}", 200, 0.0002)
    m.observe("GET", "/a/{id}", 404, 0.003)
    m.observe("GET", "/a/{id}", 200, 20.0)  # above the last bound: +Inf only
    m.observe("BREW", "/a/{id}", 500, 0.0)  # an unknown method is "other"
    families = _parse(m)
    requests = families["pinhole_t_requests"]
    counts = {
        (s.labels["method"], s.labels["code"]): s.value
        for s in requests.samples  # type: ignore[attr-defined]
        if s.name.endswith("_total")
    }
    assert counts == {("GET", "2xx"): 2, ("GET", "4xx"): 1, ("other", "5xx"): 1}
    hist = families["pinhole_t_request_duration_seconds"]
    buckets = {
        s.labels["le"]: s.value
        for s in hist.samples  # type: ignore[attr-defined]
        if s.name.endswith("_bucket") and s.labels["method"] == "GET"
    }
    assert len(buckets) == len(LATENCY_BUCKETS_S) + 1
    assert buckets["0.0001"] == 0 and buckets["0.00025"] == 1 and buckets["0.005"] == 2
    assert buckets["10.0"] == 2 and buckets["+Inf"] == 3


async def test_access_log_writes_one_json_line_per_request_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        log = AccessLog("store", fd=fd)
        for i in range(ACCESS_LINES_MAX - 1):
            log.record(f"id-{i}", "GET", "/n/{volume}", 200, 0.0015)
        assert path.read_text() == ""  # held for the batch (no await in between)
        log.record("last", "PUT", "/n/{volume}", 201, 0.25)  # the batch is full: written
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        log.record("after", "BREW", "/n/{volume}", 500, 0.0)
        log.close()  # writes what is held
        lines_after = path.read_text().splitlines()
    finally:
        os.close(fd)
    assert len(lines) == ACCESS_LINES_MAX
    assert lines[-1]["request_id"] == "last" and lines[-1]["status"] == 201
    assert lines[-1]["duration_ms"] == 250.0 and lines[-1]["route"] == "/n/{volume}"
    assert set(lines[0]) == {
        "ts",
        "service",
        "event",
        "request_id",
        "method",
        "route",
        "status",
        "duration_ms",
    }
    assert json.loads(lines_after[-1])["method"] == "other"


def test_access_log_refuses_a_service_name_that_needs_escaping() -> None:
    with pytest.raises(ValueError):
        AccessLog('st"ore')


def test_json_formatter_carries_the_request_id_and_the_traceback() -> None:
    formatter = JsonFormatter("api")
    token = request_ids.current.set("rid-1")
    try:
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            record = logging.getLogger("t").makeRecord(
                "t", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info()
            )
        doc = json.loads(formatter.format(record))
    finally:
        request_ids.current.reset(token)
    assert doc["service"] == "api" and doc["request_id"] == "rid-1"
    assert doc["msg"] == "failed x" and doc["level"] == "error"
    assert "RuntimeError: boom" in doc["exc"]


async def test_the_id_travels_from_a_request_through_the_lean_client(tmp_path: Path) -> None:
    """Front answers by calling back (through the lean client) into back; back sees the
    id front was given, and both access logs carry it."""
    # This test's own requests carry no id of their own: a lean server's protocol callback
    # leaves the last request's id in the context it ran in, which an earlier test's
    # server may have shared with the context this test's task was copied from.
    request_ids.current.set(None)
    seen: list[str | None] = []
    logs = {name: tmp_path / f"{name}.log" for name in ("front", "back")}
    fds = {name: os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND) for name, p in logs.items()}
    back_log, front_log = AccessLog("back", fd=fds["back"]), AccessLog("front", fd=fds["front"])

    def back_handler(req: Request) -> Response:
        seen.append(req.headers.get(request_ids.HEADER_KEY))
        return Response(200, b"ok")

    back = LeanHTTPServer(
        observed(back_handler, RequestObserver(RequestMetrics("b"), back_log), lambda r: "/b")
    )
    await back.start()
    client = LeanHTTPClient()

    async def front_handler(req: Request) -> Response:
        answer = await client.request("GET", f"http://127.0.0.1:{back.port}/b")
        return Response(answer.status, answer.body)

    front_metrics = RequestMetrics("f")
    front = LeanHTTPServer(
        observed(front_handler, RequestObserver(front_metrics, front_log), lambda r: "/f")
    )
    await front.start()
    try:
        other = LeanHTTPClient()
        try:
            answer = await other.request(
                "GET",
                f"http://127.0.0.1:{front.port}/f",
                headers=(("X-Request-Id", "trace-me"),),
            )
            assert answer.status == 200
            await other.request("GET", f"http://127.0.0.1:{front.port}/f")
        finally:
            await other.close()
    finally:
        await front.close()
        await back.close()
        await client.close()
        back_log.close()
        front_log.close()
        for fd in fds.values():
            os.close(fd)
    assert seen[0] == "trace-me"
    assert seen[1] is not None and seen[1] != "trace-me"  # the front made one of its own
    for name in ("front", "back"):
        lines = [json.loads(line) for line in logs[name].read_text().splitlines()]
        assert [d["request_id"] for d in lines] == ["trace-me", seen[1]], name
        assert all(d["status"] == 200 and d["service"] == name for d in lines)
    counts = _parse(front_metrics)["f_requests"]
    totals = [s.value for s in counts.samples if s.name.endswith("_total")]  # type: ignore[attr-defined]
    assert totals == [2]


async def test_the_id_is_the_requests_only_while_it_is_handled() -> None:
    seen: dict[str, str | None] = {}

    def sync_handler(req: Request) -> Response:
        seen["sync"] = request_ids.current.get()
        return Response(200, b"")

    async def async_body() -> Response:
        await asyncio.sleep(0)
        seen["async"] = request_ids.current.get()
        return Response(200, b"")

    def async_handler(req: Request) -> Awaitable[Response]:
        return async_body()

    metrics = RequestMetrics("ids")
    for name, handler in (("sync", sync_handler), ("async", async_handler)):
        handle = observed(handler, RequestObserver(metrics, None), lambda r: "/x")
        req = Request("GET", "/x", "", {"x-request-id": f"req-{name}"}, "1.1", True, None)
        answer = handle(req)
        # What the protocol callback's context starts after handle returned (a timer, a
        # background task) does not inherit the finished request's id.
        assert request_ids.current.get() is None
        if not isinstance(answer, Response):
            answer = await asyncio.get_running_loop().create_task(answer)  # as the server does
        assert answer.status == 200
        assert seen[name] == f"req-{name}"
    assert request_ids.current.get() is None
