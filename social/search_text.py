"""Pure text functions of search: folding, words, trigrams and their similarity, and the
query strings of each engine (FTS5 MATCH, tsquery, LIKE). No I/O.

Folding (what the index holds and what a query is compared as): Unicode NFKD with the
combining marks removed, case-folded, whitespace collapsed. Similarity is pg_trgm's: the
trigrams of a word padded with two spaces before and one after, |A and B| / |A or B|.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

TRIGRAM_CHARS: Final = 3
# Words for prefix matching and similarity: letters and digits (an underscore or a dot in a
# username separates words, as PostgreSQL's text parser does).
_WORD = re.compile(r"[^\W_]+")
# What a query may start with and is not part of the name: @user, #tag.
QUERY_SIGILS: Final = "@#"


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def fold_query(text: str) -> str:
    """A query as compared: folded, without a leading @ or #."""
    return fold(text).lstrip(QUERY_SIGILS).strip()


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def trigrams(word: str) -> set[str]:
    padded = f"  {word} "
    return {padded[i : i + TRIGRAM_CHARS] for i in range(len(padded) - TRIGRAM_CHARS + 1)}


def similarity(a: str, b: str) -> float:
    """pg_trgm's similarity of two words, 0 to 1."""
    ta, tb = trigrams(a), trigrams(b)
    union = len(ta | tb)
    return len(ta & tb) / union if union else 0.0


def best_word_similarity(query: str, fields: tuple[str, ...]) -> float:
    """For each word of the query, its best similarity to a word of the fields (or to a
    whole field, so "janedoe" meets "jane_doe"); their mean."""
    targets = [w for f in fields for w in words(f)] + [f.replace(" ", "") for f in fields if f]
    query_words = words(query)
    if not query_words or not targets:
        return 0.0
    return sum(max(similarity(q, t) for t in targets) for q in query_words) / len(query_words)


def fts_phrase(query: str) -> str:
    """An FTS5 MATCH string for the query as one substring (trigram tokenizer)."""
    return '"' + query.replace('"', '""') + '"'


def fts_any_trigram(query: str) -> str | None:
    """An FTS5 MATCH string for rows sharing at least one trigram with the query's words
    (None when no word has three characters)."""
    grams = sorted(
        {w[i : i + TRIGRAM_CHARS] for w in words(query) for i in range(len(w) - TRIGRAM_CHARS + 1)}
    )
    if not grams:
        return None
    return " OR ".join(fts_phrase(g) for g in grams)


def prefix_tsquery(query: str) -> str | None:
    """A PostgreSQL to_tsquery('simple', ...) string: every word of the query as a prefix."""
    found = words(query)
    if not found:
        return None
    return " & ".join(f"'{w}':*" for w in found)


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character backslash) for `text` as a substring."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def prefix_upper_bound(prefix: str) -> str:
    """The least string above every string starting with `prefix` (for an index range)."""
    return prefix + "\U0010ffff"
