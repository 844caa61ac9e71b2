"""Faults found by torture (issue 16): one bad file must not stop an ingest, and a publish must never
look like corruption to a reader.

1. a file name whose bytes are not UTF-8 is named (escaped) and skipped; the others are indexed; exit 1;
2. a .docx with a 40 MB document part and no sentence punctuation is split in bounded memory;
3. readers racing publishes and prunes never fail and never report corruption;
4. a kill while old generations are pruned leaves no half-deleted generation that `index verify`
   would call fine, and `index verify` exits non-zero naming a damaged kept generation;
5. unreadable files (index, input documents, model folders) are named with the missing permission.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import write_tree

GOOD = {
    "a.md": "# Alpha\n\nThe alpha service stores vectors in a flat index. Exact search keeps recall high.\n",
    "b.md": "# Beta\n\nBeta runs the nightly ingest job. Tables keep thirty days of versions.\n",
}


# -- 1. a file name that is not UTF-8 ---------------------------------------------------------------
def _bad_name_file(folder: Path) -> None:
    fd = os.open(os.fsencode(folder) + b"/bad-\xff\xfe.md", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"# Bad name\n\nThe gamma text is fine, only its name is not UTF-8.\n")
    finally:
        os.close(fd)


def test_non_utf8_file_name_is_named_escaped_and_skipped(cli, model_env, tmp_path):
    docs = write_tree(tmp_path / "docs", GOOD)
    try:
        _bad_name_file(docs)
    except (OSError, UnicodeError):
        pytest.skip("this file system does not accept file names that are not UTF-8")
    result = cli("ingest", docs, "--json")
    assert result.exit_code == 1, result.output
    assert "Internal error" not in result.output
    report = result.json()
    by_status = {f["file"]: f["status"] for f in report["files"]}
    assert by_status == {"a.md": "added", "b.md": "added", "bad-\\xff\\xfe.md": "failed"}
    failed = [f for f in report["files"] if f["status"] == "failed"][0]
    assert "not valid UTF-8" in failed["reason"]
    assert report["published"] is True
    # the index holds the good files and answers from them
    from ragcli.store import LocalIndex

    gen = LocalIndex(Path("ragcli-index")).load()
    assert sorted(gen.files) == ["a.md", "b.md"]
    assert [c.file for c, _ in gen.bm25_hits("nightly ingest job", 1)] == ["b.md"]
    gen.close()
    # the text output names it too, and the next run is the same (nothing half-indexed)
    again = cli("ingest", docs)
    assert again.exit_code == 1
    assert "bad-\\xff\\xfe.md" in again.stderr and "not valid UTF-8" in again.stderr
