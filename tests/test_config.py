"""Settings precedence (flag > environment > .env > default), validation and secret masking."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragcli.config import DEFAULT_EMBED_MODEL, DEFAULT_GEN_MODEL, Secret, known_secrets, load_settings, redact
from ragcli.errors import ConfigError


def test_defaults(tmp_path):
    s = load_settings(env={}, cwd=tmp_path)
    assert s.embed_model == DEFAULT_EMBED_MODEL and s.gen_model == DEFAULT_GEN_MODEL
    assert s.models_dir == (Path.cwd() / "models").resolve()
    assert s.index_dir == (Path.cwd() / "ragcli-index").resolve()
    assert (s.target, s.top_k, s.mode, s.splitter) == ("local", 4, "dense", "semantic")


def test_precedence_flag_over_env_over_dotenv_over_default(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("RAGCLI_TOP_K=7\nRAGCLI_GEN_MODEL=dotenv/gen\nRAGCLI_MODE=bm25\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_settings().top_k == 7  # .env over default
    monkeypatch.setenv("RAGCLI_TOP_K", "9")
    s = load_settings()
    assert s.top_k == 9  # environment over .env
    assert s.gen_model == "dotenv/gen" and s.mode == "bm25"
    assert load_settings({"top_k": 2, "mode": None}).top_k == 2  # flag over environment
    assert load_settings({"mode": None}).mode == "bm25"  # a flag not given does not override


def test_dotenv_never_changes_the_process_environment(tmp_path, monkeypatch):
    import os

    (tmp_path / ".env").write_text("RAGCLI_EMBED_MODEL=from/dotenv\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_settings().embed_model == "from/dotenv"
    assert "RAGCLI_EMBED_MODEL" not in os.environ


def test_model_id_is_accepted_for_the_generator(monkeypatch):
    monkeypatch.setenv("MODEL_ID", "org/legacy-gen")
    assert load_settings().gen_model == "org/legacy-gen"
    monkeypatch.setenv("RAGCLI_GEN_MODEL", "org/preferred")
    assert load_settings().gen_model == "org/preferred"


@pytest.mark.parametrize(("var", "value", "fragment"), [
    ("RAGCLI_TOP_K", "many", "not a whole number"),
    ("RAGCLI_TOP_K", "0", "out of range"),
    ("RAGCLI_MODE", "semantic", "not one of"),
    ("RAGCLI_HYBRID_ALPHA", "1.5", "out of range"),
    ("RAGCLI_DEBUG", "maybe", "not a boolean"),
])
def test_bad_values_name_the_variable(monkeypatch, var, value, fragment):
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var in str(info.value) and fragment in str(info.value)


def test_secrets_are_masked_everywhere(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_CANARYtoken123")
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-CANARY-777")
    s = load_settings()
    assert isinstance(s.hf_token, Secret) and s.hf_token.get() == "hf_CANARYtoken123"
    assert "CANARY" not in repr(s) and "CANARY" not in str(s.public())
    assert s.public()["hf_token"] == "***"
    text = "request failed: Authorization: Bearer dapi-CANARY-777 token=hf_CANARYtoken123"
    assert "CANARY" not in redact(text)
    assert set(known_secrets(s)) >= {"hf_CANARYtoken123", "dapi-CANARY-777"}


def test_cli_error_line_masks_a_token(cli, monkeypatch):
    # A bad value that happens to contain the token must still not print it.
    monkeypatch.setenv("HF_TOKEN", "hf_CANARYabcdef")
    monkeypatch.setenv("RAGCLI_GEN_MODEL", "hf_CANARYabcdef")
    result = cli("query", "hello?")
    assert result.exit_code == 1
    assert "hf_CANARYabcdef" not in result.output and "***" in result.stderr
