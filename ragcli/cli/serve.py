"""`ragcli serve`: answer questions over HTTP (POST /query, OpenAI-compatible /v1/chat/completions)."""

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

  RAGCLI_API_KEY=$(python -c "import secrets; print(secrets.token_urlsafe(32))") ragcli serve

  curl -s localhost:8000/query -H "X-Api-Key: $RAGCLI_API_KEY" -H "Content-Type: application/json" -d '{"query": "What is a delta lake", "top_k": 1, "query_context": true}'

  ragcli serve --host 0.0.0.0 --port 8080 --queue 32 --timeout 60   (needs RAGCLI_API_KEY)

The key comes only from RAGCLI_API_KEY (environment or .env), never a flag; clients send it as
X-Api-Key or Authorization: Bearer. Needs the serve extra: pip install 'ragcli[serve]'.
"""

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def command(
    host: Annotated[str, typer.Option("--host", help="Address to listen on. Anything but loopback needs RAGCLI_API_KEY.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8000,
    queue: Annotated[int, typer.Option("--queue", min=0, max=10_000, help="Requests that may wait while one is answered; past that: 503 with Retry-After.")] = 16,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, max=3600.0, help="Seconds per request, waiting included; past that: 504 and the generation stops.")] = 120.0,
    max_top_k: Annotated[int, typer.Option("--max-top-k", min=1, max=1000, help="Largest top_k a request may ask for.")] = 20,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", min=1, max=4096, help="Longest answer in tokens, and the most a request may ask for. Default 64.", show_default=False)] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="critical, error, warning, info or debug (debug adds tracebacks of internal errors).")] = "info",
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
) -> None:
    """Serve answers over HTTP: POST /query and an OpenAI-compatible /v1/chat/completions."""
    from ragcli.config import MODES, TARGETS
    from ragcli.serve.auth import check_bind
    from ragcli.serve.worker import Limits

    check_choices(("--mode", mode, MODES), ("--target", target, TARGETS), ("--log-level", log_level, LOG_LEVELS))
    settings = settings_from(top_k=top_k, mode=mode, max_new_tokens=max_new_tokens, embed_model=embed_model, embed_backend=embed_backend,
                             rerank_model=rerank, rerank_depth=rerank_depth, faithfulness_model=faithfulness,
                             gen_model=gen_model, models_dir=models_dir, index_dir=index_dir, target=target,
                             databricks_host=databricks_host, databricks_endpoint=databricks_endpoint,
                             databricks_index=databricks_index)
    check_bind(host, settings.api_key)  # before loading anything
    from ragcli.serve.server import serve

    serve(settings, host=host, port=port, log_level=log_level,
          limits=Limits(queue=queue, timeout=timeout, max_top_k=max_top_k))
