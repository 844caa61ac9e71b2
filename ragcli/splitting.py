"""Splitting documents into chunks: semantic (llama-index's SemanticSplitterNodeParser) or plain
sentences, always with a hard cap in the embedding model's tokens.

The semantic splitter has no maximum chunk size, and the encoder silently truncates what is longer
than its window, so the tail of a long chunk would never be retrievable. ragcli therefore re-splits
every chunk above the cap with a sentence splitter that counts the embedder's own tokens, and, as a
last resort for text without any usable boundary, cuts on token boundaries. Nothing is truncated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.models import Embedder


@dataclass(frozen=True)
class SplitterSettings:
    """What decides the chunks of a file. Recorded in the index manifest; a change re-splits files."""

    kind: str
    buffer_size: int
    breakpoint_percentile: float
    max_chunk_tokens: int
    vectors: str = "window"  # semantic: "window" embeds each sentence window, "pooled" averages sentences,
    # "late" pools the token vectors of one pass over the document per window

    @classmethod
    def from_settings(cls, settings: Settings, embedder_limit: int | None = None) -> SplitterSettings:
        cap = settings.max_chunk_tokens
        if embedder_limit is not None:
            cap = min(cap, embedder_limit)
        semantic = settings.splitter == "semantic"
        return cls(
            kind=settings.splitter,
            buffer_size=settings.buffer_size if semantic else 0,
            breakpoint_percentile=settings.breakpoint_percentile if semantic else 0.0,
            max_chunk_tokens=cap,
            vectors=settings.semantic_vectors if semantic else "",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "buffer_size": self.buffer_size,
            "breakpoint_percentile": self.breakpoint_percentile,
            "max_chunk_tokens": self.max_chunk_tokens,
            "vectors": self.vectors,
        }


# A run of this many characters without any whitespace is not prose (a data dump, a base64 blob, a
# line of brackets): it is cut on token boundaries directly instead of through the sentence splitter,
# which would fall back to one tokenizer call per character.
LONG_RUN = 1000
_WORDS = re.compile(r"\S+")


def _segments(text: str) -> Iterator[tuple[bool, str]]:
    """(is_long_run, text) pieces of `text`, in order, in one linear scan."""
    if len(text) < LONG_RUN:
        yield False, text
        return
    pos = 0
    for m in _WORDS.finditer(text):
        if m.end() - m.start() >= LONG_RUN:
            if m.start() > pos:
                yield False, text[pos : m.start()]
            yield True, m.group()
            pos = m.end()
    if pos < len(text):
        yield False, text[pos:]


# The longest text handed to the sentence tokenizer or the semantic splitter at once. Their cost and
# memory grow with what they are given (NLTK's sentence regexes run under a 5 s wall-clock limit over the
# whole string; the semantic splitter holds a vector per sentence window), so a 40 MB document of
# paragraphs without a full stop would fail or take gigabytes; cut into blocks first, it is linear.
PRESPLIT_CHARS = 100_000


def presplit(text: str, limit: int = PRESPLIT_CHARS) -> list[str]:
    """`text` as consecutive blocks of at most `limit` characters, cut at the last paragraph break
    ("\n\n") in the second half of each window, else the last line break, else the last space, else
    anywhere. Nothing is lost or added ("".join(blocks) == text); each cut scans at most half a window
    and advances by at least half a window, so this is linear. A text within the limit is one block, so
    the chunks of every document up to `limit` characters are exactly as before."""
    if len(text) <= limit:
        return [text]
    blocks = []
    start, half = 0, limit // 2
    while len(text) - start > limit:
        end = start + limit
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = text.rfind(sep, start + half, end)
            if cut > start:
                cut += len(sep)
                break
        if cut <= start:
            cut = end
        blocks.append(text[start:cut])
        start = cut
    blocks.append(text[start:])
    return blocks


@dataclass
class SplitStats:
    resplit: int = 0  # semantic chunks over the cap that were split again
    hard_cuts: int = 0  # pieces cut on token boundaries (no sentence or word boundary fitted)


class Splitter:
    """Turns a document's text into chunk texts no longer than `settings.max_chunk_tokens` tokens.

    `split_many` splits several documents at once: the semantic splitter's window (or sentence)
    vectors of all of them are embedded in one stream, sorted by length (so batches pad little) and
    each distinct text once; a `window_cache` (text key -> vector, e.g. `WindowCache`) keeps them for
    the next ingest, so a changed file re-embeds only its changed windows. The breakpoints are
    llama-index's own (`SemanticSplitterNodeParser`'s distance and percentile code is called): given
    the same window vectors, the chunks are the same as its parser's. `window_embedder` embeds the
    windows (default `embedder`; a reduced-precision copy of it, bf16 or int8, as
    `ragcli.models.window_embedder_for` decides: the windows only place the breakpoints)."""

    def __init__(self, settings: SplitterSettings, embedder: Embedder, window_cache: Any = None,
                 window_embedder: Embedder | None = None) -> None:
        from llama_index.core.node_parser import SemanticSplitterNodeParser, SentenceSplitter

        self.settings = settings
        self.embedder = embedder
        self.window_embedder = window_embedder or embedder
        self.stats = SplitStats()
        self._vectors: dict[str, Any] = {}  # text key -> window/sentence vector, for this run
        self._late: dict[int, list[Any]] = {}  # late chunking: id(sentence groups) -> window vectors
        self._cache = window_cache
        cap = settings.max_chunk_tokens
        self._capper = SentenceSplitter(
            chunk_size=cap,
            chunk_overlap=min(cap // 8, 32) if settings.kind == "sentence" else 0,
            tokenizer=embedder.token_ids,
            include_metadata=False,
            include_prev_next_rel=False,
        )
        self._semantic = None
        if settings.kind == "semantic":
            # Always pass the local embedder: from_defaults() would fall back to a hosted API otherwise.
            self._semantic = SemanticSplitterNodeParser(
                embed_model=embedder.llama_embed_model(),
                buffer_size=settings.buffer_size,
                breakpoint_percentile_threshold=settings.breakpoint_percentile,
                include_metadata=False,
                include_prev_next_rel=False,
            )

    def split(self, text: str) -> list[str]:
        return self.split_many([text])[0]

    def split_many(self, texts: list[str]) -> list[list[str]]:
        """The chunk texts of each of `texts`, in order."""
        # Phase 1: segments, and the sentence groups of every prose segment of every text.
        plans: list[list[tuple[str, Any]]] = []
        for text in texts:
            items: list[tuple[str, Any]] = []
            for block in presplit(text):  # bounded blocks first: the sentence tokenizer's cost stays linear
                for long_run, segment in _segments(block):
                    if long_run:
                        items.append(("run", segment))
                    elif segment.strip():
                        items.append(("prose", self._groups(segment) if self._semantic is not None else segment))
            plans.append(items)
        # Phase 2: every vector the breakpoints need, in one length-sorted stream.
        if self._semantic is not None:
            prose = [g for items in plans for kind, g in items if kind == "prose"]
            if self.settings.vectors == "late":
                self._late_chunk(prose)
            else:
                self._embed_needed(prose)
        # Phase 3: breakpoints, then the cap.
        out: list[list[str]] = []
        for items in plans:
            chunks: list[str] = []
            for kind, payload in items:
                if kind == "run":
                    chunks.extend(self._enforce_cap(payload))
                else:
                    chunks.extend(self._split_prose(payload))
            out.append(chunks)
        return out

    # -- the semantic part -----------------------------------------------------------------------
    def _groups(self, text: str) -> list[dict[str, Any]]:
        parser = self._semantic
        return parser._build_sentence_groups(parser.sentence_splitter(text))

    def _vector_texts(self, groups: list[dict[str, Any]]) -> list[str]:
        key = "sentence" if self.settings.vectors == "pooled" else "combined_sentence"
        return [g[key] for g in groups]

    def _embed_needed(self, all_groups: list[list[dict[str, Any]]]) -> None:
        from ragcli.types import text_key

        wanted: dict[str, str] = {}
        for groups in all_groups:
            for t in self._vector_texts(groups):
                k = text_key(t)
                if k not in self._vectors:
                    wanted.setdefault(k, t)
        if self._cache is not None and wanted:
            held = self._cache.get(list(wanted))
            self._vectors.update(held)
            for k in held:
                wanted.pop(k, None)
        if not wanted:
            return
        keys = sorted(wanted, key=lambda k: len(wanted[k]), reverse=True)  # little padding per batch
        vectors = self.window_embedder.embed_documents([wanted[k] for k in keys])
        fresh = dict(zip(keys, vectors, strict=True))
        self._vectors.update(fresh)
        if self._cache is not None:
            self._cache.put(fresh)

    def _late_chunk(self, all_groups: list[list[dict[str, Any]]]) -> None:
        """Late chunking: each prose segment is read by the encoder whole (in overlapping windows of
        its sequence limit, all segments' windows in one length-sorted stream), and a sentence
        window's vector is the mean of its tokens' contextual vectors. About one encode of the text,
        instead of one per sentence window."""
        import numpy as np

        emb = self.embedder
        size = max(8, emb.max_tokens - 2)
        overlap = size // 4
        docs = []
        seqs: list[tuple[int, int, list[int], int]] = []  # (doc, start token, framed ids, lead)
        for d, groups in enumerate(all_groups):
            text = "".join(g["sentence"] for g in groups)
            ids, offsets = emb.token_offsets(text)
            docs.append((groups, ids, offsets))
            start = 0
            while ids:
                framed, lead = emb.with_special_tokens(ids[start : start + size])
                seqs.append((d, start, framed, lead))
                if start + size >= len(ids):
                    break
                start += size - overlap
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][2]))
        states = dict(zip(order, emb.token_states([seqs[i][2] for i in order]), strict=True)) if seqs else {}
        per_doc: dict[int, list[tuple[int, Any, int]]] = {}
        for i, (d, start, _, lead) in enumerate(seqs):
            per_doc.setdefault(d, []).append((start, states[i], lead))
        for d, (groups, ids, offsets) in enumerate(docs):
            n = len(groups)
            dim = emb.dim
            tokens = np.zeros((len(ids), dim), dtype=np.float32)
            best = np.full(len(ids), -1)
            for start, state, lead in per_doc.get(d, []):
                count = min(size, len(ids) - start)
                for j in range(count):  # each token from the window where it sits most centrally
                    centrality = min(j, count - 1 - j)
                    if centrality > best[start + j]:
                        best[start + j] = centrality
                        tokens[start + j] = state[lead + j]
            bounds = np.cumsum([0] + [len(g["sentence"]) for g in groups])
            sums = np.zeros((n, dim), dtype=np.float32)
            counts = np.zeros(n)
            for t, (begin, _) in enumerate(offsets):
                s = min(n - 1, max(0, int(np.searchsorted(bounds, begin, side="right")) - 1))
                sums[s] += tokens[t]
                counts[s] += 1
            prefix = np.vstack([np.zeros((1, dim), dtype=np.float32), np.cumsum(sums, axis=0)])
            cprefix = np.concatenate([[0.0], np.cumsum(counts)])
            b = self.settings.buffer_size
            vectors: list[Any] = []
            for i in range(n):
                lo, hi = max(0, i - b), min(n, i + b + 1)
                window = prefix[hi] - prefix[lo]
                norm = float(np.linalg.norm(window))
                if cprefix[hi] - cprefix[lo] == 0 or norm == 0:  # no token (whitespace): like its neighbour
                    vectors.append(vectors[-1] if vectors else np.ones(dim, dtype=np.float32) / np.sqrt(dim))
                else:
                    vectors.append(window / norm)
            self._late[id(groups)] = vectors

    def _window_vectors(self, groups: list[dict[str, Any]]) -> list[Any]:
        import numpy as np

        from ragcli.types import text_key

        if self.settings.vectors == "late":
            return self._late.pop(id(groups))
        vectors = [self._vectors[text_key(t)] for t in self._vector_texts(groups)]
        if self.settings.vectors != "pooled":
            return vectors
        # Pooled: a window's vector is the normalised sum of its sentences' vectors (prefix sums).
        stacked = np.asarray(vectors, dtype=np.float32)
        prefix = np.vstack([np.zeros((1, stacked.shape[1]), dtype=np.float32), np.cumsum(stacked, axis=0)])
        b, n = self.settings.buffer_size, len(groups)
        out = []
        for i in range(n):
            window = prefix[min(n, i + b + 1)] - prefix[max(0, i - b)]
            out.append(window / (float(np.linalg.norm(window)) or 1.0))
        return out

    def _semantic_chunks(self, groups: list[dict[str, Any]]) -> list[str]:
        """llama-index's breakpoint rule over the window vectors (its own methods)."""
        parser = self._semantic
        if not groups:
            return []
        for g, vector in zip(groups, self._window_vectors(groups), strict=True):
            g["combined_sentence_embedding"] = [float(x) for x in vector]
        distances = parser._calculate_distances_between_sentence_groups(groups)
        return parser._build_node_chunks(groups, distances)

    def _split_prose(self, payload: Any) -> list[str]:
        if self._semantic is None and len(payload) <= 16 * self.settings.max_chunk_tokens:
            # A short text within the cap is what the sentence splitter would return as it is (stripped):
            # say so without its per-call set-up, which dominates ingesting many tiny files.
            if len(self.embedder.token_ids(payload)) <= self.settings.max_chunk_tokens:
                piece = payload.strip()
                return self._enforce_cap(piece) if piece else []
        if self._semantic is None:
            pieces = self._capper.split_text(payload)
        else:
            pieces = []
            for content in self._semantic_chunks(payload):
                if not content.strip():
                    continue
                if self.embedder.count_tokens(content) > self.settings.max_chunk_tokens:
                    self.stats.resplit += 1
                    pieces.extend(self._capper.split_text(content))
                else:
                    pieces.append(content)
        chunks: list[str] = []
        for piece in pieces:
            piece = piece.strip()
            if piece:
                chunks.extend(self._enforce_cap(piece))
        return chunks

    def _enforce_cap(self, text: str) -> list[str]:
        """Guarantee the cap: cut on token boundaries where no sentence or word boundary fitted."""
        cap = self.settings.max_chunk_tokens
        ids = self.embedder.token_ids(text)
        if len(ids) <= cap:
            return [text]
        out = []
        for start in range(0, len(ids), cap):
            piece = self.embedder.decode(ids[start : start + cap]).strip()
            if piece:
                self.stats.hard_cuts += 1
                out.append(piece)
        return out


class WindowCache:
    """Window (and sentence) vectors of the semantic splitter kept between ingests, in one SQLite file
    per embedding model, revision and backend: `<folder>/<key>.sqlite`, rows (text key, float32 bytes).

    A changed file's unchanged windows are then not embedded again. Exact vectors are stored, so the
    breakpoints are those of a cold run. Bounded: past `max_rows` the oldest rows are dropped. Any
    SQLite error (a read-only or full disk) turns the cache off for the run instead of failing it."""

    def __init__(self, folder: Path, identity: dict[str, Any], max_rows: int = 200_000) -> None:
        import hashlib

        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
        self.path = Path(folder) / f"windows-{key}.sqlite"
        self.max_rows = max_rows
        self.hits = 0
        self._db: Any = None
        self._dim = int(identity.get("dim") or 0)

    def _conn(self) -> Any:
        if self._db is None:
            import sqlite3

            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=30)
            self._db.execute("CREATE TABLE IF NOT EXISTS v (k TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return self._db

    def get(self, keys: list[str]) -> dict[str, Any]:
        import sqlite3

        import numpy as np

        out: dict[str, Any] = {}
        try:
            db = self._conn()
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                rows = db.execute(f"SELECT k, vec FROM v WHERE k IN ({','.join('?' * len(part))})", part).fetchall()
                for k, blob in rows:
                    vector = np.frombuffer(blob, dtype=np.float32)
                    if not self._dim or vector.shape[0] == self._dim:
                        out[k] = vector
        except (sqlite3.Error, OSError):
            self._db = None
            return {}
        self.hits += len(out)
        return out

    def put(self, vectors: dict[str, Any]) -> None:
        import sqlite3

        import numpy as np

        try:
            db = self._conn()
            with db:
                db.executemany("INSERT OR REPLACE INTO v (k, vec) VALUES (?, ?)",
                               [(k, np.asarray(v, dtype=np.float32).tobytes()) for k, v in vectors.items()])
                count = db.execute("SELECT COUNT(*) FROM v").fetchone()[0]
                if count > self.max_rows:
                    db.execute("DELETE FROM v WHERE rowid IN (SELECT rowid FROM v ORDER BY rowid LIMIT ?)",
                               (count - self.max_rows,))
        except (sqlite3.Error, OSError):
            self._db = None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def window_cache_for(settings: Settings, embedder: Embedder) -> WindowCache | None:
    """The window cache this run uses (None: off). Setting RAGCLI_WINDOW_CACHE: a folder, or "off";
    default `<models dir>/ragcli-cache`."""
    if settings.splitter != "semantic" or settings.window_cache == "off":
        return None
    folder = Path(settings.window_cache) if settings.window_cache else settings.models_dir / "ragcli-cache"
    info = embedder.info()
    identity = {k: info.get(k) for k in ("model", "revision", "dim", "backend", "quantization", "text_instruction")}
    return WindowCache(folder, identity)
