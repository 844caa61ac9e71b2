"""What `ragcli serve` loads once and keeps: the embedder, the generator and the published index.

This is the only serve module that touches the index and retriever API, so the move of retrieval
behind one target interface changes this file alone.

A request takes one retriever from `Pipeline.retriever()` and answers from it alone, so it sees one
whole generation even while an ingest publishes the next. Where the target can tell cheaply what it
publishes (`capabilities.reload`: the local index's CURRENT), `retriever()` notices a new version and
opens it before answering; the old one is kept until the new one has opened, and a new version that
cannot be opened (corrupted, another embedding model) is refused once, logged, and the old one goes on
serving. A target without it (Databricks) is searched live.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from ragcli.errors import IndexCorruptedError, IndexNotFoundError, RagcliError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.models import Embedder, Generator

log = logging.getLogger("ragcli.serve")

_LOAD_ATTEMPTS = 3  # a generation pruned by a newer publish while it loads: read CURRENT and try again


class Pipeline:
    """The loaded models and the retriever of the published generation.

    `embedder` and `generator` may be given already loaded; otherwise they are loaded here. A local
    index that does not exist yet is not an error (answers without context still work, and the first
    ingest is picked up); one that exists but cannot be loaded is."""

    def __init__(self, settings: Settings, *, embedder: Embedder | None = None,
                 generator: Generator | None = None) -> None:
        from ragcli.models import load_embedder, load_generator
        from ragcli.targets import settings_target_class

        self.settings = settings
        self.reloads = settings_target_class(settings).capabilities.reload
        self.generator = generator or load_generator(settings)
        self.embedder = embedder or load_embedder(settings)
        self._reload = threading.Lock()
        self._retriever: Any = None
        self._refused: dict[str, str] | None = None
        self.loaded_at: float | None = None
        try:
            self._retriever = self._open()
            self.loaded_at = time.time()
        except IndexNotFoundError as exc:
            if not self.reloads:  # nothing would ever pick the first ingest up
                raise
            log.warning("%s Answering without context only, until an ingest publishes one.", exc)

    # -- the index ------------------------------------------------------------------------------
    def _published(self) -> str | None:
        """The version the target publishes now, or None where there is no cheap way to tell (a target
        without `capabilities.reload` is searched live, so there is nothing to reload)."""
        if not self.reloads:
            return None
        from ragcli.targets import open_target

        return open_target(self.settings).version()

    def _open(self) -> Any:
        """A retriever over the published content. The target opens every file it will read, so a
        request never finds its generation pruned under it; one pruned while opening is opened again."""
        from ragcli.retrieval import open_retriever

        for attempt in range(_LOAD_ATTEMPTS):
            try:
                return open_retriever(self.settings, self.embedder)
            except (IndexCorruptedError, OSError):
                published = self._published()
                if attempt == _LOAD_ATTEMPTS - 1 or published is None:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def retriever(self) -> Any:
        """The retriever of the published generation: reloaded if a new one was published, the old one
        kept if the new one cannot be loaded. Raises IndexNotFoundError (or the refusal) when there is
        no generation to serve."""
        with self._reload:
            current = self._retriever.info.name if self._retriever is not None else None
            try:
                published = self._published()
            except IndexCorruptedError as exc:  # CURRENT itself is unreadable: keep what is loaded
                self._refuse("CURRENT", exc)
                published = None
            if published is not None and published == current:
                self._refused = None  # the published generation is the one served: nothing is refused
            refused = self._refused["generation"] if self._refused else None
            if published is not None and published != current and published != refused:
                try:
                    retriever = self._open()
                except RagcliError as exc:
                    self._refuse(published, exc)
                else:
                    self._retriever, self._refused, self.loaded_at = retriever, None, time.time()
                    log.info("Serving generation %s (was %s).", retriever.info.name, current or "none")
            if self._retriever is None:
                if self._refused:
                    raise IndexCorruptedError(self._refused["error"])
                # Nothing published yet: opening raises the target's own "no index, run ingest" error.
                self._retriever, self.loaded_at = self._open(), time.time()
            return self._retriever

    def _refuse(self, name: str, exc: Exception) -> None:
        from ragcli.config import redact

        message = redact(str(exc))
        self._refused = {"generation": name, "error": message}
        kept = self._retriever.info.name if self._retriever is not None else "nothing"
        log.warning("Refused generation %s, still serving %s: %s", name, kept, message)

    # -- reporting ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """What /health reports about the index (cheap: no reload, no search)."""
        retriever = self._retriever
        info = retriever.info if retriever is not None else None
        try:
            published = self._published()
        except IndexCorruptedError:
            published = None
        return {
            "target": self.settings.target,
            "generation": info.name if info is not None else None,
            "published": published,
            "chunks": info.chunks if info is not None else 0,
            "loaded_at": round(self.loaded_at, 3) if self.loaded_at else None,
            "refused": dict(self._refused) if self._refused else None,
        }
