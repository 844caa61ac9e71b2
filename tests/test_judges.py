"""Reranking and the faithfulness score, with tiny random cross-encoders built from configs: the
reranker reorders the top candidates by its own scores; the faithfulness score is the entailment
probability of the answer given its passages, in [0, 1], in every output shape."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

K = 3
DEPTH = 8
NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}


def _build_classifier(dest: Path, tokenizer_src: Path, num_labels: int, id2label: dict[int, str] | None,
                      seed: int) -> Path:
    """A BERT sequence classifier (hidden 32) with random weights and the tiny embedder's tokenizer,
    saved in Hugging Face layout (safetensors)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_src)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=num_labels,
                        pad_token_id=tokenizer.pad_token_id,
                        **({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}))
    from transformers.utils import logging as hf_logging

    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger output weights, so scores spread (random init gives near-ties)
        model.classifier.weight.mul_(20)
    hf_logging.disable_progress_bar()
    try:
        model.save_pretrained(dest, safe_serialization=True)
        tokenizer.save_pretrained(dest)
    finally:
        hf_logging.enable_progress_bar()
    return dest


@pytest.fixture(scope="session")
def cross_encoder(tiny_models, tmp_path_factory) -> Path:
    return _build_classifier(tmp_path_factory.mktemp("tiny-ce") / "ce", tiny_models.embed, 1, None, 7)


@pytest.fixture(scope="session")
def nli(tiny_models, tmp_path_factory) -> Path:
    return _build_classifier(tmp_path_factory.mktemp("tiny-nli") / "nli", tiny_models.embed, 3, NLI_LABELS, 11)


