"""PINHOLE_PROFILE_DIR: every service a local cluster starts runs under cProfile, and the
cluster still knows it as running (alive() compares the command line it recorded)."""

from __future__ import annotations

import os
import pstats
import sys
import time
from pathlib import Path

import pytest

from ops import local_cluster as lc

SLEEPER = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
pathlib.Path(sys.argv[1]).write_text("ready")
while True:
    time.sleep(0.05)
"""


def test_a_service_runs_under_cprofile_and_writes_its_profile_when_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mod").mkdir()
    (tmp_path / "mod" / "pinhole_sleeper.py").write_text(SLEEPER)
    monkeypatch.setenv(
        "PYTHONPATH",
        os.pathsep.join(p for p in (str(tmp_path / "mod"), os.environ.get("PYTHONPATH")) if p),
    )
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    monkeypatch.setenv(lc.PROFILE_DIR_ENV, str(profiles))
    ready = tmp_path / "ready"
    service = lc.Service(
        "sleeper", "test", "", (sys.executable, "-m", "pinhole_sleeper", str(ready))
    )

    running = lc.start(service, tmp_path / "root")
    assert running.argv[:5] == [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        str(profiles / "sleeper.prof"),
    ]
    assert running.argv[5:] == ["-m", "pinhole_sleeper", str(ready)]
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert time.monotonic() < deadline, "the service never started"
        time.sleep(0.02)
    assert lc.alive(running)
    assert lc.stop([running]) == []  # stopped by SIGTERM, not killed
    stats = pstats.Stats(str(profiles / "sleeper.prof"))
    assert any(name.endswith("pinhole_sleeper.py") for name, _, _ in stats.stats)  # type: ignore[attr-defined]

    monkeypatch.delenv(lc.PROFILE_DIR_ENV)
    assert lc.profiled(service) == list(service.argv)


def test_a_command_runs_under_cprofile_only_when_the_directory_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = [sys.executable, "-m", "ops.cli", "f4", "migrate", "--json"]
    monkeypatch.delenv(lc.PROFILE_DIR_ENV, raising=False)
    assert lc.profiled_argv(argv, "f4-migrate") == argv
    monkeypatch.setenv(lc.PROFILE_DIR_ENV, str(tmp_path))
    assert lc.profiled_argv(argv, "f4-migrate") == [
        sys.executable, "-m", "cProfile", "-o", str(tmp_path / "f4-migrate.prof"),
        "-m", "ops.cli", "f4", "migrate", "--json",
    ]  # fmt: skip
    # Not a `python -m` command line: left alone.
    assert lc.profiled_argv(["/usr/bin/fio", "x"], "fio") == ["/usr/bin/fio", "x"]
