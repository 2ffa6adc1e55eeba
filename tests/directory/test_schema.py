"""The directory's state and role enums hold exactly the values its schema document gives
each column (docs/formats/directory-schema.md): the stored strings are the format."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path

import pytest

from directory.schema import LogicalVolumeState, NodeRole, RepairState, ReplicaState

DOC = Path(__file__).parents[2] / "docs" / "formats" / "directory-schema.md"


def documented_values(table: str, column: str) -> set[str]:
    """The `backticked` values in the row of `column` in the section of `table`."""
    section = DOC.read_text().split(f"## `{table}`", 1)[1].split("\n## ", 1)[0]
    (row,) = [line for line in section.splitlines() if line.startswith(f"| {column} |")]
    description = row.split("|")[3]
    return set(re.findall(r"`([^`]+)`", description))


@pytest.mark.parametrize(
    ("table", "column", "enum"),
    [
        ("directory_nodes", "role", NodeRole),
        ("directory_logical_volumes", "state", LogicalVolumeState),
        ("directory_replicas", "state", ReplicaState),
        ("directory_pending_deletes", "target_role", NodeRole),
        ("directory_repairs", "state", RepairState),
    ],
)
def test_enum_values_are_the_documented_ones(table: str, column: str, enum: type[StrEnum]) -> None:
    assert {member.value for member in enum} == documented_values(table, column)
