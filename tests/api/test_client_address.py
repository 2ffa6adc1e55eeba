"""The client address: the peer, or behind trusted proxies the right-most X-Forwarded-For
entry that is not one of them."""

from __future__ import annotations

import pytest

from api.client_address import UNKNOWN, client_address, parse_networks
from api.config import ApiConfig, api_config
from common.config import ConfigError

PROXIES = ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32")


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "client"),
    [
        # No trusted proxies: the peer, whatever the header says.
        ("203.0.113.9", ["1.2.3.4"], (), "203.0.113.9"),
        # A peer that is no trusted proxy cannot speak for anyone else.
        ("203.0.113.9", ["1.2.3.4"], PROXIES, "203.0.113.9"),
        # Behind one proxy: the entry it appended.
        ("10.1.1.1", ["198.51.100.4"], PROXIES, "198.51.100.4"),
        # A client's forged entries sit left of the real one and are never reached.
        ("10.1.1.1", ["6.6.6.6, 198.51.100.4"], PROXIES, "198.51.100.4"),
        # Through a chain of trusted proxies (and the header split over two lines).
        ("10.1.1.1", ["6.6.6.6, 198.51.100.4", "192.0.2.7, 10.9.9.9"], PROXIES, "198.51.100.4"),
        # Every hop trusted (an internal call): the farthest one.
        ("10.1.1.1", ["10.2.2.2"], PROXIES, "10.2.2.2"),
        ("10.1.1.1", [], PROXIES, "10.1.1.1"),
        # Ports and brackets are dropped; IPv6 is written canonically, mapped IPv4 as IPv4.
        ("10.1.1.1", ["198.51.100.4:5555"], PROXIES, "198.51.100.4"),
        ("10.1.1.1", ["[2001:DB9:0::1]:443"], PROXIES, "2001:db9::1"),
        ("::ffff:203.0.113.9", [], (), "203.0.113.9"),
        ("2001:db8::5", ["2001:db9::7"], PROXIES, "2001:db9::7"),
        # Garbage where an address should be: counted against the last known hop.
        ("10.1.1.1", ["6.6.6.6, unknown"], PROXIES, "10.1.1.1"),
        ("10.1.1.1", ["198.51.100.4, _hidden, 10.3.3.3"], PROXIES, "10.3.3.3"),
        # No peer address (a Unix socket).
        (None, ["1.2.3.4"], PROXIES, UNKNOWN),
    ],
)
def test_client_address(
    peer: str | None, forwarded: list[str], trusted: tuple[str, ...], client: str
) -> None:
    assert client_address(peer, forwarded, trusted) == client


def test_trusted_proxies_are_validated_at_start_up() -> None:
    assert len(parse_networks(PROXIES)) == 3
    assert ApiConfig(trusted_proxies=PROXIES).trusted_proxies == PROXIES
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not an address or network"):
        ApiConfig(trusted_proxies=("10.0.0.0/33",))
    assert api_config({"api": {"trusted_proxies": ["10.0.0.0/8"]}}).trusted_proxies == (
        "10.0.0.0/8",
    )
    with pytest.raises(ConfigError, match="trusted_proxies"):
        api_config({"api": {"trusted_proxies": ["proxy.example"]}})
