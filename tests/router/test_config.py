"""router/config.py: the [router] table."""

from __future__ import annotations

import pytest

from common.config import ConfigError
from router.config import RouterConfig, router_config


def test_defaults_and_overrides() -> None:
    config = router_config({})
    assert config == RouterConfig()
    assert config.port == 8780 and config.lookup_ttl_s == 5.0 and config.caches_refresh_s == 2.0
    doc = {"router": {"port": 9000, "photo_bytes_max": "8 MiB", "lookup_ttl_s": 1}}
    config = router_config(doc, port=None, directory_url="http://d:1")
    assert config.port == 9000
    assert config.photo_bytes_max == 8 * 1024 * 1024
    assert config.lookup_ttl_s == 1.0
    assert config.directory_url == "http://d:1"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"lookup_tll_s": 1}, "unknown key router.lookup_tll_s"),
        ({"port": 70000}, "port must be within"),
        ({"directory_url": "https://d"}, "directory_url must be an http:// URL"),
        ({"lookup_ttl_s": 0}, "lookup_ttl_s must be > 0"),
        ({"cache_down_s": -1}, "cache_down_s must not be negative"),
        ({"cache_attempts_max": 0}, "cache_attempts_max must be >= 1"),
        ({"photo_bytes_max": "lots"}, "not a size"),
        ({"cache_timeout_s": "1s"}, "must be a number"),
    ],
)
def test_bad_values_are_refused(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        router_config({"router": table})


def test_router_must_be_a_table() -> None:
    with pytest.raises(ConfigError, match="router must be a table"):
        router_config({"router": 5})
