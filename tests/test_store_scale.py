"""The measurement of scripts/measure_store_scale.py at 10,000 chunks, as counts rather than times: an
ingest that changes one file writes a few percent of the index, and a dense query reads the text of its
top k only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragcli.store import LocalIndex
from ragcli.types import Chunk, Plan

FILES, PER_FILE, DIM = 100, 100, 32


def synthetic_plan(rng: np.random.Generator) -> Plan:
    chunks, files, vectors = [], {}, {}
    for i in range(FILES * PER_FILE):
        name = f"doc-{i // PER_FILE:03d}.md"
        words = " ".join(f"w{w}" for w in rng.integers(0, 5000, size=60))
        chunks.append(Chunk(id=i + 1, file=name, position=i % PER_FILE, text=words, tokens=60))
        v = rng.standard_normal(DIM).astype(np.float32)
        vectors[i + 1] = v / np.linalg.norm(v)
        meta = files.setdefault(name, {"sha256": f"{i // PER_FILE:064x}", "bytes": 1, "root": "/synthetic",
                                       "status": "ok", "chunks": 0, "tokens": 0})
        meta["chunks"] += 1
        meta["tokens"] += 60
    return Plan(files=files, chunks=chunks, vectors=vectors, kept=set(), embed={"model": "synthetic", "dim": DIM},
                splitter={"type": "synthetic"}, changed=True)


def tree(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "index"
    store = LocalIndex(root)
    rng = np.random.default_rng(0)
    plan = synthetic_plan(rng)
    with store.lock():
        store.publish(plan, None, {"embed": plan.embed, "splitter": plan.splitter})
    return root, plan


def test_a_one_file_change_writes_a_few_percent_of_the_index(built, tmp_path):
    import shutil

    source, plan = built
    root = tmp_path / "index"
    shutil.copytree(source, root)
    store = LocalIndex(root)
    before = tree(root)
    with store.lock():
        prior = store.load()
        changed = "doc-050.md"
        rng = np.random.default_rng(1)
        new = [Chunk(id=10**9 + i, file=changed, position=i, text=f"new text {i}", tokens=3) for i in range(PER_FILE)]
        files = {k: dict(v) for k, v in prior.files.items()}
        files[changed] = dict(files[changed], sha256="f" * 64, tokens=3 * PER_FILE)
        step = Plan(files=files, chunks=new, vectors={c.id: rng.standard_normal(DIM).astype(np.float32) for c in new},
                    kept=set(files) - {changed}, embed=prior.embed, splitter=prior.splitter, changed=True)
        name = store.publish(step, prior, {"embed": prior.embed, "splitter": prior.splitter})
    after = tree(root)
    written = sum(size for path, size in after.items() if path not in before)
    index_bytes = sum(before.values())
    assert written <= 0.05 * index_bytes, (written, index_bytes)
    gen = store.load()
    assert gen.name == name and gen.manifest["counts"]["dead_rows"] == PER_FILE
    assert [r["rows"] for r in gen.manifest["segments"]] == [FILES * PER_FILE, PER_FILE]  # the old one, shared
    assert {c.id for c in gen.file_chunks(changed)} == {c.id for c in new}
    assert len(gen.chunks) == FILES * PER_FILE


def test_a_dense_query_reads_the_text_of_its_top_k_only(built):
    source, plan = built
    gen = LocalIndex(source).load()
    (segment,) = gen.segments
    assert segment.rows_read == 0  # opening reads no chunk text
    query = plan.vectors[4321]
    hits = gen.dense(query, 4)
    assert hits[0][0].id == 4321 and len(hits) == 4
    assert segment.rows_read == 4
    bm25 = gen.bm25_hits(plan.chunks[17].text, 3)
    assert bm25[0][0].id == plan.chunks[17].id and segment.rows_read == 4 + 3
