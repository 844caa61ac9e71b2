"""The whole local flow through the real CLI: ingest sample_docs, query with, without and side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import EMBED, EMBED_OTHER, GEN

pytestmark = pytest.mark.slow


@pytest.fixture
def ingested(cli, model_env, docs):
    result = cli("ingest", docs, "--json")
    assert result.exit_code == 0, result.output
    return result.json()


def test_ingest_reads_markdown_and_docx(ingested, docs):
    names = {f["file"] for f in ingested["files"]}
    on_disk = {p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.suffix in (".md", ".markdown", ".docx")}
    assert names == on_disk
    assert any(n.endswith(".docx") for n in names) and any(n.startswith("guides/") for n in names)
    assert all(f["status"] == "added" and f["chunks"] > 0 for f in ingested["files"])
    assert ingested["summary"]["added"] == len(on_disk)
    assert ingested["chunks_total"] == sum(f["chunks"] for f in ingested["files"])
    assert ingested["chunks_embedded"] == ingested["chunks_total"]
    assert ingested["published"] is True and ingested["generation"] == "gen-000001"
    assert ingested["embed_model"] == EMBED


def test_chunks_respect_the_token_cap(ingested):
    from transformers import AutoTokenizer

    from ragcli.config import load_settings
    from ragcli.registry import resolve_model
    from ragcli.store import LocalIndex

    settings = load_settings()
    gen = LocalIndex(settings.index_dir).load()
    tok = AutoTokenizer.from_pretrained(resolve_model(EMBED, settings.models_dir).path)
    cap = gen.splitter["max_chunk_tokens"]
    assert cap <= 128 - 2  # the tiny encoder's window less [CLS]/[SEP]
    lengths = [len(tok(c.text, add_special_tokens=False)["input_ids"]) for c in gen.chunks]
    assert max(lengths) <= cap
    assert all(c.text.strip() for c in gen.chunks)


def test_reingest_unchanged_embeds_nothing(cli, ingested, docs):
    again = cli("ingest", docs, "--json")
    assert again.exit_code == 0, again.output
    data = again.json()
    assert data["summary"]["unchanged"] == len(ingested["files"])
    assert data["chunks_embedded"] == 0 and data["texts_embedded"] == 0
    assert data["published"] is False and data["generation"] == ingested["generation"]


def test_ingest_summary_table(cli, model_env, docs):
    result = cli("ingest", docs)
    assert result.exit_code == 0, result.output
    assert "added" in result.stdout and "chunks" in result.stdout
    assert "published gen-000001" in result.stdout


def test_query_with_context_json(cli, ingested):
    result = cli("query", "--context", "--json", "-k", "3", "Which FAISS index does the team use for the main corpus?")
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["question"].startswith("Which FAISS")
    assert data["without_context"] is None
    answer = data["with_context"]
    assert isinstance(answer["text"], str) and answer["with_context"] is True
    assert answer["passages_used"] + answer["passages_left_out"] == 3
    assert len(data["sources"]) == 3
    files = {f["file"] for f in ingested["files"]}
    for rank, src in enumerate(data["sources"], 1):
        assert src["rank"] == rank and src["file"] in files and src["position"] >= 0
        assert -1.0 <= src["score"] <= 1.0001
    scores = [s["score"] for s in data["sources"]]
    assert scores == sorted(scores, reverse=True)
    assert set(data["timings"]) >= {"embed_question", "search_dense", "generate_context"}


def test_query_without_context_uses_no_index(cli, model_env):
    # No index exists, and a bare question does not need one.
    result = cli("query", "--json", "What is a vector index?")
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["with_context"] is None and data["sources"] == []
    assert isinstance(data["without_context"]["text"], str)


def test_query_compare_prints_both_answers_and_sources(cli, ingested):
    result = cli("query", "--compare", "How long are Delta table versions kept?")
    assert result.exit_code == 0, result.output
    assert "With context" in result.stdout and "Without context" in result.stdout
    assert "Sources" in result.stdout
    assert any(f["file"] in result.stdout for f in ingested["files"])


def test_query_compare_json_is_deterministic(cli, ingested):
    first = cli("query", "--compare", "--json", "What does the nightly job do?").json()
    second = cli("query", "--compare", "--json", "What does the nightly job do?").json()
    assert first["with_context"]["text"] == second["with_context"]["text"]
    assert first["without_context"]["text"] == second["without_context"]["text"]
    assert [s["chunk_id"] for s in first["sources"]] == [s["chunk_id"] for s in second["sources"]]


def test_query_top_k_larger_than_index_is_clamped(cli, model_env, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "a.md").write_text("# Tiny\n\nA single short document about vector search.\n", encoding="utf-8")
    assert cli("ingest", one).exit_code == 0
    data = cli("query", "--context", "--json", "-k", "50", "vector search?").json()
    assert 1 <= len(data["sources"]) <= 2
    assert all(s["chunk_id"] >= 0 for s in data["sources"])


def test_query_without_index_names_ingest(cli, model_env):
    result = cli("query", "--context", "anything?")
    assert result.exit_code == 1
    assert "No index in" in result.stderr and "ragcli ingest" in result.stderr
    assert "Traceback" not in result.output


def test_missing_model_names_download_command(cli, model_env, docs):
    result = cli("ingest", docs, "--embed-model", "someorg/not-downloaded")
    assert result.exit_code == 1
    assert "ragcli download-model someorg/not-downloaded" in result.stderr
    result = cli("query", "--gen-model", "someorg/no-generator", "hi?")
    assert result.exit_code == 1
    assert "ragcli download-model someorg/no-generator" in result.stderr


def test_index_of_another_model_is_refused(cli, ingested, docs):
    before = (Path("ragcli-index") / "CURRENT").read_text()
    result = cli("ingest", docs, "--embed-model", EMBED_OTHER)
    assert result.exit_code == 1
    assert "--rebuild" in result.stderr and EMBED in result.stderr
    assert (Path("ragcli-index") / "CURRENT").read_text() == before
    result = cli("query", "--context", "--embed-model", EMBED_OTHER, "what?")
    assert result.exit_code == 1
    assert f"built with {EMBED}" in result.stderr
    rebuilt = cli("ingest", docs, "--embed-model", EMBED_OTHER, "--rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert rebuilt.json()["embed_model"] == EMBED_OTHER


def test_local_model_folder_works_without_models_dir(cli, tiny_models, docs, tmp_path):
    result = cli("ingest", docs / "guides", "--embed-model", tiny_models.embed, "--models-dir", tmp_path / "empty",
                 "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["embed_model"] == str(tiny_models.embed)


def test_causal_generator_answers(cli, ingested, tiny_models):
    result = cli("query", "--compare", "--json", "--gen-model", tiny_models.causal, "--max-new-tokens", "5",
                 "What is FAISS?")
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["with_context"]["new_tokens"] <= 5


def test_status_reports_index_and_models(cli, ingested):
    data = cli("status", "--json").json()
    idx = data["index"]
    assert idx["ok"] and idx["generation"] == "gen-000001"
    assert idx["files"] == len(ingested["files"]) and idx["chunks"] == ingested["chunks_total"]
    assert idx["embed_model"] == EMBED and idx["dimension"] == 32 and idx["size_bytes"] > 0
    assert EMBED in data["models"] and GEN in data["models"]
    text = cli("status")
    assert text.exit_code == 0 and "gen-000001" in text.stdout


def test_python_dash_m_and_entry_point(model_env, docs, tmp_path):
    import subprocess
    import sys

    env = dict(__import__("os").environ)
    out = subprocess.run([sys.executable, "-m", "ragcli", "ingest", str(docs / "guides"), "--json", "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["summary"]["added"] == 3
    script = Path(sys.executable).with_name("ragcli")
    out = subprocess.run([str(script), "query", "--context", "--json", "What is semantic chunking?"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["sources"]


def test_status_on_an_empty_folder_says_what_to_run(cli):
    result = cli("status")
    assert result.exit_code == 0
    assert "No index in" in result.stdout and "ragcli ingest" in result.stdout
    assert "No models in" in result.stdout and "ragcli download-model" in result.stdout


def test_a_failing_command_prints_only_its_error_line(cli, model_env):
    result = cli("ingest", "nowhere")
    assert result.exit_code == 1
    assert result.stdout == "" and result.stderr.startswith("Error: nowhere")
