"""Structured logs: JSON lines on stderr, one per event (`pinhole up` sends each service's
stderr to `<root>/logs/<name>.log`).

Every line has `ts` (UTC, ISO 8601 with milliseconds), `service` and, when the event happens
while a request is handled, its `request_id` (common/request_ids.py). Events from the
logging module add `level`, `logger`, `msg` and, with a traceback, `exc`.

Access lines (`AccessLog`, one per request) add `method`, `route` (the route template or
operation, never the raw path), `status` and `duration_ms`. They are formatted with one
`%` (every field is a number or a string that needs no escaping) and written in batches
of at most `ACCESS_LINES_MAX` lines or `ACCESS_FLUSH_S_MAX` seconds, so a request pays
about a microsecond for its line, not a logging call; a hard crash loses at most the lines
of the last `ACCESS_FLUSH_S_MAX`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import time
from typing import Any, Final

from common import request_ids

__all__ = ["ACCESS_FLUSH_S_MAX", "ACCESS_LINES_MAX", "AccessLog", "JsonFormatter", "setup"]

ACCESS_FLUSH_S_MAX: Final = 0.25
ACCESS_LINES_MAX: Final = 256
# Methods logged and counted by name; any other token becomes "other" (bounded labels).
KNOWN_METHODS: Final = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))


class _Clock:
    """ISO 8601 UTC timestamps, the seconds part formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def iso(self, t: float) -> str:
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((t - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """A logging record as one JSON object (see the module docstring)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._clock = _Clock()

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self._clock.iso(record.created),
            "service": self.service,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_ids.current.get()
        if rid is not None:
            doc["request_id"] = rid
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["exc"] = record.exc_text
        return json.dumps(doc, ensure_ascii=False, default=str)


def setup(level: str, *, service: str) -> None:
    """The root logger writes JSON lines to stderr at `level` ("info", "debug", ...)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))


_ACCESS_LINE: Final = (
    '{"ts":"%s","service":"%s","event":"access","request_id":"%s","method":"%s",'
    '"route":"%s","status":%d,"duration_ms":%.3f}\n'
)


class AccessLog:
    """One JSON line per request, written in batches to `fd` (stderr by default).

    `service` and the routes given to `record` must need no JSON escaping (they are names
    the service chooses); request ids are checked by `request_ids.accept`.
    """

    __slots__ = ("_clock", "_fd", "_handle", "_held", "_service", "lines_written")

    def __init__(self, service: str, *, fd: int = 2) -> None:
        if json.dumps(service) != f'"{service}"':
            raise ValueError(f"service name {service!r} needs escaping")
        self._service = service
        self._fd = fd
        self._held: list[tuple[float, str, str, str, int, float]] = []
        self._handle: asyncio.TimerHandle | None = None
        self._clock = _Clock()
        self.lines_written = 0

    def record(
        self, request_id: str, method: str, route: str, status: int, duration_s: float
    ) -> None:
        """Holds one request's line; it is formatted and written with the others of its
        batch (at most ACCESS_LINES_MAX lines or ACCESS_FLUSH_S_MAX seconds later)."""
        held = self._held
        held.append((time.time(), request_id, method, route, status, duration_s))
        if len(held) >= ACCESS_LINES_MAX:
            self.flush()
        elif self._handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._handle = loop.call_later(ACCESS_FLUSH_S_MAX, self.flush)

    def flush(self) -> None:
        """Writes the lines held (a page-cache write of at most a few tens of KiB)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        held = self._held
        if not held:
            return
        iso = self._clock.iso
        service = self._service
        known = KNOWN_METHODS
        data = "".join(
            [
                _ACCESS_LINE
                % (
                    iso(t),
                    service,
                    rid,
                    method if method in known else "other",
                    route,
                    status,
                    duration_s * 1000.0,
                )
                for t, rid, method, route, status, duration_s in held
            ]
        ).encode()
        self.lines_written += len(held)
        held.clear()
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # the log is gone (closed stderr): the lines are dropped
            view = view[n:]

    def close(self) -> None:
        self.flush()
