"""Hybrid fusion: reciprocal rank fusion and the normalised convex combination, hand-computed."""

from __future__ import annotations

import pytest

from ragcli.fusion import rrf, weighted


def _ids(results: list[tuple[int, float]]) -> list[int]:
    return [doc_id for doc_id, _ in results]


# --------------------------------------------------------------------------------------------------
# RRF
# --------------------------------------------------------------------------------------------------


def test_rrf_hand_computed() -> None:
    dense = [10, 20, 30]
    sparse = [30, 40, 10]
    result = dict(rrf([dense, sparse], k=60))
    assert result[10] == pytest.approx(1 / (60 + 1) + 1 / (60 + 3))
    assert result[30] == pytest.approx(1 / (60 + 3) + 1 / (60 + 1))
    assert result[20] == pytest.approx(1 / (60 + 2))
    assert result[40] == pytest.approx(1 / (60 + 2))
    assert len(result) == 4


def test_rrf_order_and_tie_breaking() -> None:
    # 10 and 30 tie exactly (ranks {1, 3} each); both have best rank 1 -> smaller id first.
    # 20 and 40 tie (rank 2 once each), best rank 2 each -> smaller id first.
    result = rrf([[10, 20, 30], [30, 40, 10]], k=60)
    assert _ids(result) == [10, 30, 20, 40]
    assert result[0][1] == result[1][1]  # bit-identical, not merely close


def test_rrf_tie_broken_by_best_rank_before_id() -> None:
    # k = 0 makes exact ties easy to build: score = sum of 1/rank.
    first = [1, 50, 2, 3]  # 1: 1/1, 50: 1/2, 2: 1/3, 3: 1/4
    second = [4, 6, 8, 3]  # 4: 1/1, 6: 1/2, 8: 1/3, 3: 1/4
    result = rrf([first, second], k=0)
    scores = dict(result)
    assert scores[3] == 1 / 4 + 1 / 4 == scores[50] == scores[6] == 1 / 2
    # Score 1: ids 1 and 4, both best rank 1 -> by id.
    # Score 1/2: 6 and 50 (best rank 2) before 3 (best rank 4), although 3 is the smallest id.
    # Score 1/3: 2 and 8, both best rank 3 -> by id.
    assert _ids(result) == [1, 4, 6, 50, 3, 2, 8]


def test_rrf_single_ranking_keeps_its_order() -> None:
    ranking = [5, 3, 9, 1]
    assert _ids(rrf([ranking])) == ranking


def test_rrf_repeated_id_in_one_ranking_counts_once() -> None:
    result = dict(rrf([[1, 2, 1]], k=60))
    assert result[1] == pytest.approx(1 / 61)
    assert result[2] == pytest.approx(1 / 62)


def test_rrf_top_and_empty_inputs() -> None:
    assert rrf([]) == []
    assert rrf([[], []]) == []
    assert rrf([[1, 2, 3], []], top=2) == [(1, pytest.approx(1 / 61)), (2, pytest.approx(1 / 62))]
    assert rrf([[1, 2]], top=0) == []
    with pytest.raises(ValueError):
        rrf([[1]], k=-1)
    with pytest.raises(ValueError):
        rrf([[1]], top=-1)


# --------------------------------------------------------------------------------------------------
# Weighted (convex combination)
# --------------------------------------------------------------------------------------------------

DENSE = [(1, 0.9), (2, 0.7), (3, 0.5)]
SPARSE = [(3, 12.0), (4, 8.0), (1, 2.0)]


