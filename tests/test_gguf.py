"""GGUF generators: a .gguf path or a folder holding one loads through transformers and the gguf
package; download-model --file fetches exactly one named file from a (fake) Hub."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("gguf")

from tiny_gguf import write_tiny_gguf  # noqa: E402

from ragcli import registry  # noqa: E402
from ragcli.config import load_settings  # noqa: E402
from ragcli.errors import ModelDownloadError, ModelLoadError, UsageError  # noqa: E402
from ragcli.models import gguf_file_of, load_generator  # noqa: E402


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-q.gguf")


def test_gguf_file_of(tmp_path, tiny_gguf):
    assert gguf_file_of(tiny_gguf) == tiny_gguf
    assert gguf_file_of(tiny_gguf.parent) == tiny_gguf
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    shutil.copy(tiny_gguf, hf / "x.gguf")
    assert gguf_file_of(hf) is None  # a Hugging Face folder: its safetensors are the model
    (tmp_path / "notes.txt").write_text("x")
    assert gguf_file_of(tmp_path / "notes.txt") is None
    two = tmp_path / "two"
    two.mkdir()
    shutil.copy(tiny_gguf, two / "a.gguf")
    shutil.copy(tiny_gguf, two / "b.gguf")
    with pytest.raises(ModelLoadError, match=r"several GGUF files \(a.gguf, b.gguf\)"):
        gguf_file_of(two)
    assert registry.resolve_model(str(tiny_gguf), tmp_path).path == tiny_gguf.resolve()
    assert registry.resolve_model(str(tiny_gguf.parent), tmp_path).revision == "local"


@pytest.mark.slow
def test_gguf_generator_loads_from_a_file_and_a_folder(tiny_gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = load_settings({"gen_model": str(tiny_gguf), "models_dir": tmp_path, "max_new_tokens": 6}, env={})
    gen = load_generator(settings)
    assert gen.kind == "causal" and gen.chat_template and gen.path == tiny_gguf
    assert gen.max_input_tokens == 256 - 6
    first = gen.generate("the cat in the hat", 6)
    assert 1 <= first.new_tokens <= 6 and first.prompt_tokens > 5
    # The chat template from the file wraps the prompt; the result is what transformers itself generates.
    tok = AutoTokenizer.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(tiny_gguf.parent, gguf_file=tiny_gguf.name, dtype=torch.float32)
    text = tok.apply_chat_template([{"role": "user", "content": "the cat in the hat"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**ids, max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert first.text == expected
    # The folder holding the file is the same model.
    folder = load_generator(settings.replace(gen_model=str(tiny_gguf.parent)))
    assert folder.generate("the cat in the hat", 6).text == first.text


@pytest.mark.slow
def test_query_with_a_gguf_generator(cli, model_env, docs, tiny_gguf, monkeypatch):
    monkeypatch.setenv("RAGCLI_GEN_MODEL", str(tiny_gguf))
    monkeypatch.setenv("RAGCLI_MAX_NEW_TOKENS", "4")
    assert cli("ingest", docs, "--quiet").exit_code == 0
    result = cli("query", "--context", "--json", "How long are deleted files kept?")
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["gen_model"] == str(tiny_gguf) and data["with_context"]["new_tokens"] <= 4
    assert "de-quantizing" not in result.output  # transformers' own progress bar stays out of ragcli's output


def test_a_broken_gguf_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    settings = load_settings({"gen_model": str(bad), "models_dir": tmp_path}, env={})
    with pytest.raises(ModelLoadError) as info:
        load_generator(settings)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------- download --file

GGUF_REPO = "acme/tiny-gguf"


@pytest.fixture
def gguf_hub(tiny_gguf, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants
    from fake_hub import FakeHub

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(tiny_gguf, repo / "tiny-q4.gguf")
    shutil.copy(tiny_gguf, repo / "tiny-f32.gguf")
    (repo / "README.md").write_text("# tiny gguf\n")
    (repo / "weights.bin").write_bytes(b"\x80\x02pickle")
    with FakeHub() as server:
        server.add_repo(GGUF_REPO, repo)
        yield server


def _settings(hub, models: Path):
    return load_settings({"models_dir": models, "hf_endpoint": hub.url}, env={})


@pytest.mark.slow
def test_download_one_named_file_and_load_it(gguf_hub, tmp_path, tiny_gguf):
    from ragcli.hub import download_model

    models = tmp_path / "models"
    [result] = download_model([GGUF_REPO], _settings(gguf_hub, models), file="tiny-q4.gguf")
    assert result.files == ["tiny-q4.gguf"] and result.bytes == tiny_gguf.stat().st_size
    assert (result.path / "tiny-q4.gguf").read_bytes() == tiny_gguf.read_bytes()
    asked = {r.path for r in gguf_hub.requests}
    assert not any(p.endswith(("tiny-f32.gguf", "README.md", "weights.bin")) for p in asked)
    assert json.loads((models / registry.LOCK_NAME).read_text())["models"][GGUF_REPO]["files"] == {
        "tiny-q4.gguf": tiny_gguf.stat().st_size}
    resolved = registry.resolve_model(GGUF_REPO, models)
    assert resolved.revision == gguf_hub.repos[GGUF_REPO].sha
    gen = load_generator(load_settings({"models_dir": models, "gen_model": GGUF_REPO}, env={}))
    assert gen.revision == resolved.revision and gen.path.name == "tiny-q4.gguf"


@pytest.mark.slow
def test_download_file_refusals(gguf_hub, tmp_path):
    from ragcli.hub import download_model

    settings = _settings(gguf_hub, tmp_path / "models")
    with pytest.raises(ModelDownloadError, match=r"has no file 'nope.gguf'; its GGUF files: tiny-f32.gguf, tiny-q4.gguf"):
        download_model([GGUF_REPO], settings, file="nope.gguf")
    with pytest.raises(ModelDownloadError, match="is a pickle"):
        download_model([GGUF_REPO], settings, file="weights.bin")
    with pytest.raises(UsageError, match="one repo"):
        download_model([GGUF_REPO, "acme/other"], settings, file="tiny-q4.gguf")
    with pytest.raises(UsageError, match="--file names one file"):
        download_model([GGUF_REPO], settings, file="../x.gguf")
    # Without --file, a repo of GGUF files says how to get one.
    with pytest.raises(ModelDownloadError, match=r"--file tiny-f32.gguf"):
        download_model([GGUF_REPO], settings)
