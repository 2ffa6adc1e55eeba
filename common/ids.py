"""Instagram-style 64-bit ids (BRIEF §3): time-ordered, made without coordination.

    bit 63 ................. 23 22 ........ 10 9 ....... 0
        | ms since EPOCH (41)  | shard (13)    | seq (10) |

41 bits of milliseconds last about 69 years from EPOCH_UNIX_MS; ids sort by creation time, so
`ORDER BY id` is time order and a cursor is an id. One generator per process and shard:
processes that make ids at the same time need distinct shards. Ids travel in JSON as decimal
strings (they exceed 2^53).

The databases keep ids in signed 64-bit columns (BIGINT), so an id is at most 2^63 - 1
(ID_MAX): the top time bit turns on 2^40 ms (about 34.8 years) after EPOCH_UNIX_MS, in
2060, and until then every id made here is below it.
"""

from __future__ import annotations

import threading
import time
from typing import Final

EPOCH_UNIX_MS: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z
TIME_BITS: Final = 41
SHARD_BITS: Final = 13
SEQUENCE_BITS: Final = 10
SHARD_MAX: Final = (1 << SHARD_BITS) - 1
SEQUENCE_MAX: Final = (1 << SEQUENCE_BITS) - 1
ID_BITS: Final = TIME_BITS + SHARD_BITS + SEQUENCE_BITS
# The largest id `parse` accepts: a BIGINT holds it, so no client text overflows a column.
ID_MAX: Final = (1 << (ID_BITS - 1)) - 1
ID_DIGITS_MAX: Final = len(str(ID_MAX))

assert ID_BITS == 64
assert ID_DIGITS_MAX == 19


class IdGenerator:
    """Thread-safe. When more than SEQUENCE_MAX + 1 ids are asked within one millisecond,
    the generator waits for the next one; a clock that steps back is waited out, so ids
    never repeat and never decrease within a process."""

    def __init__(self, shard: int) -> None:
        if not 0 <= shard <= SHARD_MAX:
            raise ValueError(f"shard must be within 0..{SHARD_MAX}")
        self.shard = shard
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def next_id(self) -> int:
        with self._lock:
            now_ms = _now_ms()
            while now_ms < self._last_ms:  # the clock stepped back: wait it out
                time.sleep((self._last_ms - now_ms) / 1000)
                now_ms = _now_ms()
            if now_ms == self._last_ms:
                self._sequence += 1
                if self._sequence > SEQUENCE_MAX:
                    while now_ms <= self._last_ms:
                        time.sleep(0.0002)
                        now_ms = _now_ms()
                    self._sequence = 0
            else:
                self._sequence = 0
            self._last_ms = now_ms
            return compose(now_ms, self.shard, self._sequence)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000 - EPOCH_UNIX_MS


def compose(ms: int, shard: int, sequence: int) -> int:
    """The id of (milliseconds since EPOCH_UNIX_MS, shard, sequence)."""
    if not 0 <= ms < 1 << TIME_BITS:
        raise ValueError("time out of the id's range")
    if not 0 <= shard <= SHARD_MAX or not 0 <= sequence <= SEQUENCE_MAX:
        raise ValueError("shard or sequence out of range")
    return ms << (SHARD_BITS + SEQUENCE_BITS) | shard << SEQUENCE_BITS | sequence


def created_unix_ms(id_: int) -> int:
    """When the id was made (Unix milliseconds)."""
    return (id_ >> (SHARD_BITS + SEQUENCE_BITS)) + EPOCH_UNIX_MS


def parse(text: str) -> int:
    """An id from its decimal string, within 0..ID_MAX (2^63 - 1, what a BIGINT holds);
    ValueError for anything else (see parse_decimal)."""
    return parse_decimal(text, maximum=ID_MAX, what="an id")


def parse_decimal(text: str, *, maximum: int, what: str = "the number") -> int:
    """A number in canonical decimal, within 0..maximum: ASCII digits only, no sign, no
    spaces, no leading zero (so every number has one spelling: URLs that caches key on
    stay unique). ValueError with a message naming `what` for anything else. The length
    is checked before converting: a string of thousands of digits costs nothing (and
    int() refuses past 4300 digits)."""
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        raise ValueError(f"{what} must be a decimal number without sign or leading zeros")
    if len(text) > len(str(maximum)):
        raise ValueError(f"{what} must be at most {maximum}")
    value = int(text)
    if value > maximum:
        raise ValueError(f"{what} must be at most {maximum}")
    return value
