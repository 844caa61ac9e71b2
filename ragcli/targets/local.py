"""The local target: the generational FAISS store of `ragcli.store` behind the `Target` contract.

Writing publishes a complete new generation (vectors, chunk table, file table, BM25 data, manifest
last) and switches CURRENT atomically, under an exclusive lock; reading loads the published
generation after checking it against its manifest. Dense search is FAISS (cosine over normalised
vectors), bm25 is the generation's BM25 index; hybrid is fused by ragcli's retriever.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ragcli.errors import IndexCorruptedError
from ragcli.store import LocalIndex
from ragcli.targets.base import Capabilities, IndexInfo, Target, content_manifest
from ragcli.types import Hit, Published, TargetState, text_key

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ragcli.config import Settings
    from ragcli.store import Generation
    from ragcli.types import Chunk, Plan, Progress


class LocalTarget(Target):
    kind = "local"
    capabilities = Capabilities(modes=frozenset({"dense", "bm25"}), scratch_copy=True, atomic_publish=True,
                                verify=True, raw_search=True, reload=True)

    def __init__(self, settings: Settings) -> None:
        self.root: Path = settings.index_dir
        self.store = LocalIndex(settings.index_dir)
        self.index_type = settings.index_type  # None: keep the index's own type (flat for a new index)
        self.label = f"The index in {settings.index_dir}"
        self.location = str(settings.index_dir)
        self._prior: Generation | None = None  # what state() read, for reused vectors and the unchanged check
        self._held: dict[int, Any] | None = None
        self._by_text: dict[str, Any] | None = None
        self._reader: Generation | None = None  # what open() loaded, for searching

    @classmethod
    def scratch_settings(cls, settings: Settings, folder: Path) -> Settings:
        return settings.replace(index_dir=folder / "index")

    # -- writing -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, wait: bool = False) -> Iterator[None]:
        with self.store.lock(wait=wait):
            self.store.remove_leftovers()
            yield

    def state(self, *, rebuild: bool = False, progress: Progress | None = None) -> TargetState:
        self._prior, self._held, self._by_text = None, None, None
        if rebuild or not self.store.exists():  # a rebuild never reads the old generation: it may be damaged
            return TargetState()
        gen = self._prior = self.store.load()
        files = {name: {k: v for k, v in meta.items() if k != "chunks"} | {
                     "chunks": len(meta.get("chunks") or []),
                     "tokens": sum(int(r.get("tokens") or 0) for r in meta.get("chunks") or [])}
                 for name, meta in gen.files.items()}
        return TargetState(name=gen.name, files=files, embed=gen.embed, splitter=gen.splitter,
                           settings={"index_type": gen.manifest.get("faiss_index_type", "flat")})

    def _held_vectors(self) -> dict[int, Any]:
        """Chunk id -> vector of the generation `state()` read (read once)."""
        if self._held is None:
            ids, vectors = self._prior.vectors() if self._prior is not None else ([], [])
            self._held = dict(zip(ids, vectors, strict=True))
        return self._held

    def reusable_vectors(self, text_keys: Sequence[str]) -> dict[str, np.ndarray]:
        if self._prior is None:
            return {}
        if self._by_text is None:
            held = self._held_vectors()
            self._by_text = {}
            for c in self._prior.chunks:
                if c.id in held:
                    self._by_text.setdefault(text_key(c.text), held[c.id])
        return {k: self._by_text[k] for k in text_keys if k in self._by_text}

    def publish(self, plan: Plan, *, progress: Progress | None = None) -> Published:
        import numpy as np

        prior = self._prior
        held_type = prior.manifest.get("faiss_index_type", "flat") if prior is not None else None
        index_type = self.index_type or held_type or "flat"
        if prior is not None and not plan.changed and held_type == index_type:
            return Published(name=prior.name, published=False)
        # The whole next content: the held chunks of kept files, then the plan's new ones.
        kept = [c for c in prior.chunks if c.file in plan.kept] if prior is not None else []
        held = self._held_vectors() if kept else {}
        chunks = sorted([*kept, *plan.chunks], key=lambda c: (c.file, c.position))
        vectors = np.zeros((len(chunks), int(plan.embed["dim"])), dtype=np.float32)
        for row, c in enumerate(chunks):
            vectors[row] = plan.vectors[c.id] if c.file not in plan.kept else held[c.id]
        rows: dict[str, list[dict[str, Any]]] = {}
        for c in chunks:
            rows.setdefault(c.file, []).append(c.to_json())
        files = {name: dict(meta, chunks=rows.get(name, [])) for name, meta in plan.files.items()}
        for meta in files.values():
            meta.pop("tokens", None)  # format 1 keeps the rows, and their tokens, in the file table
        if progress:
            progress("write", 0, 1)
        name = self.store.write_generation(chunks, vectors, files, content_manifest(plan), index_type=index_type,
                                           extra_writers=[_bm25_writer(chunks)])
        if progress:
            progress("write", 1, 1)
        return Published(name=name, published=True)

    # -- reading -----------------------------------------------------------------------------------
    def _generation(self) -> Generation:
        if self._reader is None:
            self.open()
        assert self._reader is not None
        return self._reader

    def open(self) -> IndexInfo:
        gen = self._reader = self.store.load()
        embed = gen.embed
        return IndexInfo(name=gen.name, embed=embed, splitter=gen.splitter,
                         dim=int(embed["dim"]) if embed.get("dim") else None, chunks=len(gen.chunks),
                         files=gen.files, corpus_sha256=gen.manifest.get("corpus_sha256"),
                         index_type=gen.manifest.get("faiss_index_type"))

    def search(self, mode: str, k: int, *, vector: np.ndarray | None = None, text: str | None = None) -> list[Hit]:
        gen = self._generation()
        if mode == "dense":
            if vector is None:
                raise ValueError("dense search needs a vector")
            ranked = gen.search(vector, k)
        elif mode == "bm25":
            if text is None:
                raise ValueError("bm25 search needs the text")
            ranked = gen.bm25().search(text, k)
        else:
            raise ValueError(f"the local index has no native {mode} search")
        hits = []
        for rank, (cid, score) in enumerate(ranked[:k], 1):
            c = gen.by_id.get(cid)
            if c is None:  # never answer from an id the chunk table does not know
                continue
            hits.append(Hit(chunk_id=cid, file=c.file, position=c.position, score=round(float(score), 6), text=c.text,
                            rank=rank))
        return hits

    def chunks(self) -> Iterable[Chunk]:
        return self._generation().chunks

    def raw_search(self, vector: Any, k: int) -> Any:
        index = self._generation().faiss_index()
        return index.search(vector, min(k, max(1, index.ntotal)))

    def version(self) -> str | None:
        try:
            return self.store.current_name()
        except IndexCorruptedError:
            return None

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        gen = self._generation()
        data.update(generations=self.store.generations(), size_bytes=gen.size_bytes(),
                    last_ingest=gen.manifest.get("created_at"), ragcli_version=gen.manifest.get("ragcli_version"))
        return data

    def verify(self) -> list[dict[str, Any]]:
        return self.store.verify()

    def verify_current(self) -> None:
        """Check every file of the published generation against its checksum (raises when damaged)."""
        self.store.load(verify=True).faiss_index()


def _bm25_writer(chunks: list[Chunk]) -> Any:
    def write(directory: Path) -> list[Path]:
        from ragcli.bm25 import BM25Index

        return BM25Index.build([c.id for c in chunks], [c.text for c in chunks]).save(directory / "bm25")

    return write
