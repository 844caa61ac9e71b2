"""Splitting documents into chunks: semantic (llama-index's SemanticSplitterNodeParser) or plain
sentences, always with a hard cap in the embedding model's tokens.

The semantic splitter has no maximum chunk size, and the encoder silently truncates what is longer
than its window, so the tail of a long chunk would never be retrievable. ragcli therefore re-splits
every chunk above the cap with a sentence splitter that counts the embedder's own tokens, and, as a
last resort for text without any usable boundary, cuts on token boundaries. Nothing is truncated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
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
    vectors: str = "window"  # semantic only: "window" embeds each sentence window, "pooled" averages sentences

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
    """Turns a document's text into chunk texts no longer than `settings.max_chunk_tokens` tokens."""

    def __init__(self, settings: SplitterSettings, embedder: Embedder) -> None:
        from llama_index.core.node_parser import SemanticSplitterNodeParser, SentenceSplitter

        self.settings = settings
        self.embedder = embedder
        self.stats = SplitStats()
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
            parser = _pooled_parser_class() if settings.vectors == "pooled" else SemanticSplitterNodeParser
            self._semantic = parser(
                embed_model=embedder.llama_embed_model(),
                buffer_size=settings.buffer_size,
                breakpoint_percentile_threshold=settings.breakpoint_percentile,
                include_metadata=False,
                include_prev_next_rel=False,
            )

    def split(self, text: str) -> list[str]:
        chunks: list[str] = []
        for block in presplit(text):
            for long_run, segment in _segments(block):
                if long_run:
                    chunks.extend(self._enforce_cap(segment))
                elif segment.strip():
                    chunks.extend(self._split_prose(segment))
        return chunks

    def _split_prose(self, text: str) -> list[str]:
        if self._semantic is None and len(text) <= 16 * self.settings.max_chunk_tokens:
            # A short text within the cap is what the sentence splitter would return as it is (stripped):
            # say so without its per-call set-up, which dominates ingesting many tiny files.
            if len(self.embedder.token_ids(text)) <= self.settings.max_chunk_tokens:
                piece = text.strip()
                return self._enforce_cap(piece) if piece else []
        if self._semantic is None:
            pieces = self._capper.split_text(text)
        else:
            from llama_index.core import Document

            nodes = self._semantic.get_nodes_from_documents([Document(text=text)])
            pieces = []
            for node in nodes:
                content = node.get_content()
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


def _pooled_parser_class() -> type:
    """SemanticSplitterNodeParser that embeds every sentence once and averages the vectors of a window,
    instead of embedding each window's text. Breakpoints are found exactly as llama-index does (cosine
    distance between neighbouring windows above a percentile); only the window vectors are
    approximated. Embedded text per corpus token drops from about 3 (buffer 1) to 1."""
    import numpy as np
    from llama_index.core.node_parser import SemanticSplitterNodeParser
    from llama_index.core.node_parser.node_utils import build_nodes_from_splits

    class PooledSemanticSplitter(SemanticSplitterNodeParser):
        def build_semantic_nodes_from_documents(self, documents: Any, show_progress: bool = False) -> list[Any]:
            nodes: list[Any] = []
            for doc in documents:
                sentences = self._build_sentence_groups(self.sentence_splitter(doc.text))
                if not sentences:
                    continue
                vectors = np.asarray(self.embed_model.get_text_embedding_batch([s["sentence"] for s in sentences]),
                                     dtype=np.float32)
                # Window sums by prefix sums: O(n) for any buffer size.
                prefix = np.vstack([np.zeros((1, vectors.shape[1]), dtype=np.float32), np.cumsum(vectors, axis=0)])
                b, n = self.buffer_size, len(sentences)
                for i, s in enumerate(sentences):
                    window = prefix[min(n, i + b + 1)] - prefix[max(0, i - b)]
                    norm = float(np.linalg.norm(window)) or 1.0
                    s["combined_sentence_embedding"] = (window / norm).tolist()
                distances = self._calculate_distances_between_sentence_groups(sentences)
                chunks = self._build_node_chunks(sentences, distances)
                nodes.extend(build_nodes_from_splits(chunks, doc, id_func=self.id_func))
            return nodes

    return PooledSemanticSplitter
