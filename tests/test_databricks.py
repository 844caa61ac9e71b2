"""`--target databricks` end to end: the real CLI and the real databricks-ai-search client against the local
Vector Search emulator (tests/dbx_emulator.py). Nothing in the client is mocked. Every command runs with a
canary token, and no output of any command (error paths included) may contain it."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from conftest import EMBED, EMBED_OTHER, SAMPLE_DOCS

pytestmark = [pytest.mark.databricks, pytest.mark.slow]

pytest.importorskip("databricks.ai_search")

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default import mode)
    import dbx_emulator
except ImportError:  # pragma: no cover - tests/ became a package
    from tests import dbx_emulator

Emulator = dbx_emulator.Emulator

TOKEN = "dapi-CANARY-5f2a9c"
WRONG_TOKEN = "dapi-CANARY-wrong-7d1e"
SP_ID, SP_SECRET = "ragcli-sp", "sp-secret-CANARY-91b3"
CANARIES = (TOKEN, WRONG_TOKEN, SP_SECRET)
EP = "ragcli-ep"
IDX = "main.ragcli.chunks"
CHUNK_COLUMNS = {"id", "kind", "text", "source", "position", "file_sha256", "chunk_tokens", "embedding"}
SAMPLE_QA = SAMPLE_DOCS / "qa.jsonl"
SMALL_FILES = ("overview.md", "delta-lake-tables.md", "text-embeddings.md")


@pytest.fixture
def emu():
    with Emulator(tokens={TOKEN}, endpoints=[EP], service_principals={SP_ID: SP_SECRET}) as e:
        yield e


@pytest.fixture
def dbx(emu, model_env, monkeypatch):
    """The emulator, with ragcli pointed at it through the environment (fast retries for the fault tests)."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("DATABRICKS_HOST", emu.url)
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("RAGCLI_DATABRICKS_ENDPOINT", EP)
    monkeypatch.setenv("RAGCLI_DATABRICKS_INDEX", IDX)
    monkeypatch.setenv("RAGCLI_DATABRICKS_RETRIES", "4")
    monkeypatch.setenv("RAGCLI_DATABRICKS_BACKOFF", "0.01")
    monkeypatch.setenv("RAGCLI_DATABRICKS_TIMEOUT", "5")
    return emu


@pytest.fixture
def run(cli):
    """`ragcli ARGS…` that also asserts no canary secret reached stdout or stderr."""

    def invoke(*args):
        result = cli(*args)
        for canary in CANARIES:
            assert canary not in result.output, f"secret leaked by ragcli {' '.join(map(str, args))}"
        assert "Traceback" not in result.output and "[NOTICE]" not in result.output
        return result

    return invoke


@pytest.fixture
def small(docs, tmp_path, monkeypatch) -> Path:
    """Three short Markdown files, split with the fast sentence splitter."""
    folder = tmp_path / "small"
    folder.mkdir()
    for name in SMALL_FILES:
        (folder / name).write_bytes((docs / name).read_bytes())
    monkeypatch.setenv("RAGCLI_SPLITTER", "sentence")
    return folder


def chunk_rows(emu) -> dict[str, dict]:
    return {r["id"]: r for r in emu.rows(IDX) if r["kind"] == "chunk"}


def upserted_ids(emu) -> list[str]:
    return [row["id"] for r in emu.requests("upsert-data") if r.status == 200 for row in r.body["inputs_json"]]


def deleted_ids(emu) -> list[str]:
    return [k for r in emu.requests("delete-data") if r.status == 200 for k in r.body["primary_keys"]]


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    return result.stderr


