"""The Databricks Vector Search target: a Direct Vector Access index behind the `Target` contract.

Chunks are embedded locally with the configured model (as for the local index) and upserted as rows
(see `rows`) into an index that ragcli creates when it does not exist (the endpoint must exist:
endpoints are billed compute, so ragcli never creates one). The manifest row is written last, after
the chunk upserts and deletes: a file whose rows do not match the manifest (an interrupted run, rejected
rows) is processed again by the next ingest, and rows that belong to no current chunk are deleted.

Re-ingest is incremental: `state()` scans the index (rows come with their vectors), so unchanged files
are neither read nor embedded nor uploaded, and vectors of chunks whose text did not change are taken
from the scan (`reusable_vectors`), not re-embedded.

Search: `dense` sends the question's vector (scores converted to cosine), `bm25` a FULL_TEXT query
(the service's keyword score), `hybrid` the service's own HYBRID query (vector + text, fused by the
service; `--fusion`/`--alpha` do not apply).
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
from ragcli.targets.databricks.client import DatabricksClient, client_class
from ragcli.targets.databricks.credentials import resolve_config
from ragcli.types import Chunk, Hit, Published, TargetState, text_key

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.config import Settings
    from ragcli.targets.databricks.credentials import DatabricksConfig
    from ragcli.types import Plan, Progress

_QUERY_TYPES = {"bm25": "FULL_TEXT", "hybrid": "HYBRID"}


class DatabricksTarget(Target):
    kind = "databricks"
    capabilities = Capabilities(modes=frozenset({"dense", "bm25", "hybrid"}), fusion_params=False)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        name = settings.databricks_index or "(RAGCLI_DATABRICKS_INDEX not set)"
        self.label = f"The Databricks index {name}"
        self.location = settings.databricks_index or ""
        self._client: DatabricksClient | None = None
        self._index: Any = None
        self._info: dict[str, Any] = {}
        self._held: dict[str, dict[str, Any]] = {}  # chunk id -> row (with its vector), read by state()
        self._held_manifest: dict[str, Any] | None = None
        self._held_ids: dict[str, set[str]] = {}  # file -> ids of its held chunk rows
        self._opened: IndexInfo | None = None

    # -- connection --------------------------------------------------------------------------------
    def _connect(self, *, writing: bool) -> DatabricksClient:
        client_class()  # a missing extra says so before any configuration message
        cfg = resolve_config(self.settings, need_endpoint=writing)
        if self._client is None or self._client.cfg != cfg:
            self._client = DatabricksClient(cfg)
        return self._client

    @property
    def cfg(self) -> DatabricksConfig:
        assert self._client is not None
        return self._client.cfg

    def resources(self) -> dict[str, list[str]]:
        return {"vector_search_index": [self.settings.databricks_index]} if self.settings.databricks_index else {}

    def rebuild_hint(self) -> str:
        return "ragcli ingest --target databricks --rebuild <paths>"

    def dimension_advice(self) -> str:
        name = self.location
        return (f"An index cannot change its dimension: set RAGCLI_DATABRICKS_INDEX to a new name (ragcli creates "
                f"it), or delete {name} in the workspace first.")

    # -- writing -----------------------------------------------------------------------------------
    def state(self, *, rebuild: bool = False, progress: Progress | None = None) -> TargetState:
        client = self._connect(writing=True)
        cfg = client.cfg
        client.check_endpoint()
        found = client.get_index(missing_ok=True)
        self._index, self._info, self._held, self._held_manifest, self._held_ids = None, {}, {}, None, {}
        if found is None:
            return TargetState(name=cfg.index)
        self._index, self._info = found
        served_by = self._info.get("endpoint_name")
        if served_by and cfg.endpoint and served_by != cfg.endpoint:
            raise DatabricksError(f"The Databricks index {cfg.index} is served by endpoint {served_by!r}, not "
                                  f"{cfg.endpoint!r}: set RAGCLI_DATABRICKS_ENDPOINT={served_by}.")
        dim = R.check_layout(self._info, cfg.index)
        present = False
        for row in client.scan(self._index, progress):
            key = str(row.get(R.PRIMARY_KEY))
            if key == R.MANIFEST_ID:
                present = True
                self._held_manifest = R.parse_manifest(row.get("text"))
            elif row.get("kind") == R.KIND_CHUNK:
                self._held[key] = row
        manifest = self._held_manifest
        if present and manifest is None and not rebuild:
            raise DatabricksError(
                f"The ragcli manifest row of the Databricks index {cfg.index} cannot be read (damaged, or written "
                f"by a newer ragcli than {__version__}). Upgrade ragcli, or run: {self.rebuild_hint()}"
            )
        if manifest is None:
            # Without a manifest nothing in the index is trusted (its rows may come from another model):
            # everything is embedded again and rows that are not part of the next content are deleted.
            return TargetState(name=cfg.index, fixed_dim=dim)
        table = R.file_table(self._held, manifest)
        self._held_ids = {name: {str(r["id"]) for r in meta["chunks"]} for name, meta in table.items()}
        files = {name: dict(meta, chunks=len(meta["chunks"]), tokens=sum(r["tokens"] for r in meta["chunks"]))
                 for name, meta in table.items()}
        return TargetState(name=cfg.index, files=files, embed=manifest.get("embed"),
                           splitter=manifest.get("splitter"), fixed_dim=dim)

    def reusable_vectors(self, text_keys: Sequence[str]) -> dict[str, np.ndarray]:
        import numpy as np

        dim = R.index_dimension(self._info)
        wanted = set(text_keys)
        out: dict[str, np.ndarray] = {}
        for row in self._held.values():
            values = row.get(R.VECTOR_COLUMN)
            if not isinstance(values, list) or dim is None or len(values) != dim:
                continue  # the service returned no vector: the planner embeds that text again
            key = text_key(str(row.get("text") or ""))
            if key in wanted and key not in out:
                out[key] = np.asarray(values, dtype=np.float32)
        return out

    def publish(self, plan: Plan, *, progress: Progress | None = None) -> Published:
        client = self._connect(writing=True)
        cfg = client.cfg
        dim = int(plan.embed["dim"])
        if self._index is None:
            if progress:
                progress("create index", 0, 1)
            self._index, self._info = client.create_index(dim)
            if progress:
                progress("create index", 1, 1)
        # Rows to upsert: the chunks of every file split in this run (rows of kept files stay as they are).
        rows = [R.chunk_row(c, str(plan.files[c.file].get("sha256") or ""), plan.vectors[c.id]) for c in plan.chunks]
        keep = {str(c.id) for c in plan.chunks}
        for name in plan.kept:
            keep |= self._held_ids.get(name, set())
        stale = sorted(key for key in self._held if key not in keep)  # leftovers of no file included
        failed_upserts = client.write(self._index, rows, progress) if rows else []
        failed_deletes = client.delete(self._index, stale, progress) if stale else []

        by_id = {str(c.id): c.file for c in plan.chunks}
        partial = {by_id[k] for k in failed_upserts if k in by_id}
        manifest = json.loads(json.dumps(R.build_manifest(plan, partial)))  # JSON types, as read back
        wrote_manifest = False
        if rows or stale or not R.same_manifest(self._held_manifest, manifest):
            manifest["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # version(): two ingests in one second differ
            if client.write(self._index, [R.manifest_row(manifest, dim)], stage="manifest"):
                raise DatabricksError(f"Databricks rejected ragcli's manifest row of {cfg.index}; the chunk rows were "
                                      "written. Run the ingest again.")
            wrote_manifest = True
        failed = failed_upserts + failed_deletes
        if failed:
            shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
            what = []
            if failed_upserts:
                what.append(f"{len(failed_upserts)} of {len(rows)} row upserts")
            if failed_deletes:
                what.append(f"{len(failed_deletes)} of {len(stale)} row deletes")
            raise DatabricksError(
                f"Databricks rejected {' and '.join(what)} in {cfg.index} (ids: {shown}). The other rows were "
                "written and the affected files are marked for another try: run the same ingest again."
            )
        return Published(name=cfg.index, published=bool(rows or stale or wrote_manifest))

    # -- reading -----------------------------------------------------------------------------------
    def open(self) -> IndexInfo:
        client = self._connect(writing=False)
        cfg = client.cfg
        found = client.get_index(missing_ok=False)
        assert found is not None
        self._index, self._info = found
        dim = R.check_layout(self._info, cfg.index)
        manifest = self._read_manifest_row(dim)
        if manifest is None:
            raise IndexNotFoundError(
                f"The Databricks index {cfg.index} has no readable ragcli manifest: no ragcli ingest (of this "
                "version or older) has finished into it. Run: ragcli ingest --target databricks <paths>"
            )
        self._opened = IndexInfo(name=cfg.index, embed=dict(manifest.get("embed") or {}),
                                 splitter=dict(manifest.get("splitter") or {}), dim=dim,
                                 chunks=int(manifest.get("chunks") or 0), files=dict(manifest.get("files") or {}),
                                 corpus_sha256=manifest.get("corpus_sha256"), index_type="databricks-direct-access",
                                 extra={"updated_at": manifest.get("updated_at")})
        return self._opened

    def _read_manifest_row(self, dim: int) -> dict[str, Any] | None:
        assert self._client is not None
        found = self._client.query(self._index, f"reading ragcli's manifest row of {self.location}",
                                   columns=["id", "text"], query_vector=R.unit_vector(dim),
                                   filters={"kind": R.KIND_MANIFEST}, num_results=1)
        for row in found:
            if str(row.get("id")) == R.MANIFEST_ID:
                return R.parse_manifest(row.get("text"))
        return None

    def search(self, mode: str, k: int, *, vector: np.ndarray | None = None, text: str | None = None) -> list[Hit]:
        if self._opened is None:
            self.open()
        client = self._client
        assert client is not None
        if mode not in self.capabilities.modes:
            raise UsageError(f"Unknown retrieval mode {mode!r}; use dense, bm25 or hybrid.")
        kwargs: dict[str, Any] = {"columns": R.RESULT_COLUMNS, "filters": R.CHUNK_FILTER, "num_results": k}
        if mode in ("dense", "hybrid"):
            if vector is None:
                raise ValueError(f"{mode} search needs a vector")
            kwargs["query_vector"] = R.as_vector(vector)
        if mode in _QUERY_TYPES:
            kwargs.update(query_text=text, query_type=_QUERY_TYPES[mode])
        return R.search_hits(client, self._index, self.location, mode, k, kwargs)

    def chunks(self) -> Iterable[Chunk]:
        """Every chunk row of the index (a full scan, in file and position order)."""
        client = self._connect(writing=False)
        if self._index is None:
            self.open()
        held = {str(r.get(R.PRIMARY_KEY)): r for r in client.scan(self._index) if r.get("kind") == R.KIND_CHUNK}
        found = [Chunk.from_json(row) for meta in R.file_table(held, None).values() for row in meta["chunks"]]
        return sorted(found, key=lambda c: (c.file, c.position))

    def version(self) -> str | None:
        """The manifest's last update time: changes whenever an ingest wrote to the index."""
        try:
            info = self.open()
        except (DatabricksError, IndexNotFoundError):
            return None
        stamp = info.extra.get("updated_at")
        return f"{info.name}@{stamp}" if stamp else info.name

    def describe(self) -> dict[str, Any]:
        data = super().describe()
        data.update(endpoint=self._info.get("endpoint_name"),
                    row_count=((self._info.get("status") or {}).get("indexed_row_count")),
                    checked_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return data
