"""ragcli.metrics against a reference implementation (ranx): retrieval metrics on hand-made and random runs,
binary and graded relevance, per question, to 1e-9.

ranx scores a run of unique documents with scores; ragcli scores a ranked list of sources. With unique
entries the two must agree exactly (ragcli's duplicate rule, first occurrence only, is tested by hand in
tests/test_metrics.py). ranx compiles its metrics with numba on first use, hence `slow`.
"""

from __future__ import annotations

import random
import warnings

import pytest

from ragcli import metrics as M

pytestmark = pytest.mark.slow

KS = (1, 3, 5, 10)


def _ours(ranked: list[str], relevance: dict[str, float], k: int, graded: bool) -> dict[str, float]:
    relevant = set(relevance)
    return {
        f"hit_rate@{k}": M.hit_rate_at_k(ranked, relevant, k),
        f"recall@{k}": M.recall_at_k(ranked, relevant, k),
        f"mrr@{k}": M.mrr_at_k(ranked, relevant, k),
        f"ndcg@{k}": M.ndcg_at_k(ranked, relevance if graded else relevant, k),
    }


def _ranx(qrels: dict[str, dict[str, float]], runs: dict[str, list[str]], k: int) -> dict[str, dict[str, float]]:
    from ranx import Qrels, Run, evaluate

    # Scores strictly decreasing with rank, so ranx ranks exactly as the list does (no ties).
    run = Run({q: {doc: float(len(docs) - i) for i, doc in enumerate(docs)} for q, docs in runs.items()})
    reference = Qrels({q: {d: int(g) for d, g in rel.items()} for q, rel in qrels.items()})
    names = [f"hit_rate@{k}", f"recall@{k}", f"mrr@{k}", f"ndcg@{k}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # numba's type-safety notes from inside ranx
        scores = evaluate(reference, run, names, return_mean=False, make_comparable=True)
    keys = list(reference.keys())
    return {q: {name: float(scores[name][keys.index(q)]) for name in names} for q in qrels}


def _compare(qrels: dict[str, dict[str, float]], runs: dict[str, list[str]], graded: bool) -> int:
    checked = 0
    for k in KS:
        reference = _ranx(qrels, runs, k)
        for q, docs in runs.items():
            ours = _ours(docs, qrels[q], k, graded)
            for name, value in ours.items():
                assert value == pytest.approx(reference[q][name], abs=1e-9, rel=0), (q, name, docs, qrels[q])
                checked += 1
        # The report's average is the mean over questions: equal to ranx's mean too.
        for name in reference[next(iter(runs))]:
            assert M.mean(_ours(runs[q], qrels[q], k, graded)[name] for q in runs) == pytest.approx(
                M.mean(reference[q][name] for q in runs), abs=1e-9, rel=0)
    return checked


HAND_QRELS = {
    "first": {"a": 1},
    "second": {"a": 1},
    "missed": {"z": 1},
    "two_relevant": {"b": 1, "d": 1},
    "more_relevant_than_k": {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "i": 1, "j": 1, "k": 1},
    "graded": {"a": 3, "c": 1, "e": 2},
    "graded_ideal": {"a": 3, "b": 2, "c": 1},
    "short_run": {"b": 2},
}
HAND_RUNS = {
    "first": ["a", "b", "c"],
    "second": ["x", "a", "b"],
    "missed": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"],
    "two_relevant": ["a", "b", "c", "d", "e"],
    "more_relevant_than_k": ["x", "a", "y", "b", "c", "d", "e", "f", "g", "h", "i"],
    "graded": ["c", "e", "x", "a", "y"],
    "graded_ideal": ["a", "b", "c", "x"],
    "short_run": ["a", "b"],
}


def test_hand_made_runs_binary_equal_ranx():
    binary = {q: dict.fromkeys(rel, 1.0) for q, rel in HAND_QRELS.items()}
    assert _compare(binary, HAND_RUNS, graded=False) == len(KS) * len(HAND_RUNS) * 4


def test_hand_made_runs_graded_equal_ranx():
    assert _compare(HAND_QRELS, HAND_RUNS, graded=True) == len(KS) * len(HAND_RUNS) * 4
    # A hand-checked value, so both cannot be wrong the same way: "graded" at k=5 has
    # DCG = 1/log2(2) + 2/log2(3) + 3/log2(5), ideal = 3 + 2/log2(3) + 1/log2(4).
    import math

    expected = (1 + 2 / math.log2(3) + 3 / math.log2(5)) / (3 + 2 / math.log2(3) + 0.5)
    assert M.ndcg_at_k(HAND_RUNS["graded"], HAND_QRELS["graded"], 5) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("graded", [False, True], ids=["binary", "graded"])
def test_random_runs_equal_ranx(graded):
    rng = random.Random(14 + graded)
    docs = [f"d{i}" for i in range(40)]
    qrels, runs = {}, {}
    for n in range(200):
        relevant = rng.sample(docs, rng.randint(1, 8))
        qrels[f"q{n}"] = {d: float(rng.randint(1, 3) if graded else 1) for d in relevant}
        runs[f"q{n}"] = rng.sample(docs, rng.randint(1, 15))
    assert _compare(qrels, runs, graded) == len(KS) * 200 * 4