def test_weighted_hand_computed() -> None:
    # Dense min-max: min 0.5, max 0.9 -> 1: (0.9-0.5)/0.4 = 1, 2: (0.7-0.5)/0.4 = 0.5, 3: 0.
    # Sparse min-max: min 2, max 12 -> 3: 1, 4: (8-2)/10 = 0.6, 1: 0.
    alpha = 0.3
    result = dict(weighted(DENSE, SPARSE, alpha))
    assert result[1] == pytest.approx(alpha * 1.0 + (1 - alpha) * 0.0)  # 0.3
    assert result[2] == pytest.approx(alpha * 0.5 + (1 - alpha) * 0.0)  # 0.15 (missing from sparse)
    assert result[3] == pytest.approx(alpha * 0.0 + (1 - alpha) * 1.0)  # 0.7
    assert result[4] == pytest.approx(alpha * 0.0 + (1 - alpha) * 0.6)  # 0.42 (missing from dense)
    assert _ids(weighted(DENSE, SPARSE, alpha)) == [3, 4, 1, 2]


def test_weighted_alpha_one_is_dense_order() -> None:
    result = weighted(DENSE, SPARSE, 1.0)
    # Dense ids in dense order (3 normalises to 0 and ties with sparse-only 4; dense rank wins),
    # then the sparse-only id.
    assert _ids(result) == [1, 2, 3, 4]
    assert dict(result)[4] == 0.0


def test_weighted_alpha_zero_is_sparse_order() -> None:
    result = weighted(DENSE, SPARSE, 0.0)
    assert _ids(result) == [3, 4, 1, 2]
    assert dict(result)[2] == 0.0


def test_weighted_single_item_and_equal_scores_normalise_to_one() -> None:
    # One item per list: each normalises to 1.0.
    result = dict(weighted([(7, 0.42)], [(8, 3.3)], 0.25))
    assert result[7] == pytest.approx(0.25 * 1.0)
    assert result[8] == pytest.approx(0.75 * 1.0)
    # All-equal scores: all 1.0; with alpha = 0.5 ties fall to dense rank, then sparse rank.
    result = weighted([(5, 0.3), (6, 0.3)], [(6, 1.0), (5, 1.0)], 0.5)
    assert [score for _, score in result] == [pytest.approx(1.0), pytest.approx(1.0)]
    assert _ids(result) == [5, 6]


def test_weighted_tie_breaking_uses_heavier_list() -> None:
    # 1 is best in dense, 2 best in sparse; with alpha = 0.5 both score 0.5 * 1 + 0.5 * 0 = 0.5.
    dense = [(1, 1.0), (2, 0.0)]
    sparse = [(2, 1.0), (1, 0.0)]
    assert _ids(weighted(dense, sparse, 0.5)) == [1, 2]  # alpha >= 0.5: dense rank decides
    # The sparse side decides when alpha < 0.5:
    dense_eq = [(1, 0.2), (2, 0.2)]  # both normalise to 1.0
    sparse_eq = [(2, 5.0), (1, 5.0)]  # both normalise to 1.0
    assert _ids(weighted(dense_eq, sparse_eq, 0.4)) == [2, 1]  # alpha < 0.5: sparse rank decides


def test_weighted_ids_absent_from_heavier_list_keep_their_own_order() -> None:
    # alpha = 0: dense-only ids all score 0 and have no sparse rank; their dense order decides,
    # not their ids (9 before 4).
    result = weighted([(9, 1.0), (4, 0.5)], [], 0.0)
    assert result == [(9, 0.0), (4, 0.0)]


def test_weighted_empty_inputs_and_top() -> None:
    assert weighted([], [], 0.5) == []
    assert _ids(weighted(DENSE, [], 0.5)) == [1, 2, 3]
    assert _ids(weighted([], SPARSE, 0.5)) == [3, 4, 1]
    assert _ids(weighted(DENSE, SPARSE, 0.3, top=2)) == [3, 4]


def test_weighted_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        weighted(DENSE, SPARSE, 1.5)
    with pytest.raises(ValueError):
        weighted(DENSE, SPARSE, float("nan"))
    with pytest.raises(ValueError):
        weighted([(1, float("inf"))], [], 0.5)
    with pytest.raises(ValueError):
        weighted(DENSE, SPARSE, 0.5, top=-1)
