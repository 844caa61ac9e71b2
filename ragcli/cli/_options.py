"""Options shared by several commands, defined once so they read the same everywhere.

Every option defaults to None: the value then comes from the environment, `.env` or the default,
decided in one place (`ragcli.config.load_settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

EmbedModelOpt = Annotated[
    str | None,
    typer.Option("--embed-model", help="Embedding model: Hub repo id (downloaded into the models folder) or a local folder. Env: RAGCLI_EMBED_MODEL.", show_default=False),
]
EmbedBackendOpt = Annotated[
    str | None,
    typer.Option("--embed-backend", help="How the embedding model runs: torch, torch-bf16 (the same model in bf16 autocast: much faster where the CPU computes bf16 natively, AMX or AVX512-BF16; slower elsewhere), onnx (ONNX Runtime, fp32) or onnx-int8 (dynamic int8 weights). ONNX files are exported once and cached beside the model; an index holds one backend's vectors. Compare them with ragcli bench --compare-backend. Example: --embed-backend torch-bf16. Env: RAGCLI_EMBED_BACKEND. Default: torch.", show_default=False),
]
RerankOpt = Annotated[
    str | None,
    typer.Option("--rerank", help="Rerank the top --rerank-depth candidates with this cross-encoder (Hub repo id or folder), e.g. --rerank cross-encoder/ms-marco-MiniLM-L6-v2. Env: RAGCLI_RERANK_MODEL.", show_default=False),
]
RerankDepthOpt = Annotated[
    int | None,
    typer.Option("--rerank-depth", min=1, max=1000, help="Candidates the reranker reads before the top k are kept, e.g. --rerank-depth 30. Env: RAGCLI_RERANK_DEPTH. Default: 20.", show_default=False),
]
FaithfulnessOpt = Annotated[
    str | None,
    typer.Option("--faithfulness", help="Score each answer's support by its passages (0..1) with this NLI cross-encoder, e.g. --faithfulness cross-encoder/nli-deberta-v3-xsmall. Env: RAGCLI_FAITHFULNESS_MODEL.", show_default=False),
]
GenModelOpt = Annotated[
    str | None,
    typer.Option("--gen-model", help="Generator model: Hub repo id or local folder. Env: RAGCLI_GEN_MODEL or MODEL_ID.", show_default=False),
]
ModelsDirOpt = Annotated[
    Path | None,
    typer.Option("--models-dir", help="Folder holding downloaded models. Env: RAGCLI_MODELS_DIR. Default: ./models.", show_default=False),
]
IndexDirOpt = Annotated[
    Path | None,
    typer.Option("--index-dir", help="Folder of the local index. Env: RAGCLI_INDEX_DIR. Default: ./ragcli-index.", show_default=False),
]
TargetOpt = Annotated[
    str | None,
    typer.Option("--target", help="Where the index lives: local (FAISS on disk) or databricks (Vector Search). Env: RAGCLI_TARGET.", show_default=False),
]
TopKOpt = Annotated[
    int | None,
    typer.Option("--top-k", "-k", min=1, max=1000, help="How many chunks to retrieve. Env: RAGCLI_TOP_K. Default: 4.", show_default=False),
]
ModeOpt = Annotated[
    str | None,
    typer.Option("--mode", help="Retrieval: dense (embeddings), bm25 (keywords) or hybrid (both, fused). Env: RAGCLI_MODE.", show_default=False),
]
DatabricksHostOpt = Annotated[
    str | None,
    typer.Option("--databricks-host", help="Databricks workspace URL (https://…). Env: DATABRICKS_HOST. The token comes only from DATABRICKS_TOKEN, a service principal or a profile, never a flag.", show_default=False, rich_help_panel="Databricks target"),
]
DatabricksEndpointOpt = Annotated[
    str | None,
    typer.Option("--databricks-endpoint", help="Vector Search endpoint. Env: RAGCLI_DATABRICKS_ENDPOINT.", show_default=False, rich_help_panel="Databricks target"),
]
DatabricksIndexOpt = Annotated[
    str | None,
    typer.Option("--databricks-index", help="Index name, catalog.schema.index. Env: RAGCLI_DATABRICKS_INDEX.", show_default=False, rich_help_panel="Databricks target"),
]
IndexKindOpt = Annotated[
    str | None,
    typer.Option("--index-kind", help="Kind of Databricks index: direct-access (rows upserted by ragcli, the default) or delta-sync (a Delta table behind the index, e.g. --target databricks --index-kind delta-sync). Env: RAGCLI_DATABRICKS_INDEX_KIND.", show_default=False, rich_help_panel="Databricks target"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def check_choices(*checks: tuple[str, str | None, tuple[str, ...]]) -> None:
    """(flag, value, allowed) for each choice flag: a value not allowed is a usage error (exit 2)."""
    from ragcli.errors import UsageError

    for flag, value, allowed in checks:
        if value is not None and value not in allowed:
            raise UsageError(f"{flag} {value!r} is not one of: {', '.join(allowed)}.")


def settings_from(**flags: Any):  # -> Settings (kept light: config imports nothing heavy)
    """Resolve settings with the given flags on top (None = flag not given)."""
    from ragcli.config import EMBED_BACKENDS, load_settings

    check_choices(("--embed-backend", flags.get("embed_backend"), EMBED_BACKENDS))
    return load_settings(flags)
