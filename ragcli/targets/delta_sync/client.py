"""What a Delta Sync target asks of Databricks: a Delta table written through a SQL warehouse, Parquet
staged on a volume, and a Delta Sync Vector Search index that follows the table.

    cfg = resolve_delta_sync_config(settings, writing=True)
    client = DeltaSyncClient(cfg)
    created = client.ensure_table()                          # CREATE TABLE IF NOT EXISTS ... CDF on
    rows = client.read_rows(["id", "source", "file_sha256"], where=("kind", ["chunk"]))
    client.merge_rows(new_rows, progress=p)                  # Parquet parts -> volume -> MERGE INTO
    client.delete_rows("id", stale_ids, progress=p)          # DELETE ... WHERE id IN (:v0, ...)
    found = client.get_index(missing_ok=True) or client.create_index(dimension=384, progress=p)
    info = client.sync(found[0], min_version=client.table_version(), progress=p)

Writes go through the SQL Statement Execution API on RAGCLI_DATABRICKS_WAREHOUSE. Every statement is
parameterised: the table is `IDENTIFIER(:table)`, values are `:name` markers with `parameters`, and the
statement text is built only from ragcli's own column names, never from file names, chunk text or
settings. Rows reach the warehouse as Parquet files uploaded to a run folder under
`RAGCLI_DATABRICKS_VOLUME/ragcli-staging/` (Files API, one request per part of at most 32 MiB) and are
merged by id (`MERGE INTO ... USING (SELECT * FROM read_files(:path, format => 'parquet'))`), so a
merge that is retried, or repeated by the next run after an interruption, changes nothing twice. The
run folder is removed afterwards (a run killed in between leaves it behind; nothing reads it again).

Waiting. A statement waits up to RAGCLI_DATABRICKS_STATEMENT_TIMEOUT (default 600 s), a warehouse start
included (a stopped warehouse starts when a statement arrives; the statement is PENDING meanwhile), then
it is cancelled and the error names the warehouse's state. A sync is triggered (TRIGGERED pipelines) and
waited for until the index reports a processed commit version at least the table's version after the
writes, up to RAGCLI_DATABRICKS_SYNC_TIMEOUT (default 3600 s); a timeout leaves the rows in the table and
the index catching up on its own. Progress goes to `progress(stage, done, total)` with the stages
"upload", "warehouse" (waiting for the warehouse, seconds), "statement" (running, seconds), "delete" and
"sync" (seconds).

Errors, retries and masking are those of the Direct Access client (`ragcli.targets.databricks.client.DatabricksClient`):
databricks-sdk errors are handed to `DatabricksClient.call` as HTTP statuses, so transient failures (429, 5xx,
timeouts, resets) are retried with RAGCLI_DATABRICKS_RETRIES / RAGCLI_DATABRICKS_BACKOFF and every message
is one line with credentials masked. databricks-sdk's own retry budget is set to one second so that
ragcli's policy is the one that applies.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ragcli.errors import BackendUnavailableError, ConfigError, DatabricksAuthError, DatabricksError
from ragcli.targets.delta_sync import rows as table

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.types import Progress

INSTALL_HINT = "The Delta Sync index needs extra packages. Run: pip install 'ragcli[databricks]'"
STAGING_FOLDER = "ragcli-staging"
MARKERS_PER_STATEMENT = 256  # values per IN (...) list
PART_BYTES = 32 * 1024 * 1024  # estimated bytes per uploaded Parquet part
POLL_SECONDS = 2.0
FIRST_WAIT_SECONDS = 5  # the server holds the first call this long (0, or 5 to 50); then ragcli polls
FAILURE_GRACE_SECONDS = 20.0  # a failed state seen before our update started may be the previous update's
UPDATE_STATES = ("ONLINE_TRIGGERED_UPDATE", "ONLINE_UPDATING_PIPELINE_RESOURCES", "ONLINE_CONTINUOUS_UPDATE")

CREATE_TABLE = ("CREATE TABLE IF NOT EXISTS IDENTIFIER(:table) ({columns}) USING DELTA "
                "TBLPROPERTIES (delta.enableChangeDataFeed = true)")
MERGE = ("MERGE INTO IDENTIFIER(:table) AS t USING (SELECT * FROM read_files(:path, format => 'parquet')) AS s "
         "ON t.id = s.id WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")
DELETE_IN = "DELETE FROM IDENTIFIER(:table) WHERE {column} IN ({markers})"
SELECT = "SELECT {columns} FROM IDENTIFIER(:table){where} ORDER BY id"
DESCRIBE_TABLE = "DESCRIBE TABLE IDENTIFIER(:table)"
LAST_VERSION = "DESCRIBE HISTORY IDENTIFIER(:table) LIMIT 1"

_UC_PART = r"[A-Za-z0-9_\-]+"
_TABLE_NAME = re.compile(rf"^{_UC_PART}\.{_UC_PART}\.{_UC_PART}$")
_VOLUME_PATH = re.compile(rf"^/Volumes/{_UC_PART}/{_UC_PART}/{_UC_PART}(/[^/\x00]+)*$")
_WAREHOUSE_ID = re.compile(r"^[A-Za-z0-9\-]+$")
_ERROR_CLASS = re.compile(r"^\s*\[([A-Z0-9_.]+)\]")
_TABLE_COLUMNS = frozenset(name for name, _ in table.COLUMNS)
# databricks-sdk error class -> the HTTP status it stands for (the SDK keeps no status on its errors)
_SDK_STATUS = (("Unauthenticated", 401), ("PermissionDenied", 403), ("NotFound", 404), ("ResourceConflict", 409),
               ("TooManyRequests", 429), ("BadRequest", 400), ("NotImplemented", 501),
               ("TemporarilyUnavailable", 503), ("DeadlineExceeded", 504), ("InternalError", 500))


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeltaSyncConfig:
    """Where the table, the staging volume and the index live. `databricks` holds the host, the index
    name, the endpoint, the credentials and the HTTP policy (`targets.databricks.credentials.DatabricksConfig`)."""

    databricks: Any
    warehouse: str | None
    table: str | None
    volume: str | None  # /Volumes/catalog/schema/volume[/folder], no trailing slash
    embedding_endpoint: str | None  # managed embeddings; None: self-managed vectors in `embedding`
    statement_timeout: float = 600.0
    sync_timeout: float = 3600.0

    @property
    def index(self) -> str:
        return str(self.databricks.index)


def resolve_delta_sync_config(settings: Settings, *, writing: bool) -> DeltaSyncConfig:
    """Check the settings of a Delta Sync index. `writing` (ingest) needs the warehouse, the table, the
    volume and the endpoint; reading (query, bench) needs only the index. A missing or bad value is a
    `ConfigError` naming its variable."""
    from ragcli.targets.databricks.credentials import resolve_config

    dbx = resolve_config(settings, need_endpoint=writing)
    warehouse = (settings.databricks_warehouse or "").strip() or None
    name = (settings.databricks_table or "").strip() or None
    volume = (settings.databricks_volume or "").strip() or None
    if writing and not warehouse:
        raise ConfigError("RAGCLI_DATABRICKS_WAREHOUSE is not set: set it to the id of a SQL warehouse (SQL > SQL "
                          "Warehouses > the warehouse > Connection details: the last part of the HTTP path).")
    if warehouse and not _WAREHOUSE_ID.match(warehouse):
        raise ConfigError(f"RAGCLI_DATABRICKS_WAREHOUSE={warehouse!r} is not a warehouse id (letters, digits and -, "
                          "e.g. 1234567890abcdef).")
    if writing and not name:
        raise ConfigError("RAGCLI_DATABRICKS_TABLE is not set: set it to the Delta table behind the index, "
                          "catalog.schema.table (ragcli creates it).")
    if name and not _TABLE_NAME.match(name):
        raise ConfigError(f"RAGCLI_DATABRICKS_TABLE={name!r} is not a three-part Unity Catalog name; set it to "
                          "catalog.schema.table (letters, digits, _ and -).")
    if name and name == dbx.index:
        raise ConfigError(f"RAGCLI_DATABRICKS_TABLE and RAGCLI_DATABRICKS_INDEX are both {name}: the index and its "
                          "source table need different names (e.g. main.rag.chunks and main.rag.chunks_index).")
    if writing and not volume:
        raise ConfigError("RAGCLI_DATABRICKS_VOLUME is not set: set it to a Unity Catalog volume path where ragcli "
                          "may stage Parquet files, /Volumes/catalog/schema/volume.")
    if volume:
        volume = _volume_path(volume)
    return DeltaSyncConfig(
        databricks=dbx, warehouse=warehouse, table=name, volume=volume,
        embedding_endpoint=(settings.databricks_embedding_endpoint or "").strip() or None,
        statement_timeout=float(settings.databricks_statement_timeout),
        sync_timeout=float(settings.databricks_sync_timeout),
    )


def _volume_path(raw: str) -> str:
    value = raw.rstrip("/")
    if re.fullmatch(rf"{_UC_PART}\.{_UC_PART}\.{_UC_PART}", value):
        value = "/Volumes/" + value.replace(".", "/")
    if not _VOLUME_PATH.match(value) or any(part in (".", "..") for part in value.split("/")):
        raise ConfigError(f"RAGCLI_DATABRICKS_VOLUME={raw!r} is not a volume path; set it to "
                          "/Volumes/catalog/schema/volume (or a folder in it).")
    return value


# -- results -----------------------------------------------------------------------------------------
@dataclass
class StatementResult:
    """A finished statement: column names and SQL types, and rows of Python values."""

    statement_id: str
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


@dataclass
class MergeResult:
    rows: int  # rows sent
    inserted: int
    updated: int


class StatementError(DatabricksError):
    """A statement the warehouse ran and failed; `error_class` is Databricks' (e.g. TABLE_OR_VIEW_NOT_FOUND)."""

    def __init__(self, message: str, error_class: str | None, sql_state: str | None) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.sql_state = sql_state


