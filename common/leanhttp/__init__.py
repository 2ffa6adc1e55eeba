"""Lean HTTP/1.1 server (asyncio Protocol + httptools) for the store node's data path."""

from .message import (
    Handler,
    HeadHook,
    HttpLimits,
    Request,
    Response,
    error_response,
    json_response,
)
from .server import BodyLimit, LeanHTTPServer, ServerStatistics

__all__ = [
    "BodyLimit",
    "Handler",
    "HeadHook",
    "HttpLimits",
    "LeanHTTPServer",
    "Request",
    "Response",
    "ServerStatistics",
    "error_response",
    "json_response",
]
