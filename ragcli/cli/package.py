"""`ragcli package`: the tested pipeline as something a serving platform runs (an MLflow model)."""

from __future__ import annotations

from pathlib import Path
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
    QuietOpt,
    TargetOpt,
    TopKOpt,
    check_choices,
    settings_from,
)

package_app = typer.Typer(help="Package the pipeline for a serving platform (an MLflow model).",
                          no_args_is_help=True)

MLFLOW_EPILOG = """Examples:

  ragcli package mlflow out/model

  ragcli package mlflow --check out/model   (only check an existing package: load it in a fresh process, answer)

  MLFLOW_TRACKING_URI=databricks ragcli package mlflow out/model --register main.rag.ragcli_model

  ragcli package mlflow out/model --target databricks --databricks-endpoint vs --databricks-index main.rag.docs

OUT gets the embedding model and generator at the lock file's revisions, the published local index
(verified), ragcli's own code, pinned requirements and the settings (no secrets). The package is then
loaded in a fresh process and asked one question (skip with --no-verify). Needs the mlflow extra:
pip install 'ragcli[mlflow]'.
"""


@package_app.command("mlflow", epilog=MLFLOW_EPILOG)
def mlflow_command(
    out: Annotated[Path, typer.Argument(help="A new folder for the MLflow model (must not exist, or be empty).", show_default=False)],
    check: Annotated[bool, typer.Option("--check", help="Only check the existing package OUT: load it in a fresh process and answer one question.")] = False,
    verify: Annotated[bool, typer.Option("--verify/--no-verify", help="After writing, load OUT in a fresh process and answer one question.")] = True,
    question: Annotated[str | None, typer.Option("--question", help="The question the check asks, e.g. --question \"What is a delta lake?\"", show_default=False)] = None,
    log: Annotated[bool, typer.Option("--log", help="Also log the model to the tracking server (MLFLOW_TRACKING_URI), in a new run.")] = False,
    register: Annotated[str | None, typer.Option("--register", help="Also register the model under this name (implies --log), e.g. --register main.rag.ragcli_model.", show_default=False)] = None,
    registry_uri: Annotated[str | None, typer.Option("--registry-uri", help="Model registry for --register. Default: databricks-uc (Unity Catalog).", show_default=False)] = None,
    top_k: TopKOpt = None,
    mode: ModeOpt = None,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, max=4096, help="Longest answer in tokens the package gives. Default 64.", show_default=False)] = None,
    embed_model: EmbedModelOpt = None,
    gen_model: GenModelOpt = None,
    models_dir: ModelsDirOpt = None,
    index_dir: IndexDirOpt = None,
    target: TargetOpt = None,
    databricks_host: DatabricksHostOpt = None,
    databricks_endpoint: DatabricksEndpointOpt = None,
    databricks_index: DatabricksIndexOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the pipeline (models, index, settings, ragcli) as an MLflow model in OUT, and check it loads."""
    from ragcli.cli._output import err, print_json, progress_bar
    from ragcli.config import MODES, TARGETS
    from ragcli.errors import UsageError
    from ragcli.package.mlflow_model import CHECK_QUESTION, check_package, package_mlflow

    check_choices(("--mode", mode, MODES), ("--target", target, TARGETS))
    question = question or CHECK_QUESTION
    if check:
        if log or register:
            raise UsageError("--check only checks an existing package; package it again to --log or --register.")
        from ragcli.package import require_mlflow

        require_mlflow()
        report = check_package(out, question)
        if json_out:
            print_json({"path": str(out.resolve()), "check": report})
        else:
            err().print(f"{out}: loaded in a fresh process and answered {question!r}: {report['answer']!r} "
                        f"({report['sources']} source(s)).", markup=False, highlight=False)
        return
    settings = settings_from(databricks_host=databricks_host, databricks_endpoint=databricks_endpoint,
                             databricks_index=databricks_index, top_k=top_k, mode=mode, max_new_tokens=max_new_tokens,
                             embed_model=embed_model, gen_model=gen_model, models_dir=models_dir,
                             index_dir=index_dir, target=target)
    with progress_bar(not quiet and not json_out) as progress:
        result = package_mlflow(settings, out, check=verify, question=question, log=log or bool(register),
                                register=register, registry_uri=registry_uri, progress=progress)
    if json_out:
        print_json(result.to_json())
        return
    _render(result)


def _render(result) -> None:  # Packaged
    from ragcli.cli._output import out

    console = out()
    what = f"index {result.generation}" if result.generation else "remote index " + ", ".join(
        n for names in result.resources.values() for n in names)
    models = ", ".join(f"{name}@{m['revision'][:12]}" for name, m in result.models.items())
    console.print(f"Wrote {result.path}: {models}; {what}.", markup=False)
    if result.check:
        console.print(f"Checked: loaded in a fresh process, answered {result.check['question']!r} with "
                      f"{result.check['sources']} source(s).", markup=False)
    if result.model_uri:
        console.print(f"Logged: {result.model_uri} (run {result.run_id}).", markup=False)
    if result.registered:
        console.print(f"Registered: {result.registered['name']} version {result.registered['version']} "
                      f"in {result.registered['registry_uri']}.", markup=False)
