"""The workspace half of the emulator (SQL statements on Delta tables, the Files API, Delta Sync indexes),
driven through the real clients: databricks-sdk's WorkspaceClient and databricks-ai-search 0.81."""

from __future__ import annotations

import io
import json
import time

import pytest

pytestmark = pytest.mark.databricks

pytest.importorskip("databricks.ai_search")
pytest.importorskip("databricks.sdk")
pytest.importorskip("deltalake")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from databricks.ai_search.client import AISearchClient  # noqa: E402
from databricks.ai_search.exceptions import BadRequest, ResourceConflict  # noqa: E402
from databricks.sdk import WorkspaceClient  # noqa: E402
from databricks.sdk.errors import BadRequest as SdkBadRequest  # noqa: E402
from databricks.sdk.errors import NotFound  # noqa: E402
from databricks.sdk.errors import ResourceConflict as SdkConflict  # noqa: E402
from databricks.sdk.service.sql import (  # noqa: E402
    ExecuteStatementRequestOnWaitTimeout,
    StatementParameterListItem,
    StatementState,
)

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default import mode)
    from dbx_emulator import Emulator
    from dbx_workspace import Workspace
except ImportError:  # pragma: no cover - tests/ became a package
    from tests.dbx_emulator import Emulator
    from tests.dbx_workspace import Workspace

TOKEN = "dapi-workspace-0123456789"
WH = "wh-ragcli"
TABLE = "main.ragcli.chunks"
VOLUME = "/Volumes/main/ragcli/staging"
CREATE = ("CREATE TABLE IF NOT EXISTS IDENTIFIER(:table) (id STRING NOT NULL, text STRING, source STRING, "
          "position INT, embedding ARRAY<FLOAT>) USING DELTA TBLPROPERTIES (delta.enableChangeDataFeed = true)")
MERGE = ("MERGE INTO IDENTIFIER(:table) AS t USING (SELECT * FROM read_files(:path, format => 'parquet')) AS s "
         "ON t.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")


@pytest.fixture(autouse=True)
def _client_env(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws", warehouses=[WH], volumes=["main.ragcli.staging"], result_chunk_rows=2,
                     embedding_endpoints={"bag-of-letters": _letters})


@pytest.fixture
def emu(ws):
    with Emulator(tokens={TOKEN}, endpoints=["ep"], service_principals={"sp-id": "sp-secret-value"},
                  workspace=ws) as e:
        yield e


@pytest.fixture
def w(emu):
    return WorkspaceClient(host=emu.url, token=TOKEN, auth_type="pat")


def _letters(texts):
    """A deterministic stand-in for an embedding model: letter counts a..d."""
    return [[t.lower().count(c) + 0.01 for c in "abcd"] for t in texts]


def sql(w, statement, *, wait="10s", on_timeout=None, **params):
    return w.statement_execution.execute_statement(
        statement=statement, warehouse_id=WH, wait_timeout=wait, on_wait_timeout=on_timeout,
        parameters=[StatementParameterListItem(name=k, value=None if v is None else str(v),
                                               type="INT" if isinstance(v, int) else "STRING")
                    for k, v in params.items()])


def ok(response):
    assert response.status.state == StatementState.SUCCEEDED, response.status
    return response


def upload_rows(w, path, rows):
    schema = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                        ("position", pa.int32()), ("embedding", pa.list_(pa.float32()))])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    w.files.upload(path, io.BytesIO(buf.getvalue()), overwrite=True)


def row(i, text, source="a.md", vector=(1.0, 0.0)):
    return {"id": str(i), "text": text, "source": source, "position": i, "embedding": list(vector)}


