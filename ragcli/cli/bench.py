"""`ragcli bench`: measure retrieval quality, answer quality and speed; fail CI on regressions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ragcli.cli._options import (
    DatabricksEndpointOpt,
    DatabricksHostOpt,
    DatabricksIndexOpt,
    EmbedBackendOpt,
    EmbedModelOpt,
    FaithfulnessOpt,
    GenModelOpt,
    IndexDirOpt,
    IndexKindOpt,
    ModelsDirOpt,
    QuietOpt,
    RerankDepthOpt,
    RerankOpt,
    TargetOpt,
    TopKOpt,
    check_choices,
    settings_from,
)

EPILOG = """Examples:

  ragcli bench --json report.json

  ragcli bench --corpus sample_docs --modes dense,bm25 --no-answers

  ragcli bench --fail-under dense.hit_rate=0.6 --fail-under answers.context.token_f1=0.2

  ragcli bench --baseline main-report.json --tolerance 0.02 --json report.json --html report.html

  ragcli bench --qa beir/scifact --no-answers          (a BEIR folder: corpus.jsonl, queries.jsonl, qrels/)

  ragcli bench --qa questions.csv --fusion weighted --alpha 0.3 --max-new-tokens 48

  ragcli bench --corpus docs --no-answers --grid splitter=semantic,sentence --grid k=4,8 --grid alpha=0.3,0.7 --grid fusion=weighted --grid mode=hybrid

