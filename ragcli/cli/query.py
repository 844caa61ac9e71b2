"""`ragcli query`: answer a question with retrieved context, without it, or both side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from ragcli.cli._options import (
    DatabricksEndpointOpt,
    DatabricksHostOpt,
    DatabricksIndexOpt,
    EmbedModelOpt,
    GenModelOpt,
    IndexDirOpt,
    JsonOpt,
    ModelsDirOpt,
    ModeOpt,
    TargetOpt,
    TopKOpt,
    check_choices,
    settings_from,
)

EPILOG = """Examples:

  ragcli query --context "How long are Delta Lake versions kept?"

  ragcli query --compare -k 6 "Which FAISS index does the team use?"

  ragcli query --context --mode hybrid --json "What is the p95 target?" | jq .with_context.text
"""


def command(
    question: Annotated[str, typer.Argument(help="The question to answer.", show_default=False)],
    context: Annotated[bool, typer.Option("--context", "-c", help="Retrieve passages from the index and answer from them.")] = False,
    compare: Annotated[bool, typer.Option("--compare", help="Answer with and without context, side by side.")] = False,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, max=4096, help="Longest answer in tokens. Default 64.", show_default=False)] = None,
    fusion: Annotated[str | None, typer.Option("--fusion", help="Hybrid mode: rrf (reciprocal rank) or weighted (score mix).", show_default=False)] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", min=0.0, max=1.0, help="Weighted fusion: weight of the dense score (0..1). Default 0.5.", show_default=False)] = None,
    top_k: TopKOpt = None,
    mode: ModeOpt = None,
    embed_model: EmbedModelOpt = None,
    gen_model: GenModelOpt = None,
    models_dir: ModelsDirOpt = None,
    index_dir: IndexDirOpt = None,
    target: TargetOpt = None,
    databricks_host: DatabricksHostOpt = None,
    databricks_endpoint: DatabricksEndpointOpt = None,
    databricks_index: DatabricksIndexOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Answer a question, with retrieved context (--context), without it, or both (--compare)."""
    from ragcli.cli._output import print_json
    from ragcli.config import FUSIONS, MODES, TARGETS
    from ragcli.query import answer

    check_choices(("--mode", mode, MODES), ("--fusion", fusion, FUSIONS), ("--target", target, TARGETS))
    settings = settings_from(databricks_host=databricks_host, databricks_endpoint=databricks_endpoint,
                             databricks_index=databricks_index, top_k=top_k, mode=mode, fusion=fusion, hybrid_alpha=alpha, max_new_tokens=max_new_tokens,
                             embed_model=embed_model, gen_model=gen_model, models_dir=models_dir,
                             index_dir=index_dir, target=target)
    use_context = context or compare
    result = answer(question, settings, context=use_context, bare=compare or not context)
    if json_out:
        print_json(result.to_json())
        return
    render(result)


def render(result) -> None:  # QueryResult; kept untyped so this module stays light
    from rich.columns import Columns
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

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
        panels.append(Panel(escape(a.text) or "(empty answer)", title="With context", subtitle=note, expand=True))
    if result.without_context is not None:
        panels.append(Panel(escape(result.without_context.text) or "(empty answer)", title="Without context",
                            expand=True))
    console.print(f"[bold]Q:[/] {escape(result.question)}", markup=True, highlight=False)
    console.print(Columns(panels, equal=True, expand=True) if len(panels) > 1 else panels[0])
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
