"""Planning an ingest: sources → diff against what a target holds → split → embed → a `Plan`.

The planner knows no target. It is given the target's `TargetState` (its file table, embedding
record and splitter settings) and a way to ask for vectors the target already holds, and returns the
next content as a `ragcli.types.Plan` plus the report of what happened to every file.

Files are identified by their path relative to the ingested root and fingerprinted by the SHA-256
of their bytes. An unchanged file is not even read into the splitter or the embedder; a changed file
has its chunks replaced (vectors of chunks whose text the target already holds are reused, not
re-embedded); a file that disappeared from an ingested folder has its chunks removed. A file that
fails to load is reported by name, the others are planned, and a version of the failing file that
the target holds is kept rather than lost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import (
    DocumentError,
    EmptyDocumentError,
    IndexModelMismatchError,
    NoDocumentsError,
    UsageError,
)
from ragcli.types import Chunk, Plan, file_chunks, sha256_file, text_key

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.config import Settings
    from ragcli.loaders import SourceFile
    from ragcli.models import Embedder
    from ragcli.splitting import Splitter, SplitterSettings
    from ragcli.targets.base import Target
    from ragcli.types import Progress, TargetState

FLUSH_TEXTS = 256  # embed pending chunk texts in groups of about this many, across files
SPLIT_GROUP_CHARS = 2_000_000  # split loaded files in groups of about this much text (one window stream each)


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
    published: bool = False  # False when nothing changed (the current content stays)
    resplit_chunks: int = 0
    hard_cuts: int = 0
    embed_model: str = ""
    splitter: dict[str, Any] = field(default_factory=dict)
    window_precision: str = ""  # the semantic splitter's window vectors: "bf16", "int8" or "same" ("" = none computed)

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


# -- compatibility: one copy, for every target and for query ---------------------------------------
def check_embedding_model(recorded: dict[str, Any], model_id: str, revision: str | None, label: str,
                          advice: str) -> None:
    """Refuse content built with another embedding model (or revision). `revision` None compares names only."""
    from ragcli.registry import model_mismatch

    problem = model_mismatch(recorded, model_id, revision, label)
    if problem:
        raise IndexModelMismatchError(f"{problem} {advice}")


def check_embedding_backend(recorded: dict[str, Any], backend: str, quantization: str, label: str,
                            advice: str) -> None:
    """Refuse to mix vectors of two embedding backends (torch, onnx, onnx int8) in one index: their
    vectors differ slightly (int8 more than slightly), so one index holds one backend's vectors only.
    An index recorded before backends existed holds torch vectors."""
    held = (str(recorded.get("backend") or "torch"), str(recorded.get("quantization") or "none"))
    if held != (backend, quantization):
        raise IndexModelMismatchError(
            f"{label} holds vectors of the {_backend_name(*held)} embedding backend; this run uses "
            f"{_backend_name(backend, quantization)}. {advice}")


def _backend_name(backend: str, quantization: str) -> str:
    return backend if quantization in ("", "none") else f"{backend}-{quantization}"


def backend_setting(recorded: dict[str, Any]) -> str:
    """The --embed-backend value that gives the vectors `recorded` holds."""
    return _backend_name(str(recorded.get("backend") or "torch"), str(recorded.get("quantization") or "none"))


def check_dimension(held_dim: int | None, model_id: str, dim: int, label: str, advice: str) -> None:
    """Refuse vectors of another dimension than the target holds."""
    if held_dim is not None and int(held_dim) != int(dim):
        raise IndexModelMismatchError(
            f"{label} holds {held_dim}-d vectors but {model_id} gives {dim}-d ones. {advice}"
        )


# -- sources ---------------------------------------------------------------------------------------
def find_sources(paths: Sequence[Path | str], prior_files: dict[str, Any]) -> tuple[list[SourceFile], set[str]]:
    """The supported files under `paths`, named as the target knows them, and the real paths of the
    folders given. Refuses two files that would share one name in the index."""
    from ragcli.loaders import discover

    path_list = [Path(p) for p in paths]
    sources = discover(path_list)
    if not sources:
        raise NoDocumentsError(f"No .md, .markdown or .docx files in {', '.join(map(str, path_list))}.")
    # Folders given now, by real path (a root recorded through a symlink or a relative path still matches).
    folder_args = {os.path.realpath(p) for p in path_list if p.is_dir()}
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
    return sources, folder_args


def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:  # different drives
        return False


def _rebase(sources: list[SourceFile], prior_files: dict[str, Any]) -> list[SourceFile]:
    """A file the index already holds under a folder ingested before (by its name relative to that folder)
    keeps that name when it is given alone or through a subfolder, so it is updated, not added twice: after
    `ingest docs`, `ingest docs/sub/x.md` updates "sub/x.md" instead of adding a second "x.md"."""
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


# -- the planner -----------------------------------------------------------------------------------
def plan(
    paths: Sequence[Path | str],
    state: TargetState,
    settings: Settings,
    *,
    target: Target,
    encoding: str | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> tuple[Plan, IngestReport]:
    """Decide what changed against `state`, then split and embed only that.

    Of `target` the planner uses only its wording (`label`, `rebuild_hint()`, `dimension_advice()`)
    and `reusable_vectors(text_keys)`, the vectors it holds for chunk texts (a text it cannot give back
    is embedded again): it never writes to it."""
    return _Planner(state, settings, target=target, encoding=encoding, progress=progress, embedder=embedder).run(paths)


class _Planner:
    """One planning run: the loop over files and the bookkeeping it shares across them."""

    def __init__(self, state: TargetState, settings: Settings, *, target: Target, encoding: str | None,
                 progress: Progress | None, embedder: Embedder | None) -> None:
        self.state = state
        self.prior = state.files
        self.settings = settings
        self.target = target
        self.encoding = encoding
        self.progress = progress
        self.embedder = embedder
        self._embedded_before = embedder.texts_embedded if embedder is not None else 0
        self.report = IngestReport(index="", target=settings.target, generation=None)
        self.files: dict[str, Any] = {}
        self.kept: set[str] = set()
        self.chunks: list[Chunk] = []  # chunks of the files split in this run
        self.vectors: dict[int, Any] = {}
        self.pending: list[Chunk] = []  # chunks whose vector is not decided yet
        self.fresh: dict[str, Any] = {}  # text key -> vector decided in this run (identical texts cost once)
        self.changed = False
        self.splitter: Splitter | None = None
        self.window_cache: Any = None
        self.window_embedder: Embedder | None = None  # the splitter's, where it is not `embedder`
        self._window_before = 0
        # Loaded files waiting to be split together: (relpath, text, file entry, report entry).
        self.to_split: list[tuple[str, str, dict[str, Any], FileResult, dict[str, Any] | None]] = []
        self.to_split_chars = 0

    # -- set-up ----------------------------------------------------------------------------------
    def get_embedder(self) -> Embedder:
        if self.embedder is None:
            from ragcli.models import load_embedder

            self.embedder = load_embedder(self.settings)
            self._embedded_before = self.embedder.texts_embedded
        return self.embedder

    def check_model(self) -> None:
        """Refuse content built with another model, before anything is read or embedded."""
        from ragcli.models import embedding_backend, embedding_identity

        model_id, revision = embedding_identity(self.settings, self.embedder)
        self.report.embed_model = model_id
        label = self.target.label
        if self.state.embed is not None:
            check_embedding_model(self.state.embed, model_id, revision, label,
                                  f"Run: {self.target.rebuild_hint()} (or pass --embed-model "
                                  f"{self.state.embed.get('model')}, the model it was built with).")
            check_embedding_backend(self.state.embed, *embedding_backend(self.settings, self.embedder), label,
                                    f"Pass --embed-backend {backend_setting(self.state.embed)}, or run: "
                                    f"{self.target.rebuild_hint()} to re-embed everything.")
        if self.state.fixed_dim is not None:
            held = self.state.embed.get("dim") if self.state.embed else None
            dim = int(held) if held else self.get_embedder().dim
            check_dimension(self.state.fixed_dim, model_id, dim, label, self.target.dimension_advice())

    def splitter_settings(self) -> SplitterSettings:
        from ragcli.splitting import SplitterSettings

        limit = (self.state.embed or {}).get("chunk_token_limit")
        if limit is None:
            limit = self.get_embedder().chunk_token_limit
        return SplitterSettings.from_settings(self.settings, embedder_limit=int(limit))

    # -- the run ---------------------------------------------------------------------------------
    def run(self, paths: Sequence[Path | str]) -> tuple[Plan, IngestReport]:
        sources, folder_args = find_sources(paths, self.prior)
        self.check_model()
        split_settings = self.splitter_settings()
        self.report.splitter = split_settings.as_dict()
        same_splitter = self.state.splitter == split_settings.as_dict()
        for number, src in enumerate(sources, 1):
            if self.progress:
                self.progress("files", number - 1, len(sources))
            self.plan_file(src, split_settings, same_splitter)
            # Only the semantic splitter gains from splitting files together (one window stream).
            if self.to_split_chars >= SPLIT_GROUP_CHARS or split_settings.kind != "semantic":
                self.split_loaded(split_settings)
            if len(self.pending) >= FLUSH_TEXTS:
                self.flush()
        self.split_loaded(split_settings)
        self.flush()
        if self.window_cache is not None:
            self.window_cache.close()
        if self.progress:
            self.progress("files", len(sources), len(sources))
        self.remove_missing(sources, folder_args)
        if not same_splitter:
            self.changed = True
        return self.finish(split_settings)

    def plan_file(self, src: SourceFile, split_settings: SplitterSettings, same_splitter: bool) -> None:
        from ragcli.loaders import load_text, name_problem, printable_name

        problem = name_problem(src.relpath)
        if problem:  # named with its bytes escaped, and skipped: the other files are still indexed
            self.fail(printable_name(src.relpath), problem, None)
            return
        old = self.prior.get(src.relpath)
        try:
            sha = sha256_file(src.path)
        except PermissionError:
            from ragcli.errors import permission_advice

            self.fail(src.relpath, f"cannot read: Permission denied. {permission_advice(src.path)}", old)
            return
        except OSError as exc:
            self.fail(src.relpath, f"cannot read: {exc.strerror or exc}", old)
            return
        if old and same_splitter and old.get("sha256") == sha and old.get("status") == "ok":
            self.files[src.relpath] = dict(old, root=str(src.root))
            self.kept.add(src.relpath)
            self.report.files.append(FileResult(src.relpath, "unchanged", chunks=int(old.get("chunks") or 0)))
            return
        try:
            text = load_text(src.path, encoding=self.encoding, limits=self.limits())
        except EmptyDocumentError as exc:
            self.report.files.append(FileResult(src.relpath, "skipped", reason=exc.reason))
            self.changed = self.changed or bool(old)
            return
        except DocumentError as exc:
            self.fail(src.relpath, exc.reason, old)
            return
        entry = {"sha256": sha, "bytes": src.path.stat().st_size, "root": str(src.root), "status": "ok"}
        result = FileResult(src.relpath, "changed" if old else "added")
        self.files[src.relpath] = entry
        self.report.files.append(result)
        self.to_split.append((src.relpath, text, entry, result, old))
        self.to_split_chars += len(text)
        self.changed = True

    def limits(self) -> Any:
        from ragcli.loaders import limits_for

        return limits_for(self.settings.max_file_mb, self.settings.max_docx_part_mb)

    def split_loaded(self, split_settings: SplitterSettings) -> None:
        """Split the files loaded since the last call together (the semantic splitter embeds the
        windows of all of them in one length-sorted stream), then queue their chunks. A file that
        cannot be split fails alone: the others are still indexed."""
        if not self.to_split:
            return
        if self.splitter is None:
            from ragcli.models import window_embedder_for, window_precision
            from ragcli.splitting import Splitter, window_cache_for

            windows = window_embedder_for(self.settings, self.get_embedder())
            self.report.window_precision = window_precision(self.settings, self.get_embedder())
            if windows is not self.get_embedder():
                self.window_embedder, self._window_before = windows, windows.texts_embedded
            self.window_cache = window_cache_for(self.settings, windows)
            self.splitter = Splitter(split_settings, self.get_embedder(), window_cache=self.window_cache,
                                     window_embedder=windows)
        try:
            pieces: list[list[str] | BaseException] = list(
                self.splitter.split_many([text for _, text, _, _, _ in self.to_split]))
        except (TimeoutError, RecursionError):  # find which file: split them one at a time
            pieces = []
            for _, text, _, _, _ in self.to_split:
                try:
                    pieces.append(self.splitter.split_many([text])[0])
                except (TimeoutError, RecursionError) as exc:
                    pieces.append(exc)
        for (relpath, _, entry, result, old), file_pieces in zip(self.to_split, pieces, strict=True):
            if isinstance(file_pieces, BaseException):
                exc = file_pieces
                result.status, result.reason = "failed", (
                    f"cannot be split into chunks ({type(exc).__name__}: {str(exc)[:160]}); "
                    "split the document into smaller files")
                if old:  # the version the target holds is kept
                    self.files[relpath] = old
                    self.kept.add(relpath)
                else:
                    del self.files[relpath]
                continue
            chunks = self.add_chunks(relpath, file_pieces)
            entry.update(chunks=len(chunks), tokens=sum(c.tokens for c in chunks))
            result.chunks = len(chunks)
        self.to_split.clear()
        self.to_split_chars = 0

    def add_chunks(self, relpath: str, pieces: list[str]) -> list[Chunk]:
        """Chunks of one file; their vectors are decided at the next flush."""
        out = file_chunks(relpath, pieces, self.get_embedder().count_tokens)
        self.chunks.extend(out)
        self.pending.extend(out)
        return out

    def fail(self, relpath: str, reason: str, old: dict[str, Any] | None) -> None:
        """A file that cannot be read: reported, and the version the target holds (if any) kept."""
        self.report.files.append(FileResult(relpath, "failed", reason=reason))
        if old:
            self.files[relpath] = old
            self.kept.add(relpath)

    def flush(self) -> None:
        """Decide the vectors of the pending chunks: a vector decided earlier in this run for the same
        text, else one the target holds for that text, else embedded now (each distinct text once)."""
        if not self.pending:
            return
        keys = {c.id: text_key(c.text) for c in self.pending}
        unknown = sorted({k for k in keys.values() if k not in self.fresh})
        held = self.target.reusable_vectors(unknown) if unknown and self.prior else {}
        self.fresh.update(held)
        texts: dict[str, str] = {}
        for c in self.pending:
            if keys[c.id] not in self.fresh:
                texts.setdefault(keys[c.id], c.text)
        if texts:
            for key, vector in zip(texts, self.embed(list(texts.values())), strict=True):
                self.fresh[key] = vector
        for c in self.pending:
            self.vectors[c.id] = self.fresh[keys[c.id]]
        self.report.chunks_embedded += len(texts)
        self.report.chunks_reused += len(self.pending) - len(texts)
        self.pending.clear()

    def embed(self, texts: list[str]) -> np.ndarray:
        progress = self.progress
        if progress:
            progress("embed", 0, len(texts))
        return self.get_embedder().embed_documents(
            texts, progress=(lambda d, t: progress("embed", d, t)) if progress else None)

    def remove_missing(self, sources: list[SourceFile], folder_args: set[str]) -> None:
        """Files held before under an ingested folder but gone now are removed; others are kept."""
        ingested_now = {src.real or os.path.realpath(src.path) for src in sources}
        reported = {f.file for f in self.report.files}
        for relpath, old in self.prior.items():
            if relpath in self.files or relpath in reported:
                continue
            if _gone(relpath, old.get("root"), folder_args, ingested_now):
                self.report.files.append(FileResult(relpath, "removed", chunks=int(old.get("chunks") or 0)))
                self.changed = True
            else:
                self.files[relpath] = old
                self.kept.add(relpath)

    def finish(self, split_settings: SplitterSettings) -> tuple[Plan, IngestReport]:
        report = self.report
        if self.embedder is not None:
            embed_info = dict(self.embedder.info(), chunk_token_limit=self.embedder.chunk_token_limit)
            report.texts_embedded = self.embedder.texts_embedded - self._embedded_before
            if self.window_embedder is not None:
                report.texts_embedded += self.window_embedder.texts_embedded - self._window_before
        else:
            embed_info = dict(self.state.embed or {})
        if not embed_info.get("dim"):  # nothing was read (every file failed): the record still needs the model
            emb = self.get_embedder()
            embed_info = dict(emb.info(), chunk_token_limit=emb.chunk_token_limit)
        if self.splitter is not None:
            report.resplit_chunks = self.splitter.stats.resplit
            report.hard_cuts = self.splitter.stats.hard_cuts
        self.chunks.sort(key=lambda c: (c.file, c.position))
        result = Plan(files=self.files, chunks=self.chunks, vectors=self.vectors, kept=self.kept, embed=embed_info,
                      splitter=split_settings.as_dict(), changed=self.changed)
        report.chunks_total = result.chunk_count
        report.tokens = result.token_count
        return result, report
