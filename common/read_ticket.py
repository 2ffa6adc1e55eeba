"""f4 read tickets: a healthy f4 read without the name node relaying the bytes.

A reader (replica.read, for caches and routers) that asks the f4 name node for a blob with
`X-Pinhole-Read-Ticket: v1` may get, instead of the blob, a ticket: 200 with the same
header in the answer and a small JSON document (docs/formats/f4.md):

    {"v": 1, "url": ".../b/{node}/{block}?offset=O&length=L&checked=1&expires=E&ticket=S",
     "length": L, "cut": [C, N], "key": "<64 hex>", "nonce": "<24 hex>"}

The name node checked the cookie, looked the blob up in its index and fetched its key, as
for a read. The reader then makes one request, the URL (no credential: the ticket is the
credential), to the storage node that holds the blob's data block, which checks the range
against the block's sidecar as for any checked read; it cuts the sealed record out of the
L bytes (`cut`: offset and length within them), opens it with the key (common.sealed,
AES-256-GCM, the blob id as associated data) and computes the ETag from the plaintext as
a store would (replica.read.needle_etag): the same bytes, the same ETag as the full read.

The signature S: URL-safe base64 (unpadded, 22 characters) of the first 16 bytes of
HMAC-SHA256(ticket key, "t1|" node "|" block "|" offset "|" length "|" expires). The
ticket key is derived from the cluster secret for this purpose alone
(common.credentials.ticket_key); the name node signs with it and the storage nodes check
with it; caches and routers never hold it, nor the blocks credential. A signature grants
one thing: GET of exactly that checked range of that block, until `expires` (Unix
seconds, the storage node's clock): another range, another block, another method or an
expired ticket is refused with 403 (`ticket_invalid`, `ticket_expired`).

Invariants:
- A ticket lives READ_TICKET_TTL_S at most. A blob's key is handed out only inside a
  ticket, at the moment of the read, after the same cookie check and key lookup as a full
  read: an absent blob, a deleted one and a wrong cookie are the same 404 and hand out
  nothing. A reader uses a ticket once, at once, and keeps neither it nor its key.
- A delete bumps nothing: a ticket issued before a delete returned can still fetch the
  ciphertext (and, with its key, the blob) until it expires, READ_TICKET_TTL_S at most;
  a read started before a delete completing just after it is the same thing. No ticket
  is issued once the delete has returned (the key is gone).
- Any failure of the ticketed read (the storage node down or refusing, a corrupt range, a
  record that fails authentication, a malformed ticket) makes the reader read the blob
  from the name node in full, the read it would have made without tickets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
from typing import Any, Final, NamedTuple

import orjson

from common.sealed import KEY_BYTES, NONCE_BYTES, associated_data, open_record

VERSION: Final = 1
# The request header a reader sends to accept a ticket and the answer header that marks
# one (its value is the version).
TICKET_HEADER: Final = "X-Pinhole-Read-Ticket"
TICKET_HEADER_VALUE: Final = f"v{VERSION}"
CONTENT_TYPE: Final = "application/vnd.pinhole.read-ticket+json"
# How long a ticket is good for, from its issue. It bounds how long after a delete a
# ticket issued before it may still fetch the blob's ciphertext. Clocks of the name node
# and the storage nodes must agree within it (a storage node ahead by more refuses every
# ticket: reads then all go through the name node, correct but slower).
READ_TICKET_TTL_S: Final = 5
SIGNATURE_BYTES: Final = 16
SIGNATURE_CHARS: Final = 22  # base64 of 16 bytes, unpadded
EXPIRY_DIGITS_MAX: Final = 12
# A ticket document is a few hundred bytes; anything longer is not one.
TICKET_BYTES_MAX: Final = 4096

assert len(base64.urlsafe_b64encode(bytes(SIGNATURE_BYTES)).rstrip(b"=")) == SIGNATURE_CHARS


class TicketInvalid(ValueError):
    """A ticket document that is malformed, or a record it does not open."""


class TicketRefused(ValueError):
    """A signature a storage node does not accept; `code` is ticket_invalid or
    ticket_expired."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def signature(key: bytes, node: str, block: str, offset: int, length: int, expires: int) -> str:
    message = b"t1|%s|%s|%d|%d|%d" % (node.encode(), block.encode(), offset, length, expires)
    mac = hmac.digest(key, message, hashlib.sha256)[:SIGNATURE_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def expiry_at(now: float) -> int:
    """Rounded down: a ticket is good until its expiry second included, so for at most
    READ_TICKET_TTL_S after `now` (and at least one second less)."""
    return math.floor(now + READ_TICKET_TTL_S)


def check(
    key: bytes,
    node: str,
    block: str,
    offset: int,
    length: int,
    expires: str,
    ticket: str,
    *,
    now: float,
) -> None:
    """Whether a ticketed request may read exactly this range now; TicketRefused if not.
    The signature is checked first: an expired forgery is a forgery."""
    if not expires.isdigit() or len(expires) > EXPIRY_DIGITS_MAX or len(ticket) != SIGNATURE_CHARS:
        raise TicketRefused("ticket_invalid", "a malformed read ticket")
    expiry = int(expires)
    good = signature(key, node, block, offset, length, expiry)
    if not hmac.compare_digest(good, ticket):
        raise TicketRefused("ticket_invalid", "the read ticket is not for this range")
    if expiry < now:
        raise TicketRefused("ticket_expired", "the read ticket has expired")


def issue(
    key: bytes,
    *,
    base_url: str,
    node: str,
    block: str,
    offset: int,
    length: int,
    cut: tuple[int, int],
    secret: bytes,
    nonce: bytes,
    now: float,
) -> bytes:
    """The ticket document (what the name node answers) for reading `length` bytes at
    `offset` of `block` on `node` (served at `base_url`), the record at `cut` in them."""
    expires = expiry_at(now)
    sig = signature(key, node, block, offset, length, expires)
    url = (
        f"{base_url}/b/{node}/{block}?offset={offset}&length={length}&checked=1"
        f"&expires={expires}&ticket={sig}"
    )
    # The bytes json.dumps(..., separators=(",", ":")) writes for the document, formatted
    # here (a quarter of its cost, on every ticket): only the URL needs JSON's escaping.
    start, count = cut
    return (
        f'{{"v":{VERSION},"url":{json.dumps(url)},"length":{length:d},'
        f'"cut":[{start:d},{count:d}],"key":"{secret.hex()}","nonce":"{nonce.hex()}"}}'
    ).encode()


class ReadTicket(NamedTuple):
    """A ticket as the reader uses it (a tuple: a third of a frozen dataclass's cost to
    make, on every ticketed read)."""

    url: str
    length: int  # of the range the URL answers
    cut_start: int  # the sealed record within it
    cut_length: int
    secret: bytes
    nonce: bytes

    def open(self, data: bytes, volume: int, key: int, alt_key: int) -> bytes:
        """The blob's plaintext from the bytes the URL answered; TicketInvalid when they are
        not `length` bytes or the record does not open (RecordInvalid underneath)."""
        if len(data) != self.length:
            raise TicketInvalid(f"{len(data)} bytes answered for a range of {self.length}")
        record = memoryview(data)[self.cut_start : self.cut_start + self.cut_length]
        try:
            return open_record(
                self.secret, self.nonce, associated_data(volume, key, alt_key), record
            )
        except ValueError as e:
            raise TicketInvalid(str(e)) from e


def parse(body: bytes) -> ReadTicket:
    """A ticket document, or TicketInvalid."""
    if len(body) > TICKET_BYTES_MAX:
        raise TicketInvalid("a read ticket is a few hundred bytes")
    try:
        doc = orjson.loads(body)
    except ValueError as e:
        raise TicketInvalid(f"not a read ticket: {e}") from None
    return from_document(doc)


def from_document(doc: Any) -> ReadTicket:
    """A ticket document already decoded from JSON (one entry of a batch), or
    TicketInvalid."""
    try:
        if doc["v"] != VERSION:
            raise ValueError(f"version {doc['v']!r}")
        url, length, (start, count) = doc["url"], doc["length"], doc["cut"]
        secret, nonce = bytes.fromhex(doc["key"]), bytes.fromhex(doc["nonce"])
    except (ValueError, KeyError, TypeError) as e:
        raise TicketInvalid(f"not a read ticket: {e}") from None
    if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        raise TicketInvalid("a read ticket's url is an http(s) URL")
    for n in (length, start, count):
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise TicketInvalid("a read ticket's sizes are whole numbers")
    if start + count > length or len(secret) != KEY_BYTES or len(nonce) != NONCE_BYTES:
        raise TicketInvalid("a read ticket's cut, key or nonce does not fit")
    return ReadTicket(url, length, start, count, secret, nonce)


# -- batches: several tickets in one request (POST /tickets on the name node) -----------------
#
# A reader with several misses for one name node asks for their tickets in one request:
#
#     POST /tickets   [read]   Content-Type: application/json
#     {"v": 1, "reads": ["/n/{volume}/{key}/{alt_key}/{cookie}", ...]}
#
# 1 to TICKETS_PER_REQUEST_MAX needle paths, as a GET would name them. The answer, 200:
#
#     {"v": 1, "tickets": [<ticket document> | null, ...]}
#
# one entry per read, in order: the ticket document a GET asking for one would get, or
# null where the name node gives no ticket (absent, deleted, wrong cookie, a volume it does
# not serve, a block it reads itself). A null tells the reader nothing but "GET it": the
# plain GET then gives the one answer (the same 404 for absent, deleted and wrong cookie).

BATCH_PATH: Final = "/tickets"
BATCH_CONTENT_TYPE: Final = "application/vnd.pinhole.read-tickets+json"
# Entries per POST /tickets. More reads queued than this go in the next request.
TICKETS_PER_REQUEST_MAX: Final = 32
# A needle path is at most 6 + 10 + 20 + 10 + 16 characters (+ 3 for its JSON quotes and comma).
_READ_PATH_CHARS_MAX: Final = len("/n////") + 10 + 20 + 10 + 16 + 3
BATCH_BODY_BYTES_MAX: Final = 64 + TICKETS_PER_REQUEST_MAX * _READ_PATH_CHARS_MAX
BATCH_ANSWER_BYTES_MAX: Final = 64 + TICKETS_PER_REQUEST_MAX * (TICKET_BYTES_MAX + 1)


class BatchInvalid(ValueError):
    """A POST /tickets body that is not a batch; `code` says why (bad_request,
    too_many_reads)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def batch_request(paths: list[str]) -> bytes:
    """The body asking for the tickets of these needle paths (/n/...; canonical, so no
    JSON escaping is needed)."""
    return b'{"v":%d,"reads":["%s"]}' % (VERSION, '","'.join(paths).encode())


def parse_batch_request(body: bytes | bytearray) -> list[str]:
    """The needle paths of a POST /tickets body (not yet parsed as paths), or
    BatchInvalid."""
    if len(body) > BATCH_BODY_BYTES_MAX:
        raise BatchInvalid("too_many_reads", f"at most {TICKETS_PER_REQUEST_MAX} reads")
    try:
        doc = orjson.loads(body)
    except ValueError:
        raise BatchInvalid("bad_request", "the body is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != VERSION:
        raise BatchInvalid("bad_request", f'expected {{"v": {VERSION}, "reads": [...]}}')
    reads = doc.get("reads")
    if not isinstance(reads, list) or not all(isinstance(r, str) for r in reads):
        raise BatchInvalid("bad_request", '"reads" is a list of needle paths')
    if not reads:
        raise BatchInvalid("bad_request", '"reads" is empty')
    if len(reads) > TICKETS_PER_REQUEST_MAX:
        raise BatchInvalid("too_many_reads", f"at most {TICKETS_PER_REQUEST_MAX} reads")
    return reads


def batch_answer(documents: list[bytes | None]) -> bytes:
    """The answer to a batch: each ticket document as issue() wrote it, or null."""
    return b'{"v":%d,"tickets":[%s]}' % (
        VERSION,
        b",".join(b"null" if d is None else d for d in documents),
    )


def parse_batch_answer(body: bytes, count: int) -> list[ReadTicket | None]:
    """The `count` entries of a batch's answer; TicketInvalid when it is not one. A
    malformed entry is None (that reader then GETs the blob)."""
    if len(body) > BATCH_ANSWER_BYTES_MAX:
        raise TicketInvalid("a batch of tickets this long is not one")
    try:
        doc = orjson.loads(body)
        tickets = doc["tickets"]
        if doc["v"] != VERSION or not isinstance(tickets, list) or len(tickets) != count:
            raise ValueError("not one entry per read")
    except (ValueError, KeyError, TypeError) as e:
        raise TicketInvalid(f"not a batch of read tickets: {e}") from None
    out: list[ReadTicket | None] = []
    for entry in tickets:
        try:
            out.append(None if entry is None else from_document(entry))
        except TicketInvalid:
            out.append(None)
    return out
