"""Incremental ingest: unchanged files cost nothing, changed files replace exactly their own chunks,
vectors are reused by chunk text, removed files go only when their folder was ingested, and the
embedder sees chunk texts in bounded batches.

The spy is the process-wide embedder (`ragcli.models.load_embedder` caches it): its `texts_embedded`
counter is read before and after each in-process `ragcli ingest`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import write_tree

pytestmark = pytest.mark.slow

INDEX = Path("ragcli-index")  # the default index folder, in each test's own working directory

CORPUS = {
    "a.md": (
        "# Alpha\n\nThe alpha service stores vectors in a flat FAISS index. Exact search keeps recall high.\n\n"
        "## Storage\n\nEach generation is written to a new folder. The pointer file is replaced at the end.\n\n"
        "## Owners\n\nThe search team owns alpha and answers pages during office hours.\n"
    ),
    "b.md": (
        "# Beta\n\nBeta runs the nightly ingest job. It reads Markdown and Word files from the share.\n\n"
        "## Retention\n\nTables keep thirty days of versions. Older files are vacuumed on Sundays.\n\n"
        "## Alerts\n\nA failed run pages the on-call engineer within five minutes.\n"
    ),
    "c.md": (
        "# Gamma\n\nGamma fuses keyword and dense scores with reciprocal rank fusion.\n\n"
        "## Tuning\n\nThe fusion constant is sixty and nobody has changed it since launch.\n"
    ),
    "sub/d.md": (
        "# Delta\n\nDelta is the evaluation harness. It reports recall and mean reciprocal rank.\n\n"
        "## Data\n\nQuestions live in a JSON Lines file next to the corpus.\n"
    ),
}


def write_corpus(root: Path, files: dict[str, str] = CORPUS) -> Path:
    return write_tree(root, files)


@pytest.fixture
def corpus(tmp_path, model_env, monkeypatch) -> Path:
    monkeypatch.setenv("RAGCLI_MAX_CHUNK_TOKENS", "32")  # a few chunks per file
    return write_corpus(tmp_path / "docs")


@pytest.fixture
def embedder(settings):
    """The embedder the in-process CLI will use (same cache key), read as a counter."""
    from ragcli.models import load_embedder

    return load_embedder(settings)


def run_ingest(cli, *args, code: int = 0) -> dict:
    result = cli("ingest", *args, "--json")
    assert result.exit_code == code, result.output
    return result.json()


def load(name: str | None = None):
    from ragcli.store import LocalIndex

    return LocalIndex(INDEX).load(name)


def ids_by_file(gen) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for c in gen.chunks:
        out.setdefault(c.file, set()).add(c.id)
    return out


def vectors_by_id(gen) -> dict:
    ids, vectors = gen.vectors()
    return dict(zip(ids, vectors, strict=True))


def texts(gen) -> set[str]:
    return {c.text for c in gen.chunks}


def ask(cli, question: str = "Who owns the alpha service?") -> dict:
    result = cli("query", "--context", "--json", "-k", "3", "--max-new-tokens", "6", question)
    assert result.exit_code == 0, result.output
    return result.json()


def check_whole(gen) -> None:
    """The invariants of a published generation: one vector per chunk row, ids agree, counts agree."""
    ids, vectors = gen.vectors()
    assert len(vectors) == len(gen.chunks) == gen.manifest["counts"]["chunks"]
    assert sorted(ids) == sorted(c.id for c in gen.chunks)
    assert len(set(ids)) == len(ids)
    assert sum(m["chunks"] for m in gen.files.values()) == len(gen.chunks)


# -- nothing changed --------------------------------------------------------------------------------
def test_unchanged_reingest_embeds_nothing_and_answers_the_same(cli, corpus, embedder):
    first = run_ingest(cli, corpus)
    assert first["summary"]["added"] == 4 and first["chunks_total"] > 4
    before = ask(cli)
    current = (INDEX / "CURRENT").read_bytes()
    count, calls = embedder.texts_embedded, embedder.calls

    again = run_ingest(cli, corpus)
    assert embedder.texts_embedded - count == 0 and embedder.calls - calls == 0
    assert again["texts_embedded"] == 0 and again["chunks_embedded"] == 0
    assert again["summary"] == {"added": 0, "changed": 0, "unchanged": 4, "removed": 0, "failed": 0, "skipped": 0}
    assert again["published"] is False and again["generation"] == first["generation"] == "gen-000001"
    assert (INDEX / "CURRENT").read_bytes() == current
    assert sorted(p.name for p in INDEX.iterdir() if p.name.startswith("gen-")) == ["gen-000001"]

    after = ask(cli)
    assert after["generation"] == before["generation"]
    assert [s["chunk_id"] for s in after["sources"]] == [s["chunk_id"] for s in before["sources"]]
    assert [s["score"] for s in after["sources"]] == [s["score"] for s in before["sources"]]
    assert after["with_context"]["text"] == before["with_context"]["text"]


def test_touched_files_are_neither_read_nor_embedded(cli, corpus, embedder, monkeypatch):
    run_ingest(cli, corpus)
    for path in corpus.rglob("*.md"):
        st = path.stat()
        os.utime(path, (st.st_atime + 1000, st.st_mtime + 1000))

    def no_reading(*args, **kwargs):
        raise AssertionError("an unchanged file was loaded")

    monkeypatch.setattr("ragcli.loaders.load_text", no_reading)
    count = embedder.texts_embedded
    again = run_ingest(cli, corpus)
    assert embedder.texts_embedded == count
    assert again["summary"]["unchanged"] == 4 and again["published"] is False


# -- edits, additions, removals -------------------------------------------------------------------------
@pytest.mark.parametrize("splitter", ["semantic", "sentence"])
def test_edit_add_delete_replace_exactly_their_chunks(cli, corpus, embedder, splitter):
    run_ingest(cli, corpus, "--splitter", splitter)
    old = load()
    check_whole(old)

    (corpus / "b.md").write_text(CORPUS["b.md"].replace("thirty days", "ninety days")
                                 + "\n## History\n\nBeta replaced a cron script in the spring.\n", encoding="utf-8")
    write_corpus(corpus, {"e.md": "# Epsilon\n\nEpsilon caches answers for a day. Cache keys include the model.\n"})
    (corpus / "c.md").unlink()
    count = embedder.texts_embedded

    report = run_ingest(cli, corpus, "--splitter", splitter)
    spent = embedder.texts_embedded - count
    assert report["summary"] == {"added": 1, "changed": 1, "unchanged": 2, "removed": 1, "failed": 0, "skipped": 0}
    status = {f["file"]: f["status"] for f in report["files"]}
    assert status == {"a.md": "unchanged", "b.md": "changed", "sub/d.md": "unchanged", "e.md": "added",
                      "c.md": "removed"}
    new = load()
    assert new.name == report["generation"] == "gen-000002"
    check_whole(new)

    before, after = ids_by_file(old), ids_by_file(new)
    assert set(after) == {"a.md", "b.md", "sub/d.md", "e.md"}
    assert after["a.md"] == before["a.md"] and after["sub/d.md"] == before["sub/d.md"]
    assert after["b.md"] != before["b.md"]
    assert not after["e.md"] & set().union(*before.values())
    assert {c.text for c in new.chunks if c.file == "b.md"} != {c.text for c in old.chunks if c.file == "b.md"}

    # Only chunk texts the index did not hold were embedded; every other vector is the old one.
    fresh = texts(new) - texts(old)
    assert fresh and report["chunks_embedded"] == len(fresh)
    assert report["chunks_reused"] == sum(1 for c in new.chunks if c.file in ("b.md", "e.md") and c.text not in fresh)
    assert report["texts_embedded"] == spent
    if splitter == "sentence":  # no splitter windows: the encoder saw exactly the new chunk texts
        assert spent == len(fresh)
    else:
        assert spent >= len(fresh)
    old_vectors, new_vectors = vectors_by_id(old), vectors_by_id(new)
    old_by_text = {c.text: old_vectors[c.id] for c in old.chunks}
    for c in new.chunks:
        if c.id in old_vectors:
            assert (new_vectors[c.id] == old_vectors[c.id]).all(), c
        if c.text in old_by_text:
            assert (new_vectors[c.id] == old_by_text[c.text]).all(), c

    # The removed file can no longer be an answer; the previous generation is kept for rollback.
    hits = ask(cli, "What is the fusion constant of gamma?")["sources"]
    assert hits and all(h["file"] != "c.md" for h in hits)
    assert sorted(p.name for p in INDEX.iterdir() if p.name.startswith("gen-")) == ["gen-000001", "gen-000002"]


def test_file_argument_never_removes_other_files(cli, corpus, tmp_path):
    run_ingest(cli, corpus)
    (corpus / "c.md").unlink()
    (corpus / "sub" / "d.md").unlink()
    report = run_ingest(cli, corpus / "a.md")
    assert [(f["file"], f["status"]) for f in report["files"]] == [("a.md", "unchanged")]
    assert report["published"] is False

    other = write_corpus(tmp_path / "other", {"x.md": "# X\n\nA note kept outside the main folder.\n"})
    report = run_ingest(cli, other / "x.md")
    assert report["summary"]["added"] == 1 and report["summary"]["removed"] == 0
    gen = load()
    assert set(gen.files) == {"a.md", "b.md", "c.md", "sub/d.md", "x.md"}  # c and d were not files given
    check_whole(gen)

    # The folder itself, given again, removes what is gone from it, and only that.
    report = run_ingest(cli, corpus)
    assert {f["file"] for f in report["files"] if f["status"] == "removed"} == {"c.md", "sub/d.md"}
    assert set(load().files) == {"a.md", "b.md", "x.md"}


def test_a_file_inside_an_ingested_folder_is_not_indexed_twice(cli, corpus, embedder):
    first = run_ingest(cli, corpus)
    count = embedder.texts_embedded
    report = run_ingest(cli, corpus / "sub" / "d.md")
    assert [(f["file"], f["status"]) for f in report["files"]] == [("sub/d.md", "unchanged")]
    assert report["published"] is False and embedder.texts_embedded == count

    (corpus / "sub" / "d.md").write_text(CORPUS["sub/d.md"] + "\nIt also reports nDCG.\n", encoding="utf-8")
    report = run_ingest(cli, corpus / "sub")  # a subfolder of the ingested folder
    assert [(f["file"], f["status"]) for f in report["files"]] == [("sub/d.md", "changed")]
    gen = load()
    assert set(gen.files) == {"a.md", "b.md", "c.md", "sub/d.md"}
    assert len(gen.chunks) >= first["chunks_total"]
    check_whole(gen)
    assert run_ingest(cli, corpus)["published"] is False  # and the folder sees it as unchanged

    # A new file given alone is named after its own folder; ingesting the outer folder renames it, once.
    write_corpus(corpus, {"sub/new.md": "# New\n\nA page first ingested on its own.\n"})
    assert run_ingest(cli, corpus / "sub" / "new.md")["summary"]["added"] == 1
    assert "new.md" in load().files
    report = run_ingest(cli, corpus)
    assert {(f["file"], f["status"]) for f in report["files"] if f["status"] != "unchanged"} == {
        ("sub/new.md", "added"), ("new.md", "removed")}
    assert report["chunks_embedded"] == 0  # the same text: its vector was reused
    assert set(load().files) == {"a.md", "b.md", "c.md", "sub/d.md", "sub/new.md"}
    check_whole(load())
    (corpus / "sub" / "new.md").unlink()
    assert run_ingest(cli, corpus)["summary"]["removed"] == 1

    # A subfolder given again removes what is gone from it, and nothing outside it.
    write_corpus(corpus, {"sub/extra.md": "# Extra\n\nA page that will be deleted.\n"})
    assert run_ingest(cli, corpus)["summary"]["added"] == 1
    (corpus / "sub" / "extra.md").unlink()
    (corpus / "c.md").unlink()
    report = run_ingest(cli, corpus / "sub")
    assert {(f["file"], f["status"]) for f in report["files"]} == {("sub/d.md", "unchanged"),
                                                                    ("sub/extra.md", "removed")}
    assert set(load().files) == {"a.md", "b.md", "c.md", "sub/d.md"}


def test_a_single_file_in_a_parent_folder_does_not_rename_a_folder(cli, corpus, tmp_path):
    write_corpus(tmp_path, {"top.md": "# Top\n\nA note at the top of the tree.\n"})
    run_ingest(cli, tmp_path / "top.md")  # recorded under tmp_path, the parent of the corpus folder
    report = run_ingest(cli, corpus)
    assert {f["file"] for f in report["files"]} == set(CORPUS)  # names relative to the folder given
    assert set(load().files) == {*CORPUS, "top.md"}


def test_ingesting_the_parent_of_an_ingested_folder_does_not_duplicate(cli, corpus, embedder):
    run_ingest(cli, corpus / "sub")
    assert set(load().files) == {"d.md"}
    old = load()
    report = run_ingest(cli, corpus)
    status = {f["file"]: f["status"] for f in report["files"]}
    assert status == {"a.md": "added", "b.md": "added", "c.md": "added", "sub/d.md": "added", "d.md": "removed"}
    gen = load()
    assert set(gen.files) == {"a.md", "b.md", "c.md", "sub/d.md"}
    check_whole(gen)
    moved = [c for c in gen.chunks if c.file == "sub/d.md"]
    assert {c.text for c in moved} == texts(old)  # same texts, vectors reused rather than embedded
    assert report["chunks_reused"] >= len(moved)
    assert report["chunks_embedded"] == len(texts(gen) - texts(old))


def test_removed_files_are_dropped_through_a_symlinked_folder(cli, corpus, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(corpus, target_is_directory=True)
    run_ingest(cli, link)
    (corpus / "c.md").unlink()
    report = run_ingest(cli, link)
    assert report["summary"]["removed"] == 1 and report["published"] is True
    assert "c.md" not in load().files


def test_a_failing_file_keeps_its_previous_chunks(cli, corpus):
    run_ingest(cli, corpus)
    old = ids_by_file(load())
    (corpus / "a.md").write_bytes(b"# Alpha\x00\x00binary now\n")  # NUL bytes: rejected by the loader
    (corpus / "b.md").write_text(CORPUS["b.md"] + "\nOne more line.\n", encoding="utf-8")
    report = run_ingest(cli, corpus, code=1)
    status = {f["file"]: f["status"] for f in report["files"]}
    assert status["a.md"] == "failed" and status["b.md"] == "changed"
    gen = load()
    assert ids_by_file(gen)["a.md"] == old["a.md"]
    check_whole(gen)


# -- rebuilds and splitter changes ------------------------------------------------------------------------
def test_rebuild_reembeds_everything_with_the_same_ids(cli, corpus, embedder):
    run_ingest(cli, corpus, "--splitter", "sentence")
    old = load()
    count = embedder.texts_embedded
    report = run_ingest(cli, corpus, "--splitter", "sentence", "--rebuild")
    assert embedder.texts_embedded - count == len(old.chunks) == report["chunks_embedded"]
    assert report["chunks_reused"] == 0 and report["summary"]["added"] == 4
    new = load()
    assert new.name == "gen-000002"
    assert ids_by_file(new) == ids_by_file(old)  # ids derive from file and content
    assert new.manifest["corpus_sha256"] == old.manifest["corpus_sha256"]
    old_v, new_v = vectors_by_id(old), vectors_by_id(new)
    assert all(abs(new_v[i] - old_v[i]).max() < 1e-5 for i in old_v)
    check_whole(new)


@pytest.mark.parametrize("change", [("--max-chunk-tokens", "64"), ("--splitter", "sentence")])
def test_splitter_changes_resplit_and_reuse_vectors(cli, corpus, embedder, change):
    write_corpus(corpus, {"tiny.md": "Short note."})  # one chunk whatever the settings
    run_ingest(cli, corpus)
    old = load()
    assert old.splitter == {"type": "semantic", "buffer_size": 1, "breakpoint_percentile": 95.0,
                            "max_chunk_tokens": 32, "vectors": "window"}
    report = run_ingest(cli, corpus, *change)
    new = load()
    flag, value = change
    if flag == "--max-chunk-tokens":
        assert new.splitter["max_chunk_tokens"] == 64 and new.splitter["type"] == "semantic"
    else:
        assert new.splitter["type"] == "sentence" and new.splitter["max_chunk_tokens"] == 32
    assert report["splitter"] == new.splitter
    assert report["summary"]["changed"] == 5 and report["published"] is True  # every file re-split
    fresh = texts(new) - texts(old)
    assert texts(new) != texts(old)
    assert report["chunks_embedded"] == len(fresh)
    assert report["chunks_reused"] == len(new.chunks) - len(fresh) >= 1
    old_vectors = vectors_by_id(old)
    old_by_text = {c.text: old_vectors[c.id] for c in old.chunks}
    new_v = vectors_by_id(new)
    reused = [c for c in new.chunks if c.text in old_by_text]
    assert any(c.file == "tiny.md" for c in reused)
    assert all((new_v[c.id] == old_by_text[c.text]).all() for c in reused)
    check_whole(new)
    # The same settings again: nothing to do.
    again = run_ingest(cli, corpus, *change)
    assert again["published"] is False and again["summary"]["unchanged"] == 5


def test_identical_files_are_idempotent(cli, corpus, embedder):
    shutil.copy(corpus / "a.md", corpus / "a-copy.md")
    count = embedder.texts_embedded
    report = run_ingest(cli, corpus, "--splitter", "sentence")
    gen = load()
    check_whole(gen)
    by_file = ids_by_file(gen)
    assert len(by_file["a-copy.md"]) == len(by_file["a.md"]) and not by_file["a-copy.md"] & by_file["a.md"]
    # One vector per chunk row, but each distinct text is embedded once.
    assert report["chunks_total"] == len(gen.chunks)
    assert embedder.texts_embedded - count == len(texts(gen)) == report["chunks_embedded"]
    assert len(texts(gen)) == len(gen.chunks) - len(by_file["a.md"])
    vectors = vectors_by_id(gen)
    copies = {c.text: c.id for c in gen.chunks if c.file == "a-copy.md"}
    assert all((vectors[c.id] == vectors[copies[c.text]]).all() for c in gen.chunks if c.file == "a.md")

    again = run_ingest(cli, corpus, "--splitter", "sentence")
    assert again["published"] is False and again["summary"]["unchanged"] == 5
    rebuilt = run_ingest(cli, corpus, "--splitter", "sentence", "--rebuild")
    new = load(rebuilt["generation"])
    assert new.manifest["corpus_sha256"] == gen.manifest["corpus_sha256"]
    assert ids_by_file(new) == by_file
    check_whole(new)


# -- memory: streaming and bounded batches ---------------------------------------------------------------
def test_ingest_streams_files_and_embeds_in_bounded_batches(cli, corpus, tmp_path, monkeypatch):
    """Many small files with --batch-size 4: the encoder never sees more than 4 texts at once, and
    embedding starts long before the last file is read (chunks are flushed in groups, not kept for the
    end)."""
    import ragcli.loaders
    import ragcli.planning
    from ragcli.config import load_settings
    from ragcli.models import load_embedder

    many = tmp_path / "many"
    for n in range(40):
        write_corpus(many, {f"note-{n:02d}.md": f"# Note {n}\n\nNote number {n} records decision {n * 7}.\n"})
    monkeypatch.setattr(ragcli.planning, "FLUSH_TEXTS", 8)
    embedder = load_embedder(load_settings({"embed_batch_size": 4}))
    assert embedder.batch_size == 4
    events: list[tuple[str, int]] = []
    hf_type = type(embedder._hf)
    real_batch = hf_type.get_text_embedding_batch
    real_load = ragcli.loaders.load_text

    def spy_batch(self, texts, *args, **kwargs):
        events.append(("embed", len(texts)))
        return real_batch(self, texts, *args, **kwargs)

    def spy_load(path, *args, **kwargs):
        events.append(("load", 1))
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(hf_type, "get_text_embedding_batch", spy_batch)
    monkeypatch.setattr(ragcli.loaders, "load_text", spy_load)
    report = run_ingest(cli, many, "--splitter", "sentence", "--batch-size", "4", "--index-dir", tmp_path / "idx")

    sizes = [n for kind, n in events if kind == "embed"]
    loads = [i for i, (kind, _) in enumerate(events) if kind == "load"]
    assert report["chunks_total"] == 40 and len(loads) == 40
    assert sum(sizes) == report["chunks_embedded"] == 40
    assert max(sizes) <= 4 and len(sizes) >= 10
    first_embed = next(i for i, (kind, _) in enumerate(events) if kind == "embed")
    assert first_embed < loads[-1] and first_embed <= loads[8] + 1  # embedding began after about 8 files
    # Between two flushes at most FLUSH_TEXTS files (one chunk each) were held in memory.
    run = 0
    for kind, _ in events:
        run = run + 1 if kind == "load" else 0
        assert run <= 8


def test_same_name_from_another_folder_is_refused_not_replaced(cli, model_env, tmp_path):
    notes, handbook = tmp_path / "notes", tmp_path / "handbook"
    for folder, text in ((notes, "Notes say the kiln runs weekly."), (handbook, "The handbook says monthly.")):
        folder.mkdir()
        (folder / "index.md").write_text(f"# Index\n\n{text}\n", encoding="utf-8")
    assert cli("ingest", notes, "--quiet").exit_code == 0
    result = cli("ingest", handbook, "--quiet")
    assert result.exit_code == 2
    assert "would replace" in result.stderr and "--index-dir" in result.stderr
    data = cli("query", "--context", "--json", "--mode", "bm25", "kiln weekly").json()
    assert "weekly" in data["sources"][0]["text"]
    # Once the first file is gone (moved), the other folder may take its name.
    (notes / "index.md").unlink()
    assert cli("ingest", handbook, "--quiet").exit_code == 0


@pytest.mark.parametrize(("vectors", "low", "high"), [("window", 3.0, 4.5), ("pooled", 1.8, 2.3)])
def test_semantic_vector_modes_embed_what_they_promise(cli, model_env, tmp_path, monkeypatch, vectors, low, high):
    """window embeds each 3-sentence window (about 3x the text) plus the chunks; pooled embeds each
    sentence once plus the chunks (about 2x)."""
    from ragcli.models import Embedder

    sentences = [f"Sentence {i} says the {w} index keeps {i} vectors." for i, w in
                 zip(range(60), ["flat", "hnsw", "ivf", "bm25"] * 15, strict=True)]
    folder = tmp_path / "sem"
    folder.mkdir()
    text = " ".join(sentences)
    (folder / "s.md").write_text(text + "\n", encoding="utf-8")
    seen: list[str] = []
    original = Embedder.embed_documents

    def spy(self, texts, progress=None):
        seen.extend(texts)
        return original(self, texts, progress)

    monkeypatch.setattr(Embedder, "embed_documents", spy)
    result = cli("ingest", folder, "--json", "--semantic-vectors", vectors, "--rebuild")
    assert result.exit_code == 0, result.output
    ratio = sum(len(t) for t in seen) / len(text)
    assert low <= ratio <= high, ratio
    from ragcli.config import load_settings
    from ragcli.store import LocalIndex

    gen = LocalIndex(load_settings().index_dir).load()
    assert gen.splitter["vectors"] == vectors
    assert " ".join(c.text for c in gen.chunks).split() == text.split()  # every word kept, in order
