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


@dataclass
class TargetState:
    """What a target holds now, as the planner needs it.

    `files` maps a file's path relative to its ingested root to its record: `sha256`, `bytes`, `root`
    (the folder it was ingested from), `status` ("ok", or "partial" when its chunks did not all land),
    `chunks` (how many it has) and `tokens` (their total). `embed` is the embedding record the content
    was built with (model, revision, dim, ...; None for an empty target) and `splitter` the splitter
    settings. `fixed_dim` is a vector dimension the target cannot change (a created remote index);
    None where a rebuild may change it. Chunks themselves are not loaded: a file that did not change is
    carried over by reference."""

    name: str | None = None
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    embed: dict[str, Any] | None = None
    splitter: dict[str, Any] | None = None
    fixed_dim: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.files and self.embed is None

    def for_rebuild(self) -> TargetState:
        """The state a rebuild plans against: nothing kept, only what the target cannot change."""
        return TargetState(name=self.name, fixed_dim=self.fixed_dim, settings=dict(self.settings))


@dataclass
class Plan:
    """What a target must hold after an ingest, as a change to what it holds now.

    `files` is the next file table (records as in `TargetState.files`). The files in `kept` carry over
    with the chunks the target holds for them, untouched. Every other file of `files` has its chunks in
    `chunks` (sorted by file and position), each with its vector in `vectors` (embedded in this run, or
    a held vector of the same text). Every held chunk of a file not in `kept` leaves the target
    (changed, removed, emptied and re-split files alike). `changed` is False when publishing would
    change nothing."""

    files: dict[str, dict[str, Any]]
    chunks: list[Chunk]
    vectors: dict[int, Any]
    kept: set[str]
    embed: dict[str, Any]
    splitter: dict[str, Any]
    changed: bool

    @property
    def chunk_count(self) -> int:
        """Chunks of the whole next content (kept and new)."""
        return sum(int(meta.get("chunks") or 0) for meta in self.files.values())

    @property
    def token_count(self) -> int:
        return sum(int(meta.get("tokens") or 0) for meta in self.files.values())

    def corpus_fingerprint(self) -> str:
        """SHA-256 over the file names and contents of the next content."""
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(f"{name}\0{self.files[name].get('sha256')}\n".encode())
        return h.hexdigest()


@dataclass
class Published:
    """What `Target.publish` did: the name of what now serves (a generation, an index) and whether
    anything was written."""

    name: str | None
    published: bool


class ManifestFields:
    """What a published generation of either format says about how it was built."""

    manifest: dict[str, Any]

    @property
    def embed(self) -> dict[str, Any]:
        return dict(self.manifest.get("embed") or {})

    @property
    def splitter(self) -> dict[str, Any]:
        return dict(self.manifest.get("splitter") or {})
