"""Reduced precision: the torch-bf16 embedding backend (bf16 autocast of the same weights) and the
semantic splitter's window vectors in bf16 or int8 (`RAGCLI_WINDOW_PRECISION`), the chunks always
embedded by the configured backend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBED

TEXTS = ["Vector search finds the nearest chunks.", "A question about Delta Lake tables?",
         "The index holds embeddings of every chunk of every document in the folder. " * 6]


def _settings(models_dir: Path, **over):
    from ragcli.config import load_settings

    return load_settings({"models_dir": models_dir, "embed_model": EMBED, **over}, env={})


def _embedder(models_dir: Path, backend: str = "torch"):
    from ragcli.models import load_embedder

    return load_embedder(_settings(models_dir, embed_backend=backend))


def test_bf16_backend_is_the_same_model_in_bf16(models_dir):
    fp32, bf16 = _embedder(models_dir), _embedder(models_dir, "torch-bf16")
    assert (bf16.backend, bf16.quantization) == ("torch", "bf16")
    assert bf16._hf is fp32._hf  # the weights are loaded once
    a, b = fp32.embed_documents(TEXTS), bf16.embed_documents(TEXTS)
    cos = (a * b).sum(axis=1)
    assert cos.min() > 0.99
    assert np.abs(a - b).max() > 1e-6  # really computed in bf16
    q = bf16.embed_query(TEXTS[1])
    assert float(q @ fp32.embed_query(TEXTS[1])) > 0.99
    assert bf16.info()["quantization"] == "bf16" and fp32.info()["quantization"] == "none"


def test_bf16_index_refuses_fp32_vectors(cli, model_env, docs):
    guides = docs / "guides"
    assert cli("ingest", guides, "--embed-backend", "torch-bf16", "--quiet").exit_code == 0
    current = (Path("ragcli-index") / "CURRENT").read_text().strip()
    embed = json.loads((Path("ragcli-index") / current / "manifest.json").read_text())["embed"]
    assert (embed["backend"], embed["quantization"]) == ("torch", "bf16")
    refused = cli("query", "--context", "What is vector search?")
    assert refused.exit_code == 1 and "torch-bf16" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("setting", "native", "expected"), [
    ("auto", True, "bf16"), ("auto", False, "same"), ("same", True, "same"), ("bf16", False, "bf16"),
    ("int8", True, "int8"),
])
def test_window_precision_is_resolved(models_dir, monkeypatch, setting, native, expected):
    import ragcli.models as models

    monkeypatch.setattr(models, "native_bf16", lambda: native)
    emb = _embedder(models_dir)
    assert models.window_precision(_settings(models_dir, window_precision=setting), emb) == expected
    # An embedder already in that precision computes its own windows.
    assert models.window_precision(_settings(models_dir, window_precision="bf16"),
                                   _embedder(models_dir, "torch-bf16")) == "same"


def test_window_embedder_follows_the_precision(models_dir, monkeypatch):
    import ragcli.models as models

    emb = _embedder(models_dir)
    same = models.window_embedder_for(_settings(models_dir, window_precision="same"), emb)
    assert same is emb
    bf16 = models.window_embedder_for(_settings(models_dir, window_precision="bf16"), emb)
    assert (bf16.backend, bf16.quantization) == ("torch", "bf16") and bf16._hf is emb._hf
    # Other vector modes and the sentence splitter have no windows to compute.
    assert models.window_embedder_for(_settings(models_dir, window_precision="bf16", semantic_vectors="late"),
                                      emb) is emb
    assert models.window_embedder_for(_settings(models_dir, window_precision="bf16", splitter="sentence"),
                                      emb) is emb


def test_bf16_windows_need_the_torch_backend(models_dir, monkeypatch):
    pytest.importorskip("onnxruntime")
    import ragcli.models as models
    from ragcli.errors import UsageError

    onnx = models._load_embedder(*_args(models_dir), "onnx", str(models_dir / ".." / "onnx-precision"))
    with pytest.raises(UsageError, match="needs the torch embedding backend"):
        models.window_embedder_for(_settings(models_dir, window_precision="bf16"), onnx)


def _args(models_dir: Path) -> tuple:
    from ragcli.registry import resolve_model

    r = resolve_model(EMBED, models_dir, role="embedding model")
    return str(r.path), EMBED, r.revision, 32


@pytest.mark.parametrize("precision", ["bf16", "same"])
def test_ingest_embeds_windows_in_that_precision_and_chunks_in_the_backend(cli, model_env, docs, monkeypatch,
                                                                          precision):
    """Windows go to the window embedder, chunks to the configured one; the report counts both and says
    which precision the windows had."""
    import ragcli.models as models

    seen: list[tuple[str, int]] = []
    real = models.Embedder.embed_documents

    def spy(self, texts, progress=None):
        seen.append((self.quantization, len(texts)))
        return real(self, texts, progress)

    monkeypatch.setattr(models.Embedder, "embed_documents", spy)
    monkeypatch.setenv("RAGCLI_WINDOW_PRECISION", precision)
    monkeypatch.setenv("RAGCLI_WINDOW_CACHE", "off")
    result = cli("ingest", docs / "guides", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    assert report["window_precision"] == precision
    chunks = report["chunks_embedded"]
    bf16_texts = sum(n for q, n in seen if q == "bf16")
    fp32_texts = sum(n for q, n in seen if q == "none")
    if precision == "bf16":
        assert bf16_texts > 0 and fp32_texts == chunks  # windows in bf16; every chunk in fp32
    else:
        assert bf16_texts == 0 and fp32_texts > chunks
    assert report["texts_embedded"] == bf16_texts + fp32_texts
