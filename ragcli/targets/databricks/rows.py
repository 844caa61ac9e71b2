"""The rows ragcli keeps in a Databricks index, and the conversions around them.

    id (string, the chunk id) | kind ("chunk") | text | source (relpath) | position | file_sha256 |
    chunk_tokens | embedding (array<float>, the model's dimension)

One reserved row, id `__ragcli_manifest__` and kind "manifest", holds ragcli's manifest as JSON in
`text`: embedding model, revision and dimension, splitter settings, corpus fingerprint and the file
table. Every query filters on `kind = "chunk"`, so the manifest row is never a search result.

Scores: Databricks ranks by L2 distance and returns s = 1 / (1 + d²). ragcli normalises every vector,
so for unit vectors d² = 2 − 2·cos, and `cosine_from_score` turns a dense score back into the cosine
similarity, cos = 1 − d²/2 with d² = 1/s − 1: the same scale as the local FAISS index.

Nothing here talks to the network.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ragcli.errors import DatabricksError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.types import Chunk, Hit, Plan

MANIFEST_ID = "__ragcli_manifest__"
MANIFEST_FORMAT = 1
KIND_CHUNK = "chunk"
KIND_MANIFEST = "manifest"
PRIMARY_KEY = "id"
VECTOR_COLUMN = "embedding"
SCHEMA = {
    "id": "string",
    "kind": "string",
    "text": "string",
    "source": "string",
    "position": "integer",
    "file_sha256": "string",
    "chunk_tokens": "integer",
    "embedding": "array<float>",
}
CHUNK_FILTER = {"kind": KIND_CHUNK}
RESULT_COLUMNS = ["id", "source", "position", "text"]


def struct_value(value: dict[str, Any]) -> Any:
    """A protobuf `Value` in JSON form (what scan returns) as a plain Python value."""
    if "string_value" in value:
        return value["string_value"]
    if "number_value" in value:
        return value["number_value"]
    if "bool_value" in value:
        return value["bool_value"]
    if "list_value" in value:
        return [struct_value(v or {}) for v in (value["list_value"] or {}).get("values") or []]
    if "struct_value" in value:
        return {k: struct_value(v or {}) for k, v in ((value["struct_value"] or {}).get("fields") or {}).items()}
    return None


def failed_keys(response: Any, sent: list[str]) -> list[str]:
    response = response if isinstance(response, dict) else {}
    result = response.get("result") or {}
    keys = result.get("failed_primary_keys") or []
    if not keys and str(response.get("status") or "").upper() == "FAILURE":
        keys = list(sent)
    return [str(k) if k is not None else "<missing id>" for k in keys]


def batches(rows: list[dict[str, Any]], max_rows: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        row_size = len(json.dumps(row, separators=(",", ":"))) + 1
        if batch and (len(batch) >= max_rows or size + row_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row_size
    if batch:
        yield batch



def cosine_from_score(score: float) -> float:
    """Databricks' ANN score s = 1/(1+d²) as the cosine similarity of unit vectors: 1 − d²/2."""
    if score <= 0:
        return -1.0
    d2 = 1.0 / score - 1.0
    return max(-1.0, min(1.0, 1.0 - d2 / 2.0))


def as_vector(values: Any) -> list[float]:
    return [round(float(x), 7) for x in values]


def unit_vector(dim: int) -> list[float]:
    return [1.0] + [0.0] * (dim - 1)



def index_dimension(info: dict[str, Any]) -> int | None:
    spec = info.get("direct_access_index_spec") or {}
    for col in spec.get("embedding_vector_columns") or []:
        if col.get("name") == VECTOR_COLUMN and col.get("embedding_dimension") is not None:
            return int(col["embedding_dimension"])
    return None


def check_layout(info: dict[str, Any], index_name: str) -> int:
    """The index's vector dimension, after checking that its layout is the one ragcli writes."""
    problems = []
    if str(info.get("index_type") or "").upper() != "DIRECT_ACCESS":
        problems.append(f"it is a {info.get('index_type') or 'unknown'} index, not DIRECT_ACCESS")
    if info.get("primary_key") not in (None, PRIMARY_KEY):
        problems.append(f"its primary key is {info.get('primary_key')!r}, not {PRIMARY_KEY!r}")
    spec = info.get("direct_access_index_spec") or {}
    try:
        schema = json.loads(spec.get("schema_json") or "{}")
    except ValueError:
        schema = {}
    if schema:
        missing = [c for c in SCHEMA if c not in schema]
        if missing:
            problems.append(f"it lacks the column(s) {', '.join(missing)}")
    dim = index_dimension(info)
    if dim is None and not problems:
        problems.append(f"it has no vector column {VECTOR_COLUMN!r}")
    if problems:
        raise DatabricksError(
            f"The Databricks index {index_name} was not created by ragcli ({'; '.join(problems)}). Set "
            "RAGCLI_DATABRICKS_INDEX to a new name: ragcli ingest --target databricks creates the index."
        )
    assert dim is not None
    return dim


