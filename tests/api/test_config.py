"""[api] processes: its range, and what more than one process needs (Redis, id shards)."""

from __future__ import annotations

import pytest

from api.config import PROCESSES_MAX, ApiConfig, api_config
from common.config import ConfigError
from common.ids import SHARD_MAX

REDIS = "redis://127.0.0.1:6379/0"


def test_one_process_is_the_default_and_needs_nothing() -> None:
    config = api_config({})
    assert config.processes == 1
    config.check_processes(redis_url="", id_shard=SHARD_MAX)  # no Redis, the last shard


@pytest.mark.parametrize("processes", [0, -1, PROCESSES_MAX + 1])
def test_processes_outside_the_range_are_refused(processes: int) -> None:
    with pytest.raises(ConfigError, match=rf"api: processes must be within 1\.\.{PROCESSES_MAX}"):
        api_config({"api": {"processes": processes}})


def test_processes_must_be_a_whole_number() -> None:
    with pytest.raises(ConfigError, match=r"api\.processes"):
        api_config({"api": {"processes": "2"}})


def test_several_processes_need_redis() -> None:
    config = api_config({"api": {"processes": 2}})
    with pytest.raises(ValueError, match=r"api\.processes = 2 needs Redis: set \[feed\] redis_url"):
        config.check_processes(redis_url="", id_shard=1)
    config.check_processes(redis_url=REDIS, id_shard=1)


def test_several_processes_need_one_id_shard_each() -> None:
    config = ApiConfig(processes=PROCESSES_MAX)
    config.check_processes(redis_url=REDIS, id_shard=SHARD_MAX - PROCESSES_MAX + 1)
    with pytest.raises(ValueError, match=rf"id shards {SHARD_MAX - PROCESSES_MAX + 2}\.\."):
        config.check_processes(redis_url=REDIS, id_shard=SHARD_MAX - PROCESSES_MAX + 2)
