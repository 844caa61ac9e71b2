"""`ragcli serve`: the answers of `ragcli query` over HTTP (FastAPI on uvicorn).

FastAPI and uvicorn are an optional extra, `pip install 'ragcli[serve]'`, imported only inside this
package; importing this module itself is cheap. Modules:

- `pipeline`: the models and the index, loaded once, reloaded when a new generation is published;
- `worker`: one answer at a time, a bounded queue, a deadline per request;
- `auth`: the API key; `logs`: log records with secrets masked; `schemas`: the request bodies;
- `app`: the HTTP endpoints; `server`: `serve()`, which runs them on uvicorn.
"""

from __future__ import annotations

from ragcli.errors import BackendUnavailableError

INSTALL_HINT = "Run: pip install 'ragcli[serve]'"


def require_extra() -> None:
    """Raise BackendUnavailableError unless FastAPI and uvicorn can be imported."""
    missing = []
    for name in ("fastapi", "uvicorn"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise BackendUnavailableError(f"ragcli serve needs {' and '.join(missing)}, which are not installed. "
                                      f"{INSTALL_HINT}")
