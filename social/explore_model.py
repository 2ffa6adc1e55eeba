"""Explore's candidates, ranking and diversification as pure functions over numpy arrays
(docs/api/explore.md). The service (social/explore.py) loads a `Corpus` from the database
once per refresh pass; the offline benchmark (bench/explore_bench.py) builds one from a
synthetic population and calls the same functions.

Users and posts are dense indices (0..n_users-1, 0..n_posts-1); a post's author is a user
index. Scores are floats, higher is better; every term is scaled to 0..1 over the posts a
viewer may be shown before the weights ([explore] *_weight_pct) add them up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from social.explore_config import ExploreConfig

Ints = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Corpus:
    """The candidate posts and the likes on them.

    like_user/like_post/like_unix_s: one entry per like. post_author: the author's user
    index; post_created_unix_s; tag_post/tag_id: one entry per (post, hashtag) pair, tag ids
    dense; post_place: a dense place id or -1."""

    n_users: int
    like_user: Ints
    like_post: Ints
    like_unix_s: Floats
    post_author: Ints
    post_created_unix_s: Floats
    tag_post: Ints
    tag_id: Ints
    post_place: Ints

    @property
    def n_posts(self) -> int:
        return len(self.post_author)


@dataclass(frozen=True)
class Index:
    """CSR views of a corpus, built once per pass (`index`), and the per-post terms that do
    not depend on the viewer."""

    corpus: Corpus
    post_users_start: Ints  # likes of post p: post_users[start[p]:start[p+1]]
    post_users: Ints
    user_posts_start: Ints
    user_posts: Ints
    post_tags_start: Ints
    post_tags: Ints
    likes: Floats  # per post
    popularity: Floats  # log1p(likes)
    trending: Floats


def _csr(keys: Ints, values: Ints, n: int) -> tuple[Ints, Ints]:
    order = np.argsort(keys, kind="stable")
    start = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=n), out=start[1:])
    return start, values[order].astype(np.int64)


def index(corpus: Corpus, config: ExploreConfig, *, now: float) -> Index:
    n = corpus.n_posts
    pu_start, pu = _csr(corpus.like_post, corpus.like_user, n)
    up_start, up = _csr(corpus.like_user, corpus.like_post, corpus.n_users)
    pt_start, pt = _csr(corpus.tag_post, corpus.tag_id, n)
    likes = np.bincount(corpus.like_post, minlength=n).astype(np.float64)
    return Index(
        corpus,
        pu_start,
        pu,
        up_start,
        up,
        pt_start,
        pt,
        likes,
        np.log1p(likes),
        trending(corpus, likes, config, now=now),
    )


def trending(corpus: Corpus, likes: Floats, config: ExploreConfig, *, now: float) -> Floats:
    """Engagement above expectation with a time decay: (recent - expected) / expected,
    where recent = likes within trending_window_s and expected = the author's mean likes
    per post + trending_prior_likes, times 0.5 ** (age / trending_half_life_s); 0 when not
    above expectation."""
    n = corpus.n_posts
    recent_mask = corpus.like_unix_s >= now - config.trending_window_s
    recent = np.bincount(corpus.like_post[recent_mask], minlength=n).astype(np.float64)
    authors = corpus.post_author
    n_authors = int(authors.max()) + 1 if n else 0
    posts_by = np.bincount(authors, minlength=n_authors).astype(np.float64)
    likes_by = np.bincount(authors, weights=likes, minlength=n_authors)
    expected = likes_by[authors] / np.maximum(posts_by[authors], 1.0) + config.trending_prior_likes
    age = np.maximum(now - corpus.post_created_unix_s, 0.0)
    decay = np.power(0.5, age / config.trending_half_life_s)
    return np.asarray(np.maximum(recent - expected, 0.0) / expected * decay, dtype=np.float64)


def _rows(start: Ints, values: Ints, rows: Ints) -> tuple[Ints, Ints]:
    """The values of several CSR rows concatenated, and the row position of each."""
    lengths = start[rows + 1] - start[rows]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(rows)), lengths)
    offsets = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return values[start[rows][owner] + offsets], owner


def co_engagement(idx: Index, viewer_posts: Ints, config: ExploreConfig) -> Floats:
    """People who liked what you liked also liked: for every post j, the sum over the
    viewer's liked posts i of the cosine similarity co(i, j) / sqrt(n_i n_j) of their
    likers (co: users who liked both), computed through the likers (no item-item matrix)."""
    n = idx.corpus.n_posts
    mine = viewer_posts[-config.viewer_likes_max :] if len(viewer_posts) else viewer_posts
    if len(mine) == 0:
        return np.zeros(n)
    likers, which = _rows(idx.post_users_start, idx.post_users, mine)
    if len(likers) == 0:
        return np.zeros(n)
    # Each liker of post i counts 1/sqrt(n_i), at most likers_per_post_max per post.
    rank_in_post = np.arange(len(which)) - np.searchsorted(which, which)
    keep = rank_in_post < config.likers_per_post_max
    likers, which = likers[keep], which[keep]
    weight = 1.0 / np.sqrt(np.maximum(idx.likes[mine[which]], 1.0))
    per_user = np.bincount(likers, weights=weight, minlength=idx.corpus.n_users)
    users = np.flatnonzero(per_user)
    liked, owner = _rows(idx.user_posts_start, idx.user_posts, users)
    scores = np.bincount(liked, weights=per_user[users][owner], minlength=n)
    return np.asarray(scores / np.sqrt(np.maximum(idx.likes, 1.0)), dtype=np.float64)


def interest(idx: Index, viewer_posts: Ints) -> Floats:
    """Popular posts in the viewer's hashtags and places: the share of the viewer's liked
    (and own) posts carrying each hashtag or place the post carries, times log1p(likes)."""
    c = idx.corpus
    n = c.n_posts
    if len(viewer_posts) == 0:
        return np.zeros(n)
    tags, _ = _rows(idx.post_tags_start, idx.post_tags, viewer_posts)
    affinity = np.zeros(n)
    if len(tags):
        share = np.bincount(tags, minlength=int(c.tag_id.max()) + 1) / len(viewer_posts)
        affinity += np.bincount(c.tag_post, weights=share[c.tag_id], minlength=n)
    places = c.post_place[viewer_posts]
    places = places[places >= 0]
    if len(places):
        share = np.bincount(places, minlength=int(c.post_place.max()) + 1) / len(viewer_posts)
        has = c.post_place >= 0
        affinity[has] += share[c.post_place[has]]
    return np.asarray(affinity * idx.popularity, dtype=np.float64)


def _scaled(values: Floats, allowed: npt.NDArray[np.bool_]) -> Floats:
    top = float(values[allowed].max()) if allowed.any() else 0.0
    return values / top if top > 0 else np.zeros_like(values)


def rank(
    idx: Index,
    viewer_posts: Ints,
    excluded_authors: Ints,
    config: ExploreConfig,
    *,
    own_posts: Ints | None = None,
) -> Ints:
    """The viewer's list, best first, diversified: posts of authors not excluded (the
    caller excludes the viewer, followed, blocked either way and private accounts), not
    liked by the viewer, with a positive score, at most list_posts_max."""
    c = idx.corpus
    allowed = ~np.isin(c.post_author, excluded_authors)
    allowed[viewer_posts] = False
    context = viewer_posts if own_posts is None else np.concatenate([viewer_posts, own_posts])
    score = (
        config.co_engagement_weight_pct * _scaled(co_engagement(idx, viewer_posts, config), allowed)
        + config.interest_weight_pct * _scaled(interest(idx, context), allowed)
        + config.trending_weight_pct * _scaled(idx.trending, allowed)
        + config.popularity_weight_pct * _scaled(idx.popularity, allowed)
    ) / 100.0
    candidates = np.flatnonzero(allowed & (score > 0))
    # Best first, then newest.
    order = np.lexsort((-c.post_created_unix_s[candidates], -score[candidates]))
    top = candidates[order[: 2 * config.list_posts_max]]
    return diversify(idx, top, config)[: config.list_posts_max]


def diversify(idx: Index, ordered: Ints, config: ExploreConfig) -> Ints:
    """Pages of page_posts_default posts with at most per_author_per_page_max posts of an
    author and per_hashtag_per_page_max of a hashtag each; a post over a cap moves to a
    later page (the order is otherwise kept). At most list_posts_max posts.

    Each post in rank order goes to the first page with room that its author and hashtags
    fit: the same pages as filling page 1 from the whole list, page 2 from what it left,
    and so on, without rescanning the list per page."""
    size = config.page_posts_default
    author_cap, tag_cap = config.per_author_per_page_max, config.per_hashtag_per_page_max
    start = idx.post_tags_start.tolist()
    tags = idx.post_tags.tolist()
    authors = idx.corpus.post_author[ordered].tolist()
    pages: list[tuple[list[int], dict[int, int], dict[int, int]]] = []
    first = 0  # the first page with room
    for post, author in zip(ordered.tolist(), authors, strict=True):
        own = tags[start[post] : start[post + 1]]
        k = first
        while True:
            if k == len(pages):
                pages.append(([], {}, {}))
            members, by_author, by_tag = pages[k]
            if (
                len(members) < size
                and by_author.get(author, 0) < author_cap
                and all(by_tag.get(t, 0) < tag_cap for t in own)
            ):
                members.append(post)
                by_author[author] = by_author.get(author, 0) + 1
                for t in own:
                    by_tag[t] = by_tag.get(t, 0) + 1
                break
            k += 1
        while first < len(pages) and len(pages[first][0]) == size:
            first += 1
    out = [post for members, _, _ in pages for post in members]
    return np.asarray(out[: config.list_posts_max], dtype=np.int64)


def user_posts(idx: Index, user: int) -> Ints:
    """The posts a user liked (in like order as given to the corpus)."""
    return idx.user_posts[idx.user_posts_start[user] : idx.user_posts_start[user + 1]]


def popular(idx: Index, allowed: npt.NDArray[np.bool_], limit: int) -> Ints:
    """The global popularity baseline: the most liked allowed posts."""
    candidates = np.flatnonzero(allowed)
    return candidates[np.argsort(-idx.likes[candidates], kind="stable")[:limit]]


def describe(idx: Index) -> dict[str, Any]:
    return {"posts": idx.corpus.n_posts, "likes": len(idx.corpus.like_post)}
