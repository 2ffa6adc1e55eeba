"""Hashtags and mentions in captions and comments. A hashtag is '#' then letters, digits or
'_' (Unicode letters included), stored lower-case; a mention is '@' then a username. Both
must start the text or follow a character that is not part of a word, so an e-mail address
is no mention."""

from __future__ import annotations

import re
from typing import Final

_HASHTAG: Final = re.compile(r"(?<![\w#])#(\w{1,100})")
_MENTION: Final = re.compile(r"(?<![\w@.])@([A-Za-z0-9._]{1,30})(?<!\.)")


def hashtags(text: str, *, limit: int) -> list[str]:
    """Distinct hashtags in order of appearance (at most `limit`)."""
    seen: dict[str, None] = {}
    for match in _HASHTAG.finditer(text):
        tag = match.group(1).lower()
        if not tag.strip("_").isdigit():  # "#1" is a number, not a tag
            seen.setdefault(tag, None)
    return list(seen)[:limit]


def mentions(text: str, *, limit: int) -> list[str]:
    """Distinct mentioned usernames (lower-case) in order of appearance (at most `limit`)."""
    seen: dict[str, None] = {}
    for match in _MENTION.finditer(text):
        seen.setdefault(match.group(1).lower(), None)
    return list(seen)[:limit]
