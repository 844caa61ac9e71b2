"""An index of the first on-disk format (tests/data/format1, written by an earlier ragcli) is read as it
is, and the next ingest rewrites it in the current format without embedding anything again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

FIXTURE = Path(__file__).resolve().parent / "data" / "format1"
INDEX = Path("ragcli-index")


@pytest.fixture
def old_index(model_env, tmp_path, monkeypatch):
    shutil.copytree(FIXTURE / "index", INDEX)
    docs = tmp_path / "docs"
    shutil.copytree(FIXTURE / "docs", docs)
    monkeypatch.setenv("RAGCLI_SPLITTER", "sentence")  # what the fixture was built with
    return docs


def test_a_format_1_index_is_read_and_rewritten_by_the_next_ingest(cli, old_index):
    import faiss

    from ragcli.store import LocalIndex

    status = cli("status", "--json", "--verify")
    assert status.exit_code == 0, status.output
    idx = status.json()["index"]
    assert idx["ok"] and idx["generation"] == "gen-000001" and idx["files"] == 2 and idx["chunks"] == 2
    assert cli("index", "verify").exit_code == 0
    found = cli("query", "--context", "--json", "--mode", "bm25", "-k", "1", "Who owns the alpha service?")
    assert found.exit_code == 0, found.output
    assert found.json()["sources"][0]["file"] == "alpha.md" and found.json()["generation"] == "gen-000001"

    old = LocalIndex(INDEX).load()
    old_ids = sorted(c.id for c in old.chunks)
    old_vectors = dict(zip(*old.vectors(), strict=True))
    assert old.format == 1 and isinstance(old.faiss_index(), faiss.Index)

    result = cli("ingest", old_index, "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    assert report["summary"]["unchanged"] == 2 and report["texts_embedded"] == 0 and report["chunks_embedded"] == 0
    assert report["published"] and report["generation"] == "gen-000002"
    manifest = json.loads((INDEX / "gen-000002" / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["counts"]["chunks"] == 2

    new = LocalIndex(INDEX).load()
    assert new.format == 2 and sorted(c.id for c in new.iter_chunks()) == old_ids
    for relpath in new.files:
        for c, v in zip(new.file_chunks(relpath), new.file_vectors(relpath), strict=True):
            assert np.array_equal(v, old_vectors[c.id])  # carried over, not re-embedded

    # An unchanged ingest of the new format publishes nothing; rollback reaches the old format.
    again = cli("ingest", old_index, "--json").json()
    assert again["published"] is False and again["generation"] == "gen-000002"
    assert cli("index", "rollback").exit_code == 0
    back = cli("query", "--context", "--json", "--mode", "bm25", "-k", "1", "Who owns the alpha service?").json()
    assert back["generation"] == "gen-000001" and back["sources"][0]["file"] == "alpha.md"