def test_create_merge_select_delete_on_a_delta_table_with_change_data_feed(w, ws):
    ok(sql(w, CREATE, table=TABLE))
    ok(sql(w, CREATE, table=TABLE))  # IF NOT EXISTS
    assert ws.table_version(TABLE) == 0
    upload_rows(w, f"{VOLUME}/run-1/part-0.parquet", [row(1, "one"), row(2, "two"), row(3, "three", "b.md")])
    merged = ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/run-1/"))
    assert [c.name for c in merged.manifest.schema.columns] == ["num_affected_rows", "num_updated_rows",
                                                               "num_deleted_rows", "num_inserted_rows"]
    assert merged.result.data_array == [["3", "0", "0", "3"]]
    upload_rows(w, f"{VOLUME}/run-2.parquet", [row(2, "two again", vector=(0.25, 0.5))])
    assert ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/run-2.parquet")).result.data_array == [["1", "1", "0", "0"]]
    deleted = ok(sql(w, "DELETE FROM IDENTIFIER(:table) WHERE id IN (:id0, :id1)", table=TABLE, id0="1", id1="9"))
    assert deleted.result.data_array == [["1"]]
    assert ws.table_version(TABLE) == 3

    got = ok(sql(w, "SELECT id, text, position, embedding FROM IDENTIFIER(:table) ORDER BY id", table=TABLE))
    assert [(c.name, c.type_text) for c in got.manifest.schema.columns] == [
        ("id", "STRING"), ("text", "STRING"), ("position", "INT"), ("embedding", "ARRAY<FLOAT>")]
    assert got.result.data_array == [["2", "two again", "2", "[0.25,0.5]"], ["3", "three", "3", "[1.0,0.0]"]]
    by_source = ok(sql(w, "SELECT id FROM IDENTIFIER(:table) WHERE source = :s", table=TABLE, s="b.md"))
    assert by_source.result.data_array == [["3"]]
    history = ok(sql(w, "DESCRIBE HISTORY IDENTIFIER(:table) LIMIT 1", table=TABLE))
    assert history.result.data_array[0][0] == "3" and history.result.data_array[0][2] == "DELETE"
    ok(sql(w, "DELETE FROM IDENTIFIER(:table) WHERE source = :s", table=TABLE, s="b.md"))
    assert [r["id"] for r in ws.table_rows(TABLE)] == ["2"]

    from deltalake import DeltaTable

    changes = pa.table(DeltaTable(str(ws.table_path(TABLE))).load_cdf(starting_version=1).read_all())
    kinds = sorted((r["_commit_version"], r["_change_type"], r["id"]) for r in changes.to_pylist())
    assert (2, "update_postimage", "2") in kinds and (3, "delete", "1") in kinds and (4, "delete", "3") in kinds


def test_results_come_in_chunks_the_client_pages_through(w, ws):
    ok(sql(w, CREATE, table=TABLE))
    upload_rows(w, f"{VOLUME}/rows.parquet", [row(i, f"t{i}") for i in range(5)])
    ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/rows.parquet"))
    first = ok(sql(w, "SELECT id FROM IDENTIFIER(:table) ORDER BY id", table=TABLE))
    assert first.manifest.total_row_count == 5 and first.manifest.total_chunk_count == 3
    ids = [r[0] for r in first.result.data_array]
    nxt = first.result.next_chunk_index
    while nxt is not None:
        chunk = w.statement_execution.get_statement_result_chunk_n(first.statement_id, nxt)
        ids += [r[0] for r in chunk.data_array]
        nxt = chunk.next_chunk_index
    assert ids == ["0", "1", "2", "3", "4"]


