"""The `ragcli` Typer application and its single error boundary."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import typer

from ragcli import __version__
from ragcli.errors import EXIT_ERROR, RagcliError

app = typer.Typer(
    name="ragcli",
    help="Local retrieval-augmented generation experiments: download models, ingest documents, "
    "ask questions with and without retrieved context, and benchmark the whole flow.",
    no_args_is_help=True,
    add_completion=False,
    # Tracebacks must never print local variables: tokens live in them.
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode="rich",
)


def _debug() -> bool:
    return os.environ.get("RAGCLI_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


def boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The error boundary every command runs inside.

    A `RagcliError` becomes one red line on stderr (secrets masked) and its exit code; an unexpected
    exception becomes one line naming it as a bug, with the traceback only under RAGCLI_DEBUG=1.
    Ctrl-C exits 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ragcli.config import redact

        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except RagcliError as exc:
            from ragcli.cli._output import err

            if _debug():
                sys.stderr.write(redact(traceback.format_exc()))
            from rich.markup import escape

            # Escaped: messages hold literal brackets, e.g. pip install 'ragcli[databricks]'.
            err().print(f"[red]Error:[/] {escape(redact(str(exc)))}", markup=True, highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            sys.stderr.write("Interrupted.\n")
            raise typer.Exit(130) from None
        except PermissionError as exc:  # a file ragcli must read is not permitted: name it, not a bug
            from rich.markup import escape

            from ragcli.cli._output import err
            from ragcli.errors import PermissionDeniedError

            if _debug():
                sys.stderr.write(redact(traceback.format_exc()))
            named = PermissionDeniedError.from_os_error(exc)
            err().print(f"[red]Error:[/] {escape(redact(str(named)))}", markup=True, highlight=False)
            raise typer.Exit(named.exit_code) from None
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are reported
            from rich.markup import escape

            from ragcli.cli._output import err

            if _debug():
                sys.stderr.write(redact(traceback.format_exc()))
                hint = ""
            else:
                hint = " (set RAGCLI_DEBUG=1 for the traceback)"
            err().print(
                f"[red]Internal error:[/] {type(exc).__name__}: {escape(redact(str(exc)))}{hint}. "
                "This is a bug in ragcli; please report it.",
                markup=True,
                highlight=False,
            )
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ragcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Local RAG experiments from the command line."""


def _register() -> None:
    from ragcli.cli import bench, download_model, ingest, package, query, report, serve, spark_job, status

    app.command("download-model", epilog=download_model.EPILOG)(boundary(download_model.command))
    app.command("ingest", epilog=ingest.EPILOG)(boundary(ingest.command))
    app.command("query", epilog=query.EPILOG)(boundary(query.command))
    app.command("bench", epilog=bench.EPILOG)(boundary(bench.command))
    app.command("report", epilog=report.EPILOG)(boundary(report.command))
    app.command("serve", epilog=serve.EPILOG)(boundary(serve.command))
    app.command("status", epilog=status.EPILOG)(boundary(status.command))
    app.command("spark-job", epilog=spark_job.EPILOG)(boundary(spark_job.command))
    for sub in status.index_app.registered_commands:
        sub.callback = boundary(sub.callback)
    app.add_typer(status.index_app, name="index")
    for sub in package.package_app.registered_commands:
        sub.callback = boundary(sub.callback)
    app.add_typer(package.package_app, name="package")


_register()


def main() -> None:
    """Entry point of the `ragcli` script and `python -m ragcli`."""
    app(prog_name="ragcli")
