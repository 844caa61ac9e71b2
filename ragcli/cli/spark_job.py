"""`ragcli spark-job`: ingest a folder (a Unity Catalog volume) with Spark into the table behind a Delta
Sync index. What a Databricks Job runs (README: "Spark ingest")."""

from __future__ import annotations

from typing import Annotated

import typer

from ragcli.cli._options import EmbedModelOpt, JsonOpt, ModelsDirOpt, check_choices, settings_from

EPILOG = """Examples:

  ragcli spark-job /Volumes/main/rag/docs --output main.rag.chunks

  ragcli spark-job docs/ --output /tmp/chunks.parquet --format parquet --master 'local[2]' --json
"""


def command(
    source: Annotated[str, typer.Argument(help="Folder of .md/.docx files (searched recursively), e.g. /Volumes/main/rag/docs.", show_default=False)],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Table catalog.schema.table, or a path. Default: RAGCLI_DATABRICKS_TABLE.", show_default=False)] = None,
    fmt: Annotated[str, typer.Option("--format", help="delta (MERGE by id into a Delta table with change data feed) or parquet (rewrite the whole content).")] = "delta",
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Ignore what the output holds: split and embed every file again.")] = False,
    splitter: Annotated[str | None, typer.Option("--splitter", help="semantic or sentence. Env: RAGCLI_SPLITTER.", show_default=False)] = None,
    max_chunk_tokens: Annotated[int | None, typer.Option("--max-chunk-tokens", min=16, help="Hard cap on a chunk's length in embedding-model tokens. Default 256.", show_default=False)] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, help="Texts per embedding batch. Default 32.", show_default=False)] = None,
    encoding: Annotated[str | None, typer.Option("--encoding", help="Decode Markdown that is not UTF-8 with this encoding.", show_default=False)] = None,
    master: Annotated[str | None, typer.Option("--master", help="Spark master for a session ragcli starts itself (e.g. local[4]); ignored when a session exists, as in a Databricks job.", show_default=False)] = None,
    embed_model: EmbedModelOpt = None,
    models_dir: ModelsDirOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Chunk and embed a folder with Spark into a Delta (or Parquet) table, incrementally."""
    from rich.markup import escape

    from ragcli.cli._output import err, out, print_json, warn
    from ragcli.config import SPLITTERS
    from ragcli.errors import UsageError
    from ragcli.spark import FORMATS, ingest_folder

    check_choices(("--splitter", splitter, SPLITTERS), ("--format", fmt, FORMATS))
    settings = settings_from(splitter=splitter, max_chunk_tokens=max_chunk_tokens, embed_batch_size=batch_size,
                             embed_model=embed_model, models_dir=models_dir)
    target = output or settings.databricks_table
    if not target:
        raise UsageError("Name the output: --output catalog.schema.table (or a path), or set RAGCLI_DATABRICKS_TABLE.")
    spark, started = _session(master)
    try:
        report = ingest_folder(spark, source, settings, target=target, fmt=fmt, rebuild=rebuild, encoding=encoding)
    finally:
        if started:
            spark.stop()
    if json_out:
        print_json(report.to_json())
    else:
        for problem in report.problems:
            if problem["status"] == "failed":
                err().print(f"[red]Failed:[/] {escape(problem['file'])}: {escape(problem['reason'])}", markup=True,
                            highlight=False)
            else:
                warn(f"skipped {problem['file']}: {problem['reason']}")
        counts = ", ".join(f"{n} {k}" for k, n in report.files.items() if n) or "none found"
        out().print(f"Files: {counts}.", highlight=False)
        out().print(f"Chunks: {report.chunks_total} ({report.chunks_embedded} embedded, {report.chunks_reused} "
                    f"reused) in {escape(report.target)} ({report.format}); {report.seconds:.1f} s.", highlight=False)
    if report.files.get("failed"):
        err().print(f"[red]Error:[/] {report.files['failed']} file(s) failed; the others were written.", markup=True)
        raise typer.Exit(1)


def _session(master: str | None) -> tuple[object, bool]:
    """The active Spark session (a Databricks job has one), else a new one; and whether ragcli started it."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        from ragcli.errors import BackendUnavailableError
        from ragcli.spark import INSTALL_HINT

        raise BackendUnavailableError(INSTALL_HINT) from None
    active = SparkSession.getActiveSession()
    if active is not None:
        return active, False
    builder = SparkSession.builder.appName("ragcli spark-job")
    if master:
        builder = builder.master(master)
    return builder.getOrCreate(), True
