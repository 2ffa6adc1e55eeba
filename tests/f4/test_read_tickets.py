"""f4 read tickets (common/read_ticket.py): a healthy read of a migrated volume fetched by
the reader from the storage node holding the blob, the name node answering only a ticket.

Real storage node processes (`pinhole f4 node serve`, 4 of them holding the cell's 14
nodes) and a name node on its HTTP API; readers are replica.read (what caches and routers
run) and the cache node itself. Asserted on counters and bytes, never on timing."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest

from cache.config import CacheConfig
from cache.node import CacheNode
from common import credentials, read_ticket
from common.credentials import Credentials, Purpose
from common.leanhttp import LeanHTTPServer, Request, Response
from common.leanhttp.client import LeanHTTPClient
from f4.cell import Cell
from f4.config import F4Config, F4Node
from f4.erasure import STRIPE_BLOCKS
from f4.name_node import NameNode
from f4.name_server import running_name_node
from replica.errors import NeedleAbsent
from replica.read import needle_etag, read_from_replicas
from replica.ticket_batches import TicketBatches
from tests.f4.helpers import Blobs, random_blobs, sealed_volume
from tests.f4.test_node_service import NodeProcess

VID = 3
BLOCK_BYTES = 16 * 1024
BLOBS = 30


@dataclass
class Served:
    url: str  # the name node's
    node: NameNode
    procs: list[NodeProcess]
    secret: bytes
    blobs: Blobs

    def read_headers(self) -> tuple[tuple[str, str], ...]:
        creds = Credentials.for_service(self.secret, "cache")  # what a reader holds
        return (("Authorization", creds.header(Purpose.READ)),)

    def blob_url(self, key: int, alt: int, cookie: int) -> str:
        return f"{self.url}/n/{VID}/{key}/{alt}/{cookie:016x}"

    def holder(self, key: int, alt: int) -> NodeProcess:
        """The storage node process holding the blob's data block."""
        idx = self.node.reader.index(VID)
        entry = idx.entries[(key, alt)]
        name = idx.stripes[entry.stripe].nodes[entry.block]
        return next(p for p in self.procs if name in p.nodes)


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    return credentials.ensure_secret_file(tmp_path / "secret")


@pytest.fixture
def procs(tmp_path: Path, secret_file: Path) -> Iterator[list[NodeProcess]]:
    names = [f"n{i:02d}" for i in range(STRIPE_BLOCKS)]
    # 4 + 4 + 3 + 3 nodes: one process lost leaves every stripe readable (degraded).
    found = [NodeProcess(tmp_path, p, names[i::4], secret_file) for i, p in enumerate("abcd")]
    try:
        for p in found:
            p.start()
        yield found
    finally:
        for p in found:
            p.stop()


@pytest.fixture
def migrated(
    tmp_path: Path, secret_file: Path, procs: list[NodeProcess]
) -> tuple[F4Config, bytes, Blobs]:
    """A volume migrated onto the storage node processes: (config, secret, blobs)."""
    blobs = random_blobs(random.Random(12), BLOBS, size_max=6000)
    sealed_volume(tmp_path / "vols", VID, blobs)
    secret = secret_file.read_bytes().strip()
    nodes = tuple(sorted((F4Node(n, f"r{n}", p.url) for p in procs for n in p.nodes), key=str))
    config = F4Config(
        cell_root=tmp_path / "cell",
        haystack_dir=tmp_path / "vols",
        nodes=nodes,
        block_bytes=BLOCK_BYTES,
        rebuild_mb_s=0.0,
        age_s_min=0.0,
        name_port=0,
    )
    cell = Cell(config, credentials=Credentials.from_secret(secret))
    try:
        assert cell.migrate(VID)["blobs"] == len(blobs)
    finally:
        cell.close()
    return config, secret, blobs


@pytest.fixture
async def served(
    migrated: tuple[F4Config, bytes, Blobs], procs: list[NodeProcess]
) -> AsyncIterator[Served]:
    config, secret, blobs = migrated
    creds = Credentials.for_service(secret, "f4-name")
    async with running_name_node(config, credentials=creds) as (node, server):
        yield Served(f"http://127.0.0.1:{server.port}", node, procs, secret, blobs)


