"""Keyword retrieval over chunks: a BM25 index built with bm25s, keyed by ragcli chunk ids.

BM25 is one of the retrieval modes `bench` compares with dense retrieval and with their fusion
(design.md, "Retrieval and answers"). It is cheap (well under a millisecond per query at ragcli's
sizes, performance.md §8), so it is built in memory from the chunk texts and stored next to the
FAISS vectors in each index generation.

Design points:

- Chunk ids are arbitrary int64 values (stable ids derived from file and content), not positions.
  bm25s scores documents by position, so the position -> id table is kept here and saved with it.
- Tokenisation is ragcli's own (`tokenize`), pure stdlib and deterministic: lowercase, runs of
  Unicode letters and digits (so "p95" and "2048" survive, "bge-small" gives "bge", "small"), the
  Lucene English stopword list, no stemming (PyStemmer is not a dependency). Owning it keeps saved
  indexes stable across bm25s releases; `TOKENIZER_VERSION` is saved and checked on load.
- Scoring is bm25s's default Lucene variant (k1 = 1.5, b = 0.75). The vocabulary is numbered in
  sorted order, so two builds of the same corpus write byte-identical files (and checksums) and
  score identically.
- Files are written with bm25s's own save (its npy + JSON round trip is exact in 0.3.16) under
  names prefixed "bm25.", plus "bm25.ids.npy" and "bm25.meta.json".
- `bm25s` and `numpy` are imported inside the methods that need them, keeping `import ragcli.bm25`
  (and `ragcli --help`) cheap.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import IndexCorruptedError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["BM25Index", "STOPWORDS", "TOKENIZER_VERSION", "tokenize"]

#: Bump when `tokenize` changes: an index built with another version is refused on load.
TOKENIZER_VERSION = 1
#: Version of the on-disk layout written by `BM25Index.save`.
FORMAT_VERSION = 1

#: Lucene's English stopword set (also bm25s's STOPWORDS_EN), copied so the tokenizer needs no import.
STOPWORDS: frozenset[str] = frozenset(
    (
        "a an and are as at be but by for if in into is it no not of on or such "
        "that the their then there these they this to was will with"
    ).split()
)

# Runs of Unicode letters and digits; "_" is a word character for `\w` but a separator here.
_TOKEN = re.compile(r"[^\W_]+")

_META = "bm25.meta.json"
_IDS = "bm25.ids.npy"
# bm25s.BM25.save/load file-name arguments -> ragcli's names.
_BM25S_FILES = {
    "data_name": "bm25.data.npy",
    "indices_name": "bm25.indices.npy",
    "indptr_name": "bm25.indptr.npy",
    "vocab_name": "bm25.vocab.json",
    "params_name": "bm25.params.json",
    "nnoc_name": "bm25.nonoccurrence.npy",  # written only by the BM25L / BM25+ variants
}

_K1 = 1.5
_B = 0.75


def tokenize(text: str) -> list[str]:
    """Split text into lowercase word tokens, dropping English stopwords; order and repeats kept.

    >>> tokenize("The p95 latency of IndexFlatIP at d=384 is 2048 µs.")
    ['p95', 'latency', 'indexflatip', 'd', '384', '2048', 'µs']
    """
    return [token for token in _TOKEN.findall(text.lower()) if token not in STOPWORDS]


class BM25Index:
    """A BM25 index over chunk texts, searched by query string, returning chunk ids.

    Build with `BM25Index.build(ids, texts)`, persist with `save(directory)`, reopen with
    `BM25Index.load(directory)`. An empty corpus, or one whose texts hold no token outside the
    stopword list, is valid: every search returns [].
    """

    def __init__(self, ids: np.ndarray, model: Any | None) -> None:
        """Internal: use `build` or `load`. `model` is a bm25s.BM25, or None when there is no vocabulary."""
        self._ids = ids
        self._model = model

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, ids: Sequence[int], texts: Sequence[str]) -> BM25Index:
        """Index `texts[i]` under chunk id `ids[i]`.

        Raises ValueError if the two lists differ in length or an id repeats, OverflowError if an
        id does not fit in int64.
        """
        import numpy as np

        if len(ids) != len(texts):
            raise ValueError(f"ids and texts differ in length ({len(ids)} vs {len(texts)})")
        id_array = np.asarray(list(ids), dtype=np.int64).reshape(-1)
        if len(np.unique(id_array)) != len(id_array):
            raise ValueError("chunk ids must be unique")

        corpus_tokens = [tokenize(text) for text in texts]
        vocab = {token: i for i, token in enumerate(sorted({t for doc in corpus_tokens for t in doc}))}
        if not vocab:
            # Nothing to score: bm25s cannot index an empty corpus or vocabulary (it takes the mean
            # of no document lengths and max() of no token ids).
            return cls(id_array, None)

        import bm25s

        model = bm25s.BM25(k1=_K1, b=_B, method="lucene", backend="numpy", csc_backend="numpy")
        corpus_token_ids = [[vocab[token] for token in doc] for doc in corpus_tokens]
        # The (token ids, vocab) form keeps our sorted numbering; without create_empty_token bm25s
        # would append a "" entry that has no column in the score matrix.
        model.index((corpus_token_ids, vocab), create_empty_token=False, show_progress=False)
        return cls(id_array, model)

    # ------------------------------------------------------------------ persistence

    def save(self, directory: Path) -> list[Path]:
        """Write the index into `directory` (created if missing); return the files written, sorted.

        Every file name starts with "bm25.", so the directory can be shared with other index files.
        The caller checksums the returned files and records them in its manifest.
        """
        import numpy as np

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        written = [directory / _IDS]
        np.save(directory / _IDS, self._ids, allow_pickle=False)
        if self._model is not None:
            self._model.save(directory, show_progress=False, **_BM25S_FILES)
            written.extend(directory / name for name in _BM25S_FILES.values() if (directory / name).exists())
        meta = {
            "format": FORMAT_VERSION,
            "tokenizer": TOKENIZER_VERSION,
            "num_docs": len(self._ids),
            "has_model": self._model is not None,
        }
        (directory / _META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(directory / _META)
        return sorted(written)

    @classmethod
    def load(cls, directory: Path) -> BM25Index:
        """Open an index written by `save`.

        Raises IndexCorruptedError if a file is missing or unreadable, the layout or tokenizer
        version differs from this ragcli's, or the files disagree about the number of chunks.
        """
        import numpy as np

        directory = Path(directory)
        meta_path = directory / _META
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            fmt, tok, num_docs, has_model = (
                meta["format"],
                meta["tokenizer"],
                int(meta["num_docs"]),
                bool(meta["has_model"]),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexCorruptedError(
                f"{meta_path}: cannot read the BM25 index metadata ({exc}); re-run ingest"
            ) from exc
        if fmt != FORMAT_VERSION or tok != TOKENIZER_VERSION:
            raise IndexCorruptedError(
                f"{directory}: BM25 index has format {fmt}, tokenizer {tok}; this ragcli reads format "
                f"{FORMAT_VERSION}, tokenizer {TOKENIZER_VERSION}; re-run ingest to rebuild it"
            )
        ids_path = directory / _IDS
        try:
            ids = np.load(ids_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexCorruptedError(
                f"{ids_path}: cannot read the BM25 id table ({exc}); re-run ingest"
            ) from exc
        if ids.dtype != np.int64 or ids.ndim != 1 or len(ids) != num_docs:
            raise IndexCorruptedError(
                f"{ids_path}: expected {num_docs} int64 chunk ids, found shape {ids.shape} {ids.dtype}; "
                "re-run ingest"
            )
        model = None
        if has_model:
            import bm25s

            try:
                model = bm25s.BM25.load(directory, show_progress=False, **_BM25S_FILES)
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise IndexCorruptedError(
                    f"{directory}: cannot read the BM25 score matrix ({exc}); re-run ingest"
                ) from exc
            if model.scores.get("num_docs") != num_docs:
                raise IndexCorruptedError(
                    f"{directory}: BM25 score matrix covers {model.scores.get('num_docs')} chunks, "
                    f"the id table {num_docs}; re-run ingest"
                )
        return cls(ids, model)

    # ------------------------------------------------------------------ search

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Return up to `k` (chunk id, score) pairs, best first, only those with score > 0.

        A chunk scores > 0 when it shares at least one token with the query; repeated query tokens
        count once per repeat (as bm25s does). Equal scores are ordered by chunk id, so results do
        not depend on build order. k larger than the corpus is fine; k = 0 returns [].
        A query with no token in the vocabulary (or only stopwords) returns [].

        Raises ValueError if k is negative.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        if self._model is None or k == 0:
            return []
        vocab = self._model.vocab_dict
        token_ids = [vocab[token] for token in tokenize(query) if token in vocab]
        if not token_ids:
            return []

        import numpy as np

        scores = self._model.get_scores_from_ids(token_ids)
        positions = np.flatnonzero(scores > 0)
        # Best score first, then smallest chunk id: deterministic, unlike an argpartition top-k.
        order = np.lexsort((self._ids[positions], -scores[positions]))
        best = positions[order[:k]]
        return [(int(self._ids[p]), float(scores[p])) for p in best]

    def __len__(self) -> int:
        """Number of chunks indexed (including chunks with no searchable token)."""
        return len(self._ids)

    def __repr__(self) -> str:
        vocab = 0 if self._model is None else len(self._model.vocab_dict)
        return f"BM25Index(chunks={len(self)}, vocabulary={vocab})"
