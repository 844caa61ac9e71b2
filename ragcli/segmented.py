"""Format 2 of the local index: a generation is a list of shared, immutable segments.

    <index>/
      segments/seg-<12 hex>/   see ragcli.segments; shared by every generation that lists it
      gen-000008/
        files.json             relpath -> sha256, bytes, root, status, chunks, tokens, segment, row
        dead.json              segment -> [[first row, end row), ...]: rows deleted since it was written
        manifest.json          written last: embedding record, splitter, counts, the segments (name,
                               rows, SHA-256 of their record) and the size and SHA-256 of files.json
                               and dead.json

The chunks of one file are consecutive rows of one segment, so the file table says where each file's
chunks are and a file that changes or goes is one dead row range. An ingest writes one segment with
the chunks of the files it split, a new (small) file table and dead list, and a manifest: its cost
follows what changed. When dead rows pass `DEAD_FRACTION` of a segment, or there are more than
`MAX_SEGMENTS`, the affected segments' live rows are rewritten (compaction), so searches do not pay for
dead rows forever; `compact=True` rewrites everything.

Every segment a new generation writes is built in `segments/tmp-…` and renamed into place before the
generation's manifest is written: a crash leaves at most unreferenced segments, removed by the next
writer (`unreferenced_segments`). Old generations keep their segments alive; a segment is deleted only
when no kept generation lists it.
"""

from __future__ import annotations

import heapq
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import IndexCorruptedError
from ragcli.segments import BM25Stats, Segment, SegmentWriter, bm25_search, key_u64
from ragcli.types import Chunk, ManifestFields, sha256_file, text_key

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.types import Plan

FORMAT_VERSION = 2
SEGMENTS = "segments"
FILES = "files.json"
DEAD = "dead.json"
MANIFEST = "manifest.json"
SEGMENT_ROWS = 1 << 18  # rows per segment written (a file's chunks are never split across segments)
ADD_BATCH = 4096  # rows handed to the segment writer at once
MAX_SEGMENTS = 8
DEAD_FRACTION = 0.3
_HINT = "Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"


def _corrupt(path: Path, what: str) -> IndexCorruptedError:
    return IndexCorruptedError(f"Index corrupted: {path} {what}. {_HINT}")


def _json_bytes(data: Any) -> bytes:
    """JSON as UTF-8; a path whose bytes are not UTF-8 (kept by Python as lone surrogates) is written
    with \\u escapes instead, which read back as the very same path."""
    try:
        return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=True).encode("ascii")


def dead_mask(rows: int, ranges: list[list[int]]) -> np.ndarray | None:
    import numpy as np

    if not ranges:
        return None
    mask = np.zeros(rows, dtype=bool)
    for start, stop in ranges:
        mask[start:stop] = True
    return mask


