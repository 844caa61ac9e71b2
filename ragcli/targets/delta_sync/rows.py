"""The Delta table behind a Delta Sync index: one row per chunk, the fields of a Direct Access row.

    id STRING NOT NULL | kind STRING | text STRING | source STRING | position INT | file_sha256 STRING |
    chunk_tokens INT | embedding ARRAY<FLOAT>

`id` is the chunk id as a decimal string, `kind` is "chunk" (or "manifest" for ragcli's one manifest
row), `source` the file's path relative to the ingested folder, `embedding` the model's vector
(self-managed embeddings; null when the index embeds `text` itself with a model serving endpoint).
The Spark job (`ragcli.spark`) writes the same columns, so either writer feeds the same index.
"""

from __future__ import annotations

import io
from typing import Any

PRIMARY_KEY = "id"
TEXT_COLUMN = "text"
VECTOR_COLUMN = "embedding"
KIND_CHUNK = "chunk"
KIND_MANIFEST = "manifest"

# (name, SQL type) in table order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "STRING"),
    ("kind", "STRING"),
    ("text", "STRING"),
    ("source", "STRING"),
    ("position", "INT"),
    ("file_sha256", "STRING"),
    ("chunk_tokens", "INT"),
    ("embedding", "ARRAY<FLOAT>"),
)
NOT_NULL = frozenset({PRIMARY_KEY})


def column_definitions() -> str:
    """The column list of CREATE TABLE (and a Spark DDL schema string): `id STRING NOT NULL, ...`."""
    return ", ".join(f"{name} {typ}{' NOT NULL' if name in NOT_NULL else ''}" for name, typ in COLUMNS)


def arrow_schema() -> Any:
    import pyarrow as pa

    types = {"STRING": pa.string(), "INT": pa.int32(), "ARRAY<FLOAT>": pa.list_(pa.float32())}
    return pa.schema([pa.field(name, types[typ], nullable=name not in NOT_NULL) for name, typ in COLUMNS])


def to_parquet(rows: list[dict[str, Any]]) -> bytes:
    """`rows` (dicts with the table's columns; missing ones are null) as one Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema()
    table = pa.Table.from_pylist([{name: row.get(name) for name, _ in COLUMNS} for row in rows], schema=schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def row_bytes(row: dict[str, Any]) -> int:
    """A rough size of a row in a Parquet part (to keep each uploaded part well under the Files API's
    single-request size)."""
    vector = row.get(VECTOR_COLUMN) or ()
    return 64 + 4 * len(vector) + sum(len(str(row.get(c) or "")) for c in (TEXT_COLUMN, "source", "file_sha256"))