def _direct_logits(path: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    """The model's logits computed here, independently of ragcli.judges (one pair at a time)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    out = []
    with torch.no_grad():
        for a, b in pairs:
            enc = tok(a, b, truncation=True, max_length=min(tok.model_max_length, 512), return_tensors="pt")
            out.append(model(**enc).logits[0].numpy())
    return np.asarray(out)


@pytest.fixture
def index(cli, model_env, docs):
    result = cli("ingest", docs, "--quiet")
    assert result.exit_code == 0, result.output
    return docs


QUESTION = "How long are deleted files of Delta tables kept?"


def test_reranker_reorders_the_candidates_by_its_scores(cli, index, cross_encoder):
    plain = cli("query", "--context", "--json", "-k", str(DEPTH), "--max-new-tokens", "2", QUESTION).json()
    candidates = plain["sources"]
    assert len(candidates) == DEPTH
    result = cli("query", "--context", "--json", "-k", str(K), "--rerank", cross_encoder, "--rerank-depth",
                 str(DEPTH), "--max-new-tokens", "2", QUESTION)
    assert result.exit_code == 0, result.output
    data = result.json()
    scores = _direct_logits(cross_encoder, [(QUESTION, c["text"]) for c in candidates])[:, 0]
    expected = [candidates[i]["chunk_id"] for i in np.argsort(-scores, kind="stable")[:K]]
    assert [s["chunk_id"] for s in data["sources"]] == expected
    assert [s["rank"] for s in data["sources"]] == [1, 2, 3]
    assert [s["score"] for s in data["sources"]] == pytest.approx(sorted(scores, reverse=True)[:K], abs=1e-4)
    assert expected != [c["chunk_id"] for c in candidates[:K]]  # the order really changed
    assert "rerank" in data["timings"]


def test_reranker_applies_to_every_mode(cli, index, cross_encoder):
    for mode in ("bm25", "hybrid"):
        data = cli("query", "--context", "--json", "--mode", mode, "-k", "2", "--rerank", cross_encoder,
                   "--max-new-tokens", "2", QUESTION).json()
        assert len(data["sources"]) == 2 and data["sources"][0]["score"] >= data["sources"][1]["score"]
        assert "rerank" in data["timings"]


def test_a_reranker_needs_one_output(cli, index, nli):
    result = cli("query", "--context", "--rerank", nli, QUESTION)
    assert result.exit_code == 1
    assert "3 outputs" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def _expected_faithfulness(nli: Path, answer: str, passages: list[str]) -> float:
    logits = _direct_logits(nli, [(p, answer) for p in passages])
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return float(probs[:, 0].max())


def test_faithfulness_in_query_json_text_and_stream(cli, index, nli):
    result = cli("query", "--compare", "--json", "--faithfulness", nli, "--max-new-tokens", "6", QUESTION)
    assert result.exit_code == 0, result.output
    data = result.json()
    ctx, bare = data["with_context"], data["without_context"]
    passages = [s["text"] for s in data["sources"] if s["used_in_prompt"]]
    for a in (ctx, bare):
        assert 0.0 <= a["faithfulness"] <= 1.0
        assert a["faithfulness"] == pytest.approx(_expected_faithfulness(nli, a["text"], passages), abs=1e-4)
    assert "faithfulness" in data["timings"]

    text = cli("query", "--context", "--faithfulness", nli, "--max-new-tokens", "6", QUESTION)
    assert text.exit_code == 0 and f"faithfulness {ctx['faithfulness']:.2f}" in text.stdout
    stream = cli("query", "--context", "--stream", "--faithfulness", nli, "--max-new-tokens", "6", QUESTION)
    assert stream.exit_code == 0 and f"Faithfulness: {ctx['faithfulness']:.2f}" in stream.stdout
    # Without a judge configured, there is no score (and no judge is loaded).
    assert cli("query", "--context", "--json", "--max-new-tokens", "2", QUESTION).json()["with_context"][
        "faithfulness"] is None


def test_faithfulness_needs_an_entailment_label(cli, index, cross_encoder):
    result = cli("query", "--context", "--faithfulness", cross_encoder, QUESTION)
    assert result.exit_code == 1
    assert "no 'entailment' label" in result.stderr


def test_post_query_and_chat_carry_faithfulness(index, nli, settings):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from ragcli.serve.server import build

    app = build(settings.replace(faithfulness_model=str(nli), max_new_tokens=4))
    with TestClient(app) as client:
        body = client.post("/query", json={"query": QUESTION, "top_k": 2, "query_context": True}).json()
        assert 0.0 <= body["with_context"]["faithfulness"] <= 1.0
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]})
        assert chat.status_code == 200, chat.text
        assert 0.0 <= chat.json()["ragcli"]["faithfulness"] <= 1.0


@pytest.mark.slow
def test_bench_scores_with_and_without_reranker_and_faithfulness(cli, model_env, docs, cross_encoder, nli,
                                                                 tmp_path):
    report_path = tmp_path / "bench.json"
    qa = docs / "qa-few.jsonl"  # a few questions: the tiny generator answers each twice
    qa.write_text("".join((docs / "qa.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:6]),
                  encoding="utf-8")
    result = cli("bench", "--qa", qa, "--corpus", docs, "--modes", "dense", "--no-startup",
                 "--pairs", "1", "--rerank", cross_encoder, "--rerank-depth", "6", "--faithfulness", nli,
                 "--json", report_path, "--fail-under", "answers.context.faithfulness=0", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    plain, reranked = report["retrieval"]["dense"], report["retrieval"]["dense+rerank"]
    assert "rerank" in reranked["latency_ms"] and "rerank" not in plain["latency_ms"]
    assert [q["retrieved"] for q in plain["per_question"]] != [q["retrieved"] for q in reranked["per_question"]]
    assert "dense+rerank.ndcg" in report["metrics"]
    for side in ("context", "bare"):
        assert 0.0 <= report["metrics"][f"answers.{side}.faithfulness"] <= 1.0
    assert report["fingerprint"]["retrieval"]["rerank_model"] == str(cross_encoder)
    assert report["gates"]["passed"] is True


def test_judges_are_loaded_once(nli, settings):
    from ragcli.judges import load_judge

    s = settings.replace(faithfulness_model=str(nli))
    assert load_judge(s) is load_judge(s)


@pytest.fixture(scope="session")
def late_interaction(tiny_models, tmp_path_factory) -> Path:
    """A tiny random multi-vector (ColBERT-style) model saved by sentence-transformers'
    MultiVectorEncoder: a 2-layer BERT with the tiny embedder's tokenizer under its default modules."""
    pytest.importorskip("sentence_transformers.multi_vector_encoder")
    import torch
    from sentence_transformers import MultiVectorEncoder
    from transformers import AutoTokenizer, BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny-late")
    tokenizer = AutoTokenizer.from_pretrained(tiny_models.embed)
    torch.manual_seed(5)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(root / "bert", safe_serialization=True)
    tokenizer.save_pretrained(root / "bert")
    model = MultiVectorEncoder(str(root / "bert"), device="cpu", local_files_only=True)
    model.save(str(root / "late"))
    return root / "late"


def _maxsim(path: Path, question: str, passages: list[str]) -> np.ndarray:
    """MaxSim computed here from the model's token vectors: for each question token the best dot
    product with any passage token, summed."""
    import torch
    from sentence_transformers import MultiVectorEncoder

    model = MultiVectorEncoder(str(path), device="cpu", local_files_only=True)
    with torch.no_grad():
        q = model.encode_query([question])[0]
        out = []
        for p in passages:
            d = model.encode_document([p])[0]
            out.append(float((torch.as_tensor(q) @ torch.as_tensor(d).T).max(dim=1).values.sum()))
    return np.asarray(out)


def test_late_interaction_reranker_orders_by_maxsim(cli, index, late_interaction):
    from ragcli.judges import late_interaction_type

    assert late_interaction_type(late_interaction) == "MultiVectorEncoder"
    plain = cli("query", "--context", "--json", "-k", str(DEPTH), "--max-new-tokens", "2", QUESTION).json()
    candidates = plain["sources"]
    result = cli("query", "--context", "--json", "-k", str(K), "--rerank", late_interaction, "--rerank-depth",
                 str(DEPTH), "--max-new-tokens", "2", QUESTION)
    assert result.exit_code == 0, result.output
    data = result.json()
    scores = _maxsim(late_interaction, QUESTION, [c["text"] for c in candidates])
    expected = [candidates[i]["chunk_id"] for i in np.argsort(-scores, kind="stable")[:K]]
    assert [s["chunk_id"] for s in data["sources"]] == expected
    assert [s["score"] for s in data["sources"]] == pytest.approx(sorted(scores, reverse=True)[:K], rel=1e-3)
    assert "rerank" in data["timings"]
