"""`bench`: retrieval quality per mode, answer quality with and without context, and speed.

Quality numbers are deterministic (exact FAISS search, BM25, greedy decoding), so a CI job can gate on
them. Speed is reported as ratios against raw baselines measured in the same run, on the same loaded
model and index (performance.md §9): absolute seconds are there for people, ratios and counters are
what a gate should use. The index is only read: bench never changes it (when it has to ingest, it does
so into a temporary folder).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli import __version__
from ragcli import metrics as M
from ragcli.errors import BaselineError, QAFileError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.types import Progress

REPORT_FORMAT = 1
# Metrics where lower is better (ratios, latencies, counters); every other metric: higher is better.
LOWER_IS_BETTER_PREFIXES = ("ratio.", "latency.", "count.")


@dataclass(frozen=True)
class QARow:
    line: int
    id: str
    question: str
    answers: list[str]
    sources: list[str]
    evidence: list[str]


def load_qa(path: Path) -> list[QARow]:
    """Read and validate a QA file (JSON Lines). Every problem names the file and the line."""
    if not path.is_file():
        raise QAFileError(f"QA file {path} does not exist. Pass --qa with a JSON Lines file (see README, bench).")
    rows: list[QARow] = []
    seen: set[str] = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise QAFileError(f"{path} is not UTF-8 text.") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise QAFileError(f"{where}: not valid JSON ({exc.args[0].split(':')[0]}).") from None
        if not isinstance(obj, dict):
            raise QAFileError(f"{where}: expected a JSON object with question, answers and sources.")
        qid = obj.get("id", f"line{n}")
        question = obj.get("question")
        answers = obj.get("answers")
        sources = obj.get("sources")
        evidence = obj.get("evidence", [])
        if not isinstance(question, str) or not question.strip():
            raise QAFileError(f"{where}: missing or empty \"question\".")
        if not isinstance(answers, list) or not answers or not all(isinstance(a, str) and a.strip() for a in answers):
            raise QAFileError(f"{where}: \"answers\" must be a non-empty list of strings.")
        if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s.strip() for s in sources):
            raise QAFileError(f"{where}: \"sources\" must be a non-empty list of file paths relative to the corpus root.")
        if not isinstance(evidence, list) or not all(isinstance(e, str) for e in evidence):
            raise QAFileError(f"{where}: \"evidence\" must be a list of strings.")
        if not isinstance(qid, (str, int)) or str(qid) in seen:
            raise QAFileError(f"{where}: id {qid!r} is missing or repeated.")
        seen.add(str(qid))
        rows.append(QARow(n, str(qid), question.strip(), answers, [s.strip().replace("\\", "/") for s in sources],
                          evidence))
    if not rows:
        raise QAFileError(f"{path} holds no questions.")
    return rows


def _timed_pairs(a: Callable[[], Any], b: Callable[[], Any], pairs: int) -> dict[str, Any]:
    """Run a (numerator) and b (baseline) alternately after a warm-up pair; ratio per pair."""
    a(), b()
    ratios, ta, tb = [], [], []
    for _ in range(pairs):
        t = time.perf_counter()
        a()
        x = time.perf_counter() - t
        t = time.perf_counter()
        b()
        y = time.perf_counter() - t
        ta.append(x)
        tb.append(y)
        ratios.append(x / y if y > 0 else float("inf"))
    q = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
    return {"median": round(statistics.median(ratios), 4), "iqr": [round(q[0], 4), round(q[2], 4)],
            "pairs": pairs, "seconds": round(statistics.median(ta), 6), "baseline_seconds": round(statistics.median(tb), 6)}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


def bench(
    settings: Settings,
    *,
    qa_path: Path,
    corpus: list[Path] | None = None,
    modes: tuple[str, ...] = ("dense", "bm25", "hybrid"),
    k: int | None = None,
    answers: bool = True,
    answer_mode: str = "dense",
    pairs: int = 5,
    startup: bool = True,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the report (a JSON-able dict). Never changes the configured index."""
    from ragcli.errors import IndexNotFoundError, UsageError
    from ragcli.models import load_embedder, load_generator
    from ragcli.retrieval import open_retriever
    from ragcli.targets import open_target, settings_target_class

    kind = settings_target_class(settings)
    if corpus and not kind.capabilities.scratch_copy:
        raise UsageError(f"bench never changes a remote index: drop --corpus and run "
                         f"`ragcli ingest --target {kind.kind} <paths>` first.")
    k = k or settings.top_k
    qa = load_qa(qa_path)
    report: dict[str, Any] = {"format": REPORT_FORMAT, "ragcli_version": __version__, "qa_file": str(qa_path),
                              "questions": len(qa), "k": k, "target": kind.kind}
    timings: dict[str, Any] = {}
    t = time.perf_counter()
    embedder = load_embedder(settings) if any(m in ("dense", "hybrid") for m in modes) or corpus else None
    timings["load_embedder_s"] = round(time.perf_counter() - t, 4)

    if corpus is None and kind.capabilities.scratch_copy:
        try:
            open_target(settings).open()
        except IndexNotFoundError:  # nothing ingested yet: measure the QA file's own folder
            corpus = [qa_path.parent]
    tmp_dir = None
    if corpus:
        tmp_dir = tempfile.TemporaryDirectory(prefix="ragcli-bench-")
        settings = kind.scratch_settings(settings, Path(tmp_dir.name))
        # A cold window cache, so the first ingest pays for every semantic window (ingest_over_encode).
        settings = settings.replace(window_cache=str(Path(tmp_dir.name) / "window-cache"))
        report["ingest"] = _bench_ingest(corpus, settings, embedder, progress=progress)
    try:
        retriever = open_retriever(settings, embedder, mode="dense" if embedder is not None else "bm25")
        info = retriever.info
        index_files = set(info.files)
        if index_files:
            unknown = [(r.line, s) for r in qa for s in r.sources if s not in index_files]
            if unknown:
                line, src = unknown[0]
                raise QAFileError(f"{qa_path}:{line}: source {src!r} is not a file of the index "
                                  f"({len(unknown)} such label(s)); sources are paths relative to the ingested folder.")
        report["index"] = {"generation": info.name, "chunks": info.chunks, "files": len(index_files),
                           "corpus_sha256": info.corpus_sha256, "splitter": info.splitter,
                           "index_type": info.index_type, "embed": info.embed}
        report["retrieval"] = {}
        hits_by_mode: dict[str, list[Any]] = {}
        for mode in modes:
            retriever.rerank_enabled = False  # scored without the reranker first (issue 15)
            report["retrieval"][mode], hits_by_mode[mode] = _bench_retrieval(qa, retriever, mode, k, settings,
                                                                             progress)
            if settings.rerank_model:  # and again with it: "<mode>+rerank", its time the "rerank" stage
                retriever.rerank_enabled = True
                report["retrieval"][f"{mode}+rerank"], hits_by_mode[mode] = _bench_retrieval(
                    qa, retriever, mode, k, settings, progress)
        retriever.rerank_enabled = True
        if embedder is not None and "dense" in modes and retriever.target.capabilities.raw_search:
            report["retrieval_over_raw"] = _retrieval_ratio(qa, retriever, embedder, k, pairs * 4)
        if answers:
            t = time.perf_counter()
            generator = load_generator(settings)
            timings["load_generator_s"] = round(time.perf_counter() - t, 4)
            report["answers"] = _bench_answers(qa, retriever, generator, answer_mode, k, settings, progress,
                                               hits=hits_by_mode.get(answer_mode))
    finally:
        if tmp_dir is not None:
            tmp_dir.cleanup()
    if startup:
        report["startup"] = _startup_ratio(pairs=max(3, pairs // 2))
    report["timings"] = timings
    report["memory"] = {"peak_rss_mb": _peak_rss_mb()}
    report["fingerprint"] = fingerprint(settings, qa_path, report, modes, answer_mode)
    report["metrics"] = flat_metrics(report)
    return report


def bench_targets(settings: Settings, targets: list[str], **kwargs: Any) -> dict[str, Any]:
    """The same benchmark on several targets (e.g. local and databricks), in one report.

    Each target's full report is under `targets`; the flat `metrics` are prefixed with the target
    name (`local.dense.mrr`, `databricks.dense.mrr`) so gates can name either side."""
    reports = {t: bench(settings.replace(target=t), **kwargs) for t in targets}
    first = reports[targets[0]]
    return {
        "format": REPORT_FORMAT, "ragcli_version": __version__, "qa_file": first["qa_file"],
        "questions": first["questions"], "k": first["k"], "targets": reports,
        "fingerprint": {**first["fingerprint"], "targets": targets},
        "metrics": {f"{t}.{name}": v for t, r in reports.items() for name, v in r["metrics"].items()},
    }


def _bench_ingest(corpus: list[Path], settings: Settings, embedder: Any, *,
                  progress: Progress | None) -> dict[str, Any]:
    from ragcli.ingest import ingest

    before = embedder.texts_embedded
    t = time.perf_counter()
    first = ingest(corpus, settings, rebuild=True, embedder=embedder, progress=progress)
    seconds = time.perf_counter() - t
    embedded_first = embedder.texts_embedded - before
    # Baseline: one encode of the same final chunk texts with the same loaded model.
    from ragcli.targets import open_target

    texts = [c.text for c in open_target(settings).chunks()]
    t = time.perf_counter()
    if texts:
        embedder.embed_documents(texts)
    encode_s = time.perf_counter() - t
    before = embedder.texts_embedded
    t = time.perf_counter()
    ingest(corpus, settings, embedder=embedder)
    reingest_s = time.perf_counter() - t
    out = {
        "files": len([f for f in first.files if f.status in ("added", "changed")]),
        "failed": len(first.failed),
        "chunks": first.chunks_total,
        "tokens": first.tokens,
        "seconds": round(seconds, 4),
        "files_per_s": round(len(first.files) / seconds, 3) if seconds else None,
        "chunks_per_s": round(first.chunks_total / seconds, 3) if seconds else None,
        "tokens_per_s": round(first.tokens / seconds, 3) if seconds else None,
        "texts_embedded": embedded_first,
        "encode_seconds": round(encode_s, 4),
        "ingest_over_encode": round(seconds / encode_s, 4) if encode_s else None,
        "reingest_seconds": round(reingest_s, 4),
        "reingest_over_ingest": round(reingest_s / seconds, 4) if seconds else None,
        "reingest_texts_embedded": embedder.texts_embedded - before,
        "resplit_chunks": first.resplit_chunks,
        "hard_cuts": first.hard_cuts,
    }
    if first.chunks_total:
        out["texts_embedded_over_chunks"] = round(embedded_first / first.chunks_total, 3)
    return out


def _bench_retrieval(qa: list[QARow], retriever: Any, mode: str, k: int, settings: Settings,
                     progress: Progress | None) -> tuple[dict[str, Any], list[Any]]:
    """Scores and latencies of one mode, and the hits of every question (reused for the answers)."""
    per_q, stage_samples, all_hits = [], {}, []
    values: dict[str, list[float]] = {"hit_rate": [], "recall": [], "mrr": [], "ndcg": [], "evidence_hit": []}
    for n, row in enumerate(qa, 1):
        timings: dict[str, float] = {}
        t = time.perf_counter()
        hits = retriever.search(row.question, k, mode, fusion=settings.fusion, alpha=settings.hybrid_alpha,
                                timings=timings)
        timings["total"] = time.perf_counter() - t
        all_hits.append(hits)
        for stage, secs in timings.items():
            stage_samples.setdefault(stage, []).append(secs * 1000)
        files = [h.file for h in hits]
        relevant = set(row.sources)
        scores = {"hit_rate": M.hit_rate_at_k(files, relevant, k), "recall": M.recall_at_k(files, relevant, k),
                  "mrr": M.mrr_at_k(files, relevant, k), "ndcg": M.ndcg_at_k(files, relevant, k)}
        if row.evidence:
            texts = [_norm(h.text) for h in hits]
            scores["evidence_hit"] = float(any(_norm(e) in t for e in row.evidence for t in texts))
        for key, v in scores.items():
            values[key].append(v)
        per_q.append({"id": row.id, "retrieved": files, **scores})
        if progress:
            progress(f"retrieve {mode}", n, len(qa))
    out = {name: round(M.mean(v), 4) for name, v in values.items() if v}
    out["latency_ms"] = {stage: {k2: round(v, 3) for k2, v in M.percentiles(s).items()}
                         for stage, s in stage_samples.items()}
    out["per_question"] = per_q
    return out, all_hits


def _retrieval_ratio(qa: list[QARow], retriever: Any, embedder: Any, k: int, pairs: int) -> dict[str, Any]:
    """ragcli's dense retrieval vs one raw encode + one raw FAISS search, same model, index and k."""
    import numpy as np

    target = retriever.target
    questions = [r.question for r in qa]
    state = {"i": 0}

    def ours() -> None:
        retriever.search(questions[state["i"] % len(questions)], k, "dense")

    def raw() -> None:
        q = questions[state["i"] % len(questions)]
        state["i"] += 1
        v = np.asarray(embedder.raw_query_vector(q), dtype=np.float32)[None, :]
        target.raw_search(v, k)

    return _timed_pairs(ours, raw, pairs)


def _bench_answers(qa: list[QARow], retriever: Any, generator: Any, mode: str, k: int, settings: Settings,
                   progress: Progress | None, hits: list[Any] | None = None) -> dict[str, Any]:
    from ragcli.query import bare_prompt, build_prompt

    ctx_scores: dict[str, list[float]] = {"exact_match": [], "token_f1": [], "contained": []}
    bare_scores: dict[str, list[float]] = {"exact_match": [], "token_f1": [], "contained": []}
    gen_ctx, gen_bare, per_q = [], [], []
    changed = left_out = truncated = 0
    judge = None
    if settings.faithfulness_model:  # issue 15: each answer's support by the prompt's passages
        from ragcli.judges import faithfulness, load_judge

        judge = load_judge(settings)
        ctx_scores["faithfulness"], bare_scores["faithfulness"], judge_ms = [], [], []
    for n, row in enumerate(qa, 1):
        row_hits = hits[n - 1] if hits is not None else retriever.search(
            row.question, k, mode, fusion=settings.fusion, alpha=settings.hybrid_alpha)
        plan = build_prompt(row.question, row_hits, generator)
        left_out += plan.left_out
        truncated += int(plan.truncated)
        t = time.perf_counter()
        with_ctx = generator.generate(plan.prompt, settings.max_new_tokens).text
        gen_ctx.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        without = generator.generate(bare_prompt(row.question, generator), settings.max_new_tokens).text
        gen_bare.append((time.perf_counter() - t) * 1000)
        for scores, text in ((ctx_scores, with_ctx), (bare_scores, without)):
            scores["exact_match"].append(M.exact_match(text, row.answers))
            scores["token_f1"].append(M.token_f1(text, row.answers))
            scores["contained"].append(M.answer_contained(text, row.answers))
        changed += int(M.normalize_answer(with_ctx) != M.normalize_answer(without))
        per_q.append({"id": row.id, "with_context": with_ctx, "without_context": without})
        if judge is not None:
            passages = [h.text for h in row_hits[: plan.used]]
            t = time.perf_counter()
            judged = {side: faithfulness(text, passages, judge) for side, text in
                      (("with_context", with_ctx), ("without_context", without))}
            judge_ms.append((time.perf_counter() - t) * 1000)
            for side, scores in (("with_context", ctx_scores), ("without_context", bare_scores)):
                if judged[side] is not None:  # None: an empty answer or no passage
                    scores["faithfulness"].append(judged[side])
            per_q[-1]["faithfulness"] = judged
        if progress:
            progress("answers", n, len(qa))
    return {
        "retrieval_mode": mode,
        "with_context": {k2: round(M.mean(v), 4) for k2, v in ctx_scores.items() if v},
        "without_context": {k2: round(M.mean(v), 4) for k2, v in bare_scores.items() if v},
        "changed_by_context": changed,
        "passages_left_out": left_out,
        "prompts_truncated": truncated,
        "latency_ms": {"generate_context": M.percentiles(gen_ctx), "generate_bare": M.percentiles(gen_bare),
                       **({"faithfulness": M.percentiles(judge_ms)} if judge is not None else {})},
        "per_question": per_q,
    }


def _startup_ratio(pairs: int) -> dict[str, Any]:
    """`ragcli --help` in a fresh process vs a minimal Typer app with one command, also fresh."""
    import subprocess

    minimal = ("import typer\napp = typer.Typer()\n@app.command()\ndef hello(name: str = 'x') -> None:\n"
               "    '''Say hello.'''\napp(['--help'], standalone_mode=False)\n")
    env = dict(os.environ, NO_COLOR="1")

    def ours() -> None:
        subprocess.run([sys.executable, "-m", "ragcli", "--help"], capture_output=True, env=env, check=True)

    def typer_only() -> None:
        subprocess.run([sys.executable, "-c", minimal], capture_output=True, env=env, check=True)

    return {"help_over_typer": _timed_pairs(ours, typer_only, pairs)}


def fingerprint(settings: Settings, qa_path: Path, report: dict[str, Any], modes: tuple[str, ...],
                answer_mode: str) -> dict[str, Any]:
    """Everything needed to reproduce the run (no secrets)."""
    from ragcli.types import sha256_file
    from ragcli.versions import library_versions

    index = report.get("index", {})
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    return {
        "embed_model": settings.embed_model,
        "embed_revision": (index.get("embed") or {}).get("revision"),
        "gen_model": settings.gen_model,
        "splitter": index.get("splitter"),
        "retrieval": {"k": report["k"], "modes": list(modes), "fusion": settings.fusion, "alpha": settings.hybrid_alpha,
                      "answer_mode": answer_mode, "max_new_tokens": settings.max_new_tokens,
                      "rerank_model": settings.rerank_model, "rerank_depth": settings.rerank_depth,
                      "faithfulness_model": settings.faithfulness_model},
        "index_type": index.get("index_type"),
        "corpus_sha256": index.get("corpus_sha256"),
        "qa_sha256": sha256_file(qa_path),
        "target": settings.target,
        "ragcli_version": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "libraries": library_versions(),
    }


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's gateable numbers under flat names, e.g. `dense.mrr`, `answers.context.token_f1`,
    `ratio.ingest_over_encode`, `count.reingest_texts_embedded`."""
    out: dict[str, float] = {}
    for mode, r in report.get("retrieval", {}).items():
        for name in ("hit_rate", "recall", "mrr", "ndcg", "evidence_hit"):
            if name in r:
                out[f"{mode}.{name}"] = r[name]
        total = r.get("latency_ms", {}).get("total", {})
        for p, v in total.items():
            out[f"latency.{mode}.{p}_ms"] = v
    a = report.get("answers")
    if a:
        for side, key in (("with_context", "context"), ("without_context", "bare")):
            for name, v in a[side].items():
                out[f"answers.{key}.{name}"] = v
        out["answers.changed_by_context"] = a["changed_by_context"]
    ing = report.get("ingest")
    if ing:
        for name in ("ingest_over_encode", "reingest_over_ingest"):
            if ing.get(name) is not None:
                out[f"ratio.{name}"] = ing[name]
        out["count.reingest_texts_embedded"] = ing["reingest_texts_embedded"]
    if "retrieval_over_raw" in report:
        out["ratio.retrieval_over_raw"] = report["retrieval_over_raw"]["median"]
    if "startup" in report:
        out["ratio.help_over_typer"] = report["startup"]["help_over_typer"]["median"]
    return out


def lower_is_better(metric: str) -> bool:
    return metric.startswith(LOWER_IS_BETTER_PREFIXES)


def parse_threshold(spec: str) -> tuple[str, float]:
    from ragcli.errors import UsageError

    name, sep, value = spec.partition("=")
    try:
        if not sep or not name.strip():
            raise ValueError
        return name.strip(), float(value)
    except ValueError:
        raise UsageError(f"Threshold {spec!r} must look like METRIC=VALUE, e.g. dense.mrr=0.5.") from None


def check_gates(report: dict[str, Any], *, fail_under: list[tuple[str, float]] = (),
                fail_over: list[tuple[str, float]] = (), baseline: dict[str, Any] | None = None,
                tolerance: float = 0.02) -> list[str]:
    """Every failed gate, as one readable line each (empty: all passed)."""
    metrics = report["metrics"]
    failures = []
    for name, limit in fail_under:
        if name not in metrics:
            failures.append(f"{name}: no such metric (known: {', '.join(sorted(metrics))})")
        elif metrics[name] < limit:
            failures.append(f"{name} = {metrics[name]} < {limit}")
    for name, limit in fail_over:
        if name not in metrics:
            failures.append(f"{name}: no such metric (known: {', '.join(sorted(metrics))})")
        elif metrics[name] > limit:
            failures.append(f"{name} = {metrics[name]} > {limit}")
    if baseline is not None:
        for name, old in sorted(baseline.get("metrics", {}).items()):
            if name not in metrics or lower_is_better(name):
                continue  # timings are too noisy to compare across runs: gate them with --fail-over
            if metrics[name] < old - tolerance:
                failures.append(f"{name} = {metrics[name]} regressed from {old} (tolerance {tolerance})")
    return failures


def load_baseline(path: Path, report: dict[str, Any]) -> dict[str, Any]:
    """A previous report to compare with. Refused if it measured other questions or another corpus."""
    try:
        base = json.loads(path.read_text(encoding="utf-8"))
        fp = base["fingerprint"]
        base["metrics"]
    except FileNotFoundError:
        raise BaselineError(f"Baseline {path} does not exist. Write one with: ragcli bench --json {path}") from None
    except (ValueError, KeyError, TypeError):
        raise BaselineError(f"Baseline {path} is not a ragcli bench report.") from None
    mine = report["fingerprint"]
    for key, what in (("qa_sha256", "QA file"), ("corpus_sha256", "corpus")):
        if fp.get(key) != mine.get(key):
            raise BaselineError(f"Baseline {path} was measured on another {what}; comparing would mislead. "
                                "Re-run the baseline on the same inputs.")
    return base
