"""Query instructions come from the embedding model's own files when it is given as a folder."""

from __future__ import annotations

import json
import shutil

import pytest
from tiny_models import install_in_models_dir

from ragcli.models import instructions_for

BGE = "Represent this sentence for searching relevant passages: "


def _with_prompts(src, dest, prompts):
    shutil.copytree(src, dest)
    path = dest / "config_sentence_transformers.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["prompts"] = prompts
    path.write_text(json.dumps(config), encoding="utf-8")
    return dest


def test_prompts_in_the_sentence_transformers_config_are_used(tiny_models, tmp_path):
    folder = _with_prompts(tiny_models.embed, tmp_path / "my-embedder", {"query": "search_query: ",
                                                                          "document": "search_document: "})
    assert instructions_for(str(folder), folder) == ("search_query: ", "search_document: ")
    assert instructions_for(str(folder)) == ("", "")  # the name alone says nothing


def test_a_downloaded_folder_given_by_path_is_looked_up_by_its_recorded_repo_id(tiny_models, tmp_path):
    snapshot = install_in_models_dir(tmp_path / "models", "BAAI/bge-small-en-v1.5", tiny_models.embed)
    assert instructions_for(str(snapshot), snapshot) == (BGE, "")
    # Any recorded id is looked up the same way.
    e5 = install_in_models_dir(tmp_path / "models", "intfloat/e5-small-v2", tiny_models.embed, "5" * 40)
    assert instructions_for(str(e5), e5) == ("query: ", "passage: ")


def test_a_plain_folder_without_prompts_gets_none(tiny_models, tmp_path):
    folder = shutil.copytree(tiny_models.embed, tmp_path / "bge-small-en-v1.5-copy")
    assert instructions_for(str(folder), folder) == ("", "")


@pytest.mark.slow
def test_the_loaded_embedder_uses_them(tiny_models, tmp_path):
    from ragcli.config import load_settings
    from ragcli.models import load_embedder

    folder = _with_prompts(tiny_models.embed, tmp_path / "e", {"query": "Query for retrieval: "})
    embedder = load_embedder(load_settings({"embed_model": str(folder), "models_dir": tmp_path / "m"}, env={}))
    assert embedder.query_instruction == "Query for retrieval: " and embedder.text_instruction == ""
    assert embedder.info()["query_instruction"] == "Query for retrieval: "
    plain = load_embedder(load_settings({"embed_model": str(tiny_models.embed), "models_dir": tmp_path / "m"}, env={}))
    assert plain.query_instruction == "" and not (embedder.embed_query("x") == plain.embed_query("x")).all()
