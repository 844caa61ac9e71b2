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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli import __version__
from ragcli import metrics as M
from ragcli.errors import BaselineError, QAFileError
from ragcli.qa import QARow, QASet, load_qa

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.types import Progress

REPORT_FORMAT = 2
# Metrics where lower is better: timings (ratios, latencies: noisy across runs, so a baseline never
# gates them; use --fail-over) and deterministic counts and rates, which a baseline does gate.
TIMING_PREFIXES = ("ratio.", "latency.")
LOWER_IS_BETTER_PREFIXES = (*TIMING_PREFIXES, "count.")
LOWER_IS_BETTER_SUFFIXES = (".cut_rate", ".truncated_rate")
# Neither better nor worse: how many answers context changed describes the run, it is not a score.
NO_DIRECTION = ("answers.changed_by_context", "answers.changed_by_context_rate", "answers.scored")


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
    return {"median": statistics.median(ratios), "iqr": [q[0], q[2]],
            "pairs": pairs, "seconds": statistics.median(ta), "baseline_seconds": statistics.median(tb)}


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


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
    qa: QASet | None = None,
    embedder: Any = None,
    speed: bool = True,
    compare_backend: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the report (a JSON-able dict). Never changes the configured index.

    `qa` (the loaded `qa_path`) and `embedder` may be passed in by a caller that runs several arms on
    one set (ragcli.grid); `speed=False` skips the timing ratios (re-ingest, raw search).
    `compare_backend` (e.g. "torch") also runs that embedding backend on the same corpus and texts
    and reports both side by side (`backends`, ragcli.backend_compare)."""
    from ragcli.errors import IndexNotFoundError, UsageError
    from ragcli.models import load_embedder, load_generator
    from ragcli.qa import write_beir_corpus
    from ragcli.retrieval import open_retriever
    from ragcli.targets import open_target, settings_target_class

    kind = settings_target_class(settings)
    if corpus and not kind.capabilities.scratch_copy:
        raise UsageError(f"bench never changes a remote index: drop --corpus and run "
                         f"`ragcli ingest --target {kind.kind} <paths>` first.")
    k = k or settings.top_k
    if compare_backend is not None:
        if compare_backend == settings.embed_backend:
            raise UsageError(f"--compare-backend {compare_backend} is the configured backend: compare against another "
                             f"one, e.g. --embed-backend onnx-int8 --compare-backend torch.")
        if not kind.capabilities.scratch_copy:
            raise UsageError(f"--compare-backend embeds the corpus with both backends; the {kind.kind} target's index "
                             f"has its own vectors: compare backends on the local target with --corpus.")
        if "dense" not in modes:
            raise UsageError("--compare-backend compares dense retrieval: include dense in --modes.")
    qa = qa or load_qa(qa_path)
    import datetime

    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report: dict[str, Any] = {"format": REPORT_FORMAT, "created": created, "ragcli_version": __version__,
                              "qa_file": str(qa_path),
                              "qa_shape": qa.shape, "questions": len(qa.rows), "k": k, "target": kind.kind,
                              "qa": {"rows": len(qa.rows), "with_answers": qa.with_answers,
                                     "with_evidence": qa.with_evidence, "graded": qa.graded}}
    timings: dict[str, Any] = {}
    t = time.perf_counter()
    if embedder is None and (any(m in ("dense", "hybrid") for m in modes) or corpus or qa.corpus):
        embedder = load_embedder(settings)
    timings["load_embedder_s"] = time.perf_counter() - t
    if embedder is not None and (corpus or qa.corpus):
        from ragcli.models import window_embedder_for

        t = time.perf_counter()  # loaded (and exported, the first time) outside the timed ingest, like the embedder
        if window_embedder_for(settings, embedder) is not embedder:
            timings["load_window_embedder_s"] = time.perf_counter() - t

    tmp_dir = tempfile.TemporaryDirectory(prefix="ragcli-bench-")
    try:
        if corpus is None and qa.corpus is not None and kind.capabilities.scratch_copy:
            folder = Path(tmp_dir.name) / "beir-corpus"
            write_beir_corpus(qa.corpus, folder)  # BEIR documents as files: their names are the sources
            corpus = [folder]
        if corpus is None and kind.capabilities.scratch_copy:
            try:
                open_target(settings).open()
            except IndexNotFoundError:  # nothing ingested yet: measure the QA file's own folder
                corpus = [qa_path.parent]
        if compare_backend is not None and not corpus:
            raise UsageError("--compare-backend ingests the documents with both backends: pass --corpus PATH (the "
                             "folder the index was built from).")
        if corpus:
            settings = kind.scratch_settings(settings, Path(tmp_dir.name) / "index")
            # A cold window cache, so the first ingest pays for every semantic window (ingest_over_encode).
            settings = settings.replace(window_cache=str(Path(tmp_dir.name) / "window-cache"))
            report["ingest"] = _bench_ingest(corpus, settings, embedder, progress=progress, speed=speed)
        retriever = open_retriever(settings, embedder, mode="dense" if embedder is not None else "bm25")
        info = retriever.info
        index_files = set(info.files)
        if index_files:
            unknown = [(r.where, s) for r in qa.rows for s in r.sources if s not in index_files]
            if unknown:
                where, src = unknown[0]
                raise QAFileError(f"{where}: source {src!r} is not a file of the index "
                                  f"({len(unknown)} such label(s)); sources are paths relative to the ingested folder.")
        report["index"] = {"generation": info.name, "chunks": info.chunks, "files": len(index_files),
                           "corpus_sha256": info.corpus_sha256, "splitter": info.splitter,
                           "index_type": info.index_type, "embed": info.embed}
        report["retrieval"] = {}
        hits_by_mode: dict[str, list[Any]] = {}
        for mode in modes:
            retriever.rerank_enabled = False  # scored without the reranker first
            report["retrieval"][mode], hits_by_mode[mode] = _bench_retrieval(qa.rows, retriever, mode, k, settings,
                                                                             progress)
            if settings.rerank_model:  # and again with it: "<mode>+rerank", its time the "rerank" stage
                retriever.rerank_enabled = True
                report["retrieval"][f"{mode}+rerank"], hits_by_mode[mode] = _bench_retrieval(
                    qa.rows, retriever, mode, k, settings, progress)
        retriever.rerank_enabled = True
        if compare_backend is not None:
            from ragcli.backend_compare import compare_backend as compare

            report["backends"] = compare(settings, report, baseline=compare_backend, qa=qa, qa_path=qa_path,
                                         corpus=corpus or [], chunk_texts=[c.text for c in retriever.target.chunks()],
                                         embedder=embedder, k=k, pairs=pairs, run=bench, timed_pairs=_timed_pairs,
                                         progress=progress)
        if speed and embedder is not None and "dense" in modes and retriever.target.capabilities.raw_search:
            report["retrieval_over_raw"] = _retrieval_ratio(qa.rows, retriever, embedder, k, pairs * 4)
        if answers and qa.with_answers:
            t = time.perf_counter()
            generator = load_generator(settings)
            timings["load_generator_s"] = time.perf_counter() - t
            report["answers"] = _bench_answers(qa.rows, retriever, generator, answer_mode, k, settings, progress,
                                               hits=hits_by_mode.get(answer_mode))
        elif answers:
            report["answers_skipped"] = "no row of the QA set has answers"
    finally:
        tmp_dir.cleanup()
    if startup:
        report["startup"] = _startup_ratio(pairs=max(3, pairs // 2))
    report["timings"] = timings
    report["memory"] = {"peak_rss_mb": _peak_rss_mb()}
    report["fingerprint"] = fingerprint(settings, qa, report, modes, answer_mode)
    report["metrics"] = flat_metrics(report)
    return report


def bench_targets(settings: Settings, targets: list[str], **kwargs: Any) -> dict[str, Any]:
    """The same benchmark on several targets (e.g. local and databricks), in one report.

    Each target's full report is under `targets`; the flat `metrics` are prefixed with the target
    name (`local.dense.mrr`, `databricks.dense.mrr`) so gates can name either side."""
    reports = {t: bench(settings.replace(target=t), **kwargs) for t in targets}
    first = reports[targets[0]]
    return {
        "format": REPORT_FORMAT, "created": first["created"], "ragcli_version": __version__,
        "qa_file": first["qa_file"],
        "questions": first["questions"], "k": first["k"], "targets": reports,
        "fingerprint": {**first["fingerprint"], "targets": targets},
        "metrics": {f"{t}.{name}": v for t, r in reports.items() for name, v in r["metrics"].items()},
    }


def _bench_ingest(corpus: list[Path], settings: Settings, embedder: Any, *,
                  progress: Progress | None, speed: bool = True) -> dict[str, Any]:
    from ragcli.ingest import ingest

    t = time.perf_counter()
    first = ingest(corpus, settings, rebuild=True, embedder=embedder, progress=progress)
    seconds = time.perf_counter() - t
    embedded_first = first.texts_embedded  # the splitter's window embedder included
    out: dict[str, Any] = {
        "files": len([f for f in first.files if f.status in ("added", "changed")]),
        "failed": len(first.failed),
        "chunks": first.chunks_total,
        "tokens": first.tokens,
        "seconds": seconds,
        "files_per_s": len(first.files) / seconds if seconds else None,
        "chunks_per_s": first.chunks_total / seconds if seconds else None,
        "tokens_per_s": first.tokens / seconds if seconds else None,
        "texts_embedded": embedded_first,
        "window_precision": first.window_precision,
        "resplit_chunks": first.resplit_chunks,
        "hard_cuts": first.hard_cuts,
    }
    if first.chunks_total:
        out["texts_embedded_over_chunks"] = embedded_first / first.chunks_total
    if not speed:
        return out
    # Baseline: one encode of the same final chunk texts with the same loaded model.
    from ragcli.targets import open_target

    texts = [c.text for c in open_target(settings).chunks()]
    t = time.perf_counter()
    if texts:
        embedder.embed_documents(texts)
    encode_s = time.perf_counter() - t
    t = time.perf_counter()
    again = ingest(corpus, settings, embedder=embedder)
    reingest_s = time.perf_counter() - t
    out.update({
        "encode_seconds": encode_s,
        "ingest_over_encode": seconds / encode_s if encode_s else None,
        "reingest_seconds": reingest_s,
        "reingest_over_ingest": reingest_s / seconds if seconds else None,
        "reingest_texts_embedded": again.texts_embedded,
    })
    return out


def _hit_row(hit: Any) -> dict[str, Any]:
    return {"rank": hit.rank, "chunk_id": hit.chunk_id, "source": hit.file, "position": hit.position,
            "score": float(hit.score)}


def _bench_retrieval(qa: list[QARow], retriever: Any, mode: str, k: int, settings: Settings,
                     progress: Progress | None) -> tuple[dict[str, Any], list[Any]]:
    """Scores and latencies of one mode, and the hits of every question (reused for the answers).

    Every row is scored (binary metrics on the set of relevant sources, nDCG on their grades);
    `evidence_hit` only on the rows that have evidence (`evidence_rows` says how many)."""
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
        relevant = set(row.relevance)
        scores = {"hit_rate": M.hit_rate_at_k(files, relevant, k), "recall": M.recall_at_k(files, relevant, k),
                  "mrr": M.mrr_at_k(files, relevant, k), "ndcg": M.ndcg_at_k(files, row.relevance, k)}
        if row.evidence:
            texts = [_norm(h.text) for h in hits]
            scores["evidence_hit"] = float(any(_norm(e) in t for e in row.evidence for t in texts))
        for key, v in scores.items():
            values[key].append(v)
        first = next((h.rank or i for i, h in enumerate(hits, 1) if h.file in relevant), None)
        per_q.append({"id": row.id, "question": row.question, "relevant": row.relevance,
                      "retrieved": files, "first_relevant_rank": first,
                      "hits": [_hit_row(h) for h in hits], **scores})
        if progress:
            progress(f"retrieve {mode}", n, len(qa))
    out: dict[str, Any] = {name: M.mean(v) for name, v in values.items() if v}
    out["evidence_rows"] = len(values["evidence_hit"])
    out["latency_ms"] = {stage: M.percentiles(s) for stage, s in stage_samples.items()}
    if mode == "hybrid":
        out["fusion"] = retriever.fusion_info(settings.fusion, settings.hybrid_alpha)  # what was applied
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


def _answer_row(completion: Any, row: QARow, kind: str) -> dict[str, Any]:
    """One answer's scores. `tokens`: tokens generated (a seq2seq output starts with the decoder's
    start token, which Completion.new_tokens counts); `cut`: the generator's own flag (it stopped at
    --max-new-tokens before the model's end token or a stop sequence)."""
    text = completion.text
    return {"text": text, "exact_match": M.exact_match(text, row.answers), "token_f1": M.token_f1(text, row.answers),
            "contained": M.answer_contained(text, row.answers),
            "token_recall": M.token_recall(text, row.answers),
            "tokens": completion.new_tokens - (1 if kind == "seq2seq" else 0),
            "prompt_tokens": completion.prompt_tokens, "cut": bool(completion.cut)}


