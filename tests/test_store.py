"""The local index on disk: corruption is reported (never answered from), verify and rollback repair it,
status describes it, explicit dimension checks survive `python -O`, and the HNSW option works.

Corruption cases follow failure-modes.md §1.2 and rows Q1-Q3 of §5: every case must give exit 1, one
line naming the damaged file and "corrupted", no traceback; `ragcli index verify` must fail naming the
file; `ragcli index rollback` must bring back a generation that answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EMBED, GEN, write_tree

pytestmark = pytest.mark.slow

QUESTION = "Which index stores the vectors?"

DOCS = {
    "alpha.md": (
        "# Alpha\n\nThe alpha team stores every vector in a flat FAISS index on the laptop. "
        "Exact search keeps recall perfect for small corpora.\n\n"
        "## Rebuilds\n\nA rebuild starts from scratch when the embedding model changes. "
        "The old generation stays on disk for rollback.\n"
    ),
    "beta.md": (
        "# Beta\n\nBeta documents describe the nightly ingest job and its retention rules. "
        "Tables keep thirty days of versions.\n\n"
        "## Alerts\n\nWhen the job fails, the on-call engineer receives a page within five minutes.\n"
    ),
    "guides/gamma.md": (
        "# Gamma\n\nGamma explains hybrid retrieval: keyword scores and dense scores are fused by rank. "
        "Reciprocal rank fusion needs no tuning.\n"
    ),
}


def write_docs(root: Path, docs: dict[str, str] = DOCS) -> Path:
    return write_tree(root, docs)


@pytest.fixture(scope="module")
def base_index(models_dir, tmp_path_factory) -> Path:
    """An index with two generations (gen-000001, then gen-000002 after an edit), built once per module.
    Tests work on a copy."""
    from ragcli.config import load_settings
    from ragcli.ingest import ingest

    root = tmp_path_factory.mktemp("store-base")
    docs = write_docs(root / "docs")
    settings = load_settings({"index_dir": root / "index", "models_dir": models_dir, "embed_model": EMBED,
                              "gen_model": GEN, "max_chunk_tokens": 32}, env={})
    first = ingest([docs], settings)
    (docs / "beta.md").write_text(DOCS["beta.md"] + "\n## Owners\n\nThe data platform team owns the job.\n",
                                  encoding="utf-8")
    second = ingest([docs], settings)
    assert (first.generation, second.generation) == ("gen-000001", "gen-000002")
    return root / "index"


@pytest.fixture
def index(base_index, tmp_path, model_env) -> Path:
    dest = tmp_path / "index"
    shutil.copytree(base_index, dest)
    return dest


def gen_dir(index: Path, name: str = "gen-000002") -> Path:
    return index / name


def ask(cli, index: Path):
    return cli("query", "--context", "--json", "-k", "2", "--max-new-tokens", "4", "--index-dir", index, QUESTION)


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


# -- a healthy index ---------------------------------------------------------------------------------
def test_status_json_describes_the_index(cli, index):
    from ragcli.store import LocalIndex

    result = cli("status", "--json", "--verify", "--index-dir", index)
    assert result.exit_code == 0, result.output
    idx = result.json()["index"]
    gen = LocalIndex(index).load()
    assert idx["ok"] is True and idx["verified"] is True
    assert idx["generation"] == "gen-000002" and idx["generations"] == ["gen-000001", "gen-000002"]
    assert idx["files"] == 3 == len(gen.files)
    assert idx["chunks"] == len(gen.chunks) > 3
    assert idx["embed_model"] == EMBED and idx["dimension"] == 32 and idx["index_type"] == "flat"
    on_disk = sum(p.stat().st_size for p in gen_dir(index).rglob("*") if p.is_file())
    assert idx["size_bytes"] == on_disk
    assert idx["last_ingest"] == gen.manifest["created_at"] and idx["last_ingest"][:2] == "20"
    assert idx["splitter"]["max_chunk_tokens"] == 32


def test_manifest_records_what_load_checks(index):
    manifest = json.loads((gen_dir(index) / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["generation"] == "gen-000002"
    assert manifest["embed"]["model"] == EMBED and manifest["embed"]["dim"] == 32
    assert manifest["counts"]["chunks"] == manifest["counts"]["faiss_ntotal"]
    assert {"vectors.faiss", "chunks.jsonl", "files.json"} <= set(manifest["checksums"])
    assert any(name.startswith("bm25/") for name in manifest["checksums"])
    for rel, meta in manifest["checksums"].items():
        assert (gen_dir(index) / rel).stat().st_size == meta["bytes"]
    assert (index / "CURRENT").read_text() == "gen-000002\n"


def test_verify_passes_on_a_healthy_index(cli, index):
    result = cli("index", "verify", "--json", "--index-dir", index)
    assert result.exit_code == 0, result.output
    rows = result.json()["generations"]
    assert [(r["generation"], r["current"], r["ok"]) for r in rows] == [
        ("gen-000001", False, True), ("gen-000002", True, True)]


# -- corruption ----------------------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _append(path: Path) -> None:
    with open(path, "ab") as fh:
        fh.write(b"\0trailing bytes")


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def _rewrite_with_one_vector_less(gen: Path) -> None:
    """A FAISS file with one vector fewer than the chunk table, with matching checksums in the manifest
    (what a writer that replaced the vectors but not the table would leave)."""
    import faiss

    from ragcli.types import sha256_file

    index = faiss.read_index(str(gen / "vectors.faiss"))
    last = faiss.vector_to_array(index.id_map)[-1]
    index.remove_ids(faiss.IDSelectorBatch(1, faiss.swig_ptr(__import__("numpy").array([last], dtype="int64"))))
    faiss.write_index(index, str(gen / "vectors.faiss"))
    manifest = json.loads((gen / "manifest.json").read_text())
    manifest["checksums"]["vectors.faiss"] = {"bytes": (gen / "vectors.faiss").stat().st_size,
                                              "sha256": sha256_file(gen / "vectors.faiss")}
    (gen / "manifest.json").write_text(json.dumps(manifest))


def _drop_vector_checksum_and_flip(gen: Path) -> None:
    manifest = json.loads((gen / "manifest.json").read_text())
    del manifest["checksums"]["vectors.faiss"]
    (gen / "manifest.json").write_text(json.dumps(manifest))
    _flip(gen / "vectors.faiss")


def _bm25_file(gen: Path) -> Path:
    return sorted(p for p in (gen / "bm25").iterdir() if p.is_file())[0]


CORRUPTIONS = {
    # id: (damage(gen-000002 folder), text the error must name, generation rollback returns to)
    "vectors-truncated": (lambda g: _truncate(g / "vectors.faiss"), "vectors.faiss", "gen-000001"),
    "vectors-appended": (lambda g: _append(g / "vectors.faiss"), "vectors.faiss", "gen-000001"),
    "vectors-byte-flipped": (lambda g: _flip(g / "vectors.faiss"), "vectors.faiss", "gen-000001"),
    "vectors-lfs-pointer": (lambda g: (g / "vectors.faiss").write_bytes(LFS_POINTER), "vectors.faiss", "gen-000001"),
    "vectors-empty": (lambda g: (g / "vectors.faiss").write_bytes(b""), "vectors.faiss", "gen-000001"),
    "vectors-missing": (lambda g: (g / "vectors.faiss").unlink(), "vectors.faiss", "gen-000001"),
    "vectors-fewer-than-chunks": (_rewrite_with_one_vector_less, "vectors.faiss", "gen-000001"),
    "chunks-empty": (lambda g: (g / "chunks.jsonl").write_bytes(b""), "chunks.jsonl", "gen-000001"),
    "files-truncated": (lambda g: _truncate(g / "files.json"), "files.json", "gen-000001"),
    "bm25-byte-flipped": (lambda g: _flip(_bm25_file(g)), "bm25", "gen-000001"),
    "manifest-missing": (lambda g: (g / "manifest.json").unlink(), "manifest.json", "gen-000001"),
    "manifest-garbage": (lambda g: (g / "manifest.json").write_bytes(os.urandom(300)), "manifest.json", "gen-000001"),
    "manifest-wrong-shape": (lambda g: (g / "manifest.json").write_text('{"format_version": 1, "checksums": [1, 2]}'),
                             "manifest.json", "gen-000001"),
    "manifest-without-vector-checksum": (_drop_vector_checksum_and_flip, "manifest.json", "gen-000001"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_is_reported_and_rolled_back(cli, index, case):
    damage, names, back_to = CORRUPTIONS[case]
    damage(gen_dir(index))

    result = ask(cli, index)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stdout == ""
    line = one_line(result.stderr)
    assert "corrupted" in line.lower() and names in line, line
    assert "rollback" in line

    verify = cli("index", "verify", "--index-dir", index)
    assert verify.exit_code == 1, verify.output
    assert names in verify.output and "CORRUPTED" in verify.stdout
    assert "gen-000001: ok" in verify.stdout  # the older generation is reported whole

    status = cli("status", "--verify", "--json", "--index-dir", index)
    assert status.exit_code == 1 and status.json()["index"]["ok"] is False
    assert names in status.json()["index"]["error"]

    rollback = cli("index", "rollback", "--index-dir", index)
    assert rollback.exit_code == 0, rollback.output
    assert f"rolled back to {back_to}" in rollback.stdout
    assert (index / "CURRENT").read_text().strip() == back_to
    answered = ask(cli, index)
    assert answered.exit_code == 0, answered.output
    data = answered.json()
    assert data["generation"] == back_to and len(data["sources"]) == 2
    assert cli("index", "verify", "--index-dir", index).exit_code == 0


def test_current_naming_a_missing_generation(cli, index):
    (index / "CURRENT").write_text("gen-000009\n")
    result = ask(cli, index)
    assert result.exit_code == 1 and "Traceback" not in result.output
    line = one_line(result.stderr)
    assert "corrupted" in line.lower() and "CURRENT" in line and "gen-000009" in line
    verify = cli("index", "verify", "--index-dir", index)
    assert verify.exit_code == 1 and "CURRENT" in verify.stderr
    rollback = cli("index", "rollback", "--index-dir", index)
    assert rollback.exit_code == 0, rollback.output
    assert (index / "CURRENT").read_text().strip() == "gen-000002"  # the newest whole generation
    assert ask(cli, index).json()["generation"] == "gen-000002"


def test_current_holding_garbage_can_be_rebuilt_or_rolled_back(cli, index, tmp_path):
    (index / "CURRENT").write_text("not a generation\n")
    result = ask(cli, index)
    assert result.exit_code == 1 and "CURRENT" in one_line(result.stderr)
    rollback = cli("index", "rollback", "--index-dir", index)
    assert rollback.exit_code == 0, rollback.output
    assert (index / "CURRENT").read_text().strip() == "gen-000002"
    assert ask(cli, index).exit_code == 0

    # The fix the error message suggests must work too.
    (index / "CURRENT").write_text("garbage")
    docs = write_docs(tmp_path / "docs")
    rebuilt = cli("ingest", docs, "--rebuild", "--json", "--index-dir", index)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.json()["generation"] == "gen-000003"
    assert ask(cli, index).json()["generation"] == "gen-000003"


def test_ingest_over_a_corrupted_index_names_rollback_and_changes_nothing(cli, index, tmp_path):
    _flip(gen_dir(index) / "vectors.faiss")
    docs = write_docs(tmp_path / "docs")
    result = cli("ingest", docs, "--index-dir", index)
    assert result.exit_code == 1
    assert "vectors.faiss" in result.stderr and "rollback" in result.stderr and "Traceback" not in result.output
    assert (index / "CURRENT").read_text() == "gen-000002\n"
    assert sorted(p.name for p in index.iterdir()) == ["CURRENT", "LOCK", "gen-000001", "gen-000002"]


def test_rollback_refuses_a_corrupted_older_generation(cli, index):
    _flip(gen_dir(index, "gen-000001") / "chunks.jsonl")
    verify = cli("index", "verify", "--index-dir", index)
    assert verify.exit_code == 0  # the published generation is whole
    assert "gen-000001: CORRUPTED" in verify.stdout and "chunks.jsonl" in verify.stdout
    rollback = cli("index", "rollback", "--index-dir", index)
    assert rollback.exit_code == 1 and "chunks.jsonl" in rollback.stderr
    assert (index / "CURRENT").read_text() == "gen-000002\n"
    assert ask(cli, index).json()["generation"] == "gen-000002"


def test_rollback_without_an_older_generation(cli, index):
    assert cli("index", "rollback", "--index-dir", index).exit_code == 0
    again = cli("index", "rollback", "--index-dir", index)
    assert again.exit_code == 1 and "No generation before gen-000001" in again.stderr


def test_reader_retries_when_a_writer_pruned_its_generation(index, monkeypatch):
    """A reader that read CURRENT just before a writer published twice (and pruned that generation) must
    load the new one, not report corruption."""
    from ragcli.store import LocalIndex

    shutil.rmtree(gen_dir(index, "gen-000001"))
    store = LocalIndex(index)
    real = LocalIndex.current_name
    answers = iter(["gen-000001"])
    monkeypatch.setattr(LocalIndex, "current_name", lambda self: next(answers, None) or real(self))
    assert store.load().name == "gen-000002"


# -- explicit checks, also under python -O -----------------------------------------------------------
def test_dimension_mismatch_raises_under_python_O(index):
    script = (
        "import sys, numpy as np\n"
        "from ragcli.store import LocalIndex\n"
        "from ragcli.errors import RagcliError\n"
        "print('debug', __debug__)\n"
        "gen = LocalIndex(sys.argv[1]).load()\n"
        "for d in (16, 64, 32):\n"
        "    try:\n"
        "        hits = gen.search(np.ones(d, dtype=np.float32), 3)\n"
        "        print('hits', d, len(hits))\n"
        "    except RagcliError as exc:\n"
        "        print('error', d, exc)\n"
    )
    out = subprocess.run([sys.executable, "-O", "-c", script, str(index)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "debug False"
    assert lines[1].startswith("error 16 ") and "dimension 16" in lines[1] and "32" in lines[1]
    assert lines[2].startswith("error 64 ") and "dimension 64" in lines[2]
    assert lines[3] == "hits 32 3"


# -- the approximate index type --------------------------------------------------------------------------
def test_hnsw_index_builds_answers_and_stays_hnsw(cli, model_env, tmp_path):
    import faiss

    from ragcli.store import LocalIndex

    docs = write_docs(tmp_path / "docs")
    first = cli("ingest", docs, "--index-type", "hnsw", "--json")
    assert first.exit_code == 0, first.output
    store = LocalIndex(Path("ragcli-index"))
    gen = store.load()
    assert gen.manifest["faiss_index_type"] == "hnsw"
    inner = faiss.downcast_index(gen.faiss_index().index)
    assert isinstance(inner, faiss.IndexHNSWFlat) and gen.faiss_index().ntotal == len(gen.chunks)

    result = cli("query", "--context", "--json", "-k", "3", "--max-new-tokens", "4", QUESTION)
    assert result.exit_code == 0, result.output
    sources = result.json()["sources"]
    assert len(sources) == 3 and all(s["chunk_id"] in gen.by_id for s in sources)
    ids, vectors = gen.vectors()  # what the next ingest reuses
    assert sorted(ids) == sorted(gen.by_id) and vectors.shape == (len(gen.chunks), 32)

    before = {c.id for c in gen.chunks if c.file != "alpha.md"}
    (docs / "alpha.md").write_text(DOCS["alpha.md"] + "\nA new paragraph about graph indexes.\n", encoding="utf-8")
    again = cli("ingest", docs, "--json", "--index-type", "hnsw")
    assert again.exit_code == 0, again.output
    assert again.json()["summary"]["changed"] == 1 and again.json()["published"] is True
    gen = store.load()
    assert gen.manifest["faiss_index_type"] == "hnsw"
    assert isinstance(faiss.downcast_index(gen.faiss_index().index), faiss.IndexHNSWFlat)
    assert gen.faiss_index().ntotal == len(gen.chunks)
    assert before <= set(gen.by_id)  # the other files' chunks were carried over
    result = cli("query", "--context", "--json", "-k", "3", "--max-new-tokens", "4", QUESTION)
    assert result.exit_code == 0 and result.json()["generation"] == "gen-000002"


def test_index_type_can_change_without_reembedding(cli, model_env, tmp_path):
    import faiss

    from ragcli.store import LocalIndex

    docs = write_docs(tmp_path / "docs")
    assert cli("ingest", docs).exit_code == 0
    store = LocalIndex(Path("ragcli-index"))
    flat = store.load()
    assert flat.manifest["faiss_index_type"] == "flat"
    for kind, cls in (("hnsw", faiss.IndexHNSWFlat), ("flat", faiss.IndexFlatIP)):
        report = cli("ingest", docs, "--index-type", kind, "--json").json()
        assert report["published"] is True and report["chunks_embedded"] == 0 and report["texts_embedded"] == 0
        gen = store.load()
        assert gen.manifest["faiss_index_type"] == kind
        assert isinstance(faiss.downcast_index(gen.faiss_index().index), cls)
        ids, vectors = gen.vectors()
        old_ids, old_vectors = flat.vectors()
        assert ids == old_ids and (vectors == old_vectors).all()
    assert store.generations() == ["gen-000002", "gen-000003"]


def test_hnsw_is_kept_when_reingesting_without_the_flag(cli, model_env, tmp_path):
    from ragcli.store import LocalIndex

    docs = write_docs(tmp_path / "docs")
    assert cli("ingest", docs, "--index-type", "hnsw").exit_code == 0
    (docs / "beta.md").write_text(DOCS["beta.md"] + "\nEdited.\n", encoding="utf-8")
    assert cli("ingest", docs).exit_code == 0
    assert LocalIndex(Path("ragcli-index")).load().manifest["faiss_index_type"] == "hnsw"
