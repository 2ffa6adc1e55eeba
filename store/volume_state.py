"""Volume states and the small sidecar file (`v<id>.state`) that makes them survive restarts.

writable   reads, writes, deletes
read_only  reads and deletes; reasons: full, operator, io_error (io_error also refuses
           deletes: after a failed sync the file's state on disk is unknown). Repair writes
           (a good copy of a needle this replica holds corrupt, from another replica) are
           taken when the reason is full or operator, never after io_error.
sealed     reads and deletes only, for good: what f4 migrates (no repair writes either)
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Final

from store.errors import FormatError
from store.storage import Storage, read_file, write_file_atomic


class Mode(StrEnum):
    WRITABLE = "writable"
    READ_ONLY = "read_only"
    SEALED = "sealed"


class Reason(StrEnum):
    FULL = "full"
    OPERATOR = "operator"
    IO_ERROR = "io_error"


STATE_FORMAT_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class VolumeState:
    mode: Mode = Mode.WRITABLE
    reason: Reason | None = None
    detail: str = ""
    changed_unix_s: float = 0.0

    @property
    def accepts_writes(self) -> bool:
        return self.mode is Mode.WRITABLE

    @property
    def accepts_repairs(self) -> bool:
        """Repair writes: while writable, or read-only because full or by an operator."""
        return self.mode is Mode.WRITABLE or (
            self.mode is Mode.READ_ONLY and self.reason in (Reason.FULL, Reason.OPERATOR)
        )

    @property
    def accepts_deletes(self) -> bool:
        return not (self.mode is Mode.READ_ONLY and self.reason is Reason.IO_ERROR)

    def to_json(self) -> dict[str, object]:
        d = asdict(self)
        d["mode"] = self.mode.value
        d["reason"] = self.reason.value if self.reason else None
        return d


WRITABLE: Final = VolumeState()


def read_only(reason: Reason, detail: str = "") -> VolumeState:
    return VolumeState(Mode.READ_ONLY, reason, detail, time.time())


def sealed(detail: str = "") -> VolumeState:
    return VolumeState(Mode.SEALED, None, detail, time.time())


def load(storage: Storage, name: str) -> VolumeState:
    if not storage.exists(name):
        return WRITABLE
    try:
        doc = json.loads(read_file(storage, name))
        if doc.get("version") != STATE_FORMAT_VERSION:
            raise FormatError(f"state file version {doc.get('version')} is not supported")
        reason = doc.get("reason")
        return VolumeState(
            mode=Mode(doc["mode"]),
            reason=Reason(reason) if reason else None,
            detail=str(doc.get("detail", "")),
            changed_unix_s=float(doc.get("changed_unix_s", 0.0)),
        )
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"bad state file {name}: {e}") from e


def save(storage: Storage, name: str, state: VolumeState) -> None:
    doc = {"version": STATE_FORMAT_VERSION, **state.to_json()}
    write_file_atomic(storage, name, [json.dumps(doc, sort_keys=True).encode()])
