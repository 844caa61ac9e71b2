"""The ONNX embedding backend: the tiny random encoder exported by ragcli itself, run through ONNX
Runtime, gives the torch backend's vectors (fp32) or close ones (int8), and an index never mixes the
vectors of two backends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import EMBED, EMBED_REV
from tiny_models import install_in_models_dir

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

# Texts that probe the preprocessing: whitespace at the ends, accents, a text longer than the tiny
# model's 128-token window (truncated the same way), a one-letter text, and an empty one.
TEXTS = [
    "Vector search finds the nearest chunks.",
    "   leading and trailing whitespace   ",
    "Ünïcödé àccents and “quotes” — dashes",
    "The index holds embeddings of every chunk of every document in the folder. " * 12,
    "x",
    "",
    "A question about Delta Lake tables?",
]
# int8 quantisation of the weights changes vectors a little; on the tiny random model the worst cosine
# to the fp32 torch vector stays above this (measured 0.9999; all-MiniLM-L6-v2: see scripts/bench_onnx.py).
INT8_MIN_COSINE = 0.995


@pytest.fixture(scope="session")
def onnx_models_dir(tiny_models, tmp_path_factory) -> Path:
    """A models folder of its own (the shared one is read-only) holding the tiny encoder, exported to
    ONNX (fp32 and int8) once for the session."""
    from ragcli.onnx_embed import ensure_onnx

    root = tmp_path_factory.mktemp("onnx-models")
    snapshot = install_in_models_dir(root, EMBED, tiny_models.embed, EMBED_REV)
    ensure_onnx(snapshot, EMBED_REV, root, "int8")
    return root


@pytest.fixture
def onnx_env(onnx_models_dir, monkeypatch, models_dir):
    monkeypatch.setenv("RAGCLI_MODELS_DIR", str(onnx_models_dir))
    monkeypatch.setenv("RAGCLI_EMBED_MODEL", EMBED)
    # The generator lives in the shared models folder; by path, so the models folder is not asked.
    from conftest import GEN

    from ragcli.registry import resolve_model

    monkeypatch.setenv("RAGCLI_GEN_MODEL", str(resolve_model(GEN, models_dir, role="generator").path))
    return onnx_models_dir


def _embedder(backend: str, models_dir: Path):
    from ragcli.config import load_settings
    from ragcli.models import load_embedder

    return load_embedder(load_settings({"embed_backend": backend, "models_dir": models_dir, "embed_model": EMBED},
                                       env={}))


def test_fp32_vectors_equal_torch(onnx_models_dir):
    torch_emb = _embedder("torch", onnx_models_dir)
    onnx_emb = _embedder("onnx", onnx_models_dir)
    assert (onnx_emb.backend, onnx_emb.quantization) == ("onnx", "none")
    assert (onnx_emb.dim, onnx_emb.max_tokens, onnx_emb.chunk_token_limit) == (
        torch_emb.dim, torch_emb.max_tokens, torch_emb.chunk_token_limit)
    a, b = torch_emb.embed_documents(TEXTS), onnx_emb.embed_documents(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), torch_emb.dim)
    assert np.abs(a - b).max() <= 1e-5
    q = "Where are the embeddings kept?"
    assert np.abs(torch_emb.embed_query(q) - onnx_emb.embed_query(q)).max() <= 1e-5
    # The order of texts in a call does not change a text's vector (batches are formed by length).
    assert np.abs(onnx_emb.embed_documents(TEXTS[::-1])[::-1] - b).max() <= 1e-6


def test_int8_vectors_close_to_torch(onnx_models_dir):
    torch_emb = _embedder("torch", onnx_models_dir)
    int8 = _embedder("onnx-int8", onnx_models_dir)
    assert (int8.backend, int8.quantization) == ("onnx", "int8")
    cos = (torch_emb.embed_documents(TEXTS) * int8.embed_documents(TEXTS)).sum(axis=1)
    assert cos.min() >= INT8_MIN_COSINE
    # Really quantised: not the fp32 graph under another name.
    assert np.abs(torch_emb.embed_documents(TEXTS) - int8.embed_documents(TEXTS)).max() > 1e-5


def test_export_is_cached_beside_the_model_with_versions(onnx_models_dir):
    from ragcli.onnx_embed import ensure_onnx
    from ragcli.registry import resolve_model

    snapshot = resolve_model(EMBED, onnx_models_dir, role="embedding model").path
    folder = snapshot.parent.parent / "ragcli-onnx" / EMBED_REV
    record = json.loads((folder / "export.json").read_text())
    assert record["fp32"]["source"] == "exported"
    assert {"torch", "transformers", "onnx", "onnxruntime"} <= set(record["fp32"]["versions"])
    assert "int8" in record["int8"]["quantization"]
    # Fused before quantisation (one Attention node per layer of the tiny BERT), the feed-forward
    # down-projections (one per layer) kept in fp32.
    layers = json.loads((snapshot / "config.json").read_text())["num_hidden_layers"]
    assert record["int8"]["fused"]["Attention"] == layers and "not_fused" not in record["int8"]
    assert record["int8"]["fp32_nodes"] == layers
    before = {f.name: f.stat().st_mtime_ns for f in folder.iterdir()}
    assert ensure_onnx(snapshot, EMBED_REV, onnx_models_dir, "int8") == folder / "model-int8.onnx"
    assert {f.name: f.stat().st_mtime_ns for f in folder.iterdir()} == before  # nothing exported again
    # The model's own folder is untouched, and no temporary files are left behind.
    assert not (snapshot / "onnx").exists()
    assert sorted(before) == ["export.json", "model-int8.onnx", "model.onnx"]


def test_shipped_onnx_file_is_used(onnx_models_dir, tiny_models, tmp_path):
    """A model that ships onnx/model.onnx is run from that file, not exported."""
    from ragcli.models import _load_embedder
    from ragcli.onnx_embed import ensure_onnx

    folder = tmp_path / "shipped"
    shutil.copytree(tiny_models.embed, folder)
    exported = resolve_snapshot(onnx_models_dir).parent.parent / "ragcli-onnx" / EMBED_REV / "model.onnx"
    (folder / "onnx").mkdir()
    shutil.copy(exported, folder / "onnx" / "model.onnx")
    models = tmp_path / "models"
    assert ensure_onnx(folder, "local", models, "none") == folder / "onnx" / "model.onnx"
    record = json.loads(next((models / "ragcli-onnx").glob("*/export.json")).read_text())
    assert record["fp32"]["source"] == "shipped"
    emb = _load_embedder(str(folder), "shipped", "local", 4, "onnx", str(models))
    torch_emb = _load_embedder(str(folder), "shipped", "local", 4)
    assert np.abs(emb.embed_documents(TEXTS) - torch_emb.embed_documents(TEXTS)).max() <= 1e-5


def resolve_snapshot(models_dir: Path) -> Path:
    from ragcli.registry import resolve_model

    return resolve_model(EMBED, models_dir, role="embedding model").path


def test_cls_pooling_follows_the_pooling_config(tiny_models, tmp_path):
    """Pooling comes from 1_Pooling/config.json: a CLS-pooled copy of the model agrees with torch too."""
    from ragcli.models import _load_embedder

    folder = tmp_path / "cls"
    shutil.copytree(tiny_models.embed, folder)
    config_file = folder / "1_Pooling" / "config.json"
    config = json.loads(config_file.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    config_file.write_text(json.dumps(config))
    onnx_emb = _load_embedder(str(folder), "cls", "local", 4, "onnx", str(tmp_path / "models"))
    torch_emb = _load_embedder(str(folder), "cls", "local", 4)
    mean_emb = _load_embedder(str(tiny_models.embed), "mean", "local", 4)
    a, b = torch_emb.embed_documents(TEXTS), onnx_emb.embed_documents(TEXTS)
    assert np.abs(a - b).max() <= 1e-5
    assert np.abs(a - mean_emb.embed_documents(TEXTS)).max() > 1e-3  # the pooling really differs


def test_modules_the_backend_cannot_run_are_refused(tiny_models, tmp_path):
    from ragcli.errors import ModelLoadError
    from ragcli.onnx_embed import read_pooling

    folder = tmp_path / "dense"
    shutil.copytree(tiny_models.embed, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match="Dense module.*--embed-backend torch"):
        read_pooling(folder)


def test_backend_setting_and_flag_are_checked(cli, monkeypatch):
    from ragcli.config import load_settings
    from ragcli.errors import ConfigError

    assert load_settings(env={"RAGCLI_EMBED_BACKEND": "ONNX-int8"}).embed_backend == "onnx-int8"
    assert load_settings(env={}).embed_backend == "torch"
    with pytest.raises(ConfigError, match="RAGCLI_EMBED_BACKEND"):
        load_settings(env={"RAGCLI_EMBED_BACKEND": "tensorrt"})
    result = cli("ingest", ".", "--embed-backend", "tensorrt")
    assert result.exit_code == 2
    assert "--embed-backend 'tensorrt' is not one of: torch, torch-bf16, onnx, onnx-int8" in result.stderr


def _manifest_embed() -> dict:
    index = Path("ragcli-index")
    current = (index / "CURRENT").read_text().strip()
    return json.loads((index / current / "manifest.json").read_text())["embed"]


def test_an_index_never_mixes_backends(cli, onnx_env, docs):
    guides = docs / "guides"
    first = cli("ingest", guides, "--json")
    assert first.exit_code == 0, first.output
    assert (_manifest_embed()["backend"], _manifest_embed()["quantization"]) == ("torch", "none")
    before = (Path("ragcli-index") / "CURRENT").read_text()

    (guides / "new.md").write_text("# New\n\nA new file about vector search.\n", encoding="utf-8")
    refused = cli("ingest", guides, "--embed-backend", "onnx-int8")
    assert refused.exit_code == 1
    assert "vectors of the torch embedding backend; this run uses onnx-int8" in refused.stderr
    assert "--embed-backend torch" in refused.stderr and "--rebuild" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert (Path("ragcli-index") / "CURRENT").read_text() == before  # nothing written

    query = cli("query", "--context", "--embed-backend", "onnx", "What is vector search?")
    assert query.exit_code == 1
    assert "this run uses onnx." in query.stderr and len(query.stderr.strip().splitlines()) == 1

    rebuilt = cli("ingest", guides, "--rebuild", "--embed-backend", "onnx-int8", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert (_manifest_embed()["backend"], _manifest_embed()["quantization"]) == ("onnx", "int8")
    assert rebuilt.json()["chunks_embedded"] == rebuilt.json()["chunks_total"]  # nothing reused from torch
    monkeypatch_env = cli("query", "--context", "--json", "--embed-backend", "onnx-int8", "What is vector search?")
    assert monkeypatch_env.exit_code == 0, monkeypatch_env.output
    assert monkeypatch_env.json()["sources"]
    # Without the flag (torch, the default) the int8 index is refused the same way.
    assert "onnx-int8 embedding backend" in cli("query", "--context", "What is vector search?").stderr


def test_bench_compares_backends_side_by_side(cli, onnx_env, docs, tmp_path):
    """`bench --compare-backend`: the configured backend and the baseline on the same corpus, texts and
    questions; fp32 ONNX agrees with torch to rounding, so its retrieval scores are torch's."""
    out = tmp_path / "compare.json"
    args = ["bench", "--qa", docs / "qa.jsonl", "--corpus", docs, "--modes", "dense", "--no-answers", "--no-startup",
            "--pairs", "1", "--quiet"]
    result = cli(*args, "--embed-backend", "onnx", "--compare-backend", "torch", "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    b = report["backends"]
    assert (b["configured"], b["baseline"]) == ("onnx", "torch")
    assert b["speed"]["chunks"]["texts"] == min(report["ingest"]["chunks"], 256)
    assert b["speed"]["questions"]["texts"] == report["questions"]
    for s in b["speed"].values():
        assert s["time_ratio"] > 0 and s["texts_per_s"] > 0 and s["baseline_texts_per_s"] > 0
    assert b["cosine"]["min"] > 0.99999
    assert b["dense"]["baseline"]["ndcg"] == pytest.approx(report["retrieval"]["dense"]["ndcg"])
    assert b["dense"]["delta"]["ndcg"] == pytest.approx(0.0, abs=1e-9)
    assert b["baseline_ingest"]["chunks"] == report["ingest"]["chunks"]  # the same corpus, split the same way
    assert report["metrics"]["ratio.embed_over_baseline.chunks"] == b["speed"]["chunks"]["time_ratio"]
    assert report["metrics"]["backend.dense.ndcg_delta"] == b["dense"]["delta"]["ndcg"]
    assert "Embedding backend onnx against torch" in cli(*args, "--embed-backend", "onnx",
                                                         "--compare-backend", "torch").stdout
    # int8 really differs from torch: the comparison says by how much.
    int8 = cli(*args, "--embed-backend", "onnx-int8", "--compare-backend", "torch", "--json", out)
    assert int8.exit_code == 0, int8.output
    assert 0.9 < json.loads(out.read_text())["backends"]["cosine"]["min"] < 0.999999


def test_compare_backend_refusals(cli, onnx_env, docs):
    same = cli("bench", "--qa", docs / "qa.jsonl", "--corpus", docs, "--compare-backend", "torch", "--no-answers")
    assert same.exit_code == 2 and "is the configured backend" in same.stderr
    assert len(same.stderr.strip().splitlines()) == 1
    bad = cli("bench", "--qa", docs / "qa.jsonl", "--compare-backend", "tpu")
    assert bad.exit_code == 2 and "--compare-backend" in bad.stderr
    assert cli("ingest", docs, "--quiet").exit_code == 0
    no_corpus = cli("bench", "--qa", docs / "qa.jsonl", "--embed-backend", "onnx", "--compare-backend", "torch",
                    "--no-answers", "--modes", "dense")
    assert no_corpus.exit_code == 2 and "pass --corpus" in no_corpus.stderr


def test_int8_of_an_architecture_the_optimizer_does_not_know_is_quantised_unfused(onnx_models_dir, tmp_path):
    """Fusion is a speed step only: where ONNX Runtime's optimizer does not know the model type, the
    plain export is quantised (recorded as not fused) and still gives close vectors."""
    import onnxruntime as ort

    from ragcli.onnx_embed import quantize_int8

    fp32 = resolve_snapshot(onnx_models_dir).parent.parent / "ragcli-onnx" / EMBED_REV / "model.onnx"
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "int8.onnx"
    record = quantize_int8(fp32, dest, {"model_type": "not-a-known-type", "num_attention_heads": 2, "hidden_size": 32})
    assert record["fused"] == {} and "no fusion for model_type 'not-a-known-type'" in record["not_fused"]
    session = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"])
    import onnx

    assert not any(n.op_type == "Attention" for n in onnx.load(str(dest)).graph.node)
    assert [i.name for i in session.get_inputs()][:2] == ["input_ids", "attention_mask"]
    assert sorted(p.name for p in out.iterdir()) == ["int8.onnx"]  # no temporary file left
