"""Hybrid retrieval: fuse a dense (FAISS) and a sparse (BM25) ranking into one.

Two methods, both pure Python and deterministic:

- `rrf`: reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009). Uses ranks only, so the
  scales of the inputs do not matter; k = 60 by convention.
- `weighted`: a convex combination of per-query min-max normalised scores. Bruch et al. (arXiv
  2210.11934) find that one tuned weight beats RRF; normalising per query is what makes cosine
  similarities, unbounded BM25 scores and Databricks' 1/(1 + L2²) comparable.

Both only reorder what they are given: fuse from a candidate depth well above the final k (ask each
retriever for, say, 5-10x k), or fusion cannot promote anything (performance.md §8). With a strong
dense model blind fusion can lose to dense alone; `bench` measures every mode side by side.

Ids are chunk ids (any int). Input lists are best first; an id repeated inside one list counts only
at its first (best) position.

`adaptive` (the default) is `weighted` with the α measured on a QA set (`pick_alpha`: the α of a
grid, 0 to 1, with the best hit@1 over the questions), so it is never below the better single list on
that set: α = 0 and α = 1 reproduce the bm25 and the dense order. Equal-weight fusion is not: where one
list is much weaker (a small dense model on a corpus of names and jargon), RRF falls several points of
hit@1 below BM25 alone. Without a measured α it is `rrf`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["ALPHA_GRID", "adaptive", "pick_alpha", "rrf", "weighted"]

_NO_RANK = math.inf


def _check_top(top: int | None) -> None:
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
        raise ValueError(f"top must be None or a non-negative integer, got {top!r}")


def _first_ranks(ids: Sequence[int]) -> dict[int, int]:
    """id -> 1-based rank of its first occurrence."""
    ranks: dict[int, int] = {}
    for rank, doc_id in enumerate(ids, start=1):
        ranks.setdefault(doc_id, rank)
    return ranks


def rrf(rankings: Sequence[Sequence[int]], k: float = 60, top: int | None = None) -> list[tuple[int, float]]:
    """Reciprocal rank fusion: score(d) = Σ over rankings that contain d of 1 / (k + rank), rank from 1.

    `rankings` are lists of ids, best first (e.g. the dense and the BM25 result ids). Returns
    (id, score) for every id in any ranking, best first, cut to `top` when given.

    Ties are broken deterministically: equal scores go to the id with the better (smaller) best
    individual rank across the rankings, then to the smaller id. Sums use math.fsum, so the same
    multiset of ranks gives bit-identical scores whatever the order of the rankings (ranks (1, 2)
    and (2, 1) tie exactly).

    Raises ValueError if k < 0 or top is negative.
    """
    if not k >= 0:  # also rejects NaN
        raise ValueError(f"k must be >= 0, got {k!r}")
    _check_top(top)
    contributions: dict[int, list[float]] = {}
    best_rank: dict[int, int] = {}
    for ranking in rankings:
        for doc_id, rank in _first_ranks(ranking).items():
            contributions.setdefault(doc_id, []).append(1.0 / (k + rank))
            best_rank[doc_id] = min(rank, best_rank.get(doc_id, rank))
    scored = [(doc_id, math.fsum(parts)) for doc_id, parts in contributions.items()]
    scored.sort(key=lambda item: (-item[1], best_rank[item[0]], item[0]))
    return scored if top is None else scored[:top]


def _min_max(results: Sequence[tuple[int, float]], name: str) -> tuple[dict[int, float], dict[int, int]]:
    """Normalise scores to [0, 1] per query; return (id -> normalised score, id -> first rank)."""
    first: dict[int, float] = {}
    ranks: dict[int, int] = {}
    for rank, (doc_id, score) in enumerate(results, start=1):
        score = float(score)
        if not math.isfinite(score):
            raise ValueError(f"{name} score for id {doc_id} is not finite: {score!r}")
        if doc_id not in first:
            first[doc_id] = score
            ranks[doc_id] = rank
    if not first:
        return {}, {}
    lo, hi = min(first.values()), max(first.values())
    if hi == lo:
        # One item, or all equal: every item is as good as the best, so 1.0 (not 0/0).
        return {doc_id: 1.0 for doc_id in first}, ranks
    span = hi - lo
    return {doc_id: (score - lo) / span for doc_id, score in first.items()}, ranks


def weighted(
    dense: Sequence[tuple[int, float]],
    sparse: Sequence[tuple[int, float]],
    alpha: float,
    top: int | None = None,
) -> list[tuple[int, float]]:
    """Convex combination: score(d) = alpha · norm_dense(d) + (1 − alpha) · norm_sparse(d).

    Each list is (id, score), best first, higher score better. Scores are min-max normalised per
    list, per query: (s − min) / (max − min), so the best item of each list gets 1.0 and the worst
    0.0; a list of one item, or whose scores are all equal, normalises to 1.0. An id missing from
    one list gets 0 for that list. Returns (id, fused score) for the union of both lists, best
    first, cut to `top` when given.

    Ties are broken deterministically by rank in the list that carries more weight (dense when
    alpha >= 0.5), then by rank in the other list (absent counts as after every present item),
    then by the smaller id. Hence alpha = 1 returns the dense order exactly, followed by the
    sparse-only ids in sparse order (all with score 0.0), and alpha = 0 the other way round.

    Raises ValueError if alpha is outside [0, 1], a score is NaN or infinite, or top is negative.
    """
    if not 0.0 <= alpha <= 1.0:  # also rejects NaN
        raise ValueError(f"alpha must be within [0, 1], got {alpha!r}")
    _check_top(top)
    dense_norm, dense_rank = _min_max(dense, "dense")
    sparse_norm, sparse_rank = _min_max(sparse, "sparse")

    ids = list(dense_norm)
    ids.extend(doc_id for doc_id in sparse_norm if doc_id not in dense_norm)
    scored = [
        (doc_id, alpha * dense_norm.get(doc_id, 0.0) + (1.0 - alpha) * sparse_norm.get(doc_id, 0.0))
        for doc_id in ids
    ]
    primary, secondary = (dense_rank, sparse_rank) if alpha >= 0.5 else (sparse_rank, dense_rank)
    scored.sort(
        key=lambda item: (
            -item[1],
            primary.get(item[0], _NO_RANK),
            secondary.get(item[0], _NO_RANK),
            item[0],
        )
    )
    return scored if top is None else scored[:top]


ALPHA_GRID = tuple(round(a / 10, 1) for a in range(11))  # 0.0, 0.1, …, 1.0


def adaptive(
    dense: Sequence[tuple[int, float]],
    sparse: Sequence[tuple[int, float]],
    alpha: float | None,
    top: int | None = None,
) -> list[tuple[int, float]]:
    """The default fusion: `weighted` with the measured `alpha` (see `pick_alpha`), or `rrf` of the two
    lists' orders when none was measured (`alpha` None)."""
    if alpha is None:
        return rrf([[doc_id for doc_id, _ in dense], [doc_id for doc_id, _ in sparse]], top=top)
    return weighted(dense, sparse, alpha=alpha, top=top)