class _HttpError(Exception):
    """A databricks-sdk error as the HTTP status `DatabricksClient.call` classifies."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


class _Conflict(Exception):
    pass


# -- the client --------------------------------------------------------------------------------------
class DeltaSyncClient:
    """The table, the volume and the index of one Delta Sync target. Connects lazily: nothing is sent
    before the first call."""

    def __init__(self, cfg: DeltaSyncConfig, *, poll_seconds: float = POLL_SECONDS,
                 failure_grace_seconds: float = FAILURE_GRACE_SECONDS) -> None:
        self.cfg = cfg
        self.poll_seconds = poll_seconds
        self.failure_grace_seconds = failure_grace_seconds
        from ragcli.targets.databricks.client import DatabricksClient

        self.remote = DatabricksClient(cfg.databricks)  # Vector Search client; retries, masking
        self._workspace: Any = None
        self._last_detail = ""

    # -- plumbing --------------------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return str(self.cfg.databricks.host)

    def clean(self, text: str) -> str:
        """`text` without any credential in play."""
        return self.remote.clean(text)

    @property
    def workspace(self) -> Any:
        """databricks-sdk's WorkspaceClient with ragcli's credentials, timeout and (no) SDK retries."""
        if self._workspace is None:
            try:
                from databricks.sdk import WorkspaceClient
                from databricks.sdk.config import Config
            except ImportError:
                raise BackendUnavailableError(INSTALL_HINT) from None
            from ragcli import __version__

            dbx = self.cfg.databricks
            kwargs: dict[str, Any] = {"host": dbx.host, "http_timeout_seconds": float(dbx.timeout),
                                      "retry_timeout_seconds": 1, "product": "ragcli", "product_version": __version__}
            if dbx.auth == "service-principal":
                kwargs.update(client_id=dbx.client_id, client_secret=dbx.client_secret, auth_type="oauth-m2m",
                              discovery_url=f"{dbx.host}/oidc/.well-known/oauth-authorization-server")
            else:
                kwargs.update(token=dbx.token, auth_type="pat")
            _quiet_sdk_notice()
            try:  # no request is sent for a token; a service principal's OAuth discovery is one GET
                self._workspace = WorkspaceClient(config=Config(**kwargs))
            except ValueError as exc:  # databricks-sdk's configuration and OAuth set-up errors
                raise DatabricksError(f"Cannot set up the Databricks client for {dbx.host}: "
                                      f"{self.clean(' '.join(str(exc).split()))[:300]}") from None
        return self._workspace

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, needs: str | None = None,
              on: dict[str, Callable[[], Exception]] | None = None, **kwargs: Any) -> Any:
        """A databricks-sdk call with `DatabricksClient.call`'s retries and error mapping. `needs` names the grant
        a 403 asks for."""
        handlers = dict(on or {})
        if needs:
            source = self.cfg.databricks.credential_source
            handlers.setdefault("forbidden", lambda: DatabricksAuthError(
                f"Databricks denied access for {self.host} while {what} ({self._last_detail}). The identity behind "
                f"{source} needs {needs}; ask a workspace admin."))

        def attempt() -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - mapped by Remote.call
                http = _as_http_error(exc)
                if http is exc:
                    raise
                self._last_detail = self.clean(" ".join(str(http).split()))[:240]
                raise http from None

        return self.remote.call(what, attempt, on=handlers)

    # -- SQL -------------------------------------------------------------------------------------------
    def execute(self, statement: str, params: Mapping[str, Any] | None = None, *, what: str,
                progress: Progress | None = None) -> StatementResult:
        """Run one parameterised statement on the warehouse and wait for it (a warehouse start included)
        up to the statement timeout; `params` maps marker names to values (str, int, float, bool, None)."""
        from databricks.sdk.service.sql import (
            Disposition,
            ExecuteStatementRequestOnWaitTimeout,
            Format,
            StatementState,
        )

        if not self.cfg.warehouse:
            raise ConfigError("RAGCLI_DATABRICKS_WAREHOUSE is not set: set it to the id of a SQL warehouse.")
        api = self.workspace.statement_execution
        timeout = self.cfg.statement_timeout
        started = time.monotonic()
        deadline = started + timeout
        warehouse = self.cfg.warehouse
        response = self._call(
            what, api.execute_statement, statement=statement, warehouse_id=warehouse,
            parameters=[_parameter(k, v) for k, v in (params or {}).items()],
            wait_timeout=_wait_timeout(min(FIRST_WAIT_SECONDS, deadline - time.monotonic())),
            on_wait_timeout=ExecuteStatementRequestOnWaitTimeout.CONTINUE, disposition=Disposition.INLINE,
            format=Format.JSON_ARRAY, needs=f"CAN USE on the SQL warehouse {warehouse}",
            on={"not_found": lambda: DatabricksError(
                f"The SQL warehouse {warehouse} (RAGCLI_DATABRICKS_WAREHOUSE) does not exist on {self.host}, or "
                "the identity ragcli uses cannot see it. Set RAGCLI_DATABRICKS_WAREHOUSE to the id of a SQL "
                "warehouse it has CAN USE on.")})
        waiting = (StatementState.PENDING, StatementState.RUNNING)
        while response.status is not None and response.status.state in waiting:
            now = time.monotonic()
            if now >= deadline:
                self._give_up(response.statement_id, response.status.state, what)
            if progress:
                stage = "warehouse" if response.status.state == StatementState.PENDING else "statement"
                progress(stage, int(now - started), int(timeout))
            time.sleep(max(0.0, min(self.poll_seconds, deadline - now)))
            response = self._call(what, api.get_statement, response.statement_id)
        state = response.status.state if response.status is not None else None
        if state == StatementState.SUCCEEDED:
            return self._result(response, what)
        if state == StatementState.FAILED:
            raise self._statement_error(response.status, what)
        raise DatabricksError(f"The statement was {getattr(state, 'value', state)} on the SQL warehouse "
                              f"{warehouse} while {what}. Run the command again.")

    def _give_up(self, statement_id: str, state: Any, what: str) -> None:
        from databricks.sdk.service.sql import StatementState

        try:
            self.workspace.statement_execution.cancel_execution(statement_id)
        except Exception:  # noqa: BLE001 - best effort: the error below is what matters
            pass
        warehouse_state = "unknown"
        try:
            warehouse_state = str(self.workspace.warehouses.get(self.cfg.warehouse).state.value)
        except Exception:  # noqa: BLE001 - the state only improves the message
            pass
        timeout = f"{self.cfg.statement_timeout:g} s"
        if state == StatementState.PENDING:
            raise DatabricksError(
                f"The SQL warehouse {self.cfg.warehouse} is {warehouse_state} and did not take the statement within "
                f"{timeout} while {what}; ragcli cancelled it. Start the warehouse (SQL > SQL Warehouses) or raise "
                "RAGCLI_DATABRICKS_STATEMENT_TIMEOUT.")
        raise DatabricksError(f"A statement ran longer than {timeout} on the SQL warehouse {self.cfg.warehouse} "
                              f"while {what}; ragcli cancelled it. Raise RAGCLI_DATABRICKS_STATEMENT_TIMEOUT or use "
                              "a larger warehouse.")

    def _statement_error(self, status: Any, what: str) -> DatabricksError:
        error = status.error
        message = self.clean(" ".join(str(getattr(error, "message", "") or "").split()))[:400]
        found = _ERROR_CLASS.match(message)
        error_class = found.group(1) if found else None
        code = getattr(getattr(error, "error_code", None), "value", None)
        if error_class in ("INSUFFICIENT_PERMISSIONS", "PERMISSION_DENIED") or code == "PERMISSION_DENIED":
            return DatabricksAuthError(
                f"Databricks denied access while {what} ({message}). The identity behind "
                f"{self.cfg.databricks.credential_source} needs USE CATALOG and USE SCHEMA, MODIFY and SELECT on "
                f"{self.cfg.table} (CREATE TABLE on its schema for the first ingest) and READ VOLUME on "
                f"{self.cfg.volume}; ask a workspace admin.")
        return StatementError(f"The SQL warehouse {self.cfg.warehouse} failed while {what}: {message}",
                              error_class, getattr(status, "sql_state", None))

    def _result(self, response: Any, what: str) -> StatementResult:
        manifest = response.manifest
        columns = [c.name for c in (manifest.schema.columns or [])] if manifest and manifest.schema else []
        types = [str(c.type_text or getattr(c.type_name, "value", "") or "STRING").upper()
                 for c in (manifest.schema.columns or [])] if manifest and manifest.schema else []
        rows: list[list[Any]] = []
        chunk = response.result
        while chunk is not None:
            rows.extend([_typed(v, t) for v, t in zip(r, types, strict=True)] for r in chunk.data_array or [])
            if chunk.next_chunk_index is None:
                break
            chunk = self._call(what, self.workspace.statement_execution.get_statement_result_chunk_n,
                               response.statement_id, chunk.next_chunk_index)
        return StatementResult(response.statement_id, columns, types, rows)

    # -- the table -------------------------------------------------------------------------------------
    def _table_params(self) -> dict[str, Any]:
        if not self.cfg.table:
            raise ConfigError("RAGCLI_DATABRICKS_TABLE is not set: set it to the Delta table behind the index, "
                              "catalog.schema.table.")
        return {"table": self.cfg.table}

    def table_columns(self, progress: Progress | None = None) -> dict[str, str] | None:
        """The table's columns and types (lower case), or None when it does not exist."""
        try:
            result = self.execute(DESCRIBE_TABLE, self._table_params(), what=f"reading the columns of {self.cfg.table}",
                                  progress=progress)
        except StatementError as exc:
            if exc.error_class == "TABLE_OR_VIEW_NOT_FOUND":
                return None
            raise
        out: dict[str, str] = {}
        for name, typ, *_ in result.rows:
            if not name or str(name).startswith("#"):
                break  # partition information follows
            out[str(name)] = str(typ).lower()
        return out

    def ensure_table(self, progress: Progress | None = None) -> bool:
        """Create the table (change data feed on) if it does not exist; True when it was created. An
        existing table must have ragcli's columns."""
        columns = self.table_columns(progress)
        if columns is None:
            self.execute(CREATE_TABLE.format(columns=table.column_definitions()), self._table_params(),
                         what=f"creating the table {self.cfg.table}", progress=progress)
            return True
        wanted = {name: typ.lower() for name, typ in table.COLUMNS}
        problems = [f"{name} {typ}" for name, typ in wanted.items() if columns.get(name) != typ]
        if problems:
            raise DatabricksError(
                f"The table {self.cfg.table} was not created by ragcli (it lacks the column(s) {', '.join(problems)}). "
                "Set RAGCLI_DATABRICKS_TABLE to a new name: ragcli creates the table.")
        return False

    def table_version(self, progress: Progress | None = None) -> int:
        """The table's current Delta version (the commit a sync must reach)."""
        result = self.execute(LAST_VERSION, self._table_params(), what=f"reading the version of {self.cfg.table}",
                              progress=progress)
        if not result.rows:
            raise DatabricksError(f"The table {self.cfg.table} has no history; is it a Delta table?")
        return int(result.rows[0][result.columns.index("version")])

    def read_rows(self, columns: Sequence[str] | None = None, *, where: tuple[str, Sequence[Any]] | None = None,
                  progress: Progress | None = None) -> list[dict[str, Any]]:
        """Rows of the table, ordered by id: `columns` (default all), optionally only those whose
        `where[0]` column is one of `where[1]`. Vectors come back as lists of floats. Results travel
        inline, so one read is limited to about 25 MiB (the Spark job handles corpora past that)."""
        names = list(columns or [name for name, _ in table.COLUMNS])
        _check_columns([*names, *([where[0]] if where else [])])
        if where is None:
            result = self.execute(SELECT.format(columns=", ".join(names), where=""), self._table_params(),
                                  what=f"reading rows of {self.cfg.table}", progress=progress)
            return result.dicts()
        out: list[dict[str, Any]] = []
        for batch in _batched(list(dict.fromkeys(where[1])), MARKERS_PER_STATEMENT):
            markers, params = _markers(batch)
            sql = SELECT.format(columns=", ".join(names), where=f" WHERE {where[0]} IN ({markers})")
            out += self.execute(sql, {**self._table_params(), **params}, what=f"reading rows of {self.cfg.table}",
                                progress=progress).dicts()
        if "id" in names:
            out.sort(key=lambda r: str(r["id"]))
        return out

    def merge_rows(self, rows: Sequence[Mapping[str, Any]], *, progress: Progress | None = None) -> MergeResult:
        """Upsert rows by id: Parquet parts uploaded to a run folder of the volume, one MERGE, the folder
        removed. Idempotent: the same rows merged again leave the table as it was."""
        rows = [dict(r) for r in rows]
        if not rows:
            return MergeResult(0, 0, 0)
        ids = [r.get(table.PRIMARY_KEY) for r in rows]
        if None in ids or len(set(ids)) != len(ids):
            raise ValueError("merge_rows needs one row per id, each with an id")
        if not self.cfg.volume:
            raise ConfigError("RAGCLI_DATABRICKS_VOLUME is not set: set it to /Volumes/catalog/schema/volume.")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        folder = f"{self.cfg.volume}/{STAGING_FOLDER}/{self.cfg.table}/{stamp}-{uuid.uuid4().hex[:12]}"
        parts = _parts(rows, PART_BYTES)
        uploaded: list[str] = []
        try:
            for number, part in enumerate(parts):
                path = f"{folder}/part-{number:05d}.parquet"
                self.upload(path, table.to_parquet(part), what=f"uploading rows to {self.cfg.volume}")
                uploaded.append(path)
                if progress:
                    progress("upload", number + 1, len(parts))
            result = self.execute(MERGE, {**self._table_params(), "path": folder + "/"},
                                  what=f"merging {len(rows)} row(s) into {self.cfg.table}", progress=progress)
        finally:
            self.remove_staged(folder, uploaded)
        values = result.dicts()[0] if result.rows else {}
        return MergeResult(len(rows), int(values.get("num_inserted_rows") or 0),
                           int(values.get("num_updated_rows") or 0))

    def delete_rows(self, column: str, values: Iterable[Any], *, progress: Progress | None = None) -> int:
        """Delete the rows whose `column` is one of `values` (in statements of at most 256 values); returns
        how many rows went."""
        _check_columns([column])
        wanted = list(dict.fromkeys(values))
        deleted = done = 0
        for batch in _batched(wanted, MARKERS_PER_STATEMENT):
            markers, params = _markers(batch)
            result = self.execute(DELETE_IN.format(column=column, markers=markers), {**self._table_params(), **params},
                                  what=f"deleting {len(batch)} row(s) from {self.cfg.table}", progress=progress)
            deleted += int(result.rows[0][0]) if result.rows else 0
            done += len(batch)
            if progress:
                progress("delete", done, len(wanted))
        return deleted

    # -- the volume ------------------------------------------------------------------------------------
    def upload(self, path: str, data: bytes, *, what: str) -> None:
        """Write one file to the volume (replacing it)."""
        import io

        self._call(what, lambda: self.workspace.files.upload(path, io.BytesIO(data), overwrite=True),
                   needs=f"READ VOLUME and WRITE VOLUME on the volume of {self.cfg.volume}",
                   on={"not_found": lambda: DatabricksError(
                       f"The volume {self.cfg.volume} (RAGCLI_DATABRICKS_VOLUME) does not exist on {self.host}. Create "
                       "it (Catalog > the schema > Create > Volume) or set RAGCLI_DATABRICKS_VOLUME to an existing "
                       "one.")})

    def remove_staged(self, folder: str, files: Iterable[str]) -> bool:
        """Remove uploaded parts and their run folder; False when something stayed behind (harmless:
        nothing reads a run folder twice)."""
        complete = True
        for path in files:
            try:
                self.workspace.files.delete(path)
            except Exception:  # noqa: BLE001 - cleanup must not hide the outcome of the merge
                complete = False
        try:
            self.workspace.files.delete_directory(folder)
        except Exception:  # noqa: BLE001
            complete = False
        return complete

    # -- the index -------------------------------------------------------------------------------------
    def get_index(self, *, missing_ok: bool) -> tuple[Any, dict[str, Any]] | None:
        """(index object, its description); None when it does not exist and `missing_ok`."""
        return self.remote.get_index(missing_ok=missing_ok)

    def create_index(self, *, dimension: int | None, progress: Progress | None = None) -> tuple[Any, dict[str, Any]]:
        """Create the Delta Sync index over the table (TRIGGERED pipeline, primary key id) and wait for its
        first snapshot. Self-managed vectors (`embedding`, `dimension`) unless the settings name a model
        serving endpoint, which then embeds `text` itself."""
        cfg = self.cfg
        if not cfg.table:
            raise ConfigError("RAGCLI_DATABRICKS_TABLE is not set: set it to the Delta table behind the index.")
        kwargs: dict[str, Any] = {"endpoint_name": cfg.databricks.endpoint, "index_name": cfg.index,
                                  "primary_key": table.PRIMARY_KEY, "source_table_name": cfg.table,
                                  "pipeline_type": "TRIGGERED"}
        if cfg.embedding_endpoint:
            kwargs.update(embedding_source_column=table.TEXT_COLUMN, embedding_model_endpoint_name=cfg.embedding_endpoint)
        else:
            if not dimension:
                raise ValueError("a self-managed index needs the vector dimension")
            kwargs.update(embedding_vector_column=table.VECTOR_COLUMN, embedding_dimension=int(dimension))
        if progress:
            progress("create index", 0, 1)
        try:
            index = self.remote.call(f"creating the Delta Sync index {cfg.index} on endpoint {cfg.databricks.endpoint}",
                                     self.remote.client.create_delta_sync_index, on={"conflict": _Conflict}, **kwargs)
        except _Conflict:  # a retried create whose first attempt went through, or another ingest won a race
            found = self.get_index(missing_ok=False)
            assert found is not None
            index = found[0]
        info = self.wait_for_index(index, min_version=None, what="building its first snapshot", progress=progress)
        if progress:
            progress("create index", 1, 1)
        return index, info

    def check_index(self, info: Mapping[str, Any]) -> int | None:
        """The vector dimension of a self-managed index (None for managed embeddings), after checking that
        it is the Delta Sync index ragcli creates over this table."""
        cfg = self.cfg
        problems = []
        kind = str(info.get("index_type") or "").upper()
        spec = info.get("delta_sync_index_spec") or {}
        if kind != "DELTA_SYNC":
            problems.append(f"it is a {kind or 'unknown'} index, not DELTA_SYNC")
        elif cfg.table and spec.get("source_table") != cfg.table:
            problems.append(f"it reads {spec.get('source_table')}, not RAGCLI_DATABRICKS_TABLE={cfg.table}")
        if info.get("primary_key") not in (None, table.PRIMARY_KEY):
            problems.append(f"its primary key is {info.get('primary_key')!r}, not {table.PRIMARY_KEY!r}")
        vectors = {c.get("name"): c.get("embedding_dimension") for c in spec.get("embedding_vector_columns") or []}
        sources = {c.get("name"): c.get("embedding_model_endpoint_name") for c in spec.get("embedding_source_columns") or []}
        dim = None
        if kind == "DELTA_SYNC":
            if cfg.embedding_endpoint:
                if sources.get(table.TEXT_COLUMN) != cfg.embedding_endpoint:
                    found = sources.get(table.TEXT_COLUMN) or "self-managed vectors"
                    problems.append(f"it embeds with {found}, not RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT="
                                    f"{cfg.embedding_endpoint}")
            elif vectors.get(table.VECTOR_COLUMN) is None:
                found = f"the model endpoint {next(iter(sources.values()))}" if sources else "no vector column"
                problems.append(f"it has {found}, not self-managed vectors in {table.VECTOR_COLUMN!r} (set "
                                "RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT for managed embeddings)")
            else:
                dim = int(vectors[table.VECTOR_COLUMN])
        if problems:
            raise DatabricksError(f"The Databricks index {cfg.index} was not created by ragcli for this table "
                                  f"({'; '.join(problems)}). Set RAGCLI_DATABRICKS_INDEX to a new name: ragcli creates "
                                  "the index.")
        return dim

    def sync(self, index: Any, *, min_version: int, progress: Progress | None = None) -> dict[str, Any]:
        """Bring the index up to table version `min_version`: trigger a sync (unless it is there already)
        and wait for it. A sync already running is waited for, then another is triggered."""
        info = self._describe(index)
        if _processed(info) is not None and _processed(info) >= min_version and not _updating(info):
            return info
        what = f"syncing the index {self.cfg.index}"
        try:
            self.remote.call(what, index.sync, on={"conflict": _Conflict})
        except _Conflict:
            self.wait_for_index(index, min_version=None, what="finishing the update already running",
                                progress=progress)
            if (_processed(self._describe(index)) or -1) >= min_version:
                return self._describe(index)
            self.remote.call(what, index.sync)
        return self.wait_for_index(index, min_version=min_version, what="syncing", progress=progress)

    def _describe(self, index: Any) -> dict[str, Any]:
        return self.remote.call(f"describing the index {self.cfg.index}", index.describe) or {}

    def wait_for_index(self, index: Any, *, min_version: int | None, what: str,
                       progress: Progress | None = None) -> dict[str, Any]:
        """Poll the index until it is online with no update running and (with `min_version`) has processed
        that table version; up to the sync timeout."""
        timeout = self.cfg.sync_timeout
        started = time.monotonic()
        saw_update = False
        while True:
            info = self._describe(index)
            status = info.get("status") or {}
            state = str(status.get("detailed_state") or "")
            processed = _processed(info)
            elapsed = time.monotonic() - started
            if _updating(info):
                saw_update = True
            elif "FAILED" in state or state.startswith("OFFLINE"):
                if saw_update or elapsed >= self.failure_grace_seconds or processed is None:
                    message = self.clean(" ".join(str(status.get("message") or "").split()))[:300]
                    raise DatabricksError(
                        f"The Delta Sync index {self.cfg.index} is {state} while {what} ({message}). The rows are in "
                        f"{self.cfg.table}; fix the cause and run the ingest again (it syncs again).")
            elif "ONLINE" in state:
                reached = min_version is None or (processed is not None and processed >= min_version)
                if reached or (processed is None and saw_update):
                    return info
            if elapsed >= timeout:
                seen = f"at version {processed}" if processed is not None else "with no processed version"
                wanted = f", waiting for {min_version}" if min_version is not None else ""
                raise DatabricksError(
                    f"The Delta Sync index {self.cfg.index} did not finish {what} within {timeout:g} s (state "
                    f"{state or 'unknown'}, {seen}{wanted}). The rows are in {self.cfg.table} and the index catches "
                    "up on its own; raise RAGCLI_DATABRICKS_SYNC_TIMEOUT to wait longer.")
            if progress:
                progress("sync", int(elapsed), int(timeout))
            time.sleep(max(0.0, min(self.poll_seconds, timeout - elapsed)))


