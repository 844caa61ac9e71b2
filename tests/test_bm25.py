"""BM25 keyword retrieval over chunks: ids, ranking, persistence, edge cases."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from ragcli.bm25 import BM25Index, tokenize
from ragcli.errors import IndexCorruptedError

BIG = 2**40
IDS = [BIG + 7, 3, BIG * 3 + 11, 2**62 + 1, 99]
TEXTS = [
    "FAISS IndexFlatIP performs exact inner-product search over normalised vectors.",
    "The semantic splitter embeds every sentence, which makes ingest slower than the plain splitter.",
    "Reciprocal rank fusion combines the dense and the BM25 rankings with k = 60.",
    "Query latency: p95 stays under 40 ms for 2048 chunks on one CPU core.",
    "flan-t5-small generates the answer from the retrieved context.",
]


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(IDS, TEXTS)


def test_tokenize_keeps_digits_and_drops_stopwords() -> None:
    assert tokenize("The p95 of 2048 chunks IS_fast, and k=60!") == [
        "p95",
        "2048",
        "chunks",
        "fast",
        "k",
        "60",
    ]
    assert tokenize("the and of") == []
    assert tokenize("") == []


def test_query_quoting_a_doc_returns_it_first(index: BM25Index) -> None:
    for chunk_id, text in zip(IDS, TEXTS, strict=True):
        results = index.search(text, k=3)
        assert results[0][0] == chunk_id


def test_ids_are_preserved_and_results_well_formed(index: BM25Index) -> None:
    results = index.search("p95 latency chunks", k=5)
    assert results[0][0] == 2**62 + 1
    assert all(type(chunk_id) is int and type(score) is float for chunk_id, score in results)
    assert {chunk_id for chunk_id, _ in results} <= set(IDS)
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)
    assert all(score > 0 for score in scores)
    assert len(index) == len(IDS)


def test_only_matching_docs_are_returned(index: BM25Index) -> None:
    # "splitter" occurs only in the second text: one result, although k is 5.
    assert [chunk_id for chunk_id, _ in index.search("splitter", k=5)] == [3]


def test_k_larger_than_corpus_and_k_zero(index: BM25Index) -> None:
    results = index.search("the dense splitter fusion faiss answer p95", k=1000)
    assert len(results) == len(IDS)
    assert index.search("faiss", k=0) == []
    assert len(index.search("the dense splitter fusion faiss answer p95", k=2)) == 2
    with pytest.raises(ValueError):
        index.search("faiss", k=-1)


def test_unknown_terms_and_stopword_only_queries(index: BM25Index) -> None:
    assert index.search("zeppelin quasar", k=5) == []
    assert index.search("the and of", k=5) == []
    assert index.search("", k=5) == []


def test_save_load_round_trip(index: BM25Index, tmp_path: Path) -> None:
    files = index.save(tmp_path / "bm25")
    assert files and all(path.is_file() and path.name.startswith("bm25.") for path in files)
    assert sorted(p.name for p in (tmp_path / "bm25").iterdir()) == sorted(p.name for p in files)
    loaded = BM25Index.load(tmp_path / "bm25")
    assert len(loaded) == len(index)
    for query in [*TEXTS, "p95 latency", "dense fusion rankings", "zeppelin", ""]:
        assert loaded.search(query, k=10) == index.search(query, k=10)


def test_determinism_two_builds_same_scores_and_bytes(tmp_path: Path) -> None:
    first = BM25Index.build(IDS, TEXTS)
    second = BM25Index.build(IDS, TEXTS)
    for query in TEXTS:
        assert first.search(query, k=10) == second.search(query, k=10)
    files_a = first.save(tmp_path / "a")
    files_b = second.save(tmp_path / "b")
    assert [p.name for p in files_a] == [p.name for p in files_b]
    for a, b in zip(files_a, files_b, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_build_order_does_not_change_results() -> None:
    forward = BM25Index.build(IDS, TEXTS)
    backward = BM25Index.build(IDS[::-1], TEXTS[::-1])
    for query in [*TEXTS, "splitter fusion"]:
        assert forward.search(query, k=10) == backward.search(query, k=10)


def test_equal_scores_are_ordered_by_id() -> None:
    index = BM25Index.build([50, 10, 30], ["alpha beta", "alpha beta", "alpha beta"])
    results = index.search("alpha", k=3)
    assert [chunk_id for chunk_id, _ in results] == [10, 30, 50]
    assert len({score for _, score in results}) == 1


def test_empty_corpus(tmp_path: Path) -> None:
    index = BM25Index.build([], [])
    assert len(index) == 0
    assert index.search("anything", k=5) == []
    index.save(tmp_path)
    loaded = BM25Index.load(tmp_path)
    assert len(loaded) == 0
    assert loaded.search("anything", k=5) == []


def test_corpus_without_searchable_tokens(tmp_path: Path) -> None:
    index = BM25Index.build([1, 2], ["the and of", ""])
    assert len(index) == 2
    assert index.search("the", k=5) == []
    index.save(tmp_path)
    assert len(BM25Index.load(tmp_path)) == 2


def test_build_validates_ids() -> None:
    with pytest.raises(ValueError):
        BM25Index.build([1, 2], ["only one text"])
    with pytest.raises(ValueError):
        BM25Index.build([1, 1], ["a text", "another text"])


def test_load_refuses_missing_or_mismatched_files(index: BM25Index, tmp_path: Path) -> None:
    with pytest.raises(IndexCorruptedError):
        BM25Index.load(tmp_path / "nowhere")

    index.save(tmp_path / "missing")
    (tmp_path / "missing" / "bm25.data.npy").unlink()
    with pytest.raises(IndexCorruptedError):
        BM25Index.load(tmp_path / "missing")

    index.save(tmp_path / "tokenizer")
    meta_path = tmp_path / "tokenizer" / "bm25.meta.json"
    meta = json.loads(meta_path.read_text())
    meta["tokenizer"] += 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(IndexCorruptedError):
        BM25Index.load(tmp_path / "tokenizer")


def test_importing_the_module_does_not_import_bm25s() -> None:
    import subprocess

    code = "import sys, ragcli.bm25, ragcli.fusion, ragcli.metrics; print('bm25s' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
