"""`ragcli bench --compare-backend B`: the configured embedding backend against B in the same run.

Speed: the two embedders alternately embed the same texts (the chunks the benchmark's scratch
index holds, and the QA questions), after a warm-up pair; the median per-pair time ratio
(configured / B: below 1 means the configured backend is faster) is reported for each kind of text,
with texts per second. Agreement: the cosine of the two backends' vectors of the same texts. Quality:
the corpus is ingested again with B into its own scratch index and dense retrieval scored on the
same questions at the same k, so the nDCG, MRR and hit-rate differences come from the backend alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.qa import QASet
    from ragcli.types import Progress

SAMPLE = 256  # texts per timing round, at most
SCORES = ("ndcg", "mrr", "hit_rate", "recall")


def _sample(texts: list[str], n: int = SAMPLE) -> list[str]:
    """Up to `n` of `texts`, spread evenly (deterministic)."""
    if len(texts) <= n:
        return list(texts)
    step = len(texts) / n
    return [texts[int(i * step)] for i in range(n)]


def _speed(configured: Any, baseline: Any, texts: list[str], pairs: int,
           timed_pairs: Callable[..., Any]) -> tuple[dict[str, Any], tuple[Any, Any]]:
    """The timing of `texts` on both embedders, and the vectors each gave in the last round (the
    agreement is measured on those: nothing is embedded again for it)."""
    last: list[Any] = [None, None]

    def mine() -> None:
        last[0] = configured.embed_documents(texts)

    def theirs() -> None:
        last[1] = baseline.embed_documents(texts)

    timed = timed_pairs(mine, theirs, pairs)
    return {
        "texts": len(texts),
        "mean_chars": sum(map(len, texts)) / len(texts),
        "time_ratio": timed["median"],
        "iqr": timed["iqr"],
        "pairs": pairs,
        "texts_per_s": len(texts) / timed["seconds"] if timed["seconds"] else None,
        "baseline_texts_per_s": len(texts) / timed["baseline_seconds"] if timed["baseline_seconds"] else None,
    }, (last[0], last[1])


def _cosine(pairs: list[tuple[Any, Any]]) -> dict[str, float]:
    """Cosine of each text's two vectors (both backends return L2-normalised vectors)."""
    import numpy as np

    a = np.concatenate([np.asarray(x, dtype=np.float64) for x, _ in pairs])
    b = np.concatenate([np.asarray(y, dtype=np.float64) for _, y in pairs])
    cos = (a * b).sum(axis=1)
    return {"min": float(cos.min()), "mean": float(cos.mean())}


def compare_backend(settings: Settings, report: dict[str, Any], *, baseline: str, qa: QASet, qa_path: Path,
                    corpus: list[Path], chunk_texts: list[str], embedder: Any, k: int, pairs: int,
                    run: Callable[..., dict[str, Any]], timed_pairs: Callable[..., Any],
                    progress: Progress | None = None) -> dict[str, Any]:
    """The `backends` section of a bench report: `report` is the configured backend's own run (its
    dense scores are compared), `chunk_texts` the chunks its scratch index holds. `run` is
    `ragcli.bench.bench` and `timed_pairs` its interleaved timer (passed in: this module is part of
    bench, which imports it)."""
    from ragcli.models import load_embedder

    other_settings = settings.replace(embed_backend=baseline)
    other = load_embedder(other_settings)
    questions = [row.question for row in qa.rows]
    texts = {"chunks": _sample(chunk_texts), "questions": _sample(questions)}
    out: dict[str, Any] = {"configured": settings.embed_backend, "baseline": baseline, "speed": {}}
    vectors = []
    for name, sample in texts.items():
        if sample:
            out["speed"][name], pair = _speed(embedder, other, sample, pairs, timed_pairs)
            vectors.append(pair)
    if vectors:
        out["cosine"] = _cosine(vectors)
    theirs = run(other_settings, qa_path=qa_path, qa=qa, corpus=corpus, modes=("dense",), k=k, answers=False,
                   startup=False, speed=False, embedder=other, progress=progress, compare_backend=None)
    mine = report.get("retrieval", {}).get("dense", {})
    base = theirs["retrieval"]["dense"]
    out["dense"] = {
        "configured": {s: mine[s] for s in SCORES if s in mine},
        "baseline": {s: base[s] for s in SCORES if s in base},
        "delta": {s: mine[s] - base[s] for s in SCORES if s in mine and s in base},
    }
    if "ingest" in theirs:
        out["baseline_ingest"] = {key: theirs["ingest"].get(key) for key in ("chunks", "seconds", "texts_embedded")}
    return out


def flat(section: dict[str, Any]) -> dict[str, float]:
    """Gateable numbers: `ratio.embed_over_baseline.chunks|questions` (time, lower is better),
    `backend.cosine_min`, `backend.dense.ndcg_delta` (and mrr, hit_rate, recall; higher is better)."""
    out: dict[str, float] = {}
    for name, s in section.get("speed", {}).items():
        out[f"ratio.embed_over_baseline.{name}"] = s["time_ratio"]
    if "cosine" in section:
        out["backend.cosine_min"] = section["cosine"]["min"]
    for score, delta in section.get("dense", {}).get("delta", {}).items():
        out[f"backend.dense.{score}_delta"] = delta
    return out
