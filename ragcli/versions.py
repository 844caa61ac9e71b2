"""Versions of the libraries that decide ragcli's results, for manifests and bench fingerprints."""

from __future__ import annotations

LIBRARIES = ("llama-index-core", "faiss-cpu", "transformers", "sentence-transformers", "torch", "bm25s")


def library_versions() -> dict[str, str]:
    """Installed version of each library in `LIBRARIES` (absent ones left out)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
