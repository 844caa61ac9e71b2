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
from ragcli.types import Hit, Published, TargetState

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ragcli.config import Settings
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
        self._prior: Any = None  # the generation state() read, for reused vectors and the unchanged check
        self._reader: Any = None  # the generation open() loaded, for searching

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
        self._prior = None
        if rebuild or not self.store.exists():  # a rebuild never reads the old generation: it may be damaged
            return TargetState()
        gen = self._prior = self.store.load()
        files = {name: _counted(meta) for name, meta in gen.files.items()}
        return TargetState(name=gen.name, files=files, embed=gen.embed, splitter=gen.splitter,
                           settings={"index_type": gen.index_type, "format": gen.format})

    def reusable_vectors(self, text_keys: Sequence[str]) -> dict[str, np.ndarray]:
        return self._prior.reusable(list(text_keys)) if self._prior is not None else {}

    def publish(self, plan: Plan, *, progress: Progress | None = None) -> Published:
        from ragcli.store import FORMAT_VERSION

        prior = self._prior
        held_type = prior.index_type if prior is not None else None
        policy = self.index_type or (prior.manifest.get("index_policy") if prior is not None else None) or held_type
        index_type = resolve_index_type(policy or "flat", plan.chunk_count)
        unchanged = prior is not None and not plan.changed and held_type == index_type
        if unchanged and prior.format == FORMAT_VERSION:
            return Published(name=prior.name, published=False)
        # (an index of the first format is rewritten in the current one by the next ingest, changed or not)
        if progress:
            progress("write", 0, 1)
        manifest = dict(content_manifest(plan), index_policy=policy or "flat")
        name = self.store.publish(plan, prior, manifest, index_type=index_type)
        if progress:
            progress("write", 1, 1)
        return Published(name=name, published=True)

    def compact(self) -> Published:
        """Rewrite the published generation's live chunks into fresh segments, without dead rows."""
        from ragcli.types import Plan

        with self.lock():
            gen = self.store.load()
            files = {name: _counted(meta) for name, meta in gen.files.items()}
            plan = Plan(files=files, chunks=[], vectors={}, kept=set(files), embed=gen.embed, splitter=gen.splitter,
                        changed=True)
            manifest = dict(content_manifest(plan), index_policy=gen.manifest.get("index_policy") or gen.index_type)
            name = self.store.publish(plan, gen, manifest, index_type=gen.index_type, compact=True)
            return Published(name=name, published=True)

    # -- reading -----------------------------------------------------------------------------------
    def _generation(self) -> Any:
        if self._reader is None:
            self.open()
        return self._reader

    def open(self) -> IndexInfo:
        gen = self._reader = self.store.load()
        embed = gen.embed
        return IndexInfo(name=gen.name, embed=embed, splitter=gen.splitter,
                         dim=int(embed["dim"]) if embed.get("dim") else None, chunks=gen.chunk_count,
                         files=gen.files, corpus_sha256=gen.manifest.get("corpus_sha256"),
                         index_type=gen.index_type)

    def search(self, mode: str, k: int, *, vector: np.ndarray | None = None, text: str | None = None) -> list[Hit]:
        gen = self._generation()
        if mode == "dense":
            if vector is None:
                raise ValueError("dense search needs a vector")
            ranked = gen.dense(vector, k)
        elif mode == "bm25":
            if text is None:
                raise ValueError("bm25 search needs the text")
            ranked = gen.bm25_hits(text, k)
        else:
            raise ValueError(f"the local index has no native {mode} search")
        return [Hit(chunk_id=c.id, file=c.file, position=c.position, score=round(float(score), 6), text=c.text,
                    rank=rank) for rank, (c, score) in enumerate(ranked[:k], 1)]

    def chunks(self) -> Iterable[Chunk]:
        return self._generation().iter_chunks()

    def raw_search(self, vector: Any, k: int) -> Any:
        return self._generation().raw_search(vector, k)

    def version(self) -> str | None:
        try:
            return self.store.current_name()
        except IndexCorruptedError:
            return None

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        gen = self._generation()
        counts = gen.manifest.get("counts") or {}
        data.update(generations=self.store.generations(), size_bytes=gen.size_bytes(),
                    last_ingest=gen.manifest.get("created_at"), ragcli_version=gen.manifest.get("ragcli_version"),
                    format=gen.format, segments=counts.get("segments"), dead_rows=counts.get("dead_rows"))
        return data

    def verify(self) -> list[dict[str, Any]]:
        return self.store.verify()

    def verify_current(self) -> None:
        """Check every byte of the published generation (raises when damaged)."""
        self.store.load_verified().close()

    def export(self, dest: Path) -> str:
        """Copy the published generation into the new folder `dest` as an index of that one generation
        (CURRENT, the generation's own files, the segments it lists). Every byte is checked before it is
        copied, and the copy is checked again; a damaged index is refused (IndexCorruptedError)."""
        import shutil

        from ragcli.store import SEGMENTS

        dest.mkdir(parents=True)
        gen = self.store.load_verified()
        try:
            shutil.copytree(gen.path, dest / gen.name)
            for record in getattr(gen, "records", []):  # format 1 keeps everything in the generation folder
                shutil.copytree(self.root / SEGMENTS / record["name"], dest / SEGMENTS / record["name"])
            name = gen.name
        finally:
            gen.close()
        (dest / "CURRENT").write_text(name + "\n", encoding="utf-8")
        LocalIndex(dest).load_verified().close()
        return name


AUTO_FLAT_MAX = 100_000  # `--index-type auto`: exact search up to this many chunks, IVF above


def resolve_index_type(policy: str, chunks: int) -> str:
    """The index type a generation of `chunks` chunks is built with under `policy` (flat, hnsw, ivf, auto).

    auto: flat (exact) up to AUTO_FLAT_MAX chunks, where one query scans at most ~150 MB of 384-d vectors;
    IVF above, with min(4·√N, N/39) cells per segment and an eighth of them probed per query."""
    if policy != "auto":
        return policy
    return "flat" if chunks <= AUTO_FLAT_MAX else "ivf"


def _counted(meta: dict[str, Any]) -> dict[str, Any]:
    """A file record with chunk and token counts (format 1 keeps the chunk rows in the file table)."""
    rows = meta.get("chunks")
    if not isinstance(rows, list):
        return dict(meta)
    return {**{k: v for k, v in meta.items() if k != "chunks"}, "chunks": len(rows),
            "tokens": sum(int(r.get("tokens") or 0) for r in rows)}
