"""The semantic splitter embeds the windows of all files of an ingest in one length-sorted stream, each
distinct window once, keeps them between ingests, and still finds llama-index's own breakpoints."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE_DOCS

MD_FILES = sorted(p for p in SAMPLE_DOCS.rglob("*.md"))


@pytest.fixture
def embedder(settings):
    from ragcli.models import load_embedder

    return load_embedder(settings)


def _splitter(embedder, vectors="window", cap=100_000, cache=None):
    from ragcli.splitting import Splitter, SplitterSettings

    return Splitter(SplitterSettings(kind="semantic", buffer_size=1, breakpoint_percentile=95.0,
                                     max_chunk_tokens=cap, vectors=vectors), embedder, window_cache=cache)


def _llama_chunks(embedder, text: str) -> list[str]:
    """What llama-index's SemanticSplitterNodeParser itself makes of `text` (one document)."""
    from llama_index.core import Document
    from llama_index.core.node_parser import SemanticSplitterNodeParser

    parser = SemanticSplitterNodeParser(embed_model=embedder.llama_embed_model(), buffer_size=1,
                                        breakpoint_percentile_threshold=95.0, include_metadata=False,
                                        include_prev_next_rel=False)
    nodes = parser.get_nodes_from_documents([Document(text=text)])
    return [n.get_content().strip() for n in nodes if n.get_content().strip()]


def test_same_breakpoints_as_llama_index(embedder):
    texts = [p.read_text(encoding="utf-8") for p in MD_FILES]
    assert len(texts) >= 3
    ours = _splitter(embedder).split_many(texts)
    reference = [_llama_chunks(embedder, t) for t in texts]
    assert ours == reference
    assert sum(len(c) for c in ours) > len(texts)  # real breakpoints were found, not one chunk per file


def test_windows_of_all_files_are_one_stream_each_text_once(embedder, monkeypatch):
    from ragcli.models import Embedder

    calls: list[list[str]] = []
    original = Embedder.embed_documents

    def spy(self, texts, progress=None):
        calls.append(list(texts))
        return original(self, texts, progress)

    monkeypatch.setattr(Embedder, "embed_documents", spy)
    repeated = "The flat index is exact. The flat index is exact. The flat index is exact. The flat index is exact."
    texts = [p.read_text(encoding="utf-8") for p in MD_FILES] + [repeated]
    _splitter(embedder).split_many(texts)
    assert len(calls) == 1  # one stream for every file
    stream = calls[0]
    assert len(stream) == len(set(stream))  # each distinct window once
    assert [len(t) for t in stream] == sorted((len(t) for t in stream), reverse=True)  # sorted by length
    assert "The flat index is exact. The flat index is exact. The flat index is exact. " in stream


def test_window_cache_spares_unchanged_windows_and_keeps_breakpoints(embedder, tmp_path, monkeypatch):
    from ragcli.splitting import WindowCache

    identity = dict(embedder.info())
    texts = [p.read_text(encoding="utf-8") for p in MD_FILES]
    cold = _splitter(embedder, cache=WindowCache(tmp_path / "c", identity))
    first = cold.split_many(texts)
    embedded_cold = embedder.texts_embedded

    changed = texts[0] + "\n\nA new closing sentence about the retention of deleted files."
    warm_cache = WindowCache(tmp_path / "c", identity)
    warm = _splitter(embedder, cache=warm_cache)
    again = warm.split_many([changed, *texts[1:]])
    new_windows = embedder.texts_embedded - embedded_cold
    assert 1 <= new_windows <= 3  # only the windows touching the new sentence
    assert again[1:] == first[1:]
    assert again == _splitter(embedder).split_many([changed, *texts[1:]])  # the cache does not change chunks
    assert warm_cache.hits > 10
    # Another backend or model never reads these vectors: the cache file is keyed by the identity.
    assert WindowCache(tmp_path / "c", {**identity, "backend": "onnx"}).path != warm_cache.path


