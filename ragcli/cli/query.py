"""`ragcli query`: answer a question with retrieved context, without it, or both side by side."""

from __future__ import annotations

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
    JsonOpt,
    ModelsDirOpt,
    ModeOpt,
    RerankDepthOpt,
    RerankOpt,
    TargetOpt,
    TopKOpt,
    check_choices,
    settings_from,
)

EPILOG = """Examples:

  ragcli query --context "How long are Delta Lake versions kept?"

  ragcli query --compare -k 6 "Which FAISS index does the team use?"

  ragcli query --context --mode hybrid --json "What is the p95 target?" | jq .with_context.text

  ragcli query --context --stream "What does the ingestion runbook say about retries?"
"""


def command(
    question: Annotated[str, typer.Argument(help="The question to answer.", show_default=False)],
    context: Annotated[bool, typer.Option("--context", "-c", help="Retrieve passages from the index and answer from them.")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="Answer with and without context, side by side.")] = False,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, max=4096, help="Longest answer in tokens. Default 64.", show_default=False)] = None,
    fusion: Annotated[str | None, typer.Option("--fusion", help="Hybrid mode: adaptive (weighted with the α bench measured, else rrf), rrf (reciprocal rank) or weighted (score mix with --alpha). Default adaptive. Example: --fusion weighted --alpha 0.3", show_default=False)] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", min=0.0, max=1.0, help="Weighted fusion: weight of the dense score (0..1). Default 0.5.", show_default=False)] = None,
    top_k: TopKOpt = None,
    mode: ModeOpt = None,
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
    json_out: JsonOpt = False,
    stream: Annotated[bool, typer.Option("--stream", help="Print the answer as it is generated, then the sources (not with --json).")] = False,
) -> None:
    """Answer a question, with retrieved context (--context), without it, or both (--compare)."""
    from ragcli.cli._output import print_json
    from ragcli.config import FUSIONS, INDEX_KINDS, MODES, TARGETS
    from ragcli.errors import UsageError
    from ragcli.query import answer

    if stream and json_out:
        raise UsageError("--stream prints the answer as it is generated and --json one object at the end: use one.")
    check_choices(("--mode", mode, MODES), ("--fusion", fusion, FUSIONS), ("--target", target, TARGETS), ("--index-kind", index_kind, INDEX_KINDS))
    settings = settings_from(databricks_host=databricks_host, databricks_endpoint=databricks_endpoint,
                             databricks_index=databricks_index, databricks_index_kind=index_kind, top_k=top_k, mode=mode, fusion=fusion, hybrid_alpha=alpha, max_new_tokens=max_new_tokens,
                             embed_model=embed_model, embed_backend=embed_backend,
                             rerank_model=rerank, rerank_depth=rerank_depth, faithfulness_model=faithfulness, gen_model=gen_model, models_dir=models_dir,
                             index_dir=index_dir, target=target)
    use_context = context or compare
    if stream:
        printer = _StreamPrinter(question, labels=compare)
        result = answer(question, settings, context=use_context, bare=compare or not context, on_token=printer)
        printer.finish(result)
        render_sources(result)
        return
    result = answer(question, settings, context=use_context, bare=compare or not context)
    if json_out:
        print_json(result.to_json())
        return
    render(result)


class _StreamPrinter:
    """`on_token` for `answer`: writes each piece to stdout as it arrives, literally (no markup)."""

    LABELS = {"with_context": "With context:", "without_context": "Without context:"}

    def __init__(self, question: str, labels: bool) -> None:
        import sys

        self.out = sys.stdout
        self.labels = labels
        self.seen: list[str] = []
        self.out.write(f"Q: {question}\n")

    def _start(self, which: str) -> None:
        if self.seen:
            self.out.write("\n")
        if self.labels:
            self.out.write(self.LABELS[which] + "\n")
        self.seen.append(which)

    def __call__(self, which: str, piece: str) -> None:
        if not self.seen or self.seen[-1] != which:
            self._start(which)
        self.out.write(piece)
        self.out.flush()

    def finish(self, result) -> None:  # QueryResult
        """Print the answers that produced no piece (no passage found, or an empty answer)."""
        for which in ("with_context", "without_context"):
            a = getattr(result, which)
            if a is not None and which not in self.seen:
                self._start(which)
                self.out.write(a.text or "(empty answer)")
        self.out.write("\n")
        for which in ("with_context", "without_context"):
            a = getattr(result, which)
            if a is not None and a.faithfulness is not None:
                label = "Faithfulness" if not self.labels else f"Faithfulness ({which.replace('_', ' ')})"
                self.out.write(f"{label}: {a.faithfulness:.2f}\n")
        self.out.flush()


def render(result) -> None:  # QueryResult; kept untyped so this module stays light
    from rich.columns import Columns
    from rich.markup import escape
    from rich.panel import Panel

    from ragcli.cli._output import out

    console = out()
    panels = []
    if result.with_context is not None:
        a = result.with_context
        note = f"{a.passages_used} passage(s) in the prompt"
        if a.passages_left_out:
            note += f", {a.passages_left_out} left out (generator input limit {result.prompt_limit} tokens)"
        if a.truncated:
            note += ", first passage shortened to fit"
        if a.cut:
            note += f", cut at {a.new_tokens} tokens (raise --max-new-tokens)"
        if a.faithfulness is not None:
            note += f", faithfulness {a.faithfulness:.2f}"
        panels.append(Panel(escape(a.text) or "(empty answer)", title="With context", subtitle=note, expand=True))
    if result.without_context is not None:
        b = result.without_context
        notes = []
        if b.cut:
            notes.append(f"cut at {b.new_tokens} tokens (raise --max-new-tokens)")
        if b.faithfulness is not None:
            notes.append(f"faithfulness {b.faithfulness:.2f}")
        panels.append(Panel(escape(b.text) or "(empty answer)", title="Without context", expand=True,
                            subtitle=", ".join(notes) or None))
    console.print(f"[bold]Q:[/] {escape(result.question)}", markup=True, highlight=False)
    console.print(Columns(panels, equal=True, expand=True) if len(panels) > 1 else panels[0])
    render_sources(result)


def render_sources(result) -> None:  # QueryResult
    from rich.markup import escape
    from rich.table import Table

    from ragcli.cli._output import out

    console = out()
    if result.with_context is not None:
        table = Table(title=f"Sources ({result.mode}, top {result.top_k})")
        table.add_column("#", justify="right")
        table.add_column("file")
        table.add_column("chunk", justify="right")
        table.add_column("score", justify="right")
        table.add_column("in prompt")
        table.add_column("text")
        used = result.with_context.passages_used
        for hit in result.sources:
            preview = " ".join(hit.text.split())
            preview = preview[:80] + ("…" if len(preview) > 80 else "")
            table.add_row(str(hit.rank), escape(hit.file), str(hit.position), f"{hit.score:.4f}",
                          "yes" if hit.rank <= used else "no", escape(preview))
        console.print(table)
