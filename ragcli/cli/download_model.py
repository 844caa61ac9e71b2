"""`ragcli download-model`: fetch Hub models into the models folder, pinned to a commit."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ragcli.cli._options import EmbedModelOpt, GenModelOpt, JsonOpt, ModelsDirOpt, QuietOpt, settings_from

EPILOG = """Examples:

  ragcli download-model

  ragcli download-model BAAI/bge-small-en-v1.5 google/flan-t5-small --json

  ragcli download-model org/model --revision 0123456789abcdef0123456789abcdef01234567

  ragcli download-model org/old-model --allow-pickle

  ragcli download-model org/custom --trust-remote-code --revision <40-hex commit>

  ragcli download-model --ca-bundle corp-ca.pem

  ragcli download-model HuggingFaceTB/SmolLM2-135M-Instruct-GGUF --file smollm2-135m-instruct-q4_1.gguf

  ragcli download-model sentence-transformers/all-MiniLM-L6-v2 --onnx

Only config, tokenizer and .safetensors files are fetched, plus the repo's ONNX export with --onnx. The token comes from HF_TOKEN (environment or .env), never from a flag. An interrupted download is not recorded: run the same command again to finish it.
"""

RepoIdsArg = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hub repo ids (org/name). Default: the configured embedding model and generator "
        "(those that are local folders are skipped).",
        show_default=False,
    ),
]
RevisionOpt = Annotated[
    str | None,
    typer.Option(
        "--revision",
        help="Branch, tag or 40-hex commit to download (one model at a time). Default: main. "
        "The resolved commit is recorded either way.",
        show_default=False,
    ),
]
AllowPickleOpt = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Accept pickled PyTorch weights (*.bin) when a repo has no .safetensors. Pickles can run code "
        "when loaded: only for repos you trust.",
    ),
]
TrustRemoteCodeOpt = Annotated[
    bool,
    typer.Option(
        "--trust-remote-code",
        help="Also fetch the repo's *.py files for models with custom code (auto_map). Needs --revision "
        "<40-hex commit>: read that code first.",
    ),
]
CaBundleOpt = Annotated[
    Path | None,
    typer.Option(
        "--ca-bundle",
        help="PEM file of CA certificates to trust (e.g. certifi's bundle plus your proxy's root). "
        "Env: RAGCLI_CA_BUNDLE. TLS checks are never switched off.",
        show_default=False,
    ),
]


FileOpt = Annotated[
    str | None,
    typer.Option(
        "--file",
        help="Fetch only this file of one repo (its path in the repo), e.g. a GGUF generator: "
        "--file model.Q4_1.gguf. Checked against the Hub's checksum like any other file.",
        show_default=False,
    ),
]


OnnxOpt = Annotated[
    bool,
    typer.Option(
        "--onnx",
        help="Also fetch the repo's own ONNX export, onnx/model.onnx (with onnx/model.onnx_data if there is one): "
        "--embed-backend onnx then runs it as is (onnx-int8 quantises it) instead of exporting the model. A repo "
        "without one still downloads, and a note says so. With no REPO_ID: the embedding model only. "
        "Example: ragcli download-model sentence-transformers/all-MiniLM-L6-v2 --onnx.",
    ),
]
OnnxFileOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--onnx-file",
        help="Also fetch this file of the repo's onnx/ folder (repeatable), e.g. a quantised variant: "
        "--onnx-file model_qint8_avx512.onnx. It must exist; checked like any other file. ragcli's onnx "
        "backends run onnx/model.onnx only.",
        show_default=False,
    ),
]


def command(
    repo_ids: RepoIdsArg = None,
    file: FileOpt = None,
    onnx: OnnxOpt = False,
    onnx_files: OnnxFileOpt = None,
    revision: RevisionOpt = None,
    allow_pickle: AllowPickleOpt = False,
    trust_remote_code: TrustRemoteCodeOpt = False,
    ca_bundle: CaBundleOpt = None,
    models_dir: ModelsDirOpt = None,
    embed_model: EmbedModelOpt = None,
    gen_model: GenModelOpt = None,
    json_output: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Download Hub models (safetensors, config, tokenizer) into the models folder, pinned to a commit.

    With no REPO_ID, fetches the configured embedding model and generator. Each model is recorded in
    the models folder's lock file with its resolved commit once every file is in place and matches the
    Hub's checksums; ingest and query then load it without touching the network."""
    from ragcli.cli._output import err, print_json, progress_bar, warn
    from ragcli.hub import download_model

    settings = settings_from(
        models_dir=models_dir, embed_model=embed_model, gen_model=gen_model, ca_bundle=ca_bundle
    )
    with progress_bar(enabled=not quiet) as progress:
        results = download_model(
            list(repo_ids or []),
            settings,
            revision=revision,
            allow_pickle=allow_pickle,
            trust_remote_code=trust_remote_code,
            progress=progress,
            file=file,
            onnx=onnx,
            onnx_files=list(onnx_files or []),
        )

    for result in results:
        if result.trusted_code:
            warn(
                f"{result.repo_id}@{result.revision[:12]} includes Python code that --trust-remote-code will run: "
                + ", ".join(result.trusted_code)
            )
        for note in result.notes:
            err().print(note, markup=False)
    if json_output:
        print_json([r.to_dict() for r in results])
        return
    if not results:
        err().print("Nothing to download: the embedding model and the generator are local folders.")
        return
    _print_table(results)


def _print_table(results: list) -> None:
    from rich.table import Table

    from ragcli.cli._output import out
    from ragcli.hub import human_bytes

    table = Table(title="Models", title_justify="left")
    table.add_column("model", overflow="fold")
    table.add_column("commit")
    table.add_column("files", justify="right")
    table.add_column("size", justify="right")
    table.add_column("path", overflow="fold")
    for r in results:
        commit = r.revision[:12]
        if r.requested not in (r.revision, "main"):
            commit += f" ({r.requested})"
        table.add_row(r.repo_id, commit, str(len(r.files)), human_bytes(r.bytes), _short_path(r.path))
    out().print(table)


def _short_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