Metric names (for --fail-under, --fail-over, --baseline): MODE.hit_rate|recall|mrr|ndcg|evidence_hit,
answers.context|bare.exact_match|token_f1|contained|cut_rate, ratio.ingest_over_encode|reingest_over_ingest|
retrieval_over_raw|help_over_typer, latency.MODE.p50_ms|p95_ms|p99_ms, count.reingest_texts_embedded.
Exit code 3 when a gate fails.
"""


def command(
    qa: Annotated[Path, typer.Option("--qa", help="QA set: JSON Lines (question, sources; optional id, answers, evidence), a CSV with question/answer/source columns, or a BEIR folder (corpus.jsonl, queries.jsonl, qrels/*.tsv).")] = Path("sample_docs/qa.jsonl"),
    corpus: Annotated[list[Path] | None, typer.Option("--corpus", help="Ingest these paths into a temporary index first and time it (repeatable). Without it the existing index is used; with no index, the QA file's folder.", show_default=False)] = None,
    modes: Annotated[str, typer.Option("--modes", help="Retrieval modes to score, comma-separated.")] = "dense,bm25,hybrid",
    answers: Annotated[bool, typer.Option("--answers/--no-answers", help="Also generate and score answers with and without context.")] = True,
    answer_mode: Annotated[str, typer.Option("--answer-mode", help="Retrieval mode used for the context answers.")] = "dense",
    pairs: Annotated[int, typer.Option("--pairs", min=1, max=100, help="Interleaved timing pairs for each speed ratio.")] = 5,
    startup: Annotated[bool, typer.Option("--startup/--no-startup", help="Measure `ragcli --help` start-up against a minimal Typer app.")] = True,
    html_path: Annotated[Path | None, typer.Option("--html", help="Also write this run as a self-contained HTML page, e.g. --html report.html (the report extra).", show_default=False)] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON to this file ('-' for stdout).", show_default=False)] = None,
    fail_under: Annotated[list[str] | None, typer.Option("--fail-under", help="METRIC=VALUE: fail (exit 3) if the metric is below VALUE. Repeatable.", show_default=False)] = None,
    fail_over: Annotated[list[str] | None, typer.Option("--fail-over", help="METRIC=VALUE: fail (exit 3) if a lower-is-better metric (ratio, latency) is above VALUE. Repeatable.", show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="A previous report: fail if any quality metric dropped by more than --tolerance.", show_default=False)] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, max=1.0, help="Allowed drop against --baseline.")] = 0.02,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, max=4096, help="Most tokens per generated answer (RAGCLI_MAX_NEW_TOKENS); answers that use them all are reported as cut.", show_default=False)] = None,
    fusion: Annotated[str | None, typer.Option("--fusion", help="How hybrid fuses dense and BM25: rrf or weighted (RAGCLI_FUSION).", show_default=False)] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", min=0.0, max=1.0, help="Weight of dense in weighted fusion, e.g. --fusion weighted --alpha 0.3 (RAGCLI_HYBRID_ALPHA).", show_default=False)] = None,
    grid: Annotated[list[str] | None, typer.Option("--grid", help="KEY=V1,V2: run every combination (repeatable; keys splitter, chunk_size, buffer_size, breakpoint_percentile, k, mode, fusion, alpha, max_new_tokens) on one corpus and rank the arms, e.g. --grid k=4,8 --grid alpha=0.3,0.7.", show_default=False)] = None,
    calibrate_fusion: Annotated[bool, typer.Option("--calibrate-fusion", help="Measure the hybrid weight α on the QA file (hit@1 over α = 0…1 on the dense and BM25 top 50) and record it beside the local index (fusion.json), so --fusion adaptive, the default, uses it from then on; then exit. E.g. ragcli bench --calibrate-fusion --qa my-qa.jsonl.")] = False,
    rank_by: Annotated[str, typer.Option("--rank-by", help="Metric that ranks the --grid arms: a metric of the arm's mode (mrr, hit_rate, ndcg, recall) or a full name such as answers.context.contained.")] = "mrr",
    top_k: TopKOpt = None,
    embed_model: EmbedModelOpt = None,
    embed_backend: EmbedBackendOpt = None,
    compare_backend: Annotated[str | None, typer.Option("--compare-backend", help="Also run this embedding backend (torch, torch-bf16, onnx, onnx-int8) on the same corpus and texts and report both side by side: embedding time ratio on chunks and questions, cosine of their vectors, dense nDCG/MRR/hit-rate difference. Needs --corpus (or a BEIR QA set). E.g. --embed-backend onnx-int8 --compare-backend torch.", show_default=False)] = None,
    rerank: RerankOpt = None,
    rerank_depth: RerankDepthOpt = None,
    faithfulness: FaithfulnessOpt = None,
    gen_model: GenModelOpt = None,
    models_dir: ModelsDirOpt = None,
    index_dir: IndexDirOpt = None,
    target: TargetOpt = None,
    databricks_host: DatabricksHostOpt = None,
    databricks_endpoint: DatabricksEndpointOpt = None,
    databricks_index: DatabricksIndexOpt = None,
    index_kind: IndexKindOpt = None,
    targets: Annotated[str | None, typer.Option("--targets", help="Compare targets in one run, e.g. local,databricks: one report, metrics prefixed by target (local.dense.mrr).", show_default=False)] = None,
    quiet: QuietOpt = False,
) -> None:
    """Score retrieval (dense, bm25, hybrid) and answers (with/without context) on a QA file; time every stage."""
    from rich.markup import escape

    from ragcli.bench import (
        bench,
        bench_targets,
        check_gates,
        flipped_questions,
        load_baseline,
        parse_threshold,
    )
    from ragcli.cli._output import err, print_json, progress_bar
    from ragcli.config import EMBED_BACKENDS, FUSIONS, INDEX_KINDS, MODES, TARGETS, redact
    from ragcli.errors import ThresholdError, UsageError

    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    bad = [m for m in (*mode_list, answer_mode) if m not in MODES]
    if bad or not mode_list:
        raise UsageError(f"--modes/--answer-mode: {', '.join(bad) or '(none)'} not among {', '.join(MODES)}.")
    check_choices(("--target", target, TARGETS), ("--index-kind", index_kind, INDEX_KINDS), ("--fusion", fusion, FUSIONS),
                  ("--compare-backend", compare_backend, EMBED_BACKENDS))
    target_list = [t.strip() for t in (targets or "").split(",") if t.strip()]
    if targets is not None:
        if target is not None:
            raise UsageError("Pass either --target or --targets, not both.")
        if len(target_list) < 2 or len(set(target_list)) != len(target_list) or any(t not in TARGETS for t in target_list):
            raise UsageError(f"--targets takes two or more of: {', '.join(TARGETS)} (comma-separated).")
    unders = [parse_threshold(s) for s in fail_under or []]
    overs = [parse_threshold(s) for s in fail_over or []]
    settings = settings_from(databricks_host=databricks_host, databricks_endpoint=databricks_endpoint,
                             databricks_index=databricks_index, databricks_index_kind=index_kind, top_k=top_k, embed_model=embed_model, embed_backend=embed_backend,
                             rerank_model=rerank, rerank_depth=rerank_depth, faithfulness_model=faithfulness, gen_model=gen_model, models_dir=models_dir,
                             index_dir=index_dir, target=target,
                             max_new_tokens=max_new_tokens, fusion=fusion, hybrid_alpha=alpha)
    if calibrate_fusion:
        if grid or corpus or target_list or unders or overs or baseline is not None or compare_backend:
            raise UsageError("--calibrate-fusion measures the configured index only: drop --grid, --corpus, --targets "
                             "and the gates.")
        from ragcli.bench import calibrate_fusion as calibrate

        record = calibrate(settings, qa)
        if json_path is not None:
            import json as jsonlib

            json_path.write_text(jsonlib.dumps(record, indent=2) + "\n", encoding="utf-8")
        err().print(f"Recorded hybrid weight α = {record['alpha']:.1f} (dense; BM25 {1 - record['alpha']:.1f}) "
                    f"measured on {record['questions']} questions; --fusion adaptive uses it for this index.",
                    markup=False)
        return
    if grid:
        if compare_backend:
            raise UsageError("--compare-backend compares one configuration: run it without --grid.")
        if target_list or unders or overs or baseline is not None:
            raise UsageError("--grid ranks arms; gates (--fail-under, --fail-over, --baseline) and --targets apply to "
                             "a single run: run bench again with the winning settings to gate on it.")
        _run_grid(settings, grid, qa=qa, corpus=corpus, modes=mode_list, answers=answers, answer_mode=answer_mode,
                  rank_by=rank_by, json_path=json_path, quiet=quiet)
        return
    with progress_bar(enabled=not quiet) as progress:
        options = dict(qa_path=qa, corpus=corpus, modes=mode_list, answers=answers, answer_mode=answer_mode,
                       pairs=pairs, startup=startup, progress=progress, compare_backend=compare_backend)
        report = bench_targets(settings, target_list, **options) if target_list else bench(settings, **options)
    base = load_baseline(baseline, report) if baseline else None
    failures = check_gates(report, fail_under=unders, fail_over=overs, baseline=base, tolerance=tolerance)
    if base is not None:
        report["flips"] = flipped_questions(report, base)
        report["baseline_file"] = str(baseline)
    report["gates"] = {"failed": failures, "passed": not failures, "fail_under": dict(unders),
                       "fail_over": dict(overs), "tolerance": tolerance if base is not None else None}

    text = redact(json.dumps(report, indent=2, default=str))
    if json_path is not None:
        if str(json_path) == "-":
            print_json(json.loads(text))
        else:
            json_path.write_text(text + "\n", encoding="utf-8")
    if str(json_path) != "-":
        if "targets" in report:
            render_comparison(report)
        else:
            render(report)
        if "flips" in report:
            render_flips(report["flips"])
    if html_path is not None:
        from ragcli.report import write_html

        write_html([(json_path.stem if json_path and str(json_path) != "-" else "this run", json.loads(text))],
                   html_path)
    if failures:
        for line in failures:
            err().print(f"[red]FAILED[/] {escape(line)}", markup=True, highlight=False)
        raise ThresholdError(f"{len(failures)} bench gate(s) failed: {'; '.join(failures)}")


def _run_grid(settings, specs: list[str], *, qa: Path, corpus, modes, answers: bool, answer_mode: str,
              rank_by: str, json_path: Path | None, quiet: bool) -> None:

    from ragcli.cli._output import print_json, progress_bar
    from ragcli.config import redact
    from ragcli.grid import parse_grid, run_grid

    grid = parse_grid(specs)
    with progress_bar(enabled=not quiet) as progress:
        report = run_grid(settings, grid, qa_path=qa, corpus=corpus, modes=modes, answers=answers,
                          answer_mode=answer_mode, rank_by=rank_by, progress=progress)
    text = redact(json.dumps(report, indent=2, default=str))
    if json_path is not None and str(json_path) == "-":
        print_json(json.loads(text))
        return
    if json_path is not None:
        json_path.write_text(text + "\n", encoding="utf-8")
    render_grid(report)


def render_grid(report: dict) -> None:
    """The arms of a --grid run, best first."""
    from rich.table import Table

    from ragcli.cli._output import out

    keys = list(report["grid"])
    table = Table(title=f"Grid: {len(report['arms'])} arms on {report['questions']} questions, ranked by "
                        f"{report['rank_by']}")
    for col in ("rank", *keys, "mode", report["rank_by"], "hit", "MRR", "nDCG", "chunks"):
        table.add_column(col, justify="right")
    for arm in report["arms"]:
        r = arm["report"]
        m = r["metrics"]
        mode = arm["mode"]
        table.add_row(str(arm["rank"]), *(str(arm["params"][k]) for k in keys), mode, _num(arm["score"]),
                      _num(m.get(f"{mode}.hit_rate")), _num(m.get(f"{mode}.mrr")), _num(m.get(f"{mode}.ndcg")),
                      str(r.get("index", {}).get("chunks", "–")))
    out().print(table)
    built = report["indexes"]
    if built:
        out().print(f"{len(built)} index(es) built; {sum(i['texts_embedded'] for i in built)} chunk texts embedded, "
                    f"{report['embedding_cache']['reused']} vectors reused from the cache", highlight=False)


def _num(value: object, digits: int = 3) -> str:
    """A number for the terminal (the JSON keeps it unrounded); "–" where nothing was measured."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "–"
    return f"{value:.{digits}f}"


