"""Pure text functions of search: folding, words, trigrams and their similarity, and the
query strings of each engine (FTS5 MATCH, tsquery, LIKE). No I/O.

Folding (what the index holds and what a query is compared as): Unicode NFKD with the
combining marks removed, case-folded, whitespace collapsed. Similarity is pg_trgm's: the
trigrams of a word padded with two spaces before and one after, |A and B| / |A or B|.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

from rapidfuzz import process
from rapidfuzz.distance import OSA

TRIGRAM_CHARS: Final = 3
# Words whose trigrams are kept (ranking meets the same names query after query).
TRIGRAM_CACHE_WORDS: Final = 65536
# Words for prefix matching and similarity: letters and digits (an underscore or a dot in a
# username separates words, as PostgreSQL's text parser does).
_WORD = re.compile(r"[^\W_]+")
# What a query may start with and is not part of the name: @user, #tag.
QUERY_SIGILS: Final = "@#"


def fold(text: str) -> str:
    if text.isascii():  # most names: nothing to decompose (and 10x cheaper)
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def fold_query(text: str) -> str:
    """A query as compared: folded, without a leading @ or #."""
    return fold(text).lstrip(QUERY_SIGILS).strip()


@functools.lru_cache(maxsize=TRIGRAM_CACHE_WORDS)
def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text))


@functools.lru_cache(maxsize=TRIGRAM_CACHE_WORDS)
def trigrams(word: str) -> frozenset[str]:
    padded = f"  {word} "
    return frozenset(padded[i : i + TRIGRAM_CHARS] for i in range(len(padded) - TRIGRAM_CHARS + 1))


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity of two words, 0 to 1."""
    ta, tb = trigrams(a), trigrams(b)
    union = len(ta | tb)
    return len(ta & tb) / union if union else 0.0


def edit_distance(a: str, b: str, *, cutoff: int | None = None) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions and swaps of
    two neighbours, each 1 (rapidfuzz's, in C: the Python loops were most of a typo
    query's ranking, 6.9 of 22 s over the bench's 1,000 requests under cProfile). With
    `cutoff`, any distance above it comes back as cutoff + 1, sooner."""
    return int(OSA.distance(a, b, score_cutoff=cutoff))


def edits_allowed(query_word: str) -> int:
    """Typos forgiven in a word: one up to EDITS_ONE_CHARS_MAX characters, else two."""
    return 1 if len(query_word) <= EDITS_ONE_CHARS_MAX else 2


EDITS_ONE_CHARS_MAX: Final = 5
# More than any edits_allowed: the rank of a word within no typo of the query.
_NOT_CLOSE: Final = 99


def closest_words(query: str, found: list[str], limit: int) -> list[str]:
    """At most `limit` of `found` (words of the index, in the engine's order): first those
    within edits_allowed typos of a query word or of the whole query, compared whole or
    (a word still being typed) by their beginning as long as it, fewest edits first; then
    the others in their order. rapidfuzz compares the whole list in C (about 0.2 ms for
    500 words)."""
    best = [_NOT_CLOSE] * len(found)
    for q in dict.fromkeys((*words(query), query)):
        allowed = edits_allowed(q)
        for choices in (found, [w[: len(q)] for w in found]):
            for _, distance, i in process.extract(
                q, choices, scorer=OSA.distance, score_cutoff=allowed, limit=None
            ):
                best[i] = min(best[i], int(distance))
    order = sorted(range(len(found)), key=lambda i: (best[i], i))
    return [found[i] for i in order[:limit]]


@functools.lru_cache(maxsize=TRIGRAM_CACHE_WORDS)
def word_similarity(query_word: str, target: str) -> float:
    """0 to 1: the better of pg_trgm's similarity and, within edits_allowed typos, 1 minus
    the share of characters edited, of the whole target or (a word being typed) of its
    beginning as long as the query. Remembered per pair: the candidates of one query
    share most of their words (a full-name word such as `robert` comes back with every
    Robert)."""
    best = similarity(query_word, target)
    allowed = edits_allowed(query_word)
    for whole in (target, target[: len(query_word)]):
        # An edit changes the length by at most 1.
        if abs(len(whole) - len(query_word)) > allowed:
            continue
        distance = edit_distance(query_word, whole, cutoff=allowed)
        if distance <= allowed:
            best = max(best, 1 - distance / max(len(query_word), len(whole)))
    return best


def best_word_similarity(query: str, fields: tuple[str, ...]) -> float:
    """For each word of the query, its best similarity to a word of the fields (or to a
    whole field, so "janedoe" meets "jane_doe"); the least of them (every word must
    match)."""
    targets = [w for f in fields for w in words(f)] + [f.replace(" ", "") for f in fields if f]
    query_words = words(query)
    if not query_words or not targets:
        return 0.0
    return min(max(word_similarity(q, t) for t in targets) for q in query_words)


def fts_phrase(query: str) -> str:
    """An FTS5 MATCH string for the query as one substring (trigram tokenizer)."""
    return '"' + query.replace('"', '""') + '"'


def index_keys(fields: tuple[str, ...]) -> tuple[str, ...]:
    """The keys a prefix query walks for an entity's folded fields: each whole field (the
    name first) and each word of every field, at most INDEX_KEYS_MAX, none empty."""
    keys = dict.fromkeys(f for f in fields if f)
    for f in fields:
        keys.update(dict.fromkeys(words(f)))
    return tuple(keys)[:INDEX_KEYS_MAX]


# Keys per entity (a name, a full name and their words; more words are not prefix-indexed
# but stay substring-searchable).
INDEX_KEYS_MAX: Final = 12


def prefix_tsquery(query: str) -> str | None:
    """A PostgreSQL to_tsquery('simple', ...) string: every word of the query as a prefix."""
    found = words(query)
    if not found:
        return None
    return " & ".join(f"'{w}':*" for w in found)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character backslash) for `text` as a substring."""
    return f"%{_like_escape(text)}%"


# Words with one-character-deletion variants (social/search_variants.py); a longer word is
# found by its prefixes and substrings only.
VARIANT_WORD_CHARS_MAX: Final = 40


def variants(word: str) -> tuple[str, ...]:
    """The word and each string it gives with one character deleted, distinct, the word
    first. Two words within one typo of each other (an insertion, a deletion, a
    substitution or a swap of neighbours) share a variant; so do a word being typed and
    the beginning of a word within one typo of it (search_variants walks each variant as
    a prefix)."""
    return tuple(dict.fromkeys((word, *(word[:i] + word[i + 1 :] for i in range(len(word))))))


def prefix_upper_bound(prefix: str) -> str:
    """The least string above every string starting with `prefix` (for an index range)."""
    return prefix + "\U0010ffff"
