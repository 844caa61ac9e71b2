"""`ragcli bench`: measure retrieval quality, answer quality and speed; fail CI on regressions."""

from __future__ import annotations

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

  ragcli bench --baseline main-report.json --tolerance 0.02 --json report.json

Metric names (for --fail-under, --fail-over, --baseline): MODE.hit_rate|recall|mrr|ndcg|evidence_hit,
answers.context|bare.exact_match|token_f1|contained, ratio.ingest_over_encode|reingest_over_ingest|
retrieval_over_raw|help_over_typer, latency.MODE.p50_ms|p95_ms|p99_ms, count.reingest_texts_embedded.
Exit code 3 when a gate fails.
"""


def command(
    qa: Annotated[Path, typer.Option("--qa", help="QA file (JSON Lines: id, question, answers, sources, evidence).")] = Path("sample_docs/qa.jsonl"),
    corpus: Annotated[list[Path] | None, typer.Option("--corpus", help="Ingest these paths into a temporary index first and time it (repeatable). Without it the existing index is used; with no index, the QA file's folder.", show_default=False)] = None,
    modes: Annotated[str, typer.Option("--modes", help="Retrieval modes to score, comma-separated.")] = "dense,bm25,hybrid",
    answers: Annotated[bool, typer.Option("--answers/--no-answers", help="Also generate and score answers with and without context.")] = True,
    answer_mode: Annotated[str, typer.Option("--answer-mode", help="Retrieval mode used for the context answers.")] = "dense",
    pairs: Annotated[int, typer.Option("--pairs", min=1, max=100, help="Interleaved timing pairs for each speed ratio.")] = 5,
    startup: Annotated[bool, typer.Option("--startup/--no-startup", help="Measure `ragcli --help` start-up against a minimal Typer app.")] = True,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON to this file ('-' for stdout).", show_default=False)] = None,
    fail_under: Annotated[list[str] | None, typer.Option("--fail-under", help="METRIC=VALUE: fail (exit 3) if the metric is below VALUE. Repeatable.", show_default=False)] = None,
    fail_over: Annotated[list[str] | None, typer.Option("--fail-over", help="METRIC=VALUE: fail (exit 3) if a lower-is-better metric (ratio, latency) is above VALUE. Repeatable.", show_default=False)] = None,
    baseline: Annotated[Path | None, typer.Option("--baseline", help="A previous report: fail if any quality metric dropped by more than --tolerance.", show_default=False)] = None,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0.0, max=1.0, help="Allowed drop against --baseline.")] = 0.02,
    top_k: TopKOpt = None,
    embed_model: EmbedModelOpt = None,
    embed_backend: EmbedBackendOpt = None,
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

    from ragcli.bench import bench, bench_targets, check_gates, load_baseline, parse_threshold
    from ragcli.cli._output import err, print_json, progress_bar
    from ragcli.config import INDEX_KINDS, MODES, TARGETS, redact
    from ragcli.errors import ThresholdError, UsageError

    mode_list = tuple(m.strip() for m in modes.split(",") if m.strip())
    bad = [m for m in (*mode_list, answer_mode) if m not in MODES]
    if bad or not mode_list:
        raise UsageError(f"--modes/--answer-mode: {', '.join(bad) or '(none)'} not among {', '.join(MODES)}.")
    check_choices(("--target", target, TARGETS), ("--index-kind", index_kind, INDEX_KINDS))
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
                             index_dir=index_dir, target=target)
    with progress_bar(enabled=not quiet) as progress:
        options = dict(qa_path=qa, corpus=corpus, modes=mode_list, answers=answers, answer_mode=answer_mode,
                       pairs=pairs, startup=startup, progress=progress)
        report = bench_targets(settings, target_list, **options) if target_list else bench(settings, **options)
    base = load_baseline(baseline, report) if baseline else None
    failures = check_gates(report, fail_under=unders, fail_over=overs, baseline=base, tolerance=tolerance)
    report["gates"] = {"failed": failures, "passed": not failures}
    if json_path is not None:
        import json

        text = redact(json.dumps(report, indent=2, default=str))
        if str(json_path) == "-":
            print_json(json.loads(text))
        else:
            json_path.write_text(text + "\n", encoding="utf-8")
    if str(json_path) != "-":
        if "targets" in report:
            render_comparison(report)
        else:
            render(report)
    if failures:
        for line in failures:
            err().print(f"[red]FAILED[/] {escape(line)}", markup=True, highlight=False)
        raise ThresholdError(f"{len(failures)} bench gate(s) failed: {'; '.join(failures)}")


def render(report: dict) -> None:
    from rich.table import Table

    from ragcli.cli._output import out

    console = out()
    k = report["k"]
    table = Table(title=f"Retrieval on {report['questions']} questions (k={k})")
    for col in ("mode", f"hit@{k}", f"recall@{k}", f"MRR@{k}", f"nDCG@{k}", "evidence", "p50 ms", "p95 ms"):
        table.add_column(col, justify="right")
    for mode, r in report.get("retrieval", {}).items():
        lat = r.get("latency_ms", {}).get("total", {})
        table.add_row(mode, f"{r['hit_rate']:.3f}", f"{r['recall']:.3f}", f"{r['mrr']:.3f}", f"{r['ndcg']:.3f}",
                      f"{r.get('evidence_hit', float('nan')):.3f}", f"{lat.get('p50', 0):.2f}", f"{lat.get('p95', 0):.2f}")
    console.print(table)
    a = report.get("answers")
    if a:
        t2 = Table(title=f"Answers ({a['retrieval_mode']} context)")
        for col in ("", "exact match", "token F1", "contained", "generate p50 ms"):
            t2.add_column(col, justify="right")
        for side, key in (("with context", "with_context"), ("without context", "without_context")):
            s = a[key]
            lat = a["latency_ms"]["generate_context" if key == "with_context" else "generate_bare"]
            t2.add_row(side, f"{s['exact_match']:.3f}", f"{s['token_f1']:.3f}", f"{s['contained']:.3f}",
                       f"{lat.get('p50', 0):.1f}")
        console.print(t2)
        console.print(f"Answers changed by context: {a['changed_by_context']}/{report['questions']}; passages left "
                      f"out of prompts: {a['passages_left_out']}", highlight=False)
    t3 = Table(title="Speed (ratios against raw baselines in this run; lower is better)")
    for col in ("measure", "value", "detail"):
        t3.add_column(col)
    ing = report.get("ingest")
    if ing:
        t3.add_row("ingest_over_encode", str(ing["ingest_over_encode"]),
                   f"{ing['chunks']} chunks, {ing['seconds']} s, {ing['chunks_per_s']} chunks/s")
        t3.add_row("reingest_over_ingest", str(ing["reingest_over_ingest"]),
                   f"{ing['reingest_texts_embedded']} texts embedded on re-ingest")
    if "retrieval_over_raw" in report:
        r = report["retrieval_over_raw"]
        t3.add_row("retrieval_over_raw", str(r["median"]), f"IQR {r['iqr']}, {r['pairs']} pairs")
    if "startup" in report:
        r = report["startup"]["help_over_typer"]
        t3.add_row("help_over_typer", str(r["median"]), f"ragcli --help {r['seconds']} s")
    t3.add_row("peak memory", f"{report['memory']['peak_rss_mb']} MB", "")
    console.print(t3)


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
        table.add_row(metric, *(f"{report['targets'][n]['metrics'].get(metric, float('nan')):.3f}" for n in names))
    out().print(table)
