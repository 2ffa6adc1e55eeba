"""router/lookup.py: the directory's lv JSON as the router uses it."""

from __future__ import annotations

from typing import Any

import pytest

from router.lookup import VolumeInfo


def _lv(*replicas: tuple[str, str, bool], writable: bool = True) -> dict[str, Any]:
    return {
        "volume_id": 3,
        "writable": writable,
        "reason": "",
        "replicas": [
            {"node_id": n, "url": f"http://{n}:1/", "state": state, "alive": alive}
            for n, state, alive in replicas
        ],
    }


def test_readable_replicas_alive_first_and_rotations() -> None:
    info = VolumeInfo.from_json(
        _lv(
            ("a", "ready", True),
            ("b", "ready", False),
            ("c", "ready", True),
            ("d", "copying", True),
        )
    )
    assert info.readable == ("http://a:1", "http://c:1", "http://b:1")
    assert info.rotations == (
        ("http://a:1", "http://c:1", "http://b:1"),
        ("http://c:1", "http://a:1", "http://b:1"),
    )
    assert info.replicas_header[1] == "http://c:1,http://a:1,http://b:1"
    assert info.rotations[info.rotation(7)] == info.rotations[1]
    assert info.node_id_of("http://c:1/") == "c"
    assert info.node_id_of("http://zzz:1") is None


def test_no_alive_replica_still_lists_the_others() -> None:
    info = VolumeInfo.from_json(_lv(("a", "ready", False), ("b", "ready", False)))
    assert info.rotations == (("http://a:1", "http://b:1"),)
    assert info.rotation(12345) == 0
    empty = VolumeInfo.from_json(_lv())
    assert empty.rotations == ((),) and empty.replicas_header == ("",)


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"volume_id": "3", "writable": True, "replicas": []},
        {"volume_id": 3, "writable": "yes", "replicas": []},
        {"volume_id": 3, "writable": True, "replicas": [{"url": "http://x"}]},
        {"volume_id": 3, "writable": True, "replicas": 5},
        [1, 2],
    ],
)
def test_not_a_volume(doc: Any) -> None:
    with pytest.raises(ValueError, match="not a logical volume"):
        VolumeInfo.from_json(doc)
