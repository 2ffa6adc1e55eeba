"""Shared fixtures. Services (PostgreSQL, Redis, Mosquitto) come with later packages; the
store tests need only files and processes."""

from __future__ import annotations

import os

import pytest

# Under CI=true a missing server fails a test rather than skipping it.
IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def rng_seed(request: pytest.FixtureRequest) -> int:
    return abs(hash(request.node.nodeid)) % (2**32)
