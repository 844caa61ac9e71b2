"""The Databricks Delta Sync target: a Unity Catalog Delta table behind a Delta Sync Vector Search index.

    --target databricks --index-kind delta-sync   (RAGCLI_DATABRICKS_INDEX_KIND=delta-sync)

Ingest plans exactly as for the other targets (same chunk ids, same incremental diff). The table holds
one row per chunk (`rows.COLUMNS`) plus ragcli's manifest row (id `__ragcli_manifest__`, kind
"manifest", the manifest JSON in `text`), the same rows a Direct Access index holds. Publishing, in
this order:

1. create the table (change data feed on) if it does not exist;
2. MERGE the rows of every file split in this run (Parquet staged on the volume, merged by id);
3. DELETE the rows of chunks no file holds any more (`WHERE id IN (...)`, only ids read from the table);
4. MERGE the manifest row, last: a run stopped before it leaves the old manifest, so the next run sees
   the touched files as changed and processes them again (re-using the vectors already in the table);
5. create the Delta Sync index (TRIGGERED, self-managed vectors unless RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT
   names a model serving endpoint) if it does not exist, else trigger a sync and wait until the index has
   processed the table's version after the writes (progress stage "sync", RAGCLI_DATABRICKS_SYNC_TIMEOUT).

Every step is idempotent, so an ingest killed anywhere (between MERGE and sync included) is finished by
the next one: it finds the table ahead of the index and syncs. `state()` and `reusable_vectors()` read
the table through the SQL warehouse (the truth a sync converges to); `open()`, `search()` and
`chunks()` read the index (what queries see), so querying needs no warehouse.

Search: `dense` sends the question's vector (scores converted to cosine, as for Direct Access) or, with
managed embeddings, the question's text (`capabilities.embeds_text`); `bm25` a FULL_TEXT query; `hybrid`
the service's HYBRID query (fused by the service; `--fusion`/`--alpha` do not apply).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from ragcli import __version__
from ragcli.errors import DatabricksError, IndexNotFoundError, UsageError
from ragcli.targets.base import Capabilities, IndexInfo, Target
from ragcli.targets.databricks import rows as R
from ragcli.targets.delta_sync import rows as table
from ragcli.types import Chunk, Hit, Published, TargetState, text_key

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.config import Settings
    from ragcli.targets.delta_sync.client import DeltaSyncClient, DeltaSyncConfig
    from ragcli.types import Plan, Progress

_QUERY_TYPES = {"bm25": "FULL_TEXT", "hybrid": "HYBRID"}
_STATE_COLUMNS = ["id", "kind", "text", "source", "position", "file_sha256", "chunk_tokens"]
INGEST_HINT = "ragcli ingest --target databricks --index-kind delta-sync <paths>"


class DeltaSyncTarget(Target):
    kind = "databricks"
    capabilities = Capabilities(modes=frozenset({"dense", "bm25", "hybrid"}), fusion_params=False)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        name = settings.databricks_index or "(RAGCLI_DATABRICKS_INDEX not set)"
        self.label = f"The Databricks Delta Sync index {name}"
        self.location = settings.databricks_index or ""
        self.managed = bool((settings.databricks_embedding_endpoint or "").strip())
        if self.managed:  # the index embeds the question itself
            self.capabilities = Capabilities(modes=frozenset({"dense", "bm25", "hybrid"}), fusion_params=False,
                                             embeds_text=True)
        self._client: DeltaSyncClient | None = None
        self._index: Any = None
        self._info: dict[str, Any] = {}
        self._table_exists = False
        self._held: dict[str, dict[str, Any]] = {}  # chunk id -> table row (no vector), read by state()
        self._held_manifest: dict[str, Any] | None = None
        self._held_ids: dict[str, set[str]] = {}  # file -> ids of its chunk rows in the table
        self._opened: IndexInfo | None = None

    def resources(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        if self.settings.databricks_index:
            found["vector_search_index"] = [self.settings.databricks_index]
        if self.managed:  # a question is embedded by this endpoint when the index is queried
            found["serving_endpoint"] = [str(self.settings.databricks_embedding_endpoint).strip()]
        return found

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, *, writing: bool) -> DeltaSyncClient:
        from ragcli.targets.databricks.client import client_class
        from ragcli.targets.delta_sync.client import DeltaSyncClient, resolve_delta_sync_config

        client_class()  # a missing extra says so before any configuration message
        cfg = resolve_delta_sync_config(self.settings, writing=writing)
        if self._client is None or self._client.cfg != cfg:
            self._client = DeltaSyncClient(cfg)
        return self._client

    @property
    def cfg(self) -> DeltaSyncConfig:
        assert self._client is not None
        return self._client.cfg

    def rebuild_hint(self) -> str:
        return "ragcli ingest --target databricks --index-kind delta-sync --rebuild <paths>"

    def dimension_advice(self) -> str:
        return (f"A Delta Sync index cannot change its dimension: set RAGCLI_DATABRICKS_INDEX and "
                f"RAGCLI_DATABRICKS_TABLE to new names (ragcli creates both), or delete {self.location} and its "
                "table in the workspace first.")

    # -- writing -----------------------------------------------------------------------------------
    def state(self, *, rebuild: bool = False, progress: Progress | None = None) -> TargetState:
        client = self._connect(writing=True)
        client.remote.check_endpoint()
        self._index, self._info, self._held, self._held_manifest, self._held_ids = None, {}, {}, None, {}
        dim = None
        found = client.get_index(missing_ok=True)
        if found is not None:
            self._index, self._info = found
            served_by = self._info.get("endpoint_name")
            endpoint = client.cfg.databricks.endpoint
            if served_by and endpoint and served_by != endpoint:
                raise DatabricksError(f"The Databricks index {client.cfg.index} is served by endpoint {served_by!r}, "
                                      f"not {endpoint!r}: set RAGCLI_DATABRICKS_ENDPOINT={served_by}.")
            dim = client.check_index(self._info)
        columns = client.table_columns(progress)
        self._table_exists = columns is not None
        if columns is None:
            return TargetState(name=client.cfg.index, fixed_dim=dim)
        present = False
        for row in client.read_rows(_STATE_COLUMNS, progress=progress):
            key = str(row.get("id"))
            if key == R.MANIFEST_ID:
                present = True
                self._held_manifest = R.parse_manifest(row.get("text"))
            elif row.get("kind") == table.KIND_CHUNK:
                self._held[key] = row
        manifest = self._held_manifest
        if present and manifest is None and not rebuild:
            raise DatabricksError(
                f"The ragcli manifest row of the table {client.cfg.table} cannot be read (damaged, or written by a "
                f"newer ragcli than {__version__}). Upgrade ragcli, or run: {self.rebuild_hint()}")
        if manifest is None:
            # Without a manifest nothing in the table is trusted: everything is embedded again and rows
            # that are not part of the next content are deleted.
            return TargetState(name=client.cfg.index, fixed_dim=dim)
        files_table = R.file_table(self._held, manifest)
        self._held_ids = {name: {str(r["id"]) for r in meta["chunks"]} for name, meta in files_table.items()}
        files = {name: dict(meta, chunks=len(meta["chunks"]), tokens=sum(r["tokens"] for r in meta["chunks"]))
                 for name, meta in files_table.items()}
        return TargetState(name=client.cfg.index, files=files, embed=manifest.get("embed"),
                           splitter=manifest.get("splitter"), fixed_dim=dim)

    def reusable_vectors(self, text_keys: Sequence[str]) -> dict[str, np.ndarray]:
        import numpy as np

        if self.managed or not self._held:
            return {}
        wanted = set(text_keys)
        ids_by_key: dict[str, str] = {}
        for key, row in self._held.items():
            tk = text_key(str(row.get("text") or ""))
            if tk in wanted and tk not in ids_by_key:
                ids_by_key[tk] = key
        if not ids_by_key:
            return {}
        dim = _as_int(((self._held_manifest or {}).get("embed") or {}).get("dim"))
        assert self._client is not None
        vectors = {str(r["id"]): r.get(table.VECTOR_COLUMN)
                   for r in self._client.read_rows(["id", table.VECTOR_COLUMN], where=("id", list(ids_by_key.values())))}
        out: dict[str, np.ndarray] = {}
        for tk, key in ids_by_key.items():
            values = vectors.get(key)
            if isinstance(values, list) and values and (dim is None or len(values) == dim):
                out[tk] = np.asarray(values, dtype=np.float32)
        return out

    def publish(self, plan: Plan, *, progress: Progress | None = None) -> Published:
        client = self._connect(writing=True)
        cfg = client.cfg
        dim = int(plan.embed["dim"])
        wrote = False
        if not self._table_exists:
            if progress:
                progress("create table", 0, 1)
            wrote = client.ensure_table(progress) or wrote
            self._table_exists = True
            if progress:
                progress("create table", 1, 1)
        # Rows to merge: the chunks of every file split in this run (rows of kept files stay as they are).
        rows = [self._row(R.chunk_row(c, str(plan.files[c.file].get("sha256") or ""), plan.vectors[c.id]))
                for c in plan.chunks]
        keep = {str(c.id) for c in plan.chunks}
        for name in plan.kept:
            keep |= self._held_ids.get(name, set())
        stale = sorted(key for key in self._held if key not in keep)  # leftovers of no file included
        if rows:
            client.merge_rows(rows, progress=progress)
        if stale:
            client.delete_rows("id", stale, progress=progress)
        manifest = json.loads(json.dumps(R.build_manifest(plan, set())))  # JSON types, as read back
        if rows or stale or not _same_content(self._held_manifest, manifest):
            manifest["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            client.merge_rows([self._row(R.manifest_row(manifest, dim))], progress=progress)
            wrote = True
        wrote = wrote or bool(rows or stale)
        # The index follows the table: create it (its first snapshot holds everything), or sync it up to
        # the table's version now. A sync the index has already processed costs one describe.
        if self._index is None:
            self._index, self._info = client.create_index(dimension=None if self.managed else dim, progress=progress)
            dim_found = client.check_index(self._info)
            if dim_found not in (None, dim):
                raise DatabricksError(f"The Delta Sync index {cfg.index} has dimension {dim_found}, not {dim}. "
                                      f"{self.dimension_advice()}")
            return Published(name=cfg.index, published=True)
        version = client.table_version(progress)
        before = _processed(self._info)
        self._info = client.sync(self._index, min_version=version, progress=progress)
        return Published(name=cfg.index, published=wrote or before is None or before < version)

    def _row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A Direct Access row as a table row: managed embeddings keep no vector (the index embeds `text`)."""
        if self.managed:
            row = dict(row, **{table.VECTOR_COLUMN: None})
        return row

    # -- reading -----------------------------------------------------------------------------------
    def _open_index(self) -> DeltaSyncClient:
        client = self._connect(writing=False)
        try:
            found = client.get_index(missing_ok=False)
        except IndexNotFoundError:
            raise IndexNotFoundError(f"There is no Databricks Vector Search index {client.cfg.index} on "
                                     f"{client.host}. Run: {INGEST_HINT}") from None
        assert found is not None
        self._index, self._info = found
        return client

    def open(self) -> IndexInfo:
        client = self._open_index()
        dim = client.check_index(self._info)
        manifest = self._read_manifest_row(dim)
        if manifest is None:
            raise IndexNotFoundError(
                f"The Databricks index {client.cfg.index} has no readable ragcli manifest: no ragcli ingest (of "
                f"this version or older) has finished syncing into it. Run: {INGEST_HINT}")
        embed = dict(manifest.get("embed") or {})
        processed = _processed(self._info)
        self._opened = IndexInfo(
            name=client.cfg.index, embed=embed, splitter=dict(manifest.get("splitter") or {}),
            dim=dim if dim is not None else _as_int(embed.get("dim")), chunks=int(manifest.get("chunks") or 0),
            files=dict(manifest.get("files") or {}), corpus_sha256=manifest.get("corpus_sha256"),
            index_type="databricks-delta-sync",
            extra={"updated_at": manifest.get("updated_at"), "synced_version": processed})
        return self._opened

    def _read_manifest_row(self, dim: int | None) -> dict[str, Any] | None:
        assert self._client is not None
        probe: dict[str, Any] = {"query_vector": R.unit_vector(dim)} if dim else {"query_text": "ragcli manifest"}
        found = self._client.remote.query(self._index, f"reading ragcli's manifest row of {self.location}",
                                          columns=["id", "text"], filters={"kind": R.KIND_MANIFEST}, num_results=1,
                                          **probe)
        for row in found:
            if str(row.get("id")) == R.MANIFEST_ID:
                return R.parse_manifest(row.get("text"))
        return None

    def search(self, mode: str, k: int, *, vector: np.ndarray | None = None, text: str | None = None) -> list[Hit]:
        if self._opened is None:
            self.open()
        assert self._client is not None
        if mode not in self.capabilities.modes:
            raise UsageError(f"Unknown retrieval mode {mode!r}; use dense, bm25 or hybrid.")
        kwargs: dict[str, Any] = {"columns": R.RESULT_COLUMNS, "filters": R.CHUNK_FILTER, "num_results": k}
        if mode in ("dense", "hybrid") and not self.managed:
            if vector is None:
                raise ValueError(f"{mode} search needs a vector")
            kwargs["query_vector"] = R.as_vector(vector)
        if self.managed or mode in _QUERY_TYPES:
            if not text:
                raise ValueError(f"{mode} search on {self.location} needs the question's text")
            kwargs["query_text"] = text
        if mode in _QUERY_TYPES:
            kwargs["query_type"] = _QUERY_TYPES[mode]
        return R.search_hits(self._client.remote, self._index, self.location, mode, k, kwargs)

    def chunks(self) -> Iterable[Chunk]:
        """Every chunk row the index serves (a full scan, in file and position order)."""
        if self._index is None:
            self.open()
        assert self._client is not None
        held = {str(r.get(R.PRIMARY_KEY)): r for r in self._client.remote.scan(self._index)
                if r.get("kind") == R.KIND_CHUNK}
        found = [Chunk.from_json(row) for meta in R.file_table(held, None).values() for row in meta["chunks"]]
        return sorted(found, key=lambda c: (c.file, c.position))

    def version(self) -> str | None:
        """The table version the index has processed: changes whenever a sync brought new rows."""
        try:
            self._open_index()
        except (DatabricksError, IndexNotFoundError):
            return None
        processed = _processed(self._info)
        return f"{self.location}@{processed}" if processed is not None else None

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        spec = self._info.get("delta_sync_index_spec") or {}
        status = self._info.get("status") or {}
        data.update(index_kind="delta-sync", endpoint=self._info.get("endpoint_name"),
                    source_table=spec.get("source_table"), pipeline_type=spec.get("pipeline_type"),
                    pipeline_id=spec.get("pipeline_id"), state=status.get("detailed_state"),
                    row_count=status.get("indexed_row_count"), synced_version=_processed(self._info),
                    embedding_endpoint=next((c.get("embedding_model_endpoint_name")
                                             for c in spec.get("embedding_source_columns") or []), None),
                    checked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return data


def _processed(info: dict[str, Any]) -> int | None:
    """The last table version a Delta Sync index has processed (None before its first snapshot)."""
    status = info.get("status") or {}
    for block in ("triggered_update_status", "continuous_update_status"):
        value = (status.get(block) or {}).get("last_processed_commit_version")
        if value is not None:
            return _as_int(value)
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _same_content(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    """Whether two manifests describe the same content: the same model, splitter, chunk count and files
    (checksum, chunks, status). Who wrote it (`ragcli ingest` or the Spark job, which records its own
    `writer` and the folder as it saw it), when, and with which library versions do not count, so an
    ingest over a table the Spark job wrote rewrites nothing."""
    if old is None:
        return False
    keys = ("kind", "format", "embed", "splitter", "corpus_sha256", "chunks")

    def files(m: dict[str, Any]) -> dict[str, tuple[Any, Any, Any]]:
        return {name: (meta.get("sha256"), _as_int(meta.get("chunks")), meta.get("status", "ok"))
                for name, meta in (m.get("files") or {}).items()}

    return all(old.get(k) == new.get(k) for k in keys) and files(old) == files(new)
