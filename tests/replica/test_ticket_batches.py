"""replica.ticket_batches against a real LeanHTTPServer standing in for a name node whose
answers the test releases one by one: who queues, who leads a batch, what a cancelled
read leaves behind. Asserted on what the server received, never on timing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

import pytest

from common import read_ticket
from common.leanhttp import LeanHTTPServer, Request, Response
from common.leanhttp.client import ClientResponse, LeanHTTPClient
from replica.ticket_batches import TicketBatches

TICKET = read_ticket.issue(
    b"k" * 32, base_url="http://127.0.0.1:1", node="n00", block="v1.s0.b0.blk",
    offset=0, length=100, cut=(10, 50), secret=bytes(32), nonce=bytes(12), now=0.0,
)  # fmt: skip
ASKING = (("Authorization", "x"), (read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE))
CREDENTIAL = (("Authorization", "x"),)


class _HeldNameNode:
    """Answers every GET with a ticket and every POST /tickets with one ticket per read;
    each answer waits until the test releases it (`release`)."""

    def __init__(self) -> None:
        self.gets: list[str] = []
        self.posts: list[list[str]] = []
        self.plain_gets = 0
        self._gates: asyncio.Queue[asyncio.Event] = asyncio.Queue()
        self.waiting = 0

    async def handle(self, req: Request) -> Response:
        gate = asyncio.Event()
        self.waiting += 1
        await self._gates.put(gate)
        await gate.wait()
        self.waiting -= 1
        if req.method == "POST":
            reads = json.loads(req.body)["reads"]
            self.posts.append(reads)
            return Response(
                200, read_ticket.batch_answer([TICKET] * len(reads)), (), "application/json"
            )
        if read_ticket.TICKET_HEADER.lower() not in req.headers:
            self.plain_gets += 1
            return Response(404, b"{}", (), "application/json")
        self.gets.append(req.path)
        answer = ((read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE),)
        return Response(200, TICKET, answer, read_ticket.CONTENT_TYPE)

    async def release(self) -> None:
        """Lets the oldest held request answer."""
        (await self._gates.get()).set()


@pytest.fixture
async def held() -> AsyncIterator[tuple[_HeldNameNode, str, LeanHTTPClient]]:
    node = _HeldNameNode()
    server = LeanHTTPServer(node.handle, name="held")
    await server.start("127.0.0.1", 0)
    client = LeanHTTPClient()
    try:
        yield node, f"http://127.0.0.1:{server.port}", client
    finally:
        await client.close()
        await server.close(grace_s=1.0)


async def _until(cond: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if cond():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the condition never held")


def _ask(b: TicketBatches, client: LeanHTTPClient, base: str, path: str) -> asyncio.Task[object]:
    return asyncio.create_task(
        b.ask(client, base, path, asking=ASKING, credential=CREDENTIAL, timeout_s=5.0)
    )


async def test_queued_reads_go_in_one_batch_and_a_cancelled_one_is_left_out(
    held: tuple[_HeldNameNode, str, LeanHTTPClient],
) -> None:
    node, base, client = held
    b = TicketBatches(queue_wait_s=60.0)  # the queue waits for the test's release
    first = _ask(b, client, base, "/n/1/1/0/0000000000000001")
    await node.release()
    assert isinstance(await first, ClientResponse)  # the GET's answer: base is a name node
    a = _ask(b, client, base, "/n/1/2/0/0000000000000001")
    await _until(lambda: node.waiting == 1)
    queued = [_ask(b, client, base, f"/n/1/{k}/0/0000000000000001") for k in (3, 4, 5)]
    await asyncio.sleep(0)
    queued[1].cancel()
    await node.release()  # the GET in flight returns: the queue leaves in one batch
    assert isinstance(await a, ClientResponse)
    await _until(lambda: node.waiting == 1)
    await node.release()
    got = [await queued[0], await queued[2]]
    assert all(isinstance(t, read_ticket.ReadTicket) for t in got)
    with pytest.raises(asyncio.CancelledError):
        await queued[1]
    assert node.posts == [["/n/1/3/0/0000000000000001", "/n/1/5/0/0000000000000001"]]
    assert len(node.gets) == 2 and b.batches == 1 and b.batched_reads == 2
    assert not b._bases  # nothing kept once nothing is in flight


async def test_a_leader_cancelled_during_its_batch_sends_the_others_to_their_gets(
    held: tuple[_HeldNameNode, str, LeanHTTPClient],
) -> None:
    node, base, client = held
    b = TicketBatches(queue_wait_s=60.0)  # the queue waits for the test's release
    first = _ask(b, client, base, "/n/1/1/0/0000000000000001")
    await node.release()
    await first
    a = _ask(b, client, base, "/n/1/2/0/0000000000000001")
    await _until(lambda: node.waiting == 1)
    lead = _ask(b, client, base, "/n/1/3/0/0000000000000001")
    other = _ask(b, client, base, "/n/1/4/0/0000000000000001")
    await asyncio.sleep(0)
    await node.release()
    await a
    await _until(lambda: node.waiting == 1)  # the batch is in flight, held
    lead.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lead
    await _until(lambda: node.waiting == 2)  # the other read asks by its own GET
    await node.release()
    await node.release()
    assert isinstance(await other, ClientResponse)
    assert node.gets[-1] == "/n/1/4/0/0000000000000001"
    assert b.batch_failures == 1
    await _until(lambda: not b._bases)


async def test_a_queue_leaves_without_waiting_longer_for_a_slow_request_in_flight(
    held: tuple[_HeldNameNode, str, LeanHTTPClient],
) -> None:
    """A request in flight that the name node is slow to answer (a degraded read) does not
    hold the reads queued behind it past the queue's wait: they go as a batch while it is
    still out."""
    node, base, client = held
    b = TicketBatches(queue_wait_s=0.01)
    first = _ask(b, client, base, "/n/1/1/0/0000000000000001")
    await node.release()
    await first
    slow = _ask(b, client, base, "/n/1/2/0/0000000000000001")
    await _until(lambda: node.waiting == 1)
    queued = [_ask(b, client, base, f"/n/1/{k}/0/0000000000000001") for k in (3, 4)]
    await _until(lambda: node.waiting == 2)  # the batch is out, the slow GET still held
    assert not slow.done()
    await node.release()  # the slow GET (held first)
    await node.release()  # the batch
    assert isinstance(await slow, ClientResponse)
    got = [await t for t in queued]
    assert all(isinstance(t, read_ticket.ReadTicket) for t in got)
    assert node.posts == [["/n/1/3/0/0000000000000001", "/n/1/4/0/0000000000000001"]]
    await _until(lambda: not b._bases)
