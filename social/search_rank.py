"""Ranking of search candidates: pure functions, the same for both engines
(docs/api/search.md gives the formula and every weight).

score = match_weight * quality + popularity_weight * popularity
        + followed_weight * followed + engaged_weight * engaged

- quality (0 to 1): 1 the name itself; 0.8 to 0.9 the name starts with the query (shorter
  completions first); 0.75 a word of any field starts with the query; 0.6 the query is a
  substring; else 0.5 x trigram similarity when at least fuzzy_similarity_min, else no match.
- popularity (0 to 1): log(1 + count) / log(1 + POPULARITY_COUNT_SCALE), capped at 1; the
  count is followers for accounts, posts for hashtags and places.
- followed, engaged: 1 when the viewer follows the account / liked one of its posts lately.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from social.search_config import SearchConfig
from social.search_text import best_word_similarity, words

POPULARITY_COUNT_SCALE: Final = 1_000_000
QUALITY_EXACT: Final = 1.0
QUALITY_PREFIX_MAX: Final = 0.9
QUALITY_PREFIX_MIN: Final = 0.8
QUALITY_WORD_PREFIX: Final = 0.75
QUALITY_SUBSTRING: Final = 0.6
QUALITY_FUZZY_MAX: Final = 0.5
assert QUALITY_EXACT > QUALITY_PREFIX_MAX > QUALITY_PREFIX_MIN > QUALITY_WORD_PREFIX
assert QUALITY_WORD_PREFIX > QUALITY_SUBSTRING > QUALITY_FUZZY_MAX


@dataclass(frozen=True, slots=True)
class Candidate:
    """An entity that may match: its id, its folded fields (the first is its name), the
    count its popularity is measured by, and the viewer's relation to it."""

    entity_id: int
    fields: tuple[str, ...]
    count: int
    followed: bool = False
    engaged: bool = False


@dataclass(frozen=True, slots=True)
class Ranked:
    entity_id: int
    score: float
    quality: float


def quality(query: str, fields: tuple[str, ...], *, similarity_min: float) -> float:
    """How well folded `fields` match the folded `query`, 0 (no match) to 1."""
    if not query or not fields:
        return 0.0
    name = fields[0]
    if name == query:
        return QUALITY_EXACT
    if name.startswith(query):
        share = len(query) / len(name)
        return QUALITY_PREFIX_MIN + (QUALITY_PREFIX_MAX - QUALITY_PREFIX_MIN) * share
    if any(f.startswith(query) for f in fields) or any(
        w.startswith(query) for f in fields for w in words(f)
    ):
        return QUALITY_WORD_PREFIX
    if any(query in f for f in fields):
        return QUALITY_SUBSTRING
    fuzzy = best_word_similarity(query, fields)
    return QUALITY_FUZZY_MAX * fuzzy if fuzzy >= similarity_min else 0.0


def popularity(count: int) -> float:
    return min(1.0, math.log1p(max(count, 0)) / math.log1p(POPULARITY_COUNT_SCALE))


def rank(
    query: str, candidates: list[Candidate], config: SearchConfig, *, limit: int
) -> list[Ranked]:
    """The matching candidates, best first (ties by id, so a page is stable), at most
    `limit`."""
    similarity_min = config.fuzzy_similarity_min_pct / 100
    out: list[Ranked] = []
    seen: set[int] = set()
    for c in candidates:
        if c.entity_id in seen:
            continue
        seen.add(c.entity_id)
        q = quality(query, c.fields, similarity_min=similarity_min)
        if q <= 0:
            continue
        score = (
            config.match_weight_pct * q
            + config.popularity_weight_pct * popularity(c.count)
            + config.followed_weight_pct * c.followed
            + config.engaged_weight_pct * c.engaged
        ) / 100
        out.append(Ranked(c.entity_id, score, q))
    out.sort(key=lambda r: (-r.score, r.entity_id))
    return out[:limit]
