"""The store's error tree and its one translation to HTTP (store/http_api.error_for)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from common.errors import PinholeError
from store import errors
from store.http_api import error_for

ROOT = Path(__file__).resolve().parents[2]


def _tree() -> list[type[errors.StoreError]]:
    found: list[type[errors.StoreError]] = []
    todo: list[type[errors.StoreError]] = [errors.StoreError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    return found


@pytest.mark.parametrize("cls", _tree(), ids=lambda c: c.__name__)
def test_every_store_error_is_answered_from_its_own_attributes(
    cls: type[errors.StoreError],
) -> None:
    assert issubclass(cls, PinholeError)
    exc = cls("offset 7 holds the needle of another key")
    resp = error_for(exc)
    doc = json.loads(resp.body)
    headers = dict(resp.headers)
    assert (resp.status, doc["error"]["code"]) == (cls.status, cls.code)
    assert headers["x-pinhole-error"] == cls.code
    message = doc["error"]["message"]
    assert message == (cls.public_message or "offset 7 holds the needle of another key")


def test_a_missing_needle_never_says_why() -> None:
    doc = json.loads(error_for(errors.NeedleNotFound("cookie mismatch")).body)
    assert doc["error"] == {"code": "not_found", "message": "no such needle"}


def test_a_full_queue_asks_to_retry() -> None:
    resp = error_for(errors.QueueFull("too many reads waiting for the disk"))
    assert resp.status == 503 and dict(resp.headers)["Retry-After"] == "1"


def test_store_error_class_names_are_unique_across_the_project() -> None:
    names = [cls.__name__ for cls in _tree()]
    assert len(names) == len(set(names))
    for name in names:
        hits = subprocess.run(
            ["git", "grep", "-l", "-E", f"^class {name}\\b", "--", "*.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        assert hits == ["store/errors.py"], (name, hits)
