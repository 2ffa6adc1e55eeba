"""The lean services' request middleware: a request id, metrics and an access line.

`observed(handler, ...)` wraps a service's handler (outside its error middleware, so the
status counted is the one sent). A synchronous answer stays synchronous; an awaitable one
is awaited by one more coroutine frame inside the Task the server makes anyway. The id is
set in `request_ids.current` while the handler runs, and again at the start of that frame
inside the handler's Task, so the Task and the tasks it starts send it on; it is reset
when `handle` returns, so nothing the protocol callback's context starts later (a timer,
a background task) inherits a finished request's id (after a handler that raised, it is
left set for the server's log line of the failure).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from common import request_ids
from common.request_metrics import RequestObserver

from .message import FastAnswer, Handler, Request, Response, encode_response

__all__ = ["fast_answer", "observed"]


def observed(
    handler: Handler, observer: RequestObserver, route_of: Callable[[Request], str]
) -> Handler:
    """`handler`, counted, timed and logged by `observer` under `route_of(request)`."""
    perf = time.perf_counter
    set_current = request_ids.current.set
    reset_current = request_ids.current.reset
    accept = request_ids.accept
    done = observer.done
    key = request_ids.HEADER_KEY

    async def later(
        req: Request, rid: str, started: float, answer: Awaitable[Response]
    ) -> Response:
        set_current(rid)  # in the Task's own context
        status = 500
        try:
            resp = await answer
            status = resp.status
            return resp
        finally:
            done(rid, req.method, route_of(req), status, started)

    def handle(req: Request) -> Response | Awaitable[Response]:
        started = perf()
        rid = accept(req.headers.get(key))
        token = set_current(rid)
        try:
            answer = handler(req)
        except BaseException:
            # Left set: the server logs the failure next, in this context, with the id.
            done(rid, req.method, route_of(req), 500, started)
            raise
        reset_current(token)
        if isinstance(answer, Response):
            done(rid, req.method, route_of(req), answer.status, started)
            return answer
        return later(req, rid, started, answer)

    return handle


def fast_answer(
    observer: RequestObserver,
    resp: Response,
    *,
    head_only: bool,
    close: bool,
    date: bytes,
    request_id: str | None,
    route: str,
    started: float,
) -> FastAnswer:
    """A fast path's answer to a GET (or HEAD) framed as the server frames a handler's, the
    request counted, timed and logged as `observed` does (an id is made only for the access
    line)."""
    head, body, size, close = encode_response(resp, head_only, close, date)
    rid = "" if observer.access_log is None else request_ids.accept(request_id)
    observer.done(rid, "HEAD" if head_only else "GET", route, resp.status, started)
    return resp.status, head, body, size, close
