"""`ingest`: documents → chunks → vectors → the configured target, incrementally.

The use case only orchestrates: open the target, hold its writer lock, read what it holds, let the
planner decide what changed (and split and embed only that), and hand the plan to the target to
publish. Nothing is written before every check passed and every changed file was embedded; how a
target publishes (a new local generation switched atomically, idempotent remote upserts) is the
target's business.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from ragcli.planning import FileResult, IngestReport

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.models import Embedder
    from ragcli.types import Progress

__all__ = ["FileResult", "IngestReport", "ingest"]


def ingest(
    paths: list[Path | str],
    settings: Settings,
    *,
    rebuild: bool = False,
    wait: bool = False,
    encoding: str | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> IngestReport:
    """Ingest files and folders into the configured target. Returns a report; never prints."""
    from ragcli import planning
    from ragcli.targets import open_target

    started = time.perf_counter()
    target = open_target(settings)
    with target.lock(wait=wait):
        state = target.state(rebuild=rebuild, progress=progress)
        plan, report = planning.plan(paths, state.for_rebuild() if rebuild else state, settings, target=target,
                                     encoding=encoding, progress=progress, embedder=embedder)
        published = target.publish(plan, progress=progress)
    report.index = target.location
    report.target = target.kind
    report.generation = published.name
    report.published = published.published
    report.seconds = round(time.perf_counter() - started, 3)
    return report
