"""`--target databricks --index-kind delta-sync` end to end: the real CLI, databricks-sdk (SQL statements, Files
API) and databricks-ai-search (the index) against the emulator's workspace (tests/dbx_workspace.py), whose tables
are real Delta tables (delta-rs) and whose Delta Sync indexes read the tables' change data feed. The contract
suite (tests/test_target_contract.py) covers ingest/re-ingest/query/bench on a small corpus; here: sample_docs,
crashes between the writes and the sync, a stopped warehouse, hostile names, managed embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EMBED

pytestmark = [pytest.mark.databricks, pytest.mark.slow]

pytest.importorskip("databricks.ai_search")
pytest.importorskip("databricks.sdk")
pytest.importorskip("deltalake")

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default import mode)
    from dbx_emulator import Emulator
    from dbx_workspace import Workspace
except ImportError:  # pragma: no cover - tests/ became a package
    from tests.dbx_emulator import Emulator
    from tests.dbx_workspace import Workspace

TOKEN = "dapi-CANARY-deltasync-3e8f"
EP = "ragcli-ep"
INDEX = "main.ragcli.chunks_index"
TABLE = "main.ragcli.chunks"
VOLUME = "/Volumes/main/ragcli/staging"
WH = "wh0123abcd"
KIND = ("--target", "databricks", "--index-kind", "delta-sync")
SMALL = {
    "alpha.md": "# Alpha\n\nThe alpha service stores vectors in a flat index. Exact search keeps recall high.\n\n"
                "## Owners\n\nThe search team owns alpha and answers pages during office hours.\n",
    "beta.md": "# Beta\n\nBeta runs the nightly ingest job. Tables keep thirty days of versions.\n",
}


def letters(texts):
    """A model serving endpoint for managed embeddings: counts of a few letters (deterministic, no model)."""
    return [[t.lower().count(c) + 0.01 for c in "aeiost"] for t in texts]


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws", warehouses=[WH], volumes=["main.ragcli.staging"],
                     embedding_endpoints={"letters": letters})


@pytest.fixture
def dbx(ws, model_env, monkeypatch):
    with Emulator(tokens={TOKEN}, endpoints=[EP], workspace=ws) as emu:
        for var, value in {"no_proxy": "127.0.0.1,localhost", "DATABRICKS_HOST": emu.url, "DATABRICKS_TOKEN": TOKEN,
                           "RAGCLI_DATABRICKS_ENDPOINT": EP, "RAGCLI_DATABRICKS_INDEX": INDEX,
                           "RAGCLI_DATABRICKS_TABLE": TABLE, "RAGCLI_DATABRICKS_VOLUME": VOLUME,
                           "RAGCLI_DATABRICKS_WAREHOUSE": WH, "RAGCLI_DATABRICKS_RETRIES": "2",
                           "RAGCLI_DATABRICKS_BACKOFF": "0.01", "RAGCLI_DATABRICKS_TIMEOUT": "10"}.items():
            monkeypatch.setenv(var, value)
        yield emu


@pytest.fixture
def run(cli):
    def invoke(*args):
        result = cli(*args)
        assert TOKEN not in result.output and "Traceback" not in result.output and "[NOTICE]" not in result.output
        return result

    return invoke


@pytest.fixture
def small(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    for name, text in SMALL.items():
        (folder / name).write_text(text, encoding="utf-8")
    monkeypatch.setenv("RAGCLI_SPLITTER", "sentence")
    return folder


def table_chunks(ws) -> dict[str, dict]:
    return {r["id"]: r for r in ws.table_rows(TABLE) if r["kind"] == "chunk"}


def index_chunks(emu) -> dict[str, dict]:
    return {r["id"]: r for r in emu.rows(INDEX) if r["kind"] == "chunk"}


def statements(ws, verb: str) -> list:
    return [s for s in ws.executed if s.statement.lstrip().upper().startswith(verb)]


def same_rows(table: dict[str, dict], index: dict[str, dict]) -> bool:
    """The index serves exactly the table's chunk rows (vectors compared as float32, as both store them)."""
    import numpy as np

    if set(table) != set(index):
        return False
    for key, row in table.items():
        other = index[key]
        if any(row[c] != other[c] for c in ("text", "source", "position", "file_sha256", "chunk_tokens")):
            return False
        if not np.allclose(np.asarray(row["embedding"], np.float32), np.asarray(other["embedding"], np.float32)):
            return False
    return True


