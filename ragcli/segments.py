"""Immutable segments of the local index: the vectors, chunk rows and BM25 postings of a set of chunks.

A generation of the local index (`ragcli.store`) is a list of segments plus, for each, the rows that
are deleted ("dead"). A segment is written once, by `SegmentWriter`, and never changed; later
generations share it by name, so an ingest that changes one file writes one small segment, not the
whole index.

    seg-<12 hex>/
      vectors.f32     the vectors, float32, row after row (memory-mapped when searched)
      chunks.sqlite   one row per chunk: row, id, file, position, tokens, metadata, text, crc
                      and the BM25 term table: term, df, start, crc
      postings.u32    BM25 postings: the rows of each term, term after term
      tf.u16          term frequencies, aligned with postings.u32
      doclen.u32      tokens of each row (BM25 length normalisation)
      keys.u64        (text key, row) pairs sorted by key: a held vector for a chunk text, found in log n
      ann.faiss       hnsw or ivf only: an approximate index over the rows (ids are rows)
      segment.json    written last: counts, dimension, and size, SHA-256 and a fast sum of every file

Integrity without reading everything twice. `segment.json` records for every file its size and
SHA-256 (checked in full by `verify`, i.e. `ragcli index verify`) and a fast 64-bit sum of its 32-bit
words. What a query reads is checked as it is read: the whole vector file (a flat search reads every
vector) by its fast sum, once per process, before the first result is returned; chunk rows and term
postings by the CRC-32 stored with each of them; the small files (`doclen.u32`, `keys.u64`, `ann.faiss`)
by their sums when loaded. A flipped or truncated byte in anything a query uses is therefore named
before an answer is built from it, and the full SHA-256 check stays in `verify`.

BM25 scores are computed at query time from raw term frequencies with collection statistics summed
over the segments of a generation (rows deleted since a segment was written still count in them, as
in Lucene until a merge), using Lucene's variant: idf = ln(1 + (N − df + 0.5)/(df + 0.5)), term score
= idf · tf / (tf + k1·(1 − b + b·dl/avgdl)), k1 = 1.5, b = 0.75, each query token counted per repeat.
"""

from __future__ import annotations

import array
import errno
import itertools
import json
import os
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.bm25 import TOKENIZER_VERSION, tokenize
from ragcli.errors import IndexCorruptedError
from ragcli.types import Chunk, sha256_file

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

SEGMENT_FORMAT = 1
VECTORS = "vectors.f32"
CHUNKS = "chunks.sqlite"
POSTINGS = "postings.u32"
TF = "tf.u16"
DOCLEN = "doclen.u32"
KEYS = "keys.u64"
ANN = "ann.faiss"
META = "segment.json"
K1, B = 1.5, 0.75
_ROLLBACK_HINT = "Run: ragcli index rollback, or ragcli ingest --rebuild <paths>"


def fast_sum(data: Any) -> int:
    """Sum of the little-endian 32-bit words of `data` (bytes, or an array's memory), modulo 2**64,
    with the byte length folded in. Any change of a single word changes it; about ten times cheaper
    than SHA-256, so it can check what a query reads. Trailing bytes (len % 4) count as one word."""
    import numpy as np

    raw = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray, memoryview)) else \
        np.asarray(data).reshape(-1).view(np.uint8)
    whole = len(raw) - len(raw) % 4
    total = int(np.add.reduce(raw[:whole].view("<u4"), dtype=np.uint64)) if whole else 0
    if whole < len(raw):
        total += int.from_bytes(bytes(raw[whole:]), "little")
    return (total + len(raw) * 0x9E3779B97F4A7C15) % (1 << 64)


def key_u64(text_key: str) -> int:
    """The first 8 bytes of a chunk text key (hex SHA-256) as an unsigned integer."""
    return int(text_key[:16], 16)


def row_crc(row: int, chunk: Chunk) -> int:
    metadata = json.dumps(chunk.metadata, sort_keys=True, ensure_ascii=False)
    payload = f"{row}\0{chunk.id}\0{chunk.file}\0{chunk.position}\0{chunk.tokens}\0{metadata}\0{chunk.text}"
    return zlib.crc32(payload.encode("utf-8", "surrogatepass"))


