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


def test_several_processes_need_a_data_dir_short_enough_for_their_metrics_sockets() -> None:
    from pathlib import Path

    from api.config import UNIX_SOCKET_PATH_BYTES_MAX

    fits = Path("/" + "d" * (UNIX_SOCKET_PATH_BYTES_MAX - len("/metrics-15.sock") - 1))
    config = ApiConfig(processes=16, data_dir=fits)
    assert len(str(config.metrics_socket(15))) == UNIX_SOCKET_PATH_BYTES_MAX
    config.check_processes(redis_url=REDIS, id_shard=1)
    longer = ApiConfig(processes=16, data_dir=Path(str(fits) + "d"))
    with pytest.raises(ValueError, match=r"too long for the processes' metrics sockets \(108"):
        longer.check_processes(redis_url=REDIS, id_shard=1)
    # One process has no socket.
    ApiConfig(processes=1, data_dir=Path(str(fits) + "d" * 50)).check_processes(
        redis_url="", id_shard=1
    )
