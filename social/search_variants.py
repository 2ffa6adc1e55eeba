"""Typo candidates: the words of the index within one typo of a query word, found through
their one-deletion variants, by the same statement on both engines.

`search_word_variants` (social/search_schema.py) holds each word under itself and under
every string one deleted character makes of it (search_text.variants). Two strings within
one typo of each other share a variant: an insertion or a deletion leaves the shorter
string as a variant of the longer, a substitution deletes the same position of both, a
swap of neighbours deletes one of the two in each. So the words within one typo of a query
word are those whose variants include one of the query word's: one B-tree equality probe
per query variant, whatever the vocabulary's size (where the words' trigram index read
thousands of words holding a common trigram: 51 ms for `quimi_` over 150,000 words).

A word still being typed is the beginning of a word within one typo of it, and the
variants of a word's beginning are beginnings of the word's variants (or the word itself):
so from TYPO_PREFIX_CHARS_MIN characters on, each query variant is walked as a prefix, the
first VARIANT_WORDS_PER_KEY variants in byte order (the nearest completions come first).
search_text.closest_words then orders what was found by edit distance; two typos in one
word are found only when a variant happens to match.
"""

from __future__ import annotations

import functools
from typing import Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from social.search_keys import KIND_CODES
from social.search_schema import VARIANTS_TABLE
from social.search_text import VARIANT_WORD_CHARS_MAX, prefix_upper_bound, variants, words

# The query's words looked up (the whole query too when it has several: a whole field
# such as `margaret hill` is a word of the index).
TYPO_QUERY_WORDS_MAX: Final = 3
# From this many characters on a query word is also taken as a word being typed: its
# variants are walked as prefixes (shorter ones are probed for equality only: a 3-letter
# variant is the beginning of thousands of words).
TYPO_PREFIX_CHARS_MIN: Final = 5
# Variants looked up per query: each is a branch of the statement per kind (SQLite allows
# 500 branches in one compound SELECT).
TYPO_VARIANTS_MAX: Final = 150
# Words read per variant walked as a prefix.
VARIANT_WORDS_PER_KEY: Final = 40
# The statement is made for the counts of walked and probed variants rounded up to these
# (the rest bound to a variant no word has): a few statement texts, each prepared and
# planned once per connection, instead of one per count pair (on PostgreSQL a new text
# cost its first request 5-10 ms more).
VARIANTS_WALKED_STEP: Final = 8
VARIANTS_PROBED_STEP: Final = 4
# Bound to the branches beyond the variants: no word has it as a variant.
_NO_VARIANT: Final = "\U0010ffff"
# Typo candidates per kind handed to search_text.closest_words.
FUZZY_WORDS_MAX: Final = 500
_KIND_NAMES: Final = {code: kind for kind, code in KIND_CODES.items()}


def lookups(query: str, chars_min: int) -> tuple[str, ...]:
    """The strings whose variants are looked up: the query's first TYPO_QUERY_WORDS_MAX
    words and, when it has several, the whole query, each of chars_min to
    VARIANT_WORD_CHARS_MAX characters. (A one-word query is its word: `quimi_` is looked
    up as `quimi`; `janedoe` meets the key `jane_doe`, whose variants include it.)"""
    query_words = words(query)
    found = dict.fromkeys((*query_words[:TYPO_QUERY_WORDS_MAX], query))
    if len(query_words) <= 1:
        found = dict.fromkeys(query_words)
    return tuple(w for w in found if chars_min <= len(w) <= VARIANT_WORD_CHARS_MAX)


def keys(query: str, chars_min: int) -> tuple[list[str], list[str]]:
    """(the variants walked as prefixes, the variants probed for equality), distinct, in
    the order of lookups() and of search_text.variants."""
    walked: dict[str, None] = {}
    probed: dict[str, None] = {}
    for w in lookups(query, chars_min):
        (walked if len(w) >= TYPO_PREFIX_CHARS_MIN else probed).update(dict.fromkeys(variants(w)))
    probed_only = [v for v in probed if v not in walked]
    kept = min(len(walked), TYPO_VARIANTS_MAX)
    return list(walked)[:kept], probed_only[: TYPO_VARIANTS_MAX - kept]


async def fuzzy_words(
    conn: AsyncConnection, kinds: tuple[str, ...], query: str, *, chars_min: int
) -> dict[str, list[str]]:
    """Of each kind, the words that share a variant with a lookup string (lookups()) or,
    walked, whose variants begin with one of its variants: the variants' order first, at
    most FUZZY_WORDS_MAX; every kind in one statement."""
    walked, probed = keys(query, chars_min)
    if not kinds or not (walked or probed):
        return {kind: [] for kind in kinds}
    n_walked = -(-len(walked) // VARIANTS_WALKED_STEP) * VARIANTS_WALKED_STEP
    n_probed = -(-len(probed) // VARIANTS_PROBED_STEP) * VARIANTS_PROBED_STEP
    values: dict[str, str] = {}
    for i in range(n_walked):
        v = walked[i] if i < len(walked) else _NO_VARIANT
        values[f"w{i}"], values[f"we{i}"] = v, prefix_upper_bound(v) if v != _NO_VARIANT else v
    for i in range(n_probed):
        values[f"p{i}"] = probed[i] if i < len(probed) else _NO_VARIANT
    rows = (await conn.execute(_statement(kinds, n_walked, n_probed), values)).all()
    out: dict[str, dict[str, None]] = {kind: {} for kind in kinds}
    for row in sorted(rows, key=lambda r: (int(r[2]), str(r[3]), str(r[1]))):
        found = out[_KIND_NAMES[int(row[0])]]
        if len(found) < FUZZY_WORDS_MAX:
            found[str(row[1])] = None
    return {kind: list(found) for kind, found in out.items()}


@functools.lru_cache(maxsize=256)
def _statement(kinds: tuple[str, ...], walked: int, probed: int) -> sa.TextClause:
    """fuzzy_words' statement for this many walked (bound w<i>, we<i>) and probed (p<i>)
    variants: one branch per kind and variant, each an index range of the variants' key
    (kind, variant, word); rows (kind code, word, the variant's rank, the variant)."""
    branches = []
    for kind in kinds:
        code = KIND_CODES[kind]
        conditions = [(i, f"variant >= :w{i} AND variant < :we{i}") for i in range(walked)]
        conditions += [(walked + i, f"variant = :p{i}") for i in range(probed)]
        for rank, condition in conditions:
            branches.append(
                f"SELECT kind, word, {rank} AS n, variant FROM (SELECT kind, word, variant"
                f" FROM {VARIANTS_TABLE} WHERE kind = {code} AND {condition}"
                f" ORDER BY variant LIMIT {VARIANT_WORDS_PER_KEY}) AS v{code}_{rank}"
            )
    return sa.text(" UNION ALL ".join(branches))