async def _node_counters(client: LeanHTTPClient, s: Served, name: str) -> int:
    """A storage node counter summed over the processes (their /metrics)."""
    admin = (("Authorization", Credentials.from_secret(s.secret).header(Purpose.ADMIN)),)
    total = 0.0
    prefix = f"pinhole_f4_node_{name}_total"
    for p in s.procs:
        resp = await client.request("GET", f"{p.url}/metrics", headers=admin)
        assert resp.status == 200
        for line in resp.body.decode().splitlines():
            if line.startswith(prefix):
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def _ticket(client: LeanHTTPClient, s: Served, key: int, alt: int, cookie: int) -> Any:
    """The name node's raw answer to a GET asking for a ticket."""
    headers = (*s.read_headers(), (read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE))
    return await client.request("GET", s.blob_url(key, alt, cookie), headers=headers)


def _with_query(url: str, **changes: str | None) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    for k, v in changes.items():
        if v is None:
            query.pop(k, None)
        else:
            query[k] = v
    return urlunsplit(parts._replace(query=urlencode(query)))


async def test_a_healthy_read_takes_a_ticket_and_the_name_node_relays_no_bytes(
    served: Served,
    client: LeanHTTPClient,
) -> None:
    s = served
    for (key, alt), (cookie, data) in s.blobs.items():
        read = await read_from_replicas(
            client, [s.url], VID, key, alt, cookie,
            headers=s.read_headers(), timeout_s=5.0, tickets=True,
        )  # fmt: skip
        assert read.data == data and read.ticketed and read.ticket_failures == 0
        assert read.etag == needle_etag(key, alt, cookie, data)
        assert read.served_by == s.url and not read.bad and not read.failed
    st = s.node.statistics()
    assert st["tickets_issued"] == len(s.blobs)
    assert st["healthy_reads"] == st["degraded_reads"] == st["bytes_served"] == 0
    assert await _node_counters(client, s, "tickets_accepted") == len(s.blobs)
    assert await _node_counters(client, s, "tickets_refused") == 0

    # The same bytes and ETag as the full read (a reader that asks for no ticket).
    (key, alt), (cookie, data) = next(iter(s.blobs.items()))
    full = await read_from_replicas(
        client, [s.url], VID, key, alt, cookie, headers=s.read_headers(), timeout_s=5.0
    )
    assert full.data == data and not full.ticketed
    assert full.etag == needle_etag(key, alt, cookie, data)
    assert s.node.statistics()["healthy_reads"] == 1
    # A HEAD, a range or a conditional GET is answered as without the header.
    asking = (*s.read_headers(), (read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE))
    ranged = await client.request(
        "GET", s.blob_url(key, alt, cookie), headers=(*asking, ("Range", "bytes=0-1"))
    )
    assert ranged.status == 206 and ranged.body == data[:2]
    assert s.node.statistics()["tickets_issued"] == len(s.blobs)


async def test_with_read_tickets_off_every_read_passes_through_the_name_node(
    migrated: tuple[F4Config, bytes, Blobs],
    procs: list[NodeProcess],
    client: LeanHTTPClient,
) -> None:
    config, secret, blobs = migrated
    creds = Credentials.for_service(secret, "f4-name")
    off = replace(config, read_tickets=False)
    async with running_name_node(off, credentials=creds) as (node, server):
        s = Served(f"http://127.0.0.1:{server.port}", node, procs, secret, blobs)
        for (key, alt), (cookie, data) in list(blobs.items())[:5]:
            read = await read_from_replicas(
                client, [s.url], VID, key, alt, cookie,
                headers=s.read_headers(), timeout_s=5.0, tickets=True,
            )  # fmt: skip
            assert read.data == data and not read.ticketed and read.ticket_failures == 0
        assert await _node_counters(client, s, "tickets_accepted") == 0
        st = node.statistics()
        assert st["tickets_issued"] == 0 and st["healthy_reads"] == 5


async def test_the_cache_reads_a_migrated_volume_on_tickets(
    served: Served, client: LeanHTTPClient
) -> None:
    s = served
    creds = Credentials.for_service(s.secret, "cache")
    cache = CacheNode(CacheConfig(node_id="c1"), credentials=creds, client=client)
    try:
        for (key, alt), (cookie, data) in list(s.blobs.items())[:5]:
            got = await cache.fetch((VID, key, alt, cookie), [s.url], admit=False)
            assert got.data == data and got.etag == needle_etag(key, alt, cookie, data)
    finally:
        await cache.close()
    st = cache.statistics()
    assert st.store_reads_ticketed == 5 and st.ticket_fallbacks == 0
    assert await _node_counters(client, s, "tickets_accepted") == 5


