"""The local index: whole generations of shared, immutable segments, published atomically.

    <index>/
      LOCK            flock held by the one writer; holds its pid
      CURRENT         name of the published generation ("gen-000007"), replaced atomically
      segments/       seg-<hex>/: vectors, chunk rows, BM25 postings (ragcli.segments); shared by generations
      gen-000007/     files.json  dead.json  manifest.json (written last): which segments, which rows are dead
      gen-000006/     the previous generation, kept for rollback
      tmp-<random>/   a generation being written; removed by the next writer if left behind
      trash-<random>/ a pruned generation or segment, renamed here before it is deleted (so nothing is
                      ever seen half-deleted); removed by the next writer if a kill left it behind

Every ingest writes its new segments (renamed into place when complete), then a new generation folder
in a temporary folder, fsyncs it, renames it into place and only then switches CURRENT with
`os.replace` (and fsyncs the folder), so a reader sees either the old index or the new one, never a
mix, and a crash at any moment leaves the previous generation published. Nothing inside a published
generation or segment is ever rewritten; a generation that changes one file writes one small segment
and a small file table (see `ragcli.segmented`). A segment is deleted only when no kept generation
lists it.

On load the generation's own files are checked against the sizes and SHA-256 its manifest records and
each segment's record against the checksum the generation holds for it; what a search reads is
checked as it is read (`ragcli.segments`), and `verify` checks every byte. A truncated or flipped file
is reported as a corrupted index naming the file, never answered from.

Indexes written by the first format (one FAISS file and a JSON Lines chunk table per generation) are
still read; the next ingest rewrites them in the current format.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import (
    GenerationGoneError,
    IndexCorruptedError,
    IndexLockedError,
    IndexNotFoundError,
    IndexWriteError,
    PermissionDeniedError,
)
from ragcli.types import Chunk, ManifestFields, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.types import Plan

FORMAT_VERSION = 2  # what this ragcli writes (ragcli.segmented); format 1 is still read
LEGACY_FORMAT = 1
SEGMENTS = "segments"
VECTORS = "vectors.faiss"
CHUNKS = "chunks.jsonl"
FILES = "files.json"
MANIFEST = "manifest.json"
BM25_DIR = "bm25"
KEEP_GENERATIONS = 2  # the published one and the one before it
LOAD_RETRIES = 20  # a reader re-reads CURRENT this often when writers prune what it resolved
TRASH = "trash-"  # a generation or segment being deleted (renamed first, so never seen half-deleted)


def _after_step(step: str) -> None:
    """Called after each step of writing a generation. A no-op; fault-injection tests replace it."""


def _named(exc: OSError, path: Path) -> OSError:
    if exc.filename is None:  # os.fsync and file writes do not name the file; the message should
        exc.filename = str(path)
    return exc


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        raise _named(exc, path) from None
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can open a directory
        _fsync_file(path)


def _write_text(path: Path, text: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise _named(exc, path) from None


def _reports_write_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn an OSError while writing (disk full, I/O error, permissions) into one clear IndexWriteError."""

    @functools.wraps(method)
    def wrapper(self: LocalIndex, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except OSError as exc:
            raise self._write_error(exc) from exc

    return wrapper


class Generation(ManifestFields):
    """A published generation, loaded and verified. FAISS and BM25 data are read on first use."""

    def __init__(self, root: Path, name: str, manifest: dict[str, Any], chunks: list[Chunk],
                 files: dict[str, Any]) -> None:
        self.root = root
        self.name = name
        self.path = root / name
        self.manifest = manifest
        self.chunks = chunks
        self.files = files
        self.by_id = {c.id: c for c in chunks}
        self._faiss: Any = None
        self._bm25: Any = None

    def faiss_index(self) -> Any:
        if self._faiss is None:
            import faiss

            try:
                index = faiss.read_index(str(self.path / VECTORS))
            except RuntimeError as exc:
                raise IndexCorruptedError(
                    f"Index corrupted: {self.path / VECTORS} cannot be read ({str(exc).splitlines()[0][:120]}). "
                    "Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"
                ) from None
            if index.ntotal != len(self.chunks):
                raise IndexCorruptedError(
                    f"Index corrupted: {self.path / VECTORS} holds {index.ntotal} vectors but {CHUNKS} has "
                    f"{len(self.chunks)} chunks. Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"
                )
            if index.d != int(self.embed.get("dim", index.d)):
                raise IndexCorruptedError(f"Index corrupted: {self.path / VECTORS} has dimension {index.d}, "
                                          f"the manifest says {self.embed.get('dim')}.")
            self._faiss = index
        return self._faiss

    def vectors(self) -> tuple[list[int], np.ndarray]:
        """All (ids, vectors) in insertion order, for reuse by the next generation."""
        import faiss
        import numpy as np

        index = self.faiss_index()
        if index.ntotal == 0:
            return [], np.zeros((0, index.d), dtype=np.float32)
        ids = faiss.vector_to_array(index.id_map).astype(np.int64).tolist()
        vectors = index.index.reconstruct_n(0, index.ntotal)
        return ids, np.asarray(vectors, dtype=np.float32)

    def search(self, vector: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Dense search: (chunk id, cosine similarity), best first. k is clamped to the index size."""
        import numpy as np

        index = self.faiss_index()
        if index.ntotal == 0:
            return []
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if query.shape[1] != index.d:  # an explicit check: FAISS only asserts (and not under -O)
            raise IndexCorruptedError(
                f"The query vector has dimension {query.shape[1]} but the index has {index.d}."
            )
        if not np.isfinite(query).all():
            return []
        k = min(k, index.ntotal)
        params = None
        if self.manifest.get("faiss_index_type") == "hnsw":
            import faiss

            params = faiss.SearchParametersHNSW(efSearch=max(64, 2 * k))
        scores, ids = index.search(query, k, params=params) if params is not None else index.search(query, k)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i != -1]

    def bm25(self) -> Any:
        if self._bm25 is None:
            from ragcli.bm25 import BM25Index

            bm25_path = self.path / BM25_DIR
            if not bm25_path.is_dir():
                self._bm25 = BM25Index.build([c.id for c in self.chunks], [c.text for c in self.chunks])
            else:
                self._bm25 = BM25Index.load(bm25_path)
        return self._bm25

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())

    # -- the reading interface both formats share (see ragcli.segmented.SegmentedGeneration) -----------
    format = LEGACY_FORMAT

    @property
    def index_type(self) -> str:
        return str(self.manifest.get("faiss_index_type") or "flat")

    @property
    def chunk_count(self) -> int:
        return len(self.chunks)

    def iter_chunks(self) -> Iterator[Chunk]:
        return iter(self.chunks)

    def _vector_table(self) -> dict[int, Any]:
        if getattr(self, "_vector_rows", None) is None:
            ids, vectors = self.vectors()
            self._vector_rows = dict(zip(ids, vectors, strict=True))
        return self._vector_rows

    def file_chunks(self, relpath: str) -> list[Chunk]:
        return [Chunk.from_json(row) for row in self.files[relpath].get("chunks") or []]

    def file_vectors(self, relpath: str) -> np.ndarray:
        import numpy as np

        table = self._vector_table()
        rows = [table[c.id] for c in self.file_chunks(relpath)]
        return np.stack(rows) if rows else np.zeros((0, int(self.embed.get("dim") or 0)), dtype=np.float32)

    def reusable(self, keys: list[str]) -> dict[str, np.ndarray]:
        from ragcli.types import text_key

        wanted = set(keys)
        table = self._vector_table()
        out = {}
        for c in self.chunks:
            key = text_key(c.text)
            if key in wanted and key not in out and c.id in table:
                out[key] = table[c.id]
        return out

    def dense(self, vector: np.ndarray, k: int) -> list[tuple[Chunk, float]]:
        return [(self.by_id[cid], score) for cid, score in self.search(vector, k) if cid in self.by_id]

    def bm25_hits(self, text: str, k: int) -> list[tuple[Chunk, float]]:
        return [(self.by_id[cid], score) for cid, score in self.bm25().search(text, k) if cid in self.by_id]

    def raw_search(self, vector: np.ndarray, k: int) -> Any:
        index = self.faiss_index()
        return index.search(vector, min(k, max(1, index.ntotal)))

    def verify(self) -> None:
        """Every file was checked against its SHA-256 when loaded with verify=True; the vectors too."""
        self.faiss_index()

    def close(self) -> None:
        pass


class LocalIndex:
    """The index folder: read the published generation, or write a new one under the lock."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- reading ---------------------------------------------------------------------------------
    def current_name(self) -> str | None:
        try:
            name = (self.root / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise PermissionDeniedError.from_os_error(exc) from None
        except OSError as exc:
            raise IndexCorruptedError(f"Index corrupted: cannot read {self.root / 'CURRENT'} ({exc}).") from None
        if not name.startswith("gen-") or "/" in name or "\\" in name:
            raise IndexCorruptedError(
                f"Index corrupted: {self.root / 'CURRENT'} names {name[:40]!r}, not a generation. "
                "Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"
            )
        return name

    def exists(self) -> bool:
        return self.current_name() is not None

    def generations(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name.startswith("gen-"))

    def load(self, name: str | None = None, *, verify: bool = True) -> Generation:
        """The published generation (or `name`), checked against its manifest.

        A writer may publish and prune the generation this reader resolved from CURRENT before the reader
        has opened (pinned) its files. Pruning renames a generation out of the way before deleting anything
        of it or its segments, so "its folder is gone and CURRENT names another" tells a pruned generation
        from a damaged one: the reader then reads CURRENT again and retries, and never calls it corrupted."""
        for attempt in range(LOAD_RETRIES):
            current = name or self.current_name()
            if current is None:
                raise IndexNotFoundError(f"No index in {self.root}. Run: ragcli ingest <paths>")
            try:
                return self._load(current, verify=verify)
            except PermissionError as exc:  # not damage: the file is there but not readable by this user
                raise PermissionDeniedError.from_os_error(exc) from None
            except (FileNotFoundError, NotADirectoryError, IndexCorruptedError):
                if not self._gone(current):
                    raise
                if name is not None:
                    raise GenerationGoneError(f"{self.root / name} was pruned by a writer while being read; "
                                              "run the command again.") from None
                time.sleep(min(0.2, 0.01 * (attempt + 1)))
        raise GenerationGoneError(f"The index in {self.root} was republished {LOAD_RETRIES} times while being "
                                  "opened; nothing is damaged. Run the command again.")

    def _gone(self, name: str) -> bool:
        """Whether generation `name` was pruned by a writer (not damaged): its folder is gone and CURRENT
        names another one (writers switch CURRENT before they prune)."""
        if (self.root / name).is_dir():
            return False
        try:
            return self.current_name() != name
        except IndexCorruptedError:
            return False

    def _load(self, name: str, *, verify: bool) -> Generation:
        path = self.root / name
        if not path.is_dir():
            raise IndexCorruptedError(
                f"Index corrupted: CURRENT points to {name}, which does not exist in {self.root}. "
                "Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"
            )
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise IndexCorruptedError(f"Index corrupted: {manifest_path} is missing. Run: ragcli index rollback, "
                                      "or ragcli ingest --rebuild <paths>")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            if isinstance(manifest, dict) and manifest.get("format_version") == FORMAT_VERSION:
                from ragcli.segmented import open_generation

                return open_generation(self.root, name, manifest)
            recorded = manifest["checksums"]
            # Every data file must have a well-formed record: a checksum that is missing cannot vouch for
            # the file, and FAISS would read a flipped byte silently.
            if not isinstance(recorded, dict) or not {VECTORS, CHUNKS, FILES} <= recorded.keys() or not all(
                    isinstance(m, dict) and isinstance(m.get("bytes"), int) and isinstance(m.get("sha256"), str)
                    for m in recorded.values()) or not isinstance(manifest.get("counts", {}), dict):
                raise ValueError("bad checksums")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise IndexCorruptedError(f"Index corrupted: {manifest_path} is not a valid manifest. "
                                      "Run: ragcli index rollback, or ragcli ingest --rebuild <paths>") from None
        if manifest.get("format_version") != LEGACY_FORMAT:
            raise IndexCorruptedError(
                f"{path} uses index format {manifest.get('format_version')}; this ragcli reads formats "
                f"{LEGACY_FORMAT} and {FORMAT_VERSION}. Run: ragcli ingest --rebuild <paths>"
            )
        for rel, meta in recorded.items():
            file = path / rel
            if not file.is_file():
                raise IndexCorruptedError(f"Index corrupted: {file} is missing. Run: ragcli index rollback, "
                                          "or ragcli ingest --rebuild <paths>")
            size = file.stat().st_size
            if size != meta["bytes"]:
                raise IndexCorruptedError(
                    f"Index corrupted: {file} is {size} bytes, the manifest says {meta['bytes']} (truncated or "
                    "appended to). Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"
                )
            if verify and sha256_file(file) != meta["sha256"]:
                raise IndexCorruptedError(
                    f"Index corrupted: {file} does not match its checksum. Run: ragcli index rollback, "
                    "or ragcli ingest --rebuild <paths>"
                )
        try:
            chunks = [Chunk.from_json(json.loads(line))
                      for line in (path / CHUNKS).read_text(encoding="utf-8").splitlines() if line.strip()]
            files = json.loads((path / FILES).read_text(encoding="utf-8"))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise IndexCorruptedError(f"Index corrupted: cannot parse the tables in {path} ({exc}).") from None
        expected = manifest.get("counts", {}).get("chunks")
        if expected is not None and expected != len(chunks):
            raise IndexCorruptedError(
                f"Index corrupted: {path / CHUNKS} has {len(chunks)} chunks, the manifest says {expected}."
            )
        gen = Generation(self.root, name, manifest, chunks, files)
        gen.faiss_index()  # read now: a pruning writer cannot pull it from under a reader later
        return gen

    def load_verified(self, name: str | None = None) -> Any:
        """The generation `name` (default: the published one) with every byte of it checked. A published
        generation pruned while it is checked is not damaged: the one CURRENT names then is checked."""
        for _attempt in range(LOAD_RETRIES):
            try:
                gen = self._load(name, verify=True) if name is not None else self.load(verify=True)
            except PermissionError as exc:
                raise PermissionDeniedError.from_os_error(exc) from None
            try:
                gen.verify()
                if gen.format == FORMAT_VERSION:
                    from ragcli.segmented import verify_files

                    verify_files(gen)
                return gen
            except PermissionError as exc:
                gen.close()
                raise PermissionDeniedError.from_os_error(exc) from None
            except (FileNotFoundError, IndexCorruptedError):
                gen.close()
                if not self._gone(gen.name):
                    raise
                if name is not None:
                    raise GenerationGoneError(f"{self.root / name} was pruned by a writer while being checked; "
                                              "run the command again.") from None
        raise GenerationGoneError(f"The index in {self.root} was republished {LOAD_RETRIES} times while being "
                                  "checked; nothing is damaged. Run the command again.")

    def verify(self) -> list[dict[str, Any]]:
        """Check every generation's checksums. Returns one row per generation with 'ok' and 'error'.
        A generation a writer prunes while this runs is left out (it is gone, not damaged)."""
        rows: dict[str, dict[str, Any]] = {}
        for _round in range(3):
            for name in self.generations():
                if name in rows:
                    continue
                try:
                    gen = self.load_verified(name)
                    rows[name] = {"generation": name, "ok": True, "error": None, "chunks": gen.chunk_count}
                    gen.close()
                except GenerationGoneError:
                    continue
                except (IndexCorruptedError, FileNotFoundError) as exc:
                    if self._gone(name):
                        continue
                    rows[name] = {"generation": name, "ok": False, "error": str(exc), "chunks": None}
            current = self.current_name()
            if current is None or current in rows or not (self.root / current).is_dir():
                break  # else a writer published while this ran: check the new one too
        kept = set(self.generations())
        return [{"generation": n, "current": n == current, **{k: v for k, v in r.items() if k != "generation"}}
                for n, r in sorted(rows.items()) if n in kept]

    # -- writing ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, wait: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Exclusive writer lock (flock on <index>/LOCK). Fails at once unless `wait`."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "LOCK"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait or (deadline is not None and time.monotonic() > deadline):
                        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
                        raise IndexLockedError(
                            f"The index {self.root} is being written by another ragcli (pid {holder}). "
                            "Wait for it to finish, or pass --wait."
                        ) from None
                    time.sleep(0.1)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def remove_leftovers(self) -> list[str]:
        """Remove unfinished generations (tmp-*), folders whose deletion was interrupted (trash-*) and
        generations newer than CURRENT (published folder but never pointed to). Call only under the lock."""
        removed = []
        if not self.root.is_dir():
            return removed
        try:
            current = self.current_name()
            unknown = False
        except IndexCorruptedError:  # CURRENT is damaged: which generations were published is unknown,
            current, unknown = None, True  # so none is removed (ingest --rebuild must still work)
        for p in self.root.iterdir():
            stale = p.name.startswith(("tmp-", TRASH)) or p.name == "CURRENT.tmp"
            if p.name.startswith("gen-") and p.is_dir() and not unknown and (current is None or p.name > current):
                stale = True
            if stale:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
        if not unknown:  # segments of a crashed writer, or of generations removed above
            removed.extend(self._drop_unreferenced_segments())
        return removed

    def _next_name(self) -> str:
        numbers = [int(n.split("-")[1]) for n in self.generations() if n.split("-")[1].isdigit()]
        return f"gen-{(max(numbers) if numbers else 0) + 1:06d}"

    def _write_error(self, exc: OSError) -> IndexWriteError:
        try:
            current = self.current_name()
        except IndexCorruptedError:
            current = None
        where = f" ({exc.filename})" if exc.filename else ""
        kept = f"the index still serves {current}" if current else "no generation was published"
        return IndexWriteError(
            f"Cannot write the index in {self.root}: {exc.strerror or exc}{where}; {kept}. "
            "Free disk space (or fix the folder's permissions) and run the ingest again."
        )

    @_reports_write_errors
    def publish(self, plan: Plan, prior: Any, manifest: dict[str, Any], *, index_type: str = "flat",
                compact: bool = False) -> str:
        """Write and publish the generation for `plan` (call under `lock()`). `prior` is the generation
        the plan was made against (None for a new index). Returns the new generation's name.

        A failed write (disk full, I/O error, permissions) raises an `IndexWriteError` saying so; the published
        generation is then the one before (what is left behind is removed by the next writer)."""
        from ragcli.segmented import write_generation

        tmp = self.root / f"tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        try:
            full = write_generation(self.root, tmp, plan, prior, manifest, index_type=index_type, compact=compact,
                                    after_step=_after_step)
            name = self._next_name()
            full["generation"] = name
            full["created_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            _write_text(tmp / (MANIFEST + ".tmp"), json.dumps(full, indent=1, sort_keys=True))
            os.replace(tmp / (MANIFEST + ".tmp"), tmp / MANIFEST)
            _fsync_dir(tmp)
            _after_step("manifest")
            os.rename(tmp, self.root / name)
            _fsync_dir(self.root)
            _after_step("rename")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._point_current(name)
        _after_step("current")
        self._prune()
        return name

    def _point_current(self, name: str) -> None:
        tmp = self.root / "CURRENT.tmp"
        _write_text(tmp, name + "\n")
        os.replace(tmp, self.root / "CURRENT")
        _fsync_dir(self.root)

    def _prune(self) -> None:
        current = self.current_name()
        keep = [n for n in self.generations() if current is None or n <= current][-KEEP_GENERATIONS:]
        for name in self.generations():
            if name not in keep:
                self._discard(self.root / name)
        _after_step("prune")
        self._drop_unreferenced_segments()

    def _discard(self, path: Path) -> None:
        """Delete a generation or segment folder so that no one ever sees it half-deleted: it is first
        renamed to `trash-<random>` (atomic; a reader then finds it gone, not damaged), then removed. A
        kill in between leaves only a `trash-*` folder, which the next writer removes."""
        trash = self.root / f"{TRASH}{uuid.uuid4().hex[:12]}"
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)
        _after_step("trash")
        shutil.rmtree(trash, ignore_errors=True)

    def _drop_unreferenced_segments(self) -> list[str]:
        """Delete segments no generation lists (pruned generations', or a crashed writer's)."""
        from ragcli.segmented import referenced_segments

        folder = self.root / SEGMENTS
        if not folder.is_dir():
            return []
        used = referenced_segments(self.root, self.generations())
        if used is None:  # a generation's manifest is unreadable: which segments it needs is unknown
            return []
        removed = []
        for p in folder.iterdir():
            if p.name not in used:
                self._discard(p)
                removed.append(f"{SEGMENTS}/{p.name}")
        return removed

    @_reports_write_errors
    def rollback(self) -> str:
        """Point CURRENT at the previous generation (call under the lock). Returns its name."""
        try:
            current = self.current_name()
        except IndexCorruptedError:  # CURRENT itself is damaged: go back to the newest generation
            current = None
            if not self.generations():
                raise
        else:
            if current is None:
                raise IndexNotFoundError(f"No index in {self.root}. Run: ragcli ingest <paths>")
        older = [n for n in self.generations() if current is None or n < current]
        if not older:
            raise IndexNotFoundError(f"No generation before {current} in {self.root} to roll back to.")
        target = older[-1]
        self.load_verified(target).close()
        self._point_current(target)
        if current is not None:
            self._discard(self.root / current)
        self._drop_unreferenced_segments()
        return target