def test_parameters_are_data_and_other_statements_fail_as_databricks_reports_them(w, ws, emu):
    ok(sql(w, CREATE, table=TABLE))
    hostile = "x') OR 1=1; DROP TABLE main.ragcli.chunks; --"
    empty = ok(sql(w, "SELECT id FROM IDENTIFIER(:table) WHERE source = :s", table=TABLE, s=hostile))
    assert empty.result is None and empty.manifest.total_row_count == 0
    assert ws.table_exists(TABLE)

    unbound = sql(w, "SELECT id FROM IDENTIFIER(:table) WHERE source = :s", table=TABLE)
    assert unbound.status.state == StatementState.FAILED
    assert unbound.status.error.message.startswith("[UNBOUND_SQL_PARAMETER]") and unbound.status.sql_state == "42P02"
    other = sql(w, "DROP TABLE main.ragcli.chunks")
    assert other.status.state == StatementState.FAILED
    assert "[PARSE_SYNTAX_ERROR]" in other.status.error.message and other.status.error.error_code.value == "BAD_REQUEST"
    missing = sql(w, "SELECT id FROM IDENTIFIER(:table)", table="main.ragcli.nope")
    assert "[TABLE_OR_VIEW_NOT_FOUND]" in missing.status.error.message
    no_path = sql(w, MERGE, table=TABLE, path=f"{VOLUME}/none/")
    assert "[PATH_NOT_FOUND]" in no_path.status.error.message
    upload_rows(w, f"{VOLUME}/dup.parquet", [row(1, "a"), row(1, "b")])
    dup = sql(w, MERGE, table=TABLE, path=f"{VOLUME}/dup.parquet")
    assert "MULTIPLE_SOURCE_ROW" in dup.status.error.message
    with pytest.raises(SdkBadRequest, match="wait_timeout"):
        sql(w, CREATE, table=TABLE, wait="3s")

    logged = [r.body for r in emu.requests("sql-execute")]
    assert any(b["statement"].endswith("WHERE source = :s") and {"name": "s", "value": hostile, "type": "STRING"}
               in b["parameters"] for b in logged)
    assert all(hostile not in b["statement"] for b in logged)
    assert ws.executed[1].parameters[1]["value"] == hostile


def test_a_stopped_warehouse_starts_and_keeps_statements_pending_meanwhile(w, ws):
    ok(sql(w, CREATE, table=TABLE))
    ws.stop_warehouse(WH, start_seconds=0.6)
    assert w.warehouses.get(WH).state.value == "STOPPED"
    started = time.monotonic()
    pending = sql(w, "SELECT id FROM IDENTIFIER(:table)", table=TABLE, wait="0s")
    assert pending.status.state == StatementState.PENDING and time.monotonic() - started < 0.5
    assert w.warehouses.get(WH).state.value == "STARTING"
    deadline = time.monotonic() + 10
    state = pending.status.state
    while state in (StatementState.PENDING, StatementState.RUNNING) and time.monotonic() < deadline:
        time.sleep(0.1)
        state = w.statement_execution.get_statement(pending.statement_id).status.state
    assert state == StatementState.SUCCEEDED and time.monotonic() - started >= 0.6
    assert w.warehouses.get(WH).state.value == "RUNNING"
    with pytest.raises(NotFound):
        w.statement_execution.execute_statement(statement="SELECT 1", warehouse_id="no-such-warehouse")


@pytest.mark.slow  # the shortest wait_timeout the API takes is 5 s
def test_a_warehouse_that_never_starts_leaves_statements_pending_until_cancelled(w, ws):
    ok(sql(w, CREATE, table=TABLE))
    ws.stop_warehouse(WH, start_seconds=None)  # never comes back
    cancelled = sql(w, "SELECT id FROM IDENTIFIER(:table)", table=TABLE, wait="5s",
                    on_timeout=ExecuteStatementRequestOnWaitTimeout.CANCEL)
    assert cancelled.status.state == StatementState.CANCELED
    waiting = sql(w, "SELECT id FROM IDENTIFIER(:table)", table=TABLE, wait="0s")
    w.statement_execution.cancel_execution(waiting.statement_id)
    time.sleep(0.1)
    assert w.statement_execution.get_statement(waiting.statement_id).status.state == StatementState.CANCELED
    assert ws.warehouse_state(WH) == "STARTING"