async def test_a_killed_storage_node_falls_back_to_the_full_read_byte_exact(
    served: Served,
    client: LeanHTTPClient,
) -> None:
    s = served
    by_holder: dict[str, int] = {}
    for key, alt in s.blobs:
        by_holder[s.holder(key, alt).url] = by_holder.get(s.holder(key, alt).url, 0) + 1
    victim = next(p for p in s.procs if p.url == max(by_holder, key=by_holder.__getitem__))
    victims = {ka for ka in s.blobs if s.holder(*ka) is victim}
    assert victims
    victim.kill()
    failures = 0
    for (key, alt), (cookie, data) in s.blobs.items():
        read = await read_from_replicas(
            client, [s.url], VID, key, alt, cookie,
            headers=s.read_headers(), timeout_s=5.0, tickets=True,
        )  # fmt: skip
        assert read.data == data and read.etag == needle_etag(key, alt, cookie, data)
        assert read.ticketed == ((key, alt) not in victims)
        failures += read.ticket_failures
    st = s.node.statistics()
    # The first read of the dead process's blobs had a ticket and fell back; the name node
    # then skipped the process (PROCESS_DOWN_S) and read the rest degraded at once.
    assert failures >= 1
    assert st["degraded_reads"] == len(victims)
    assert st["tickets_issued"] == len(s.blobs) - len(victims) + failures


async def test_absent_deleted_and_wrong_cookie_are_one_404_and_hand_out_no_key(
    served: Served,
    client: LeanHTTPClient,
) -> None:
    s = served
    items = list(s.blobs.items())
    (key, alt), (cookie, data) = items[0]
    wrong = await _ticket(client, s, key, alt, cookie ^ 1)
    absent = await _ticket(client, s, key + 999_999, alt, cookie)
    plain = await client.request("GET", s.blob_url(key, alt, cookie ^ 1), headers=s.read_headers())
    assert wrong.status == absent.status == plain.status == 404
    assert wrong.body == absent.body == plain.body
    assert read_ticket.TICKET_HEADER.lower() not in wrong.headers
    assert b"key" not in wrong.body and b"nonce" not in wrong.body

    before = await _ticket(client, s, key, alt, cookie)
    assert before.status == 200
    ticket = read_ticket.parse(before.body)
    write = (("Authorization", Credentials.from_secret(s.secret).header(Purpose.WRITE)),)
    deleted = await client.request("DELETE", f"{s.url}/n/{VID}/{key}/{alt}", headers=write)
    assert deleted.status == 200
    after = await _ticket(client, s, key, alt, cookie)
    assert after.status == 404 and after.body == absent.body
    with pytest.raises(NeedleAbsent):
        await read_from_replicas(
            client, [s.url], VID, key, alt, cookie,
            headers=s.read_headers(), timeout_s=5.0, tickets=True,
        )  # fmt: skip
    assert s.node.statistics()["tickets_issued"] == 1
    # The window, by design (docs/formats/f4.md): a ticket issued before the delete
    # returned still fetches the ciphertext until it expires, READ_TICKET_TTL_S at most.
    expires = int(parse_qs(urlsplit(ticket.url).query)["expires"][0])
    assert expires - time.time() <= read_ticket.READ_TICKET_TTL_S
    late = await client.request("GET", ticket.url)
    assert late.status == 200 and ticket.open(late.body, VID, key, alt) == data
    # ... and past its expiry it is refused (re-signed as expired: no sleeping).
    key_ = credentials.ticket_key(s.secret)
    parts = urlsplit(ticket.url)
    node, block = parts.path.split("/")[2:4]
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    past = int(time.time()) - 1
    sig = read_ticket.signature(key_, node, block, int(q["offset"]), int(q["length"]), past)
    expired = await client.request("GET", _with_query(ticket.url, expires=str(past), ticket=sig))
    assert expired.status == 403 and expired.headers["x-pinhole-error"] == "ticket_expired"


