"""Request ids: one id follows a request across services (API -> directory -> store,
router -> cache -> store) in the `X-Request-Id` header and in every service's access log.

A service takes the caller's id when it is well formed (1 to `REQUEST_ID_CHARS_MAX` of
`[A-Za-z0-9._:-]`, so it is safe in a JSON string and a header without escaping) and makes
one otherwise. The id of the request being handled lives in the context variable `current`:
tasks started by the handler inherit it, and every internal client sends it (the lean
client in `common/leanhttp/client.py`, aiohttp sessions through `trace_config()`).
"""

from __future__ import annotations

import itertools
import os
import re
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Final

import aiohttp

__all__ = ["HEADER", "HEADER_KEY", "REQUEST_ID_CHARS_MAX", "accept", "current", "trace_config"]

HEADER: Final = "X-Request-Id"
HEADER_KEY: Final = "x-request-id"  # as the lean server's Request.headers holds it
REQUEST_ID_CHARS_MAX: Final = 128

_well_formed = re.compile(rf"[A-Za-z0-9._:-]{{1,{REQUEST_ID_CHARS_MAX}}}").fullmatch
# Ids only need to be unique, not unguessable: a random prefix per process and a counter
# (a third of the cost of drawing random bits per request).
_prefix = os.urandom(6).hex()
_serial = itertools.count(1)

current: ContextVar[str | None] = ContextVar("pinhole_request_id", default=None)


def accept(value: str | None) -> str:
    """The caller's id when it is well formed, else a new one (12 hex digits of this
    process, "-", a serial number in hex)."""
    if value is not None and _well_formed(value) is not None:
        return value
    return f"{_prefix}-{next(_serial):x}"


async def _add_header(
    session: aiohttp.ClientSession,
    context: SimpleNamespace,
    params: aiohttp.TraceRequestStartParams,
) -> None:
    rid = current.get()
    if rid is not None and HEADER not in params.headers:
        params.headers[HEADER] = rid


def trace_config() -> aiohttp.TraceConfig:
    """For `aiohttp.ClientSession(trace_configs=[...])`: every request the session sends
    carries the id of the request being handled, if any."""
    config = aiohttp.TraceConfig()
    config.on_request_start.append(_add_header)
    return config
