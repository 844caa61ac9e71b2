"""One retriever over any target: embed the question, search, and fuse where the target cannot.

A target answers the modes it has natively (`Target.capabilities.modes`). Hybrid retrieval is the
target's own where it has one (Databricks fuses on the service); otherwise ragcli asks the target for
a dense and a bm25 list from a candidate depth above k and fuses them (`ragcli.fusion`: reciprocal
rank fusion, or a weighted sum of per-query min-max normalised scores).

Scores: `dense` is the cosine similarity of question and chunk; `bm25` the target's BM25 score;
`hybrid` the fused score.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ragcli.errors import UsageError
from ragcli.types import Hit

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.models import Embedder
    from ragcli.targets.base import IndexInfo, Target

HYBRID_DEPTH = 4  # fuse from this many times k candidates of each list
MODES = ("dense", "bm25", "hybrid")


class Retriever:
    """Search one opened target, by mode. Holds the loaded parts so repeated queries are warm."""

    def __init__(self, target: Target, info: IndexInfo, embedder: Embedder | None = None,
                 settings: Settings | None = None) -> None:
        self.target = target
        self.info = info
        self.embedder = embedder
        self._settings = settings
        self.rerank_enabled = True  # use the configured reranker (settings.rerank_model), if any
        self._reranker: Any = None

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            if self._settings is None:
                raise ValueError("dense retrieval needs an embedder")
            self.embedder = load_checked_embedder(self.target, self.info, self._settings)
        return self.embedder

    def search(self, question: str, k: int, mode: str, *, fusion: str = "rrf", alpha: float = 0.5,
               timings: dict[str, float] | None = None) -> list[Hit]:
        """The top `k` chunks for `question`, best first. `timings` receives seconds per stage. With a
        reranker configured (and `rerank_enabled`), the top `rerank_depth` candidates are reordered by
        it and the best `k` kept (stage "rerank")."""
        timings = {} if timings is None else timings
        settings = self._settings
        if not (self.rerank_enabled and settings is not None and settings.rerank_model):
            return self._search(question, k, mode, fusion=fusion, alpha=alpha, timings=timings)
        from ragcli.judges import load_reranker, rerank

        hits = self._search(question, max(k, settings.rerank_depth), mode, fusion=fusion, alpha=alpha,
                            timings=timings)
        if self._reranker is None:
            t = time.perf_counter()
            self._reranker = load_reranker(settings)
            timings["load_reranker"] = time.perf_counter() - t
        t = time.perf_counter()
        ranked = rerank(question, hits, self._reranker, k)
        timings["rerank"] = time.perf_counter() - t
        return ranked

    def _search(self, question: str, k: int, mode: str, *, fusion: str, alpha: float,
                timings: dict[str, float]) -> list[Hit]:
        if mode not in MODES:
            raise UsageError(f"Unknown retrieval mode {mode!r}; use one of: {', '.join(MODES)}.")
        native = self.target.capabilities.modes
        vector = None
        if mode in ("dense", "hybrid"):
            embedder = self._embedder()
            t = time.perf_counter()
            vector = embedder.embed_query(question)
            timings["embed_question"] = time.perf_counter() - t
        if mode in native:
            t = time.perf_counter()
            hits = self.target.search(mode, k, vector=vector, text=question if mode != "dense" else None)
            timings[f"search_{mode}"] = time.perf_counter() - t
            return hits
        # Hybrid fused by ragcli, from a depth above k so fusion can promote what either list ranks lower.
        depth = k * HYBRID_DEPTH
        t = time.perf_counter()
        dense = self.target.search("dense", depth, vector=vector)
        timings["search_dense"] = time.perf_counter() - t
        t = time.perf_counter()
        sparse = self.target.search("bm25", depth, text=question)
        timings["search_bm25"] = time.perf_counter() - t
        from ragcli import fusion as fusion_mod

        t = time.perf_counter()
        if fusion == "weighted":
            ranked = fusion_mod.weighted([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse],
                                         alpha=alpha, top=k)
        else:
            ranked = fusion_mod.rrf([[h.chunk_id for h in dense], [h.chunk_id for h in sparse]], top=k)
        timings["fuse"] = time.perf_counter() - t
        by_id = {h.chunk_id: h for h in (*sparse, *dense)}
        return [Hit(chunk_id=cid, file=by_id[cid].file, position=by_id[cid].position, score=round(float(score), 6),
                    text=by_id[cid].text, rank=rank) for rank, (cid, score) in enumerate(ranked, 1)]


def check_query_model(target: Target, info: IndexInfo, settings: Settings, embedder: Embedder | None = None) -> None:
    """Refuse to search content built with another embedding model than this run's."""
    from ragcli.models import embedding_backend, embedding_identity
    from ragcli.planning import backend_setting, check_embedding_backend, check_embedding_model

    model_id, revision = embedding_identity(settings, embedder, recorded=info.embed)
    check_embedding_model(info.embed, model_id, revision, target.label,
                          f"Pass --embed-model {info.embed.get('model')}, or run: {target.rebuild_hint()}")
    check_embedding_backend(info.embed, *embedding_backend(settings, embedder), target.label,
                            f"Pass --embed-backend {backend_setting(info.embed)}, or run: {target.rebuild_hint()}")


def load_checked_embedder(target: Target, info: IndexInfo, settings: Settings,
                          embedder: Embedder | None = None) -> Embedder:
    """The embedding model for searching `target` (`embedder`, or the configured one loaded now),
    after checking it is the one the content was built with and has the same dimension."""
    from ragcli.models import load_embedder
    from ragcli.planning import check_dimension

    check_query_model(target, info, settings, embedder)
    embedder = embedder or load_embedder(settings)
    check_dimension(info.dim, embedder.model_id, embedder.dim, target.label, target.dimension_advice())
    return embedder


def open_retriever(settings: Settings, embedder: Embedder | None = None, mode: str | None = None) -> Retriever:
    """Open the configured target for searching. For a mode that needs the embedding model (`mode`,
    default the configured one) it is checked and loaded now (or `embedder` is used); otherwise it is
    loaded on the first dense search."""
    from ragcli.targets import open_target

    target = open_target(settings)
    info = target.open()
    if (mode or settings.mode) in ("dense", "hybrid") or embedder is not None:
        embedder = load_checked_embedder(target, info, settings, embedder)
    return Retriever(target, info, embedder, settings)
