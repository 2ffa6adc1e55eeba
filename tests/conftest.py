"""Shared fixtures. Services (PostgreSQL, Redis, Mosquitto) come with later packages; the
store tests need only files and processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Iterator

import pytest

from common.credentials import Credentials, Purpose

# Under CI=true a missing server fails a test rather than skipping it.
IN_CI = os.environ.get("CI", "").lower() == "true"
# PINHOLE_TESTS=full gives the property tests their whole example budgets; `make test` runs
# the quick budgets (see `examples`).
FULL_TESTS = os.environ.get("PINHOLE_TESTS", "").lower() == "full"


def examples(full: int) -> int:
    """A property test's example budget: `full` under PINHOLE_TESTS=full, else a third of
    it (at least 10)."""
    return full if FULL_TESTS else max(10, full // 3)


@pytest.fixture
def rng_seed(request: pytest.FixtureRequest) -> int:
    return abs(hash(request.node.nodeid)) % (2**32)


# pytest-timeout prints thread stacks; an asyncio hang sits in the event loop's select, so
# the stacks of the pending tasks are printed as well, shortly before the timeout fires.
HANG_DUMP_BEFORE_TIMEOUT_S = 10.0


@pytest.fixture(autouse=True)
def _dump_tasks_before_timeout(request: pytest.FixtureRequest) -> Iterator[None]:
    timeout = float(request.config.getini("timeout") or 0)
    if timeout <= HANG_DUMP_BEFORE_TIMEOUT_S:
        yield
        return
    timer = threading.Timer(timeout - HANG_DUMP_BEFORE_TIMEOUT_S, _dump_tasks, (request,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _dump_tasks(request: pytest.FixtureRequest) -> None:
    # asyncio keeps every task of every loop in this weak set; reading it from another
    # thread is racy, which a last-resort diagnostic can afford.
    tasks = [t for t in list(asyncio.tasks._all_tasks) if not t.done()]  # type: ignore[attr-defined]
    print(f"\n+++ {len(tasks)} pending asyncio tasks in {request.node.nodeid}", file=sys.stderr)
    for task in tasks:
        with contextlib.suppress(Exception):
            task.print_stack(file=sys.stderr)


def creds(secret: bytes, role: str | None = None) -> Credentials:
    """What a test process holds: everything (an operator, a test acting as API or writer),
    or exactly what the service `role` holds, so fixtures run each service with its share."""
    if role is None:
        return Credentials.from_secret(secret)
    return Credentials.for_service(secret, role)


def auth(secret: bytes, purpose: Purpose) -> dict[str, str]:
    """An Authorization header of one purpose, for raw HTTP calls in tests."""
    return {"Authorization": Credentials.from_secret(secret).header(purpose)}
