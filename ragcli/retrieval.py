"""One retriever over any target: embed the question, search, and fuse where the target cannot.

A target answers the modes it has natively (`Target.capabilities.modes`). Hybrid retrieval is the
target's own where it has one (Databricks fuses on the service); otherwise ragcli asks the target for
a dense and a bm25 list from a candidate depth of max(50, k) (so the top results do not depend on k)
and fuses them (`ragcli.fusion`): `adaptive` (the default) with the weight measured on a QA set and
recorded beside the index (`ragcli.calibration`; reciprocal rank fusion where none was measured),
`rrf`, or `weighted` with a given α.

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

HYBRID_DEPTH = 50  # fuse from this many candidates of each list (k when k is larger), whatever k is
MODES = ("dense", "bm25", "hybrid")


class Retriever:
    """Search one opened target, by mode. Holds the loaded parts so repeated queries are warm."""

    def __init__(self, target: Target, info: IndexInfo, embedder: Embedder | None = None,
                 settings: Settings | None = None) -> None:
        self.target = target
        self.info = info
        self.embedder = embedder
        self._settings = settings
        self._calibration: dict | None | bool = False  # False: not read yet
        self.rerank_enabled = True  # use the configured reranker (settings.rerank_model), if any
        self._reranker: Any = None

    @property
    def calibration(self) -> dict | None:
        """The hybrid weight measured for this content (`ragcli.calibration`), or None."""
        if self._calibration is False:
            from ragcli import calibration

            self._calibration = calibration.load(self._settings.index_dir) if self._settings is not None else None
        return self._calibration  # type: ignore[return-value]

    @calibration.setter
    def calibration(self, record: dict | None) -> None:
        self._calibration = record

    @staticmethod
    def depth(k: int) -> int:
        """Candidates of each list that ragcli's hybrid fusion starts from."""
        return max(HYBRID_DEPTH, k)

    def fusion_info(self, fusion: str, alpha: float) -> dict:
        """Which fusion `search(mode="hybrid", fusion=…, alpha=…)` applies here, and with which weight."""
        if "hybrid" in self.target.capabilities.modes:
            return {"fusion": "native"}
        if fusion == "weighted":
            return {"fusion": "weighted", "alpha": alpha}
        if fusion == "adaptive":
            record = self.calibration
            if record is None:
                return {"fusion": "adaptive", "applied": "rrf", "alpha": None}
            return {"fusion": "adaptive", "applied": "weighted", "alpha": float(record["alpha"]),
                    "measured_on": record.get("qa_file"), "questions": record.get("questions")}
        return {"fusion": "rrf"}

    def candidate_lists(self, question: str, k: int = 1,
                        timings: dict[str, float] | None = None) -> tuple[list[Hit], list[Hit]]:
        """The dense and the bm25 candidates hybrid fusion starts from (`depth(k)` of each)."""
        timings = {} if timings is None else timings
        t = time.perf_counter()
        vector = self._embedder().embed_query(question)
        timings["embed_question"] = time.perf_counter() - t
        return self._lists(question, vector, self.depth(k), timings)

    def _lists(self, question: str, vector: object, depth: int,
               timings: dict[str, float]) -> tuple[list[Hit], list[Hit]]:
        t = time.perf_counter()
        dense = self.target.search("dense", depth, vector=vector)
        timings["search_dense"] = time.perf_counter() - t
        t = time.perf_counter()
        sparse = self.target.search("bm25", depth, text=question)
        timings["search_bm25"] = time.perf_counter() - t
        return dense, sparse

    def _embedder(self) -> Embedder:
        if self.embedder is None:
            if self._settings is None:
                raise ValueError("dense retrieval needs an embedder")
            self.embedder = load_checked_embedder(self.target, self.info, self._settings)
        return self.embedder

    def search(self, question: str, k: int, mode: str, *, fusion: str = "adaptive", alpha: float = 0.5,
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
        embeds_text = self.target.capabilities.embeds_text  # the target embeds the question itself
        vector = None
        if mode in ("dense", "hybrid") and not embeds_text:
            embedder = self._embedder()
            t = time.perf_counter()
            vector = embedder.embed_query(question)
            timings["embed_question"] = time.perf_counter() - t
        if mode in native:
            t = time.perf_counter()
            hits = self.target.search(mode, k, vector=vector, text=question if mode != "dense" or embeds_text else None)
            timings[f"search_{mode}"] = time.perf_counter() - t
            return hits
        # Hybrid fused by ragcli, from a fixed depth above k so fusion can promote what either list ranks
        # lower, and the top results are the same whatever k is.
        dense, sparse = self._lists(question, vector, self.depth(k), timings)
        from ragcli import fusion as fusion_mod

        t = time.perf_counter()
        if fusion not in ("adaptive", "rrf", "weighted"):
            raise UsageError(f"Unknown fusion {fusion!r}; use one of: adaptive, rrf, weighted.")
        applied = self.fusion_info(fusion, alpha)  # what the answer reports is what is applied here
        if applied.get("applied", applied["fusion"]) == "weighted":
            ranked = fusion_mod.weighted([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse],
                                         alpha=applied["alpha"], top=k)
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
    if ((mode or settings.mode) in ("dense", "hybrid") or embedder is not None) and not target.capabilities.embeds_text:
        embedder = load_checked_embedder(target, info, settings, embedder)
    return Retriever(target, info, embedder, settings)