# -- the whole flow on sample_docs ----------------------------------------------------------------------
def test_ingest_query_bench_and_incremental_updates(dbx, run, docs):
    emu = dbx
    first = run("ingest", docs, "--target", "databricks", "--json")
    assert first.exit_code == 0, first.output
    report = first.json()
    on_disk = {p.relative_to(docs).as_posix() for p in docs.rglob("*") if p.suffix in (".md", ".markdown", ".docx")}
    assert {f["file"] for f in report["files"]} == on_disk
    assert report["summary"]["added"] == len(on_disk) and report["published"] is True
    assert report["generation"] == IDX and report["target"] == "databricks"
    assert report["chunks_embedded"] == report["chunks_total"]

    # Rows: one per chunk with ragcli's columns, plus the manifest row.
    info = emu.index_info(IDX)
    assert info["index_type"] == "DIRECT_ACCESS" and info["primary_key"] == "id"
    assert info["direct_access_index_spec"]["embedding_vector_columns"] == [{"name": "embedding", "embedding_dimension": 32}]
    rows = chunk_rows(emu)
    assert len(rows) == report["chunks_total"]
    for row in rows.values():
        assert set(row) == CHUNK_COLUMNS
        assert row["source"] in on_disk and row["text"].strip() and len(row["embedding"]) == 32
        assert isinstance(row["position"], int) and row["chunk_tokens"] > 0 and len(row["file_sha256"]) == 64
    per_file = {f["file"]: f["chunks"] for f in report["files"]}
    assert all(sum(1 for r in rows.values() if r["source"] == name) == n for name, n in per_file.items())
    [manifest_row] = [r for r in emu.rows(IDX) if r["kind"] == "manifest"]
    manifest = json.loads(manifest_row["text"])
    assert manifest["embed"]["model"] == EMBED and manifest["embed"]["dim"] == 32
    assert manifest["chunks"] == len(rows) and set(manifest["files"]) == on_disk
    assert all(len(r.body["inputs_json"]) <= 200 for r in emu.requests("upsert-data"))  # default batch size

    # The same question, local and remote: same JSON keys, same passages, same (cosine) scores.
    assert run("ingest", docs, "--json").exit_code == 0
    question = "How long are deleted files of Delta tables kept?"
    local = run("query", "--context", "--json", question)
    remote = run("query", "--context", "--json", "--target", "databricks", question)
    assert local.exit_code == 0 and remote.exit_code == 0, remote.output
    lj, rj = local.json(), remote.json()
    assert set(rj) == set(lj) and rj["target"] == "databricks" and rj["generation"] == IDX
    assert rj["sources"] and set(rj["sources"][0]) == set(lj["sources"][0])
    assert set(rj["with_context"]) == set(lj["with_context"])
    assert [(s["file"], s["position"]) for s in rj["sources"]] == [(s["file"], s["position"]) for s in lj["sources"]]
    for a, b in zip(rj["sources"], lj["sources"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)
    hybrid = run("query", "--context", "--json", "--target", "databricks", "--mode", "hybrid", question).json()
    bm25 = run("query", "--context", "--json", "--target", "databricks", "--mode", "bm25", question).json()
    assert hybrid["sources"] and bm25["sources"]
    searches = [q for q in emu.requests("query") if q.body["columns"] == ["id", "source", "position", "text"]]
    assert {q.body.get("query_type") for q in searches} == {None, "HYBRID", "FULL_TEXT"}
    assert all(json.loads(q.body["filters_json"]) == {"kind": "chunk"} for q in searches)  # never the manifest row

    # bench reads the remote index like the local one. Answers are scored on a few questions only: the tiny
    # generator needs about a second per question here, and answers use the same search as retrieval.
    qa = docs.parent / "qa-short.jsonl"
    qa.write_text("".join((docs / "qa.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)[:4]))
    bench = run("bench", "--target", "databricks", "--modes", "dense,hybrid", "--no-startup", "--json", "-", "--qa", qa)
    assert bench.exit_code == 0, bench.output
    b = bench.json()
    assert b["target"] == "databricks" and set(b["retrieval"]) == {"dense", "hybrid"} and b["questions"] == 4
    assert b["index"]["generation"] == IDX and b["index"]["chunks"] == len(rows) and b["index"]["files"] == len(on_disk)
    assert b["index"]["embed"]["model"] == EMBED and b["index"]["corpus_sha256"] == manifest["corpus_sha256"]
    assert b["retrieval"]["dense"]["hit_rate"] > 0 and b["answers"]["with_context"]
    assert "search_dense" in b["retrieval"]["dense"]["latency_ms"]

    # Unchanged re-ingest: nothing read into the embedder, nothing sent.
    emu.clear_log()
    again = run("ingest", docs, "--target", "databricks", "--json")
    assert again.exit_code == 0, again.output
    a = again.json()
    assert a["summary"]["unchanged"] == len(on_disk) and a["chunks_embedded"] == 0 and a["texts_embedded"] == 0
    assert a["published"] is False
    assert emu.requests("upsert-data") == [] and emu.requests("delete-data") == []

    # Edit one file, add one, delete one: exactly their rows change.
    before = chunk_rows(emu)
    edited, removed = "delta-lake-tables.md", "incident-log.md"
    with open(docs / edited, "a", encoding="utf-8") as fh:
        fh.write("\n\nThe audit team reviews every retention change on the first Monday of each quarter.\n")
    (docs / "guides" / "new-note.md").write_text("# Parking\n\nVisitors park in the north lot next to the "
                                                 "loading dock. Badges are issued at the front desk.\n")
    (docs / removed).unlink()
    emu.clear_log()
    third = run("ingest", docs, "--target", "databricks", "--json")
    assert third.exit_code == 0, third.output
    t = third.json()
    status = {f["file"]: f["status"] for f in t["files"]}
    assert status[edited] == "changed" and status["guides/new-note.md"] == "added" and status[removed] == "removed"
    assert t["summary"]["unchanged"] == len(on_disk) - 2
    after = chunk_rows(emu)
    touched = {edited, "guides/new-note.md", removed}
    assert {k: v for k, v in before.items() if v["source"] not in touched} == \
        {k: v for k, v in after.items() if v["source"] not in touched}
    sent = upserted_ids(emu)
    assert set(sent) - {"__ragcli_manifest__"} == {k for k, v in after.items() if v["source"] in (edited, "guides/new-note.md")}
    assert set(deleted_ids(emu)) == {k for k, v in before.items() if v["source"] in (edited, removed)} - set(after)
    assert not any(v["source"] == removed for v in after.values())
    assert len(after) == t["chunks_total"]
    assert t["chunks_embedded"] < sum(1 for v in after.values() if v["source"] in (edited, "guides/new-note.md"))


# -- faults on the way in ---------------------------------------------------------------------------------
def test_transient_failures_mid_upsert_are_retried_and_nothing_is_lost(dbx, run, small, monkeypatch):
    emu = dbx
    monkeypatch.setenv("RAGCLI_DATABRICKS_BATCH_ROWS", "4")
    monkeypatch.setenv("RAGCLI_DATABRICKS_TIMEOUT", "0.5")
    emu.fail("get-index", 503, times=2)  # GETs are retried by ragcli too
    emu.delay("upsert-data", 0, times=2)  # two batches go through ...
    emu.fail("upsert-data", 500, times=1)  # ... then a server error,
    emu.reset_connection("upsert-data", times=1)  # a dropped connection,
    emu.delay("upsert-data", 1.5, times=1)  # and a timeout (the server applies that one late: still harmless)
    result = run("ingest", small, "--target", "databricks", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    rows = chunk_rows(emu)
    assert len(rows) == report["chunks_total"] > 8
    faults = [r.fault for r in emu.requests("upsert-data")]
    assert faults[:5] == ["delay:0", "delay:0", "status:500", "reset", "delay:1.5"]
    assert emu.faults_pending() == 0
    answered = [row["id"] for r in emu.requests("upsert-data") if r.status == 200 and r.fault != "delay:1.5"
                for row in r.body["inputs_json"]]
    assert len(answered) == len(set(answered))  # each row was written once by the answered upserts ...
    time.sleep(1.2)  # ... and when the timed-out one lands late it only rewrites the same rows
    assert chunk_rows(emu) == rows


def test_ragcli_retries_replace_the_library_ones_only_inside_ragcli(dbx, run, small):
    from databricks.ai_search.client import AISearchClient

    from ragcli.config import load_settings
    from ragcli.targets.databricks.client import DatabricksClient
    from ragcli.targets.databricks.credentials import resolve_config

    assert run("ingest", small, "--target", "databricks").exit_code == 0
    remote = DatabricksClient(resolve_config(load_settings(), need_endpoint=False))
    dbx.fail("get-index", 503, times=3)
    started = time.monotonic()
    assert remote.get_index(missing_ok=False) is not None
    assert time.monotonic() - started < 2  # ragcli's backoff (0.01 s here), not the library's 0 + 2 + 4 s
    assert dbx.faults_pending() == 0

    client = AISearchClient(workspace_url=dbx.url, personal_access_token=TOKEN, disable_notice=True)
    dbx.clear_log()
    dbx.fail("get-index", 503, times=1)
    assert client.get_index(index_name=IDX).name == IDX  # outside ragcli the library's own retry still works
    assert [r.status for r in dbx.requests("get-index")] == [503, 200]


def test_reused_chunks_without_vectors_in_the_scan_are_embedded_again(dbx, run, small, monkeypatch):
    assert run("ingest", small, "--target", "databricks").exit_code == 0
    original = dbx_emulator._struct_value
    monkeypatch.setattr(dbx_emulator, "_struct_value",
                        lambda v: {} if isinstance(v, list) else original(v))  # scan without the vector column
    path = small / "overview.md"
    path.write_text("A new first sentence about parking.\n\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    dbx.clear_log()
    result = run("ingest", small, "--target", "databricks", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    sent = [r for q in dbx.requests("upsert-data") for r in q.body["inputs_json"] if r["kind"] == "chunk"]
    assert sent and all(r["source"] == "overview.md" and r["embedding"] == "<vector dim=32>" for r in sent)
    assert report["chunks_reused"] == 0 and report["chunks_embedded"] == len(sent)
    assert all(len(r["embedding"]) == 32 for r in chunk_rows(dbx).values())


def test_429_is_retried_after_retry_after(dbx, run, small):
    emu = dbx
    emu.fail("upsert-data", 429, times=1, retry_after=1)
    started = time.monotonic()
    result = run("ingest", small, "--target", "databricks", "--json")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 1.0
    assert [r.status for r in emu.requests("upsert-data")][:2] == [429, 200]
    assert len(chunk_rows(emu)) == result.json()["chunks_total"]


def test_rejected_rows_are_named_and_retried_by_the_next_ingest(dbx, run, small, monkeypatch):
    emu = dbx
    original = dbx_emulator._row_problem

    def rejects(row) -> bool:  # every other chunk of overview.md
        return row.get("source") == "overview.md" and row.get("position", 0) % 2 == 1

    def reject_some(idx, row):
        return "rejected by the test" if rejects(row) else original(idx, row)

    monkeypatch.setattr(dbx_emulator, "_row_problem", reject_some)
    message = error_line(run("ingest", small, "--target", "databricks", "--json"))
    rejected = [r["id"] for q in emu.requests("upsert-data") for r in q.body["inputs_json"] if rejects(r)]
    assert rejected and f"{len(rejected)} of" in message and rejected[0] in message and IDX in message
    assert "run the same ingest again" in message
    assert not set(rejected) & set(chunk_rows(emu))
    manifest = json.loads([r for r in emu.rows(IDX) if r["kind"] == "manifest"][0]["text"])
    assert manifest["files"]["overview.md"]["status"] == "partial"

    monkeypatch.setattr(dbx_emulator, "_row_problem", original)
    retried = run("ingest", small, "--target", "databricks", "--json")
    assert retried.exit_code == 0, retried.output
    report = retried.json()
    status = {f["file"]: f["status"] for f in report["files"]}
    assert status == {"overview.md": "changed", "delta-lake-tables.md": "unchanged", "text-embeddings.md": "unchanged"}
    assert set(rejected) <= set(chunk_rows(emu)) and len(chunk_rows(emu)) == report["chunks_total"]
    assert report["chunks_embedded"] == len(rejected)  # the stored rows' vectors were re-used from the scan


def test_an_interrupted_ingest_is_finished_by_the_next_one(dbx, run, small):
    emu = dbx
    assert run("ingest", small, "--target", "databricks").exit_code == 0
    with open(small / "overview.md", "a", encoding="utf-8") as fh:
        fh.write("\n\nThe team moved to the fourth floor in May.\n")
    emu.delay("upsert-data", 0, times=1)  # the chunk rows go in ...
    emu.fail("upsert-data", 400, times=1, message="Simulated failure of the manifest row.")  # ... the manifest not
    message = error_line(run("ingest", small, "--target", "databricks"))
    assert "rejected the request" in message and "Simulated failure" in message
    finished = run("ingest", small, "--target", "databricks", "--json")
    assert finished.exit_code == 0, finished.output
    report = finished.json()
    assert {f["file"]: f["status"] for f in report["files"]}["overview.md"] == "changed"
    assert report["chunks_embedded"] == 0  # the interrupted run's rows are trusted for their vectors only
    manifest = json.loads([r for r in emu.rows(IDX) if r["kind"] == "manifest"][0]["text"])
    from ragcli.types import sha256_file

    assert manifest["files"]["overview.md"]["sha256"] == sha256_file(small / "overview.md")
    assert len(chunk_rows(emu)) == report["chunks_total"] == manifest["chunks"]


def test_unparseable_error_body(dbx, run, small):
    dbx.fail_unparseable("get-index", 500, times=None)
    message = error_line(run("ingest", small, "--target", "databricks"))
    assert "HTTP 500" in message and "not JSON" in message and "upstream connect error" in message
    assert "after 5 attempts" in message and dbx.url in message


# -- refusals before anything is written ------------------------------------------------------------------
def test_dimension_mismatch_is_refused_before_any_upload(dbx, run, small):
    from ragcli.targets.databricks.rows import SCHEMA

    dbx.create_direct_access_index(EP, IDX, primary_key="id", embedding_dimension=16,
                                   embedding_vector_column="embedding", schema=SCHEMA)
    message = error_line(run("ingest", small, "--target", "databricks"))
    assert "16-d" in message and "32-d" in message and EMBED in message and "RAGCLI_DATABRICKS_INDEX" in message
    assert dbx.requests("upsert-data") == [] and dbx.rows(IDX) == []


def test_another_embedding_model_is_refused_until_rebuild(dbx, run, small):
    assert run("ingest", small, "--target", "databricks").exit_code == 0
    dbx.clear_log()
    message = error_line(run("ingest", small, "--target", "databricks", "--embed-model", EMBED_OTHER))
    assert EMBED in message and EMBED_OTHER in message and "--rebuild" in message
    assert dbx.requests("upsert-data") == []
    message = error_line(run("query", "--context", "--target", "databricks", "--embed-model", EMBED_OTHER, "What?"))
    assert EMBED in message and EMBED_OTHER in message
    rebuilt = run("ingest", small, "--target", "databricks", "--embed-model", EMBED_OTHER, "--rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads([r for r in dbx.rows(IDX) if r["kind"] == "manifest"][0]["text"])["embed"]["model"] == EMBED_OTHER
    assert run("query", "--context", "--target", "databricks", "--embed-model", EMBED_OTHER, "What?").exit_code == 0


def test_wrong_token(dbx, run, small, monkeypatch):
    monkeypatch.setenv("DATABRICKS_TOKEN", WRONG_TOKEN)
    message = error_line(run("ingest", small, "--target", "databricks"))
    assert f"authentication failed for {dbx.url}" in message and "DATABRICKS_TOKEN" in message
    message = error_line(run("query", "--context", "--target", "databricks", "What?"))
    assert f"authentication failed for {dbx.url}" in message


def test_service_principal(dbx, run, small, monkeypatch):
    monkeypatch.delenv("DATABRICKS_TOKEN")
    monkeypatch.setenv("DATABRICKS_CLIENT_ID", SP_ID)
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", SP_SECRET)
    assert run("ingest", small, "--target", "databricks").exit_code == 0
    assert dbx.requests("oidc-token") and all(r.auth == "bearer" for r in dbx.requests("upsert-data"))
    monkeypatch.setenv("DATABRICKS_CLIENT_SECRET", SP_SECRET + "-wrong")
    message = error_line(run("query", "--context", "--target", "databricks", "What?"))
    assert "authentication failed" in message and "service principal" in message


def test_query_without_index_names_the_ingest_command(dbx, run):
    message = error_line(run("query", "--context", "--target", "databricks", "What is Lantern?"))
    assert IDX in message and "ragcli ingest --target databricks" in message
    bench = run("bench", "--target", "databricks", "--modes", "dense", "--no-startup", "--no-answers", "--qa",
                SAMPLE_QA)
    assert "ragcli ingest --target databricks" in error_line(bench)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"DATABRICKS_HOST": None}, "DATABRICKS_HOST is not set"),
        ({"DATABRICKS_HOST": "http://workspace.example.com"}, "https://"),
        ({"DATABRICKS_HOST": "workspace.example.com"}, "https://"),
        ({"DATABRICKS_TOKEN": None}, "DATABRICKS_TOKEN"),
        ({"DATABRICKS_CLIENT_ID": "someone"}, "DATABRICKS_CLIENT_SECRET"),
        ({"RAGCLI_DATABRICKS_INDEX": None}, "RAGCLI_DATABRICKS_INDEX is not set"),
        ({"RAGCLI_DATABRICKS_INDEX": "just-a-name"}, "catalog.schema.index"),
        ({"RAGCLI_DATABRICKS_ENDPOINT": None}, "RAGCLI_DATABRICKS_ENDPOINT is not set"),
        ({"RAGCLI_DATABRICKS_ENDPOINT": "no-such-ep"}, "'no-such-ep' (RAGCLI_DATABRICKS_ENDPOINT) does not exist"),
    ],
)
def test_configuration_errors_name_the_variable(dbx, run, small, monkeypatch, change, expected):
    for var, value in change.items():
        if value is None:
            monkeypatch.delenv(var)
        else:
            monkeypatch.setenv(var, value)
    assert expected in error_line(run("ingest", small, "--target", "databricks"))
    assert dbx.index_names() == []


def test_token_is_not_a_flag(dbx, run, small):
    result = run("ingest", small, "--target", "databricks", "--databricks-token", TOKEN)
    assert result.exit_code == 2 and "No such option" in result.stderr


def test_missing_extra_names_the_install_command(dbx, run, small, monkeypatch):
    for name in ("databricks", "databricks.ai_search", "databricks.ai_search.client", "databricks.vector_search",
                 "databricks.vector_search.client"):
        monkeypatch.setitem(sys.modules, name, None)
    for args in (("ingest", small), ("query", "--context", "What?")):
        message = error_line(run(*args, "--target", "databricks"))
        assert "pip install 'ragcli[databricks]'" in message


def test_flags_override_the_environment(dbx, run, small, monkeypatch):
    other = "main.flags.chunks"
    monkeypatch.setenv("RAGCLI_DATABRICKS_INDEX", "main.env.unused")
    monkeypatch.setenv("DATABRICKS_HOST", "https://unreachable.example.invalid")
    result = run("ingest", small, "--target", "databricks", "--databricks-index", other,
                 "--databricks-host", dbx.url + "/", "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["generation"] == other
    assert {r["kind"] for r in dbx.rows(other)} == {"chunk", "manifest"}
    data = run("query", "--context", "--json", "--target", "databricks", "--databricks-index", other,
               "--databricks-host", dbx.url, "What is chunking?").json()
    assert data["sources"] and data["target"] == "databricks"


def test_bench_never_ingests_into_a_remote_index(dbx, run, small):
    before = len(dbx.requests("upsert-data"))
    result = run("bench", "--target", "databricks", "--corpus", small, "--no-answers", "--no-startup", "--quiet")
    assert result.exit_code == 2 and "never changes a remote index" in result.stderr
    assert len(dbx.requests("upsert-data")) == before


def test_bench_compares_local_and_databricks_in_one_run(dbx, run, small, tmp_path):
    assert run("ingest", small, "--quiet").exit_code == 0
    assert run("ingest", small, "--target", "databricks", "--quiet").exit_code == 0
    qa = tmp_path / "qa.jsonl"
    rows = [{"id": f"q{i}", "question": f"What does {name} describe?", "answers": ["x"], "sources": [name]}
            for i, name in enumerate(SMALL_FILES)]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "both.json"
    result = run("bench", "--targets", "local,databricks", "--qa", qa, "--modes", "dense", "--no-answers",
                 "--no-startup", "--quiet", "--json", out, "--fail-under", "databricks.dense.hit_rate=0.0")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["targets"]) == {"local", "databricks"}
    local, remote = report["targets"]["local"], report["targets"]["databricks"]
    # Same vectors, same exact ranking: the two targets agree on quality.
    for name in ("hit_rate", "recall", "mrr", "ndcg"):
        assert local["retrieval"]["dense"][name] == pytest.approx(remote["retrieval"]["dense"][name])
    assert report["metrics"]["local.dense.mrr"] == local["metrics"]["dense.mrr"]
    assert "Targets side by side" in result.stdout
    assert run("bench", "--targets", "local", "--qa", qa, "--quiet").exit_code == 2
    assert run("bench", "--targets", "local,databricks", "--target", "local", "--qa", qa, "--quiet").exit_code == 2
