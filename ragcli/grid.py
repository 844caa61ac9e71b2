"""`ragcli bench --grid`: run every combination of some settings on one corpus and rank the arms.

`--grid key=v1,v2` names one axis; several axes multiply. Keys that change the index (splitter,
chunk size, ...) need a fresh index per value: each distinct index is ingested once into a temporary
folder and every arm that uses it only reads it. Keys that change only the search (k, mode, fusion,
alpha) or the answers (max_new_tokens) reuse that index. Chunk and question vectors are kept in an
`EmbeddingCache` keyed by the SHA-256 of their text, so two indexes that share chunks embed them once
and every arm embeds each question once. The configured index is never changed.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli import __version__
from ragcli.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.types import Progress

GRID_FORMAT = 1


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"one of {', '.join(allowed)}")
        return value
    return parse


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(value: str) -> int:
        n = int(value)
        if not lo <= n <= hi:
            raise ValueError(f"an integer from {lo} to {hi}")
        return n
    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        x = float(value)
        if not lo <= x <= hi:
            raise ValueError(f"a number from {lo} to {hi}")
        return x
    return parse


def _axes() -> dict[str, tuple[str, str, Callable[[str], Any]]]:
    """grid key -> (what it sets: "index"/"search"/"answers", the Settings field or bench argument, parser)."""
    from ragcli.config import FUSIONS, MODES, SPLITTERS

    return {
        "splitter": ("index", "splitter", _choice(SPLITTERS)),
        "chunk_size": ("index", "max_chunk_tokens", _int(16, 8192)),
        "max_chunk_tokens": ("index", "max_chunk_tokens", _int(16, 8192)),
        "buffer_size": ("index", "buffer_size", _int(0, 16)),
        "breakpoint_percentile": ("index", "breakpoint_percentile", _float(1.0, 100.0)),
        "k": ("search", "k", _int(1, 1000)),
        "mode": ("search", "mode", _choice(MODES)),
        "fusion": ("search", "fusion", _choice(FUSIONS)),
        "alpha": ("search", "hybrid_alpha", _float(0.0, 1.0)),
        "max_new_tokens": ("answers", "max_new_tokens", _int(1, 4096)),
    }


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """`["k=4,8", "alpha=0.3,0.7"]` -> `{"k": [4, 8], "alpha": [0.3, 0.7]}`, values checked."""
    axes = _axes()
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in axes:
            raise UsageError(f"--grid {spec!r}: use KEY=V1,V2 with KEY one of {', '.join(axes)}.")
        if key in grid or (key in ("chunk_size", "max_chunk_tokens") and {"chunk_size", "max_chunk_tokens"} & set(grid)):
            raise UsageError(f"--grid {spec!r}: {key} is given twice; list all its values in one --grid.")
        parse = axes[key][2]
        parsed = []
        for raw in (v.strip() for v in values.split(",")):
            try:
                value = parse(raw)
            except ValueError as exc:
                detail = str(exc) if "one of" in str(exc) or "from" in str(exc) else "not a valid value"
                raise UsageError(f"--grid {key}: {raw!r} is {detail}.") from None
            if value not in parsed:
                parsed.append(value)
        if not parsed:
            raise UsageError(f"--grid {spec!r}: no values.")
        grid[key] = parsed
    if not grid:
        raise UsageError("--grid needs at least one KEY=V1,V2.")
    return grid


def arms(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination, in the order the axes and values were given."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[k] for k in keys))]


class EmbeddingCache:
    """An embedder that remembers vectors by the SHA-256 of their text (chunks and questions apart).

    Everything else is the wrapped embedder's (`texts_embedded` counts only what it really embedded)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._documents: dict[str, Any] = {}
        self._queries: dict[str, Any] = {}
        self.reused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def embed_documents(self, texts: list[str], progress: Any = None) -> Any:
        import numpy as np

        keys = [self._key(t) for t in texts]
        todo: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._documents:
                todo.setdefault(key, text)
        if todo:
            vectors = self._inner.embed_documents(list(todo.values()), progress)
            self._documents.update(zip(todo, vectors, strict=True))
        elif progress is not None:
            progress(len(texts), len(texts))
        self.reused += len(texts) - len(todo)
        if not keys:
            return np.zeros((0, self._inner.dim), dtype=np.float32)
        return np.stack([self._documents[k] for k in keys]).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> Any:
        key = self._key(text)
        if key not in self._queries:
            self._queries[key] = self._inner.embed_query(text)
        else:
            self.reused += 1
        return self._queries[key]