# -- helpers -----------------------------------------------------------------------------------------
def _as_http_error(exc: BaseException) -> BaseException:
    """A databricks-sdk error as an exception with `status_code` (what `DatabricksClient.call` classifies); any other
    exception (requests' connection errors and timeouts included) as it is."""
    if isinstance(exc, TimeoutError) and exc.__cause__ is not None:
        exc = exc.__cause__  # the SDK's own (one-second) retry budget ran out: judge the last failure
    try:
        from databricks.sdk.errors import DatabricksError as SdkError
        from databricks.sdk.errors import platform
    except ImportError:  # pragma: no cover - the SDK is there when this runs
        return exc
    if not isinstance(exc, SdkError):
        return exc
    status = 500  # an error the SDK could not place (a 502 page, an unparsable body): transient
    for name, code in _SDK_STATUS:
        if isinstance(exc, getattr(platform, name)):
            status = code
            break
    code_name = getattr(exc, "error_code", None)
    return _HttpError(status, f"{code_name}: {exc}" if code_name else str(exc))


def _quiet_sdk_notice() -> None:
    """databricks-sdk logs a warning when a workspace does not serve host metadata and then goes on with
    the explicit configuration ragcli gave it; that line is not news for a ragcli user."""
    logger = logging.getLogger("databricks.sdk")
    if not any(isinstance(f, _HostMetadataNotice) for f in logger.filters):
        logger.addFilter(_HostMetadataNotice())


