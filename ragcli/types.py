"""Value types shared by every layer: chunks, search hits, chunk ids, the progress callback.

This module imports nothing of ragcli and nothing heavy, so any module (a target, the planner, the
CLI, a Spark worker) can use these types without pulling in anything else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# `progress(stage, done, total)`: called by long-running library functions; total 0 means unknown.
Progress = Callable[[str, int, int], None]


@dataclass
class Chunk:
    """One piece of a document, as stored in an index."""

    id: int
    file: str  # path relative to the ingested root, with "/" separators
    position: int  # order of the chunk in its file, from 0
    text: str
    tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "file": self.file, "position": self.position, "text": self.text,
                "tokens": self.tokens, "metadata": self.metadata}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Chunk:
        return cls(id=int(row["id"]), file=str(row["file"]), position=int(row["position"]), text=str(row["text"]),
                   tokens=int(row.get("tokens", 0)), metadata=dict(row.get("metadata") or {}))


@dataclass
class Hit:
    """A retrieved chunk: where it comes from, its score in the mode that found it, and its rank (from 1)."""

    chunk_id: int
    file: str
    position: int
    score: float
    text: str
    rank: int = 0


def chunk_id(relpath: str, text: str, occurrence: int = 0) -> int:
    """A stable 63-bit id from the file and the chunk's content (not its position), so inserting text
    elsewhere in a file does not change the ids of untouched chunks. `occurrence` tells apart identical
    texts within one file."""
    digest = hashlib.sha256(f"{relpath}\0{occurrence}\0{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def file_chunks(relpath: str, pieces: list[str], count_tokens: Callable[[str], int]) -> list[Chunk]:
    """The chunks of one file from its split pieces, in order: ids by `chunk_id` (identical pieces are told
    apart by their occurrence), token counts by `count_tokens`. Every writer (ingest, the Spark job) uses it,
    so the same file gives the same chunks everywhere."""
    occurrences: dict[str, int] = {}
    chunks = []
    for position, piece in enumerate(pieces):
        n = occurrences.get(piece, 0)
        occurrences[piece] = n + 1
        chunks.append(Chunk(id=chunk_id(relpath, piece, n), file=relpath, position=position, text=piece,
                            tokens=count_tokens(piece)))
    return chunks


def text_key(text: str) -> str:
    """Key of a chunk text in the vector cache (same model, same text → same vector)."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
