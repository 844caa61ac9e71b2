"""Retrieval and answer metrics for `ragcli bench`, as pure functions (stdlib only).

Retrieval metrics score a ranked list of retrieved *source files* against the set of files a QA row
labels as relevant (`sources` in the QA file). The list has one entry per retrieved chunk, so the same
file may appear several times: `k` always counts chunks (the top k chunks the retriever returned), and
each metric says how it treats a file that repeats. Labels are files, not chunks, so they survive a
change of chunking (design.md, "Bench").

Answer metrics follow the SQuAD evaluation script: normalise both strings (lowercase, strip
punctuation, drop the articles a/an/the, collapse whitespace), then compare. Every answer metric takes
a list of acceptable answers and returns the best score over them.

Aggregation helpers (`mean`, `percentiles`) are here so the report and the unit tests share one
definition; `percentiles` matches numpy's default ("linear") method without importing numpy.

All functions raise `ValueError` on inputs that have no meaningful score (an empty relevant set, an
empty answer list, k < 1) rather than returning a number that would silently skew an average.
"""

from __future__ import annotations

import math
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "answer_contained",
    "exact_match",
    "hit_rate_at_k",
    "mean",
    "mrr_at_k",
    "ndcg_at_k",
    "normalize_answer",
    "percentiles",
    "recall_at_k",
    "token_f1",
]


# --------------------------------------------------------------------------------------------------
# Retrieval metrics
# --------------------------------------------------------------------------------------------------


def _check_retrieval_args(relevant: set[str], k: int) -> None:
    if not relevant:
        raise ValueError("relevant must name at least one source file")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def hit_rate_at_k(retrieved: Sequence[str], relevant: set[str], k: int) -> float:
    """1.0 if any of the top `k` retrieved entries is a relevant file, else 0.0.

    `retrieved` holds one source file per retrieved chunk, best first; duplicates are harmless here.
    Fewer than `k` entries is fine (only those present are looked at).

    Raises ValueError if `relevant` is empty or `k` < 1.
    """
    _check_retrieval_args(relevant, k)
    return 1.0 if any(source in relevant for source in retrieved[:k]) else 0.0


def recall_at_k(retrieved: Sequence[str], relevant: set[str], k: int) -> float:
    """Fraction of the relevant files that appear at least once in the top `k` retrieved entries.

    Counts *distinct* files: two chunks of the same relevant file found in the top k count once, so
    the value never exceeds 1.0. Fewer than `k` entries is fine.

    Raises ValueError if `relevant` is empty or `k` < 1.
    """
    _check_retrieval_args(relevant, k)
    found = {source for source in retrieved[:k] if source in relevant}
    return len(found) / len(relevant)


def mrr_at_k(retrieved: Sequence[str], relevant: set[str], k: int) -> float:
    """Reciprocal rank (1/rank, rank starting at 1) of the first relevant entry in the top `k`, else 0.0.

    Only the first relevant entry matters, so later duplicates have no effect. Averaging this over
    QA rows (`mean`) gives MRR@k.

    Raises ValueError if `relevant` is empty or `k` < 1.
    """
    _check_retrieval_args(relevant, k)
    for rank, source in enumerate(retrieved[:k], start=1):
        if source in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(retrieved: Sequence[str], relevant: set[str] | Mapping[str, float], k: int) -> float:
    """Normalised discounted cumulative gain over the top `k` entries, binary or graded.

    `relevant` is a set of relevant files (binary relevance: every gain is 1) or a mapping from each
    relevant file to its grade (graded relevance, e.g. BEIR qrels: the gain is the grade, as in
    trec_eval's and ranx's "ndcg"; files missing from the mapping, or graded <= 0, gain 0).

    DCG = sum over ranks r (starting at 1) of gain_r / log2(r + 1), where gain_r is the grade of the
    entry at rank r if that file is **seen for the first time** in the ranking, else 0. Duplicate rule:
    chunks of one file repeat in the list, and crediting each of them would let a retriever that
    returns five chunks of one relevant file beat one that finds every relevant file; so a relevant
    file earns its gain only at its first occurrence and later duplicates earn 0 (they still take
    up a rank). The ideal DCG puts the min(len(relevant), k) highest grades at ranks 1, 2, ..., so the
    result lies in [0, 1]. Fewer than `k` entries is fine. With unique entries this equals ranx's
    ndcg@k (tests/test_metrics.py checks it to 1e-9).

    Raises ValueError if `relevant` is empty (or has no positive grade) or `k` < 1.
    """
    grades = _grades(relevant)
    _check_retrieval_args(set(grades), k)
    credited: set[str] = set()
    dcg = 0.0
    for rank, source in enumerate(retrieved[:k], start=1):
        if source in grades and source not in credited:
            credited.add(source)
            dcg += grades[source] / math.log2(rank + 1)
    best = sorted(grades.values(), reverse=True)[:k]
    ideal = math.fsum(g / math.log2(rank + 1) for rank, g in enumerate(best, start=1))
    return dcg / ideal


def _grades(relevant: set[str] | Mapping[str, float]) -> dict[str, float]:
    if isinstance(relevant, Mapping):
        return {name: float(g) for name, g in relevant.items() if g > 0}
    return dict.fromkeys(relevant, 1.0)


# --------------------------------------------------------------------------------------------------
# Answer metrics
# --------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ASCII_PUNCTUATION = frozenset(string.punctuation)


