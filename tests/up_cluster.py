"""`pinhole up --detach` for the tests that need the whole cluster as real processes, the
way the README starts it, and `pinhole down` after, whatever happened."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from common import credentials
from ops import local_cluster as lc

REPO = Path(__file__).resolve().parents[1]


def pinhole(
    *args: object, cwd: Path = REPO, timeout_s: float = 300
) -> subprocess.CompletedProcess[str]:
    """One `pinhole` command in a process of its own, without the caller's cluster secret."""
    env = {k: v for k, v in os.environ.items() if k != credentials.SECRET_ENV}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *(str(a) for a in args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


@contextlib.contextmanager
def up_cluster(
    root: Path, *options: str, config: Path | None = None
) -> Iterator[tuple[lc.Layout, str]]:
    """A detached local cluster under `root` on free ports: (its layout, what `pinhole up`
    printed). Stopped on exit. `options`: more of `pinhole up`'s; `config`: the pinhole.toml
    every service reads (`pinhole --config`)."""
    before = ("--config", config) if config is not None else ()
    p = pinhole(
        *before, "up", "--data", root, "--port-base", lc.free_port_base(), "--detach", *options
    )
    try:
        assert p.returncode == 0, p.stderr + p.stdout
        layout = lc.load_layout(root.resolve())
        assert layout is not None
        yield layout, p.stdout
    finally:
        pinhole("down", "--data", root)
