"""Ingest as a Spark job: a folder of documents (a Unity Catalog volume) → chunk rows → vectors → the
Delta table behind a Delta Sync index, on the cluster a Databricks team already has.

    from ragcli.config import load_settings
    from ragcli.spark import ingest_folder
    report = ingest_folder(spark, "/Volumes/main/rag/docs", load_settings(),
                           target="main.rag.chunks", fmt="delta")

Or, as a job: ``ragcli spark-job /Volumes/main/rag/docs --output main.rag.chunks`` (README: "Spark ingest").

The pieces, each usable from a notebook on any DataFrame:

- `read_documents(spark, root)` lists the files with ragcli's own rules (`ragcli.loaders.discover`: the
  same files, the same relative paths as `ragcli ingest`) and reads their bytes on the executors;
- `chunk_documents(docs, settings)` (`mapInPandas`) turns (relpath, content) rows into chunk rows with
  ragcli's loaders, splitter, chunk ids and token counts: the chunks `ragcli ingest` makes of the same files;
- `embed_texts(df, settings)` adds vectors with an iterator-of-batches pandas UDF that loads the
  embedding model once per Python worker (`ragcli.models.load_embedder` caches it in the process);
- `ingest_folder(...)` runs them incrementally against an existing table: a file whose SHA-256 matches
  the table's `file_sha256` (and whose rows agree with the table's manifest row) is neither split nor
  embedded; a changed file's chunks are replaced, vectors of unchanged texts taken from the table; a
  removed file's rows are dropped; a file that fails to load keeps its previous rows.

The table has the columns of `ragcli.targets.delta_sync.rows` plus ragcli's manifest row (id
`__ragcli_manifest__`: model, splitter, file table), so the Delta Sync target reads what the job wrote.
`fmt="delta"` merges into a Delta table (by id; rows that are no longer part of the content are deleted;
unchanged rows are not rewritten, so the change data feed carries only real changes). Any other format
(e.g. "parquet") writes the whole content anew: into a sibling folder that then replaces the old one for a
local path, in place for a table or a remote path.

Executors need ragcli installed and the models folder readable (on Databricks: the wheel as a job
library, RAGCLI_MODELS_DIR on a volume). Nothing of pyspark, pandas or pyarrow is imported before a
function here is called.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import BackendUnavailableError, IndexModelMismatchError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings

INSTALL_HINT = ("Spark ingest needs pyspark, pandas and pyarrow. Run: pip install 'ragcli[spark]' (on Databricks "
                "the runtime has them: install plain ragcli there).")
FORMATS = ("delta", "parquet")
DOCUMENT_COLUMNS = ("relpath", "path", "content", "file_sha256", "bytes", "read_error")
DOCUMENT_SCHEMA = ("relpath string, path string, content binary, file_sha256 string, bytes long, "
                   "read_error string")
CHUNK_COLUMNS = ("relpath", "file_sha256", "bytes", "status", "reason", "id", "position", "text", "chunk_tokens")
CHUNK_SCHEMA = ("relpath string, file_sha256 string, bytes long, status string, reason string, id string, "
                "position int, text string, chunk_tokens int")
MANIFEST_ID = "__ragcli_manifest__"  # the Direct Access index's reserved row, same format
MANIFEST_FORMAT = 1
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+$")


def _require_spark() -> None:
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
        import pyspark  # noqa: F401
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None


def worker_settings(settings: Settings) -> Settings:
    """The settings shipped to executors: secrets left out (workers never need a token)."""
    return dataclasses.replace(settings, hf_token=None, databricks_token=None, databricks_client_secret=None)


# -- documents -----------------------------------------------------------------------------------------
def list_documents(spark: Any, root: str | Path) -> Any:
    """DataFrame (relpath, path) of the documents under `root`, found as `ragcli ingest` finds them."""
    from ragcli.loaders import discover

    sources = discover([Path(root)])
    rows = [(s.relpath, str(s.path)) for s in sources]
    return spark.createDataFrame(rows, "relpath string, path string")


def read_documents(spark: Any, root: str | Path) -> Any:
    """DataFrame (relpath, path, content, file_sha256, bytes, read_error) of the documents under `root`;
    the bytes are read on the executors (for a volume, through its /Volumes mount)."""
    _require_spark()
    return list_documents(spark, root).mapInPandas(_read_partition, DOCUMENT_SCHEMA)


def _read_partition(batches: Iterator[Any]) -> Iterator[Any]:
    import pandas as pd

    from ragcli.loaders import DEFAULT_LIMITS

    cap = DEFAULT_LIMITS.max_file_bytes
    for pdf in batches:
        out = []
        for relpath, path in zip(pdf["relpath"], pdf["path"], strict=True):
            try:
                with open(path, "rb") as fh:
                    data = fh.read(cap + 1)  # load_bytes refuses more than the cap, naming the limit
                out.append((relpath, path, data, hashlib.sha256(data).hexdigest(), os.path.getsize(path), None))
            except OSError as exc:
                out.append((relpath, path, None, None, None, f"cannot read file: {exc.strerror or exc}"))
        yield pd.DataFrame(out, columns=list(DOCUMENT_COLUMNS), dtype=object)


# -- chunks --------------------------------------------------------------------------------------------
def chunk_documents(docs: Any, settings: Settings, *, encoding: str | None = None,
                    root: str | None = None) -> Any:
    """Chunk rows (`CHUNK_SCHEMA`) of a DataFrame of documents: `relpath` and `content` (binary), as from
    `read_documents`; or `path` and `content`, as from ``spark.read.format("binaryFile")``, with `root` to
    make the relative paths. A file that cannot be loaded gives one row with `status` "failed" (or
    "skipped" when it is empty) and its `reason`, and no chunk."""
    _require_spark()
    shipped = worker_settings(settings)
    names = set(docs.columns)
    if "content" not in names or not ({"relpath", "path"} & names):
        raise UsageError("chunk_documents needs a `content` column and a `relpath` (or `path`) column.")
    if "relpath" not in names and not root:
        raise UsageError("chunk_documents needs `root` to make relative paths from the `path` column.")

    def run(batches: Iterator[Any]) -> Iterator[Any]:
        return _chunk_partition(batches, shipped, encoding, root)

    return docs.mapInPandas(run, CHUNK_SCHEMA)


def _chunk_partition(batches: Iterator[Any], settings: Settings, encoding: str | None,
                     root: str | None) -> Iterator[Any]:
    import pandas as pd

    from ragcli.errors import DocumentError, EmptyDocumentError
    from ragcli.loaders import load_bytes
    from ragcli.models import load_embedder, window_embedder_for
    from ragcli.splitting import Splitter, SplitterSettings
    from ragcli.types import file_chunks

    embedder = load_embedder(settings)  # cached in this Python worker
    splitter = Splitter(SplitterSettings.from_settings(settings, embedder_limit=embedder.chunk_token_limit), embedder,
                        window_embedder=window_embedder_for(settings, embedder))
    for pdf in batches:
        rows: list[tuple[Any, ...]] = []
        for record in pdf.to_dict("records"):
            record = {k: _cell(v) for k, v in record.items()}
            relpath = record.get("relpath") or _relative(str(record["path"]), str(root))
            data = record.get("content")
            data = bytes(data) if data is not None else None
            sha = record.get("file_sha256") or (hashlib.sha256(data).hexdigest() if data is not None else None)
            size = record.get("bytes")
            size = int(size) if size is not None else (len(data) if data is not None else None)
            problem = record.get("read_error")
            if problem or data is None:
                rows.append((relpath, sha, size, "failed", problem or "no content", None, None, None, None))
                continue
            try:
                text = load_bytes(relpath, data, encoding=encoding)
            except EmptyDocumentError as exc:
                rows.append((relpath, sha, size, "skipped", exc.reason, None, None, None, None))
                continue
            except DocumentError as exc:
                rows.append((relpath, sha, size, "failed", exc.reason, None, None, None, None))
                continue
            chunks = file_chunks(relpath, splitter.split(text), embedder.count_tokens)
            rows += [(relpath, sha, size, "ok", None, str(c.id), c.position, c.text, c.tokens) for c in chunks]
            if not chunks:
                rows.append((relpath, sha, size, "ok", None, None, None, None, None))
        # object columns: pyspark cannot convert pandas 3's Arrow-backed strings (a mask is not allowed there)
        yield pd.DataFrame(rows, columns=list(CHUNK_COLUMNS), dtype=object)


def _cell(value: Any) -> Any:
    """A pandas cell with its missing-value markers (None, NaN, pd.NA: what Arrow nulls become) as None."""
    if value is None or isinstance(value, (bytes, bytearray, str, list)):
        return value
    import pandas as pd

    return None if pd.isna(value) else value


def _relative(path: str, root: str) -> str:
    """`path` relative to `root`, with '/' separators; URI schemes (file:, dbfs:) are ignored on both."""
    def bare(p: str) -> str:
        p = re.sub(r"^[A-Za-z][A-Za-z0-9+.\-]*:(//)?", "", p)
        return "/" + p.lstrip("/")

    rel = os.path.relpath(bare(path), bare(root)).replace(os.sep, "/")
    if rel.startswith("../") or rel == "..":
        raise UsageError(f"{path} is not inside {root}.")
    return rel


# -- vectors -------------------------------------------------------------------------------------------
def embedding_udf(settings: Settings) -> Any:
    """A pandas UDF (iterator of batches) text -> array<float>: the embedding model is loaded once per
    Python worker and every batch of a partition goes through it; vectors are L2-normalised float32, as
    `ragcli ingest` stores them."""
    _require_spark()
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    shipped = worker_settings(settings)

    def embed(batches):  # annotations set below, from the real types (pyspark reads them)
        from ragcli.models import load_embedder

        embedder = load_embedder(shipped)
        for texts in batches:
            vectors = embedder.embed_documents([str(t) for t in texts]) if len(texts) else []
            yield pd.Series([v.astype("float32") for v in vectors], dtype=object)

    embed.__annotations__ = {"batches": Iterator[pd.Series], "return": Iterator[pd.Series]}
    return pandas_udf(embed, "array<float>")


def embed_texts(df: Any, settings: Settings, *, text_column: str = "text", vector_column: str = "embedding") -> Any:
    """`df` with `vector_column` holding the vector of `text_column`."""
    from pyspark.sql import functions as F

    return df.withColumn(vector_column, embedding_udf(settings)(F.col(text_column)))


# -- the job -------------------------------------------------------------------------------------------
@dataclass
class SparkIngestReport:
    source: str
    target: str
    format: str
    embed_model: str
    files: dict[str, int] = field(default_factory=dict)  # added, changed, unchanged, removed, failed, skipped
    problems: list[dict[str, str]] = field(default_factory=list)  # {file, status, reason}
    chunks_total: int = 0
    chunks_embedded: int = 0  # distinct texts sent to the model
    chunks_reused: int = 0  # new chunks whose vector came from the table
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Prior:
    """What the existing table holds, per file, and its manifest."""

    manifest: dict[str, Any] | None
    files: dict[str, dict[str, Any]]  # relpath -> {shas: set, chunks: int}

    def unchanged(self, relpath: str, sha: str | None) -> bool:
        held = self.files.get(relpath)
        recorded = ((self.manifest or {}).get("files") or {}).get(relpath) or {}
        return bool(held and sha and held["shas"] == {sha} and recorded.get("sha256") == sha
                    and recorded.get("chunks") == held["chunks"] and recorded.get("status", "ok") == "ok")


def ingest_folder(spark: Any, source: str | Path, settings: Settings, *, target: str, fmt: str = "delta",
                  rebuild: bool = False, encoding: str | None = None) -> SparkIngestReport:
    """Ingest the documents under `source` into `target` (a table name catalog.schema.table, or a path) in
    format `fmt`, incrementally (see the module docstring). Returns a report; never prints."""
    _require_spark()
    from pyspark.sql import functions as F

    from ragcli.models import load_embedder
    from ragcli.registry import model_mismatch
    from ragcli.splitting import SplitterSettings
    from ragcli.targets.delta_sync import rows as table

    if fmt not in FORMATS:
        raise UsageError(f"Unknown format {fmt!r}; use {' or '.join(FORMATS)}.")
    started = time.perf_counter()
    source = str(source)
    embedder = load_embedder(settings)
    embed_info = dict(embedder.info(), chunk_token_limit=embedder.chunk_token_limit)
    splitter = SplitterSettings.from_settings(settings, embedder_limit=embedder.chunk_token_limit).as_dict()
    report = SparkIngestReport(source=source, target=target, format=fmt, embed_model=embedder.model_id)

    existing = None if rebuild else _read_existing(spark, target, fmt)
    prior = _read_prior(existing)
    if prior.manifest is not None:
        problem = model_mismatch(prior.manifest.get("embed") or {}, embedder.model_id, embedder.revision,
                                 f"The table {target}")
        if problem:
            raise IndexModelMismatchError(f"{problem} Run the job again with --rebuild (or with the table's model).")
    same_splitter = prior.manifest is not None and prior.manifest.get("splitter") == splitter

    docs = read_documents(spark, source).persist()
    try:
        current = {r["relpath"]: r for r in docs.select("relpath", "file_sha256", "bytes", "read_error").collect()}
        unchanged = {f for f, r in current.items()
                     if r["read_error"] is None and same_splitter and prior.unchanged(f, r["file_sha256"])}
        todo = sorted(set(current) - unchanged)
        chunked = chunk_documents(docs.join(F.broadcast(_names(spark, todo, "relpath")), "relpath"), settings,
                                  encoding=encoding).persist()
        statuses = {r["relpath"]: r for r in chunked.groupBy("relpath").agg(
            F.first("status").alias("status"), F.first("reason").alias("reason"),
            F.first("file_sha256").alias("sha"), F.first("bytes").alias("bytes"),
            F.count("id").alias("chunks")).collect()}
        keep = set(unchanged)  # files whose rows stay as they are
        files: dict[str, dict[str, Any]] = {}
        counts = dict.fromkeys(("added", "changed", "unchanged", "removed", "failed", "skipped"), 0)
        recorded = (prior.manifest or {}).get("files") or {}
        for relpath in sorted(current):
            if relpath in unchanged:
                counts["unchanged"] += 1
                files[relpath] = dict(recorded[relpath], root=source)
                continue
            st = statuses.get(relpath)
            status = st["status"] if st else "failed"
            if status == "ok":
                counts["changed" if relpath in prior.files else "added"] += 1
                files[relpath] = {"sha256": st["sha"], "bytes": st["bytes"], "root": source,
                                  "chunks": int(st["chunks"]), "status": "ok"}
                continue
            counts[status] += 1
            reason = (st["reason"] if st else None) or current[relpath]["read_error"] or "cannot be read"
            report.problems.append({"file": relpath, "status": status, "reason": reason})
            if status == "failed" and relpath in prior.files:  # keep the previous version rather than lose it
                keep.add(relpath)
                if relpath in recorded:
                    files[relpath] = recorded[relpath]
        counts["removed"] = sum(1 for f in prior.files if f not in current)
        report.files = counts

        new = chunked.where((F.col("status") == "ok") & F.col("id").isNotNull())
        if existing is not None:
            held = (existing.where((F.col("kind") == table.KIND_CHUNK) & F.col("embedding").isNotNull())
                    .select("text", "embedding").dropDuplicates(["text"]))
            new = new.join(held, "text", "left")
        else:
            new = new.withColumn("embedding", F.lit(None).cast("array<float>"))
        missing = new.where(F.col("embedding").isNull()).select("text").distinct()
        report.chunks_embedded = missing.count()
        vectors = embed_texts(missing, settings, vector_column="embedding")
        new_rows = (new.where(F.col("embedding").isNotNull())
                    .unionByName(new.where(F.col("embedding").isNull()).drop("embedding").join(vectors, "text")))
        new_rows = new_rows.select(*_table_columns(F, kind=F.lit(table.KIND_CHUNK), source=F.col("relpath")))
        parts = [new_rows]
        if existing is not None and keep:
            parts.append(existing.where(F.col("kind") == table.KIND_CHUNK)
                         .join(F.broadcast(_names(spark, sorted(keep), "source")), "source")
                         .select(*_table_columns(F)))
        new_count = sum(int(statuses[f]["chunks"]) for f in statuses if statuses[f]["status"] == "ok")
        report.chunks_reused = new_count - report.chunks_embedded if new_count else 0
        report.chunks_total = sum(int(m.get("chunks") or 0) for m in files.values())
        manifest = _manifest(files, embed_info, splitter, report.chunks_total)
        manifest_row = (MANIFEST_ID, table.KIND_MANIFEST, json.dumps(manifest, sort_keys=True), "", -1, "", 0,
                        [1.0] + [0.0] * (int(embed_info["dim"]) - 1))
        parts.append(spark.createDataFrame([manifest_row], table.column_definitions()))
        content = parts[0]
        for part in parts[1:]:
            content = content.unionByName(part)
        _write(spark, content, target, fmt)
        chunked.unpersist()
    finally:
        docs.unpersist()
    report.chunks_reused = max(0, report.chunks_reused)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _table_columns(F: Any, **computed: Any) -> list[Any]:
    """The table's columns in order, with `computed` expressions for some of them."""
    from ragcli.targets.delta_sync import rows as table

    out = []
    for name, typ in table.COLUMNS:
        expr = computed.get(name, F.col(name))
        out.append(expr.cast(typ.lower()).alias(name))
    return out


