"""Segments of the local index: what is written is what is read, searches agree with a brute-force or
reference computation, and a damaged byte in anything a search reads is named before it is used."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from ragcli.errors import IndexCorruptedError
from ragcli.segments import (
    CHUNKS,
    POSTINGS,
    VECTORS,
    BM25Stats,
    Segment,
    SegmentWriter,
    bm25_search,
    fast_sum,
    ivf_cells,
    key_u64,
)
from ragcli.types import Chunk, text_key

WORDS = ("orchard kiln lantern vacuum snapshot delta index flat exact search glaze potter thursday weekly "
         "segment tombstone compaction manifest vector chunk query answer").split()


def corpus(n: int, seed: int = 0) -> list[Chunk]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + f" item{i}"
        out.append(Chunk(id=10_000 + i, file=f"f{i // 10:03d}.md", position=i % 10, text=text, tokens=len(text.split()),
                         metadata={"n": i} if i % 7 == 0 else {}))
    return out


def unit(n: int, dim: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write(folder: Path, chunks: list[Chunk], vectors: np.ndarray, index_type: str = "flat", batch: int = 37):
    w = SegmentWriter(folder, vectors.shape[1], index_type)
    for start in range(0, len(chunks), batch):
        w.add(chunks[start : start + batch], vectors[start : start + batch])
    record = w.finish()
    return Segment.open(folder, record), record


@pytest.fixture
def seg(tmp_path):
    chunks, vectors = corpus(300), unit(300, 16)
    segment, record = write(tmp_path / "seg-a", chunks, vectors)
    return segment, record, chunks, vectors


def test_rows_and_vectors_round_trip(seg):
    segment, record, chunks, vectors = seg
    assert record["rows"] == segment.rows == 300
    assert np.array_equal(np.asarray(segment.vectors()), vectors)
    assert segment.all_chunks() == chunks
    assert segment.chunks([5, 299]) == {5: chunks[5], 299: chunks[299]}


def test_dense_search_equals_brute_force_and_skips_dead_rows(seg):
    segment, _, _, vectors = seg
    q = unit(1, 16, seed=9)[0]
    scores = vectors @ q
    expected = np.argsort(-scores, kind="stable")[:10]
    assert [r for r, _ in segment.dense(q, 10, None)] == expected.tolist()
    dead = np.zeros(300, dtype=bool)
    dead[expected[:3]] = True
    assert [r for r, _ in segment.dense(q, 7, dead)] == expected[3:10].tolist()
    assert segment.dense(q, 1000, None)[-1][1] == pytest.approx(float(scores.min()), abs=1e-6)


def test_bm25_equals_the_reference_implementation(tmp_path):
    """Scores equal bm25s (Lucene variant, k1 1.5, b 0.75) on the same tokens, across two segments."""
    bm25s = pytest.importorskip("bm25s")
    from ragcli.bm25 import tokenize

    chunks = corpus(120, seed=3)
    vectors = unit(120, 8)
    first, _ = write(tmp_path / "seg-1", chunks[:70], vectors[:70])
    second, _ = write(tmp_path / "seg-2", chunks[70:], vectors[70:])
    stats = BM25Stats(docs=120, tokens=int(first.meta["tokens"]) + int(second.meta["tokens"]))
    tokens = [tokenize(c.text) for c in chunks]
    vocab = {t: i for i, t in enumerate(sorted({t for doc in tokens for t in doc}))}
    model = bm25s.BM25(k1=1.5, b=0.75, method="lucene", backend="numpy")
    model.index(([[vocab[t] for t in doc] for doc in tokens], vocab), create_empty_token=False, show_progress=False)
    for query in ("orchard kiln", "vacuum vacuum snapshot", "item5 glaze", "tombstone compaction manifest"):
        reference = model.get_scores_from_ids([vocab[t] for t in tokenize(query) if t in vocab])
        found = bm25_search([(first, None), (second, None)], query, 200, stats)
        got = {(0 if n == 0 else 70) + r: s for n, r, s in found}
        assert set(got) == set(np.flatnonzero(reference > 0).tolist())
        for row, score in got.items():
            assert score == pytest.approx(float(reference[row]), rel=1e-5)
        assert [s for _, _, s in found] == sorted((s for _, _, s in found), reverse=True)


def test_bm25_skips_dead_rows(seg):
    segment, _, chunks, _ = seg
    stats = BM25Stats(docs=300, tokens=int(segment.meta["tokens"]))
    best = bm25_search([(segment, None)], "item42", 3, stats)
    assert best[0][1] == 42
    dead = np.zeros(300, dtype=bool)
    dead[42] = True
    assert all(r != 42 for _, r, _ in bm25_search([(segment, dead)], "item42", 3, stats))


def test_text_keys_find_the_rows_of_a_text(seg):
    segment, _, chunks, _ = seg
    keys = np.asarray([key_u64(text_key(chunks[17].text)), key_u64(text_key("nothing like this"))], dtype=np.uint64)
    found = segment.find_keys(keys)
    assert list(found) == [int(keys[0])] and 17 in found[int(keys[0])]


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_search_live_rows(tmp_path, index_type):
    chunks, vectors = corpus(2000), unit(2000, 16)
    segment, _ = write(tmp_path / "seg-ann", chunks, vectors, index_type=index_type, batch=500)
    queries = vectors[:50]  # each vector's nearest neighbour is itself
    hits = [segment.dense(q, 5, None) for q in queries]
    recall = np.mean([h[0][0] == i for i, h in enumerate(hits)])
    assert recall >= 0.9
    dead = np.zeros(2000, dtype=bool)
    dead[:50] = True
    assert all(r >= 50 for q in queries for r, _ in segment.dense(q, 5, dead))
    if index_type == "ivf":
        assert segment.ann().nlist == ivf_cells(2000) == min(int(4 * math.sqrt(2000)), 2000 // 39)


# -- damage ------------------------------------------------------------------------------------------
def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_flipped_vector_byte_is_named_before_any_result(seg):
    segment, record, _, _ = seg
    _flip(segment.folder / VECTORS, 1234)
    fresh = Segment.open(segment.folder, record)  # sizes still match: only the content check can tell
    with pytest.raises(IndexCorruptedError, match=VECTORS):
        fresh.dense(unit(1, 16)[0], 3, None)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_a_flipped_byte_of_the_approximate_index_is_named_at_open(tmp_path, index_type):
    chunks, vectors = corpus(500), unit(500, 16)
    segment, record = write(tmp_path / "seg-ann", chunks, vectors, index_type=index_type, batch=500)
    segment.close()
    path = segment.folder / "ann.faiss"
    _flip(path, path.stat().st_size // 2)
    with pytest.raises(IndexCorruptedError, match="ann.faiss"):
        Segment.open(segment.folder, record)  # opened (and checked) with the segment, before any search


def test_a_damaged_chunk_row_is_named_and_other_rows_still_read(seg):
    segment, record, chunks, _ = seg
    db = segment.folder / CHUNKS
    data = db.read_bytes()
    needle = chunks[123].text.encode()
    offset = data.index(needle) + len(needle) // 2
    segment.close()
    _flip(db, offset)
    fresh = Segment.open(segment.folder, record)
    with pytest.raises(IndexCorruptedError, match="row 123 does not match its checksum"):
        fresh.chunks([123])
    assert fresh.chunks([5])[5] == chunks[5]


def test_damaged_postings_are_named(seg):
    segment, record, _, _ = seg
    _flip(segment.folder / POSTINGS, 10)
    fresh = Segment.open(segment.folder, record)
    stats = BM25Stats(docs=300, tokens=int(fresh.meta["tokens"]))
    with pytest.raises(IndexCorruptedError, match=POSTINGS):
        for word in WORDS:  # some term's postings hold the flipped byte
            bm25_search([(fresh, None)], word, 5, stats)


@pytest.mark.parametrize("damage", ["truncate", "append", "meta"])
def test_size_and_record_damage_is_named_at_open(seg, damage):
    segment, record, _, _ = seg
    if damage == "truncate":
        path = segment.folder / VECTORS
        path.write_bytes(path.read_bytes()[:-8])
    elif damage == "append":
        path = segment.folder / CHUNKS
        path.write_bytes(path.read_bytes() + b"x")
    else:
        path = segment.folder / "segment.json"
        meta = json.loads(path.read_text())
        meta["rows"] = 1
        path.write_text(json.dumps(meta))
    with pytest.raises(IndexCorruptedError, match=path.name):
        Segment.open(segment.folder, record)


def test_verify_reads_everything(seg):
    segment, record, _, _ = seg
    segment.verify()
    _flip(segment.folder / "keys.u64", 3)
    with pytest.raises(IndexCorruptedError, match="keys.u64"):
        Segment.open(segment.folder, record).verify()


def test_fast_sum_sees_every_word_and_the_length():
    base = bytes(range(256)) * 4
    assert fast_sum(base) == fast_sum(bytearray(base))
    changed = bytearray(base)
    changed[517] ^= 1
    assert fast_sum(bytes(changed)) != fast_sum(base)
    assert fast_sum(base + b"\0\0\0\0") != fast_sum(base)
    assert fast_sum(np.frombuffer(base, dtype=np.float32)) == fast_sum(base)