async def test_a_storage_node_takes_a_ticket_for_exactly_its_range(
    served: Served, client: LeanHTTPClient
) -> None:
    s = served
    (key, alt), (cookie, _) = next(iter(s.blobs.items()))
    resp = await _ticket(client, s, key, alt, cookie)
    assert resp.status == 200 and resp.headers["content-type"] == read_ticket.CONTENT_TYPE
    url = read_ticket.parse(resp.body).url
    q = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert (await client.request("GET", url)).status == 200
    node, block = urlsplit(url).path.split("/")[2:4]
    stripe_block = block.split(".")
    stripe_block[2] = f"b{(int(stripe_block[2][1:]) + 1) % STRIPE_BLOCKS}"
    other_block = url.replace(f"/{block}?", f"/{'.'.join(stripe_block)}?")
    flipped = q["ticket"][:-1] + ("A" if q["ticket"][-1] != "A" else "B")
    stranger = read_ticket.signature(
        credentials.ticket_key(b"x" * 32),
        node, block, int(q["offset"]), int(q["length"]), int(q["expires"]),
    )  # fmt: skip
    refused = {
        "another offset": _with_query(url, offset=str(int(q["offset"]) + 1)),
        "another length": _with_query(url, length=str(int(q["length"]) - 1)),
        "another block": other_block,
        "a flipped signature": _with_query(url, ticket=flipped),
        "another cluster's key": _with_query(url, ticket=stranger),
        "a later expiry": _with_query(url, expires=str(int(q["expires"]) + 60)),
        "an unchecked read": _with_query(url, checked=None),
        "no expiry": _with_query(url, expires=None),
    }
    for why, bad in refused.items():
        got = await client.request("GET", bad)
        assert got.status == 403, why
        assert got.headers["x-pinhole-error"] == "ticket_invalid", why
    # A ticket grants a GET and nothing else: not a delete of the block it names.
    delete = await client.request("DELETE", url)
    assert delete.status == 403
    assert (await client.request("GET", url)).status == 200
    # Without a ticket or a credential: 401 as before.
    bare = await client.request("GET", _with_query(url, ticket=None, expires=None))
    assert bare.status == 401
    assert await _node_counters(client, s, "tickets_refused") == len(refused) + 1
    assert await _node_counters(client, s, "tickets_accepted") == 2


class _Tamper:
    """A replica in front of the name node that spoils the tickets it passes on (`how`)
    and forwards everything else: what a reader does with a ticketed read that fails."""

    def __init__(self, client: LeanHTTPClient, s: Served, how: str) -> None:
        self.client = client
        self.upstream = s.url
        self.ticket_key = credentials.ticket_key(s.secret)
        self.how = how
        self.full_reads = 0

    async def handle(self, req: Request) -> Response:
        headers = tuple((k, v) for k, v in req.headers.items() if k in ("authorization",))
        asked = req.headers.get(read_ticket.TICKET_HEADER.lower())
        if asked:
            headers = (*headers, (read_ticket.TICKET_HEADER, asked))
        else:
            self.full_reads += 1
        resp = await self.client.request("GET", self.upstream + req.path, headers=headers)
        out = tuple((k, v) for k, v in resp.headers.items() if k in ("etag", "x-pinhole-error"))
        if resp.status == 200 and read_ticket.TICKET_HEADER.lower() in resp.headers:
            doc = json.loads(resp.body)
            if self.how == "key":  # the record then fails authentication
                doc["key"] = bytes(32).hex()
            elif self.how == "expired":  # signed right, expired: the storage node refuses it
                parts = urlsplit(doc["url"])
                node, block = parts.path.split("/")[2:4]
                q = {k: v[0] for k, v in parse_qs(parts.query).items()}
                past = int(time.time()) - 1
                sig = read_ticket.signature(
                    self.ticket_key, node, block, int(q["offset"]), int(q["length"]), past
                )
                doc["url"] = _with_query(doc["url"], expires=str(past), ticket=sig)
            elif self.how == "garbled":
                doc = {"v": 1}
            elif self.how == "https":  # a URL the reader's client does not speak
                doc["url"] = doc["url"].replace("http://", "https://", 1)
            out = ((read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE),)
            return Response(200, json.dumps(doc).encode(), out, read_ticket.CONTENT_TYPE)
        return Response(resp.status, resp.body, out, resp.headers.get("content-type", ""))


