"""What is in the index and the models folder: the library side of `ragcli status`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings

# What a remote target's describe() may add (endpoint, Delta Sync source table and pipeline, sync state).
REMOTE_DETAILS = ("index_kind", "endpoint", "source_table", "pipeline_type", "pipeline_id", "state", "row_count",
                  "synced_version", "embedding_endpoint")


def index_summary(settings: Settings, verify: bool = False) -> dict[str, Any]:
    """The configured target's summary (generation, files, chunks, model, dimension, size, last ingest)
    and the downloaded models. A damaged index is reported in the summary (`ok` False, `error`), not
    raised; with `verify` every stored file is checked against its checksum where the target can."""
    from ragcli.errors import IndexCorruptedError, IndexNotFoundError
    from ragcli.registry import list_models
    from ragcli.targets import open_target

    target = open_target(settings)
    # `index_dir` is the key scripts have read since the first release: the target's location.
    info: dict[str, Any] = {"target": target.kind, "index_dir": target.location, "exists": False}
    try:
        if verify and target.capabilities.verify:
            target.verify_current()
        data = target.describe()
    except IndexNotFoundError:
        data = None
    except IndexCorruptedError as exc:
        info.update(exists=True, ok=False, error=str(exc))
        data = None
    if data is not None:
        embed = data.get("embed") or {}
        info.update(exists=True, ok=True, generation=data.get("generation"), generations=data.get("generations"),
                    files=data.get("files"), chunks=data.get("chunks"), embed_model=embed.get("model"),
                    embed_revision=embed.get("revision"), dimension=embed.get("dim"), index_type=data.get("index_type"),
                    splitter=data.get("splitter") or {}, size_bytes=data.get("size_bytes"),
                    last_ingest=data.get("last_ingest") or data.get("updated_at"),
                    ragcli_version=data.get("ragcli_version"), verified=verify and target.capabilities.verify)
        info.update({k: data[k] for k in REMOTE_DETAILS if data.get(k) is not None})
    models = list_models(settings.models_dir)
    return {
        "index": info,
        "models_dir": str(settings.models_dir),
        "models": {name: {"revision": e.get("revision"), "files": len(e.get("files") or {}),
                          "bytes": sum((e.get("files") or {}).values()), "downloaded_at": e.get("downloaded_at")}
                   for name, e in models.items()},
        "configured": {"embed_model": settings.embed_model, "gen_model": settings.gen_model},
    }
