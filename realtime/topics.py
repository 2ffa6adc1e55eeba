"""The MQTT topics and payloads (docs/api/realtime.md).

Server -> client (QoS 1), each under the recipient's own subtree, the only one its broker
credentials may subscribe to:
    pinhole/u/<user id>/inbox              a new message in one of the user's threads
    pinhole/u/<user id>/threads/<thread>   reactions, unsends, read receipts, typing
    pinhole/u/<user id>/notifications      likes, comments, follows, mentions
Client -> server (QoS 0), the only topic a client may publish to:
    pinhole/in/<user id>/typing/<thread>   "I am typing in this thread" (relayed, never stored)

Ids are decimal digits only: a user id or thread id with `+`, `#` or `/` cannot be built
(`_id` refuses it), so no topic here is a wildcard."""

from __future__ import annotations

import json
import re
from typing import Any, Final

PREFIX: Final = "pinhole"
_DIGITS: Final = re.compile(r"^[0-9]{1,19}$")
# pinhole/in/<user>/typing/<thread>
TYPING_FILTER: Final = f"{PREFIX}/in/+/typing/+"
_TYPING: Final = re.compile(rf"^{PREFIX}/in/([0-9]{{1,19}})/typing/([0-9]{{1,19}})$")
PAYLOAD_VERSION: Final = 1


def _id(value: int) -> str:
    text = str(int(value))
    if not _DIGITS.match(text):
        raise ValueError(f"not an id: {value!r}")
    return text


def user_root(user_id: int) -> str:
    return f"{PREFIX}/u/{_id(user_id)}"


def inbox(user_id: int) -> str:
    return f"{user_root(user_id)}/inbox"


def thread(user_id: int, thread_id: int) -> str:
    return f"{user_root(user_id)}/threads/{_id(thread_id)}"


def notifications(user_id: int) -> str:
    return f"{user_root(user_id)}/notifications"


def subscribe_pattern(user_id: int) -> str:
    """What the user's credentials may subscribe to (and nothing else)."""
    return f"{user_root(user_id)}/#"


def typing_in(user_id: int, thread_id: int) -> str:
    return f"{PREFIX}/in/{_id(user_id)}/typing/{_id(thread_id)}"


def typing_publish_pattern(user_id: int) -> str:
    """What the user's credentials may publish to."""
    return f"{PREFIX}/in/{_id(user_id)}/typing/+"


def parse_typing(topic: str) -> tuple[int, int] | None:
    """(user id, thread id) of an inbound typing topic, None for anything else."""
    m = _TYPING.match(topic)
    return (int(m.group(1)), int(m.group(2))) if m else None


def payload(event_type: str, /, **fields: Any) -> bytes:
    """A JSON object {"v": 1, "type": kind, ...}; ids travel as strings (they exceed 2^53)."""
    doc: dict[str, Any] = {"v": PAYLOAD_VERSION, "type": event_type}
    for key, value in fields.items():
        doc[key] = str(value) if key.endswith("_id") and value is not None else value
    return json.dumps(doc, separators=(",", ":")).encode()
