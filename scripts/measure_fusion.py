"""Hit@1 of dense, bm25 and every hybrid fusion on one corpus and QA file, from one set of retrieved lists.

Ingests CORPUS into a fresh index (sentence splitter) with the embedding model given, asks the index for
the dense and the bm25 list of every question once (depth 50), then fuses those same lists with each
method, so the methods differ only in how they fuse.

    RAGCLI_EMBED_MODEL=/path/to/all-MiniLM-L6-v2 python scripts/measure_fusion.py CORPUS QA.jsonl [--k 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("qa", type=Path)
    ap.add_argument("--index-dir", type=Path)
    ap.add_argument("--splitter", default="sentence")
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--lists", type=Path, help="cache of the retrieved lists (read if it exists, else written)")
    args = ap.parse_args(argv)
    from ragcli import fusion

    if args.lists and args.lists.exists():
        lists = json.loads(args.lists.read_text())
    else:
        lists = _retrieve(args)
        if args.lists:
            args.lists.write_text(json.dumps(lists))
    print(json.dumps({"corpus": str(args.corpus), "questions": len(lists), "hit@1": evaluate(lists, fusion)},
                     indent=2))
    return 0


def _retrieve(args: argparse.Namespace) -> list[dict]:
    index_dir = args.index_dir or Path(tempfile.mkdtemp(prefix="ragcli-fusion-")) / "index"
    env = {**os.environ, "RAGCLI_INDEX_DIR": str(index_dir), "RAGCLI_SPLITTER": args.splitter}
    if not (index_dir / "CURRENT").exists():
        subprocess.run([sys.executable, "-m", "ragcli", "ingest", str(args.corpus)], env=env, check=True,
                       stdout=subprocess.DEVNULL)

    from ragcli.bench import load_qa
    from ragcli.config import load_settings
    from ragcli.retrieval import open_retriever

    settings = load_settings({"index_dir": index_dir, "splitter": args.splitter})
    retriever = open_retriever(settings, mode="hybrid")
    assert retriever.embedder is not None
    qa = load_qa(args.qa)
    lists = []
    for row in qa.rows:
        vector = retriever.embedder.embed_query(row.question)
        dense = retriever.target.search("dense", args.depth, vector=vector)
        sparse = retriever.target.search("bm25", args.depth, text=row.question)
        lists.append({"sources": row.sources, "dense": [(h.chunk_id, h.score, h.file) for h in dense],
                      "sparse": [(h.chunk_id, h.score, h.file) for h in sparse]})
    return lists


def evaluate(lists: list[dict], fusion) -> dict[str, float]:
    def ids(pairs):
        return [i for i, _ in pairs]

    methods = {
        "dense": lambda d, s: ids(d),
        "bm25": lambda d, s: ids(s),
        "rrf": lambda d, s: ids(fusion.rrf([ids(d), ids(s)])),
        **{f"weighted a={a}": (lambda w: lambda d, s: ids(fusion.weighted(d, s, alpha=w)))(a)
           for a in (0.1, 0.3, 0.5, 0.7)},
    }

    def scored(row):
        return [(i, sc) for i, sc, _ in row["dense"]], [(i, sc) for i, sc, _ in row["sparse"]]

    def hit1(row, ranked):
        files = {i: f for i, _, f in (*row["dense"], *row["sparse"])}
        return float(bool(ranked) and files[ranked[0]] in row["sources"])

    def queries(rows):
        return [(*scored(r), {i for i, _, f in (*r["dense"], *r["sparse"]) if f in r["sources"]}) for r in rows]

    results = {}
    for name, method in methods.items():
        results[name] = round(sum(hit1(row, method(*scored(row))) for row in lists) / len(lists), 4)
    # adaptive: α picked on the same questions (what `calibrate` records), and on the other half only
    # (4-fold, by position: α picked on three quarters, scored on the other), which is how it does on
    # questions it was not tuned on.
    alpha, _ = fusion.pick_alpha(queries(lists))
    results[f"adaptive in-sample (a={alpha})"] = round(
        sum(hit1(r, ids(fusion.adaptive(*scored(r), alpha))) for r in lists) / len(lists), 4)
    folds = [lists[i::4] for i in range(4)]
    total, picked = 0.0, []
    for n, test in enumerate(folds):
        a, _ = fusion.pick_alpha(queries([r for m, fold in enumerate(folds) if m != n for r in fold]))
        picked.append(a)
        total += sum(hit1(r, ids(fusion.adaptive(*scored(r), a))) for r in test)
    results[f"adaptive 4-fold (a={picked})"] = round(total / len(lists), 4)
    return results


if __name__ == "__main__":
    raise SystemExit(main())