def pick_alpha(
    queries: Sequence[tuple[Sequence[tuple[int, float]], Sequence[tuple[int, float]], set[int]]],
    grid: Sequence[float] = ALPHA_GRID,
) -> tuple[float, dict[float, dict[str, float]]]:
    """The α of `grid` whose `weighted` fusion ranks a relevant id first for the most queries.

    `queries` are (dense list, sparse list, relevant ids) per question, the lists best first as for
    `weighted`. Ties go to the better mean reciprocal rank of the first relevant id (within the fused
    lists), then to the α nearer 0.5 (the least committed), then to the smaller α. Returns (α, {α:
    {"hit@1": …, "mrr": …}}) with every α of the grid, unrounded.

    Raises ValueError if `queries` or `grid` is empty or an α is outside [0, 1].
    """
    if not queries:
        raise ValueError("pick_alpha needs at least one query")
    if not grid:
        raise ValueError("pick_alpha needs a non-empty grid")
    table: dict[float, dict[str, float]] = {}
    for alpha in grid:
        hits: list[float] = []
        rrs: list[float] = []
        for dense, sparse, relevant in queries:
            fused = [doc_id for doc_id, _ in weighted(dense, sparse, alpha=alpha)]
            first = next((rank for rank, doc_id in enumerate(fused, 1) if doc_id in relevant), None)
            hits.append(1.0 if first == 1 else 0.0)
            rrs.append(1.0 / first if first else 0.0)
        table[alpha] = {"hit@1": math.fsum(hits) / len(hits), "mrr": math.fsum(rrs) / len(rrs)}
    best = min(table, key=lambda a: (-table[a]["hit@1"], -table[a]["mrr"], abs(a - 0.5), a))
    return best, table
