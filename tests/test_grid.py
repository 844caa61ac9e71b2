"""ragcli bench --grid: axes parsed and checked, arms multiplied, vectors reused by text, arms ranked and recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragcli.errors import UsageError
from ragcli.grid import EmbeddingCache, arms, parse_grid


def test_parse_grid_and_arms():
    grid = parse_grid(["splitter=semantic,sentence", "k=4,8,4", "alpha=0.3", "chunk-size=128"])
    assert grid == {"splitter": ["semantic", "sentence"], "k": [4, 8], "alpha": [0.3], "chunk_size": [128]}
    assert arms({"a": [1, 2], "b": ["x", "y"]}) == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"},
                                                  {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    assert len(arms(grid)) == 4


@pytest.mark.parametrize(("specs", "fragment"), [
    (["colour=red"], "KEY one of"),
    (["k"], "KEY one of"),
    (["k=4,x"], "'x' is not a valid value"),
    (["k=0"], "an integer from 1"),
    (["alpha=1.5"], "a number from 0.0 to 1.0"),
    (["mode=vectors"], "one of dense, bm25, hybrid"),
    (["k=4", "k=8"], "given twice"),
    (["chunk_size=64", "max_chunk_tokens=128"], "given twice"),
    ([], "at least one"),
])
def test_bad_grid_is_a_usage_error(specs, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_grid(specs)


class _Counting:
    """A stand-in embedder: a deterministic vector per text, counting what it embeds."""

    dim = 3
    model_id = "fake"

    def __init__(self) -> None:
        self.texts_embedded = 0
        self.batches: list[list[str]] = []

    def _vector(self, text: str) -> np.ndarray:
        return np.array([len(text), text.count("a"), 1.0], dtype=np.float32)

    def embed_documents(self, texts, progress=None):
        self.batches.append(list(texts))
        self.texts_embedded += len(texts)
        return np.stack([self._vector(t) for t in texts])

    def embed_query(self, text):
        self.texts_embedded += 1
        return self._vector(text) * 2


def test_embedding_cache_embeds_each_text_once_and_keeps_order():
    inner = _Counting()
    cache = EmbeddingCache(inner)
    first = cache.embed_documents(["a", "bb", "a", "ccc"])
    assert inner.batches == [["a", "bb", "ccc"]]  # the repeated text once
    np.testing.assert_array_equal(first, np.stack([inner._vector(t) for t in ["a", "bb", "a", "ccc"]]))
    second = cache.embed_documents(["ccc", "dddd", "bb"])
    assert inner.batches[-1] == ["dddd"] and inner.texts_embedded == 4
    np.testing.assert_array_equal(second, np.stack([inner._vector(t) for t in ["ccc", "dddd", "bb"]]))
    assert cache.embed_documents([]).shape == (0, 3) and inner.texts_embedded == 4
    q = cache.embed_query("a")
    np.testing.assert_array_equal(cache.embed_query("a"), q)
    # Question vectors are kept apart from chunk vectors (a model may embed them differently).
    assert inner.texts_embedded == 5 and not np.array_equal(q, first[0])
    assert cache.reused == 4 and cache.model_id == "fake" and cache.texts_embedded == 5


@pytest.mark.slow
def test_grid_end_to_end_ranks_and_matches_single_runs(cli, model_env, docs, tmp_path, monkeypatch):
    out = tmp_path / "grid.json"
    result = cli("bench", "--qa", docs / "qa.jsonl", "--corpus", docs, "--no-answers", "--quiet",
                 "--grid", "splitter=semantic,sentence", "--grid", "k=2,4", "--grid", "mode=bm25,dense",
                 "--rank-by", "mrr", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["kind"] == "grid" and len(report["arms"]) == 8
    assert sorted(tuple(sorted(a["params"].items())) for a in report["arms"]) == sorted(
        tuple(sorted(a.items())) for a in arms(report["grid"]))
    scores = [a["score"] for a in report["arms"]]
    assert scores == sorted(scores, reverse=True) and [a["rank"] for a in report["arms"]] == list(range(1, 9))
    for arm in report["arms"]:
        r = arm["report"]
        assert arm["score"] == r["metrics"][f"{arm['params']['mode']}.mrr"]
        assert r["k"] == arm["params"]["k"] and list(r["retrieval"]) == [arm["params"]["mode"]]
        assert r["index"]["splitter"]["type"] == arm["params"]["splitter"]
    # One index per splitter, however many search arms use it; nothing embedded twice.
    assert len(report["indexes"]) == 2
    assert report["embedding_cache"]["reused"] > 0
    assert "Grid: 8 arms" in result.stdout and "ranked by mrr" in result.stdout
    # An arm scores what a plain bench run with the same settings scores.
    best = report["arms"][0]
    monkeypatch.setenv("RAGCLI_SPLITTER", best["params"]["splitter"])
    single = tmp_path / "single.json"
    again = cli("bench", "--qa", docs / "qa.jsonl", "--corpus", docs, "--no-answers", "--no-startup", "--quiet",
                "--pairs", "1", "--modes", best["params"]["mode"], "-k", str(best["params"]["k"]), "--json", single)
    assert again.exit_code == 0, again.output
    plain = json.loads(single.read_text())["metrics"]
    for name, value in best["report"]["metrics"].items():
        if not name.startswith(("latency.", "ratio.", "count.")):
            assert plain[name] == value, name
    # Gates belong to single runs.
    refused = cli("bench", "--grid", "k=2,4", "--fail-under", "dense.mrr=0.1", "--quiet")
    assert refused.exit_code == 2 and "single run" in refused.stderr