def test_a_broken_cache_file_is_ignored(embedder, tmp_path):
    from ragcli.splitting import WindowCache

    cache = WindowCache(tmp_path / "c", dict(embedder.info()))
    cache.path.parent.mkdir(parents=True)
    cache.path.write_bytes(b"not a database at all" * 10)
    text = MD_FILES[0].read_text(encoding="utf-8")
    assert _splitter(embedder, cache=cache).split_many([text]) == _splitter(embedder).split_many([text])


def test_ingest_counts_windows_once_and_reuses_them(cli, model_env, docs, tmp_path):
    """texts_embedded is every text sent to the encoder: distinct windows plus chunks. Re-ingesting a
    changed file embeds only its new windows and new chunks."""
    first = cli("ingest", docs, "--json")
    assert first.exit_code == 0, first.output
    report = first.json()
    windows = report["texts_embedded"] - report["chunks_embedded"]
    assert windows > report["chunks_total"]
    target = docs / "overview.md"
    target.write_text(target.read_text(encoding="utf-8") + "\n\nOne more sentence about vector search.\n",
                      encoding="utf-8")
    second = cli("ingest", docs, "--json").json()
    assert second["summary"]["changed"] == 1
    assert 1 <= second["texts_embedded"] - second["chunks_embedded"] <= 3


def test_pooled_vectors_are_window_means(embedder):
    """pooled: each sentence embedded once; a window's vector is the normalised sum of its sentences."""
    splitter = _splitter(embedder, vectors="pooled")
    text = MD_FILES[0].read_text(encoding="utf-8")
    splitter.split_many([text])
    groups = splitter._groups(text)
    vectors = splitter._window_vectors(groups)
    direct = embedder.embed_documents([g["sentence"] for g in groups[:3]])
    expected = direct[0] + direct[1] + direct[2]
    assert np.allclose(vectors[1], expected / np.linalg.norm(expected), atol=1e-5)


def test_late_chunking_reads_each_document_about_once(embedder, monkeypatch):
    """late: the encoder reads every prose segment once (overlapping windows of its limit, one stream
    for all files), and no sentence window is embedded on its own."""
    from ragcli.models import Embedder

    texts = [p.read_text(encoding="utf-8") for p in MD_FILES]
    fed: list[list[int]] = []
    original = Embedder.token_states

    def spy(self, sequences):
        fed.extend(sequences)
        return original(self, sequences)

    monkeypatch.setattr(Embedder, "token_states", spy)
    before = embedder.texts_embedded
    chunks = _splitter(embedder, vectors="late").split_many(texts)
    corpus_tokens = sum(embedder.count_tokens(t) for t in texts)
    fed_tokens = sum(len(s) for s in fed)
    assert corpus_tokens <= fed_tokens <= 1.6 * corpus_tokens  # overlap and special tokens only
    assert max(len(s) for s in fed) <= embedder.max_tokens
    assert embedder.texts_embedded - before == len(fed)  # the counter counts encoder inputs
    windows = sum(len(_splitter(embedder)._groups(t)) for t in texts)
    assert len(fed) < windows / 2  # far fewer encoder inputs than sentence windows
    for text, pieces in zip(texts, chunks, strict=True):
        assert " ".join(pieces).split() == text.split()  # every word kept, in order
    assert sum(len(c) for c in chunks) > len(texts)  # breakpoints were found


def test_late_chunking_end_to_end(cli, model_env, docs, tmp_path):
    result = cli("ingest", docs, "--semantic-vectors", "late", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    assert report["splitter"]["vectors"] == "late"
    window = cli("ingest", docs, "--semantic-vectors", "window", "--json", "--index-dir", tmp_path / "w").json()
    late_inputs = report["texts_embedded"] - report["chunks_embedded"]
    window_inputs = window["texts_embedded"] - window["chunks_embedded"]
    assert 0 < late_inputs < window_inputs / 2
