"""`ragcli status` and `ragcli index verify|rollback`: what is in the index and the models folder."""

from __future__ import annotations

from typing import Annotated

import typer

from ragcli.cli._options import (
    IndexDirOpt,
    IndexKindOpt,
    JsonOpt,
    ModelsDirOpt,
    TargetOpt,
    check_choices,
    settings_from,
)

EPILOG = """Examples:

  ragcli status

  ragcli status --verify --json

  ragcli status --target databricks --index-kind delta-sync --json
"""

index_app = typer.Typer(help="Check or repair the local index.", no_args_is_help=True)


def command(
    verify: Annotated[bool, typer.Option("--verify", help="Also check every index file against its checksum.")] = False,
    index_dir: IndexDirOpt = None,
    models_dir: ModelsDirOpt = None,
    target: TargetOpt = None,
    index_kind: IndexKindOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Show the index (generation, files, chunks, model, size, last ingest) and the downloaded models."""
    from rich.markup import escape
    from rich.table import Table

    from ragcli.cli._output import out, print_json
    from ragcli.config import INDEX_KINDS, TARGETS
    from ragcli.errors import IndexCorruptedError
    from ragcli.status import REMOTE_DETAILS, index_summary

    check_choices(("--target", target, TARGETS), ("--index-kind", index_kind, INDEX_KINDS))
    settings = settings_from(index_dir=index_dir, models_dir=models_dir, target=target, databricks_index_kind=index_kind)
    data = index_summary(settings, verify)
    if json_out:
        print_json(data)
    else:
        console = out()
        idx = data["index"]
        if not idx["exists"]:
            console.print(f"No index in {idx['index_dir']}. Run: ragcli ingest <paths>", highlight=False)
        elif not idx.get("ok"):
            console.print(f"[red]{escape(idx['error'])}[/]", markup=True, highlight=False)
        else:
            table = Table(title=f"Index {idx['index_dir']}", show_header=False)
            for key in ("generation", "files", "chunks", "embed_model", "dimension", "index_type", "size_bytes",
                        "last_ingest"):
                table.add_row(key.replace("_", " "), str(idx[key]))
            for key in REMOTE_DETAILS:
                if key in idx:
                    table.add_row(key.replace("_", " "), escape(str(idx[key])))
            table.add_row("splitter", ", ".join(f"{k}={v}" for k, v in idx["splitter"].items()))
            console.print(table)
        if data["models"]:
            models = Table(title=f"Models in {data['models_dir']}")
            for col in ("model", "revision", "files", "MB", "role"):
                models.add_column(col)
            configured = data["configured"]
            for name, m in data["models"].items():
                role = {configured["embed_model"]: "embedding", configured["gen_model"]: "generator"}.get(name, "")
                models.add_row(escape(name), str(m["revision"])[:12], str(m["files"]), f"{m['bytes'] / 1e6:.1f}", role)
            console.print(models)
        else:
            console.print(f"No models in {data['models_dir']}. Run: ragcli download-model", highlight=False)
    if data["index"]["exists"] and not data["index"].get("ok"):
        raise IndexCorruptedError(data["index"]["error"])


@index_app.command("verify")
def verify_command(index_dir: IndexDirOpt = None, json_out: JsonOpt = False) -> None:
    """Check every generation of the index against its manifest checksums."""
    from ragcli.cli._output import out, print_json
    from ragcli.errors import IndexCorruptedError, IndexNotFoundError
    from ragcli.store import LocalIndex

    settings = settings_from(index_dir=index_dir)
    store = LocalIndex(settings.index_dir)
    rows = store.verify()
    if not rows:
        raise IndexNotFoundError(f"No index in {settings.index_dir}. Run: ragcli ingest <paths>")
    if json_out:
        print_json({"index_dir": str(settings.index_dir), "generations": rows})
    else:
        for r in rows:
            mark = "ok" if r["ok"] else "CORRUPTED"
            cur = " (current)" if r["current"] else ""
            out().print(f"{r['generation']}{cur}: {mark}" + (f" — {r['error']}" if r["error"] else ""), highlight=False)
    current = [r for r in rows if r["current"]]
    if not current or not current[0]["ok"]:
        raise IndexCorruptedError(current[0]["error"] if current else f"CURRENT in {settings.index_dir} names no generation.")


@index_app.command("rollback")
def rollback_command(index_dir: IndexDirOpt = None) -> None:
    """Go back to the previous generation of the index (after a bad ingest)."""
    from ragcli.cli._output import out
    from ragcli.store import LocalIndex

    settings = settings_from(index_dir=index_dir)
    store = LocalIndex(settings.index_dir)
    with store.lock():
        name = store.rollback()
    out().print(f"Index rolled back to {name}.", highlight=False)


@index_app.command("compact")
def compact_command(index_dir: IndexDirOpt = None, json_out: JsonOpt = False) -> None:
    """Rewrite the index's live chunks into fresh segments, dropping the rows of changed and removed files.

    Ingest compacts on its own when deleted rows pass 30% of a segment or there are more than 8 segments;
    this does it now, in full. Nothing is embedded again."""
    from ragcli.cli._output import out, print_json
    from ragcli.targets.local import LocalTarget

    settings = settings_from(index_dir=index_dir)
    target = LocalTarget(settings)
    published = target.compact()
    info = target.describe()
    if json_out:
        print_json({"generation": published.name, "segments": info.get("segments"), "dead_rows": info.get("dead_rows"),
                    "chunks": info.get("chunks")})
    else:
        out().print(f"Index compacted into {published.name}: {info.get('chunks')} chunks in "
                    f"{info.get('segments')} segment(s).", highlight=False)
