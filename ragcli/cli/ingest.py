"""`ragcli ingest`: turn .md and .docx files into the index."""

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
    IndexDirOpt,
    IndexKindOpt,
    JsonOpt,
    ModelsDirOpt,
    QuietOpt,
    TargetOpt,
    check_choices,
    settings_from,
)

EPILOG = """Examples:

  ragcli ingest sample_docs

  ragcli ingest notes/ handbook.docx --splitter sentence --max-chunk-tokens 200

  ragcli ingest sample_docs --rebuild --json > ingest.json
"""


def command(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders (searched recursively) to ingest.", show_default=False)],
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Start a fresh index instead of updating the current one.")] = False,
    splitter: Annotated[str | None, typer.Option("--splitter", help="semantic (embedding-based breakpoints) or sentence (fixed size). Env: RAGCLI_SPLITTER.", show_default=False)] = None,
    buffer_size: Annotated[int | None, typer.Option("--buffer-size", min=0, max=10, help="Semantic splitter: sentences on each side compared at a breakpoint. Default 1.", show_default=False)] = None,
    breakpoint_percentile: Annotated[float | None, typer.Option("--breakpoint-percentile", min=1, max=100, help="Semantic splitter: distance percentile that starts a new chunk. Default 95.", show_default=False)] = None,
    semantic_vectors: Annotated[str | None, typer.Option("--semantic-vectors", help="Semantic splitter: window (embed each sentence window, as llama-index does), pooled (embed each sentence once and average windows) or late (read each document once, pool its token vectors per window: about one encode of the text). Example: --semantic-vectors late. Env: RAGCLI_SEMANTIC_VECTORS.", show_default=False)] = None,
    window_precision: Annotated[str | None, typer.Option("--window-precision", help="Semantic splitter: precision of the window vectors, which only place the breakpoints (the chunks are always embedded by the embedding backend): auto (bf16 where the CPU has native bf16 and the backend is torch, else same), same, bf16 or int8 (the model's int8 ONNX copy). Example: --window-precision same. Env: RAGCLI_WINDOW_PRECISION.", show_default=False)] = None,
    max_chunk_tokens: Annotated[int | None, typer.Option("--max-chunk-tokens", min=16, help="Hard cap on a chunk's length in embedding-model tokens (longer chunks are split again, never truncated). Default 256.", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Texts per embedding batch. Default 32.", show_default=False)] = None,
    index_type: Annotated[str | None, typer.Option("--index-type", help="flat (exact), ivf or hnsw (approximate, for large corpora), or auto (flat up to 100,000 chunks, ivf above; decided again at every ingest). Default: the index's current type; flat for a new index.", show_default=False)] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Decode Markdown files that are not UTF-8 with this encoding (e.g. latin-1).", show_default=False)] = None,
    wait: Annotated[bool, typer.Option("--wait", help="If another ingest holds the index, wait for it instead of failing.")] = False,
    embed_model: EmbedModelOpt = None,
    embed_backend: EmbedBackendOpt = None,
    models_dir: ModelsDirOpt = None,
    index_dir: IndexDirOpt = None,
    target: TargetOpt = None,
    databricks_host: DatabricksHostOpt = None,
    databricks_endpoint: DatabricksEndpointOpt = None,
    databricks_index: DatabricksIndexOpt = None,
    index_kind: IndexKindOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Split, embed and index .md/.docx files (incremental; unchanged files are not re-embedded)."""
    from rich.markup import escape

    from ragcli.cli._output import err, out, print_json, progress_bar, warn
    from ragcli.config import (
        INDEX_KINDS,
        INDEX_TYPES,
        SEMANTIC_VECTORS,
        SPLITTERS,
        TARGETS,
        WINDOW_PRECISIONS,
    )
    from ragcli.errors import UsageError
    from ragcli.ingest import ingest

    check_choices(("--splitter", splitter, SPLITTERS), ("--index-type", index_type, INDEX_TYPES),
                  ("--semantic-vectors", semantic_vectors, SEMANTIC_VECTORS), ("--target", target, TARGETS), ("--index-kind", index_kind, INDEX_KINDS),
                  ("--window-precision", window_precision, WINDOW_PRECISIONS))
    if encoding is not None:
        import codecs

        try:
            codecs.lookup(encoding)
        except LookupError:
            raise UsageError(f"--encoding {encoding!r} is not an encoding Python knows (try latin-1 or cp1252).") from None
    settings = settings_from(semantic_vectors=semantic_vectors, window_precision=window_precision, databricks_host=databricks_host, databricks_endpoint=databricks_endpoint,
                             databricks_index=databricks_index, databricks_index_kind=index_kind, splitter=splitter, buffer_size=buffer_size, breakpoint_percentile=breakpoint_percentile,
                             max_chunk_tokens=max_chunk_tokens, embed_batch_size=batch_size, index_type=index_type,
                             embed_model=embed_model, embed_backend=embed_backend, models_dir=models_dir, index_dir=index_dir, target=target)
    with progress_bar(enabled=not quiet and not json_out) as progress:
        report = ingest(paths, settings, rebuild=rebuild, wait=wait, encoding=encoding, progress=progress)
    if json_out:
        print_json(report.to_json())
    else:
        from rich.table import Table

        for f in report.files:
            if f.status == "failed":
                err().print(f"[red]Failed:[/] {escape(f.file)}: {escape(str(f.reason))}", markup=True, highlight=False)
            elif f.status == "skipped":
                warn(f"skipped {f.file}: {f.reason}")
        s = report.summary()
        table = Table(title=f"Ingest into {escape(report.index)}", show_header=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        table.add_column()
        files = len([f for f in report.files if f.status != "removed"])
        counts = [f"{s[k]} {k}" for k in ("added", "changed", "unchanged", "removed", "failed", "skipped") if s[k]]
        table.add_row("files", str(files), ", ".join(counts) or "none found")
        table.add_row("chunks", str(report.chunks_total),
                      f"{report.chunks_embedded} embedded, {report.chunks_reused} reused, {report.tokens} tokens")
        table.add_row("time", f"{report.seconds:.2f} s", "")
        out().print(table)
        state = f"published {report.generation}" if report.published else f"unchanged, still {report.generation}"
        out().print(f"Index {state}; embedding model {report.embed_model}.", highlight=False)
    if report.failed:
        err().print(f"[red]Error:[/] {len(report.failed)} file(s) failed; the others were indexed.", markup=True)
        raise typer.Exit(1)
