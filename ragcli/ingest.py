"""`ingest`: documents → chunks → vectors → a new index generation, incrementally.

Files are identified by their path relative to the ingested root and fingerprinted by the SHA-256 of
their bytes. On re-ingest an unchanged file is not even read into the splitter or the embedder; a
changed file has its chunks replaced (vectors of chunks whose text did not change are reused); a file
that disappeared from an ingested folder has its chunks removed. A file that fails to load is reported
by name, the others are ingested, and a previously indexed version of the failing file is kept rather
than lost. The index is replaced only by a complete new generation (see `ragcli.store`).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli import __version__
from ragcli.errors import (
    DocumentError,
    EmptyDocumentError,
    IndexModelMismatchError,
    NoDocumentsError,
    UsageError,
)

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.config import Settings
    from ragcli.loaders import SourceFile
    from ragcli.models import Embedder
    from ragcli.types import Chunk, Progress

FLUSH_TEXTS = 256  # embed pending chunk texts in groups of about this many, across files


@dataclass
class FileResult:
    file: str
    status: str  # added | changed | unchanged | removed | failed | skipped
    chunks: int = 0
    reason: str | None = None


@dataclass
class IngestReport:
    index: str
    target: str
    generation: str | None
    files: list[FileResult] = field(default_factory=list)
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    texts_embedded: int = 0  # everything sent to the encoder, the semantic splitter's windows included
    tokens: int = 0  # tokens in the chunks of this index
    seconds: float = 0.0
    published: bool = False  # False when nothing changed (the current generation stays)
    resplit_chunks: int = 0
    hard_cuts: int = 0
    embed_model: str = ""
    splitter: dict[str, Any] = field(default_factory=dict)

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def failed(self) -> list[FileResult]:
        return [f for f in self.files if f.status == "failed"]

    def summary(self) -> dict[str, int]:
        return {s: self.count(s) for s in ("added", "changed", "unchanged", "removed", "failed", "skipped")}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary()
        return data


def ingest(
    paths: list[Path | str],
    settings: Settings,
    *,
    rebuild: bool = False,
    wait: bool = False,
    encoding: str | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> IngestReport:
    """Ingest files and folders into the configured target. Returns a report; never prints."""
    if settings.target == "databricks":
        from ragcli.backends.databricks import ingest_databricks

        return ingest_databricks(paths, settings, rebuild=rebuild, encoding=encoding, progress=progress,
                                 embedder=embedder)
    from ragcli.store import LocalIndex

    started = time.perf_counter()
    store = LocalIndex(settings.index_dir)
    with store.lock(wait=wait):
        store.remove_leftovers()
        prior = None if rebuild or not store.exists() else store.load()
        plan = plan_ingest(paths, settings, prior_files=prior.files if prior else {},
                           prior_embed=prior.embed if prior else None,
                           prior_splitter=prior.splitter if prior else None,
                           encoding=encoding, progress=progress, embedder=embedder)
        report = plan.report
        report.index = str(settings.index_dir)
        # No type asked for (None): keep the index's own type, flat for a new index.
        index_type = settings.index_type or (prior.manifest.get("faiss_index_type") if prior else None) or "flat"
        same_type = prior is not None and prior.manifest.get("faiss_index_type", "flat") == index_type
        if prior is not None and not plan.changed and same_type:
            report.generation = prior.name
            report.published = False
        else:
            ids, vectors = _assemble_vectors(plan, prior)
            import numpy as np

            manifest = {
                "ragcli_version": __version__,
                "embed": plan.embed_info,
                "splitter": plan.splitter,
                "corpus_sha256": plan.corpus_fingerprint(),
                "library_versions": library_versions(),
            }
            extra = [_bm25_writer(plan.chunks)]
            if progress:
                progress("write", 0, 1)
            report.generation = store.write_generation(
                plan.chunks, vectors if len(ids) else np.zeros((0, plan.embed_info["dim"]), dtype=np.float32),
                plan.files, manifest, index_type=index_type, extra_writers=extra,
            )
            report.published = True
            if progress:
                progress("write", 1, 1)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


@dataclass
class IngestPlan:
    """The outcome of reading, splitting and embedding: the next generation's content."""

    report: IngestReport
    chunks: list[Chunk]
    files: dict[str, Any]
    embed_info: dict[str, Any]
    splitter: dict[str, Any]
    new_vectors: dict[int, Any]  # chunk id -> vector, for chunks embedded (or reused by text) in this run
    kept_ids: list[int]  # chunk ids carried over from the prior generation unchanged
    changed: bool

    def corpus_fingerprint(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(f"{name}\0{self.files[name].get('sha256')}\n".encode())
        return h.hexdigest()


def plan_ingest(
    paths: list[Path | str],
    settings: Settings,
    *,
    prior_files: dict[str, Any],
    prior_embed: dict[str, Any] | None,
    prior_splitter: dict[str, Any] | None,
    encoding: str | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> IngestPlan:
    """Decide what changed, then split and embed only that. Shared by every target.

    `prior_files` is the file table of what the target holds now: relpath -> {sha256, root, chunks:
    [chunk rows], status}. The caller publishes the plan."""
    from ragcli.loaders import discover, load_text
    from ragcli.models import load_embedder
    from ragcli.registry import model_mismatch, resolve_model
    from ragcli.splitting import SplitterSettings
    from ragcli.types import file_chunks, sha256_file, text_key

    path_list = [Path(p) for p in paths]
    sources = discover(path_list)
    if not sources:
        raise NoDocumentsError(f"No .md, .markdown or .docx files in {', '.join(map(str, path_list))}.")
    # Folders given now, by real path (a root recorded through a symlink or a relative path still matches).
    folder_args = {os.path.realpath(p) for p in path_list if p.is_dir()}
    # A file (or subfolder) inside a folder ingested before keeps its name relative to that folder, so
    # `ingest docs/sub/x.md` after `ingest docs` updates "sub/x.md" instead of adding a second "x.md"
    # (and a name from an inner folder is replaced by the outer one's when the outer folder is ingested).
    sources = _rebase(sources, prior_files)
    seen: dict[str, Path] = {}
    for src in sources:
        if src.relpath in seen and seen[src.relpath] != src.path:
            raise NoDocumentsError(
                f"Two files would share the index path '{src.relpath}': {seen[src.relpath]} and {src.path}. "
                "Ingest the folders into separate indexes (--index-dir)."
            )
        seen[src.relpath] = src.path
        old = prior_files.get(src.relpath)
        if old and old.get("root") and os.path.realpath(str(old["root"])) != os.path.realpath(src.root):
            old_file = Path(str(old["root"]), *src.relpath.split("/"))
            if old_file.exists() and os.path.realpath(old_file) != os.path.realpath(src.path):
                raise UsageError(
                    f"{src.path} would replace {old_file} in the index (both are '{src.relpath}'). "
                    "Ingest the other folder into its own index (--index-dir, or --databricks-index on Databricks), "
                    "or pass --rebuild."
                )

    if embedder is not None:
        model_id, revision = embedder.model_id, embedder.revision
    else:
        resolved = resolve_model(settings.embed_model, settings.models_dir, role="embedding model")
        model_id, revision = settings.embed_model, resolved.revision
    if prior_embed is not None:
        problem = model_mismatch(prior_embed, model_id, revision, f"The index in {settings.index_dir}")
        if problem:
            raise IndexModelMismatchError(
                f"{problem} Run: ragcli ingest --rebuild <paths> (or pass --embed-model with the index's model)."
            )

    baseline = [embedder.texts_embedded if embedder is not None else 0]

    def get_embedder() -> Embedder:
        nonlocal embedder
        if embedder is None:
            embedder = load_embedder(settings)
            baseline[0] = embedder.texts_embedded
        return embedder

    limit = prior_embed.get("chunk_token_limit") if prior_embed else None
    if limit is None:
        limit = get_embedder().chunk_token_limit
    split_settings = SplitterSettings.from_settings(settings, embedder_limit=int(limit))
    same_splitter = prior_splitter == split_settings.as_dict()

    report = IngestReport(index="", target=settings.target, generation=None, embed_model=model_id,
                          splitter=split_settings.as_dict())
    chunks: list[Chunk] = []
    files: dict[str, Any] = {}
    kept_ids: list[int] = []
    pending: list[Chunk] = []
    new_vectors: dict[int, Any] = {}
    changed = False
    splitter = None
    reuse_by_text: dict[str, int] = {}  # text key -> prior chunk id with that text (vector reuse)
    if prior_files:
        for meta in prior_files.values():
            for row in meta.get("chunks", []):
                reuse_by_text.setdefault(text_key(row["text"]), int(row["id"]))

    fresh: dict[str, Any] = {}  # chunk text -> vector embedded in this run (identical texts embed once)

    def flush() -> None:
        if not pending:
            return
        emb = get_embedder()
        unique: dict[str, int] = {}
        for c in pending:
            unique.setdefault(c.text, len(unique))
        texts = list(unique)
        total = len(texts)
        if progress:
            progress("embed", 0, total)
        vectors = emb.embed_documents(texts, progress=(lambda d, t: progress("embed", d, t)) if progress else None)
        for text, row in unique.items():
            fresh[text] = vectors[row]
        for c in pending:
            new_vectors[c.id] = fresh[c.text]
        report.chunks_embedded += total
        report.chunks_reused += len(pending) - total
        pending.clear()

    for number, src in enumerate(sources, 1):
        if progress:
            progress("files", number - 1, len(sources))
        old = prior_files.get(src.relpath)
        try:
            sha = sha256_file(src.path)
        except OSError as exc:
            report.files.append(FileResult(src.relpath, "failed", reason=f"cannot read: {exc.strerror or exc}"))
            if old:
                files[src.relpath] = old
                _keep(old, chunks, kept_ids)
            continue
        if old and same_splitter and old.get("sha256") == sha and old.get("status") == "ok":
            files[src.relpath] = dict(old, root=str(src.root))
            _keep(old, chunks, kept_ids)
            report.files.append(FileResult(src.relpath, "unchanged", chunks=len(old.get("chunks", []))))
            continue
        try:
            text = load_text(src.path, encoding=encoding)
        except EmptyDocumentError as exc:
            report.files.append(FileResult(src.relpath, "skipped", reason=exc.reason))
            changed = changed or bool(old)
            continue
        except DocumentError as exc:
            report.files.append(FileResult(src.relpath, "failed", reason=exc.reason))
            if old:
                files[src.relpath] = old
                _keep(old, chunks, kept_ids)
            continue
        if splitter is None:
            from ragcli.splitting import Splitter

            splitter = Splitter(split_settings, get_embedder())
        rows = []
        for c in file_chunks(src.relpath, splitter.split(text), get_embedder().count_tokens):
            piece = c.text
            chunks.append(c)
            rows.append(c.to_json())
            reuse = reuse_by_text.get(text_key(piece))
            if reuse is not None:
                new_vectors[c.id] = ("reuse", reuse)
                report.chunks_reused += 1
            elif piece in fresh:
                new_vectors[c.id] = fresh[piece]
                report.chunks_reused += 1
            else:
                pending.append(c)
        files[src.relpath] = {"sha256": sha, "bytes": src.path.stat().st_size, "root": str(src.root),
                              "status": "ok", "chunks": rows}
        report.files.append(FileResult(src.relpath, "changed" if old else "added", chunks=len(rows)))
        changed = True
        if len(pending) >= FLUSH_TEXTS:
            flush()
    flush()
    if progress:
        progress("files", len(sources), len(sources))

    # Files indexed before under an ingested folder but gone now are removed; others are kept.
    ingested_now = {os.path.realpath(src.path) for src in sources}
    reported = {f.file for f in report.files}
    for relpath, old in prior_files.items():
        if relpath in files or relpath in reported:
            continue
        if _gone(relpath, old.get("root"), folder_args, ingested_now):
            report.files.append(FileResult(relpath, "removed", chunks=len(old.get("chunks", []))))
            changed = True
        else:
            files[relpath] = old
            _keep(old, chunks, kept_ids)

    if embedder is not None:
        embed_info = dict(embedder.info(), chunk_token_limit=embedder.chunk_token_limit)
        report.texts_embedded = embedder.texts_embedded - baseline[0]
    else:
        embed_info = dict(prior_embed or {})
    if splitter is not None:
        report.resplit_chunks = splitter.stats.resplit
        report.hard_cuts = splitter.stats.hard_cuts
    if not same_splitter:
        changed = True
    report.chunks_total = len(chunks)
    report.tokens = sum(c.tokens for c in chunks)
    chunks.sort(key=lambda c: (c.file, c.position))
    return IngestPlan(report=report, chunks=chunks, files=files, embed_info=embed_info,
                      splitter=split_settings.as_dict(), new_vectors=new_vectors, kept_ids=kept_ids, changed=changed)


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def _rebase(sources: list[SourceFile], prior_files: dict[str, Any]) -> list[SourceFile]:
    """A file the index already holds under a folder ingested before (by its name relative to that folder)
    keeps that name when it is given alone or through a subfolder, so it is updated, not added twice."""
    from ragcli.loaders import SourceFile

    roots = sorted({os.path.realpath(str(m["root"])) for m in prior_files.values() if m.get("root")}, key=len)
    if not roots:
        return sources
    out = []
    for src in sources:
        own = os.path.realpath(src.root)
        real_file = os.path.join(own, *src.relpath.split("/"))
        for root in roots:  # outermost first
            if root == own or not _inside(own, root):
                continue
            relpath = Path(os.path.relpath(real_file, root)).as_posix()
            meta = prior_files.get(relpath)
            if meta and meta.get("root") and os.path.realpath(str(meta["root"])) == root:
                src = SourceFile(path=src.path, root=Path(str(meta["root"])), relpath=relpath)
                break
        out.append(src)
    return out


def _gone(relpath: str, root: str | None, folder_args: set[str], ingested_now: set[str]) -> bool:
    """Whether a file indexed before should leave the index: it was found under a folder given again now
    and not found this time, or it lies in such a folder and is gone from disk, or it was indexed this
    run under a name relative to an outer folder."""
    if not root:
        return False
    real_root = os.path.realpath(root)
    if real_root in folder_args:
        return True
    old_file = os.path.join(real_root, *relpath.split("/"))
    if not any(_inside(old_file, folder) for folder in folder_args):
        return False
    return not os.path.exists(old_file) or os.path.realpath(old_file) in ingested_now


def _keep(meta: dict[str, Any], chunks: list[Chunk], kept_ids: list[int]) -> None:
    from ragcli.types import Chunk

    for row in meta.get("chunks", []):
        chunks.append(Chunk.from_json(row))
        kept_ids.append(int(row["id"]))


def _assemble_vectors(plan: IngestPlan, prior: Any) -> tuple[list[int], np.ndarray]:
    """One vector per chunk of the plan, in the plan's chunk order: new ones from this run, kept and
    reused ones from the prior generation."""
    import numpy as np

    prior_lookup: dict[int, int] = {}
    prior_vectors = None
    if prior is not None and (plan.kept_ids or any(isinstance(v, tuple) for v in plan.new_vectors.values())):
        ids, prior_vectors = prior.vectors()
        prior_lookup = {i: n for n, i in enumerate(ids)}
    dim = int(plan.embed_info["dim"])
    out = np.zeros((len(plan.chunks), dim), dtype=np.float32)
    for row, c in enumerate(plan.chunks):
        v = plan.new_vectors.get(c.id)
        if v is None:
            out[row] = prior_vectors[prior_lookup[c.id]]
        elif isinstance(v, tuple):
            out[row] = prior_vectors[prior_lookup[v[1]]]
        else:
            out[row] = v
    return [c.id for c in plan.chunks], out


def _bm25_writer(chunks: list[Chunk]) -> Callable[[Path], list[Path]]:
    def write(directory: Path) -> list[Path]:
        from ragcli.bm25 import BM25Index

        return BM25Index.build([c.id for c in chunks], [c.text for c in chunks]).save(directory / "bm25")

    return write


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("llama-index-core", "faiss-cpu", "transformers", "sentence-transformers", "torch", "bm25s"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
