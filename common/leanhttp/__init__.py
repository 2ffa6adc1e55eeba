"""Lean HTTP/1.1 server and client (asyncio Protocol + httptools) for the data path."""

from .client import (
    ClientResponse,
    ClientStatistics,
    FileBody,
    HttpClientError,
    HttpConnectError,
    HttpProtocolError,
    HttpResponseTooLarge,
    HttpTimeoutError,
    LeanHTTPClient,
)
from .message import (
    Handler,
    HeadHook,
    HttpLimits,
    Request,
    Response,
    encode_header_lines,
    error_response,
    guarded,
    json_response,
)
from .server import BodyLimit, LeanHTTPServer, ServerStatistics

__all__ = [
    "BodyLimit",
    "ClientResponse",
    "ClientStatistics",
    "FileBody",
    "Handler",
    "HeadHook",
    "HttpClientError",
    "HttpConnectError",
    "HttpLimits",
    "HttpProtocolError",
    "HttpResponseTooLarge",
    "HttpTimeoutError",
    "LeanHTTPClient",
    "LeanHTTPServer",
    "Request",
    "Response",
    "ServerStatistics",
    "encode_header_lines",
    "error_response",
    "guarded",
    "json_response",
]
