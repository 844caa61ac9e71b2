"""The contract every index kind implements: the local FAISS store, Databricks Vector Search, ...

A target is where chunks and their vectors live. The use cases (ingest, query, bench, serve) talk to
it only through this class, so a new kind of index is one new module and one line in
`ragcli.targets.open_target`:

- writing: `lock()` keeps writers apart (or does nothing where writes are idempotent), `state()` says
  what the target holds (for the planner's diff), `reusable_vectors(text_keys)` gives back vectors it
  holds for chunk texts (so a changed file re-embeds only its new text), `publish(plan)` makes the
  target hold exactly the plan's content, atomically or idempotently;
- reading: `open()` loads what is published and says what it is (`IndexInfo`), `search()` finds
  chunks by vector or by text in the modes the target has natively (`capabilities`), `chunks()` lists
  everything (for bench's baselines), `describe()` reports for status and bench, `version()` cheaply
  names the published content so a long-running reader can tell when to `open()` again.

A target never imports the use cases (planning, retrieval, ingest, query, bench): it is handed a
`Plan` and a vector, and gives back `Hit`s. Targets raise `RagcliError`s whose messages name the target.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import numpy as np

    from ragcli.config import Settings
    from ragcli.types import Chunk, Hit, Plan, Progress, Published, TargetState

MODES = ("dense", "bm25", "hybrid")


@dataclass(frozen=True)
class Capabilities:
    """What a target can do, so callers never branch on its name.

    `modes`: retrieval modes `search` answers natively. Hybrid is fused by ragcli from dense and bm25
    where the target has both but not `hybrid`. `scratch_copy`: bench may ingest a corpus into a
    temporary target of this kind (False where that would create billed remote resources).
    `atomic_publish`: readers see the old or the new content, never a mix (else publishing is
    idempotent and converges). `verify`: `verify()` checks stored data against checksums.
    `raw_search`: `raw_search` exists (bench's raw baseline). `reload`: `version()` is cheap, so a
    long-running reader (`ragcli serve`) polls it and opens the new content when it changes; a target
    without it is searched live. `embeds_text`: the target embeds the question itself (a managed-
    embedding index), so `search` takes the question's `text` in dense mode too and no local model is
    loaded for searching."""

    modes: frozenset[str]
    scratch_copy: bool = False
    atomic_publish: bool = False
    verify: bool = False
    raw_search: bool = False
    fusion_params: bool = True  # --fusion/--alpha apply (False where the service fuses hybrid itself)
    reload: bool = False
    embeds_text: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"modes": sorted(self.modes), "scratch_copy": self.scratch_copy,
                "atomic_publish": self.atomic_publish, "verify": self.verify, "raw_search": self.raw_search,
                "fusion_params": self.fusion_params, "reload": self.reload,
                "embeds_text": self.embeds_text}


@dataclass
class IndexInfo:
    """What `open()` loaded: enough for a reader to check its embedding model and label its results."""

    name: str | None  # the generation (local) or the index name (remote)
    embed: dict[str, Any]
    splitter: dict[str, Any]
    dim: int | None
    chunks: int
    files: dict[str, Any] = field(default_factory=dict)
    corpus_sha256: str | None = None
    index_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"generation": self.name, "chunks": self.chunks, "files": len(self.files),
                "corpus_sha256": self.corpus_sha256, "splitter": self.splitter, "index_type": self.index_type,
                "embed": self.embed, **self.extra}


class Target(ABC):
    """One index, local or remote. See the module docstring for the contract."""

    kind: ClassVar[str]
    capabilities: ClassVar[Capabilities]

    #: How messages name this target, e.g. "The index in /home/me/ragcli-index".
    label: str
    #: Where it is, for reports: a folder or a catalog.schema.index name.
    location: str

    # -- writing -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, wait: bool = False) -> Iterator[None]:
        """Hold off other writers while planning and publishing. Default: nothing to hold (idempotent)."""
        yield

    @abstractmethod
    def state(self, *, rebuild: bool = False, progress: Progress | None = None) -> TargetState:
        """What the target holds now. With `rebuild`, damage that a rebuild repairs is not an error."""

    @abstractmethod
    def reusable_vectors(self, text_keys: Sequence[str]) -> dict[str, np.ndarray]:
        """Vectors the target holds for chunks with these texts (`ragcli.types.text_key`), after
        `state()`. Texts it cannot give back are left out: the planner embeds them."""

    @abstractmethod
    def publish(self, plan: Plan, *, progress: Progress | None = None) -> Published:
        """Make the target hold exactly `plan`'s content. Nothing changes before every check passed."""

    @classmethod
    def scratch_settings(cls, settings: Settings, folder: Path) -> Settings:
        """Settings that point this kind of target at a fresh, temporary one inside `folder` (bench's
        scratch copy). Only where `capabilities.scratch_copy`."""
        raise NotImplementedError(f"{cls.kind} has no scratch copies")

    def rebuild_hint(self) -> str:
        """The command that starts this target afresh, for error messages."""
        return "ragcli ingest --rebuild <paths>"

    def dimension_advice(self) -> str:
        """What to do when the embedding model's dimension differs from the one the target holds."""
        return f"Run: {self.rebuild_hint()}"

    # -- reading -----------------------------------------------------------------------------------
    @abstractmethod
    def open(self) -> IndexInfo:
        """Load (or connect to) the published content for searching. Raises `IndexNotFoundError`
        when nothing is published, `IndexCorruptedError` when it is damaged."""

    @abstractmethod
    def search(self, mode: str, k: int, *, vector: np.ndarray | None = None, text: str | None = None) -> list[Hit]:
        """The top `k` chunks, best first, ranks from 1. `vector` for dense (and hybrid), `text` for
        bm25 (and hybrid); only modes in `capabilities.modes`."""

    @abstractmethod
    def chunks(self) -> Iterable[Chunk]:
        """Every chunk of the opened content."""

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary for status and bench reports."""
        info = self.open()
        return {"target": self.kind, "location": self.location, **info.as_dict(),
                "capabilities": self.capabilities.as_dict()}

    def version(self) -> str | None:
        """A cheap name of the published content (e.g. the generation); None when unknown."""
        return None

    def raw_search(self, vector: np.ndarray, k: int) -> Any:
        """The index's own search with no ragcli work around it (bench's baseline), where it exists."""
        raise NotImplementedError(f"{self.kind} has no raw search")

    def verify(self) -> list[dict[str, Any]]:
        """Check stored data against checksums, one row per stored version. Only where `capabilities.verify`."""
        raise NotImplementedError(f"{self.kind} cannot verify its data")

    def verify_current(self) -> None:
        """Check the published content against its checksums; raises `IndexCorruptedError` when damaged.
        Only where `capabilities.verify`."""
        raise NotImplementedError(f"{self.kind} cannot verify its data")

    # -- packaging (ragcli package) ------------------------------------------------------------------
    def export(self, dest: Path) -> str | None:
        """Copy the published content into the new folder `dest` as a self-contained index a reader
        can open alone, checked first; returns the name of what was copied. None where the content
        is not ragcli's to copy (a remote index: the reader connects to it)."""
        return None

    def resources(self) -> dict[str, list[str]]:
        """The remote services a deployed reader calls, by kind ("vector_search_index": names), so a
        serving platform can pass credentials for them through. Empty for a self-contained target."""
        return {}


def content_manifest(plan: Plan) -> dict[str, Any]:
    """The part of a manifest every target records about its content: ragcli's version, the embedding
    record, the splitter settings, the corpus fingerprint and the versions of the libraries that made it."""
    from ragcli import __version__
    from ragcli.versions import library_versions

    return {"ragcli_version": __version__, "embed": plan.embed, "splitter": plan.splitter,
            "corpus_sha256": plan.corpus_fingerprint(), "library_versions": library_versions()}
