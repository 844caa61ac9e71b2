"""docs/cli.md is generated from the commands' help; it must not drift from the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_cli_reference_is_current(tmp_path):
    out = tmp_path / "cli.md"
    typer_bin = Path(sys.executable).with_name("typer")
    subprocess.run([str(typer_bin), "ragcli.cli.app", "utils", "docs", "--name", "ragcli", "--output", str(out)],
                   check=True, capture_output=True, timeout=120)
    current = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8") == current, "docs/cli.md is stale: run `make docs`"
