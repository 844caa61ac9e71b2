"""Retrieval, answer and aggregation metrics, pinned by hand-computed values.

Each expected value is written out as the arithmetic that produces it, so a reader can check it
against the definition in ragcli/metrics.py without running anything.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragcli.metrics import (
    answer_contained,
    exact_match,
    hit_rate_at_k,
    mean,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    percentiles,
    recall_at_k,
    token_f1,
)

# --------------------------------------------------------------------------------------------------
# Retrieval metrics
# --------------------------------------------------------------------------------------------------


def test_first_result_relevant_scores_perfectly() -> None:
    retrieved = ["a.md", "b.md", "c.md"]
    relevant = {"a.md"}
    assert hit_rate_at_k(retrieved, relevant, 3) == 1.0
    assert recall_at_k(retrieved, relevant, 3) == 1.0
    assert mrr_at_k(retrieved, relevant, 3) == 1.0
    assert ndcg_at_k(retrieved, relevant, 3) == pytest.approx(1.0)


def test_no_relevant_source_retrieved() -> None:
    retrieved = ["x.md", "y.md", "x.md"]
    relevant = {"a.md", "b.md"}
    for metric in (hit_rate_at_k, recall_at_k, mrr_at_k, ndcg_at_k):
        assert metric(retrieved, relevant, 3) == 0.0


def test_relevant_at_rank_three() -> None:
    retrieved = ["x.md", "y.md", "a.md", "z.md"]
    relevant = {"a.md"}
    assert hit_rate_at_k(retrieved, relevant, 4) == 1.0
    assert recall_at_k(retrieved, relevant, 4) == 1.0
    assert mrr_at_k(retrieved, relevant, 4) == pytest.approx(1 / 3)
    # DCG = 1/log2(3 + 1) = 1/2; ideal = one relevant file at rank 1 = 1/log2(2) = 1.
    assert ndcg_at_k(retrieved, relevant, 4) == pytest.approx((1 / math.log2(4)) / (1 / math.log2(2)))


def test_k_smaller_than_the_list_cuts_it() -> None:
    retrieved = ["x.md", "y.md", "a.md"]
    relevant = {"a.md"}
    # a.md is at rank 3, outside the top 2.
    for metric in (hit_rate_at_k, recall_at_k, mrr_at_k, ndcg_at_k):
        assert metric(retrieved, relevant, 2) == 0.0
    assert mrr_at_k(retrieved, relevant, 3) == pytest.approx(1 / 3)


def test_fewer_results_than_k() -> None:
    retrieved = ["x.md", "a.md"]
    relevant = {"a.md", "b.md"}
    k = 10
    assert hit_rate_at_k(retrieved, relevant, k) == 1.0
    assert recall_at_k(retrieved, relevant, k) == pytest.approx(1 / 2)
    assert mrr_at_k(retrieved, relevant, k) == pytest.approx(1 / 2)
    # DCG: a.md at rank 2 -> 1/log2(3). Ideal: min(2 relevant, k=10) = 2 files at ranks 1, 2.
    expected = (1 / math.log2(3)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert ndcg_at_k(retrieved, relevant, k) == pytest.approx(expected)


def test_empty_retrieval_scores_zero() -> None:
    for metric in (hit_rate_at_k, recall_at_k, mrr_at_k, ndcg_at_k):
        assert metric([], {"a.md"}, 5) == 0.0


def test_two_relevant_files() -> None:
    retrieved = ["a.md", "x.md", "b.md", "y.md"]
    relevant = {"a.md", "b.md"}
    assert recall_at_k(retrieved, relevant, 4) == 1.0
    assert recall_at_k(retrieved, relevant, 2) == pytest.approx(1 / 2)
    assert mrr_at_k(retrieved, relevant, 4) == 1.0
    # DCG: ranks 1 and 3 -> 1/log2(2) + 1/log2(4). Ideal: ranks 1 and 2 -> 1/log2(2) + 1/log2(3).
    expected = (1 / 1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(retrieved, relevant, 4) == pytest.approx(expected)


def test_ideal_dcg_is_capped_at_k() -> None:
    # Three relevant files but k = 2: the ideal list holds only min(3, 2) = 2 relevant files,
    # so finding two of them at ranks 1 and 2 is a perfect score.
    retrieved = ["a.md", "b.md", "c.md"]
    relevant = {"a.md", "b.md", "c.md"}
    assert ndcg_at_k(retrieved, relevant, 2) == pytest.approx(1.0)
    assert recall_at_k(retrieved, relevant, 2) == pytest.approx(2 / 3)


def test_duplicates_of_one_source_count_once() -> None:
    # Three chunks of a.md, then b.md: a.md is credited at rank 1 only; the duplicates at ranks
    # 2 and 3 earn nothing but still push b.md down to rank 4.
    retrieved = ["a.md", "a.md", "a.md", "b.md"]
    relevant = {"a.md", "b.md"}
    assert recall_at_k(retrieved, relevant, 4) == 1.0
    assert recall_at_k(retrieved, relevant, 3) == pytest.approx(1 / 2)
    assert hit_rate_at_k(retrieved, relevant, 4) == 1.0
    assert mrr_at_k(retrieved, relevant, 4) == 1.0
    expected = (1 / math.log2(2) + 1 / math.log2(5)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert ndcg_at_k(retrieved, relevant, 4) == pytest.approx(expected)


def test_duplicates_cannot_exceed_one() -> None:
    # Without the first-occurrence rule, DCG would be 1 + 1/log2(3) + 1/log2(4) against an ideal of
    # 1 (one relevant file): nDCG > 1. With it, the score is exactly 1.
    retrieved = ["a.md", "a.md", "a.md"]
    assert ndcg_at_k(retrieved, {"a.md"}, 3) == pytest.approx(1.0)
    assert recall_at_k(retrieved, {"a.md"}, 3) == 1.0


def test_duplicate_of_irrelevant_file_before_relevant() -> None:
    retrieved = ["x.md", "x.md", "a.md"]
    assert mrr_at_k(retrieved, {"a.md"}, 3) == pytest.approx(1 / 3)
    assert ndcg_at_k(retrieved, {"a.md"}, 3) == pytest.approx(1 / math.log2(4))


@pytest.mark.parametrize("metric", [hit_rate_at_k, recall_at_k, mrr_at_k, ndcg_at_k])
def test_bad_arguments_raise(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        metric(["a.md"], set(), 5)
    with pytest.raises(ValueError):
        metric(["a.md"], {"a.md"}, 0)


# --------------------------------------------------------------------------------------------------
# Answer metrics
# --------------------------------------------------------------------------------------------------


def test_normalize_answer() -> None:
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear and THE plum.") == "apple pear and plum"
    # Articles only as whole words: "theory" and "anatomy" keep their letters.
    assert normalize_answer("Theory of anatomy") == "theory of anatomy"
    # Punctuation is deleted, not replaced by a space (SQuAD), Unicode quotes included.
    assert normalize_answer("“p-95” latency…") == "p95 latency"
    assert normalize_answer("  \t\n ") == ""


def test_exact_match_normalisation() -> None:
    assert exact_match("The Eiffel Tower.", ["eiffel tower"]) == 1.0
    assert exact_match("eiffel   TOWER", ["The Eiffel Tower!"]) == 1.0
    assert exact_match("Eiffel Tower in Paris", ["Eiffel Tower"]) == 0.0
    # Max over answers.
    assert exact_match("Paris", ["London", "paris."]) == 1.0
    # Both normalise to "": equal (SQuAD).
    assert exact_match("", ["the"]) == 1.0


def test_token_f1_partial_overlap() -> None:
    # prediction "the quick brown fox jumps" -> [quick, brown, fox, jumps] (4 tokens)
    # answer     "a brown fox"              -> [brown, fox]               (2 tokens)
    # overlap = 2; precision = 2/4, recall = 2/2; F1 = 2PR / (P + R)
    precision, recall = 2 / 4, 2 / 2
    expected = 2 * precision * recall / (precision + recall)
    assert token_f1("the quick brown fox jumps", ["a brown fox"]) == pytest.approx(expected)
    assert expected == pytest.approx(2 / 3)


def test_token_f1_counts_repeated_tokens_as_a_multiset() -> None:
    # prediction [fox, fox, fox] vs answer [fox, dog]: overlap = min(3, 1) = 1 for "fox".
    precision, recall = 1 / 3, 1 / 2
    expected = 2 * precision * recall / (precision + recall)
    assert token_f1("fox fox fox", ["fox dog"]) == pytest.approx(expected)


def test_token_f1_max_over_answers_and_edge_cases() -> None:
    assert token_f1("brown fox", ["cat", "Brown fox!"]) == 1.0
    assert token_f1("cat", ["dog"]) == 0.0
    # Both empty after normalisation: 1.0; exactly one empty: 0.0.
    assert token_f1("", ["the"]) == 1.0
    assert token_f1("", ["fox"]) == 0.0
    assert token_f1("fox", ["a"]) == 0.0


def test_answer_contained() -> None:
    assert answer_contained("It is the Eiffel Tower, in Paris.", ["eiffel tower"]) == 1.0
    assert answer_contained("It is in Paris.", ["London", "paris"]) == 1.0
    assert answer_contained("It is in Paris.", ["London"]) == 0.0
    # Whole words of the normalised text only: "4" is not in "48 hours".
    assert answer_contained("about 48 hours", ["4"]) == 0.0
    assert answer_contained("about 48 hours", ["48 hours"]) == 1.0
    # Empty answers never match, even against an empty prediction.
    assert answer_contained("anything", ["", "the"]) == 0.0
    assert answer_contained("", [""]) == 0.0


@pytest.mark.parametrize("metric", [exact_match, token_f1, answer_contained])
def test_answer_metrics_need_answers(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError):
        metric("x", [])
    with pytest.raises(TypeError):
        metric("x", "x")


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def test_mean() -> None:
    assert mean([1.0, 0.0, 0.5]) == pytest.approx((1.0 + 0.0 + 0.5) / 3)
    assert mean(iter([2.0])) == 2.0
    with pytest.raises(ValueError):
        mean([])


def test_percentiles_hand_computed() -> None:
    # Sorted [1, 2, 3, 4] (n = 4). p50: h = 3 * 0.5 = 1.5 -> 2 + 0.5 * (3 - 2) = 2.5.
    # p95: h = 3 * 0.95 = 2.85 -> 3 + 0.85 * (4 - 3) = 3.85.
    result = percentiles([4.0, 1.0, 3.0, 2.0])
    assert set(result) == {"p50", "p95", "p99"}
    assert result["p50"] == pytest.approx(2.5)
    assert result["p95"] == pytest.approx(3.85)
    assert result["p99"] == pytest.approx(3 + 0.97 * (4 - 3))


@pytest.mark.parametrize(
    "samples",
    [
        [5.0],
        [1.0, 2.0],
        [3.0, 1.0, 2.0, 10.0, 7.5],
        [0.012, 0.011, 0.013, 0.2, 0.0125, 0.0119, 0.014, 0.0111, 0.05, 0.0122, 0.0131],
        [float(x) for x in range(100)],
        [2.0, 2.0, 2.0, 9.0],
    ],
)
def test_percentiles_match_numpy(samples: list[float]) -> None:
    ps = (0, 1, 25, 50, 90, 95, 99, 99.9, 100)
    result = percentiles(samples, ps)
    for p in ps:
        assert result[f"p{p:g}"] == pytest.approx(float(np.percentile(samples, p)), rel=1e-12, abs=0)


def test_percentiles_edge_cases() -> None:
    assert percentiles([]) == {}
    assert percentiles([1.0, 2.0], ps=(99.9,)) == {"p99.9": pytest.approx(1.999)}
    with pytest.raises(ValueError):
        percentiles([1.0], ps=(101,))
    with pytest.raises(ValueError):
        percentiles([1.0, math.nan])