@pytest.mark.parametrize("how", ["key", "expired", "garbled", "https"])
async def test_a_ticketed_read_that_fails_is_read_in_full(
    served: Served, how: str, client: LeanHTTPClient
) -> None:
    s = served
    tamper = _Tamper(client, s, how)
    server = LeanHTTPServer(tamper.handle, name="tamper")
    await server.start("127.0.0.1", 0)
    try:
        front = f"http://127.0.0.1:{server.port}"
        for (key, alt), (cookie, data) in list(s.blobs.items())[:3]:
            read = await read_from_replicas(
                client, [front], VID, key, alt, cookie,
                headers=s.read_headers(), timeout_s=5.0, tickets=True,
            )  # fmt: skip
            assert read.data == data and read.etag == needle_etag(key, alt, cookie, data)
            assert not read.ticketed and read.ticket_failures == 1 and not read.bad
    finally:
        await server.close(grace_s=1.0)
    assert tamper.full_reads == 3
    assert s.node.statistics()["healthy_reads"] == 3


def test_ticket_documents_are_checked_before_use() -> None:
    good = read_ticket.issue(
        b"k" * 32, base_url="http://127.0.0.1:1", node="n00", block="v1.s0.b0.blk",
        offset=0, length=100, cut=(10, 50), secret=bytes(32), nonce=bytes(12), now=0.0,
    )  # fmt: skip
    ticket = read_ticket.parse(good)
    assert (ticket.length, ticket.cut_start, ticket.cut_length) == (100, 10, 50)
    doc = json.loads(good)
    assert good == json.dumps(doc, separators=(",", ":")).encode()  # compact JSON, in order
    assert doc == {
        "v": 1, "url": doc["url"], "length": 100, "cut": [10, 50], "key": "00" * 32,
        "nonce": "00" * 12,
    }  # fmt: skip
    quoted = read_ticket.issue(
        b"k" * 32, base_url='http://h"\\x', node="n00", block="v1.s0.b0.blk",
        offset=0, length=100, cut=(10, 50), secret=bytes(32), nonce=bytes(12), now=0.0,
    )  # fmt: skip
    assert json.loads(quoted)["url"].startswith('http://h"\\x/b/n00/')  # escaped, not broken
    for change in (
        {"v": 2},
        {"cut": [60, 50]},
        {"key": "00"},
        {"nonce": "zz"},
        {"url": "file:///etc/passwd"},
        {"length": -1},
        {"length": True},
    ):
        with pytest.raises(read_ticket.TicketInvalid):
            read_ticket.parse(json.dumps({**doc, **change}).encode())
    with pytest.raises(read_ticket.TicketInvalid):
        read_ticket.parse(b"[]")
    with pytest.raises(read_ticket.TicketInvalid):
        ticket.open(bytes(99), 1, 2, 3)  # not the range's length
    with pytest.raises(read_ticket.TicketInvalid):
        ticket.open(bytes(100), 1, 2, 3)  # not a record


def test_no_reader_credential_carries_the_ticket_key() -> None:
    secret = b"r" * 32
    for role in ("cache", "router", "api", "worker", "directory", "store"):
        held = Credentials.for_service(secret, role)
        assert held.ticket_key is None and not held.holds(Purpose.BLOCKS), role
    assert replace(Credentials.for_service(secret, "f4-node")).ticket_key == (
        credentials.ticket_key(secret)
    )


# -- tickets of concurrent misses in one request (POST /tickets, replica.ticket_batches) ------


async def _name_requests(client: LeanHTTPClient, s: Served) -> dict[str, int]:
    """The name node's requests by route, from its /metrics."""
    admin = (("Authorization", Credentials.from_secret(s.secret).header(Purpose.ADMIN)),)
    resp = await client.request("GET", f"{s.url}/metrics", headers=admin)
    assert resp.status == 200
    out: dict[str, int] = {}
    for line in resp.body.decode().splitlines():
        if line.startswith("pinhole_f4_name_requests_total{"):
            route = line.split('route="', 1)[1].split('"', 1)[0]
            out[route] = out.get(route, 0) + int(float(line.rsplit(" ", 1)[1]))
    return out


async def _read_all(
    client: LeanHTTPClient,
    url: str,
    s: Served,
    items: list[tuple[tuple[int, int], tuple[int, bytes]]],
    batches: TicketBatches,
) -> list[Any]:
    """The reads of `items` started together (NeedleAbsent returned, not raised)."""

    async def one(key: int, alt: int, cookie: int) -> Any:
        try:
            return await read_from_replicas(
                client, [url], VID, key, alt, cookie,
                headers=s.read_headers(), timeout_s=5.0, tickets=True, batches=batches,
            )  # fmt: skip
        except NeedleAbsent as e:
            return e

    return await asyncio.gather(*(one(k, a, c) for (k, a), (c, _) in items))


