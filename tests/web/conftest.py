"""The fixtures of the browser tests: Debian's Chromium driven by Playwright (headless)
against one cluster started by `pinhole up` for every module (each signs up users of its own
names), the screenshot directory, and the Content-Security-Policy violations
a test's pages report (none allowed)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.conftest import IN_CI
from tests.up_cluster import up_cluster

CHROMIUM: Final = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium_path() -> str:
    path = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    if path is None:
        problem = f"Debian's chromium is not installed ({CHROMIUM}; scripts/bootstrap installs it)"
        if IN_CI:
            pytest.fail(problem)
        pytest.skip(problem)
    return path


# One cluster for the browser modules (per pytest-xdist worker that runs any). Each module
# signs up its own accounts from loopback; together they pass the default hourly sign-ups
# of one address
# (`accounts_per_hour_max`, 20), so this cluster's configuration allows more (the limit
# itself is tested in tests/social/).
SIGN_UPS_PER_HOUR: Final = 500


@pytest.fixture(scope="session")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("web") / "cluster"
    config = root.parent / "pinhole.toml"
    config.write_text(f"[social]\naccounts_per_hour_max = {SIGN_UPS_PER_HOUR}\n")
    with up_cluster(root, config=config) as (layout, printed):
        # The first line `pinhole up` prints leads to the web client.
        assert printed.splitlines()[0] == f"web  {layout.api_url}/  (sign up there)", printed
        yield layout.api_url


@pytest.fixture(scope="session")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("web-screens")
    yield path
    print(f"\nweb client screenshots: {path}")


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def csp_violations() -> Iterator[list[str]]:
    """The Content-Security-Policy violations the pages of a test report (none allowed)."""
    seen: list[str] = []
    yield seen
    assert not seen, seen
