"""Reading one needle from its replicas, preferred first, with failover and checks.

``read_from_replicas`` is shared by the cache (on a miss) and the router (when the cache
node is down). It asks the replicas one after another, in the caller's order, with
``GET {replica}/n/{vid}/{key}/{alt}/{cookie:016x}``:

* 200 whose body matches the ETag the store sent -> the answer. The ETag is the needle's
  checksum: xxh3_64 of the data seeded with a hash of the needle header (``needle_etag``).
  Bodies up to ``ETAG_INLINE_BYTES_MAX`` (1 MiB) are hashed inline on the event loop:
  xxh3 runs at >10 GB/s (measured: 0.5 ms for 8 MiB), so 1 MiB costs ~60 us, less than a
  hand-off to a thread. Larger bodies (up to the client's response_bytes_max) are hashed
  in the default executor; xxhash releases the GIL, so the loop keeps serving.
* 200 whose body does not match its ETag, or 500 with ``X-Pinhole-Error: corrupt_needle``
  -> the copy is bad: recorded in ``bad`` (to be repaired), next replica.
* 404 ``not_found`` (absent, deleted, or wrong cookie) -> next replica: a clean 404 from
  one replica may mean that replica lost the needle. When a later replica has it, the
  replicas that answered 404 go into ``bad`` too (they are missing a copy). When none has
  it, ``NeedleAbsent``.
* Anything else (connect error, timeout, other 4xx/5xx such as 503 queue_full or 404
  volume_not_found) -> recorded in ``failed``, next replica.

With ``tickets=True`` (what caches and routers pass) each GET also carries
``X-Pinhole-Read-Ticket: v1``. Store nodes ignore it; an f4 name node may answer a read
ticket instead of the blob (common/read_ticket.py): the reader then GETs the blob's checked
range from the storage node that holds it (the ticket is that request's only credential),
opens the sealed record with the ticket's key and computes the ETag from the plaintext with
``needle_etag`` (the record's authentication already proved the bytes). The name node then
never relays the bytes. If anything about the ticketed read fails (the storage node down or
refusing, a corrupt range, a record that does not open, a malformed ticket), the same
replica is asked again without the header: the full read, healthy or degraded, exactly as
without tickets. Nothing of a ticket outlives the read: neither the ticket nor its key is
kept. With ``batches`` (a replica.ticket_batches.TicketBatches, one per reader process) the
tickets of concurrent misses for one name node are asked for in one request; a read the
batch has no ticket for is read with the plain GET (no header), as a store would be.

Each replica gets ``timeout_s``; a read costs at most ``len(replicas) * timeout_s`` (a
ticketed read that fails costs up to three of them on its replica: ticket, range, full
read).
Replica URLs are store base URLs such as ``http://127.0.0.1:8701`` (no trailing slash
needed).

``report_bad_replicas`` posts one repair report per bad replica to the directory
(``POST {directory_url}/repairs``, internal credential); it never raises.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from common import read_ticket
from common.credentials import Credentials, Purpose
from common.leanhttp.client import ClientResponse, HttpClientError, LeanHTTPClient
from replica.errors import NeedleAbsent, ReplicasUnavailable
from replica.ticket_batches import TicketBatches
from store.needle import CHECKSUM_BYTES, FOOTER_BYTES, encode_parts

__all__ = [
    "ETAG_INLINE_BYTES_MAX",
    "NeedleAbsent",
    "ReplicaRead",
    "ReplicasUnavailable",
    "needle_etag",
    "read_from_replicas",
    "report_bad_replicas",
]

log = logging.getLogger("pinhole.replica")

_ETAG_LEN = 18  # '"' + 16 hex digits + '"'
_CHECKSUM_START = FOOTER_BYTES - CHECKSUM_BYTES  # the footer ends with the u64 checksum
ETAG_INLINE_BYTES_MAX: Final = 1024 * 1024
# A ticketed read's record up to this long is opened (AES-GCM: ~120 us per MiB) on the
# event loop; a longer one in the default executor (the cryptography package releases the
# GIL while it decrypts).
OPEN_INLINE_BYTES_MAX: Final = 1024 * 1024
_TICKET_ASKED: Final = (read_ticket.TICKET_HEADER, read_ticket.TICKET_HEADER_VALUE)
_TICKET_ANSWER: Final = read_ticket.TICKET_HEADER.lower()
# Header tuples with the ticket header appended, per caller's tuple (callers build theirs
# once: the client memoizes its encoding per tuple, so this must hand back the same one).
_asking: dict[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]] = {}
_ASKING_MAX: Final = 64


@dataclass(frozen=True, slots=True)
class ReplicaRead:
    """A verified copy of a needle.

    data: the needle's bytes. etag: as the store sent it, quoted ('"<16 hex>"').
    served_by: the replica URL it came from. bad: replicas whose copy is corrupt or missing
    (repair them). failed: replicas tried before that did not answer usefully.
    ticketed: the bytes came from an f4 storage node on a read ticket.
    ticket_failures: ticketed reads that failed (then read in full) on the way.
    """

    data: bytes
    etag: str
    served_by: str
    bad: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    ticketed: bool = False
    ticket_failures: int = 0


def needle_etag(key: int, alt: int, cookie: int, data: bytes | bytearray | memoryview) -> str:
    """The store's ETag for this needle: its stored checksum as 16 quoted hex digits.

    The checksum is xxh3_64 of the data seeded with a hash of the needle's header (cookie,
    key, alt key, size: store/needle.py), so a body served under the wrong identity fails
    too. It is computed with the store's own encoder, so the two cannot drift apart.
    """
    _, footer = encode_parts(key=key, alt_key=alt, cookie=cookie, data=data)
    checksum = int.from_bytes(footer[_CHECKSUM_START:FOOTER_BYTES], "little")
    return f'"{checksum:016x}"'


async def read_from_replicas(
    client: LeanHTTPClient,
    replicas: Sequence[str],
    vid: int,
    key: int,
    alt: int,
    cookie: int,
    *,
    headers: tuple[tuple[str, str], ...],
    timeout_s: float,
    tickets: bool = False,
    batches: TicketBatches | None = None,
) -> ReplicaRead:
    """The needle from the first replica that serves a verified copy (see the module
    docstring). `headers` carries the read credential (stores answer 401 without it; build
    the tuple once: the client memoizes its encoding per tuple). `tickets`: accept f4 read
    tickets; `batches`: ask for them in batches too (with `tickets` only). Raises
    NeedleAbsent or ReplicasUnavailable (both carry ``bad`` and ``failed``)."""
    path = f"/n/{vid}/{key}/{alt}/{cookie:016x}"
    bad: list[str] = []
    failed: list[str] = []
    missing: list[str] = []
    problems: list[str] = []
    ticket_failures = 0
    ask = _asking_for(headers) if tickets else headers
    for replica in replicas:
        base = replica.rstrip("/")
        try:
            if batches is not None and tickets:
                got = await batches.ask(
                    client, base, path, asking=ask, credential=headers, timeout_s=timeout_s
                )
            else:
                got = await client.request("GET", base + path, headers=ask, timeout_s=timeout_s)
            if got is None:  # a batch without a ticket for it: the plain GET answers
                resp = await client.request(
                    "GET", base + path, headers=headers, timeout_s=timeout_s
                )
            elif isinstance(got, read_ticket.ReadTicket) or (
                got.status == 200 and _TICKET_ANSWER in got.headers
            ):
                data = await _redeem(client, got, vid, key, alt, path, timeout_s)
                if data is not None:
                    etag = await _etag(key, alt, cookie, data)
                    return ReplicaRead(
                        data, etag, replica, bad + missing, failed, True, ticket_failures
                    )
                ticket_failures += 1
                resp = await client.request(
                    "GET", base + path, headers=headers, timeout_s=timeout_s
                )
            else:
                resp = got
        except HttpClientError as exc:
            failed.append(replica)
            problems.append(f"{replica}: {exc}")
            continue
        status = resp.status
        if status == 200:
            etag = resp.headers.get("etag", "")
            body = resp.body
            actual = await _etag(key, alt, cookie, body)
            if len(etag) == _ETAG_LEN and actual == etag:
                return ReplicaRead(
                    resp.body, etag, replica, bad + missing, failed, False, ticket_failures
                )
            bad.append(replica)
            problems.append(f"{replica}: body does not match its ETag {etag!r}")
            log.warning(
                "replica %s served needle %s with a body not matching its ETag", replica, path
            )
            continue
        code = resp.headers.get("x-pinhole-error", "")
        if status == 404 and code in ("not_found", ""):
            missing.append(replica)
            continue
        if status == 500 and code == "corrupt_needle":
            bad.append(replica)
            problems.append(f"{replica}: corrupt needle")
            continue
        failed.append(replica)
        problems.append(f"{replica}: HTTP {status} {code}".rstrip())
    if missing:
        raise NeedleAbsent(f"needle {path} not found", bad=bad, failed=failed)
    detail = "; ".join(problems) or "no replicas given"
    raise ReplicasUnavailable(f"no replica served {path}: {detail}", bad=bad, failed=failed)


def _asking_for(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    ask = _asking.get(headers)
    if ask is None:
        if len(_asking) >= _ASKING_MAX:
            _asking.clear()
        ask = _asking[headers] = (*headers, _TICKET_ASKED)
    return ask


async def _etag(key: int, alt: int, cookie: int, data: bytes) -> str:
    if len(data) <= ETAG_INLINE_BYTES_MAX:
        return needle_etag(key, alt, cookie, data)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, needle_etag, key, alt, cookie, data)


async def _redeem(
    client: LeanHTTPClient,
    answer: ClientResponse | read_ticket.ReadTicket,
    vid: int,
    key: int,
    alt: int,
    path: str,
    timeout_s: float,
) -> bytes | None:
    """The plaintext a read ticket (a GET's answer, or one from a batch) leads to, or None
    when the ticketed read failed (logged; the caller reads the blob in full instead). The
    request carries no credential."""
    try:
        if isinstance(answer, read_ticket.ReadTicket):
            ticket = answer
        else:
            ticket = read_ticket.parse(answer.body)
        resp = await client.request("GET", ticket.url, timeout_s=timeout_s)
        if resp.status != 200:
            code = resp.headers.get("x-pinhole-error", "")
            raise read_ticket.TicketInvalid(f"the storage node answered {resp.status} {code}")
        if ticket.cut_length <= OPEN_INLINE_BYTES_MAX:
            return ticket.open(resp.body, vid, key, alt)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, ticket.open, resp.body, vid, key, alt)
    except (ValueError, HttpClientError) as exc:  # TicketInvalid, a URL the client refuses
        log.info("needle %s: the ticketed read failed (%s); reading it in full", path, exc)
        return None


async def report_bad_replicas(
    client: LeanHTTPClient,
    directory_url: str,
    *,
    credentials: Credentials,
    volume_id: int,
    key: int,
    alt_key: int,
    replicas: Sequence[str],
    timeout_s: float = 2.0,
) -> int:
    """Posts ``{volume_id, key, alt_key, node_id, url, reason: "read"}`` to the directory's
    ``/repairs`` for each replica. Callers know replicas by URL, the directory by node id:
    the ids come from ``GET {directory_url}/volumes/{volume_id}`` (the replica's URL is sent
    as node_id when that lookup fails). Returns how many reports the directory accepted
    (2xx); failures are logged, never raised (a repair report is best effort: the store's
    scrubber finds the rest)."""
    if not directory_url or not replicas:
        return 0
    base = directory_url.rstrip("/")
    auth = ("Authorization", credentials.header(Purpose.READ))
    node_ids = await _node_ids(client, base, volume_id, (auth,), timeout_s)
    headers = (auth, ("Content-Type", "application/json"))
    accepted = 0
    for replica in replicas:
        url = replica.rstrip("/")
        body = json.dumps(
            {
                "volume_id": volume_id,
                "key": key,
                "alt_key": alt_key,
                "node_id": node_ids.get(url, url),
                "url": url,
                "reason": "read",
            }
        ).encode()
        try:
            resp = await client.request(
                "POST", base + "/repairs", headers=headers, body=body, timeout_s=timeout_s
            )
        except HttpClientError as exc:
            log.warning("repair report for %s to %s failed: %s", replica, base, exc)
            continue
        if 200 <= resp.status < 300:
            accepted += 1
        else:
            log.warning(
                "repair report for %s refused by %s: HTTP %d %s",
                replica,
                base,
                resp.status,
                resp.body[:200].decode("utf-8", "replace"),
            )
    return accepted


async def _node_ids(
    client: LeanHTTPClient,
    directory_url: str,
    volume_id: int,
    headers: tuple[tuple[str, str], ...],
    timeout_s: float,
) -> dict[str, str]:
    """Replica URL (no trailing slash) -> node id, from the directory's view of the volume;
    empty when the directory cannot say."""
    url = f"{directory_url}/volumes/{volume_id}"
    try:
        resp = await client.request("GET", url, headers=headers, timeout_s=timeout_s)
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}")
        return {
            str(r["url"]).rstrip("/"): str(r["node_id"]) for r in json.loads(resp.body)["replicas"]
        }
    except (HttpClientError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot map replica URLs to node ids via %s: %s", url, exc)
        return {}
