"""ragcli's Delta Sync client layer (ragcli.targets.delta_sync) against the emulator's workspace: the real
databricks-sdk and databricks-ai-search clients, real Delta tables (delta-rs)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.databricks

pytest.importorskip("databricks.ai_search")
pytest.importorskip("databricks.sdk")
pytest.importorskip("deltalake")

from ragcli.config import load_settings  # noqa: E402
from ragcli.errors import ConfigError, DatabricksAuthError, DatabricksError  # noqa: E402
from ragcli.targets.delta_sync import rows as table  # noqa: E402
from ragcli.targets.delta_sync.client import (  # noqa: E402
    DeltaSyncClient,
    StatementError,
    resolve_delta_sync_config,
)

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default import mode)
    from dbx_emulator import Emulator
    from dbx_workspace import Workspace
except ImportError:  # pragma: no cover - tests/ became a package
    from tests.dbx_emulator import Emulator
    from tests.dbx_workspace import Workspace

TOKEN = "dapi-deltasync-0123456789abcdef"
TABLE = "main.ragcli.chunks"
INDEX = "main.ragcli.chunks_index"
VOLUME = "/Volumes/main/ragcli/staging"
WH = "abc123"


@pytest.fixture
def ws(tmp_path):
    return Workspace(tmp_path / "ws", warehouses=[WH], volumes=["main.ragcli.staging"], result_chunk_rows=3,
                     embedding_endpoints={"letters": lambda texts: [[t.count(c) + 0.01 for c in "abc"] for t in texts]})


@pytest.fixture
def emu(ws):
    with Emulator(tokens={TOKEN}, endpoints=["ep"], service_principals={"sp-id": "sp-secret-0123456789"},
                  workspace=ws) as e:
        yield e


def env_for(emu, **extra):
    env = {"DATABRICKS_HOST": emu.url, "DATABRICKS_TOKEN": TOKEN, "RAGCLI_DATABRICKS_ENDPOINT": "ep",
           "RAGCLI_DATABRICKS_INDEX": INDEX, "RAGCLI_DATABRICKS_TABLE": TABLE, "RAGCLI_DATABRICKS_VOLUME": VOLUME,
           "RAGCLI_DATABRICKS_WAREHOUSE": WH, "RAGCLI_DATABRICKS_RETRIES": "2", "RAGCLI_DATABRICKS_BACKOFF": "0.01",
           "RAGCLI_DATABRICKS_TIMEOUT": "10"}
    env.update({k: v for k, v in extra.items() if v is not None})
    for k in [k for k, v in extra.items() if v is None]:
        env.pop(k, None)
    return env


def make_client(emu, **extra) -> DeltaSyncClient:
    settings = load_settings(env=env_for(emu, **extra))
    return DeltaSyncClient(resolve_delta_sync_config(settings, writing=True), poll_seconds=0.05,
                           failure_grace_seconds=0.5)


@pytest.fixture
def client(emu):
    return make_client(emu)


def chunk(i, text, source="a.md", dim=4):
    vector = [0.0] * dim
    vector[i % dim] = 1.0
    return {"id": str(1000 + i), "kind": "chunk", "text": text, "source": source, "position": i,
            "file_sha256": "f" * 64, "chunk_tokens": len(text.split()), "embedding": vector}


def test_configuration_names_the_missing_variable(emu):
    for var, fragment in (("RAGCLI_DATABRICKS_WAREHOUSE", "SQL warehouse"), ("RAGCLI_DATABRICKS_TABLE", "Delta table"),
                          ("RAGCLI_DATABRICKS_VOLUME", "volume path")):
        with pytest.raises(ConfigError, match=var) as info:
            resolve_delta_sync_config(load_settings(env=env_for(emu, **{var: None})), writing=True)
        assert fragment in str(info.value)
    reading = resolve_delta_sync_config(load_settings(env=env_for(emu, RAGCLI_DATABRICKS_WAREHOUSE=None,
                                                                  RAGCLI_DATABRICKS_VOLUME=None)), writing=False)
    assert reading.index == INDEX and reading.warehouse is None
    for var, value in (("RAGCLI_DATABRICKS_TABLE", "chunks"), ("RAGCLI_DATABRICKS_VOLUME", "/tmp/x"),
                       ("RAGCLI_DATABRICKS_VOLUME", "/Volumes/main/ragcli/staging/../other"),
                       ("RAGCLI_DATABRICKS_WAREHOUSE", "wh; DROP"), ("RAGCLI_DATABRICKS_TABLE", INDEX)):
        with pytest.raises(ConfigError, match=var):
            resolve_delta_sync_config(load_settings(env=env_for(emu, **{var: value})), writing=True)
    short = resolve_delta_sync_config(load_settings(env=env_for(emu, RAGCLI_DATABRICKS_VOLUME="main.ragcli.staging/")),
                                      writing=True)
    assert short.volume == VOLUME
    with pytest.raises(ConfigError, match="RAGCLI_DATABRICKS_STATEMENT_TIMEOUT"):
        load_settings(env=env_for(emu, RAGCLI_DATABRICKS_STATEMENT_TIMEOUT="0"))


def test_table_rows_round_trip_through_parquet_merge_and_select(client, ws, emu):
    assert client.ensure_table() is True
    assert client.ensure_table() is False
    assert ws.table_version(TABLE) == 0
    hostile = "it's\"; DROP TABLE main.ragcli.chunks; -- ünïcode"
    rows = [chunk(i, f"text {i}") for i in range(5)] + [chunk(9, hostile, source="we'ird/na me.md")]
    result = client.merge_rows(rows)
    assert (result.rows, result.inserted, result.updated) == (6, 6, 0)
    again = client.merge_rows(rows)
    assert (again.inserted, again.updated) == (0, 6)
    assert len(ws.table_rows(TABLE)) == 6 and client.table_version() == 2

    got = client.read_rows()
    assert [r["id"] for r in got] == sorted(r["id"] for r in rows)
    assert got == sorted(rows, key=lambda r: r["id"])  # types and float32 vectors come back exactly
    some = client.read_rows(["id", "source"], where=("source", ["we'ird/na me.md", "nowhere.md"]))
    assert some == [{"id": "1009", "source": "we'ird/na me.md"}]

    statements = [r.body for r in emu.requests("sql-execute")]
    assert all(hostile not in b["statement"] and "we'ird" not in b["statement"] and TABLE not in b["statement"]
               for b in statements)
    assert all("IDENTIFIER(:table)" in b["statement"] for b in statements)
    assert any({"name": "v0", "value": "we'ird/na me.md", "type": "STRING"} in b["parameters"] for b in statements)
    assert list((ws.volume_path(VOLUME) / "ragcli-staging" / TABLE).iterdir()) == []  # run folders removed


def test_merges_are_split_into_parts_and_deletes_into_batches(client, ws, emu, monkeypatch):
    from ragcli.targets.delta_sync import client as module

    monkeypatch.setattr(module, "PART_BYTES", 3 * table.row_bytes(chunk(0, "text 00")))
    monkeypatch.setattr(module, "MARKERS_PER_STATEMENT", 4)
    client.ensure_table()
    steps = []
    client.merge_rows([chunk(i, f"text {i:02d}") for i in range(10)], progress=lambda *a: steps.append(a))
    uploads = [r for r in emu.requests("fs-put") if r.status == 204]
    assert len(uploads) == 4 and [s for s in steps if s[0] == "upload"][-1] == ("upload", 4, 4)
    assert len(emu.requests("fs-delete")) == 4 and len(emu.requests("fs-rmdir")) == 1
    merges = [r for r in emu.requests("sql-execute") if r.body["statement"].startswith("MERGE")]
    assert len(merges) == 1 and len(ws.table_rows(TABLE)) == 10

    gone = client.delete_rows("id", [str(1000 + i) for i in range(7)] + ["nope"], progress=lambda *a: steps.append(a))
    assert gone == 7 and sorted(r["id"] for r in ws.table_rows(TABLE)) == ["1007", "1008", "1009"]
    deletes = [r.body for r in emu.requests("sql-execute") if r.body["statement"].startswith("DELETE")]
    assert len(deletes) == 2 and deletes[0]["statement"].endswith("WHERE id IN (:v0, :v1, :v2, :v3)")
    assert ("delete", 8, 8) in steps
    assert len(client.read_rows(["id"], where=("id", ["1007", "1008", "1009", "1000", "1001"]))) == 3
    with pytest.raises(ValueError, match="not a column"):
        client.delete_rows("text; DROP", ["x"])


def test_a_foreign_table_is_refused(client, ws):
    ws.create_table(TABLE, {"id": "STRING", "body": "STRING"})
    with pytest.raises(DatabricksError, match="not created by ragcli") as info:
        client.ensure_table()
    assert "RAGCLI_DATABRICKS_TABLE" in str(info.value)


def test_index_creation_sync_and_waiting(tmp_path):
    ws = Workspace(tmp_path / "ws", warehouses=[WH], volumes=["main.ragcli.staging"], sync_seconds=0.3)
    with Emulator(tokens={TOKEN}, endpoints=["ep"], workspace=ws) as emu:
        client = make_client(emu)
        client.ensure_table()
        client.merge_rows([chunk(i, f"text {i}") for i in range(3)])
        assert client.get_index(missing_ok=True) is None
        steps = []
        index, info = client.create_index(dimension=4, progress=lambda *a: steps.append(a))
        assert info["status"]["indexed_row_count"] == 3 and client.check_index(info) == 4
        assert ("create index", 1, 1) in steps and any(s[0] == "sync" for s in steps)

        client.merge_rows([chunk(3, "text 3")])
        client.delete_rows("id", ["1000"])
        version = client.table_version()
        info = client.sync(index, min_version=version, progress=lambda *a: steps.append(a))
        assert info["status"]["triggered_update_status"]["last_processed_commit_version"] == version
        assert info["status"]["indexed_row_count"] == 3
        syncs = len(emu.requests("sync"))
        assert client.sync(index, min_version=version)["status"]["indexed_row_count"] == 3
        assert len(emu.requests("sync")) == syncs  # already there: no second sync

        hits = client.remote.query(index, "searching", columns=["id", "text"], query_vector=[0, 0, 0, 1.0],
                                   num_results=1)
        assert [h["id"] for h in hits] == ["1003"]

        client.merge_rows([chunk(5, "text 5")])
        index.sync()  # someone else's sync is running: ragcli waits for it, then syncs again
        client.merge_rows([chunk(6, "text 6")])
        info = client.sync(index, min_version=client.table_version())
        assert info["status"]["indexed_row_count"] == 5

        ws.fail_next_sync(INDEX, "the pipeline lost its cluster")
        client.merge_rows([chunk(7, "text 7")])
        with pytest.raises(DatabricksError, match="ONLINE_PIPELINE_FAILED.*lost its cluster"):
            client.sync(index, min_version=client.table_version())


def test_a_sync_that_takes_too_long_names_the_setting(tmp_path):
    ws = Workspace(tmp_path / "ws", warehouses=[WH], volumes=["main.ragcli.staging"], sync_seconds=30)
    with Emulator(tokens={TOKEN}, endpoints=["ep"], workspace=ws) as emu:
        client = make_client(emu, RAGCLI_DATABRICKS_SYNC_TIMEOUT="1")
        client.ensure_table()
        client.merge_rows([chunk(0, "text")])
        with pytest.raises(DatabricksError, match="RAGCLI_DATABRICKS_SYNC_TIMEOUT") as info:
            client.create_index(dimension=4)
        assert "PROVISIONING_INITIAL_SNAPSHOT" in str(info.value) and TABLE in str(info.value)


def test_managed_embeddings_index(emu, ws):
    client = make_client(emu, RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT="letters")
    client.ensure_table()
    client.merge_rows([dict(chunk(0, "aaa"), embedding=None), dict(chunk(1, "ccc"), embedding=None)])
    index, info = client.create_index(dimension=None)
    assert client.check_index(info) is None
    hits = client.remote.query(index, "searching", columns=["id"], query_text="cc", num_results=1)
    assert [h["id"] for h in hits] == ["1001"]
    self_managed = make_client(emu)
    with pytest.raises(DatabricksError, match="RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT"):
        self_managed.check_index(info)


def test_a_stopped_warehouse_is_waited_for_then_a_clear_error(client, ws, emu, monkeypatch):
    from ragcli.targets.delta_sync import client as module

    monkeypatch.setattr(module, "FIRST_WAIT_SECONDS", 0)  # poll at once instead of waiting 5 s on the server
    client.ensure_table()
    ws.stop_warehouse(WH, start_seconds=0.3)
    steps = []
    assert client.table_version(progress=lambda *a: steps.append(a)) == 0
    assert steps and steps[0][0] == "warehouse"

    ws.stop_warehouse(WH, start_seconds=None)
    slow = make_client(emu, RAGCLI_DATABRICKS_STATEMENT_TIMEOUT="1")
    with pytest.raises(DatabricksError, match="RAGCLI_DATABRICKS_STATEMENT_TIMEOUT") as info:
        slow.table_version()
    assert f"warehouse {WH} is STARTING" in str(info.value)
    assert ws.executed[-1].state == "CANCELED" and emu.requests("sql-cancel")


def test_warehouse_volume_and_credentials_errors(emu, ws):
    client = make_client(emu, RAGCLI_DATABRICKS_WAREHOUSE="nosuchwarehouse")
    with pytest.raises(DatabricksError, match="RAGCLI_DATABRICKS_WAREHOUSE") as info:
        client.ensure_table()
    assert "does not exist" in str(info.value)

    client = make_client(emu, RAGCLI_DATABRICKS_VOLUME="/Volumes/main/ragcli/missing")
    client.ensure_table()
    with pytest.raises(DatabricksError, match="RAGCLI_DATABRICKS_VOLUME"):
        client.merge_rows([chunk(0, "x")])

    wrong = "dapi-wrong-0123456789abcdef"
    client = make_client(emu, DATABRICKS_TOKEN=wrong)
    with pytest.raises(DatabricksAuthError) as info:
        client.ensure_table()
    assert wrong not in str(info.value) and "DATABRICKS_TOKEN" in str(info.value)

    with pytest.raises(StatementError) as failed:
        make_client(emu).execute("DROP TABLE IDENTIFIER(:table)", {"table": TABLE}, what="testing")
    assert failed.value.error_class == "PARSE_SYNTAX_ERROR" and WH in str(failed.value)


def test_transient_failures_are_retried(client, ws, emu, monkeypatch):
    from ragcli.targets.delta_sync import client as module

    monkeypatch.setattr(module, "FIRST_WAIT_SECONDS", 0)
    emu.fail("sql-execute", 503, times=1)
    emu.fail("fs-put", 500, times=1)
    client.ensure_table()
    client.merge_rows([chunk(0, "x")])
    assert len(ws.table_rows(TABLE)) == 1
    assert [r.status for r in emu.requests("fs-put")] == [500, 204]
    emu.fail("sql-get", 429, times=None)
    ws.stop_warehouse(WH, start_seconds=0.2)
    with pytest.raises(DatabricksError, match="kept failing.*after 2 attempts"):
        make_client(emu, RAGCLI_DATABRICKS_RETRIES="1").table_version()


def test_service_principal(emu, ws):
    client = make_client(emu, DATABRICKS_TOKEN=None, DATABRICKS_CLIENT_ID="sp-id",
                         DATABRICKS_CLIENT_SECRET="sp-secret-0123456789")
    assert client.ensure_table() is True
    assert emu.requests("oidc-token") and all(r.auth == "bearer" for r in emu.requests("sql-execute"))
    assert "sp-secret-0123456789" not in repr(client.cfg)
