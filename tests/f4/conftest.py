"""Fixtures shared by the f4 tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from common.leanhttp.client import LeanHTTPClient


@pytest.fixture
async def client() -> AsyncIterator[LeanHTTPClient]:
    """A LeanHTTPClient for the test's requests, closed after it."""
    lean = LeanHTTPClient()
    try:
        yield lean
    finally:
        await lean.close()
