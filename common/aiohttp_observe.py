"""The aiohttp services' request middleware (the API, the directory, the workers' health
endpoint): the request id, request metrics and one access line per request, as
common/leanhttp/observe.py does for the lean services.

Put it first in the middleware list (outermost), so the status counted is the one the
error middleware made. The answer carries the id back in `X-Request-Id` when its head is
not already sent (a streamed answer prepared by its handler keeps its own head).
"""

from __future__ import annotations

import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from common import request_ids
from common.request_metrics import RequestObserver

__all__ = ["observe_middleware", "route_of"]


def route_of(request: web.Request) -> str:
    """The route template of a request: `/api/v1/media/{media_id}`, "unmatched" for a
    path no route takes (so raw paths never become label values)."""
    info = request.match_info
    if info.http_exception is not None:
        return "unmatched"
    resource = info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def observe_middleware(observer: RequestObserver) -> Middleware:
    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_ids.accept(request.headers.get(request_ids.HEADER))
        request_ids.current.set(rid)
        status = 500
        try:
            response = await handler(request)
            status = response.status
            if not response.prepared:
                response.headers[request_ids.HEADER] = rid
            return response
        except web.HTTPException as e:
            status = e.status
            raise
        finally:
            observer.done(rid, request.method, route_of(request), status, started)

    return observe
