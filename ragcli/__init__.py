"""ragcli: local retrieval-augmented generation experiments from the command line.

Importing this package is cheap: the heavy parts (torch, transformers, faiss, llama-index) are
imported only by the functions that need them. The library entry points are exposed lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Settings": "ragcli.config",
    "load_settings": "ragcli.config",
    "download_model": "ragcli.hub",
    "ingest": "ragcli.ingest",
    "answer": "ragcli.query",
    "bench": "ragcli.bench",
}

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.bench import bench
    from ragcli.config import Settings, load_settings
    from ragcli.hub import download_model
    from ragcli.ingest import ingest
    from ragcli.query import answer

__all__ = ["Settings", "__version__", "answer", "bench", "download_model", "ingest", "load_settings"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragcli' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
