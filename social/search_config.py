"""Search and places configuration: the [search] table of pinhole.toml, parsed once into a
frozen, validated SearchConfig (docs/api/search.md lists every field)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.config import build


@dataclass(frozen=True, slots=True)
class SearchConfig:
    # A query longer than this is refused (400), shorter than query_chars_min finds nothing.
    query_chars_max: int = 100
    # Results of one search page, and of one typeahead answer.
    results_default: int = 20
    results_max: int = 50
    typeahead_results_max: int = 10
    # Rows each candidate query may return before ranking (per kind, per source).
    candidates_max: int = 100
    # Prefix (and substring) candidates per result asked (typeahead of 10: the 40 most
    # popular names and words starting with the query, and as many of those the viewer
    # follows), at most candidates_max.
    candidates_per_result: int = 4
    # Fuzzy matching (typos, missing letters) starts at this many characters; a candidate
    # counts when its trigram similarity to the query is at least fuzzy_similarity_min_pct.
    fuzzy_chars_min: int = 4
    fuzzy_similarity_min_pct: int = 30
    # Typo candidates per kind (each is ranked in Python: the cost of a typo query grows
    # with it). Since the candidates come from the words closest by edit distance
    # (search_text.closest_words), 40 found 121 of 136 one-typo names among 100,000
    # accounts, 100 found 119 (more distractors).
    fuzzy_candidates_max: int = 40
    # Ranking weights in percent (docs/api/search.md): match quality, popularity (followers,
    # post counts on a log scale), a followed account, an account the viewer engages with.
    match_weight_pct: int = 100
    popularity_weight_pct: int = 30
    followed_weight_pct: int = 100
    engaged_weight_pct: int = 50
    # The viewer's latest likes read to find the accounts they engage with.
    engaged_likes_max: int = 200
    # Places: the name's length, and the decimals kept of a place's coordinates (2: about
    # 1.1 km; the exact spot is never stored).
    place_name_chars_max: int = 100
    place_coordinate_decimals: int = 2
    # Hashtag and place pages.
    page_posts_default: int = 24
    page_posts_max: int = 60

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in (
            "query_chars_max",
            "results_default",
            "results_max",
            "candidates_max",
            "candidates_per_result",
            "fuzzy_candidates_max",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.results_default > self.results_max:
            raise ValueError("results_default must not exceed results_max")
        if self.typeahead_results_max > self.results_max:
            raise ValueError("typeahead_results_max must not exceed results_max")
        if self.results_max > self.candidates_max:
            raise ValueError("results_max must not exceed candidates_max")
        if not 1 <= self.page_posts_default <= self.page_posts_max:
            raise ValueError("page_posts_default must be between 1 and page_posts_max")
        if self.fuzzy_chars_min < 3:
            raise ValueError("fuzzy_chars_min must be >= 3 (trigrams)")
        if self.fuzzy_similarity_min_pct > 100:
            raise ValueError("fuzzy_similarity_min_pct must be <= 100")
        if self.place_coordinate_decimals > 4:
            raise ValueError("place_coordinate_decimals must be <= 4 (coarse places only)")
        if not 1 <= self.place_name_chars_max <= 100:
            raise ValueError("place_name_chars_max must be between 1 and 100")


def search_config(document: dict[str, Any], **overrides: Any) -> SearchConfig:
    table = dict(document.get("search", {}))
    table.update({k: v for k, v in overrides.items() if v is not None})
    return build(SearchConfig, table, where="search.")