def _is_punctuation(char: str) -> bool:
    # SQuAD strips string.punctuation (ASCII, which includes symbols such as $ + < = > ^ ` | ~);
    # generated text also has curly quotes, dashes and ellipses, so Unicode punctuation (P*) goes too.
    return char in _ASCII_PUNCTUATION or unicodedata.category(char).startswith("P")


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lowercase, delete punctuation, drop articles a/an/the, collapse whitespace.

    Punctuation is deleted, not replaced by a space (as in the SQuAD script), so "p-95" becomes
    "p95". Besides ASCII punctuation, Unicode punctuation (curly quotes, dashes) is deleted too.
    """
    text = s.lower()
    text = "".join(char for char in text if not _is_punctuation(char))
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _check_answers(answers: Sequence[str]) -> None:
    if isinstance(answers, str):
        raise TypeError("answers must be a list of strings, not a single string")
    if len(answers) == 0:
        raise ValueError("answers must hold at least one acceptable answer")


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if the normalised prediction equals any normalised answer, else 0.0.

    Two strings that both normalise to "" are equal (SQuAD behaviour), so an empty prediction matches
    an answer such as "the".

    Raises ValueError if `answers` is empty.
    """
    _check_answers(answers)
    pred = normalize_answer(prediction)
    return 1.0 if any(pred == normalize_answer(answer) for answer in answers) else 0.0


def _f1(pred_tokens: list[str], answer_tokens: list[str]) -> float:
    if not pred_tokens or not answer_tokens:
        # SQuAD v2 rule: both empty is a perfect match, one empty scores 0.
        return 1.0 if pred_tokens == answer_tokens else 0.0
    common = Counter(pred_tokens) & Counter(answer_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(answer_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    """Best token-level F1 between the normalised prediction and any normalised answer.

    Tokens are the whitespace-separated words after `normalize_answer`; overlap counts a token as
    often as it appears in both (multiset intersection), as in SQuAD. precision = overlap /
    prediction tokens, recall = overlap / answer tokens, F1 = 2PR / (P + R).

    Edge cases (SQuAD v2): if both normalise to no tokens the F1 is 1.0; if exactly one does, 0.0.

    Raises ValueError if `answers` is empty.
    """
    _check_answers(answers)
    pred_tokens = normalize_answer(prediction).split()
    return max(_f1(pred_tokens, normalize_answer(answer).split()) for answer in answers)


def answer_contained(prediction: str, answers: Sequence[str]) -> float:
    """1.0 if any normalised answer occurs inside the normalised prediction, else 0.0.

    Useful for generators that answer in a sentence rather than a span. The match is on whole words
    of the normalised text: answer "4" is not contained in "48 hours", while "48 hours" is in "about
    48 hours". Answers that normalise to "" never match (they would be contained in everything).

    Raises ValueError if `answers` is empty.
    """
    _check_answers(answers)
    padded_pred = f" {normalize_answer(prediction)} "
    for answer in answers:
        norm = normalize_answer(answer)
        if norm and f" {norm} " in padded_pred:
            return 1.0
    return 0.0


# --------------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------------


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean (summed with math.fsum, so the result does not depend on the order).

    Raises ValueError for no values: a bench report must not show 0.0 for "nothing was measured".
    """
    items = list(values)
    if not items:
        raise ValueError("mean of no values")
    return math.fsum(items) / len(items)


def _percentile_key(p: float) -> str:
    return f"p{p:g}"


def percentiles(samples: Sequence[float], ps: Iterable[float] = (50, 95, 99)) -> dict[str, float]:
    """Percentiles of `samples`, keyed "p50", "p95", "p99" (f"p{p:g}", so 99.9 gives "p99.9").

    Linear interpolation between the closest ranks, the same as numpy.percentile's default method
    ("linear"): with the samples sorted ascending as x[0..n-1], the p-th percentile sits at position
    h = (n - 1) * p / 100 and equals x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)]).

    An empty `samples` returns an empty dict (no key rather than NaN, which JSON cannot hold).
    Raises ValueError for a p outside [0, 100] or a NaN sample.
    """
    ps = list(ps)
    for p in ps:
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within [0, 100], got {p!r}")
    if any(math.isnan(x) for x in samples):
        raise ValueError("samples contain NaN")
    if not samples:
        return {}
    xs = sorted(float(x) for x in samples)
    n = len(xs)
    out: dict[str, float] = {}
    for p in ps:
        h = (n - 1) * p / 100
        lo = math.floor(h)
        hi = min(lo + 1, n - 1)
        t = h - lo
        a, b = xs[lo], xs[hi]
        # numpy's _lerp form: exact at both ends and monotone in t.
        value = a + (b - a) * t if t < 0.5 else b - (b - a) * (1 - t)
        out[_percentile_key(p)] = value
    return out


# --------------------------------------------------------------------------------------------------
# Length-robust answer metrics (issue 17): a right answer inside a sentence is not penalised for the
# sentence around it, as token F1's precision does. `answer_contained` above is the all-or-nothing
# form; `token_recall` the graded one.
# --------------------------------------------------------------------------------------------------


def token_recall(prediction: str, answers: Sequence[str]) -> float:
    """Best recall of an answer's normalised tokens in the normalised prediction: the share of the
    answer's words (counted as often as they occur, as in token F1) that the prediction holds, whatever
    else it says. An answer that normalises to no tokens scores 1.0 against an empty prediction and 0.0
    otherwise (as token F1 does).

    Raises ValueError if `answers` is empty.
    """
    _check_answers(answers)
    pred = Counter(normalize_answer(prediction).split())
    best = 0.0
    for answer in answers:
        tokens = normalize_answer(answer).split()
        if not tokens:
            best = max(best, 1.0 if not pred else 0.0)
            continue
        overlap = sum((Counter(tokens) & pred).values())
        best = max(best, overlap / len(tokens))
    return best

__all__ += ["token_recall"]
