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


def build_two_generations(root: Path, models_dir: Path) -> Path:
    """gen-000001 over DOCS, then gen-000002 after an edit of beta.md, which shares gen-000001's segment
    and adds one. Returns the index folder (the documents are in root/docs)."""
    from ragcli.config import load_settings
    from ragcli.ingest import ingest

    docs = write_docs(root / "docs")
    settings = load_settings({"index_dir": root / "index", "models_dir": models_dir, "embed_model": EMBED,
                              "gen_model": GEN, "max_chunk_tokens": 32}, env={})
    first = ingest([docs], settings)
    (docs / "beta.md").write_text(DOCS["beta.md"] + "\n## Owners\n\nThe data platform team owns the job.\n",
                                  encoding="utf-8")
    import ragcli.segmented

    threshold = ragcli.segmented.DEAD_FRACTION
    ragcli.segmented.DEAD_FRACTION = 0.9  # beta is a third of this tiny corpus: keep its segment shared
    try:
        second = ingest([docs], settings)
    finally:
        ragcli.segmented.DEAD_FRACTION = threshold
    assert (first.generation, second.generation) == ("gen-000001", "gen-000002")
    return root / "index"


@pytest.fixture(scope="module")
def base_index(models_dir, tmp_path_factory) -> Path:
    """The two-generation index, built once per module. Tests work on a copy (`index`)."""
    return build_two_generations(tmp_path_factory.mktemp("store-base"), models_dir)


@pytest.fixture
def own_index(models_dir, tmp_path, model_env, monkeypatch) -> Path:
    """The two-generation index built in this test's folder, for tests that edit its documents
    (tmp_path/docs) and ingest again (with the same splitter settings)."""
    monkeypatch.setenv("RAGCLI_MAX_CHUNK_TOKENS", "32")
    return build_two_generations(tmp_path, models_dir)


@pytest.fixture
def index(base_index, tmp_path, model_env) -> Path:
    dest = tmp_path / "index"
    shutil.copytree(base_index, dest)
    return dest


def gen_dir(index: Path, name: str = "gen-000002") -> Path:
    return index / name


def ask(cli, index: Path, question: str | None = None):
    mode = ["--mode", "bm25"] if question else []
    return cli("query", "--context", "--json", "-k", "2", "--max-new-tokens", "4", "--index-dir", index, *mode,
               question or QUESTION)


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
    listed = [index / "segments" / r["name"] for r in gen.manifest["segments"]]
    on_disk = sum(p.stat().st_size for folder in (gen_dir(index), *listed) for p in folder.rglob("*") if p.is_file())
    assert idx["size_bytes"] == on_disk  # the generation's own files and the segments it lists
    assert idx["last_ingest"] == gen.manifest["created_at"] and idx["last_ingest"][:2] == "20"
    assert idx["splitter"]["max_chunk_tokens"] == 32