class _HostMetadataNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to automatically resolve config from host metadata")


def _parameter(name: str, value: Any) -> Any:
    from databricks.sdk.service.sql import StatementParameterListItem

    if isinstance(value, bool):
        return StatementParameterListItem(name=name, value="true" if value else "false", type="BOOLEAN")
    if isinstance(value, int):
        return StatementParameterListItem(name=name, value=str(value), type="BIGINT")
    if isinstance(value, float):
        return StatementParameterListItem(name=name, value=repr(value), type="DOUBLE")
    return StatementParameterListItem(name=name, value=None if value is None else str(value), type="STRING")


def _wait_timeout(seconds: float) -> str:
    """The API takes 0 s (return at once) or 5 to 50 s."""
    return f"{int(min(50, seconds))}s" if seconds >= 5 else "0s"


def _typed(value: Any, sql_type: str) -> Any:
    """A JSON_ARRAY cell (a string or null) as a Python value of its column's type."""
    if value is None:
        return None
    if sql_type.startswith("ARRAY") or sql_type.startswith("MAP") or sql_type.startswith("STRUCT"):
        import json

        return json.loads(value)
    if sql_type in ("INT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "LONG", "SHORT", "BYTE"):
        return int(value)
    if sql_type in ("FLOAT", "DOUBLE", "REAL"):
        return float(value)
    if sql_type == "BOOLEAN":
        return str(value).lower() == "true"
    return value


def _check_columns(names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in _TABLE_COLUMNS]
    if unknown:
        raise ValueError(f"not a column of ragcli's table: {', '.join(unknown)}")


def _markers(values: Sequence[Any]) -> tuple[str, dict[str, Any]]:
    """`:v0, :v1, ...` and the parameters they stand for (marker names are numbered, never taken from data)."""
    params = {f"v{i}": value for i, value in enumerate(values)}
    return ", ".join(f":{name}" for name in params), params


def _batched(values: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _parts(rows: list[dict[str, Any]], max_bytes: int) -> list[list[dict[str, Any]]]:
    parts: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        row_size = table.row_bytes(row)
        if parts[-1] and size + row_size > max_bytes:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += row_size
    return parts


def _processed(info: Mapping[str, Any]) -> int | None:
    status = info.get("status") or {}
    for block in ("triggered_update_status", "continuous_update_status"):
        version = (status.get(block) or {}).get("last_processed_commit_version")
        if version is not None:
            try:
                return int(version)
            except (TypeError, ValueError):
                return None
    return None


def _updating(info: Mapping[str, Any]) -> bool:
    status = info.get("status") or {}
    state = str(status.get("detailed_state") or "")
    return state in UPDATE_STATES or state.startswith("PROVISIONING") or (not status.get("ready", True)
                                                                          and "FAILED" not in state
                                                                          and not state.startswith("OFFLINE"))

