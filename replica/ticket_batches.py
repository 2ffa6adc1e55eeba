"""Read tickets of concurrent misses asked for in one request per f4 name node.

A reader (replica.read, for a cache node or a router) asks an f4 name node for a read
ticket on the GET of the blob (common/read_ticket.py). Under load several misses wait on
the same name node at once, and each ticket costs both sides a request, an answer and
their parsing on the per-message path, which is where their CPU goes. So: while a ticket
request to a name node is in flight, further misses for it queue here; when it returns, up
to TICKETS_PER_REQUEST_MAX of the queued ones go in one `POST /tickets` (the first queued
reader sends it, for all of them). Its answer holds one ticket or null per read: the
reader redeems its ticket as it would one from its GET; null sends it to the plain GET
(no ticket header), whose answer is the one answer for absent, deleted and wrong-cookie
blobs, and the full read for everything else the name node reads itself.

Which replica URLs are name nodes is learned from their first ticket (a GET answered with
one): only those get batches, so store nodes are never sent a POST. A name node that has
no such route (404 or 405: an older one) is remembered and gets per-read GETs from then
on; any other failure of a batch (a refused connection, a timeout, a 5xx, an answer that
is not a batch) sends each of its readers to its own GET asking for a ticket, the path
without batches, which makes its own failover decisions.

Kept: two bounded sets of URLs (NAME_NODES_KNOWN_MAX each) and, per name node, the queue
of readers waiting right now. Never a ticket or a key beyond the request it came in.

A queued read waits for the request in flight at most QUEUE_WAIT_S: then the queue leaves
as a batch of its own, the request in flight still out. A ticket comes back well within
it; a request the name node answers with the whole blob (a degraded read, about 10 ms)
would otherwise hold every read queued behind it for its length (in `pinhole bench f4`
that made degraded reads' p99 3.7x healthy ones'). Then it waits for its batch: up to the
caller's `timeout_s` on that replica before its own GET (the fallback) would start.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Final

from common import read_ticket
from common.leanhttp.client import ClientResponse, HttpClientError, LeanHTTPClient

__all__ = ["NAME_NODES_KNOWN_MAX", "QUEUE_WAIT_S", "TicketBatches"]

# Name node URLs remembered (learned from tickets), and name nodes without POST /tickets;
# a full set is cleared (its URLs are learned again from the next tickets).
NAME_NODES_KNOWN_MAX: Final = 256
_NO_ROUTE: Final = (404, 405)  # what a name node without POST /tickets answers
# The longest a queued read waits for the ticket request in flight before the queue leaves
# as a batch of its own.
QUEUE_WAIT_S: Final = 0.004


class _Unbatched:
    """A queued read the batch did not answer: it makes its own GET."""


_UNBATCHED: Final = _Unbatched()
_Result = read_ticket.ReadTicket | None | _Unbatched


@dataclass(slots=True)
class _Lead:
    """Handed to the first queued read: send the batch for these (itself first)."""

    waiting: list[tuple[str, asyncio.Future[_Result | _Lead]]]


@dataclass(slots=True)
class _Base:
    in_flight: int = 0  # ticket requests (GETs and batches) to this name node now
    queued: list[tuple[str, asyncio.Future[_Result | _Lead]]] = field(default_factory=list)
    wait: asyncio.TimerHandle | None = None  # the queue leaves when it fires (QUEUE_WAIT_S)


class TicketBatches:
    """One per reader process (a cache node, a router), on its event loop."""

    def __init__(self, *, queue_wait_s: float = QUEUE_WAIT_S) -> None:
        self._queue_wait_s = queue_wait_s
        self._name_nodes: set[str] = set()
        self._no_route: set[str] = set()
        self._bases: dict[str, _Base] = {}
        # The batch's headers per caller's credential tuple (the client memoizes its
        # encoding per tuple, so the same tuple is handed back each time).
        self._posting: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
        self.batches = 0  # POST /tickets sent
        self.batched_reads = 0  # reads whose ticket was asked for in one
        self.batch_failures = 0  # batches whose reads went to their own GETs

    async def ask(
        self,
        client: LeanHTTPClient,
        base: str,
        path: str,
        *,
        asking: tuple[tuple[str, str], ...],
        credential: tuple[tuple[str, str], ...],
        timeout_s: float,
    ) -> ClientResponse | read_ticket.ReadTicket | None:
        """The ticket for the needle at `path` on the replica `base`: the answer to the GET
        asking for one (`asking`: the credential and the ticket header), a ticket from a
        batch (`credential` is its request's headers), or None when the batch had no
        ticket for it (the caller GETs it without the header). HttpClientError from the
        GET as without batches."""
        state = self._bases.get(base)
        if state is not None and state.in_flight and self._batches_to(base):
            got = await self._queue(client, base, state, path, credential, timeout_s)
            if not isinstance(got, _Unbatched):
                return got
        state = self._bases.setdefault(base, _Base())
        state.in_flight += 1
        try:
            resp = await client.request("GET", base + path, headers=asking, timeout_s=timeout_s)
        finally:
            self._done(base, state)
        if resp.status == 200 and _TICKET_ANSWER in resp.headers:
            self._learn(base)
        return resp

    def statistics(self) -> dict[str, int]:
        return {
            "ticket_batches": self.batches,
            "ticket_batched_reads": self.batched_reads,
            "ticket_batch_failures": self.batch_failures,
        }

    def _batches_to(self, base: str) -> bool:
        return base in self._name_nodes and base not in self._no_route

    def _learn(self, base: str) -> None:
        if base not in self._name_nodes:
            if len(self._name_nodes) >= NAME_NODES_KNOWN_MAX:
                self._name_nodes.clear()
            self._name_nodes.add(base)

    async def _queue(
        self,
        client: LeanHTTPClient,
        base: str,
        state: _Base,
        path: str,
        credential: tuple[tuple[str, str], ...],
        timeout_s: float,
    ) -> _Result:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_Result | _Lead] = loop.create_future()
        state.queued.append((path, future))
        if state.wait is None:
            state.wait = loop.call_later(self._queue_wait_s, self._waited, base, state)
        try:
            got = await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                lead = future.result()
                if isinstance(lead, _Lead):  # handed the lead, then cancelled: pass it on
                    _resolve(lead.waiting[1:], [_UNBATCHED] * len(lead.waiting))
                    self._done(base, state)
            raise
        if isinstance(got, _Lead):
            return await self._send(client, base, state, got.waiting, credential, timeout_s)
        return got

    async def _send(
        self,
        client: LeanHTTPClient,
        base: str,
        state: _Base,
        waiting: list[tuple[str, asyncio.Future[_Result | _Lead]]],
        credential: tuple[tuple[str, str], ...],
        timeout_s: float,
    ) -> _Result:
        """Sends the batch (this reader's read first), answers the others, returns ours.
        The batch was counted in flight when the lead was handed over (`_done`)."""
        results: list[_Result] = [_UNBATCHED] * len(waiting)
        self.batches += 1
        self.batched_reads += len(waiting)
        try:
            body = read_ticket.batch_request([p for p, _ in waiting])
            resp = await client.request(
                "POST",
                base + read_ticket.BATCH_PATH,
                headers=self._post_headers(credential),
                body=body,
                timeout_s=timeout_s,
            )
            if resp.status == 200:
                results = list(read_ticket.parse_batch_answer(resp.body, len(waiting)))
            elif resp.status in _NO_ROUTE:
                if len(self._no_route) >= NAME_NODES_KNOWN_MAX:
                    self._no_route.clear()
                self._no_route.add(base)
        except (HttpClientError, read_ticket.TicketInvalid):
            pass
        finally:
            if results[0] is _UNBATCHED:
                self.batch_failures += 1
            _resolve(waiting[1:], results[1:])
            self._done(base, state)
        return results[0]

    def _post_headers(self, credential: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        headers = self._posting.get(credential)
        if headers is None:
            if len(self._posting) >= _POSTING_MAX:
                self._posting.clear()
            headers = self._posting[credential] = (*credential, _JSON)
        return headers

    def _done(self, base: str, state: _Base) -> None:
        """A ticket request to `base` ended: when it was the last one in flight, hand the
        next batch's lead to the first queued read still waiting (the batch counts in
        flight from now). Several GETs may be in flight at first (before the reader knew
        `base` for a name node); batching only once all have returned keeps one request in
        flight, so the queue fills instead of leaving in batches of one."""
        state.in_flight -= 1
        if state.in_flight > 0 and len(state.queued) < read_ticket.TICKETS_PER_REQUEST_MAX:
            return
        self._hand_off(base, state)

    def _waited(self, base: str, state: _Base) -> None:
        """The queue waited QUEUE_WAIT_S for the request in flight: it leaves now."""
        state.wait = None
        if self._bases.get(base) is state:
            self._hand_off(base, state)

    def _hand_off(self, base: str, state: _Base) -> None:
        """Hands the next batch's lead to the first queued read still waiting (the batch
        counts in flight from now), or lets the queued reads GET their own."""
        if state.wait is not None:
            state.wait.cancel()
            state.wait = None
        queued = [q for q in state.queued if not q[1].done()]
        if queued and self._batches_to(base):
            take = read_ticket.TICKETS_PER_REQUEST_MAX
            batch, state.queued = queued[:take], queued[take:]
            state.in_flight += 1
            batch[0][1].set_result(_Lead(batch))
        elif queued:  # the name node turned out to have no batches: each GETs its own
            state.queued = []
            _resolve(queued, [_UNBATCHED] * len(queued))
        else:
            state.queued = []
        if state.in_flight == 0 and not state.queued and self._bases.get(base) is state:
            del self._bases[base]


_TICKET_ANSWER: Final = read_ticket.TICKET_HEADER.lower()
_JSON: Final = ("Content-Type", "application/json")
_POSTING_MAX: Final = 64


def _resolve(
    waiting: list[tuple[str, asyncio.Future[_Result | _Lead]]], results: list[_Result]
) -> None:
    for (_, future), result in zip(waiting, results, strict=False):
        if not future.done():
            future.set_result(result)