class SegmentedGeneration(ManifestFields):
    """A published format 2 generation, opened for reading. The small files (manifest, file table,
    dead rows, segment records) are checked against their SHA-256 when opened; the data a query reads
    is checked as it is read (see `ragcli.segments`); `verify()` checks everything in full."""

    format = FORMAT_VERSION

    def __init__(self, root: Path, name: str, manifest: dict[str, Any]) -> None:
        self.root = root
        self.name = name
        self.path = root / name
        self.manifest = manifest
        self.files: dict[str, Any] = json.loads(self._checked(FILES))
        self.dead: dict[str, list[list[int]]] = json.loads(self._checked(DEAD))
        self.records: list[dict[str, Any]] = list(manifest["segments"])
        self.segments: list[Segment] = []
        try:
            for rec in self.records:
                self.segments.append(Segment.open(root / SEGMENTS / rec["name"], rec))
        except BaseException:  # (a writer may have pruned this generation: LocalIndex.load retries)
            self.close()
            raise
        self.masks = [dead_mask(s.rows, self.dead.get(s.name, [])) for s in self.segments]
        self.by_name = {s.name: s for s in self.segments}

    def _checked(self, name: str) -> bytes:
        path = self.path / name
        meta = self.manifest["checksums"].get(name)
        if not isinstance(meta, dict):
            raise _corrupt(self.path / MANIFEST, f"records no checksum for {name}")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise _corrupt(path, "is missing") from None
        import hashlib

        if len(data) != meta.get("bytes"):
            raise _corrupt(path, f"is {len(data)} bytes, the manifest says {meta.get('bytes')} (truncated or appended to)")
        if hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            raise _corrupt(path, "does not match its checksum")
        return data

    # -- what it holds ---------------------------------------------------------------------------
    @property
    def index_type(self) -> str:
        return str(self.manifest.get("faiss_index_type") or "flat")

    @property
    def chunk_count(self) -> int:
        return int(self.manifest["counts"]["chunks"])

    def live_rows(self) -> int:
        return sum(s.rows - (int(m.sum()) if m is not None else 0) for s, m in zip(self.segments, self.masks, strict=True))

    @property
    def chunks(self) -> list[Chunk]:
        """Every live chunk, file by file (reads them all: for small indexes, tools and tests)."""
        if getattr(self, "_all", None) is None:
            self._all = list(self.iter_chunks())
        return self._all

    @property
    def by_id(self) -> dict[int, Chunk]:
        return {c.id: c for c in self.chunks}

    def vectors(self) -> tuple[list[int], np.ndarray]:
        """(ids, vectors) of every live chunk, in `chunks` order (reads them all)."""
        import numpy as np

        ids, rows = [], []
        for relpath in sorted(self.files):
            chunks = self.file_chunks(relpath)
            if chunks:
                ids.extend(c.id for c in chunks)
                rows.append(self.file_vectors(relpath))
        dim = int(self.embed.get("dim") or 0)
        return ids, (np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32))

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Dense search as (chunk id, cosine), best first."""
        return [(c.id, score) for c, score in self.dense(vector, k)]

    def iter_chunks(self) -> Iterator[Chunk]:
        """Every live chunk, file by file."""
        for relpath in sorted(self.files):
            yield from self.file_chunks(relpath)

    def file_chunks(self, relpath: str) -> list[Chunk]:
        meta = self.files[relpath]
        if not meta.get("chunks"):
            return []
        seg = self._segment_of(relpath, meta)
        return seg.all_chunks(int(meta["row"]), int(meta["row"]) + int(meta["chunks"]))

    def file_vectors(self, relpath: str) -> np.ndarray:
        import numpy as np

        meta = self.files[relpath]
        if not meta.get("chunks"):
            return np.zeros((0, int(self.embed.get("dim") or 0)), dtype=np.float32)
        seg = self._segment_of(relpath, meta)
        return np.asarray(seg.vectors()[int(meta["row"]) : int(meta["row"]) + int(meta["chunks"])])

    def _segment_of(self, relpath: str, meta: dict[str, Any]) -> Segment:
        seg = self.by_name.get(str(meta.get("segment")))
        if seg is None or int(meta["row"]) + int(meta["chunks"]) > seg.rows:
            raise _corrupt(self.path / FILES, f"places {relpath!r} outside its segment")
        return seg

    def reusable(self, keys: list[str]) -> dict[str, np.ndarray]:
        """Vectors of held chunks whose text has one of these text keys. Dead rows count: their vectors
        are as good as ever (same model, same text), so reverting an edit embeds nothing."""
        import numpy as np

        out: dict[str, np.ndarray] = {}
        wanted = {key_u64(k): k for k in keys}
        if not wanted:
            return out
        probe = np.asarray(sorted(wanted), dtype=np.uint64)
        for seg in self.segments:
            candidates = seg.find_keys(probe)
            rows = sorted({r for rs in candidates.values() for r in rs})
            if not rows:
                continue
            texts = seg.chunks(rows)
            vectors = seg.vectors()
            for short, rs in candidates.items():
                full = wanted[short]
                if full in out:
                    continue
                for r in rs:
                    if text_key(texts[r].text) == full:  # the short key matched: compare the real text
                        out[full] = np.array(vectors[r], dtype=np.float32)
                        break
        return out

    # -- search ----------------------------------------------------------------------------------
    def dense(self, vector: np.ndarray, k: int) -> list[tuple[Chunk, float]]:
        import numpy as np

        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        dim = int(self.embed.get("dim") or query.shape[0])
        if query.shape[0] != dim:
            raise IndexCorruptedError(f"The query vector has dimension {query.shape[0]} but the index has {dim}.")
        if not np.isfinite(query).all():
            return []
        found = []
        for number, (seg, mask) in enumerate(zip(self.segments, self.masks, strict=True)):
            found.extend((-score, number, row) for row, score in seg.dense(query, k, mask))
        return self._hits(heapq.nsmallest(k, found))

    def bm25_hits(self, text: str, k: int) -> list[tuple[Chunk, float]]:
        stats = BM25Stats(docs=sum(s.rows for s in self.segments),
                          tokens=sum(int(s.meta.get("tokens") or 0) for s in self.segments))
        found = bm25_search(list(zip(self.segments, self.masks, strict=True)), text, k, stats)
        return self._hits([(-score, number, row) for number, row, score in found])

    def _hits(self, ranked: list[tuple[float, int, int]]) -> list[tuple[Chunk, float]]:
        by_segment: dict[int, list[int]] = {}
        for _, number, row in ranked:
            by_segment.setdefault(number, []).append(row)
        rows = {number: self.segments[number].chunks(wanted) for number, wanted in by_segment.items()}
        return [(rows[number][row], -neg) for neg, number, row in ranked]

    def raw_search(self, vector: np.ndarray, k: int) -> Any:
        """The segments' own flat search, without dead rows, chunk lookups or checks (bench's baseline)."""
        import faiss
        import numpy as np

        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return [faiss.knn(query, np.asarray(s.vectors()), min(k, s.rows), metric=faiss.METRIC_INNER_PRODUCT)
                for s in self.segments if s.rows]

    # -- checks ----------------------------------------------------------------------------------
    def verify(self) -> None:
        for seg in self.segments:
            seg.verify()

    def size_bytes(self) -> int:
        """Bytes on disk, from the sizes the manifest and segment records hold (checked when opened), so
        it still answers after a writer pruned this generation."""
        total = sum(int(m.get("bytes") or 0) for m in self.manifest["checksums"].values())
        total += len(json.dumps(self.manifest, indent=1, sort_keys=True).encode("utf-8"))
        for seg in self.segments:
            total += sum(int(info["bytes"]) for info in seg.meta["files"].values())
            total += len(json.dumps(seg.meta, indent=1, sort_keys=True).encode("utf-8"))
        return total

    def close(self) -> None:
        for seg in self.segments:
            seg.close()


def open_generation(root: Path, name: str, manifest: dict[str, Any]) -> SegmentedGeneration:
    for key in ("segments", "checksums", "counts"):
        if not isinstance(manifest.get(key), (list if key == "segments" else dict)):
            raise _corrupt(root / name / MANIFEST, "is not a valid manifest")
    return SegmentedGeneration(root, name, manifest)


# -- writing ---------------------------------------------------------------------------------------
class _Output:
    """New segments, filled file by file, each at most SEGMENT_ROWS rows (a file is never split)."""

    def __init__(self, root: Path, dim: int, index_type: str, after_step: Callable[[str], None]) -> None:
        self.root = root / SEGMENTS
        self.root.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.index_type = index_type
        self.after_step = after_step
        self.records: list[dict[str, Any]] = []
        self.writer: SegmentWriter | None = None
        self.pending: list[tuple[list[Chunk], np.ndarray]] = []  # files not yet handed to the writer
        self.pending_rows = 0
        self.name = ""
        self.tmp: Path | None = None

    def add_file(self, chunks: list[Chunk], vectors: np.ndarray) -> tuple[str, int]:
        """Append one file's chunks; returns (segment name, first row). Files are handed to the segment
        writer in batches of about `ADD_BATCH` rows (one table insert and one postings count per batch,
        not per file: what ingesting many tiny files costs)."""
        rows = self.writer.rows + self.pending_rows if self.writer is not None else 0
        if self.writer is not None and rows and rows + len(chunks) > SEGMENT_ROWS:
            self.close_segment()
            rows = 0
        if self.writer is None:
            self.name = f"seg-{uuid.uuid4().hex[:12]}"
            self.tmp = self.root / f"tmp-{self.name}"
            self.writer = SegmentWriter(self.tmp, self.dim, self.index_type)
        if chunks:
            self.pending.append((chunks, vectors))
            self.pending_rows += len(chunks)
            if self.pending_rows >= ADD_BATCH:
                self._add_pending()
        return self.name, rows

    def _add_pending(self) -> None:
        import numpy as np

        if self.writer is not None and self.pending:
            self.writer.add([c for chunks, _ in self.pending for c in chunks],
                            np.concatenate([v for _, v in self.pending]))
        self.pending, self.pending_rows = [], 0

    def close_segment(self) -> None:
        if self.writer is None:
            return
        self._add_pending()
        record = self.writer.finish()
        assert self.tmp is not None
        record["name"] = self.name
        os.rename(self.tmp, self.root / self.name)
        _fsync_dir(self.root)
        self.records.append(record)
        self.writer, self.tmp = None, None
        self.after_step("segment")

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_generation(root: Path, tmp: Path, plan: Plan, prior: Any, manifest: dict[str, Any], *,
                     index_type: str, compact: bool, after_step: Callable[[str], None]) -> dict[str, Any]:
    """Write the generation for `plan` into the folder `tmp` (its new segments into `root/segments`).
    `prior` is the generation `state()` read (any format; None for a new index). Returns the manifest
    written; the caller renames `tmp` into place and publishes it."""
    import numpy as np

    dim = int(plan.embed["dim"])
    same_format = isinstance(prior, SegmentedGeneration) and prior.index_type == index_type
    carried: list[dict[str, Any]] = []  # prior segment records the new generation still lists
    dead: dict[str, list[list[int]]] = {}
    files: dict[str, Any] = {}
    rewrite: list[str] = []  # kept files whose chunks are copied into new segments
    if same_format and not compact:
        for relpath, meta in prior.files.items():
            if relpath not in plan.kept and meta.get("chunks"):
                dead.setdefault(str(meta["segment"]), []).append([int(meta["row"]), int(meta["row"]) + int(meta["chunks"])])
        for name, ranges in prior.dead.items():
            dead.setdefault(name, []).extend(ranges)
        doomed = _segments_to_rewrite(prior, dead, extra=1 if plan.chunks else 0)
        for rec in prior.records:
            if rec["name"] not in doomed:
                carried.append(rec)
        for relpath in sorted(plan.kept):
            meta = plan.files[relpath]
            if meta.get("chunks") and str(prior.files[relpath]["segment"]) in doomed:
                rewrite.append(relpath)
            else:
                files[relpath] = dict(meta, segment=prior.files[relpath].get("segment"),
                                      row=prior.files[relpath].get("row"))
        dead = {name: _merge(ranges) for name, ranges in dead.items() if name not in doomed and
                any(r["name"] == name for r in carried)}
    else:
        rewrite = sorted(f for f in plan.kept if f in plan.files)
    out = _Output(root, dim, index_type, after_step)
    try:
        new_by_file: dict[str, list[Chunk]] = {}
        for c in plan.chunks:
            new_by_file.setdefault(c.file, []).append(c)
        for relpath in sorted({*rewrite, *new_by_file}):
            if relpath in new_by_file:
                chunks = new_by_file[relpath]
                vectors = np.stack([np.asarray(plan.vectors[c.id], dtype=np.float32) for c in chunks])
            else:
                chunks = _prior_chunks(prior, relpath)
                vectors = _prior_vectors(prior, relpath, chunks)
            name, row = out.add_file(chunks, vectors.reshape(len(chunks), dim))
            files[relpath] = dict(plan.files[relpath], segment=name, row=row)
        for relpath, meta in plan.files.items():  # files without chunks (none to place)
            files.setdefault(relpath, dict(meta, segment=None, row=0))
        out.close_segment()
    except BaseException:
        out.abort()
        raise
    records = [*carried, *out.records]
    files_bytes = _json_bytes(files)
    dead_bytes = _json_bytes(dead)
    _fsync_write(tmp / FILES, files_bytes)
    _fsync_write(tmp / DEAD, dead_bytes)
    after_step("files")
    import hashlib

    dead_rows = sum(stop - start for ranges in dead.values() for start, stop in ranges)
    full = dict(manifest)
    full.update({
        "format_version": FORMAT_VERSION,
        "faiss_index_type": index_type,
        "metric": "cosine",
        "segments": records,
        "counts": {"chunks": plan.chunk_count, "files": len(files), "segments": len(records),
                   "rows": sum(int(r["rows"]) for r in records), "dead_rows": dead_rows},
        "checksums": {FILES: {"bytes": len(files_bytes), "sha256": hashlib.sha256(files_bytes).hexdigest()},
                      DEAD: {"bytes": len(dead_bytes), "sha256": hashlib.sha256(dead_bytes).hexdigest()}},
    })
    return full


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    out: list[list[int]] = []
    for start, stop in sorted(ranges):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


def _segments_to_rewrite(prior: SegmentedGeneration, dead: dict[str, list[list[int]]], extra: int) -> set[str]:
    """Segments whose live rows are copied into new segments: those with too many dead rows, and, when
    there would be too many segments, the smallest until the count fits."""
    doomed = set()
    live = {}
    for seg in prior.segments:
        dead_rows = sum(stop - start for start, stop in _merge(dead.get(seg.name, [])))
        live[seg.name] = seg.rows - dead_rows
        if seg.rows and dead_rows / seg.rows > DEAD_FRACTION:
            doomed.add(seg.name)
    remaining = [s for s in prior.segments if s.name not in doomed]
    if len(remaining) + extra > MAX_SEGMENTS:
        for seg in sorted(remaining, key=lambda s: (live[s.name], s.name)):
            if len(remaining) + extra <= MAX_SEGMENTS // 2:
                break
            doomed.add(seg.name)
            remaining.remove(seg)
    return doomed


def _prior_chunks(prior: Any, relpath: str) -> list[Chunk]:
    return prior.file_chunks(relpath)


def _prior_vectors(prior: Any, relpath: str, chunks: list[Chunk]) -> np.ndarray:
    return prior.file_vectors(relpath)


def referenced_segments(root: Path, generations: list[str]) -> set[str] | None:
    """Names of the segments the given generations list; None when a manifest cannot be read (then
    nothing may be deleted: the segments it lists are unknown)."""
    names: set[str] = set()
    for gen in generations:
        try:
            manifest = json.loads((root / gen / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format_version") == FORMAT_VERSION:
                names.update(str(r["name"]) for r in manifest["segments"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    return names


def verify_files(gen: SegmentedGeneration) -> None:
    """Full check of a generation's own files (the segments check theirs)."""
    for name in (FILES, DEAD):
        meta = gen.manifest["checksums"][name]
        if sha256_file(gen.path / name) != meta["sha256"]:
            raise _corrupt(gen.path / name, "does not match its checksum")