async def test_concurrent_misses_ask_for_their_tickets_in_one_request(
    served: Served, client: LeanHTTPClient
) -> None:
    s = served
    batches = TicketBatches()
    items = list(s.blobs.items())
    # The first ticket tells the reader that this replica is a name node.
    first = await _read_all(client, s.url, s, items[:1], batches)
    assert first[0].ticketed and batches.batches == 0
    before = await _name_requests(client, s)
    lookups_before = s.node.statistics()["key_lookup_batches"]
    reads = await _read_all(client, s.url, s, items[1:], batches)
    for read, (_, (_, data)) in zip(reads, items[1:], strict=True):
        assert read.data == data and read.ticketed and read.ticket_failures == 0
    after = await _name_requests(client, s)
    requests = sum(after.values()) - sum(before.values()) - 1  # not the /metrics GET
    # One GET in flight, the other misses queued behind it and sent in one POST.
    assert after.get("/tickets", 0) - before.get("/tickets", 0) == batches.batches >= 1
    assert requests < len(items) - 1
    assert batches.batched_reads == len(items) - 1 - (requests - batches.batches)
    st = s.node.statistics()
    assert st["ticket_batches"] == batches.batches
    assert st["tickets_issued"] == len(items)
    assert st["healthy_reads"] == st["degraded_reads"] == 0
    # Each request woke the key lookup thread at most once: a batch's keys went together.
    assert st["key_lookup_batches"] - lookups_before <= requests
    assert await _node_counters(client, s, "tickets_accepted") == len(items)


async def test_a_batch_answers_present_deleted_and_wrong_cookie_blobs_each_right(
    served: Served, client: LeanHTTPClient
) -> None:
    s = served
    items = list(s.blobs.items())
    (dk, da), (dc, _) = items[1]
    write = (("Authorization", Credentials.from_secret(s.secret).header(Purpose.WRITE)),)
    deleted = await client.request("DELETE", f"{s.url}/n/{VID}/{dk}/{da}", headers=write)
    assert deleted.status == 200
    (wk, wa), (wc, _) = items[2]
    (pk, pa), (pc, pdata) = items[3]
    paths = [
        f"/n/{VID}/{pk}/{pa}/{pc:016x}",  # present
        f"/n/{VID}/{dk}/{da}/{dc:016x}",  # deleted
        f"/n/{VID}/{wk}/{wa}/{wc ^ 1:016x}",  # wrong cookie
        f"/n/{VID}/{pk + 999_999}/{pa}/{pc:016x}",  # never existed
        f"/n/{VID + 1}/{pk}/{pa}/{pc:016x}",  # a volume the cell does not serve
    ]
    headers = (*s.read_headers(), ("Content-Type", "application/json"))
    resp = await client.request(
        "POST", f"{s.url}/tickets", headers=headers, body=read_ticket.batch_request(paths)
    )
    assert resp.status == 200 and resp.headers["content-type"] == read_ticket.BATCH_CONTENT_TYPE
    tickets = read_ticket.parse_batch_answer(resp.body, len(paths))
    assert tickets[0] is not None and all(t is None for t in tickets[1:])
    assert resp.body.count(b'"key"') == 1  # no key for anything but the present blob
    ranged = await client.request("GET", tickets[0].url)
    assert ranged.status == 200 and tickets[0].open(ranged.body, VID, pk, pa) == pdata

    # Through the reader, the four in one batch behind a first read: each its one answer.
    batches = TicketBatches()
    await _read_all(client, s.url, s, items[:1], batches)
    mixed = [items[3], items[1], ((wk, wa), (wc ^ 1, b"")), items[4]]
    got = await _read_all(client, s.url, s, [items[0], *mixed], batches)
    assert batches.batches >= 1 and batches.batched_reads >= 3
    assert got[1].data == pdata and got[1].ticketed
    assert isinstance(got[2], NeedleAbsent) and isinstance(got[3], NeedleAbsent)
    assert got[4].data == items[4][1][1] and got[4].ticketed
    plain = await client.request("GET", s.blob_url(wk, wa, wc ^ 1), headers=s.read_headers())
    gone = await client.request("GET", s.blob_url(dk, da, dc), headers=s.read_headers())
    assert plain.status == gone.status == 404 and plain.body == gone.body


