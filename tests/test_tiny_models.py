"""The tiny test models load through the public APIs ragcli uses, offline, and install like downloads."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_models import DEFAULT_REVISION, TinyModels, build_tiny_models, install_in_models_dir

from ragcli.errors import ModelLoadError
from ragcli.registry import resolve_model

pytestmark = pytest.mark.slow

TEXT = "The vector index stores one embedding per chunk; search ranks chunks by cosine similarity."
ODD_TEXT = "Zyxwvut qwertyuiop 12345 naïve café — «quotes» ✓ 漢字 emoji 🙂 supercalifragilistic."


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TRANSFORMERS_OFFLINE", "1")
        return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def test_only_safetensors_weights_and_small(tiny: TinyModels) -> None:
    for folder in (tiny.embed, tiny.seq2seq, tiny.causal):
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert (folder / "model.safetensors").is_file()
        assert not [p for p in files if p.suffix in {".bin", ".pt", ".pth", ".ckpt"}]
        assert sum(p.stat().st_size for p in files) < 2_000_000


def test_build_is_deterministic(tiny: TinyModels, tmp_path: Path) -> None:
    again = build_tiny_models(tmp_path)
    for a, b in ((tiny.embed, again.embed), (tiny.seq2seq, again.seq2seq), (tiny.causal, again.causal)):
        assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
        assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_embed_loads_with_transformers(tiny: TinyModels) -> None:
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    assert AutoConfig.from_pretrained(tiny.embed).hidden_size == 32
    tokenizer = AutoTokenizer.from_pretrained(tiny.embed)
    assert tokenizer.model_max_length == 128
    model = AutoModel.from_pretrained(tiny.embed)
    batch = tokenizer([TEXT, ODD_TEXT], padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert out.last_hidden_state.shape[-1] == 32


@pytest.mark.parametrize("which", ["embed", "seq2seq", "causal"])
def test_tokenizers_handle_any_text_with_word_level_counts(tiny: TinyModels, which: str) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(getattr(tiny, which))
    known = tokenizer.tokenize(TEXT)
    # About one token per word: TEXT has 14 words and 2 punctuation marks, "stores" is "store ##s".
    assert 16 <= len(known) <= 20, known
    assert tokenizer.unk_token not in known
    assert tokenizer.decode(tokenizer.convert_tokens_to_ids(known)).startswith("the vector index stores")
    # Never fails: unknown words fall back to letter pairs and letters; only non-Latin scripts and
    # symbols become the unknown token.
    odd = tokenizer.tokenize(ODD_TEXT)
    assert len(ODD_TEXT.split()) < len(odd) < len(ODD_TEXT) / 1.5, odd
    assert tokenizer.tokenize("zyxwvut") == ["zy", "##xw", "##vu", "##t"]
    assert len(tokenizer("word " * 1000, truncation=True)["input_ids"]) == tokenizer.model_max_length


def test_embed_loads_with_sentence_transformers(tiny: TinyModels) -> None:
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny.embed), device="cpu")
    assert model.max_seq_length == 128
    vectors = model.encode([TEXT, ODD_TEXT, ""])
    assert vectors.shape == (3, 32)
    assert np.allclose(np.linalg.norm(vectors[:2], axis=1), 1.0, atol=1e-5)
    again = model.encode([TEXT])
    assert np.allclose(vectors[0], again[0], atol=1e-6)


def test_embed_loads_with_llama_index(tiny: TinyModels) -> None:
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embedding = HuggingFaceEmbedding(model_name=str(tiny.embed), device="cpu")
    assert len(embedding.get_text_embedding(TEXT)) == 32
    assert len(embedding.get_query_embedding("what is an index?")) == 32


def test_seq2seq_generates(tiny: TinyModels) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    assert AutoConfig.from_pretrained(tiny.seq2seq).is_encoder_decoder is True
    tokenizer = AutoTokenizer.from_pretrained(tiny.seq2seq)
    assert tokenizer.model_max_length == 512
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "</s>"
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny.seq2seq)
    inputs = tokenizer(
        ["question: what is a vector? context: " + TEXT, "hi"], padding=True, return_tensors="pt"
    )
    assert "token_type_ids" not in inputs
    assert inputs["input_ids"][0, -1].item() == tokenizer.eos_token_id
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.dtype == torch.long and out.shape[0] == 2 and 1 < out.shape[1] <= 9
    assert isinstance(tokenizer.decode(out[0], skip_special_tokens=True), str)


def test_causal_generates_from_chat_template(tiny: TinyModels) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    assert AutoConfig.from_pretrained(tiny.causal).is_encoder_decoder is False
    tokenizer = AutoTokenizer.from_pretrained(tiny.causal)
    assert tokenizer.chat_template
    assert tokenizer.model_max_length == 256
    assert None not in (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<s><|user|>\nhi</s>\n<|assistant|>\n"
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    assert "token_type_ids" not in inputs
    assert inputs["input_ids"][0].tolist() == tokenizer.convert_tokens_to_ids(
        ["<s>", "<|user|>", "hi", "</s>", "<|assistant|>"]
    )
    model = AutoModelForCausalLM.from_pretrained(tiny.causal)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    assert out.dtype == torch.long
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert out[0, : inputs["input_ids"].shape[1]].tolist() == inputs["input_ids"][0].tolist()


def test_installed_model_resolves_and_loads(tiny: TinyModels, tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    models_dir = tmp_path / "models"
    revision = "0123456789abcdef0123456789abcdef01234567"
    snapshot = install_in_models_dir(models_dir, "tiny-org/tiny-embed", tiny.embed, revision)
    assert snapshot == models_dir / "models--tiny-org--tiny-embed" / "snapshots" / revision
    assert (models_dir / "models--tiny-org--tiny-embed" / "refs" / "main").read_text() == revision

    resolved = resolve_model("tiny-org/tiny-embed", models_dir)
    assert resolved.path == snapshot
    assert resolved.revision == revision
    assert resolved.repo_id == "tiny-org/tiny-embed"
    assert SentenceTransformer(str(resolved.path), device="cpu").encode(["x"]).shape == (1, 32)

    default = install_in_models_dir(models_dir, "tiny-org/tiny-t5", tiny.seq2seq)
    assert resolve_model("tiny-org/tiny-t5", models_dir).revision == DEFAULT_REVISION == default.name
    # Both entries live in the one lock file.
    assert resolve_model("tiny-org/tiny-embed", models_dir).revision == revision


def test_incomplete_installed_model_is_a_load_error(tiny: TinyModels, tmp_path: Path) -> None:
    models_dir = tmp_path / "models"
    snapshot = install_in_models_dir(models_dir, "tiny-org/tiny-llama", tiny.causal)
    (snapshot / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        resolve_model("tiny-org/tiny-llama", models_dir)