def _manifest(files: dict[str, Any], embed: dict[str, Any], splitter: dict[str, Any], chunks: int) -> dict[str, Any]:
    from ragcli import __version__

    fingerprint = hashlib.sha256()
    for name in sorted(files):
        fingerprint.update(f"{name}\0{files[name].get('sha256')}\n".encode())
    return {"kind": "ragcli-index", "format": MANIFEST_FORMAT, "ragcli_version": __version__, "embed": embed,
            "splitter": splitter, "corpus_sha256": fingerprint.hexdigest(), "chunks": chunks,
            "files": {k: files[k] for k in sorted(files)}, "writer": "ragcli.spark",
            "updated_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _is_table(target: str) -> bool:
    return bool(_TABLE_NAME.match(target))


def _local_path(target: str) -> str | None:
    if _is_table(target):
        return None
    if target.startswith("file:"):
        return re.sub(r"^file:(//)?", "", target)
    return None if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:", target) else target


def _read_existing(spark: Any, target: str, fmt: str) -> Any:
    """The target's rows, or None when it does not exist yet."""
    if _is_table(target):
        return spark.table(target) if spark.catalog.tableExists(target) else None
    local = _local_path(target)
    if local is not None and not os.path.isdir(local):
        return None
    try:
        return spark.read.format(fmt).load(target)
    except Exception as exc:  # noqa: BLE001 - pyspark raises AnalysisException for a missing path
        if "PATH_NOT_FOUND" in str(exc) or "does not exist" in str(exc).lower():
            return None
        raise


def _read_prior(existing: Any) -> _Prior:
    if existing is None:
        return _Prior(manifest=None, files={})
    from pyspark.sql import functions as F

    from ragcli.targets.delta_sync import rows as table

    manifest = None
    for row in existing.where(F.col("id") == MANIFEST_ID).select("text").collect():
        try:
            data = json.loads(row["text"])
        except (TypeError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("kind") == "ragcli-index" and int(data.get("format", 0)) <= MANIFEST_FORMAT:
            manifest = data
    held = (existing.where(F.col("kind") == table.KIND_CHUNK).groupBy("source")
            .agg(F.collect_set("file_sha256").alias("shas"), F.count("*").alias("chunks")).collect())
    return _Prior(manifest=manifest, files={r["source"]: {"shas": set(r["shas"]), "chunks": int(r["chunks"])}
                                           for r in held})


def _names(spark: Any, names: list[str], column: str) -> Any:
    """A one-column DataFrame of file names (joined against, rather than a long IN list)."""
    return spark.createDataFrame([(n,) for n in names], f"{column} string")


def _write(spark: Any, content: Any, target: str, fmt: str) -> None:
    if fmt == "delta":
        _merge_delta(spark, content, target)
        return
    local = _local_path(target)
    if local is not None:
        # Spark cannot overwrite what it reads: write beside, then swap folders.
        fresh = f"{local.rstrip('/')}.ragcli-{uuid.uuid4().hex[:8]}"
        content.write.format(fmt).mode("errorifexists").save(fresh)
        old = f"{fresh}.old"
        if os.path.exists(local):
            os.replace(local, old)
        os.replace(fresh, local)
        shutil.rmtree(old, ignore_errors=True)
        return
    content = content.localCheckpoint(eager=True)  # cut the lineage to the rows being replaced
    writer = content.write.format(fmt).mode("overwrite")
    if _is_table(target):
        writer.saveAsTable(target)
    else:
        writer.save(target)


def _merge_delta(spark: Any, content: Any, target: str) -> None:
    """MERGE the whole content into a Delta table (created with change data feed on when missing):
    changed and new rows written, rows no longer in the content deleted, the rest left alone."""
    from ragcli.targets.delta_sync import rows as table

    if _is_table(target):
        ref, args = "IDENTIFIER(:target)", {"target": target}
    else:
        if "`" in target:
            raise UsageError(f"A Delta path cannot contain a backtick: {target!r}.")
        ref, args = f"delta.`{target}`", {}
    spark.sql(f"CREATE TABLE IF NOT EXISTS {ref} ({table.column_definitions()}) USING DELTA "
              "TBLPROPERTIES (delta.enableChangeDataFeed = true)", args)
    view = f"ragcli_rows_{uuid.uuid4().hex[:8]}"
    content.createOrReplaceTempView(view)
    same = " AND ".join(f"t.{name} <=> s.{name}" for name, _ in table.COLUMNS if name != table.PRIMARY_KEY)
    try:
        spark.sql(f"MERGE INTO {ref} AS t USING {view} AS s ON t.id = s.id "
                  f"WHEN MATCHED AND NOT ({same}) THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT * "
                  "WHEN NOT MATCHED BY SOURCE THEN DELETE", args)
    finally:
        spark.catalog.dropTempView(view)
