from __future__ import annotations

from pathlib import Path

import pytest

from common.config import ConfigError
from directory.config import DirectoryConfig, directory_config


def test_defaults_and_overrides() -> None:
    config = directory_config({"directory": {"placement": "001", "node_free_bytes_min": "2 GiB"}})
    assert config.replica_count == 2
    assert config.node_free_bytes_min == 2 * 1024**3
    assert config.database == str(Path(".pinhole/directory") / "directory.sqlite3")
    assert directory_config({}, port=9000).port == 9000
    assert DirectoryConfig(database_url="postgresql+asyncpg://h/db").database.startswith("postgres")


@pytest.mark.parametrize(
    "table",
    [
        {"placement": "01"},
        {"placement": "abc"},
        {"port": 70000},
        {"node_timeout_s": 0.5, "heartbeat_interval_s": 1.0},
        {"lease_s": 0.5, "health_interval_s": 1.0},
        {"writable_volumes_min": -1},
        {"loop_batch_max": 0},
        {"database_url": "not a url"},
        {"no_such_key": 1},
    ],
)
def test_bad_values_name_the_problem(table: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        directory_config({"directory": table})