def _arm_score(report: dict[str, Any], rank_by: str, mode: str) -> float | None:
    name = rank_by if "." in rank_by else f"{mode}.{rank_by}"
    value = report.get("metrics", {}).get(name)
    return value if isinstance(value, (int, float)) else None


def run_grid(
    settings: Settings,
    grid: dict[str, list[Any]],
    *,
    qa_path: Path,
    corpus: list[Path] | None = None,
    modes: tuple[str, ...] = ("dense", "bm25", "hybrid"),
    k: int | None = None,
    answers: bool = False,
    answer_mode: str = "dense",
    rank_by: str = "mrr",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Every arm of `grid` benchmarked on one corpus; arms ranked best first by `rank_by` (a metric of
    the arm's mode, e.g. "mrr", or a full metric name such as "answers.context.contained")."""
    from ragcli.bench import bench, lower_is_better
    from ragcli.errors import IndexNotFoundError
    from ragcli.ingest import ingest
    from ragcli.models import load_embedder
    from ragcli.qa import load_qa, write_beir_corpus
    from ragcli.targets import open_target, target_class

    axes = _axes()
    kind = target_class(settings.target)
    index_keys = [key for key in grid if axes[key][0] == "index"]
    if index_keys and not kind.capabilities.scratch_copy:
        raise UsageError(f"--grid {', '.join(index_keys)} needs an index per value, and bench never changes a remote "
                         f"index: grid only search keys (k, mode, fusion, alpha) on the {kind.kind} target.")
    qa = load_qa(qa_path)
    embedder = EmbeddingCache(load_embedder(settings))
    t0 = time.perf_counter()
    results = []
    indexes: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ragcli-grid-") as tmp:
        if corpus is None and qa.corpus is not None and kind.capabilities.scratch_copy:
            corpus = [Path(tmp) / "beir-corpus"]
            write_beir_corpus(qa.corpus, corpus[0])
        if corpus is None and kind.capabilities.scratch_copy:
            try:
                open_target(settings).open()
            except IndexNotFoundError:  # nothing ingested yet: the QA file's own folder, as bench does
                corpus = [qa_path.parent]
            else:
                if index_keys:
                    raise UsageError(f"--grid {', '.join(index_keys)} builds its own indexes: pass --corpus with "
                                     "the documents to ingest.")
        all_arms = arms(grid)
        for n, arm in enumerate(all_arms, 1):
            index_changes = {axes[key][1]: v for key, v in arm.items() if axes[key][0] == "index"}
            other = {axes[key][1]: v for key, v in arm.items() if axes[key][0] != "index"}
            search = {f: other.get(f, getattr(settings, f)) for f in ("fusion", "hybrid_alpha", "max_new_tokens")}
            arm_settings = settings.replace(**index_changes, **search)
            if corpus:
                ident = repr(sorted(index_changes.items()))
                if ident not in indexes:
                    folder = Path(tmp) / f"index-{len(indexes)}"
                    scratch = kind.scratch_settings(arm_settings, folder)
                    before, t = embedder.texts_embedded, time.perf_counter()
                    result = ingest(corpus, scratch, rebuild=True, embedder=embedder, progress=progress)
                    indexes[ident] = {"settings": scratch, "index": index_changes, "chunks": result.chunks_total,
                                      "texts_embedded": embedder.texts_embedded - before,
                                      "seconds": time.perf_counter() - t}
                arm_settings = indexes[ident]["settings"].replace(**search)
            arm_mode = other.get("mode")
            arm_modes = (arm_mode,) if arm_mode else modes
            report = bench(arm_settings, qa_path=qa_path, qa=qa, modes=arm_modes, k=other.get("k", k),
                           answers=answers, answer_mode=arm_mode or answer_mode, startup=False, speed=False,
                           embedder=embedder, progress=progress)
            score = _arm_score(report, rank_by, arm_mode or modes[0])
            results.append({"arm": n, "params": arm, "mode": arm_mode or modes[0], "score": score, "report": report})
    descending = not lower_is_better(rank_by)
    ranked = sorted(results, key=lambda r: (r["score"] is None, -(r["score"] or 0) if descending else (r["score"] or 0),
                                            r["arm"]))
    for place, r in enumerate(ranked, 1):
        r["rank"] = place
    return {
        "format": GRID_FORMAT, "kind": "grid", "ragcli_version": __version__, "qa_file": str(qa_path),
        "questions": len(qa.rows), "grid": grid, "rank_by": rank_by,
        "indexes": [{k2: v for k2, v in i.items() if k2 != "settings"} for i in indexes.values()],
        "embedding_cache": {"reused": embedder.reused},
        "seconds": time.perf_counter() - t0,
        "arms": ranked,
    }