def _corrupt(path: Path, what: str) -> IndexCorruptedError:
    return IndexCorruptedError(f"Index corrupted: {path} {what}. {_ROLLBACK_HINT}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- writing ---------------------------------------------------------------------------------------
class SegmentWriter:
    """Writes one segment: `add` batches of chunks (in file, position order) with their vectors, then
    `finish`. Memory stays bounded by the BM25 postings of the segment (vectors and rows go to disk
    as they come). The folder must not exist yet; on failure the caller removes it."""

    def __init__(self, folder: Path, dim: int, index_type: str = "flat") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True)
        self.dim = dim
        self.index_type = index_type
        self.rows = 0
        self._vectors = open(self.folder / VECTORS, "wb")  # noqa: SIM115 - closed in finish()
        self._db = sqlite3.connect(self.folder / CHUNKS)
        self._db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE chunks (row INTEGER PRIMARY KEY, id INTEGER NOT NULL, file TEXT NOT NULL,"
            " position INTEGER NOT NULL, tokens INTEGER NOT NULL, metadata TEXT NOT NULL, text TEXT NOT NULL,"
            " crc INTEGER NOT NULL);"
            "CREATE TABLE terms (term TEXT PRIMARY KEY, df INTEGER NOT NULL, start INTEGER NOT NULL,"
            " crc INTEGER NOT NULL) WITHOUT ROWID;"
        )
        # BM25 postings as flat arrays (term number, row, tf): a few bytes per posting, not a Python object.
        self._terms: dict[str, int] = {}
        self._post_term = array.array("I")
        self._post_row = array.array("I")
        self._post_tf = array.array("H")
        self._doclen = array.array("I")
        self._keys = array.array("Q")  # text key, row, text key, row, ...

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        import numpy as np

        from ragcli.types import text_key

        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (len(chunks), self.dim):
            raise ValueError(f"expected {len(chunks)} vectors of dimension {self.dim}, got {vectors.shape}")
        try:
            self._vectors.write(vectors.tobytes())
        except OSError as exc:
            if exc.filename is None:  # file writes do not name the file; the message should
                exc.filename = str(self.folder / VECTORS)
            raise
        batch = [(self.rows + offset, c.id, c.file, c.position, c.tokens,
                  json.dumps(c.metadata, sort_keys=True, ensure_ascii=False), c.text, row_crc(self.rows + offset, c))
                 for offset, c in enumerate(chunks)]
        self._db.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?)", batch)
        # BM25 postings, counted with numpy: one (row, term) pair per distinct term of a row.
        tokens = [tokenize(c.text) for c in chunks]
        lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
        self._doclen.extend(lengths.tolist())
        terms = self._terms
        flat = list(itertools.chain.from_iterable(tokens))
        for term in set(flat).difference(terms):  # numbers for new terms first, then one C-level lookup pass
            terms[term] = len(terms)
        numbers = np.fromiter(map(terms.__getitem__, flat), dtype=np.int64, count=len(flat))
        if len(numbers):
            rows = np.repeat(np.arange(self.rows, self.rows + len(chunks), dtype=np.int64), lengths)
            pairs, tf = np.unique(rows * (1 << 32) + numbers, return_counts=True)
            self._post_row.frombytes((pairs >> 32).astype(np.uint32).tobytes())
            self._post_term.frombytes((pairs & 0xFFFFFFFF).astype(np.uint32).tobytes())
            self._post_tf.frombytes(np.minimum(tf, 65535).astype(np.uint16).tobytes())
        for offset, c in enumerate(chunks):
            self._keys.extend((key_u64(text_key(c.text)), self.rows + offset))
        self.rows += len(chunks)

    def finish(self) -> dict[str, Any]:
        """Write the postings, keys, ANN index and `segment.json` (last), fsync everything. Returns the
        segment's record for the generation manifest (name, rows, size of its meta file, meta checksum)."""
        import numpy as np

        self._vectors.close()
        # BM25: terms in sorted order, postings term after term (rows ascending within a term).
        names = sorted(self._terms)
        rank = np.empty(len(names), dtype=np.int64)
        for position, term in enumerate(names):
            rank[self._terms[term]] = position
        term_of = np.frombuffer(self._post_term, dtype=np.uint32) if len(self._post_term) else np.zeros(0, np.uint32)
        rows_of = np.frombuffer(self._post_row, dtype=np.uint32) if len(self._post_row) else np.zeros(0, np.uint32)
        tf_of = np.frombuffer(self._post_tf, dtype=np.uint16) if len(self._post_tf) else np.zeros(0, np.uint16)
        order = np.lexsort((rows_of, rank[term_of])) if len(term_of) else np.zeros(0, dtype=np.int64)
        rows_sorted = rows_of[order].astype("<u4")
        tf_sorted = tf_of[order].astype("<u2")
        df = np.bincount(rank[term_of], minlength=len(names)) if len(names) else np.zeros(0, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(df)[:-1]]) if len(names) else np.zeros(0, dtype=np.int64)
        rows_sorted.tofile(self.folder / POSTINGS)
        tf_sorted.tofile(self.folder / TF)
        terms = []
        for position, term in enumerate(names):
            lo, hi = int(starts[position]), int(starts[position] + df[position])
            crc = zlib.crc32(tf_sorted[lo:hi].tobytes(), zlib.crc32(rows_sorted[lo:hi].tobytes()))
            terms.append((term, hi - lo, lo, crc))
        start = int(df.sum())
        self._db.executemany("INSERT INTO terms VALUES (?, ?, ?, ?)", terms)
        self._db.commit()
        self._db.close()
        np.asarray(self._doclen, dtype="<u4").tofile(self.folder / DOCLEN)
        keys = np.frombuffer(self._keys, dtype=np.uint64).reshape(-1, 2) if len(self._keys) else \
            np.zeros((0, 2), dtype=np.uint64)
        keys = keys[np.lexsort((keys[:, 1], keys[:, 0]))].astype("<u8")
        keys.tofile(self.folder / KEYS)
        files = [VECTORS, CHUNKS, POSTINGS, TF, DOCLEN, KEYS]
        if self.index_type != "flat" and self.rows:
            self._write_ann()
            files.append(ANN)
        meta = {
            "format": SEGMENT_FORMAT, "rows": self.rows, "dim": self.dim, "index_type": self.index_type,
            "tokenizer": TOKENIZER_VERSION, "terms": len(terms), "postings": start,
            "tokens": int(sum(self._doclen)),
            "files": {name: {"bytes": (self.folder / name).stat().st_size, "sha256": sha256_file(self.folder / name),
                             "fast": _file_fast_sum(self.folder / name)}
                      for name in files},
        }
        for name in files:
            _fsync(self.folder / name)
        text = json.dumps(meta, indent=1, sort_keys=True)
        (self.folder / META).write_text(text, encoding="utf-8")
        _fsync(self.folder / META)
        return {"name": self.folder.name, "rows": self.rows, "meta_sha256": _sha256_text(text)}

    def _write_ann(self) -> None:
        import faiss
        import numpy as np

        vectors = np.memmap(self.folder / VECTORS, dtype="<f4", mode="r", shape=(self.rows, self.dim))
        index = build_ann(vectors, self.index_type)
        try:
            faiss.write_index(index, str(self.folder / ANN))
        except RuntimeError as exc:  # FAISS reports a full disk as "write error" in a RuntimeError
            raise OSError(errno.EIO, f"FAISS could not write the index: {str(exc).splitlines()[0][:160]}",
                          str(self.folder / ANN)) from None

    def abort(self) -> None:
        for closer in (self._vectors.close, self._db.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort on the way out of a failed write
                pass


def ivf_cells(rows: int) -> int:
    """IVF cells for `rows` vectors: min(4·√N, N/39), at least 1 (each cell trained on ≥ 39 points)."""
    return max(1, min(int(4 * rows ** 0.5), rows // 39))


def ivf_probes(cells: int) -> int:
    """Cells searched per query: an eighth of them, at least 8 (all of them for small segments)."""
    return min(cells, max(8, cells // 8))


def build_ann(vectors: np.ndarray, index_type: str) -> Any:
    """An approximate inner-product index over `vectors` (normalised, so cosine), ids = row numbers,
    added in batches so memory stays bounded by the vectors themselves."""
    import faiss
    import numpy as np

    rows, dim = vectors.shape
    if index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
    elif index_type == "ivf":
        cells = ivf_cells(rows)
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, cells, faiss.METRIC_INNER_PRODUCT)
        # 64 training points a cell (FAISS wants at least 39): at 1M rows, 256k points, not all of them.
        sample = vectors if rows <= cells * 64 else vectors[np.sort(np.random.default_rng(0).choice(
            rows, cells * 64, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        index.nprobe = ivf_probes(cells)
    else:
        raise ValueError(f"unknown index type {index_type!r}")
    for start in range(0, rows, 65536):
        index.add(np.ascontiguousarray(vectors[start : start + 65536], dtype=np.float32))
    return index


def _file_fast_sum(path: Path) -> int:
    import numpy as np

    if path.stat().st_size == 0:
        return fast_sum(b"")
    return fast_sum(np.memmap(path, dtype=np.uint8, mode="r"))


def _sha256_text(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# -- reading ---------------------------------------------------------------------------------------
@dataclass
class BM25Stats:
    """Collection statistics of a set of segments (a generation)."""

    docs: int
    tokens: int

    @property
    def avgdl(self) -> float:
        return self.tokens / self.docs if self.docs else 0.0


class Segment:
    """A published segment, opened for reading. Its record (`segment.json`) is checked against the
    SHA-256 the generation recorded for it; files are checked as they are first read (see module)."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.folder = folder
        self.name = folder.name
        self.meta = meta
        self.rows = int(meta["rows"])
        self.dim = int(meta["dim"])
        self.index_type = str(meta.get("index_type") or "flat")
        self._vectors: Any = None
        self._vectors_checked = False
        self._db: sqlite3.Connection | None = None
        self._doclen: Any = None
        self._keys: Any = None
        self._ann: Any = None
        self._postings_fh: Any = None
        self._tf_fh: Any = None
        self.rows_read = 0  # chunk rows read from the table so far (what a query costs in text)

    @classmethod
    def open(cls, folder: Path, record: dict[str, Any]) -> Segment:
        meta_path = folder / META
        try:
            text = meta_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise _corrupt(meta_path, "is missing") from None
        except UnicodeDecodeError:
            raise _corrupt(meta_path, "is not valid JSON") from None
        if _sha256_text(text) != record.get("meta_sha256"):
            raise _corrupt(meta_path, "does not match its checksum")
        try:
            meta = json.loads(text)
            if meta.get("format") != SEGMENT_FORMAT or meta.get("tokenizer") != TOKENIZER_VERSION:
                raise ValueError("format")
            int(meta["rows"]), int(meta["dim"]), dict(meta["files"])
        except (ValueError, KeyError, TypeError):
            raise _corrupt(meta_path, "is not a segment record this ragcli reads") from None
        seg = cls(folder, meta)
        for name, info in meta["files"].items():
            path = folder / name
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                raise _corrupt(path, "is missing") from None
            if size != info["bytes"]:
                raise _corrupt(path, f"is {size} bytes, its segment record says {info['bytes']} (truncated or "
                                     "appended to)")
        if seg.rows != int(record.get("rows", -1)):
            raise _corrupt(meta_path, f"says {seg.rows} rows, the generation {record.get('rows')}")
        seg._pin()
        return seg

    def _pin(self) -> None:
        """Open every file a search reads, now: an open file outlives its name, so a writer that prunes
        this segment later (once no published generation lists it) cannot pull it from under a reader."""
        import numpy as np

        if self.rows:
            self._vectors = np.memmap(self.folder / VECTORS, dtype="<f4", mode="r", shape=(self.rows, self.dim))
        self._query("SELECT count(*) FROM sqlite_master", ())  # opens the file and reads its header
        self._postings_fh = open(self.folder / POSTINGS, "rb")  # noqa: SIM115 - closed in close()
        self._tf_fh = open(self.folder / TF, "rb")  # noqa: SIM115
        self.doclen()
        if self.index_type != "flat" and self.rows:
            self.ann()

    # -- files, checked as read ------------------------------------------------------------------
    def _checked_bytes(self, name: str) -> bytes:
        path = self.folder / name
        data = path.read_bytes()
        if len(data) != self.meta["files"][name]["bytes"] or fast_sum(data) != self.meta["files"][name]["fast"]:
            raise _corrupt(path, "does not match its checksum")
        return data

    def vectors(self) -> np.ndarray:
        """The vectors, memory-mapped; checked by their fast sum the first time (one pass over what a
        flat search reads anyway)."""
        import numpy as np

        if self._vectors is None:
            path = self.folder / VECTORS
            if self.rows == 0:
                self._vectors = np.zeros((0, self.dim), dtype=np.float32)
                self._vectors_checked = True
            else:
                self._vectors = np.memmap(path, dtype="<f4", mode="r", shape=(self.rows, self.dim))
        if not self._vectors_checked:
            if fast_sum(self._vectors) != self.meta["files"][VECTORS]["fast"]:
                raise _corrupt(self.folder / VECTORS, "does not match its checksum")
            self._vectors_checked = True
        return self._vectors

    def _sql(self) -> sqlite3.Connection:
        if self._db is None:
            uri = f"{(self.folder / CHUNKS).resolve().as_uri()}?mode=ro&immutable=1"
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._db

    def _query(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            return self._sql().execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            # sqlite quotes the undecodable text itself; keep the reason, not the document's content.
            reason = str(exc).split(" with text")[0].splitlines()[0][:120]
            raise _corrupt(self.folder / CHUNKS, f"cannot be read ({reason})") from None

    def doclen(self) -> np.ndarray:
        import numpy as np

        if self._doclen is None:
            self._doclen = np.frombuffer(self._checked_bytes(DOCLEN), dtype="<u4")
            if len(self._doclen) != self.rows:
                raise _corrupt(self.folder / DOCLEN, f"has {len(self._doclen)} rows, not {self.rows}")
        return self._doclen

    def keys(self) -> np.ndarray:
        import numpy as np

        if self._keys is None:
            self._keys = np.frombuffer(self._checked_bytes(KEYS), dtype="<u8").reshape(-1, 2)
        return self._keys

    def ann(self) -> Any:
        if self._ann is None:
            import faiss
            import numpy as np

            path = self.folder / ANN
            data = np.memmap(path, dtype=np.uint8, mode="r")  # checked in one pass, never copied
            if len(data) != self.meta["files"][ANN]["bytes"] or fast_sum(data) != self.meta["files"][ANN]["fast"]:
                raise _corrupt(path, "does not match its checksum")
            if self.index_type == "ivf":  # the inverted lists stay memory-mapped: a query reads its cells only
                self._ann = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
            else:
                self._ann = faiss.deserialize_index(data)
            del data
            if self._ann.ntotal != self.rows:
                raise _corrupt(self.folder / ANN, f"holds {self._ann.ntotal} vectors, not {self.rows}")
        return self._ann

    # -- chunks ----------------------------------------------------------------------------------
    def chunks(self, rows: Iterable[int]) -> dict[int, Chunk]:
        """Chunk rows by row number, each checked against its CRC."""
        wanted = sorted({int(r) for r in rows})
        out: dict[int, Chunk] = {}
        for start in range(0, len(wanted), 900):  # under SQLite's variable limit
            part = wanted[start : start + 900]
            found = self._query(
                f"SELECT row, id, file, position, tokens, metadata, text, crc FROM chunks WHERE row IN "
                f"({','.join('?' * len(part))})", part)
            for row, cid, file, position, tokens, metadata, text, crc in found:
                try:
                    chunk = Chunk(id=int(cid), file=str(file), position=int(position), text=str(text),
                                  tokens=int(tokens), metadata=json.loads(metadata))
                except (ValueError, TypeError):
                    raise _corrupt(self.folder / CHUNKS, f"holds a damaged row {row}") from None
                if row_crc(int(row), chunk) != int(crc):
                    raise _corrupt(self.folder / CHUNKS, f"row {row} does not match its checksum")
                out[int(row)] = chunk
        self.rows_read += len(out)
        missing = [r for r in wanted if r not in out]
        if missing:
            raise _corrupt(self.folder / CHUNKS, f"lacks row {missing[0]}")
        return out

    def all_chunks(self, start: int = 0, stop: int | None = None) -> list[Chunk]:
        """Rows [start, stop) in order, checked."""
        stop = self.rows if stop is None else stop
        found = self.chunks(range(start, stop))
        return [found[r] for r in range(start, stop)]

    # -- search ----------------------------------------------------------------------------------
    def dense(self, query: np.ndarray, k: int, dead: np.ndarray | None) -> list[tuple[int, float]]:
        """(row, cosine) of the best `k` live rows, best first."""
        import numpy as np

        if self.rows == 0 or k <= 0:
            return []
        if self.index_type != "flat":
            return self._dense_ann(query, k, dead)
        vectors = self.vectors()
        scores = np.empty(self.rows, dtype=np.float32)
        step = 1 << 16
        for start in range(0, self.rows, step):
            np.matmul(vectors[start : start + step], query, out=scores[start : start + step])
        if dead is not None and dead.any():
            scores[dead] = -np.inf
        k = min(k, self.rows)
        top = np.argpartition(-scores, k - 1)[:k] if k < self.rows else np.arange(self.rows)
        top = top[np.lexsort((top, -scores[top]))]
        return [(int(r), float(scores[r])) for r in top if np.isfinite(scores[r])]

    def _dense_ann(self, query: np.ndarray, k: int, dead: np.ndarray | None) -> list[tuple[int, float]]:
        import faiss
        import numpy as np

        index = self.ann()
        params: Any
        dead_rows = np.flatnonzero(dead).astype(np.int64) if dead is not None and dead.any() else None
        selector = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead_rows)) if dead_rows is not None else None
        if self.index_type == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(64, 2 * k), sel=selector)
        else:
            params = faiss.SearchParametersIVF(nprobe=index.nprobe, sel=selector)
        scores, rows = index.search(np.asarray(query, dtype=np.float32).reshape(1, -1), min(k, self.rows),
                                    params=params)
        return [(int(r), float(s)) for r, s in zip(rows[0], scores[0], strict=True) if r != -1]

    def term_stats(self, terms: Sequence[str]) -> dict[str, tuple[int, int, int]]:
        """term -> (df, start, crc) for the terms this segment holds."""
        out = {}
        unique = sorted(set(terms))
        for start in range(0, len(unique), 900):
            part = unique[start : start + 900]
            for term, df, begin, crc in self._query(
                    f"SELECT term, df, start, crc FROM terms WHERE term IN ({','.join('?' * len(part))})", part):
                out[str(term)] = (int(df), int(begin), int(crc))
        return out

    def postings(self, term: str, df: int, start: int, crc: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, tf) of one term, checked against the term's CRC."""
        import numpy as np

        rows_bytes = os.pread(self._postings_fh.fileno(), df * 4, start * 4)
        tf_bytes = os.pread(self._tf_fh.fileno(), df * 2, start * 2)
        if len(rows_bytes) != df * 4 or len(tf_bytes) != df * 2 or zlib.crc32(tf_bytes, zlib.crc32(rows_bytes)) != crc:
            raise _corrupt(self.folder / POSTINGS, f"postings of a term do not match their checksum ({term!r})")
        return np.frombuffer(rows_bytes, dtype="<u4"), np.frombuffer(tf_bytes, dtype="<u2")

    def find_keys(self, keys: np.ndarray) -> dict[int, list[int]]:
        """key -> rows holding a chunk with that text key (candidates: compare the texts)."""
        import numpy as np

        table = self.keys()
        if not len(table) or not len(keys):
            return {}
        left = np.searchsorted(table[:, 0], keys, side="left")
        right = np.searchsorted(table[:, 0], keys, side="right")
        return {int(k): table[lo:hi, 1].astype(int).tolist() for k, lo, hi in zip(keys, left, right, strict=True)
                if hi > lo}

    # -- full check ------------------------------------------------------------------------------
    def verify(self) -> None:
        """Every file against its SHA-256 (what `ragcli index verify` runs)."""
        for name, info in self.meta["files"].items():
            path = self.folder / name
            try:
                digest = sha256_file(path)
            except FileNotFoundError:
                raise _corrupt(path, "is missing") from None
            if digest != info["sha256"]:
                raise _corrupt(path, "does not match its checksum")

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        for fh in (self._postings_fh, self._tf_fh):
            if fh is not None:
                fh.close()
        self._postings_fh = self._tf_fh = None


def bm25_search(segments: Sequence[tuple[Segment, np.ndarray | None]], query: str, k: int,
                stats: BM25Stats) -> list[tuple[int, int, float]]:
    """(segment index, row, score) of the best `k` live rows for `query`, best first (ties: segment,
    then row). `segments` pairs each segment with its dead-row mask."""
    import math

    import numpy as np

    tokens = tokenize(query)
    if not tokens or k <= 0 or stats.docs == 0:
        return []
    per_segment = [seg.term_stats(tokens) for seg, _ in segments]
    df = {t: sum(s[t][0] for s in per_segment if t in s) for t in set(tokens)}
    idf = {t: math.log(1 + (stats.docs - d + 0.5) / (d + 0.5)) for t, d in df.items() if d}
    found: list[tuple[float, int, int]] = []
    for number, ((seg, dead), terms) in enumerate(zip(segments, per_segment, strict=True)):
        if not any(t in terms for t in tokens):
            continue
        scores: dict[int, float] = {}
        norm = K1 * ((1 - B) + B * seg.doclen().astype(np.float64) / stats.avgdl)
        for token in tokens:  # a repeated query token counts once per repeat
            if token not in terms:
                continue
            rows, tf = seg.postings(token, *terms[token])
            tf64 = tf.astype(np.float64)
            part = idf[token] * tf64 / (tf64 + norm[rows])
            for r, s in zip(rows.tolist(), part.tolist(), strict=True):
                scores[r] = scores.get(r, 0.0) + s
        for r, s in scores.items():
            if dead is None or not dead[r]:
                found.append((-s, number, r))
    found.sort()
    return [(n, r, -s) for s, n, r in found[:k]]
