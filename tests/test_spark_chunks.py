"""The executor-side functions of ragcli.spark, run directly on pandas batches (no JVM): the chunks of a
file are those `ragcli ingest` makes, whether rows come from `read_documents` or from Spark's binaryFile
reader, and files that cannot be loaded are named with their reason."""

from __future__ import annotations

import hashlib

import pytest
from conftest import SAMPLE_DOCS, write_tree

pd = pytest.importorskip("pandas")


@pytest.mark.slow
def test_chunk_partition_gives_ingests_chunks_from_bytes(settings, tmp_path):
    from ragcli.ingest import ingest
    from ragcli.spark import CHUNK_COLUMNS, _chunk_partition, _read_partition
    from ragcli.store import LocalIndex

    root = write_tree(tmp_path / "docs", {"a.md": "# A\n\nOne line.\n\nOne line.\n\nAnother line here.\n",
                                          "sub/b.md": "# B\n\nSomething else entirely.\n", "empty.md": ""})
    (root / "bad.docx").write_bytes(b"not a zip at all")
    (root / "c.docx").write_bytes((SAMPLE_DOCS / "faiss-index-types.docx").read_bytes())
    ingest([root], settings)
    expected = {(c.file, c.position): c for c in LocalIndex(settings.index_dir).load().chunks}

    listed = pd.DataFrame({"relpath": ["a.md", "sub/b.md", "empty.md", "bad.docx", "c.docx", "gone.md"],
                           "path": [str(root / p) for p in ("a.md", "sub/b.md", "empty.md", "bad.docx", "c.docx",
                                                            "gone.md")]})
    import pyarrow as pa

    # Through Arrow and back, as Spark hands batches to mapInPandas: nulls arrive as NaN, not None.
    docs = pa.Table.from_pandas(pd.concat(list(_read_partition(iter([listed]))))).to_pandas()
    assert docs["read_error"].isna().sum() == 5
    assert docs.set_index("relpath").loc["a.md", "file_sha256"] == hashlib.sha256((root / "a.md").read_bytes()).hexdigest()
    rows = pd.concat(list(_chunk_partition(iter([docs]), settings, None, None)))
    assert list(rows.columns) == list(CHUNK_COLUMNS)
    chunks = rows[rows["status"] == "ok"]
    got = {(r.relpath, r.position): r for r in chunks.itertuples()}
    assert set(got) == set(expected)
    for key, c in expected.items():
        r = got[key]
        assert (r.id, r.text, r.chunk_tokens) == (str(c.id), c.text, c.tokens)
    problems = {r.relpath: (r.status, r.reason) for r in rows[rows["status"] != "ok"].itertuples()}
    assert problems["empty.md"][0] == "skipped"
    assert problems["bad.docx"][0] == "failed" and "docx" in problems["bad.docx"][1]
    assert problems["gone.md"][0] == "failed" and "cannot read" in problems["gone.md"][1]

    # Spark's binaryFile reader gives (path, content) with URIs; the root turns them into the same relpaths.
    binary = pd.DataFrame({"path": [f"file:{root}/sub/b.md"], "content": [(root / "sub/b.md").read_bytes()]})
    same = pd.concat(list(_chunk_partition(iter([binary]), settings, None, f"file://{root}")))
    assert [(r.relpath, r.id) for r in same.itertuples()] == [
        (k[0], str(c.id)) for k, c in sorted(expected.items()) if k[0] == "sub/b.md"]


def test_relative_paths_ignore_uri_schemes_and_refuse_outsiders():
    from ragcli.errors import UsageError
    from ragcli.spark import _relative

    assert _relative("dbfs:/Volumes/main/rag/docs/a/b.md", "/Volumes/main/rag/docs") == "a/b.md"
    assert _relative("/Volumes/main/rag/docs/x.md", "dbfs:/Volumes/main/rag/docs/") == "x.md"
    with pytest.raises(UsageError, match="not inside"):
        _relative("/Volumes/main/rag/other/x.md", "/Volumes/main/rag/docs")


def test_the_delta_merge_names_a_table_only_through_a_parameter():
    from ragcli.spark import _merge_delta

    class Recorder:
        def __init__(self):
            self.calls = []
            self.catalog = self

        def sql(self, text, args=None):
            self.calls.append((text, dict(args or {})))

        def dropTempView(self, name):
            self.calls.append(("drop", name))

    class Content:
        def createOrReplaceTempView(self, name):
            self.view = name

    spark, content = Recorder(), Content()
    _merge_delta(spark, content, "main.rag.chunks")
    (create, create_args), (merge, merge_args), dropped = spark.calls
    assert "main.rag" not in create + merge and create_args == merge_args == {"target": "main.rag.chunks"}
    assert create.startswith("CREATE TABLE IF NOT EXISTS IDENTIFIER(:target) (id STRING NOT NULL, kind STRING")
    assert "delta.enableChangeDataFeed = true" in create
    assert merge.startswith(f"MERGE INTO IDENTIFIER(:target) AS t USING {content.view} AS s ON t.id = s.id")
    assert "WHEN NOT MATCHED BY SOURCE THEN DELETE" in merge and dropped == ("drop", content.view)
    from ragcli.errors import UsageError

    with pytest.raises(UsageError, match="backtick"):
        _merge_delta(Recorder(), Content(), "/tmp/x`; DROP TABLE y; --")
