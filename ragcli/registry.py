"""Which models are in the models folder, and where.

The models folder uses the Hugging Face Hub cache layout (`models--org--name/snapshots/<commit>/`),
so `huggingface_hub` can resume and share blobs. On top of it ragcli keeps a lock file,
`ragcli-models.lock.json`, with one entry per model: the resolved commit and the size of every
file. download-model writes an entry only after every file is in place, so a model counts as ready
only when its entry exists and its files match it. An interrupted download is never mistaken for
a complete one.

Nothing here touches the network or imports a heavy library.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ragcli.errors import ConfigError, ModelLoadError, ModelNotFoundError

LOCK_NAME = "ragcli-models.lock.json"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class ResolvedModel:
    """A model found on disk. `name` is what the user gave (repo id or path)."""

    name: str
    path: Path
    revision: str  # a commit hash for downloaded models, "local" for a directory given by path
    repo_id: str | None


def is_repo_id(value: str) -> bool:
    return bool(_REPO_ID.match(value)) and ".." not in value


def repo_folder(models_dir: Path, repo_id: str) -> Path:
    """The Hub cache folder of a repo inside the models folder."""
    return models_dir / ("models--" + repo_id.replace("/", "--"))


def read_lock(models_dir: Path) -> dict[str, Any]:
    path = models_dir / LOCK_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} is not valid JSON ({exc}). Delete it and run: ragcli download-model"
        ) from None
    models = data.get("models") if isinstance(data, dict) else None
    return models if isinstance(models, dict) else {}


def _snapshot_files(snapshot: Path) -> dict[str, int]:
    files: dict[str, int] = {}
    for path in sorted(snapshot.rglob("*")):
        if path.is_file():
            files[path.relative_to(snapshot).as_posix()] = path.stat().st_size
    return files


def record_model(models_dir: Path, repo_id: str, revision: str, snapshot: Path, requested: str) -> dict[str, Any]:
    """Write (atomically) the lock entry of a completely downloaded model. Returns the entry."""
    entry = {
        "revision": revision,
        "requested": requested,
        "snapshot": snapshot.relative_to(models_dir).as_posix(),
        "files": _snapshot_files(snapshot),
        "downloaded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    models = read_lock(models_dir)
    models[repo_id] = entry
    payload = json.dumps({"format": 1, "models": dict(sorted(models.items()))}, indent=2) + "\n"
    models_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=models_dir, prefix=".lock-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, models_dir / LOCK_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return entry


def forget_model(models_dir: Path, repo_id: str) -> None:
    """Drop a model's lock entry (before re-downloading it), so a failed download leaves it not ready."""
    models = read_lock(models_dir)
    if repo_id in models:
        del models[repo_id]
        payload = json.dumps({"format": 1, "models": models}, indent=2) + "\n"
        tmp = models_dir / (LOCK_NAME + ".tmp")
        tmp.write_text(payload, encoding="utf-8")
        os.replace(tmp, models_dir / LOCK_NAME)


def resolve_model(model: str, models_dir: Path, *, role: str = "model") -> ResolvedModel:
    """Find `model` (a local directory or a downloaded repo id) without any network call."""
    candidate = Path(model).expanduser()
    if candidate.is_file() and candidate.suffix.lower() == ".gguf":  # one GGUF file (a generator)
        return ResolvedModel(name=model, path=candidate.resolve(), revision="local", repo_id=None)
    if candidate.is_dir():
        if not (candidate / "config.json").is_file() and not any(candidate.glob("*.gguf")):
            raise ModelLoadError(f"{candidate} has no config.json; point the {role} at a Hugging Face model folder (or a folder or path of a .gguf file).")
        return ResolvedModel(name=model, path=candidate.resolve(), revision="local", repo_id=None)
    if not is_repo_id(model):
        raise ModelNotFoundError(
            f"The {role} '{model}' is neither a folder nor a Hub repo id (like org/name). Check the value."
        )
    entry = read_lock(models_dir).get(model)
    if entry is None and repo_folder(models_dir, model).is_dir():
        raise ModelLoadError(
            f"The {role} '{model}' in {models_dir} is incomplete (an interrupted download?). "
            f"Run: ragcli download-model {model}"
        )
    if entry is None:
        raise ModelNotFoundError(
            f"The {role} '{model}' is not in {models_dir}. Run: ragcli download-model {model}"
        )
    snapshot = models_dir / entry.get("snapshot", "")
    expected = entry.get("files") or {}
    missing = [
        name for name, size in expected.items()
        if not (snapshot / name).is_file() or (snapshot / name).stat().st_size != size
    ]
    if not snapshot.is_dir() or missing or not expected:
        detail = f" ({missing[0]} missing or changed)" if missing else ""
        raise ModelLoadError(
            f"The {role} '{model}' in {models_dir} is incomplete{detail}. Run: ragcli download-model {model}"
        )
    return ResolvedModel(name=model, path=snapshot, revision=str(entry["revision"]), repo_id=model)


def model_mismatch(recorded: dict[str, Any], model: str, revision: str | None, where: str) -> str | None:
    """Why an index whose embedding record is `recorded` cannot be used with `model` at `revision`
    (None when it can). `revision` None means "not resolved": only the model name is compared.
    `where` names the index, e.g. "The index in ./ragcli-index"."""
    same_rev = revision is None or recorded.get("revision") == revision
    if recorded.get("model") == model and same_rev:
        return None
    old = f"{recorded.get('model')}@{str(recorded.get('revision'))[:12]}"
    new = model if revision is None else f"{model}@{revision[:12]}"
    return f"{where} was built with {old} ({recorded.get('dim')}-d); this run uses {new}."


def list_models(models_dir: Path) -> dict[str, dict[str, Any]]:
    """The lock entries, for the status command."""
    return read_lock(models_dir)
