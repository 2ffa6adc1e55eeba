"""Who is on the other end: the client address that per-address limits count (sign-ups,
failed sign-ins) and that sessions record.

It is the peer of the connection, unless the peer is one of `[api] trusted_proxies`
(addresses or CIDR networks); then it is the right-most X-Forwarded-For entry that is not a
trusted proxy. Each proxy appends the address it received the request from, so entries to
the right of a trusted proxy's are written by trusted proxies, while anything to the left may
be whatever the client sent: the right-most untrusted entry is the first one a client could
not forge.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Final

from aiohttp import web

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

UNKNOWN: Final = "unknown"  # no peer address (a Unix socket) or an unreadable one


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """The networks of `trusted_proxies` entries (an address is a /32 or /128); raises
    ValueError naming a bad entry."""
    out = []
    for entry in entries:
        try:
            out.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {entry!r} is not an address or network") from None
    return tuple(out)


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(entries)


def _address(text: str) -> Address | None:
    """An address from an entry or a peer: "1.2.3.4", "1.2.3.4:5678", "::1", "[::1]:80"."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def client_address(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[str, ...]) -> str:
    """The client address as text (canonical form), or "unknown". `forwarded_for`: the
    X-Forwarded-For header values in the order received (each a comma-separated list)."""
    hop = _address(peer or "")
    if hop is None:
        return UNKNOWN
    networks = _networks(trusted)
    if not any(hop in n for n in networks):
        return str(hop)
    entries = [e for value in forwarded_for for e in value.split(",") if e.strip()]
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            # A trusted proxy wrote something that is no address: the request is counted
            # against the last hop known, rather than against a made-up name.
            return str(hop)
        hop = address
        if not any(hop in n for n in networks):
            return str(hop)
    return str(hop)  # every hop is a trusted proxy: the farthest one


def of_request(request: web.Request, trusted: tuple[str, ...]) -> str:
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), trusted)