def parse_manifest(text: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") != "ragcli-index" or int(data.get("format", 0)) > MANIFEST_FORMAT:
        return None
    return data


def file_table(rows_by_id: dict[str, dict[str, Any]], manifest: dict[str, Any] | None) -> dict[str, Any]:
    """The file table the planner diffs against, from the rows actually in the index. A file counts as
    unchanged ("ok") only if its rows agree with the last manifest (same checksum, same row count)."""
    recorded = (manifest or {}).get("files") or {}
    by_file: dict[str, list[dict[str, Any]]] = {}
    shas_by_file: dict[str, set[str]] = {}
    for key, row in rows_by_id.items():
        try:
            chunk = {"id": int(key), "file": str(row.get("source") or ""), "position": int(row.get("position") or 0),
                     "text": str(row.get("text") or ""), "tokens": int(row.get("chunk_tokens") or 0), "metadata": {}}
        except (TypeError, ValueError):
            continue  # not a ragcli chunk id; it is deleted as a leftover
        if str(chunk["id"]) != key:
            continue  # same: ragcli writes ids as plain decimal strings
        by_file.setdefault(chunk["file"], []).append(chunk)
        shas_by_file.setdefault(chunk["file"], set()).add(str(row.get("file_sha256") or ""))
    out: dict[str, Any] = {}
    for relpath, rows in by_file.items():
        rows.sort(key=lambda r: r["position"])
        shas = shas_by_file[relpath]
        meta = recorded.get(relpath) or {}
        sha = shas.pop() if len(shas) == 1 else None
        ok = (sha is not None and meta.get("sha256") == sha and meta.get("chunks") == len(rows)
              and meta.get("status", "ok") == "ok")
        out[relpath] = {"sha256": sha, "bytes": meta.get("bytes"), "root": meta.get("root"),
                        "status": "ok" if ok else "partial", "chunks": rows}
    return out


def build_manifest(plan: Plan, partial: set[str]) -> dict[str, Any]:
    """The manifest row's JSON for the plan's content; files in `partial` (rows rejected) are marked so
    the next ingest processes them again."""
    from ragcli.targets.base import content_manifest

    files = {}
    for relpath, meta in sorted(plan.files.items()):
        status = "partial" if relpath in partial else meta.get("status", "ok")
        files[relpath] = {"sha256": meta.get("sha256"), "bytes": meta.get("bytes"), "root": meta.get("root"),
                          "chunks": int(meta.get("chunks") or 0), "status": status}
    return {"kind": "ragcli-index", "format": MANIFEST_FORMAT, **content_manifest(plan), "chunks": plan.chunk_count,
            "files": files}


def chunk_row(chunk: Chunk, file_sha256: str, vector: Any) -> dict[str, Any]:
    """One chunk as an index row."""
    return {PRIMARY_KEY: str(chunk.id), "kind": KIND_CHUNK, "text": chunk.text, "source": chunk.file,
            "position": chunk.position, "file_sha256": file_sha256, "chunk_tokens": chunk.tokens,
            VECTOR_COLUMN: as_vector(vector)}


def manifest_row(manifest: dict[str, Any], dim: int) -> dict[str, Any]:
    """The reserved row holding the manifest (its vector is a fixed unit vector: the index needs one)."""
    return {PRIMARY_KEY: MANIFEST_ID, "kind": KIND_MANIFEST, "text": json.dumps(manifest, sort_keys=True),
            "source": "", "position": -1, "file_sha256": "", "chunk_tokens": 0, VECTOR_COLUMN: unit_vector(dim)}


def same_manifest(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return False
    ignore = ("updated_at", "ragcli_version", "library_versions")
    return {k: v for k, v in old.items() if k not in ignore} == {k: v for k, v in new.items() if k not in ignore}


def search_hits(client: Any, index: Any, location: str, mode: str, k: int, kwargs: dict[str, Any]) -> list[Hit]:
    """Query a Vector Search index (`client.query`) and turn its rows into ragcli hits, best first:
    dense scores back to cosine similarity; rows that are not ragcli chunks never answered from."""
    from ragcli.types import Hit

    try:
        found = client.query(index, f"searching {location} ({mode})", **kwargs)
    except DatabricksError as exc:
        if mode != "dense" and "rejected the request" in str(exc):
            raise DatabricksError(f"{exc} {mode} search needs full-text support on the index; "
                                  "--mode dense works on every Vector Search index.") from None
        raise
    hits = []
    for rank, row in enumerate(found[:k], 1):
        try:
            cid = int(row.get("id"))
        except (TypeError, ValueError):
            continue  # never answer from a row that is not a ragcli chunk
        score = cosine_from_score(row["score"]) if mode == "dense" else row["score"]
        hits.append(Hit(chunk_id=cid, file=str(row.get("source") or ""),
                        position=int(float(row.get("position") or 0)), score=round(float(score), 6),
                        text=str(row.get("text") or ""), rank=rank))
    return hits
