"""Consoles, JSON output and progress bars. Results go to stdout, progress and messages to stderr,
so `ragcli query --json ... | jq` always works. Consoles are made per call, so NO_COLOR and COLUMNS
set after import are honoured."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console


def out() -> Console:
    return Console(file=sys.stdout, highlight=False, soft_wrap=False)


def err() -> Console:
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def warn(message: str) -> None:
    from rich.markup import escape

    from ragcli.config import redact

    err().print(f"[yellow]Warning:[/] {escape(redact(message))}", markup=True, highlight=False)


ProgressCallback = Callable[[str, int, int], None]


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[ProgressCallback]:
    """A callback `(stage, done, total)` drawing one rich progress bar per stage on stderr.

    Library functions call it; when stderr is not a terminal (CI) rich draws nothing noisy."""
    if not enabled:
        yield lambda stage, done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    tasks: dict[str, Any] = {}
    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
        # Transient: the bars clear when the work is done (a summary follows).
        transient=True,
    )

    def update(stage: str, done: int, total: int) -> None:
        if not tasks:
            progress.start()  # lazily: a command that fails before its first step prints nothing here
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=total or None)
        progress.update(tasks[stage], completed=done, total=total or None)

    try:
        yield update
    finally:
        if tasks:
            progress.stop()
