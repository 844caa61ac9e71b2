"""Run the server: check where it may listen, load everything once, then hand the app to uvicorn."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ragcli.serve import require_extra
from ragcli.serve.auth import check_bind
from ragcli.serve.worker import Limits

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.serve.pipeline import Pipeline

log = logging.getLogger("ragcli.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def build(settings: Settings, limits: Limits | None = None, pipeline: Pipeline | None = None):  # -> FastAPI
    """The application for `settings` (models and index loaded now, unless `pipeline` is given)."""
    require_extra()
    from ragcli.serve.app import create_app
    from ragcli.serve.pipeline import Pipeline

    return create_app(pipeline or Pipeline(settings), limits, api_key=settings.api_key)


def configure_logging(settings: Settings, level: str = "info") -> None:
    """uvicorn's log format with ragcli's filter on every handler (secrets masked, no query strings)."""
    import logging.config

    from ragcli.config import known_secrets
    from ragcli.serve.logs import log_config

    logging.config.dictConfig(log_config(known_secrets(settings), level))


def uvicorn_config(app, host: str, port: int, log_level: str = "info"):  # -> uvicorn.Config
    """uvicorn's configuration, logging left as `configure_logging` set it, no Server header."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_config=None, log_level=log_level, server_header=False,
                          timeout_graceful_shutdown=5)


def serve(settings: Settings, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, limits: Limits | None = None,
          log_level: str = "info") -> None:
    """Serve until interrupted. Raises ConfigError for a short key or a non-loopback host without one,
    BackendUnavailableError without the `serve` extra, and the usual errors for models and index."""
    check_bind(host, settings.api_key)
    require_extra()
    import uvicorn

    configure_logging(settings, log_level)
    if not settings.api_key:
        log.warning("No RAGCLI_API_KEY: any process on this machine can use the server.")
    app = build(settings, limits)
    index = app.state.pipeline.describe()
    log.info("Loaded %s and %s; target %s, generation %s (%d chunks); %s.", settings.embed_model,
             settings.gen_model, settings.target, index["generation"] or "none", index["chunks"],
             "API key required" if settings.api_key else "no API key")
    uvicorn.Server(uvicorn_config(app, host, port, log_level)).run()
