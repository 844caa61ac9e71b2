"""One contract, every target: the same ingest → re-ingest (unchanged, changed, removed) → query → bench
assertions run against the local FAISS index and against Databricks Vector Search (on the local emulator,
through the real clients): a Direct Access index, and a Delta Sync index over a Delta table (delta-rs). A new target joins by adding a fixture branch below; nothing else changes.

The embedder is the tiny random BERT of the session fixture, so dense assertions use the chunk's own text
as the question (its vector is the chunk's vector: cosine 1), and bm25 assertions use words only one
file holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import EMBED, EMBED_OTHER, write_tree

from ragcli.config import load_settings
from ragcli.errors import IndexModelMismatchError, IndexNotFoundError
from ragcli.ingest import ingest
from ragcli.models import load_embedder
from ragcli.retrieval import open_retriever
from ragcli.targets import open_target
from ragcli.types import text_key

TOKEN = "dapi-contract-4c1d"
EP = "contract-ep"
IDX = "main.contract.chunks"
WH, TABLE, VOLUME = "contractwh", "main.contract.chunk_rows", "main.contract.staging"

FILES = {
    "orchard.md": "# Orchard\n\nThe orchard table keeps deleted files for thirty days before vacuum removes them.\n\n"
                  "Readers of the orchard table see one snapshot per query.\n",
    "kiln.md": "# Kiln\n\nThe kiln schedule runs weekly on Thursday nights.\n\nGlazes are mixed by the potter.\n",
    "lantern/notes.md": "# Lantern\n\nLantern keeps its embeddings in a flat index with exact search.\n",
}


REMOTE = [pytest.mark.databricks, pytest.mark.slow]


@pytest.fixture(params=["local", pytest.param("databricks", marks=REMOTE), pytest.param("delta-sync", marks=REMOTE)])
def target_settings(request, model_env, monkeypatch, tmp_path):
    """Settings for one target, empty, with the sentence splitter (fast and deterministic)."""
    overrides = {"target": "local" if request.param == "local" else "databricks", "splitter": "sentence",
                 "index_dir": tmp_path / "index"}
    if request.param != "local":
        pytest.importorskip("databricks.ai_search")
        try:
            import dbx_emulator
            import dbx_workspace
        except ImportError:  # pragma: no cover
            from tests import dbx_emulator, dbx_workspace
        workspace = None
        if request.param == "delta-sync":
            pytest.importorskip("deltalake")
            workspace = dbx_workspace.Workspace(tmp_path / "ws", warehouses=[WH], volumes=[VOLUME])
            monkeypatch.setenv("RAGCLI_DATABRICKS_INDEX_KIND", "delta-sync")
            monkeypatch.setenv("RAGCLI_DATABRICKS_WAREHOUSE", WH)
            monkeypatch.setenv("RAGCLI_DATABRICKS_TABLE", TABLE)
            monkeypatch.setenv("RAGCLI_DATABRICKS_VOLUME", VOLUME)
        emu = dbx_emulator.Emulator(tokens={TOKEN}, endpoints=[EP], workspace=workspace)
        emu.__enter__()
        request.addfinalizer(lambda: emu.__exit__(None, None, None))
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setenv("DATABRICKS_HOST", emu.url)
        monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
        monkeypatch.setenv("RAGCLI_DATABRICKS_ENDPOINT", EP)
        monkeypatch.setenv("RAGCLI_DATABRICKS_INDEX", IDX)
        monkeypatch.setenv("RAGCLI_DATABRICKS_RETRIES", "2")
        monkeypatch.setenv("RAGCLI_DATABRICKS_BACKOFF", "0.01")
    return load_settings(overrides)


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_tree(tmp_path / "corpus", FILES)


def statuses(report) -> dict[str, str]:
    return {f.file: f.status for f in report.files}


def test_contract(target_settings, corpus, tmp_path):
    settings = target_settings
    target = open_target(settings)
    with pytest.raises(IndexNotFoundError):
        target.open()

    # -- first ingest ------------------------------------------------------------------------------
    first = ingest([corpus], settings)
    assert first.published and first.target == target.kind
    assert statuses(first) == {name: "added" for name in FILES}
    assert first.chunks_total >= len(FILES) and first.chunks_embedded == first.chunks_total
    state = open_target(settings).state()
    assert set(state.files) == set(FILES)
    assert state.embed["model"] == EMBED and state.embed["dim"] == 32
    assert sum(m["chunks"] for m in state.files.values()) == first.chunks_total
    assert sum(m["tokens"] for m in state.files.values()) == first.tokens > 0
    version = open_target(settings).version()
    assert version is not None

    # reusable vectors: what the target gives back for a text is what the model embeds for it
    reader = open_target(settings)
    reader.state()
    rows = list(reader.open() and reader.chunks())
    assert len(rows) == first.chunks_total and {c.file for c in rows} == set(FILES)
    held = reader.reusable_vectors([text_key(c.text) for c in rows] + [text_key("a text no file holds")])
    embedder = load_embedder(settings)
    assert set(held) == {text_key(c.text) for c in rows}
    expected = embedder.embed_documents([c.text for c in rows])
    assert np.allclose(np.stack([held[text_key(c.text)] for c in rows]), expected, atol=1e-5)

    # -- query -------------------------------------------------------------------------------------
    retriever = open_retriever(settings, mode="dense")
    assert retriever.info.chunks == first.chunks_total and set(retriever.info.files) == set(FILES)
    probe = next(c for c in rows if "thirty days" in c.text)
    hits = retriever.search(probe.text, 3, "dense")
    assert hits[0].chunk_id == probe.id and hits[0].file == "orchard.md"
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)  # cosine of a vector with itself
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
    assert retriever.search("kiln schedule Thursday glazes potter", 3, "bm25")[0].file == "kiln.md"
    hybrid = retriever.search("kiln schedule Thursday glazes potter", 3, "hybrid")
    assert hybrid and {h.file for h in hybrid} <= set(FILES) and hybrid[0].rank == 1
    assert {h.file for h in hybrid} & {"kiln.md"}

    described = open_target(settings).describe()
    assert described["target"] == target.kind and described["chunks"] == first.chunks_total
    assert described["files"] == len(FILES) and described["embed"]["model"] == EMBED

    # -- re-ingest, unchanged: nothing read, embedded or written ---------------------------------------
    before = embedder.texts_embedded
    again = ingest([corpus], settings, embedder=embedder)
    assert not again.published and set(statuses(again).values()) == {"unchanged"}
    assert embedder.texts_embedded == before and again.texts_embedded == 0
    assert open_target(settings).version() == version

    # -- one file changed: only its new chunks are embedded ---------------------------------------------
    (corpus / "kiln.md").write_text(FILES["kiln.md"] + "\nThe kiln cools for a full day before unloading.\n",
                                    encoding="utf-8")
    changed = ingest([corpus], settings, embedder=embedder)
    assert changed.published and statuses(changed) == {"orchard.md": "unchanged", "kiln.md": "changed",
                                                       "lantern/notes.md": "unchanged"}
    kiln_chunks = open_target(settings).state().files["kiln.md"]["chunks"]
    assert 0 < changed.chunks_embedded <= kiln_chunks
    assert open_target(settings).version() != version
    found = open_retriever(settings, mode="bm25").search("cools full day unloading", 2, "bm25")
    assert found[0].file == "kiln.md" and "cools" in found[0].text

    # -- one file removed: its chunks leave the target ------------------------------------------------
    (corpus / "orchard.md").unlink()
    removed = ingest([corpus], settings, embedder=embedder)
    assert statuses(removed)["orchard.md"] == "removed" and removed.chunks_embedded == 0
    state = open_target(settings).state()
    assert set(state.files) == {"kiln.md", "lantern/notes.md"}
    retriever = open_retriever(settings, mode="dense")
    assert all(h.file != "orchard.md" for h in retriever.search(probe.text, 10, "dense"))
    assert all(h.file != "orchard.md" for h in retriever.search("orchard vacuum snapshot", 10, "bm25"))

    # -- another embedding model is refused, and nothing changes ----------------------------------------
    version = open_target(settings).version()
    with pytest.raises(IndexModelMismatchError, match="--rebuild"):
        ingest([corpus], settings.replace(embed_model=EMBED_OTHER))
    with pytest.raises(IndexModelMismatchError):
        open_retriever(settings.replace(embed_model=EMBED_OTHER), mode="dense")
    assert open_target(settings).version() == version

    # -- bench reads the target the same way ------------------------------------------------------------
    import json

    from ragcli.bench import bench

    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"id": "q1", "question": "When does the kiln schedule run?", "answers": ["weekly"],
                              "sources": ["kiln.md"]}) + "\n", encoding="utf-8")
    report = bench(settings, qa_path=qa, modes=("dense", "bm25"), answers=False, startup=False, pairs=1)
    assert report["target"] == target.kind and report["index"]["chunks"] == removed.chunks_total
    assert report["metrics"]["bm25.hit_rate"] == 1.0
    assert 0.0 <= report["metrics"]["dense.mrr"] <= 1.0
