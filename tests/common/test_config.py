from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, load_toml, parse_size
from store.config import StoreConfig, store_config

EXAMPLE = Path(__file__).parents[2] / "pinhole.example.toml"


def test_the_example_file_lists_exactly_the_defaults() -> None:
    assert store_config(load_toml(EXAMPLE)) == StoreConfig()


def test_every_store_key_is_in_the_example() -> None:
    doc = load_toml(EXAMPLE)["store"]
    keys = set(doc) | {"cluster_secret_file"}  # commented out: it has no default value
    assert keys == set(StoreConfig.__dataclass_fields__)
    assert set(doc["volume"]) == set(StoreConfig().volume.__dataclass_fields__)


@pytest.mark.parametrize(
    ("text", "value"),
    [("100 GB", 10**11), ("64MiB", 64 * 2**20), ("512k", 512_000), ("7", 7), (12, 12)],
)
def test_sizes(text: object, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["banana", "1.5.2 GB", True, None, "-5 MB"])
def test_bad_sizes(bad: object) -> None:
    with pytest.raises(ConfigError):
        parse_size(bad)


def test_unknown_keys_and_bad_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"store\.prot"):
        store_config({"store": {"prot": 1}})
    with pytest.raises(ConfigError, match=r"store\.volume\.size_bytes_max"):
        store_config({"store": {"volume": {"size_bytes_max": "lots"}}})
    with pytest.raises(ConfigError, match="read_queue_depth must be positive"):
        store_config({"store": {"read_queue_depth": 0}})
    with pytest.raises(ConfigError, match=r"store\.port must be an integer"):
        store_config({"store": {"port": "80"}})


def test_overrides_win_over_the_file() -> None:
    cfg = store_config(
        {"store": {"port": 1, "volume": {"size_bytes_max": "1 GB"}}},
        port=2,
        **{"volume.size_bytes_max": 2 * 10**9},
    )
    assert cfg.port == 2 and cfg.volume.size_bytes_max == 2 * 10**9


@pytest.mark.parametrize(
    "table", ["directory", "cache", "router", "api", "media", "social", "feed"]
)
def test_the_example_lists_every_key_of_each_service_with_its_default(table: str) -> None:
    from api.config import ApiConfig, api_config
    from cache.config import CacheConfig, cache_config
    from directory.config import DirectoryConfig, directory_config
    from feed.config import FeedConfig, feed_config
    from router.config import RouterConfig, router_config
    from social.config import SocialConfig, social_config
    from transformer.config import MediaConfig, media_config

    cls, parse = {
        "directory": (DirectoryConfig, directory_config),
        "cache": (CacheConfig, cache_config),
        "router": (RouterConfig, router_config),
        "api": (ApiConfig, api_config),
        "media": (MediaConfig, media_config),
        "social": (SocialConfig, social_config),
        "feed": (FeedConfig, feed_config),
    }[table]
    doc = load_toml(EXAMPLE)
    assert parse(doc) == cls()  # type: ignore[operator]
    keys = set(doc[table]) | {"cluster_secret_file"}
    assert keys >= set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    assert keys - {"cluster_secret_file"} <= set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
