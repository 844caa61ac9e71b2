"""Measure the semantic splitter's vector modes with real all-MiniLM-L6-v2 weights on sample_docs.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_splitting.py [--modes window:same,window:bf16,pooled] [--backend torch]

A mode `window:P` sets the window vectors' precision P (same, bf16, int8, auto; RAGCLI_WINDOW_PRECISION).

For each `--semantic-vectors` mode, `ragcli.bench.bench` ingests sample_docs into a scratch index
(cold window cache) and scores dense retrieval on sample_docs/qa.jsonl at k=10. Reported per mode:
nDCG@10, MRR@10, chunks, texts_embedded (everything sent to the encoder: windows or sentences plus
chunks), texts_embedded_over_chunks, ingest seconds, encode_seconds (one encode of the final chunks
with the same loaded model) and ingest_over_encode (their ratio, bench's own figure). The model is
loaded once and shared by all modes.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--modes", default="window:same,window:bf16,pooled")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--qa", type=Path, default=REPO / "sample_docs" / "qa.jsonl")
    parser.add_argument("--corpus", type=Path, default=REPO / "sample_docs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from bench_onnx import _default_model

    from ragcli.bench import bench
    from ragcli.config import load_settings

    model = (args.model or _default_model()).resolve()
    out: dict = {"model": str(model), "backend": args.backend, "qa": str(args.qa), "modes": {}}
    with tempfile.TemporaryDirectory(prefix="ragcli-split-bench-") as work:
        for n, mode in enumerate(m.strip() for m in args.modes.split(",") if m.strip()):
            vectors, _, precision = mode.partition(":")
            settings = load_settings({"embed_model": str(model), "models_dir": Path(work) / "models",
                                      "index_dir": Path(work) / f"index-{n}", "embed_backend": args.backend,
                                      "semantic_vectors": vectors, "window_precision": precision or "same",
                                      "top_k": 10}, env={})
            r = bench(settings, qa_path=args.qa.resolve(), corpus=[args.corpus.resolve()],
                      modes=("dense",), k=10, answers=False, startup=False)
            ing = r["ingest"]
            out["modes"][mode] = {
                "ndcg@10": r["retrieval"]["dense"]["ndcg"], "mrr@10": r["retrieval"]["dense"]["mrr"],
                "chunks": ing["chunks"], "texts_embedded": ing["texts_embedded"],
                "texts_embedded_over_chunks": ing.get("texts_embedded_over_chunks"),
                "ingest_seconds": ing["seconds"], "encode_seconds": ing["encode_seconds"],
                "ingest_over_encode": ing["ingest_over_encode"], "window_precision": ing.get("window_precision"),
            }
            print(json.dumps({mode: out["modes"][mode]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