def render(report: dict) -> None:
    from rich.table import Table

    from ragcli.cli._output import out

    console = out()
    k = report["k"]
    qa = report.get("qa", {})
    graded = " graded" if qa.get("graded") else ""
    table = Table(title=f"Retrieval on {report['questions']} questions (k={k}{graded})")
    for col in ("mode", f"hit@{k}", f"recall@{k}", f"MRR@{k}", f"nDCG@{k}", "evidence", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for mode, r in report.get("retrieval", {}).items():
        lat = r.get("latency_ms", {}).get("total", {})
        table.add_row(mode, _num(r["hit_rate"]), _num(r["recall"]), _num(r["mrr"]), _num(r["ndcg"]),
                      _num(r.get("evidence_hit")), _num(lat.get("p50"), 2), _num(lat.get("p95"), 2))
    console.print(table)
    fusion = (report.get("retrieval", {}).get("hybrid") or {}).get("fusion") or {}
    if fusion.get("fusion") == "adaptive" and fusion.get("applied") == "rrf":
        console.print("hybrid: no fusion weight is recorded for this index, so it used equal-weight RRF, which can "
                      "fall well below the better single mode; `ragcli bench --calibrate-fusion --qa FILE` "
                      "records one", highlight=False)
    if qa and qa.get("with_evidence", 0) < report["questions"]:
        console.print(f"evidence: scored on the {qa.get('with_evidence', 0)} question(s) that have evidence",
                      highlight=False)
    a = report.get("answers")
    if a:
        t2 = Table(title=f"Answers on {a['scored']} of {report['questions']} questions (those with reference "
                         f"answers; {a['retrieval_mode']} context)")
        for col in ("", "exact match", "token F1", "contained", "cut", "generate p50 ms"):
            t2.add_column(col, justify="right")
        for side, key in (("with context", "with_context"), ("without context", "without_context")):
            s = a[key]
            lat = a["latency_ms"]["generate_context" if key == "with_context" else "generate_bare"]
            t2.add_row(side, _num(s["exact_match"]), _num(s["token_f1"]), _num(s["contained"]),
                       _num(s.get("cut_rate")), _num(lat.get("p50"), 1))
        console.print(t2)
        console.print(f"Answers changed by context: {a['changed_by_context']}/{a['scored']}; passages left "
                      f"out of prompts: {a['passages_left_out']}; cut at {a.get('max_new_tokens')} new tokens: "
                      f"{sum(q['with_context']['cut'] for q in a['per_question'])} with context", highlight=False)
    elif report.get("answers_skipped"):
        console.print(f"Answers not scored: {report['answers_skipped']}.", highlight=False)
    t3 = Table(title="Speed (ratios against raw baselines in this run; lower is better)")
    for col in ("measure", "value", "detail"):
        t3.add_column(col)
    ing = report.get("ingest")
    if ing and "ingest_over_encode" in ing:
        t3.add_row("ingest_over_encode", _num(ing["ingest_over_encode"]),
                   f"{ing['chunks']} chunks, {_num(ing['seconds'], 2)} s, {_num(ing['chunks_per_s'], 1)} chunks/s")
        t3.add_row("reingest_over_ingest", _num(ing["reingest_over_ingest"]),
                   f"{ing['reingest_texts_embedded']} texts embedded on re-ingest")
    if "retrieval_over_raw" in report:
        r = report["retrieval_over_raw"]
        t3.add_row("retrieval_over_raw", _num(r["median"]),
                   f"IQR [{_num(r['iqr'][0])}, {_num(r['iqr'][1])}], {r['pairs']} pairs")
    if "startup" in report:
        r = report["startup"]["help_over_typer"]
        t3.add_row("help_over_typer", _num(r["median"]), f"ragcli --help {_num(r['seconds'])} s")
    t3.add_row("peak memory", f"{_num(report['memory']['peak_rss_mb'], 1)} MB", "")
    console.print(t3)
    if "backends" in report:
        render_backends(report["backends"], k)


def render_backends(b: dict, k: int) -> None:
    """`--compare-backend`: the configured embedding backend and the baseline side by side."""
    from rich.table import Table

    from ragcli.cli._output import out

    table = Table(title=f"Embedding backend {b['configured']} against {b['baseline']} (same corpus, texts and questions)")
    for col in ("measure", b["configured"], b["baseline"], "configured / baseline or difference"):
        table.add_column(col, justify="right")
    for name, s in b.get("speed", {}).items():
        table.add_row(f"{name} per s ({s['texts']}, ~{s['mean_chars']:.0f} chars)", _num(s["texts_per_s"], 1),
                      _num(s["baseline_texts_per_s"], 1), f"time × {_num(s['time_ratio'], 3)}")
    for score, label in (("ndcg", f"dense nDCG@{k}"), ("mrr", f"dense MRR@{k}"), ("hit_rate", f"dense hit@{k}")):
        mine, theirs = b["dense"]["configured"].get(score), b["dense"]["baseline"].get(score)
        if mine is not None and theirs is not None:
            table.add_row(label, _num(mine), _num(theirs), f"{b['dense']['delta'][score]:+.4f}")
    if "cosine" in b:
        table.add_row("cosine of vectors", "", "", f"min {_num(b['cosine']['min'])}, mean {_num(b['cosine']['mean'])}")
    out().print(table)


def render_flips(flips: dict, title: str = "") -> None:
    """The questions that changed against --baseline (hit <-> miss per mode, changed context answers)."""
    from rich.table import Table

    from ragcli.cli._output import out

    if "targets" in flips:
        for name, f in flips["targets"].items():
            render_flips(f, title=f"{name}: ")
        return
    console = out()
    rows = [(mode, f) for mode, fs in flips.get("retrieval", {}).items() for f in fs]
    if not rows and not flips.get("answers"):
        console.print(f"{title}No question flipped against the baseline.", highlight=False)
        return
    if rows:
        table = Table(title=f"{title}Retrieval flips against the baseline ({len(rows)})")
        for col in ("mode", "id", "change", "question", "rank was -> now"):
            table.add_column(col)
        for mode, f in rows:
            table.add_row(mode, f["id"], f["change"], f["question"] or "",
                          f"{f['was']['first_relevant_rank'] or '–'} -> {f['now']['first_relevant_rank'] or '–'}")
        console.print(table)
    if flips.get("answers"):
        table = Table(title=f"{title}Context answers changed against the baseline ({len(flips['answers'])})")
        for col in ("id", "question", "was", "now", "F1 was -> now"):
            table.add_column(col)
        for f in flips["answers"]:
            table.add_row(f["id"], f["question"] or "", f["was"].get("text", ""), f["now"].get("text", ""),
                          f"{_num(f['was'].get('token_f1'))} -> {_num(f['now'].get('token_f1'))}")
        console.print(table)


def render_comparison(report: dict) -> None:
    """Each target's report, then their retrieval and answer metrics side by side."""
    from rich.table import Table

    from ragcli.cli._output import out

    names = list(report["targets"])
    for name, r in report["targets"].items():
        out().print(f"[bold]Target: {name}[/]", markup=True)
        render(r)
    table = Table(title=f"Targets side by side ({report['questions']} questions, k={report['k']})")
    table.add_column("metric")
    for name in names:
        table.add_column(name, justify="right")
    first = report["targets"][names[0]]["metrics"]
    for metric in first:
        if metric.startswith(("latency.", "ratio.", "count.")):
            continue
        table.add_row(metric, *(_num(report["targets"][n]["metrics"].get(metric)) for n in names))
    out().print(table)