def test_files_api_on_a_volume(w, ws, emu):
    w.files.upload(f"{VOLUME}/a b/x.bin", io.BytesIO(b"\x00\x01hello"), overwrite=True)
    assert ws.volume_path(f"{VOLUME}/a b/x.bin").read_bytes() == b"\x00\x01hello"
    assert w.files.download(f"{VOLUME}/a b/x.bin").contents.read() == b"\x00\x01hello"
    assert w.files.get_metadata(f"{VOLUME}/a b/x.bin").content_length == 7
    with pytest.raises(SdkConflict):
        w.files.upload(f"{VOLUME}/a b/x.bin", io.BytesIO(b"other"), overwrite=False)
    w.files.create_directory(f"{VOLUME}/empty/sub")
    w.files.get_directory_metadata(f"{VOLUME}/empty/sub")
    listing = {e.path: e.is_directory for e in w.files.list_directory_contents(f"{VOLUME}/")}
    assert listing == {f"{VOLUME}/a b/": True, f"{VOLUME}/empty/": True}
    with pytest.raises(SdkConflict):
        w.files.delete_directory(f"{VOLUME}/a b")
    w.files.delete(f"{VOLUME}/a b/x.bin")
    w.files.delete_directory(f"{VOLUME}/a b")
    with pytest.raises(NotFound):
        w.files.get_metadata(f"{VOLUME}/a b/x.bin")
    with pytest.raises(NotFound):
        w.files.upload("/Volumes/main/ragcli/other/x.bin", io.BytesIO(b"x"))
    with pytest.raises(SdkBadRequest):
        w.files.upload(f"{VOLUME}/../../escape.bin", io.BytesIO(b"x"))
    put = [r for r in emu.requests("fs-put") if r.status == 204][0]
    assert put.body == "<7 bytes>" and put.path.endswith("/a%20b/x.bin")


def test_service_principal_through_the_sdk_oauth_flow(emu):
    sp = WorkspaceClient(host=emu.url, client_id="sp-id", client_secret="sp-secret-value", auth_type="oauth-m2m")
    assert sp.warehouses.get(WH).state.value == "RUNNING"
    token = emu.requests("oidc-token")[-1]
    assert token.oauth_client_id == "sp-id" and token.body["grant_type"] == "client_credentials"
    assert emu.requests("sql-warehouse")[-1].auth == "bearer"


@pytest.fixture
def vs(emu):
    return AISearchClient(workspace_url=emu.url, personal_access_token=TOKEN, disable_notice=True)


def create_index(vs, **extra):
    kwargs = dict(endpoint_name="ep", index_name="main.ragcli.idx", primary_key="id", source_table_name=TABLE,
                  pipeline_type="TRIGGERED")
    kwargs.update(extra or {"embedding_dimension": 2, "embedding_vector_column": "embedding"})
    return vs.create_delta_sync_index(**kwargs)


def search(index, vector=None, text=None, k=5):
    response = index.similarity_search(columns=["id", "text"], query_vector=vector, query_text=text,
                                       num_results=k, disable_notice=True)
    return [(r[0], r[1]) for r in (response.get("result") or {}).get("data_array") or []]


def test_delta_sync_index_follows_the_change_data_feed(w, ws, vs):
    ok(sql(w, CREATE, table=TABLE))
    upload_rows(w, f"{VOLUME}/r1.parquet", [row(1, "one", vector=(1.0, 0.0)), row(2, "two", vector=(0.0, 1.0))])
    ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/r1.parquet"))
    index = create_index(vs)
    info = index.describe()
    assert info["index_type"] == "DELTA_SYNC" and info["delta_sync_index_spec"]["source_table"] == TABLE
    assert info["delta_sync_index_spec"]["embedding_vector_columns"] == [{"name": "embedding", "embedding_dimension": 2}]
    status = info["status"]
    assert status["detailed_state"] == "ONLINE_NO_PENDING_UPDATE" and status["indexed_row_count"] == 2
    assert status["triggered_update_status"]["last_processed_commit_version"] == 1
    assert search(index, [1.0, 0.0], k=1) == [("1", "one")]

    upload_rows(w, f"{VOLUME}/r2.parquet", [row(2, "two changed", vector=(1.0, 0.1)), row(3, "three")])
    ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/r2.parquet"))
    ok(sql(w, "DELETE FROM IDENTIFIER(:table) WHERE id IN (:a)", table=TABLE, a="1"))
    assert index.describe()["status"]["indexed_row_count"] == 2  # nothing is read before a sync
    index.sync()
    status = index.describe()["status"]
    assert status["triggered_update_status"]["last_processed_commit_version"] == ws.table_version(TABLE) == 3
    assert status["indexed_row_count"] == 2
    assert sorted(search(index, [1.0, 0.0])) == [("2", "two changed"), ("3", "three")]
    scanned = index.scan(num_results=10)
    assert [f["value"] for f in scanned["data"][0]["fields"] if f["key"] == "text"] == [{"string_value": "two changed"}]