def test_manifest_records_what_load_checks(index):
    manifest = json.loads((gen_dir(index) / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["generation"] == "gen-000002"
    assert manifest["embed"]["model"] == EMBED and manifest["embed"]["dim"] == 32
    assert {"files.json", "dead.json"} == set(manifest["checksums"])
    for rel, meta in manifest["checksums"].items():
        assert (gen_dir(index) / rel).stat().st_size == meta["bytes"]
    # gen-000002 shares the first ingest's segment (beta's old rows dead in it) and adds one for beta.
    first = json.loads((gen_dir(index, "gen-000001") / "manifest.json").read_text())
    assert [r["name"] for r in first["segments"]] == [manifest["segments"][0]["name"]]
    assert len(manifest["segments"]) == 2 and manifest["counts"]["dead_rows"] > 0
    assert manifest["counts"]["rows"] == manifest["counts"]["chunks"] + manifest["counts"]["dead_rows"]
    for rec in manifest["segments"]:
        segment = json.loads((index / "segments" / rec["name"] / "segment.json").read_text())
        assert segment["rows"] == rec["rows"] and {"vectors.f32", "chunks.sqlite", "postings.u32"} <= set(segment["files"])
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


def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(bytes(data))


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
               b"oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
OWNERS = "Who owns the nightly job on the data platform?"  # bm25: the words only beta's new chunk holds


def own_segment(index: Path) -> Path:
    """The segment only gen-000002 lists (beta's new chunks)."""
    first = {r["name"] for r in json.loads((gen_dir(index, "gen-000001") / "manifest.json").read_text())["segments"]}
    second = [r["name"] for r in json.loads((gen_dir(index) / "manifest.json").read_text())["segments"]]
    (name,) = [n for n in second if n not in first]
    return index / "segments" / name


def shared_segment(index: Path) -> Path:
    first = json.loads((gen_dir(index, "gen-000001") / "manifest.json").read_text())["segments"]
    return index / "segments" / first[0]["name"]


def _flip_in_row_text(segment: Path, needle: bytes) -> None:
    path = segment / "chunks.sqlite"
    _flip(path, path.read_bytes().index(needle) + 2)


def _flip_postings_of(segment: Path, term: str) -> None:
    import sqlite3

    db = sqlite3.connect(segment / "chunks.sqlite")
    (start,) = db.execute("SELECT start FROM terms WHERE term = ?", (term,)).fetchone()
    db.close()
    _flip(segment / "postings.u32", start * 4)


def _drop_files_checksum(g: Path) -> None:
    manifest = json.loads((g / "manifest.json").read_text())
    del manifest["checksums"]["files.json"]
    (g / "manifest.json").write_text(json.dumps(manifest))


CORRUPTIONS = {
    # id: (damage(index), text the error must name, question; bm25 for what only a keyword search reads)
    "vectors-truncated": (lambda i: _truncate(own_segment(i) / "vectors.f32"), "vectors.f32", None),
    "vectors-appended": (lambda i: _append(own_segment(i) / "vectors.f32"), "vectors.f32", None),
    "vectors-byte-flipped": (lambda i: _flip(own_segment(i) / "vectors.f32"), "vectors.f32", None),
    "vectors-lfs-pointer": (lambda i: (own_segment(i) / "vectors.f32").write_bytes(LFS_POINTER), "vectors.f32", None),
    "vectors-empty": (lambda i: (own_segment(i) / "vectors.f32").write_bytes(b""), "vectors.f32", None),
    "vectors-missing": (lambda i: (own_segment(i) / "vectors.f32").unlink(), "vectors.f32", None),
    "chunks-header-garbage": (lambda i: _flip(own_segment(i) / "chunks.sqlite", 3), "chunks.sqlite", None),
    "chunk-row-flipped": (lambda i: _flip_in_row_text(own_segment(i), b"data platform team"), "chunks.sqlite", OWNERS),
    "postings-flipped": (lambda i: _flip_postings_of(own_segment(i), "platform"), "postings.u32", OWNERS),
    "doclen-truncated": (lambda i: _truncate(own_segment(i) / "doclen.u32"), "doclen.u32", None),
    "segment-record-garbage": (lambda i: (own_segment(i) / "segment.json").write_bytes(os.urandom(200)),
                               "segment.json", None),
    "segment-missing": (lambda i: shutil.rmtree(own_segment(i)), "segment.json", None),
    "files-truncated": (lambda i: _truncate(gen_dir(i) / "files.json"), "files.json", None),
    "dead-rows-flipped": (lambda i: _flip(gen_dir(i) / "dead.json"), "dead.json", None),
    "manifest-missing": (lambda i: (gen_dir(i) / "manifest.json").unlink(), "manifest.json", None),
    "manifest-garbage": (lambda i: (gen_dir(i) / "manifest.json").write_bytes(os.urandom(300)), "manifest.json", None),
    "manifest-wrong-shape": (lambda i: (gen_dir(i) / "manifest.json").write_text('{"format_version": 2, "segments": 3}'),
                             "manifest.json", None),
    "manifest-without-files-checksum": (lambda i: _drop_files_checksum(gen_dir(i)), "manifest.json", None),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corruption_is_reported_and_rolled_back(cli, index, case):
    damage, names, question = CORRUPTIONS[case]
    damage(index)

    result = ask(cli, index, question)
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
    assert "rolled back to gen-000001" in rollback.stdout
    assert (index / "CURRENT").read_text().strip() == "gen-000001"
    answered = ask(cli, index)
    assert answered.exit_code == 0, answered.output
    data = answered.json()
    assert data["generation"] == "gen-000001" and len(data["sources"]) == 2
    assert cli("index", "verify", "--index-dir", index).exit_code == 0


def test_damage_that_no_search_reads_is_found_by_verify(cli, index):
    _flip(own_segment(index) / "keys.u64")  # read by the next ingest (vectors of unchanged texts), not by queries
    assert ask(cli, index).exit_code == 0  # nothing answered from the damaged file
    verify = cli("index", "verify", "--index-dir", index)
    assert verify.exit_code == 1 and "keys.u64" in verify.stdout and "gen-000002 (current): CORRUPTED" in verify.stdout


def test_a_damaged_segment_shared_by_both_generations(cli, index, tmp_path):
    _flip(shared_segment(index) / "vectors.f32")
    assert "vectors.f32" in one_line(ask(cli, index).stderr)
    verify = cli("index", "verify", "--index-dir", index)
    assert verify.exit_code == 1
    assert "gen-000001: CORRUPTED" in verify.stdout and "gen-000002 (current): CORRUPTED" in verify.stdout
    rollback = cli("index", "rollback", "--index-dir", index)
    assert rollback.exit_code == 1 and "vectors.f32" in rollback.stderr  # the older one needs it too
    rebuilt = cli("ingest", write_docs(tmp_path / "docs"), "--rebuild", "--json", "--index-dir", index)
    assert rebuilt.exit_code == 0, rebuilt.output
    assert ask(cli, index).json()["generation"] == rebuilt.json()["generation"]


def test_rollback_keeps_the_segments_the_older_generation_shares(cli, index):
    own, shared = own_segment(index), shared_segment(index)
    assert cli("index", "rollback", "--index-dir", index).exit_code == 0
    assert not own.exists() and shared.is_dir()  # only the rolled-back generation used `own`
    assert sorted(p.name for p in (index / "segments").iterdir()) == [shared.name]
    assert ask(cli, index).json()["generation"] == "gen-000001"
    assert cli("index", "verify", "--index-dir", index).exit_code == 0


def test_ingest_over_a_corrupted_index_names_rollback_and_changes_nothing(cli, index, tmp_path):
    (gen_dir(index) / "files.json").write_text("{}")
    before = sorted(str(p.relative_to(index)) for p in index.rglob("*"))
    docs = write_docs(tmp_path / "docs")
    result = cli("ingest", docs, "--index-dir", index)
    assert result.exit_code == 1
    assert "files.json" in result.stderr and "rollback" in result.stderr and "Traceback" not in result.output
    assert (index / "CURRENT").read_text() == "gen-000002\n"
    assert sorted(str(p.relative_to(index)) for p in index.rglob("*")) == before


def test_rollback_refuses_a_corrupted_older_generation(cli, index):
    _truncate(gen_dir(index, "gen-000001") / "files.json")
    verify = cli("index", "verify", "--index-dir", index)
    assert "gen-000001: CORRUPTED" in verify.stdout and "files.json" in verify.stdout
    rollback = cli("index", "rollback", "--index-dir", index)
    assert rollback.exit_code == 1 and "files.json" in rollback.stderr
    assert (index / "CURRENT").read_text() == "gen-000002\n"
    assert ask(cli, index).json()["generation"] == "gen-000002"


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
@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_builds_answers_and_keeps_its_type(cli, model_env, tmp_path, kind):
    import faiss

    from ragcli.store import LocalIndex

    docs = write_docs(tmp_path / "docs")
    first = cli("ingest", docs, "--index-type", kind, "--json")
    assert first.exit_code == 0, first.output
    store = LocalIndex(Path("ragcli-index"))
    gen = store.load()
    expected = faiss.IndexHNSWFlat if kind == "hnsw" else faiss.IndexIVFFlat
    assert gen.index_type == kind and all(isinstance(faiss.downcast_index(s.ann()), expected) for s in gen.segments)

    result = cli("query", "--context", "--json", "-k", "3", "--max-new-tokens", "4", QUESTION)
    assert result.exit_code == 0, result.output
    sources = result.json()["sources"]
    assert len(sources) == 3 and all(s["chunk_id"] in gen.by_id for s in sources)

    before = {c.id for c in gen.chunks if c.file != "alpha.md"}
    (docs / "alpha.md").write_text(DOCS["alpha.md"] + "\nA new paragraph about graph indexes.\n", encoding="utf-8")
    again = cli("ingest", docs, "--json")
    assert again.exit_code == 0, again.output
    assert again.json()["summary"]["changed"] == 1 and again.json()["published"] is True
    gen = store.load()
    assert gen.index_type == kind and all(isinstance(faiss.downcast_index(s.ann()), expected) for s in gen.segments)
    assert before <= set(gen.by_id)  # the other files' chunks were carried over
    result = cli("query", "--context", "--json", "-k", "3", "--max-new-tokens", "4", QUESTION)
    assert result.exit_code == 0 and result.json()["generation"] == "gen-000002"
    assert all(s["file"] in {"alpha.md", "beta.md", "guides/gamma.md"} for s in result.json()["sources"])


def test_index_type_can_change_without_reembedding(cli, model_env, tmp_path):
    from ragcli.store import LocalIndex

    docs = write_docs(tmp_path / "docs")
    assert cli("ingest", docs).exit_code == 0
    store = LocalIndex(Path("ragcli-index"))
    flat = store.load()
    assert flat.index_type == "flat"
    old_ids, old_vectors = flat.vectors()
    for kind in ("hnsw", "flat"):
        report = cli("ingest", docs, "--index-type", kind, "--json").json()
        assert report["published"] is True and report["chunks_embedded"] == 0 and report["texts_embedded"] == 0
        gen = store.load()
        assert gen.index_type == kind
        ids, vectors = gen.vectors()
        assert ids == old_ids and (vectors == old_vectors).all()
    assert store.generations() == ["gen-000002", "gen-000003"]


def test_hnsw_is_kept_when_reingesting_without_the_flag(cli, model_env, tmp_path):
    from ragcli.store import LocalIndex

    docs = write_docs(tmp_path / "docs")
    assert cli("ingest", docs, "--index-type", "hnsw").exit_code == 0
    (docs / "beta.md").write_text(DOCS["beta.md"] + "\nEdited.\n", encoding="utf-8")
    assert cli("ingest", docs).exit_code == 0
    assert LocalIndex(Path("ragcli-index")).load().index_type == "hnsw"


# -- segments: compaction, dead rows, re-added chunks --------------------------------------------------------
def _manifest(index: Path, name: str | None = None) -> dict:
    name = name or (index / "CURRENT").read_text().strip()
    return json.loads((index / name / "manifest.json").read_text())


def _sources(result) -> list[tuple[int, str, float]]:
    return [(s["chunk_id"], s["file"], s["score"]) for s in result.json()["sources"]]


def test_compact_rewrites_live_rows_and_answers_the_same(cli, index):
    from ragcli.store import LocalIndex

    before = LocalIndex(index).load()
    answer = ask(cli, index)
    assert _manifest(index)["counts"]["dead_rows"] > 0
    result = cli("index", "compact", "--json", "--index-dir", index)
    assert result.exit_code == 0, result.output
    assert result.json()["generation"] == "gen-000003" and result.json()["dead_rows"] == 0
    after = LocalIndex(index).load()
    assert {c.id: c.text for c in after.chunks} == {c.id: c.text for c in before.chunks}
    old_ids, old_vectors = before.vectors()
    new_ids, new_vectors = after.vectors()
    assert old_ids == new_ids and (old_vectors == new_vectors).all()
    assert not {r["name"] for r in _manifest(index)["segments"]} & {r["name"] for r in _manifest(index, "gen-000002")["segments"]}
    again = ask(cli, index)
    assert again.json()["generation"] == "gen-000003" and _sources(again) == _sources(answer)
    assert cli("index", "verify", "--index-dir", index).exit_code == 0


def test_a_segment_only_the_old_generation_uses_can_be_damaged_without_harm(cli, index):
    shared = shared_segment(index)
    assert cli("index", "compact", "--index-dir", index).exit_code == 0  # gen-000003: new segments only
    _flip(shared / "vectors.f32")  # listed by gen-000002 only now (gen-000001 was pruned)
    verify = cli("index", "verify", "--index-dir", index)
    assert "gen-000002: CORRUPTED" in verify.stdout and "vectors.f32" in verify.stdout
    assert "gen-000003 (current): ok" in verify.stdout
    assert ask(cli, index).json()["generation"] == "gen-000003"


def test_ingest_compacts_on_its_own_past_the_dead_row_threshold(cli, own_index, tmp_path, monkeypatch):
    import ragcli.segmented

    index, docs = own_index, tmp_path / "docs"
    shared = shared_segment(index).name
    (docs / "alpha.md").write_text(DOCS["alpha.md"] + "\nA third edit.\n", encoding="utf-8")
    monkeypatch.setattr(ragcli.segmented, "DEAD_FRACTION", 0.05)
    result = cli("ingest", docs, "--json", "--index-dir", index)
    assert result.exit_code == 0, result.output
    report = result.json()
    assert report["summary"]["changed"] == 1 and report["chunks_embedded"] >= 1
    manifest = _manifest(index)
    assert shared not in {r["name"] for r in manifest["segments"]}  # its live rows were copied out
    assert manifest["counts"]["rows"] == manifest["counts"]["chunks"] + manifest["counts"]["dead_rows"]
    assert ask(cli, index).exit_code == 0 and cli("index", "verify", "--index-dir", index).exit_code == 0


def test_a_chunk_deleted_then_added_again_is_found_once(cli, own_index, tmp_path):
    index = own_index
    docs = write_docs(tmp_path / "docs")  # beta.md back to its first text: its old chunks come back
    report = cli("ingest", docs, "--json", "--index-dir", index).json()
    assert report["summary"]["changed"] == 1 and report["chunks_embedded"] == 0  # vectors of texts held before
    found = cli("query", "--context", "--json", "--mode", "bm25", "-k", "10", "--max-new-tokens", "2",
                "--index-dir", index, "nightly ingest retention thirty days versions")
    ids = [s["chunk_id"] for s in found.json()["sources"]]
    assert ids and len(ids) == len(set(ids))  # a dead row never comes back beside its living copy
    from ragcli.store import LocalIndex

    gen = LocalIndex(index).load()
    assert len(gen.chunks) == gen.manifest["counts"]["chunks"] == len({c.id for c in gen.chunks})