async def test_a_malformed_or_oversize_batch_is_a_4xx(
    served: Served, client: LeanHTTPClient
) -> None:
    s = served
    (key, alt), (cookie, _) = next(iter(s.blobs.items()))
    path = f"/n/{VID}/{key}/{alt}/{cookie:016x}"
    headers = (*s.read_headers(), ("Content-Type", "application/json"))
    too_many = [path] * (read_ticket.TICKETS_PER_REQUEST_MAX + 1)
    cases = {
        b"not json": (400, "bad_request"),
        b"[]": (400, "bad_request"),
        b'{"v": 2, "reads": []}': (400, "bad_request"),
        b'{"v": 1, "reads": []}': (400, "bad_request"),
        b'{"v": 1, "reads": [3]}': (400, "bad_request"),
        b'{"v": 1, "reads": ["/n/3/x/0/00"]}': (400, "bad_request"),
        json.dumps({"v": 1, "reads": too_many}).encode(): (413, "too_many_reads"),
        b'{"v": 1, "reads": ["' + b"x" * 60_000 + b'"]}': (413, "too_many_reads"),
    }
    for body, (status, code) in cases.items():
        resp = await client.request("POST", f"{s.url}/tickets", headers=headers, body=body)
        assert resp.status == status, body[:40]
        assert json.loads(resp.body)["error"]["code"] == code, body[:40]
    ok = read_ticket.batch_request([path] * read_ticket.TICKETS_PER_REQUEST_MAX)
    bare = await client.request("POST", f"{s.url}/tickets", body=ok)
    assert bare.status == 401
    wrong = await client.request("GET", f"{s.url}/tickets", headers=s.read_headers())
    assert wrong.status == 405
    full = await client.request("POST", f"{s.url}/tickets", headers=headers, body=ok)
    assert full.status == 200
    assert len(read_ticket.parse_batch_answer(full.body, read_ticket.TICKETS_PER_REQUEST_MAX)) == (
        read_ticket.TICKETS_PER_REQUEST_MAX
    )
    assert s.node.statistics()["tickets_issued"] == read_ticket.TICKETS_PER_REQUEST_MAX


class _NoBatches:
    """A name node that forwards GETs and answers POST /tickets with `status`: 404 as one
    from before the route, 503 as one failing."""

    def __init__(self, client: LeanHTTPClient, s: Served, status: int) -> None:
        self.client = client
        self.upstream = s.url
        self.status = status
        self.posts = 0
        self.gets = 0

    async def handle(self, req: Request) -> Response:
        if req.method == "POST":
            self.posts += 1
            return Response(self.status, b'{"error":{"code":"x"}}', (), "application/json")
        self.gets += 1
        keep = ("authorization", read_ticket.TICKET_HEADER.lower())
        headers = tuple((k, v) for k, v in req.headers.items() if k in keep)
        resp = await self.client.request("GET", self.upstream + req.path, headers=headers)
        out = tuple(
            (k, v)
            for k, v in resp.headers.items()
            if k in ("etag", "x-pinhole-error", read_ticket.TICKET_HEADER.lower())
        )
        return Response(resp.status, resp.body, out, resp.headers.get("content-type", ""))


@pytest.mark.parametrize("status", [404, 503])
async def test_a_name_node_without_the_batch_route_gets_a_get_per_read(
    served: Served, status: int, client: LeanHTTPClient
) -> None:
    s = served
    older = _NoBatches(client, s, status)
    server = LeanHTTPServer(older.handle, name="older")
    await server.start("127.0.0.1", 0)
    try:
        front = f"http://127.0.0.1:{server.port}"
        batches = TicketBatches()
        items = list(s.blobs.items())
        for part in (items[:1], items[1:11], items[11:21]):
            reads = await _read_all(client, front, s, part, batches)
            for read, (_, (_, data)) in zip(reads, part, strict=True):
                assert read.data == data and read.ticketed and read.ticket_failures == 0
    finally:
        await server.close(grace_s=1.0)
    # Each read whose batch failed asked by its own GET. A 404 (no such route) is
    # remembered: no batch after it; a 503 is not: the next misses batch again.
    assert older.posts == batches.batches == (1 if status == 404 else 2)
    assert batches.batch_failures == batches.batches
    assert older.gets == 21
    assert s.node.statistics()["tickets_issued"] == 21