def test_a_sync_takes_time_refuses_a_second_one_and_a_bad_row_fails_it(tmp_path):
    ws = Workspace(tmp_path / "ws", warehouses=[WH], volumes=["main.ragcli.staging"], sync_seconds=0.4)
    with Emulator(tokens={TOKEN}, endpoints=["ep"], workspace=ws) as emu:
        w = WorkspaceClient(host=emu.url, token=TOKEN, auth_type="pat")
        vs = AISearchClient(workspace_url=emu.url, personal_access_token=TOKEN, disable_notice=True)
        ok(sql(w, CREATE, table=TABLE))
        upload_rows(w, f"{VOLUME}/r1.parquet", [row(1, "one")])
        ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/r1.parquet"))
        index = create_index(vs)
        assert index.describe()["status"]["detailed_state"] == "PROVISIONING_INITIAL_SNAPSHOT"
        time.sleep(0.45)
        assert index.describe()["status"]["indexed_row_count"] == 1

        upload_rows(w, f"{VOLUME}/r2.parquet", [row(2, "two")])
        ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/r2.parquet"))
        index.sync()
        status = index.describe()["status"]
        assert status["detailed_state"] == "ONLINE_TRIGGERED_UPDATE" and status["indexed_row_count"] == 1
        with pytest.raises(ResourceConflict):
            index.sync()
        time.sleep(0.45)
        status = index.describe()["status"]
        assert status["detailed_state"] == "ONLINE_NO_PENDING_UPDATE" and status["indexed_row_count"] == 2

        upload_rows(w, f"{VOLUME}/r3.parquet", [row(3, "three", vector=(1.0, 0.0, 0.0))])
        ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/r3.parquet"))
        index.sync()
        time.sleep(0.45)
        status = index.describe()["status"]
        assert status["detailed_state"] == "ONLINE_PIPELINE_FAILED" and "'3'" in status["message"]
        assert status["indexed_row_count"] == 2 and status["triggered_update_status"]["last_processed_commit_version"] == 2


def test_delta_sync_needs_a_table_with_change_data_feed(w, ws, vs):
    with pytest.raises(BadRequest, match="does not exist"):
        create_index(vs)
    ws.create_table(TABLE, {"id": "STRING", "text": "STRING", "embedding": "ARRAY<FLOAT>"}, change_data_feed=False)
    with pytest.raises(BadRequest, match="enableChangeDataFeed"):
        create_index(vs)


def test_managed_embeddings_embed_on_sync_and_at_query_time(w, ws, vs):
    ok(sql(w, CREATE, table=TABLE))
    upload_rows(w, f"{VOLUME}/r.parquet", [row(1, "aaaa"), row(2, "bbbb"), row(3, "cccc dddd")])
    ok(sql(w, MERGE, table=TABLE, path=f"{VOLUME}/r.parquet"))
    index = create_index(vs, embedding_source_column="text", embedding_model_endpoint_name="bag-of-letters")
    spec = index.describe()["delta_sync_index_spec"]
    assert spec["embedding_source_columns"] == [{"name": "text", "embedding_model_endpoint_name": "bag-of-letters"}]
    assert search(index, text="bb b", k=1) == [("2", "bbbb")]
    assert "__emulator" not in json.dumps(index.scan(num_results=10))
