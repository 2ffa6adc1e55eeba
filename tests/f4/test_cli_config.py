"""What the f4 commands are built on: the [f4] config (the example file lists exactly its
defaults; bad values name the key) and the loss arithmetic behind `pinhole f4 status`."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError, load_toml
from f4.cell import losses_survived
from f4.config import F4Config, f4_config

EXAMPLE = Path(__file__).parents[2] / "pinhole.example.toml"


def test_the_example_lists_exactly_the_defaults() -> None:
    doc = load_toml(EXAMPLE)
    assert f4_config(doc) == F4Config()
    keys = set(doc["f4"]) | {"cluster_secret_file"}  # commented out: it has no default value
    assert keys == set(F4Config.__dataclass_fields__)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"block_bytes": "1 MB"}, "f4: block_bytes must be a multiple of 4096"),
        ({"code": "xor"}, "f4: code must be one of"),
        ({"nodes": [{"name": "a"}, {"name": "a"}]}, "f4: node names must be distinct"),
        ({"nodes": [{"name": "a/b"}]}, "letters, digits"),
        ({"nodes": [{"name": "a", "zone": "z"}]}, "unknown key f4.nodes[].zone"),
        ({"nodes": [{"name": "a", "url": "ftp://h:1"}]}, "node a: url must be an http"),
        ({"nodes": [{"name": "a", "url": "http://h:99999"}]}, "node a: url does not parse"),
        ({"nodes": [{"name": "a", "url": "http://h:1/?q=1"}]}, "node a: url must have no query"),
        ({"nodes": [{"name": "a", "url": "http://"}]}, "node a: url must be an http"),
        ({"rebuild_mb_s": -1}, "must not be negative"),
        ({"migrate_mb_s": -1}, "must not be negative"),
        ({"read_threads": 0}, "read_threads must be within"),
        ({"directory_url": "ftp://x"}, "is not an http"),
        ({"age_s_min": "old"}, "f4.age_s_min must be a number"),
        ({"id_shard": 1 << 20}, "id_shard must be within"),
    ],
)
def test_bad_values_are_named(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        f4_config({"f4": table})


def test_overrides_and_derived_paths() -> None:
    config = f4_config({"f4": {"cell_root": "/c"}}, haystack_dir="/h", key_store_path=None)
    assert config.haystack_dir == Path("/h")
    assert config.keys_path == Path("/c/keys.sqlite3")
    assert config.lock_path == Path("/c/f4.lock")
    assert f4_config({"f4": {"key_store_path": "/k.db"}}).keys_path == Path("/k.db")
    racks = f4_config({"f4": {"nodes": [{"name": "a", "rack": "r"}, {"name": "b"}]}})
    assert (racks.rack_of("a"), racks.rack_of("b")) == ("r", "(b)")
    served = f4_config({"f4": {"nodes": [{"name": "a", "url": "https://h:8800/"}, {"name": "b"}]}})
    assert [n.url for n in served.nodes] == ["https://h:8800/", ""]


@pytest.mark.parametrize(
    ("domains", "survived"),
    [
        ([f"n{i}" for i in range(14)], 4),  # 14 distinct domains: any 4
        ([f"n{i}" for i in range(12)], 2),  # 2 blocks lost already
        ([f"n{i}" for i in range(10)], 0),
        ([f"n{i}" for i in range(9)], -1),  # data lost until rebuilt
        (["a"] * 3 + ["b"] * 3 + ["c"] * 3 + ["d"] * 3 + ["e"] * 2, 1),  # racks of 3, 3, ...
        (["a"] * 5 + [f"n{i}" for i in range(9)], 0),  # one domain holds 5 of 14
        (["a"] * 2 + ["b"] * 2 + [f"n{i}" for i in range(10)], 2),  # the 2 + 2 first
    ],
)
def test_losses_survived_takes_the_worst_case(domains: list[str], survived: int) -> None:
    assert losses_survived(domains) == survived
