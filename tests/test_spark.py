"""Spark ingest (ragcli.spark) on a local Spark: the same chunks and vectors as `ragcli ingest`, and a
second run over an unchanged folder embeds nothing. Spark's Delta writer needs jars this machine cannot
fetch, so the job writes Parquet and the Delta Sync emulator loads it into a Delta table with delta-rs."""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import SAMPLE_DOCS, write_tree

# The first test also starts the JVM and Python workers that import torch: allow for a slow machine.
pytestmark = [pytest.mark.slow, pytest.mark.spark, pytest.mark.timeout(900)]

pytest.importorskip("pyspark")
pytest.importorskip("pandas")
pytest.importorskip("pyarrow")

import pyarrow.parquet as pq  # noqa: E402


def _java_home() -> str | None:
    """A JDK for Spark: JAVA_HOME if it holds one, else the `java` on PATH, else a JVM under /usr/lib/jvm."""
    home = os.environ.get("JAVA_HOME")
    if home and os.access(os.path.join(home, "bin", "java"), os.X_OK):
        return home
    java = shutil.which("java")
    if java:
        return str(Path(os.path.realpath(java)).parent.parent)
    found = sorted(glob.glob("/usr/lib/jvm/*/bin/java"))
    return str(Path(found[-1]).parent.parent) if found else None


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    home = _java_home()
    if home is None:
        pytest.skip("no Java runtime: Spark needs a JDK (17+); set JAVA_HOME or put java on PATH")
    saved = {k: os.environ.get(k) for k in ("JAVA_HOME", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON")}
    os.environ.update(JAVA_HOME=home, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("ragcli-tests")
               .config("spark.sql.shuffle.partitions", "1").config("spark.default.parallelism", "1")
               .config("spark.ui.enabled", "false").config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.local.dir", str(tmp_path_factory.mktemp("spark-local")))
               .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("spark-warehouse")))
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


CORPUS = {
    "alpha.md": "# Alpha\n\nDelta tables keep deleted files for seven days.\n\nVacuum removes them later.\n",
    "guides/beta.md": "# Beta\n\nThe same line.\n\nThe same line.\n\nA vector index answers queries.\n",
    "_underscore.md": "Spark would hide this file; ragcli ingest does not.\n",
    "empty.md": "",
    ".hidden.md": "never read\n",
}
INDEXED = {"alpha.md", "guides/beta.md", "_underscore.md", "faiss.docx"}


@pytest.fixture(scope="module")
def job(spark, tmp_path_factory):
    """One folder and the Parquet output of a first job over it (shared: starting Spark work is slow)."""
    root = write_tree(tmp_path_factory.mktemp("spark-corpus"), CORPUS)
    shutil.copy(SAMPLE_DOCS / "faiss-index-types.docx", root / "faiss.docx")
    return {"folder": root, "out": tmp_path_factory.mktemp("spark-out") / "chunks.parquet", "report": None}


def _first_run(job, settings):
    from ragcli.spark import ingest_folder

    if job["report"] is None:
        job["report"] = ingest_folder(job["spark"], job["folder"], settings, target=str(job["out"]), fmt="parquet")
    return job["report"]


@pytest.fixture
def ran(job, spark, settings):
    job["spark"] = spark
    _first_run(job, settings)
    return job


def _rows(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in pq.read_table(str(path)).to_pylist()}


def _ingest_locally(folder: Path, settings):
    from ragcli.ingest import ingest
    from ragcli.store import LocalIndex

    report = ingest([folder], settings)
    generation = LocalIndex(settings.index_dir).load()
    ids, vectors = generation.vectors()
    return report, {str(c.id): c for c in generation.chunks}, dict(zip((str(i) for i in ids), vectors, strict=True))


def _assert_same_as_ingest(rows: dict[str, dict], chunks: dict, vectors: dict) -> None:
    import numpy as np

    chunk_rows = {k: r for k, r in rows.items() if r["kind"] == "chunk"}
    assert set(chunk_rows) == set(chunks)
    for key, row in chunk_rows.items():
        c = chunks[key]
        assert (row["source"], row["position"], row["text"], row["chunk_tokens"]) == (c.file, c.position, c.text,
                                                                                       c.tokens)
        assert np.abs(np.asarray(row["embedding"], dtype=np.float32) - vectors[key]).max() <= 1e-5


def test_the_job_makes_the_chunks_and_vectors_of_ingest_and_a_rerun_embeds_nothing(ran, settings, cli):
    import json

    from ragcli.spark import MANIFEST_ID

    local_report, chunks, vectors = _ingest_locally(ran["folder"], settings)
    report, rows = ran["report"], _rows(ran["out"])
    _assert_same_as_ingest(rows, chunks, vectors)
    assert {r["source"] for r in rows.values() if r["kind"] == "chunk"} == INDEXED
    assert report.files == {"added": 4, "changed": 0, "unchanged": 0, "removed": 0, "failed": 0, "skipped": 1}
    assert report.problems == [{"file": "empty.md", "status": "skipped", "reason": "empty document: nothing to index"}]
    assert (report.chunks_total, report.chunks_embedded) == (local_report.chunks_total, local_report.chunks_embedded)
    manifest = json.loads(rows[MANIFEST_ID]["text"])
    assert manifest["embed"]["model"] == settings.embed_model and manifest["chunks"] == len(chunks)
    assert set(manifest["files"]) == INDEXED

    again = cli("spark-job", ran["folder"], "--output", ran["out"], "--format", "parquet", "--json")
    assert again.exit_code == 0, again.output
    assert again.json()["chunks_embedded"] == 0 and again.json()["files"]["unchanged"] == 4
    assert {k: r for k, r in _rows(ran["out"]).items() if k != MANIFEST_ID} == {
        k: r for k, r in rows.items() if k != MANIFEST_ID}
    assert ran["spark"].sparkContext._jsc is not None  # the command used the running session and left it running


def test_a_changed_folder_reembeds_what_ingest_reembeds(ran, settings):
    from ragcli.spark import ingest_folder

    _ingest_locally(ran["folder"], settings)
    (ran["folder"] / "alpha.md").write_text("# Alpha\n\nDelta tables keep deleted files for seven days.\n\n"
                                           "Optimize compacts small files.\n", encoding="utf-8")
    (ran["folder"] / "_underscore.md").unlink()
    changed = ingest_folder(ran["spark"], ran["folder"], settings, target=str(ran["out"]), fmt="parquet")
    local_changed, chunks, vectors = _ingest_locally(ran["folder"], settings)
    assert changed.files["changed"] == 1 and changed.files["removed"] == 1 and changed.files["unchanged"] == 2
    assert changed.chunks_embedded == local_changed.chunks_embedded > 0
    _assert_same_as_ingest(_rows(ran["out"]), chunks, vectors)


def test_a_delta_sync_index_serves_the_rows_the_job_wrote(ran, tmp_path):
    pytest.importorskip("deltalake")
    pytest.importorskip("databricks.ai_search")
    from databricks.ai_search.client import AISearchClient
    from dbx_emulator import Emulator
    from dbx_workspace import Workspace

    from ragcli.targets.delta_sync import rows as table

    rows = _rows(ran["out"])
    ws = Workspace(tmp_path / "ws")
    ws.create_table("main.rag.chunks", dict(table.COLUMNS))
    ws.merge_parquet("main.rag.chunks", ran["out"])  # what MERGE INTO ... read_files does on the warehouse
    assert len(ws.table_rows("main.rag.chunks")) == len(rows)
    with Emulator(tokens={"dapi-spark-0123456789"}, endpoints=["ep"], workspace=ws) as emu:
        client = AISearchClient(workspace_url=emu.url, personal_access_token="dapi-spark-0123456789",
                                disable_notice=True)
        dim = len(next(iter(rows.values()))["embedding"])
        index = client.create_delta_sync_index(endpoint_name="ep", index_name="main.rag.chunks_index",
                                               primary_key="id", source_table_name="main.rag.chunks",
                                               pipeline_type="TRIGGERED", embedding_dimension=dim,
                                               embedding_vector_column="embedding")
        assert index.describe()["status"]["indexed_row_count"] == len(rows)
        some = next(r for r in rows.values() if r["kind"] == "chunk")
        hit = index.similarity_search(columns=["id", "text"], query_vector=some["embedding"],
                                      filters={"kind": "chunk"}, num_results=1, disable_notice=True)
        assert hit["result"]["data_array"][0][:2] == [some["id"], some["text"]]


def test_the_delta_sync_target_takes_over_the_table_the_job_wrote(ran, settings, cli, tmp_path, monkeypatch):
    """The job's rows in the table behind a Delta Sync index: `ragcli ingest --index-kind delta-sync` over the same
    folder finds every file unchanged (nothing embedded, nothing merged), creates the index, and queries answer."""
    pytest.importorskip("deltalake")
    pytest.importorskip("databricks.ai_search")
    from dbx_emulator import Emulator
    from dbx_workspace import Workspace

    from ragcli.targets.delta_sync import rows as table

    token, name, wh = "dapi-spark-takeover-0123", "main.rag.chunks", "wh1"
    ws = Workspace(tmp_path / "ws", warehouses=[wh], volumes=["main.rag.staging"])
    ws.create_table(name, dict(table.COLUMNS))  # change data feed on, as ragcli creates it
    ws.merge_parquet(name, ran["out"])
    version = ws.table_version(name)
    with Emulator(tokens={token}, endpoints=["ep"], workspace=ws) as emu:
        for var, value in {"no_proxy": "127.0.0.1,localhost", "DATABRICKS_HOST": emu.url, "DATABRICKS_TOKEN": token,
                           "RAGCLI_DATABRICKS_ENDPOINT": "ep", "RAGCLI_DATABRICKS_INDEX": "main.rag.chunks_index",
                           "RAGCLI_DATABRICKS_TABLE": name, "RAGCLI_DATABRICKS_VOLUME": "/Volumes/main/rag/staging",
                           "RAGCLI_DATABRICKS_WAREHOUSE": wh, "RAGCLI_DATABRICKS_INDEX_KIND": "delta-sync"}.items():
            monkeypatch.setenv(var, value)
        result = cli("ingest", ran["folder"], "--target", "databricks", "--json")
        assert result.exit_code == 0, result.output
        report = result.json()
        assert set(report["summary"]) >= {"unchanged"} and report["summary"]["unchanged"] == len(
            {r["source"] for r in _rows(ran["out"]).values() if r["kind"] == "chunk"})
        assert report["texts_embedded"] == 0 and report["published"] is True  # the index was created
        assert ws.table_version(name) == version  # nothing merged or deleted
        assert emu.index_info("main.rag.chunks_index")["status"]["indexed_row_count"] == len(_rows(ran["out"]))
        some = next(r for r in _rows(ran["out"]).values() if r["kind"] == "chunk" and r["source"] == "alpha.md")
        answer = cli("query", "--context", "--json", "--target", "databricks", some["text"])
        assert answer.exit_code == 0, answer.output
        best = answer.json()["sources"][0]
        assert (str(best["chunk_id"]), best["file"]) == (some["id"], "alpha.md")
        assert best["score"] == pytest.approx(1.0, abs=1e-4)
