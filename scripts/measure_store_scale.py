"""How the local index scales: a cold dense query against raw FAISS, and what a one-file change costs.

    .venv/bin/python scripts/measure_store_scale.py --chunks 100000
    .venv/bin/python scripts/measure_store_scale.py --chunks 1000000 --workdir /var/tmp/ragcli-scale

Builds a synthetic index (unit vectors, ~500-character chunks of random words, 100 chunks a file)
through the store's own publish path, then measures, each in a fresh process and as ratios in this run:

- cold query: process start → `LocalTarget.open()` + one dense search with a given vector + the top-k
  chunk texts (what `ragcli query --mode dense` does before embedding the question and generating),
  against a raw `faiss.read_index` + `index.search` of the same vectors in a flat FAISS file (the same
  Python start-up and `import faiss, numpy` on both sides). Median of --repeats runs; peak RSS of each.
- a one-file change: bytes written and publish time against a full write of the same index
  (embedding excluded on both sides: vectors are given).
- the full write: time and peak RSS.

Prints one JSON object (also written to --json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORDS = [f"w{i}" for i in range(20000)]

WRITE = r"""
import json, os, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from ragcli.store import LocalIndex
from ragcli.types import Chunk, Plan
root, n, dim, per_file, seed = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
rng = np.random.default_rng(seed)
vectors = rng.standard_normal((n, dim), dtype=np.float32)
vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
words = rng.integers(0, 20000, size=(n, 80))
chunks, files = [], {}
for i in range(n):
    f = f"doc-{i // per_file:06d}.md"
    text = " ".join(f"w{w}" for w in words[i])
    chunks.append(Chunk(id=i + 1, file=f, position=i % per_file, text=text, tokens=80))
    meta = files.setdefault(f, {"sha256": f"{i // per_file:064x}", "bytes": 0, "root": "/synthetic", "status": "ok",
                                "chunks": 0, "tokens": 0})
    meta["chunks"] += 1
    meta["tokens"] += 80
plan = Plan(files=files, chunks=chunks, vectors=dict(zip((c.id for c in chunks), vectors)), kept=set(),
            embed={"model": "synthetic", "revision": "0", "dim": dim}, splitter={"type": "synthetic"}, changed=True)
store = LocalIndex(root)
t = time.perf_counter()
with store.lock():
    name = store.publish(plan, None, {"embed": plan.embed, "splitter": plan.splitter}, index_type=sys.argv[7])
print(json.dumps({"seconds": time.perf_counter() - t, "generation": name,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
np.save(os.path.join(sys.argv[8], "query.npy"), vectors[n // 2])
import faiss
raw = faiss.IndexFlatIP(dim)
raw.add(vectors)
faiss.write_index(raw, os.path.join(sys.argv[8], "raw.faiss"))
"""

CHANGE = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from ragcli.store import LocalIndex
from ragcli.types import Chunk, Plan
root, dim, per_file = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
store = LocalIndex(root)
with store.lock():
    prior = store.load()
    target = sorted(prior.files)[len(prior.files) // 2]
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((per_file, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [Chunk(id=10**12 + i, file=target, position=i, text=f"changed text {i} " * 20, tokens=60)
              for i in range(per_file)]
    files = {k: dict(v) for k, v in prior.files.items()}
    files[target] = dict(files[target], sha256="f" * 64, chunks=per_file, tokens=60 * per_file)
    plan = Plan(files=files, chunks=chunks, vectors=dict(zip((c.id for c in chunks), vectors)),
                kept=set(files) - {target}, embed=prior.embed, splitter=prior.splitter, changed=True)
    t = time.perf_counter()
    name = store.publish(plan, prior, {"embed": plan.embed, "splitter": plan.splitter}, index_type=prior.index_type)
    seconds = time.perf_counter() - t
print(json.dumps({"seconds": seconds, "generation": name,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

QUERY = r"""
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
from ragcli.config import load_settings
from ragcli.targets.local import LocalTarget
target = LocalTarget(load_settings({"index_dir": sys.argv[2]}, env={}))
target.open()
hits = target.search("dense", 4, vector=np.load(sys.argv[3]))
assert hits and hits[0].text
import resource
print(hits[0].chunk_id, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

RAW = r"""
import sys
import numpy as np, faiss
index = faiss.read_index(sys.argv[1])
scores, ids = index.search(np.load(sys.argv[2]).reshape(1, -1), 4)
import resource
print(int(ids[0][0]) + 1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run(code: str, *args: object) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, check=False,
                         env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    seconds = time.perf_counter() - t
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return seconds, out.stdout.strip().splitlines()[-1]


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--per-file", type=int, default=100)
    parser.add_argument("--index-type", default="flat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (index, raw FAISS file)")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ragcli-scale-", dir=args.workdir))
    index = work / "index"
    try:
        seconds, line = run(WRITE, REPO, index, args.chunks, args.dim, args.per_file, 0, args.index_type, work)
        write = json.loads(line)
        full_bytes = tree_bytes(index)
        cold, raw = [], []
        for _ in range(args.repeats):  # interleaved: ragcli, raw, ragcli, raw, ...
            s, out = run(QUERY, REPO, index, work / "query.npy")
            cold.append((s, float(out.split()[1]), out.split()[0]))
            s, out = run(RAW, work / "raw.faiss", work / "query.npy")
            raw.append((s, float(out.split()[1]), out.split()[0]))
        before = {p: p.stat().st_size for p in index.rglob("*") if p.is_file()}
        _, line = run(CHANGE, REPO, index, args.dim, args.per_file)
        change = json.loads(line)
        after = {p: p.stat().st_size for p in index.rglob("*") if p.is_file()}
        written = sum(size for p, size in after.items() if p not in before)
        report = {
            "chunks": args.chunks, "dim": args.dim, "index_type": args.index_type,
            "index_bytes": full_bytes,
            "full_write_s": round(write["seconds"], 3), "full_write_peak_rss_mb": round(write["peak_rss_mb"], 1),
            "cold_query_s": round(statistics.median(c[0] for c in cold), 3),
            "cold_query_peak_rss_mb": round(max(c[1] for c in cold), 1),
            "raw_faiss_s": round(statistics.median(r[0] for r in raw), 3),
            "raw_faiss_peak_rss_mb": round(max(r[1] for r in raw), 1),
            "same_top_hit": all(c[2] == r[2] for c, r in zip(cold, raw, strict=True)),
            "one_file_change_bytes": written, "one_file_change_s": round(change["seconds"], 3),
        }
        report["cold_over_raw"] = round(report["cold_query_s"] / report["raw_faiss_s"], 3)
        report["rss_over_raw"] = round(report["cold_query_peak_rss_mb"] / report["raw_faiss_peak_rss_mb"], 3)
        report["change_bytes_over_index"] = round(written / full_bytes, 5)
        report["change_time_over_full_write"] = round(change["seconds"] / write["seconds"], 4)
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            args.json.write_text(text + "\n", encoding="utf-8")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
