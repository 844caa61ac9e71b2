"""The workspace around the Vector Search emulator: SQL statements on real local Delta tables, the Files API
for Unity Catalog volumes, and the tables that Delta Sync indexes read.

Mounted into the same HTTP server as the Vector Search emulator (tests/dbx_emulator.py), so one URL serves
both and the real clients drive it: databricks-sdk's ``WorkspaceClient`` (``statement_execution``,
``files``, ``warehouses``) and databricks-ai-search 0.81 (``create_delta_sync_index``, ``sync``, queries).

    ws = Workspace(tmp_path / "ws", warehouses=["wh1"], volumes=["main.ragcli.staging"])
    with Emulator(tokens={TOKEN}, endpoints=["ep"], workspace=ws) as emu:
        w = WorkspaceClient(host=emu.url, token=TOKEN, auth_type="pat")
        w.files.upload("/Volumes/main/ragcli/staging/rows.parquet", io.BytesIO(data))
        w.statement_execution.execute_statement(statement=..., warehouse_id="wh1", parameters=[...])
        ws.table_rows("main.ragcli.chunks"), ws.executed            # state and statement log
        ws.stop_warehouse("wh1", start_seconds=None)                # a warehouse that does not come back

By hand: ``python tests/dbx_emulator.py --token dapi-demo --endpoint ep --workspace /tmp/ws --warehouse wh1
--volume main.ragcli.staging``.

Tables are Delta tables written with the ``deltalake`` package (delta-rs; no JVM): MERGE, DELETE and the
change data feed (``load_cdf``) are delta-rs's own, so a Delta Sync index sees real Delta versions.

Served:

- ``POST /api/2.0/sql/statements`` (``statement``, ``warehouse_id``, ``parameters``, ``wait_timeout``,
  ``on_wait_timeout``), ``GET /api/2.0/sql/statements/{id}``, ``POST .../{id}/cancel``,
  ``GET .../{id}/result/chunks/{n}``; ``GET /api/2.0/sql/warehouses/{id}``.
- ``PUT|GET|HEAD|DELETE /api/2.0/fs/files/Volumes/...``; ``PUT|GET|HEAD|DELETE /api/2.0/fs/directories/...``.
- ``GET /.well-known/databricks-config`` (host metadata: ``oidc_endpoint``, ``workspace_id``; databricks-sdk
  reads it to find the OAuth endpoints, the plain Vector Search emulator answers 404) and
  ``GET /oidc/.well-known/oauth-authorization-server``; tokens come from the emulator's ``/oidc/v1/token``.

Statements. Only the shapes ragcli issues are recognised (whitespace and keyword case are free; a table is
``IDENTIFIER(:param)`` or a plain three-part name):

    CREATE TABLE IF NOT EXISTS t (col TYPE [NOT NULL], ...) [USING DELTA]
        [TBLPROPERTIES (delta.enableChangeDataFeed = true)]
    MERGE INTO t [AS] a USING (SELECT * FROM read_files(:path, format => 'parquet')) [AS] b
        ON a.k = b.k WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *
    DELETE FROM t WHERE col IN (:p0, :p1, ...)        DELETE FROM t WHERE col = :p
    SELECT * | col, ... FROM t [WHERE col = :p | WHERE col IN (:p0, ...)] [ORDER BY col, ...]
    DESCRIBE HISTORY t [LIMIT n]                      DESCRIBE TABLE t

Types: STRING, INT/INTEGER, BIGINT, FLOAT, DOUBLE, BOOLEAN, ARRAY<FLOAT|DOUBLE|STRING>. Anything else fails
as Databricks reports a failed statement: HTTP 200, ``status.state = FAILED``, ``status.error`` with an
error class in brackets and ``status.sql_state``. Values come back as JSON_ARRAY strings (arrays as JSON text,
floats in their shortest float32/float64 form, null as null).

Emulator choices (no public source documents these; they are rules for the test double):

- Warehouses are RUNNING or STOPPED. A statement sent to a STOPPED warehouse starts it, as Databricks'
  auto-start does: it stays PENDING ("waiting for warehouse") for ``start_seconds``, then runs; with
  ``start_seconds=None`` the warehouse never comes up and statements stay PENDING until cancelled. An unknown
  warehouse id is 404 RESOURCE_DOES_NOT_EXIST. ``statement_seconds`` keeps each statement RUNNING that long.
- ``wait_timeout`` is ``0s`` or ``5s``..``50s`` (default ``10s``), else 400; ``on_wait_timeout`` CONTINUE
  (default) returns the statement as it is, CANCEL cancels it. Result chunks hold ``result_chunk_rows`` rows.
- A MERGE whose source repeats a key fails (DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE); its
  source must have exactly the target's columns. read_files reads one Parquet file or every ``*.parquet``
  under a folder of a volume.
- Files: a path must lie in an existing volume (``/Volumes/catalog/schema/volume/...``; else 404 NOT_FOUND);
  ``..`` is refused (400). PUT creates parent folders; ``overwrite=false`` on an existing file is 409
  ALREADY_EXISTS. Deleting a folder that is not empty is 409. ``create-download-url`` is not served (404), so
  the SDK falls back to a plain GET.
- Delta Sync: the source table must exist and have the change data feed on; creating an index takes its
  initial snapshot; ``sync`` reads ``load_cdf`` from the last processed version + 1 up to the table's current
  version and applies inserts, updates and deletes. With ``sync_seconds`` > 0 an update shows
  ``ONLINE_TRIGGERED_UPDATE`` (``PROVISIONING_INITIAL_SNAPSHOT`` for the first) that long before it is
  applied. A sync requested while one runs is 409. A row whose vector is missing or of the wrong dimension
  fails the whole update: ``ONLINE_PIPELINE_FAILED`` with a message naming its key, rows and processed version
  unchanged. ``status.triggered_update_status`` carries ``last_processed_commit_version`` and
  ``last_processed_commit_timestamp`` (the shape of Databricks' online-table status).
- Managed embeddings: ``embedding_endpoints`` maps a serving endpoint name to a function of a list of texts
  returning vectors; sync embeds the source column with it and ``query_text`` queries are embedded with it.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # tests/ is on sys.path when it has no __init__.py (pytest's default import mode)
    from dbx_emulator import ApiError
except ImportError:  # pragma: no cover - tests/ became a package
    from tests.dbx_emulator import ApiError

__all__ = ["Workspace", "ExecutedStatement"]

WAIT_TIMEOUT_DEFAULT = 10.0
WORKSPACE_ID = "1234567890123456"
SQL_TYPES = {
    "STRING": "string",
    "INT": "int32",
    "INTEGER": "int32",
    "BIGINT": "int64",
    "FLOAT": "float32",
    "DOUBLE": "float64",
    "BOOLEAN": "bool",
}
ARRAY_INNER = {"FLOAT": "float32", "DOUBLE": "float64", "STRING": "string"}
VS_TYPES = {"STRING": "string", "INT": "integer", "BIGINT": "long", "FLOAT": "float", "DOUBLE": "double",
            "BOOLEAN": "boolean"}
UPDATE_STATES = ("ONLINE_TRIGGERED_UPDATE", "PROVISIONING_INITIAL_SNAPSHOT")
MANAGED_VECTOR = "__emulator_vector"  # where a managed-embedding index keeps its vectors (never returned)
RAW_BODY_OPS = frozenset({"fs-put"})

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME3 = rf"`?{_IDENT}`?\.`?{_IDENT}`?\.`?{_IDENT}`?"
_TABLE = rf"(?:IDENTIFIER\s*\(\s*:(?P<tparam>{_IDENT})\s*\)|(?P<tname>{_NAME3}))"
_PARAMS_LIST = rf":{_IDENT}(?:\s*,\s*:{_IDENT})*"
_CREATE = re.compile(
    rf"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+{_TABLE}\s*\((?P<cols>[^()]*)\)\s*(?:USING\s+DELTA\s*)?"
    rf"(?:TBLPROPERTIES\s*\((?P<props>[^)]*)\))?\s*;?", re.IGNORECASE | re.DOTALL)
_MERGE = re.compile(
    rf"MERGE\s+INTO\s+{_TABLE}\s+(?:AS\s+)?(?P<ta>{_IDENT})\s+USING\s+\(\s*SELECT\s+\*\s+FROM\s+read_files\s*\(\s*"
    rf":(?P<path>{_IDENT})\s*,\s*format\s*=>\s*'parquet'\s*\)\s*\)\s+(?:AS\s+)?(?P<sa>{_IDENT})\s+ON\s+"
    rf"(?P<l>{_IDENT})\.(?P<lk>{_IDENT})\s*=\s*(?P<r>{_IDENT})\.(?P<rk>{_IDENT})\s+WHEN\s+MATCHED\s+THEN\s+UPDATE\s+"
    rf"SET\s+\*\s+WHEN\s+NOT\s+MATCHED\s+THEN\s+INSERT\s+\*\s*;?", re.IGNORECASE | re.DOTALL)
_DELETE = re.compile(
    rf"DELETE\s+FROM\s+{_TABLE}\s+WHERE\s+(?P<col>{_IDENT})\s*(?:=\s*:(?P<one>{_IDENT})|IN\s*\(\s*(?P<many>"
    rf"{_PARAMS_LIST})\s*\))\s*;?", re.IGNORECASE | re.DOTALL)
_SELECT = re.compile(
    rf"SELECT\s+(?P<cols>\*|{_IDENT}(?:\s*,\s*{_IDENT})*)\s+FROM\s+{_TABLE}"
    rf"(?:\s+WHERE\s+(?P<col>{_IDENT})\s*(?:=\s*:(?P<one>{_IDENT})|IN\s*\(\s*(?P<many>{_PARAMS_LIST})\s*\)))?"
    rf"(?:\s+ORDER\s+BY\s+(?P<order>{_IDENT}(?:\s*,\s*{_IDENT})*))?\s*;?", re.IGNORECASE | re.DOTALL)
_HISTORY = re.compile(rf"DESCRIBE\s+HISTORY\s+{_TABLE}(?:\s+LIMIT\s+(?P<limit>\d+))?\s*;?", re.IGNORECASE)
_DESCRIBE = re.compile(rf"DESCRIBE\s+TABLE\s+{_TABLE}\s*;?", re.IGNORECASE)
_COLDEF = re.compile(rf"^\s*`?(?P<name>{_IDENT})`?\s+(?P<type>ARRAY\s*<\s*{_IDENT}\s*>|{_IDENT})"
                     rf"(?P<notnull>\s+NOT\s+NULL)?\s*$", re.IGNORECASE)
_PROP = re.compile(r"^\s*'?delta\.enableChangeDataFeed'?\s*=\s*'?(true|false)'?\s*$", re.IGNORECASE)
_MARKER = re.compile(rf"(?<![:\w]):({_IDENT})")


class _Failed(Exception):
    """A statement that fails as Databricks reports it: error class, message, SQLSTATE."""

    def __init__(self, error_class: str, message: str, sql_state: str, error_code: str = "BAD_REQUEST"):
        super().__init__(message)
        self.text = f"[{error_class}] {message} SQLSTATE: {sql_state}"
        self.sql_state = sql_state
        self.error_code = error_code


@dataclass
class ExecutedStatement:
    """One statement as the warehouse saw it: its text and parameters (never values spliced into text)."""

    statement_id: str
    statement: str
    parameters: list[dict]
    warehouse_id: str
    state: str = "PENDING"
    error: dict | None = None
    sql_state: str | None = None
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, SQL type)
    rows: list[list[Any]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    cancel: bool = False


@dataclass
class _Warehouse:
    id: str
    state: str  # RUNNING | STOPPED | STARTING
    start_seconds: float | None
    ready_at: float | None = None


@dataclass
class _Sync:
    """What a Delta Sync index has taken from its source table."""

    table: str
    version: int = -1  # last processed commit version
    timestamp: str | None = None
    pending: tuple[int, float, bool] | None = None  # (target version, due time, initial?)
    failure: str | None = None
    pipeline_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class Workspace:
    """SQL warehouses, Unity Catalog tables and volumes on local disk, for the emulator's HTTP server.

    :param root: folder for tables (``root/tables/cat/schema/table``) and volumes (``root/volumes/...``).
    :param warehouses: warehouse ids, RUNNING.
    :param volumes: volume names ``catalog.schema.volume`` created up front.
    :param start_seconds: how long a stopped warehouse takes to start.
    :param statement_seconds: how long each statement stays RUNNING.
    :param sync_seconds: how long a Delta Sync update takes.
    :param result_chunk_rows: rows per result chunk.
    :param embedding_endpoints: serving endpoint name -> function(texts) -> vectors, for managed embeddings.
    """

    RAW_BODY_OPS = RAW_BODY_OPS
    MANAGED_VECTOR = MANAGED_VECTOR

    def __init__(
        self,
        root: Path | str,
        *,
        warehouses: Iterable[str] = (),
        volumes: Iterable[str] = (),
        start_seconds: float | None = 0.2,
        statement_seconds: float = 0.0,
        sync_seconds: float = 0.0,
        result_chunk_rows: int = 500,
        embedding_endpoints: dict[str, Callable[[list[str]], list[list[float]]]] | None = None,
    ):
        self.root = Path(root)
        (self.root / "tables").mkdir(parents=True, exist_ok=True)
        (self.root / "volumes").mkdir(parents=True, exist_ok=True)
        self.start_seconds = start_seconds
        self.statement_seconds = statement_seconds
        self.sync_seconds = sync_seconds
        self.result_chunk_rows = result_chunk_rows
        self.embedding_endpoints = dict(embedding_endpoints or {})
        self.executed: list[ExecutedStatement] = []
        self.url = ""  # set by the emulator when it starts
        self._lock = threading.RLock()  # workspace state
        self._table_lock = threading.RLock()  # one writer at a time on the Delta tables
        self._stop = threading.Event()
        self._warehouses: dict[str, _Warehouse] = {}
        self._statements: dict[str, ExecutedStatement] = {}
        self._volumes: set[tuple[str, str, str]] = set()
        self._syncs: dict[str, _Sync] = {}  # index name -> sync state
        self._sync_failures: dict[str, str] = {}  # index name -> message for the next update
        self._operations: dict[tuple[str, int], str] = {}  # (table, version) -> operation, where delta-rs differs
        for wid in warehouses:
            self.add_warehouse(wid)
        for name in volumes:
            self.create_volume(name)

    # ------------------------------------------------------------------ set-up and state

    def add_warehouse(self, warehouse_id: str, *, state: str = "RUNNING") -> None:
        with self._lock:
            self._warehouses[warehouse_id] = _Warehouse(warehouse_id, state.upper(), self.start_seconds)

    def stop_warehouse(self, warehouse_id: str, *, start_seconds: float | None = 0.2) -> None:
        """Stop a warehouse; the next statement starts it, taking ``start_seconds`` (None: it never starts)."""
        with self._lock:
            wh = self._warehouses[warehouse_id]
            wh.state, wh.start_seconds, wh.ready_at = "STOPPED", start_seconds, None

    def warehouse_state(self, warehouse_id: str) -> str:
        with self._lock:
            return self._refresh_warehouse(self._warehouses[warehouse_id]).state

    def create_volume(self, name: str) -> Path:
        parts = _three_part(name, "volume")
        with self._lock:
            self._volumes.add(parts)
        path = self.root / "volumes" / Path(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def volume_path(self, path: str) -> Path:
        """The local file behind ``/Volumes/catalog/schema/volume/...`` (the volume must exist)."""
        return self._local_volume_path(path)

    def table_path(self, name: str) -> Path:
        return self.root / "tables" / Path(*_three_part(name, "table"))

    def table_exists(self, name: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(str(self.table_path(name)))

    def table_rows(self, name: str) -> list[dict]:
        """The table's rows as plain dicts, sorted by every column's text (for assertions)."""
        with self._table_lock:
            table = self._open(name).to_pyarrow_table()
        return sorted(table.to_pylist(), key=lambda r: json.dumps(r, sort_keys=True, default=str))

    def table_version(self, name: str) -> int:
        with self._table_lock:
            return self._open(name).version()

    def create_table(self, name: str, columns: dict[str, str], *, change_data_feed: bool = True) -> None:
        """Create a table as ``CREATE TABLE IF NOT EXISTS`` would (column name -> SQL type)."""
        defs = [(col, typ.upper(), False) for col, typ in columns.items()]
        with self._table_lock:
            self._create(name, defs, change_data_feed)

    def merge_parquet(self, name: str, parquet: Path | str, key: str = "id") -> dict:
        """MERGE a local Parquet file or folder into the table, as the MERGE statement does (for tests that
        load what a Spark job wrote)."""
        import pyarrow.parquet as pq

        with self._table_lock:
            return self._merge_table(name, pq.read_table(str(parquet)), key)

    def fail_next_sync(self, index_name: str, message: str) -> None:
        """Make the next update of a Delta Sync index fail with ``message``."""
        with self._lock:
            self._sync_failures[index_name] = message

    def close(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------------ HTTP (called by the emulator)

    @staticmethod
    def owns(op: str) -> bool:
        return op in ("oidc-discovery", "host-metadata") or op.startswith(("sql-", "fs-"))

    @staticmethod
    def route(method: str, segs: list[str]) -> tuple[str, dict[str, str]]:
        """(op, params) for a workspace path, or ("unknown", {})."""
        if segs == ["oidc", ".well-known", "oauth-authorization-server"] and method == "GET":
            return "oidc-discovery", {}
        if segs[:3] == ["api", "2.0", "sql"]:
            rest = segs[3:]
            if rest == ["statements"] and method == "POST":
                return "sql-execute", {}
            if len(rest) == 2 and rest[0] == "statements" and method == "GET":
                return "sql-get", {"statement": rest[1]}
            if len(rest) == 3 and rest[0] == "statements" and rest[2] == "cancel" and method == "POST":
                return "sql-cancel", {"statement": rest[1]}
            if len(rest) == 5 and rest[0] == "statements" and rest[2:4] == ["result", "chunks"] and method == "GET":
                return "sql-chunk", {"statement": rest[1], "chunk": rest[4]}
            if len(rest) == 2 and rest[0] == "warehouses" and method == "GET":
                return "sql-warehouse", {"warehouse": rest[1]}
            return "unknown", {}
        if segs[:3] == ["api", "2.0", "fs"] and len(segs) > 3 and segs[3] in ("files", "directories"):
            path = "/" + "/".join(segs[4:])
            ops = {"files": {"PUT": "fs-put", "GET": "fs-get", "HEAD": "fs-head", "DELETE": "fs-delete"},
                   "directories": {"PUT": "fs-mkdir", "GET": "fs-list", "HEAD": "fs-head-dir",
                                   "DELETE": "fs-rmdir"}}[segs[3]]
            op = ops.get(method)
            return (op, {"path": path}) if op else ("unknown", {})
        return "unknown", {}

    def dispatch(self, op: str, params: dict, query: dict, body: Any, raw: bytes) -> tuple[int, Any, dict]:
        """Answer one request: (status, JSON dict or raw bytes, extra headers). Raises ApiError."""
        if op == "host-metadata":
            return 200, {"oidc_endpoint": f"{self.url}/oidc", "workspace_id": WORKSPACE_ID}, {}
        if op == "oidc-discovery":
            return 200, {"issuer": f"{self.url}/oidc", "authorization_endpoint": f"{self.url}/oidc/v1/authorize",
                         "token_endpoint": f"{self.url}/oidc/v1/token"}, {}
        if op == "sql-execute":
            return 200, self._execute(body if isinstance(body, dict) else {}), {}
        if op == "sql-warehouse":
            with self._lock:
                wh = self._warehouses.get(params["warehouse"])
                if wh is None:
                    raise ApiError(404, f"SQL warehouse {params['warehouse']} does not exist.",
                                   "RESOURCE_DOES_NOT_EXIST")
                state = self._refresh_warehouse(wh).state
            return 200, {"id": wh.id, "name": wh.id, "state": state}, {}
        if op in ("sql-get", "sql-cancel", "sql-chunk"):
            st = self._statement(params["statement"])
            if op == "sql-cancel":
                self._cancel(st)
                return 200, {}, {}
            if op == "sql-get":
                return 200, self._statement_json(st), {}
            return 200, self._chunk_json(st, params["chunk"]), {}
        return self._files(op, params["path"], query, raw)

    # ------------------------------------------------------------------ warehouses and statements

    def _refresh_warehouse(self, wh: _Warehouse) -> _Warehouse:
        if wh.state == "STARTING" and wh.ready_at is not None and time.monotonic() >= wh.ready_at:
            wh.state = "RUNNING"
        return wh

    def _execute(self, body: dict) -> dict:
        statement, warehouse_id = body.get("statement"), body.get("warehouse_id")
        if not isinstance(statement, str) or not statement.strip():
            raise ApiError(400, "statement is required.", "INVALID_PARAMETER_VALUE")
        if not isinstance(warehouse_id, str) or not warehouse_id:
            raise ApiError(400, "warehouse_id is required.", "INVALID_PARAMETER_VALUE")
        wait = _wait_seconds(body.get("wait_timeout"))
        on_timeout = str(body.get("on_wait_timeout") or "CONTINUE").upper()
        if on_timeout not in ("CONTINUE", "CANCEL"):
            raise ApiError(400, "on_wait_timeout must be CONTINUE or CANCEL.", "INVALID_PARAMETER_VALUE")
        parameters = body.get("parameters") or []
        if not isinstance(parameters, list) or not all(isinstance(p, dict) and p.get("name") for p in parameters):
            raise ApiError(400, "parameters must be a list of {name, value, type}.", "INVALID_PARAMETER_VALUE")
        with self._lock:
            wh = self._warehouses.get(warehouse_id)
            if wh is None:
                raise ApiError(404, f"SQL warehouse {warehouse_id} does not exist.", "RESOURCE_DOES_NOT_EXIST")
            if wh.state == "STOPPED":  # auto-start
                wh.state = "STARTING"
                wh.ready_at = None if wh.start_seconds is None else time.monotonic() + wh.start_seconds
            st = ExecutedStatement(statement_id=str(uuid.uuid4()), statement=statement,
                                   parameters=copy.deepcopy(parameters), warehouse_id=warehouse_id)
            self._statements[st.statement_id] = st
            self.executed.append(st)
        threading.Thread(target=self._run, args=(st, wh), name="dbx-warehouse", daemon=True).start()
        if wait > 0 and not st.done.wait(wait) and on_timeout == "CANCEL":
            self._cancel(st)
            st.done.wait(5)
        return self._statement_json(st)

    def _run(self, st: ExecutedStatement, wh: _Warehouse) -> None:
        while True:
            with self._lock:
                if st.cancel:
                    st.state = "CANCELED"
                    st.done.set()
                    return
                if self._refresh_warehouse(wh).state == "RUNNING":
                    st.state = "RUNNING"
                    break
            if self._stop.wait(0.02):
                return
        if self.statement_seconds and self._stop.wait(self.statement_seconds):
            return
        with self._lock:
            if st.cancel:
                st.state = "CANCELED"
                st.done.set()
                return
        try:
            with self._table_lock:
                columns, rows = self._run_statement(st.statement, st.parameters)
            with self._lock:
                st.columns, st.rows, st.state = columns, rows, "SUCCEEDED"
        except _Failed as e:
            with self._lock:
                st.state, st.sql_state = "FAILED", e.sql_state
                st.error = {"error_code": e.error_code, "message": e.text}
        except Exception as e:  # noqa: BLE001 - a bug in the emulator: fail the statement, keep serving
            with self._lock:
                st.state, st.sql_state = "FAILED", "XX000"
                st.error = {"error_code": "INTERNAL_ERROR", "message": f"Emulator error: {type(e).__name__}: {e}"}
        st.done.set()

    def _cancel(self, st: ExecutedStatement) -> None:
        with self._lock:
            if st.state in ("PENDING", "RUNNING"):
                st.cancel = True
            if st.state == "PENDING":  # not started: cancelled at once (a running one stops before it executes)
                st.state = "CANCELED"
                st.done.set()

    def _statement(self, statement_id: str) -> ExecutedStatement:
        with self._lock:
            st = self._statements.get(statement_id)
        if st is None:
            raise ApiError(404, f"Statement {statement_id} does not exist.", "RESOURCE_DOES_NOT_EXIST")
        return st

    def _statement_json(self, st: ExecutedStatement) -> dict:
        with self._lock:
            status: dict[str, Any] = {"state": st.state}
            if st.state == "FAILED":
                status["error"] = dict(st.error or {})
                status["sql_state"] = st.sql_state
            out: dict[str, Any] = {"statement_id": st.statement_id, "status": status}
            if st.state != "SUCCEEDED":
                return out
            size = self.result_chunk_rows
            starts = list(range(0, len(st.rows), size)) or [0]
            out["manifest"] = {
                "format": "JSON_ARRAY",
                "schema": {"column_count": len(st.columns), "columns": [
                    {"name": name, "type_text": typ, "type_name": typ.split("<")[0], "position": i}
                    for i, (name, typ) in enumerate(st.columns)]},
                "total_chunk_count": len(starts) if st.rows else 0,
                "chunks": [{"chunk_index": i, "row_offset": s, "row_count": len(st.rows[s:s + size])}
                           for i, s in enumerate(starts)] if st.rows else [],
                "total_row_count": len(st.rows),
                "truncated": False,
            }
            if st.rows:
                out["result"] = self._chunk(st, 0)
            return out

    def _chunk(self, st: ExecutedStatement, index: int) -> dict:
        size = self.result_chunk_rows
        start = index * size
        rows = st.rows[start:start + size]
        chunk: dict[str, Any] = {"chunk_index": index, "row_offset": start, "row_count": len(rows),
                                 "data_array": [[_json_cell(v, t) for v, (_, t) in zip(r, st.columns, strict=True)]
                                                for r in rows]}
        if start + size < len(st.rows):
            chunk["next_chunk_index"] = index + 1
            chunk["next_chunk_internal_link"] = f"/api/2.0/sql/statements/{st.statement_id}/result/chunks/{index + 1}"
        return chunk

    def _chunk_json(self, st: ExecutedStatement, raw_index: str) -> dict:
        with self._lock:
            if st.state != "SUCCEEDED":
                raise ApiError(400, f"Statement {st.statement_id} has no result ({st.state}).", "INVALID_STATE")
            try:
                index = int(raw_index)
            except ValueError:
                raise ApiError(400, "chunk_index must be an integer.", "INVALID_PARAMETER_VALUE") from None
            if not 0 <= index * self.result_chunk_rows < max(1, len(st.rows)):
                raise ApiError(404, f"Chunk {index} does not exist.", "RESOURCE_DOES_NOT_EXIST")
            return self._chunk(st, index)

    # ------------------------------------------------------------------ SQL

    def _run_statement(self, text: str, parameters: list[dict]) -> tuple[list[tuple[str, str]], list[list]]:
        values = _bind(text, parameters)
        sql = " ".join(text.split())
        for pattern, handler in ((_CREATE, self._sql_create), (_MERGE, self._sql_merge),
                                 (_DELETE, self._sql_delete), (_SELECT, self._sql_select),
                                 (_HISTORY, self._sql_history), (_DESCRIBE, self._sql_describe)):
            m = pattern.fullmatch(sql)
            if m:
                return handler(m, values)
        raise _Failed("PARSE_SYNTAX_ERROR", "Syntax error: the emulator's warehouse runs only the statements "
                      "ragcli issues (CREATE TABLE IF NOT EXISTS, MERGE INTO ... read_files, DELETE, SELECT, "
                      "DESCRIBE).", "42601")

    def _table_name(self, m: re.Match, values: dict[str, Any]) -> str:
        name = values[m.group("tparam")] if m.group("tparam") else m.group("tname").replace("`", "")
        if not isinstance(name, str) or not re.fullmatch(rf"{_IDENT}\.{_IDENT}\.{_IDENT}", name.replace("`", "")):
            raise _Failed("INVALID_IDENTIFIER", f"{name!r} is not a three-part table name.", "42602")
        return name.replace("`", "")

    def _open(self, name: str):
        from deltalake import DeltaTable

        path = self.table_path(name)
        if not DeltaTable.is_deltatable(str(path)):
            cat, schema, table = _three_part(name, "table")
            raise _Failed("TABLE_OR_VIEW_NOT_FOUND", f"The table or view `{cat}`.`{schema}`.`{table}` cannot be "
                          "found.", "42P01")
        return DeltaTable(str(path))

    def _sql_create(self, m: re.Match, values: dict) -> tuple[list, list]:
        name = self._table_name(m, values)
        defs = []
        for part in _split_columns(m.group("cols")):
            c = _COLDEF.match(part)
            if not c:
                raise _Failed("PARSE_SYNTAX_ERROR", f"Cannot read the column definition {part.strip()!r}.", "42601")
            defs.append((c.group("name"), re.sub(r"\s+", "", c.group("type").upper()), bool(c.group("notnull"))))
        cdf = False
        for prop in filter(str.strip, (m.group("props") or "").split(",")):
            p = _PROP.match(prop)
            if not p:
                raise _Failed("PARSE_SYNTAX_ERROR", f"Unsupported table property {prop.strip()!r}.", "42601")
            cdf = p.group(1).lower() == "true"
        self._create(name, defs, cdf)
        return [], []

    def _create(self, name: str, defs: list[tuple[str, str, bool]], cdf: bool) -> None:
        import pyarrow as pa
        from deltalake import DeltaTable

        path = self.table_path(name)
        if DeltaTable.is_deltatable(str(path)):
            return  # IF NOT EXISTS
        if len({d[0].lower() for d in defs}) != len(defs) or not defs:
            raise _Failed("COLUMN_ALREADY_EXISTS", "Column names must be unique and at least one is needed.",
                          "42711")
        fields = [pa.field(col, _arrow_type(typ), nullable=not notnull) for col, typ, notnull in defs]
        path.mkdir(parents=True, exist_ok=True)
        config = {"delta.enableChangeDataFeed": "true"} if cdf else None
        DeltaTable.create(str(path), schema=pa.schema(fields), configuration=config)

    def _sql_merge(self, m: re.Match, values: dict) -> tuple[list, list]:
        name = self._table_name(m, values)
        aliases = {m.group("ta").lower(): "t", m.group("sa").lower(): "s"}
        sides = {aliases.get(m.group("l").lower()), aliases.get(m.group("r").lower())}
        if sides != {"t", "s"} or m.group("lk").lower() != m.group("rk").lower():
            raise _Failed("UNRESOLVED_COLUMN", "The ON clause must compare the target and source keys.", "42703")
        source = self._read_parquet(values[m.group("path")])
        metrics = self._merge_table(name, source, m.group("lk"))
        inserted, updated = metrics["num_target_rows_inserted"], metrics["num_target_rows_updated"]
        columns = [("num_affected_rows", "BIGINT"), ("num_updated_rows", "BIGINT"), ("num_deleted_rows", "BIGINT"),
                   ("num_inserted_rows", "BIGINT")]
        return columns, [[inserted + updated, updated, 0, inserted]]

    def _merge_table(self, name: str, source: Any, key: str) -> dict:
        table = self._open(name)
        target_schema = table.schema().to_arrow()
        import pyarrow as pa

        target_schema = pa.schema(target_schema)
        target_cols = [f.name for f in target_schema]
        if sorted(source.column_names) != sorted(target_cols):
            raise _Failed("DELTA_MERGE_UNRESOLVED_EXPRESSION", f"The source columns {sorted(source.column_names)} "
                          f"do not match the columns of {name} {sorted(target_cols)}.", "42601")
        if key not in target_cols:
            raise _Failed("UNRESOLVED_COLUMN", f"A column `{key}` cannot be resolved.", "42703")
        keys = source.column(key).to_pylist()
        if len(set(keys)) != len(keys):
            raise _Failed("DELTA_MULTIPLE_SOURCE_ROW_MATCHING_TARGET_ROW_IN_MERGE", "Cannot perform Merge as "
                          "multiple source rows matched and attempted to modify the same target row.", "21506")
        try:
            source = source.select(target_cols).cast(target_schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as e:
            raise _Failed("DELTA_FAILED_TO_MERGE_FIELDS", f"Failed to merge the source into {name}: {e}",
                          "22005") from None
        if not source.num_rows:
            return {"num_target_rows_inserted": 0, "num_target_rows_updated": 0}
        return (table.merge(source, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t")
                .when_matched_update_all().when_not_matched_insert_all().execute())

    def _read_parquet(self, volume_path: Any) -> Any:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not isinstance(volume_path, str):
            raise _Failed("INVALID_PARAMETER_VALUE", "read_files needs a path.", "22023")
        try:
            local = self._local_volume_path(volume_path)
        except ApiError:
            local = None
        if local is None or not local.exists():
            raise _Failed("PATH_NOT_FOUND", f"Path does not exist: {volume_path}.", "42K03")
        files = sorted(local.rglob("*.parquet")) if local.is_dir() else [local]
        if not files:
            raise _Failed("UNABLE_TO_INFER_SCHEMA", f"Unable to infer schema for Parquet at {volume_path}.", "42KD9")
        try:
            return pa.concat_tables([pq.read_table(str(f)) for f in files])
        except (pa.ArrowInvalid, OSError) as e:
            raise _Failed("FAILED_READ_FILE", f"Error while reading file {volume_path}: {e}", "KD001") from None

    def _sql_delete(self, m: re.Match, values: dict) -> tuple[list, list]:
        import pyarrow as pa

        name = self._table_name(m, values)
        table = self._open(name)
        col = m.group("col")
        target_schema = pa.schema(table.schema().to_arrow())
        if col not in target_schema.names:
            raise _Failed("UNRESOLVED_COLUMN", f"A column `{col}` cannot be resolved.", "42703")
        wanted = _marker_values(m, values)
        wanted = list(dict.fromkeys(v for v in wanted if v is not None))
        deleted = 0
        if wanted:
            source = pa.table({col: pa.array(wanted, type=target_schema.field(col).type)})
            metrics = (table.merge(source, predicate=f"t.{col} = s.{col}", source_alias="s", target_alias="t")
                       .when_matched_delete().execute())
            deleted = metrics["num_target_rows_deleted"]
            self._operations[(name, self._open(name).version())] = "DELETE"  # run as a MERGE by delta-rs
        return [("num_affected_rows", "BIGINT")], [[deleted]]

    def _sql_select(self, m: re.Match, values: dict) -> tuple[list, list]:
        import pyarrow as pa
        import pyarrow.compute as pc

        name = self._table_name(m, values)
        table = self._open(name)
        data = table.to_pyarrow_table()
        sql_types = {f.name: _sql_type(f.type) for f in data.schema}
        cols = list(data.column_names) if m.group("cols") == "*" else [c.strip() for c in m.group("cols").split(",")]
        order = [c.strip() for c in (m.group("order") or "").split(",") if c.strip()]
        for c in [*cols, *order, *([m.group("col")] if m.group("col") else [])]:
            if c not in sql_types:
                raise _Failed("UNRESOLVED_COLUMN", f"A column, variable, or function parameter with name `{c}` "
                              "cannot be resolved.", "42703")
        if m.group("col"):
            wanted = _marker_values(m, values)
            data = data.filter(pc.is_in(data.column(m.group("col")),
                                        value_set=pa.array(wanted, type=data.schema.field(m.group("col")).type)))
        if order:
            data = data.sort_by([(c, "ascending") for c in order])
        rows = [[row[c] for c in cols] for row in data.select(cols).to_pylist()]
        return [(c, sql_types[c]) for c in cols], rows

    def _sql_history(self, m: re.Match, values: dict) -> tuple[list, list]:
        name = self._table_name(m, values)
        table = self._open(name)
        limit = int(m.group("limit")) if m.group("limit") else None
        rows = []
        for entry in table.history(limit):
            stamp = dt.datetime.fromtimestamp(entry["timestamp"] / 1000, tz=dt.timezone.utc)
            rows.append([entry["version"], stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                         self._operations.get((name, entry["version"]), entry.get("operation", ""))])
        rows.sort(key=lambda r: -r[0])
        return [("version", "BIGINT"), ("timestamp", "TIMESTAMP"), ("operation", "STRING")], rows

    def _sql_describe(self, m: re.Match, values: dict) -> tuple[list, list]:
        import pyarrow as pa

        table = self._open(self._table_name(m, values))
        schema = pa.schema(table.schema().to_arrow())
        return ([("col_name", "STRING"), ("data_type", "STRING"), ("comment", "STRING")],
                [[f.name, _sql_type(f.type).lower(), None] for f in schema])

    # ------------------------------------------------------------------ Files API

    def _local_volume_path(self, path: str) -> Path:
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ApiError(400, f"Invalid path {path!r}: '.' and '..' are not allowed.", "INVALID_PARAMETER_VALUE")
        if len(parts) < 4 or parts[0] != "Volumes":
            raise ApiError(400, f"Invalid path {path!r}: expected /Volumes/<catalog>/<schema>/<volume>/...",
                           "INVALID_PARAMETER_VALUE")
        volume = tuple(parts[1:4])
        with self._lock:
            known = volume in self._volumes
        if not known:
            raise ApiError(404, f"Volume {'.'.join(volume)} does not exist.", "NOT_FOUND")
        return self.root / "volumes" / Path(*parts[1:])

    def _files(self, op: str, path: str, query: dict, raw: bytes) -> tuple[int, Any, dict]:
        local = self._local_volume_path(path)
        with self._lock:
            if op == "fs-put":
                overwrite = (query.get("overwrite") or ["true"])[-1].lower() != "false"
                if local.is_dir():
                    raise ApiError(409, f"{path} is a directory.", "ALREADY_EXISTS")
                if local.exists() and not overwrite:
                    raise ApiError(409, f"The file {path} already exists.", "ALREADY_EXISTS")
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.part")
                tmp.write_bytes(raw)
                tmp.replace(local)
                return 204, b"", {}
            if op == "fs-mkdir":
                if local.is_file():
                    raise ApiError(409, f"{path} is a file.", "ALREADY_EXISTS")
                local.mkdir(parents=True, exist_ok=True)
                return 204, b"", {}
            if op in ("fs-get", "fs-head", "fs-delete"):
                if not local.is_file():
                    raise ApiError(404, f"The file {path} does not exist.", "NOT_FOUND")
                if op == "fs-delete":
                    local.unlink()
                    return 204, b"", {}
                return 200, local.read_bytes(), {"Last-Modified": _http_date(local.stat().st_mtime)}
            if not local.is_dir():
                raise ApiError(404, f"The directory {path} does not exist.", "NOT_FOUND")
            if op == "fs-head-dir":
                return 200, b"", {}
            entries = sorted(e for e in local.iterdir() if not e.name.startswith("."))
            if op == "fs-rmdir":
                if entries:
                    raise ApiError(409, f"The directory {path} is not empty.", "RESOURCE_CONFLICT")
                local.rmdir()
                return 204, b"", {}
            base = "/" + "/".join(p for p in path.split("/") if p)
            contents = []
            for e in entries:
                item: dict[str, Any] = {"path": f"{base}/{e.name}" + ("/" if e.is_dir() else ""), "name": e.name,
                                        "is_directory": e.is_dir()}
                if e.is_file():
                    item.update(file_size=e.stat().st_size, last_modified=int(e.stat().st_mtime * 1000))
                contents.append(item)
            return 200, {"contents": contents} if contents else {}, {}

    # ------------------------------------------------------------------ Delta Sync (called by the emulator)

    def delta_sync_schema(self, spec: dict, primary_key: str) -> tuple[dict[str, str], int | None]:
        """Check a Delta Sync index's source table; returns (Vector Search schema, vector dimension)."""
        import pyarrow as pa

        name = spec.get("source_table")
        if not isinstance(name, str) or not re.fullmatch(rf"{_IDENT}\.{_IDENT}\.{_IDENT}", name):
            raise ApiError(400, f"Invalid source_table {name!r}: expected catalog.schema.table.")
        with self._table_lock:
            try:
                table = self._open(name)
            except _Failed:
                raise ApiError(400, f"Source table {name} does not exist.", "INVALID_PARAMETER_VALUE") from None
            config = table.metadata().configuration
            schema = pa.schema(table.schema().to_arrow())
        if str(config.get("delta.enableChangeDataFeed", "")).lower() != "true":
            raise ApiError(400, f"Change data feed is not enabled on the source table {name}. Run ALTER TABLE {name} "
                           "SET TBLPROPERTIES (delta.enableChangeDataFeed = true).", "INVALID_PARAMETER_VALUE")
        vs_schema = {f.name: _vs_type(f.type) for f in schema}
        if primary_key not in vs_schema:
            raise ApiError(400, f"Primary key {primary_key!r} is not a column of {name}.")
        dim = None
        for col in spec.get("embedding_vector_columns") or []:
            if vs_schema.get(col.get("name")) not in ("array<float>", "array<double>"):
                raise ApiError(400, f"Embedding vector column {col.get('name')!r} must be an ARRAY<FLOAT> column of "
                               f"{name}.")
            dim = col.get("embedding_dimension")
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise ApiError(400, "embedding_dimension must be a positive integer.")
        for col in spec.get("embedding_source_columns") or []:
            if vs_schema.get(col.get("name")) != "string":
                raise ApiError(400, f"Embedding source column {col.get('name')!r} must be a STRING column of {name}.")
            endpoint = col.get("embedding_model_endpoint_name")
            if endpoint not in self.embedding_endpoints:
                raise ApiError(400, f"Serving endpoint {endpoint!r} does not exist or cannot embed.")
        return vs_schema, dim

    def start_sync(self, idx: Any, *, initial: bool = False) -> None:
        """Begin an update of a Delta Sync index (its initial snapshot when ``initial``)."""
        with self._lock:
            sync = self._syncs.get(idx.name)
            if sync is None:
                sync = self._syncs[idx.name] = _Sync(table=idx.spec["source_table"])
            elif sync.pending is not None:
                raise ApiError(409, f"An update of index {idx.name} is already in progress.", "RESOURCE_CONFLICT")
        with self._table_lock:
            version = self._open(sync.table).version()
        with self._lock:
            sync.pending = (version, time.monotonic() + self.sync_seconds, initial)
        self.settle(idx)

    def settle(self, idx: Any) -> None:
        """Apply a due update to the index rows (the emulator calls this before it reads an index)."""
        with self._lock:
            sync = self._syncs.get(idx.name)
            if sync is None or sync.pending is None or time.monotonic() < sync.pending[1]:
                return
            target, _, initial = sync.pending
            failure = self._sync_failures.pop(idx.name, None)
        try:
            if failure:
                raise _Failed("PIPELINE_FAILED", failure, "XX000")
            rows, stamp = self._apply(idx, sync, target, initial)
        except _Failed as e:
            with self._lock:
                sync.pending, sync.failure = None, str(e)
            return
        with self._lock:
            idx.rows = rows
            sync.version, sync.timestamp, sync.pending, sync.failure = target, stamp, None, None

    def _apply(self, idx: Any, sync: _Sync, target: int, initial: bool) -> tuple[dict, str]:
        """The index rows after reading the table up to version ``target``, and that commit's time."""
        import pyarrow as pa

        with self._table_lock:
            table = self._open(sync.table)
            millis = next((h["timestamp"] for h in table.history() if h["version"] == target), 0)
            stamp = dt.datetime.fromtimestamp(millis / 1000, tz=dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            if initial or sync.version < 0:
                changes = [("insert", r) for r in _version_rows(table, target)]
                rows: dict = {}
            else:
                rows = copy.deepcopy(idx.rows)
                changes = []
                if target > sync.version:
                    cdf = pa.table(table.load_cdf(starting_version=sync.version + 1, ending_version=target).read_all())
                    records = cdf.to_pylist()
                    records.sort(key=lambda r: r["_commit_version"])
                    changes = [(r["_change_type"], r) for r in records]
        vector = idx.vector_column
        source_cols = [c.get("name") for c in idx.spec.get("embedding_source_columns") or []]
        columns = [c for c in idx.schema]
        upserts: dict = {}
        for kind, record in changes:
            key = record.get(idx.primary_key)
            if kind == "delete":
                rows.pop(key, None)
                upserts.pop(key, None)
            elif kind in ("insert", "update_postimage"):
                upserts[key] = {c: record.get(c) for c in columns}
                rows.pop(key, None)
        if source_cols:
            endpoint = idx.spec["embedding_source_columns"][0]["embedding_model_endpoint_name"]
            todo = list(upserts.values())
            vectors = self.embedding_endpoints[endpoint]([str(r.get(source_cols[0]) or "") for r in todo]) if todo else []
            for r, v in zip(todo, vectors, strict=True):
                norm = math.sqrt(sum(x * x for x in v)) or 1.0
                r[MANAGED_VECTOR] = [float(x) / norm for x in v]
                if idx.dimension is None:
                    idx.dimension = len(v)
        for key, r in upserts.items():
            if key is None:
                raise _Failed("PIPELINE_FAILED", "A source row has a null primary key.", "XX000")
            vec = r.get(vector)
            if not isinstance(vec, list) or len(vec) != idx.dimension or not all(
                    isinstance(x, (int, float)) and math.isfinite(x) for x in vec):
                raise _Failed("PIPELINE_FAILED", f"Row {key!r}: the vector column {vector!r} is missing or does not "
                              f"have dimension {idx.dimension}.", "XX000")
            rows[key] = r
        return rows, stamp

    def index_status(self, idx: Any) -> dict:
        """``status`` of a Delta Sync index, as describe returns it."""
        with self._lock:
            sync = self._syncs.get(idx.name)
            if sync is None:
                return {"ready": False, "detailed_state": "PROVISIONING_PIPELINE_RESOURCES", "indexed_row_count": 0,
                        "message": "Index is being provisioned."}
            if sync.pending is not None:
                state = UPDATE_STATES[1] if sync.pending[2] else UPDATE_STATES[0]
                message = "Index is being updated."
            elif sync.failure:
                state, message = "ONLINE_PIPELINE_FAILED", f"Index update failed: {sync.failure}"
            else:
                state, message = "ONLINE_NO_PENDING_UPDATE", "Index is online."
            out: dict[str, Any] = {"ready": state.startswith("ONLINE"), "detailed_state": state,
                                   "indexed_row_count": len(idx.rows), "message": message}
            if sync.version >= 0:
                out["triggered_update_status"] = {"last_processed_commit_version": sync.version,
                                                  "last_processed_commit_timestamp": sync.timestamp}
            return out

    def pipeline_id(self, idx: Any) -> str | None:
        with self._lock:
            sync = self._syncs.get(idx.name)
            return sync.pipeline_id if sync else None

    def embed(self, endpoint: str, text: str) -> list[float]:
        vector = self.embedding_endpoints[endpoint]([text])[0]
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        return [float(x) / norm for x in vector]


# ---------------------------------------------------------------------- helpers


def _three_part(name: str, what: str) -> tuple[str, str, str]:
    parts = tuple(name.replace("`", "").split("."))
    if len(parts) != 3 or not all(re.fullmatch(_IDENT, p) for p in parts):
        raise ValueError(f"{what} name {name!r} must be catalog.schema.{what}")
    return parts  # type: ignore[return-value]


def _wait_seconds(raw: Any) -> float:
    if raw is None:
        return WAIT_TIMEOUT_DEFAULT
    m = re.fullmatch(r"(\d+)s", str(raw).strip())
    seconds = int(m.group(1)) if m else -1
    if seconds != 0 and not 5 <= seconds <= 50:
        raise ApiError(400, f"wait_timeout must be 0s or between 5s and 50s, got {raw!r}.", "INVALID_PARAMETER_VALUE")
    return float(seconds)


def _bind(text: str, parameters: list[dict]) -> dict[str, Any]:
    """Parameter values by name, cast to their declared types; every :marker must have one."""
    values: dict[str, Any] = {}
    for p in parameters:
        typ = str(p.get("type") or "STRING").upper()
        raw = p.get("value")
        try:
            values[p["name"]] = None if raw is None else _cast(raw, typ)
        except (TypeError, ValueError):
            raise _Failed("INVALID_PARAMETER_MARKER_VALUE", f"The value {raw!r} of parameter {p['name']} cannot be "
                          f"cast to {typ}.", "22018") from None
    masked = re.sub(r"'(?:[^']|'')*'", "''", text)  # markers inside string literals do not count
    for name in _MARKER.findall(masked):
        if name not in values:
            raise _Failed("UNBOUND_SQL_PARAMETER", f"Found the unbound parameter: {name}. Please, fix `args` and "
                          "provide a mapping of the parameter to either a SQL literal or collection constructor "
                          "functions.", "42P02")
    return values


def _cast(raw: Any, typ: str) -> Any:
    text = str(raw)
    if typ == "STRING":
        return text
    if typ in ("INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT"):
        return int(text)
    if typ in ("FLOAT", "DOUBLE", "DECIMAL"):
        return float(text)
    if typ == "BOOLEAN":
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    raise ValueError(typ)


def _marker_values(m: re.Match, values: dict[str, Any]) -> list[Any]:
    if m.group("one"):
        return [values[m.group("one")]]
    return [values[name.strip().lstrip(":")] for name in m.group("many").split(",")]


def _split_columns(text: str) -> list[str]:
    out, depth, current = [], 0, ""
    for ch in text:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        out.append(current)
    return out


def _arrow_type(sql: str) -> Any:
    import pyarrow as pa

    m = re.fullmatch(r"ARRAY<(\w+)>", sql)
    if m:
        inner = ARRAY_INNER.get(m.group(1))
        if inner is None:
            raise _Failed("UNSUPPORTED_DATATYPE", f"Unsupported data type {sql}.", "0A000")
        return pa.list_(pa.type_for_alias(inner))
    if sql not in SQL_TYPES:
        raise _Failed("UNSUPPORTED_DATATYPE", f"Unsupported data type {sql}.", "0A000")
    return pa.type_for_alias(SQL_TYPES[sql])


def _sql_type(arrow: Any) -> str:
    import pyarrow as pa

    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return f"ARRAY<{_sql_type(arrow.value_type)}>"
    for sql, alias in (("STRING", "string"), ("INT", "int32"), ("BIGINT", "int64"), ("FLOAT", "float32"),
                       ("DOUBLE", "float64"), ("BOOLEAN", "bool")):
        if arrow == pa.type_for_alias(alias) or (sql == "STRING" and pa.types.is_large_string(arrow)):
            return sql
    return str(arrow).upper()


def _vs_type(arrow: Any) -> str:
    sql = _sql_type(arrow)
    m = re.fullmatch(r"ARRAY<(\w+)>", sql)
    if m:
        return f"array<{VS_TYPES.get(m.group(1), m.group(1).lower())}>"
    return VS_TYPES.get(sql, sql.lower())


def _json_cell(value: Any, sql_type: str) -> str | None:
    """A value as the JSON_ARRAY format has it: a string, or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        inner = sql_type[6:-1] if sql_type.startswith("ARRAY<") else "STRING"
        return "[" + ",".join("null" if v is None else _scalar_json(v, inner) for v in value) + "]"
    if isinstance(value, float):
        return _float_text(value, sql_type)
    return str(value)


def _scalar_json(value: Any, sql_type: str) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return _float_text(value, sql_type)
    return json.dumps(value)


def _float_text(value: float, sql_type: str) -> str:
    if sql_type == "FLOAT":
        import numpy as np

        return str(np.float32(value))
    return repr(value)


def _version_rows(table: Any, version: int) -> list[dict]:
    from deltalake import DeltaTable

    snapshot = DeltaTable(table.table_uri, version=version)
    return snapshot.to_pyarrow_table().to_pylist()


def _http_date(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")

