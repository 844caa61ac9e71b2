"""`ragcli report`: one offline HTML page over past bench runs (trends, gates, flipped questions)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

EPILOG = """Examples:

  ragcli report runs/*.json -o report.html

  ragcli bench --json runs/$(date +%F).json --html report.html     (this run only)

Runs are ordered by the time they were made. Runs with different fingerprints (models, prompt,
splitter, retrieval settings, corpus, QA set) are drawn as separate lines, never joined. Needs the
report extra: pip install 'ragcli[report]'.
"""


def command(
    runs: Annotated[list[Path], typer.Argument(help="Bench reports (ragcli bench --json FILE), e.g. runs/*.json.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="The HTML file to write, e.g. -o report.html.")] = Path("report.html"),
    title: Annotated[str, typer.Option("--title", help="Title of the page.")] = "ragcli bench report",
) -> None:
    """Draw bench reports as one self-contained HTML page (opens offline)."""
    from ragcli.cli._output import out
    from ragcli.report import load_runs, write_html

    loaded = load_runs(runs)
    write_html(loaded, output, title=title)
    out().print(f"Wrote {output} ({len(loaded)} run(s)).", highlight=False)