def ok(result) -> dict:
    assert result.exit_code == 0, result.output
    return result.json()


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


# -- the whole flow on sample_docs ----------------------------------------------------------------------------
def test_ingest_query_bench_status_on_sample_docs(dbx, ws, run, docs):
    emu = dbx
    report = ok(run("ingest", docs, *KIND, "--json"))
    on_disk = {p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.suffix in (".md", ".markdown", ".docx")}
    assert {f["file"] for f in report["files"]} == on_disk and report["summary"]["added"] == len(on_disk)
    assert report["published"] is True and report["target"] == "databricks" and report["generation"] == INDEX

    # The table: one row per chunk with CDF on, plus the manifest row; the index is a Delta Sync index over it
    # with self-managed vectors, synced to the table's last version.
    rows = table_chunks(ws)
    assert len(rows) == report["chunks_total"] and {r["source"] for r in rows.values()} == on_disk
    assert all(len(r["embedding"]) == 32 and len(r["file_sha256"]) == 64 and r["chunk_tokens"] > 0
               for r in rows.values())
    [manifest_row] = [r for r in ws.table_rows(TABLE) if r["kind"] == "manifest"]
    manifest = json.loads(manifest_row["text"])
    assert manifest["embed"]["model"] == EMBED and manifest["chunks"] == len(rows) and set(manifest["files"]) == on_disk
    info = emu.index_info(INDEX)
    spec = info["delta_sync_index_spec"]
    assert info["index_type"] == "DELTA_SYNC" and info["primary_key"] == "id"
    assert spec["source_table"] == TABLE and spec["pipeline_type"] == "TRIGGERED"
    assert spec["embedding_vector_columns"] == [{"name": "embedding", "embedding_dimension": 32}]
    assert same_rows(rows, index_chunks(emu))
    assert len(statements(ws, "CREATE")) == 1 and list((ws.volume_path(VOLUME) / "ragcli-staging" / TABLE).iterdir()) == []

    # Query: the same answer shape and the same passages as the local index built from the same files.
    assert ok(run("ingest", docs, "--json"))["published"]
    question = "How long are deleted files of Delta tables kept?"
    local = ok(run("query", "--context", "--json", question))
    remote = ok(run("query", "--context", "--json", *KIND, question))
    assert set(remote) == set(local) and remote["target"] == "databricks" and remote["generation"] == INDEX
    assert set(remote["with_context"]) == set(local["with_context"]) and remote["with_context"]["text"]
    assert [(s["file"], s["position"]) for s in remote["sources"]] == [(s["file"], s["position"]) for s in local["sources"]]
    for a, b in zip(remote["sources"], local["sources"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    for mode in ("bm25", "hybrid"):
        assert ok(run("query", "--context", "--json", *KIND, "--mode", mode, question))["sources"]
    searches = [q.body for q in emu.requests("query") if q.body["columns"] == ["id", "source", "position", "text"]]
    assert {b.get("query_type") for b in searches} == {None, "FULL_TEXT", "HYBRID"}
    assert all(json.loads(b["filters_json"]) == {"kind": "chunk"} for b in searches)

    # bench and status read it like the other targets.
    qa = docs.parent / "qa-short.jsonl"
    qa.write_text("".join((docs / "qa.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:3]))
    b = ok(run("bench", *KIND, "--modes", "dense,bm25", "--no-startup", "--json", "-", "--qa", qa))
    assert b["target"] == "databricks" and b["questions"] == 3 and set(b["retrieval"]) == {"dense", "bm25"}
    assert b["index"]["generation"] == INDEX and b["index"]["chunks"] == len(rows)
    assert b["index"]["corpus_sha256"] == manifest["corpus_sha256"] and b["retrieval"]["dense"]["hit_rate"] > 0
    status = ok(run("status", *KIND, "--json"))["index"]
    assert status["ok"] and status["chunks"] == len(rows) and status["index_type"] == "databricks-delta-sync"
    assert status["source_table"] == TABLE and status["pipeline_type"] == "TRIGGERED" and status["pipeline_id"]
    assert status["synced_version"] == ws.table_version(TABLE) and status["state"] == "ONLINE_NO_PENDING_UPDATE"

    # Unchanged re-ingest: no MERGE, no DELETE, no sync; the table keeps its version.
    version, executed, syncs = ws.table_version(TABLE), len(ws.executed), len(emu.requests("sync"))
    again = ok(run("ingest", docs, *KIND, "--json"))
    assert again["summary"]["unchanged"] == len(on_disk) and again["texts_embedded"] == 0 and not again["published"]
    assert ws.table_version(TABLE) == version and len(emu.requests("sync")) == syncs
    assert not [s for s in ws.executed[executed:] if s.statement.upper().startswith(("MERGE", "DELETE"))]

    # Edit one file, add one, remove one: exactly their rows change, in the table and then in the index.
    edited, removed = "delta-lake-tables.md", "incident-log.md"
    with open(docs / edited, "a", encoding="utf-8") as fh:
        fh.write("\n\nThe audit team reviews every retention change on the first Monday of each quarter.\n")
    (docs / "guides" / "new-note.md").write_text("# Parking\n\nVisitors park in the north lot next to the loading "
                                                 "dock. Badges are issued at the front desk.\n")
    (docs / removed).unlink()
    before = table_chunks(ws)
    third = ok(run("ingest", docs, *KIND, "--json"))
    status = {f["file"]: f["status"] for f in third["files"]}
    assert (status[edited], status["guides/new-note.md"], status[removed]) == ("changed", "added", "removed")
    after = table_chunks(ws)
    touched = {edited, "guides/new-note.md", removed}
    assert {k: v for k, v in before.items() if v["source"] not in touched} == \
        {k: v for k, v in after.items() if v["source"] not in touched}
    assert not any(v["source"] == removed for v in after.values()) and len(after) == third["chunks_total"]
    assert same_rows(after, index_chunks(emu))
    assert third["chunks_embedded"] < sum(1 for v in after.values() if v["source"] in touched)
    found = ok(run("query", "--context", "--json", *KIND, "--mode", "bm25", "Where do visitors park?"))
    assert found["sources"][0]["file"] == "guides/new-note.md"


# -- an ingest killed between the writes and the sync -------------------------------------------------------
# Runs `ragcli ARGS...` in a fresh interpreter whose Delta Sync client ends the process abruptly (no cleanup,
# no finally blocks) when it is about to create or sync the index: the table is written, the index is not.
KILL_SCRIPT = """
import os, sys
from ragcli.targets.delta_sync import client as module
def kill(*args, **kwargs):
    os._exit(137)
module.DeltaSyncClient.create_index = kill
module.DeltaSyncClient.sync = kill
sys.argv = ["ragcli", *sys.argv[1:]]
from ragcli.cli.app import main
main()
"""


def killed_ingest(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, "ingest", str(folder), *KIND, "--quiet"],
                          capture_output=True, text=True, timeout=300, env=dict(os.environ))


def test_an_ingest_killed_between_merge_and_sync_is_finished_by_the_next(dbx, ws, run, small):
    emu = dbx
    # The first ingest dies after writing the table, before the index exists.
    first = killed_ingest(small)
    assert first.returncode == 137, first.stderr
    rows = table_chunks(ws)
    assert rows and {r["source"] for r in rows.values()} == set(SMALL) and INDEX not in emu.index_names()
    message = error_line(run("query", "--context", "--json", *KIND, "Who owns alpha?"))  # no index yet
    assert f"no Databricks Vector Search index {INDEX}" in message and "--index-kind delta-sync" in message
    report = ok(run("ingest", small, *KIND, "--json"))
    assert report["published"] and report["chunks_embedded"] == 0  # nothing to re-embed: the table has it all
    assert same_rows(table_chunks(ws), index_chunks(emu)) and len(index_chunks(emu)) == report["chunks_total"]

    # A later ingest dies after its MERGE and DELETE, before the sync: the table is ahead of the index.
    (small / "beta.md").write_text(SMALL["beta.md"] + "\nThe nightly job finishes before six in the morning.\n",
                                   encoding="utf-8")
    served = index_chunks(emu)
    second = killed_ingest(small)
    assert second.returncode == 137, second.stderr
    ahead = table_chunks(ws)
    assert ahead != rows and index_chunks(emu) == served  # written, not synced
    rerun = ok(run("ingest", small, *KIND, "--json"))
    assert rerun["published"] and rerun["summary"]["unchanged"] == len(SMALL) and rerun["chunks_embedded"] == 0
    synced = index_chunks(emu)
    assert same_rows(table_chunks(ws), synced) and table_chunks(ws) == ahead  # nothing lost, nothing changed twice
    assert len(synced) == rerun["chunks_total"] == len({(r["source"], r["position"]) for r in synced.values()})
    for listed in ([r["id"] for r in ws.table_rows(TABLE)], [r["id"] for r in emu.rows(INDEX)]):
        assert len(listed) == len(set(listed)) == rerun["chunks_total"] + 1  # the chunks and the manifest row
    assert emu.index_info(INDEX)["status"]["triggered_update_status"]["last_processed_commit_version"] == \
        ws.table_version(TABLE)
    found = ok(run("query", "--context", "--json", *KIND, "--mode", "bm25", "When does the nightly job finish?"))
    assert found["sources"][0]["file"] == "beta.md" and "six" in found["sources"][0]["text"]


def test_a_failed_sync_is_a_clear_error_and_the_next_ingest_syncs(dbx, ws, run, small):
    emu = dbx
    ok(run("ingest", small, *KIND, "--json"))
    (small / "alpha.md").unlink()
    ws.fail_next_sync(INDEX, "the pipeline lost its cluster")
    message = error_line(run("ingest", small, *KIND))
    assert "ONLINE_PIPELINE_FAILED" in message and "lost its cluster" in message and TABLE in message
    assert ok(run("ingest", small, *KIND, "--json"))["published"]
    assert {r["source"] for r in index_chunks(emu).values()} == {"beta.md"}


# -- the warehouse -----------------------------------------------------------------------------------------
def test_a_stopped_warehouse_is_one_clear_line(dbx, ws, run, small, monkeypatch):
    ws.stop_warehouse(WH, start_seconds=None)  # it never comes up: statements stay PENDING
    monkeypatch.setenv("RAGCLI_DATABRICKS_STATEMENT_TIMEOUT", "1")
    message = error_line(run("ingest", small, *KIND))
    assert f"SQL warehouse {WH} is STARTING" in message and "Start the warehouse" in message
    assert "RAGCLI_DATABRICKS_STATEMENT_TIMEOUT" in message and ws.executed[-1].state == "CANCELED"
    assert not ws.table_exists(TABLE)

    ws.stop_warehouse(WH, start_seconds=0.2)  # an auto-start that works: the ingest waits for it
    monkeypatch.setenv("RAGCLI_DATABRICKS_STATEMENT_TIMEOUT", "60")
    assert ok(run("ingest", small, *KIND, "--json"))["published"]


def test_missing_settings_name_the_variable(dbx, run, small, monkeypatch):
    monkeypatch.delenv("RAGCLI_DATABRICKS_WAREHOUSE")
    assert "RAGCLI_DATABRICKS_WAREHOUSE" in error_line(run("ingest", small, *KIND))
    result = run("ingest", small, *KIND[:2], "--index-kind", "delta")
    assert result.exit_code == 2 and "direct-access, delta-sync" in result.output


# -- statements are parameterised ---------------------------------------------------------------------------
def test_hostile_file_names_and_text_never_reach_the_statement_text(dbx, ws, run, small):
    emu = dbx
    hostile = "it's\"; DROP TABLE main.ragcli.chunks; --.md"
    body = "# Quote's\n\nO'Brien said: '); DELETE FROM main.ragcli.chunks WHERE ('1'='1. The vault opens at noon.\n"
    (small / hostile).write_text(body, encoding="utf-8")
    report = ok(run("ingest", small, *KIND, "--json"))
    assert hostile in {f["file"] for f in report["files"]}
    stored = [r for r in table_chunks(ws).values() if r["source"] == hostile]
    assert stored and any("O'Brien said: '); DELETE FROM" in r["text"] for r in stored)  # verbatim
    for st in ws.executed:
        assert hostile not in st.statement and "O'Brien" not in st.statement and "vault" not in st.statement
        assert TABLE not in st.statement and VOLUME not in st.statement
        assert "IDENTIFIER(:table)" in st.statement
    assert any(p["value"] == TABLE for st in ws.executed for p in st.parameters)
    found = ok(run("query", "--context", "--json", *KIND, "--mode", "bm25", "When does the vault open?"))
    assert found["sources"][0]["file"] == hostile

    (small / hostile).unlink()  # its rows go by id, in a DELETE whose ids are parameters too
    ok(run("ingest", small, *KIND, "--json"))
    assert not [r for r in table_chunks(ws).values() if r["source"] == hostile]
    [delete] = statements(ws, "DELETE")
    assert {p["value"] for p in delete.parameters if p["name"] != "table"} == {r["id"] for r in stored}
    assert not [r for r in index_chunks(emu).values() if r["source"] == hostile]


# -- managed embeddings --------------------------------------------------------------------------------------
def test_managed_embeddings_send_the_question_text(dbx, ws, run, small, monkeypatch):
    emu = dbx
    monkeypatch.setenv("RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT", "letters")
    report = ok(run("ingest", small, *KIND, "--json"))
    assert report["published"]
    assert all(r["embedding"] is None for r in ws.table_rows(TABLE))  # the index embeds `text` itself
    spec = emu.index_info(INDEX)["delta_sync_index_spec"]
    assert spec["embedding_source_columns"] == [{"name": "text", "embedding_model_endpoint_name": "letters"}]
    assert not spec.get("embedding_vector_columns")
    answer = ok(run("query", "--context", "--json", *KIND, "Who owns alpha?"))
    assert answer["sources"]
    [dense] = [q.body for q in emu.requests("query") if q.body["columns"] == ["id", "source", "position", "text"]]
    assert dense.get("query_text") == "Who owns alpha?" and not dense.get("query_vector")
    status = ok(run("status", *KIND, "--json"))["index"]
    assert status["embedding_endpoint"] == "letters" and status["chunks"] == report["chunks_total"]
    again = ok(run("ingest", small, *KIND, "--json"))
    assert not again["published"] and again["summary"]["unchanged"] == len(SMALL)


# -- another model, a rebuild, another dimension -----------------------------------------------------------
def test_another_model_is_refused_until_rebuild_and_the_index_keeps_its_dimension(dbx, ws, run, small):
    from conftest import EMBED_OTHER

    emu = dbx
    first = ok(run("ingest", small, *KIND, "--json"))
    version = ws.table_version(TABLE)
    message = error_line(run("ingest", small, *KIND, "--embed-model", EMBED_OTHER))
    assert EMBED in message and EMBED_OTHER in message and "--index-kind delta-sync --rebuild" in message
    assert ws.table_version(TABLE) == version  # refused before anything was written

    rebuilt = ok(run("ingest", small, *KIND, "--embed-model", EMBED_OTHER, "--rebuild", "--json"))
    assert rebuilt["chunks_embedded"] == rebuilt["chunks_total"] == first["chunks_total"]
    ids = [r["id"] for r in ws.table_rows(TABLE)]
    assert len(ids) == len(set(ids)) == first["chunks_total"] + 1  # same chunk ids, merged over the old rows
    manifest = json.loads([r for r in emu.rows(INDEX) if r["kind"] == "manifest"][0]["text"])
    assert manifest["embed"]["model"] == EMBED_OTHER  # the index serves the rebuilt content
    assert same_rows(table_chunks(ws), index_chunks(emu))
    assert ok(run("query", "--context", "--json", *KIND, "--embed-model", EMBED_OTHER, "Who owns alpha?"))["sources"]



def test_an_index_of_another_dimension_is_refused_before_any_write(dbx, ws, run, small):
    from databricks.ai_search.client import AISearchClient

    from ragcli.targets.delta_sync import rows as table

    ws.create_table(TABLE, dict(table.COLUMNS))
    client = AISearchClient(workspace_url=dbx.url, personal_access_token=TOKEN, disable_notice=True)
    client.create_delta_sync_index(endpoint_name=EP, index_name=INDEX, primary_key="id", source_table_name=TABLE,
                                   pipeline_type="TRIGGERED", embedding_dimension=16, embedding_vector_column="embedding")
    version = ws.table_version(TABLE)
    message = error_line(run("ingest", small, *KIND))
    assert "16-d" in message and "32-d" in message and "RAGCLI_DATABRICKS_TABLE" in message
    assert ws.table_version(TABLE) == version and not statements(ws, "MERGE")
