"""CacheConfig from a [cache] table: defaults, sizes, validation."""

from __future__ import annotations

import pytest

from cache.config import CacheConfig, cache_config
from common.config import ConfigError


def test_defaults_and_sizes() -> None:
    config = cache_config({"cache": {"cache_bytes_max": "1 GiB", "item_bytes_max": "4 MiB"}})
    assert config.cache_bytes_max == 1 << 30
    assert config.item_bytes_max == 4 << 20
    assert config.port == 8750
    assert cache_config({}, port=9000, node_id=None).port == 9000


@pytest.mark.parametrize(
    "table",
    [
        {"cache_bytes_max": 0},
        {"item_bytes_max": "2 GiB"},  # over cache_bytes_max
        {"inflight_fetches_max": 0},
        {"fetch_timeout_s": 0},
        {"negative_ttl_s": -1},
        {"directory_url": "https://x"},
        {"port": 70000},
        {"cache_bytes_mx": 1},  # a typo is an error, not a default
    ],
)
def test_bad_values_name_the_key(table: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        cache_config({"cache": table})


def test_name() -> None:
    assert CacheConfig(node_id="c1").name == "c1"
    assert CacheConfig(port=1).name == "cache-127.0.0.1:1"
