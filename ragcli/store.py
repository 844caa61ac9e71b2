"""The local index: FAISS vectors, a chunk table and a file table, in whole generations.

    <index>/
      LOCK            flock held by the one writer; holds its pid
      CURRENT         name of the published generation ("gen-000007"), replaced atomically
      gen-000007/     vectors.faiss  chunks.jsonl  files.json  bm25/…  manifest.json (written last)
      gen-000006/     the previous generation, kept for rollback
      tmp-<random>/   a generation being written; removed by the next writer if left behind

Every ingest writes a complete new generation in a temporary folder, fsyncs it, renames it into place
and only then switches CURRENT with `os.replace` (and fsyncs the folder), so a reader sees either the
old index or the new one, never a mix, and a crash at any moment leaves the previous generation
published. Nothing inside a published generation is ever rewritten.

On load every file is checked against the size and SHA-256 recorded in the manifest before FAISS reads
it: a truncated or flipped file is reported as a corrupted index naming the file, never answered from.
"""

from __future__ import annotations

import contextlib
import errno
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

from ragcli.errors import IndexCorruptedError, IndexLockedError, IndexNotFoundError, IndexWriteError
from ragcli.types import Chunk, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

FORMAT_VERSION = 1
VECTORS = "vectors.faiss"
CHUNKS = "chunks.jsonl"
FILES = "files.json"
MANIFEST = "manifest.json"
BM25_DIR = "bm25"
KEEP_GENERATIONS = 2  # the published one and the one before it


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


class Generation:
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

    @property
    def embed(self) -> dict[str, Any]:
        return dict(self.manifest.get("embed") or {})

    @property
    def splitter(self) -> dict[str, Any]:
        return dict(self.manifest.get("splitter") or {})

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
        """The published generation (or `name`), checked against its manifest."""
        for attempt in range(3):
            current = name or self.current_name()
            if current is None:
                raise IndexNotFoundError(f"No index in {self.root}. Run: ragcli ingest <paths>")
            try:
                return self._load(current, verify=verify)
            except (FileNotFoundError, IndexCorruptedError) as exc:
                # A writer may have published and pruned this generation between our read of CURRENT and
                # the load: read CURRENT again before calling the index corrupted.
                if name is not None or attempt == 2 or self.current_name() == current:
                    if isinstance(exc, IndexCorruptedError):
                        raise
                    break
                time.sleep(0.05)
        raise IndexCorruptedError(
            f"Index corrupted: {self.root / current} is missing files. Run: ragcli index rollback, or "
            "ragcli ingest --rebuild <paths>"
        )

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
        if manifest.get("format_version") != FORMAT_VERSION:
            raise IndexCorruptedError(
                f"{path} uses index format {manifest.get('format_version')}; this ragcli reads format "
                f"{FORMAT_VERSION}. Run: ragcli ingest --rebuild <paths>"
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
        return Generation(self.root, name, manifest, chunks, files)

    def verify(self) -> list[dict[str, Any]]:
        """Check every generation's checksums. Returns one row per generation with 'ok' and 'error'."""
        rows = []
        current = self.current_name()
        for name in self.generations():
            try:
                gen = self._load(name, verify=True)
                gen.faiss_index()
                rows.append({"generation": name, "current": name == current, "ok": True, "error": None,
                             "chunks": len(gen.chunks)})
            except (IndexCorruptedError, FileNotFoundError) as exc:
                rows.append({"generation": name, "current": name == current, "ok": False, "error": str(exc),
                             "chunks": None})
        return rows

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
        """Remove unfinished generations (tmp-*) and generations newer than CURRENT (published
        folder but never pointed to). Call only under the lock."""
        removed = []
        if not self.root.is_dir():
            return removed
        try:
            current = self.current_name()
            unknown = False
        except IndexCorruptedError:  # CURRENT is damaged: which generations were published is unknown,
            current, unknown = None, True  # so none is removed (ingest --rebuild must still work)
        for p in self.root.iterdir():
            stale = p.name.startswith("tmp-") or p.name == "CURRENT.tmp"
            if p.name.startswith("gen-") and p.is_dir() and not unknown and (current is None or p.name > current):
                stale = True
            if stale:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p.name)
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
    def write_generation(
        self,
        chunks: list[Chunk],
        vectors: np.ndarray,
        files: dict[str, Any],
        manifest: dict[str, Any],
        *,
        index_type: str = "flat",
        extra_writers: list[Callable[[Path], list[Path]]] | None = None,
    ) -> str:
        """Write and publish a complete generation. Call under `lock()`. Returns its name.

        A failed write (disk full, I/O error, permissions) raises an `IndexWriteError` saying so; the published
        generation is then the one before (what is left behind is removed by the next writer)."""
        import faiss
        import numpy as np

        if len(chunks) != len(vectors):
            raise ValueError("one vector per chunk")
        dim = int(manifest["embed"]["dim"])
        tmp = self.root / f"tmp-{uuid.uuid4().hex[:12]}"
        tmp.mkdir(parents=True)
        try:
            written: list[Path] = []
            # 1. vectors
            base = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT) if index_type == "hnsw" \
                else faiss.IndexFlatIP(dim)
            index = faiss.IndexIDMap2(base)
            if len(chunks):
                index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                   np.asarray([c.id for c in chunks], dtype=np.int64))
            try:
                faiss.write_index(index, str(tmp / VECTORS))
            except RuntimeError as exc:  # FAISS reports a full disk as "write error" in a RuntimeError
                raise OSError(errno.EIO, f"FAISS could not write the vectors: {str(exc).splitlines()[0][:160]}",
                              str(tmp / VECTORS)) from None
            written.append(tmp / VECTORS)
            _after_step("vectors")
            # 2. chunk table
            _write_text(tmp / CHUNKS, "".join(json.dumps(c.to_json(), ensure_ascii=False) + "\n" for c in chunks))
            written.append(tmp / CHUNKS)
            _after_step("chunks")
            # 3. file table
            _write_text(tmp / FILES, json.dumps(files, indent=1, sort_keys=True, ensure_ascii=False))
            written.append(tmp / FILES)
            _after_step("files")
            # 4. extra data (BM25)
            for writer in extra_writers or []:
                written.extend(writer(tmp))
            for path in written:
                _fsync_file(path)
            _after_step("extra")
            # 5. manifest, last, with the checksum of every file
            manifest = dict(manifest)
            manifest.update({
                "format_version": FORMAT_VERSION,
                "faiss_index_type": index_type,
                "metric": "cosine",
                "counts": {"chunks": len(chunks), "files": len(files), "faiss_ntotal": int(index.ntotal)},
                "checksums": {p.relative_to(tmp).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                              for p in written},
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            })
            name = self._next_name()
            manifest["generation"] = name
            _write_text(tmp / (MANIFEST + ".tmp"), json.dumps(manifest, indent=1, sort_keys=True))
            os.replace(tmp / (MANIFEST + ".tmp"), tmp / MANIFEST)
            _fsync_dir(tmp)
            _after_step("manifest")
            # 6. the generation folder
            os.rename(tmp, self.root / name)
            _fsync_dir(self.root)
            _after_step("rename")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        # 7. publish
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
                shutil.rmtree(self.root / name, ignore_errors=True)

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
        self._load(target, verify=True)
        self._point_current(target)
        if current is not None:
            shutil.rmtree(self.root / current, ignore_errors=True)
        return target