def _bench_answers(qa: list[QARow], retriever: Any, generator: Any, mode: str, k: int, settings: Settings,
                   progress: Progress | None, hits: list[Any] | None = None) -> dict[str, Any]:
    """Answers with and without context on the rows that have reference answers (the others are skipped:
    nothing to score them against). An answer is `cut` when it used all of --max-new-tokens."""
    from ragcli.prompts import prompt_template as template_of
    from ragcli.query import bare_prompt, build_prompt

    names = ("exact_match", "token_f1", "contained", "token_recall", "cut")
    sides: dict[str, dict[str, list[float]]] = {"with_context": {n: [] for n in names},
                                                "without_context": {n: [] for n in names}}
    gen_ctx, gen_bare, per_q = [], [], []
    changed = left_out = truncated = 0
    limit = settings.max_new_tokens
    rows = [(n, row) for n, row in enumerate(qa) if row.answers]
    judge = None
    if settings.faithfulness_model:  # each answer's support by the prompt's passages
        from ragcli.judges import faithfulness, load_judge

        judge = load_judge(settings)
        judged_scores: dict[str, list[float]] = {"with_context": [], "without_context": []}
        judge_ms: list[float] = []
    for done, (n, row) in enumerate(rows, 1):
        row_hits = hits[n] if hits is not None else retriever.search(
            row.question, k, mode, fusion=settings.fusion, alpha=settings.hybrid_alpha)
        plan = build_prompt(row.question, row_hits, generator)
        left_out += plan.left_out
        truncated += int(plan.truncated)
        t = time.perf_counter()
        with_ctx = _answer_row(generator.generate(plan.prompt, limit), row, generator.kind)
        gen_ctx.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        without = _answer_row(generator.generate(bare_prompt(row.question, generator), limit), row, generator.kind)
        gen_bare.append((time.perf_counter() - t) * 1000)
        for side, result in (("with_context", with_ctx), ("without_context", without)):
            for name in names:
                sides[side][name].append(float(result[name]))
        flipped = M.normalize_answer(with_ctx["text"]) != M.normalize_answer(without["text"])
        changed += int(flipped)
        per_q.append({"id": row.id, "question": row.question, "answers": row.answers,
                      "sources": [_hit_row(h) for h in row_hits[:plan.used]], "passages_left_out": plan.left_out,
                      "prompt_truncated": plan.truncated, "with_context": with_ctx, "without_context": without,
                      "changed_by_context": flipped})
        if judge is not None:
            passages = [h.text for h in row_hits[: plan.used]]
            t = time.perf_counter()
            judged = {side: faithfulness(answer["text"], passages, judge) for side, answer in
                      (("with_context", with_ctx), ("without_context", without))}
            judge_ms.append((time.perf_counter() - t) * 1000)
            for side, value in judged.items():
                if value is not None:  # None: an empty answer or no passage
                    judged_scores[side].append(value)
            per_q[-1]["faithfulness"] = judged
        if progress:
            progress("answers", done, len(rows))
    means = {side: {name: M.mean(v) for name, v in values.items()} for side, values in sides.items()}
    for side in means.values():
        side["cut_rate"] = side.pop("cut")
    if judge is not None:
        for side, values in judged_scores.items():
            if values:
                means[side]["faithfulness"] = M.mean(values)
    return {
        "retrieval_mode": mode,
        "scored": len(rows),
        "skipped_without_answers": len(qa) - len(rows),
        "generator": generator.info(),
        "prompt_template": template_of(generator),
        "max_new_tokens": limit,
        **means,
        "changed_by_context": changed,
        "changed_by_context_rate": changed / len(rows),
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


def prompt_template(report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The prompt template the answers were generated with (ragcli.prompts, chosen by the generator's
    kind), recorded in the fingerprint; without answers, the seq2seq template."""
    used = ((report or {}).get("answers") or {}).get("prompt_template")
    if used:
        return {k: v for k, v in used.items() if k != "sha256"}
    from ragcli.prompts import prompt_template as template_of

    return {k: v for k, v in template_of(None).items() if k != "sha256"}


def qa_sha256(qa: QASet) -> str:
    """The QA file's SHA-256; for a set of several files (BEIR), the SHA-256 of their names and hashes."""
    import hashlib

    from ragcli.types import sha256_file

    if len(qa.files) == 1:
        return sha256_file(qa.files[0])
    h = hashlib.sha256()
    for f in qa.files:
        h.update(f"{f.name}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def fingerprint(settings: Settings, qa: QASet, report: dict[str, Any], modes: tuple[str, ...],
                answer_mode: str) -> dict[str, Any]:
    """Everything needed to reproduce the run (no secrets)."""
    import hashlib

    from ragcli.versions import library_versions

    index = report.get("index", {})
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:  # pragma: no cover
        threads = None
    templates = prompt_template(report)
    return {
        "embed_model": settings.embed_model,
        "embed_revision": (index.get("embed") or {}).get("revision"),
        "gen_model": settings.gen_model,
        "gen_revision": ((report.get("answers") or {}).get("generator") or {}).get("revision"),
        "prompt_template": {**templates, "sha256": hashlib.sha256(
            json.dumps(templates, sort_keys=True).encode()).hexdigest()},
        "splitter": index.get("splitter"),
        "retrieval": {"k": report["k"], "modes": list(modes), "fusion": settings.fusion, "alpha": settings.hybrid_alpha,
                      "fusion_applied": (report.get("retrieval", {}).get("hybrid") or {}).get("fusion"),
                      "answer_mode": answer_mode, "max_new_tokens": settings.max_new_tokens,
                      "rerank_model": settings.rerank_model, "rerank_depth": settings.rerank_depth,
                      "faithfulness_model": settings.faithfulness_model},
        "embed_backend": settings.embed_backend,
        "index_type": index.get("index_type"),
        "corpus_sha256": index.get("corpus_sha256"),
        "qa_sha256": qa_sha256(qa),
        "qa_shape": qa.shape,
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
        out["answers.changed_by_context_rate"] = a["changed_by_context_rate"]
        out["count.prompts_truncated"] = a["prompts_truncated"]
    if "backends" in report:
        from ragcli.backend_compare import flat

        out.update(flat(report["backends"]))
    ing = report.get("ingest")
    if ing:
        for name in ("ingest_over_encode", "reingest_over_ingest"):
            if ing.get(name) is not None:
                out[f"ratio.{name}"] = ing[name]
        if "reingest_texts_embedded" in ing:
            out["count.reingest_texts_embedded"] = ing["reingest_texts_embedded"]
    if "retrieval_over_raw" in report:
        out["ratio.retrieval_over_raw"] = report["retrieval_over_raw"]["median"]
    if "startup" in report:
        out["ratio.help_over_typer"] = report["startup"]["help_over_typer"]["median"]
    return out


def _bare_name(metric: str) -> str:
    """The metric's name without a target prefix (`local.dense.mrr` -> `dense.mrr`, from bench_targets)."""
    from ragcli.config import TARGETS

    head, _, rest = metric.partition(".")
    return rest if head in TARGETS and rest else metric


def metric_direction(metric: str) -> str:
    """"higher" (quality scores), "lower" (timings, counts, cut rates) or "none" (descriptive numbers
    such as how many answers context changed: neither more nor fewer is better)."""
    name = _bare_name(metric)
    if name in NO_DIRECTION:
        return "none"
    if name.startswith(LOWER_IS_BETTER_PREFIXES) or name.endswith(LOWER_IS_BETTER_SUFFIXES):
        return "lower"
    return "higher"


def lower_is_better(metric: str) -> bool:
    return metric_direction(metric) == "lower"


def is_timing(metric: str) -> bool:
    return _bare_name(metric).startswith(TIMING_PREFIXES)


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
            direction = metric_direction(name)
            if name not in metrics or direction == "none" or is_timing(name):
                continue  # timings are too noisy to compare across runs: gate them with --fail-over
            if direction == "higher" and metrics[name] < old - tolerance:
                failures.append(f"{name} = {metrics[name]} regressed from {old} (tolerance {tolerance})")
            elif direction == "lower" and metrics[name] > old + tolerance:
                failures.append(f"{name} = {metrics[name]} regressed from {old} (lower is better; "
                                f"tolerance {tolerance})")
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


def _answer_text(side: Any) -> str:
    return side if isinstance(side, str) else (side or {}).get("text", "")


def _answer_side(q: dict[str, Any], side: str) -> dict[str, Any]:
    value = q.get(side)
    data = {"text": value} if isinstance(value, str) else dict(value or {})
    data["sources"] = [h.get("source") for h in q.get("sources", [])]
    return data


def flipped_questions(report: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The questions whose outcome changed against `baseline`: per retrieval mode, those that went from
    a hit to a miss or back; for the answers, those whose context answer changed (both answers, their
    scores and the sources they were given). Questions are matched by id."""
    if "targets" in report:
        return {"targets": {name: flipped_questions(r, baseline.get("targets", {}).get(name, {}))
                            for name, r in report["targets"].items()}}
    out: dict[str, Any] = {"retrieval": {}, "answers": []}
    for mode, r in report.get("retrieval", {}).items():
        old = {q["id"]: q for q in baseline.get("retrieval", {}).get(mode, {}).get("per_question", [])}
        rows = []
        for q in r.get("per_question", []):
            o = old.get(q["id"])
            if o is None or "hit_rate" not in o or o["hit_rate"] == q["hit_rate"]:
                continue
            rows.append({"id": q["id"], "question": q.get("question") or o.get("question"),
                         "change": "miss->hit" if q["hit_rate"] > o["hit_rate"] else "hit->miss",
                         "relevant": q.get("relevant"),
                         "was": {"first_relevant_rank": o.get("first_relevant_rank"), "retrieved": o.get("retrieved", [])},
                         "now": {"first_relevant_rank": q.get("first_relevant_rank"), "retrieved": q.get("retrieved", [])}})
        out["retrieval"][mode] = rows
    old_answers = {q["id"]: q for q in (baseline.get("answers") or {}).get("per_question", [])}
    for q in (report.get("answers") or {}).get("per_question", []):
        o = old_answers.get(q["id"])
        if o is None:
            continue
        was, now = _answer_text(o.get("with_context")), _answer_text(q.get("with_context"))
        if M.normalize_answer(was) == M.normalize_answer(now):
            continue
        out["answers"].append({"id": q["id"], "question": q.get("question") or o.get("question"),
                               "answers": q.get("answers"),
                               "was": _answer_side(o, "with_context"), "now": _answer_side(q, "with_context")})
    return out


def count_flips(flips: dict[str, Any]) -> int:
    if "targets" in flips:
        return sum(count_flips(f) for f in flips["targets"].values())
    return sum(len(v) for v in flips.get("retrieval", {}).values()) + len(flips.get("answers", []))


def calibrate_fusion(settings: Settings, qa_path: Path) -> dict[str, Any]:
    """Pick the hybrid weight α for the configured index from the QA set's labelled questions and record
    it beside the index (ragcli.calibration), where `--fusion adaptive` finds it. Only where ragcli
    fuses hybrid itself on a local index (a service that fuses natively has no α to learn)."""
    from ragcli import calibration
    from ragcli.errors import UsageError
    from ragcli.retrieval import open_retriever
    from ragcli.targets import settings_target_class

    kind = settings_target_class(settings)
    if "hybrid" in kind.capabilities.modes or not kind.capabilities.scratch_copy:
        raise UsageError(f"--calibrate-fusion learns ragcli's own hybrid weight on a local index; the {kind.kind} "
                         "target fuses hybrid itself.")
    qa = load_qa(qa_path)
    rows = [r for r in qa.rows if r.sources]
    if not rows:
        raise QAFileError(f"{qa_path}: no question has a labelled source to measure the hybrid weight against.")
    retriever = open_retriever(settings, mode="hybrid")
    return calibration.calibrate(retriever, [(r.question, r.sources) for r in rows], qa_file=str(qa_path),
                                 index_dir=settings.index_dir)
