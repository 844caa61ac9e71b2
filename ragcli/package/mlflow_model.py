"""`ragcli package mlflow`: the configured pipeline as an MLflow pyfunc model (models-from-code).

    OUT/
      MLmodel, requirements.txt, conda.yaml, python_env.yaml, input_example.json, ...
      pyfunc_model.py          the model's code file (ragcli/package/pyfunc_model.py)
      code/ragcli/             ragcli itself, so a process with only OUT runs the same library
      artifacts/models/        the embedding model and the generator at the lock file's revisions,
                               in the Hub cache layout with their own ragcli-models.lock.json
      artifacts/index/         local target only: the published generation, verified, as an index
                               of one generation (a remote target ships no index, only its name and
                               the Databricks resources Model Serving passes credentials for)

The package is written in a folder next to OUT and renamed into place once complete, so OUT is never
half a package. `check_package` loads a package in a fresh process (working directory outside any
checkout, no PYTHONPATH) with `mlflow.pyfunc.load_model` and answers one question; `package_mlflow`
runs it on the written package, before logging or registering it, unless told not to. `log=True`
logs the model to the tracking server (MLFLOW_TRACKING_URI), and `register="catalog.schema.model"`
registers it (Unity Catalog, `databricks-uc`, unless another registry URI is given).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import ConfigError, ModelNotFoundError, RagcliError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.types import Progress

CODE_FILE = Path(__file__).with_name("pyfunc_model.py")
MODEL_NAME = "ragcli"  # the logged model's name in its run
DEFAULT_REGISTRY = "databricks-uc"
CHECK_QUESTION = "What do these documents say?"
CHECK_TIMEOUT = 900.0  # seconds the check may take to load the models and answer (real models on CPU)
TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# Distributions a loaded package imports (ragcli's runtime dependencies; the Databricks ones only for
# that target), pinned to the versions installed where it was packaged.
RUNTIME_DISTRIBUTIONS = ("mlflow-skinny", "pandas", "numpy", "torch", "transformers", "huggingface-hub",
                         "llama-index-core", "llama-index-embeddings-huggingface", "faiss-cpu", "bm25s",
                         "defusedxml", "docx2txt", "python-dotenv", "pydantic")
REMOTE_DISTRIBUTIONS = ("databricks-ai-search", "databricks-sdk")


class PackageError(RagcliError):
    """The package cannot be written, or it was written and does not load and answer."""


@dataclass
class Packaged:
    path: Path
    generation: str | None
    models: dict[str, dict[str, str]]
    resources: dict[str, list[str]]
    requirements: list[str]
    check: dict[str, Any] | None = None
    run_id: str | None = None
    model_uri: str | None = None
    registered: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "generation": self.generation, "models": self.models,
                "resources": self.resources, "requirements": self.requirements, "check": self.check,
                "run_id": self.run_id, "model_uri": self.model_uri, "registered": self.registered,
                "settings": self.settings}


# -- the pieces --------------------------------------------------------------------------------------
def locked_model(settings: Settings, model: str, role: str) -> tuple[Any, dict[str, Any]]:
    """The lock-file entry of `model`, its files checked; refuses a model that is not in the lock file."""
    from ragcli.registry import LOCK_NAME, read_lock, resolve_model

    lock = settings.models_dir / LOCK_NAME
    entry = read_lock(settings.models_dir).get(model)
    if entry is None and Path(model).expanduser().is_dir():
        raise ModelNotFoundError(
            f"The {role} '{model}' is a folder, not in the lock file {lock}: a package carries only models "
            "downloaded with exact revisions. Run: ragcli download-model ORG/NAME, and name the model by its repo id.")
    if entry is None:
        raise ModelNotFoundError(
            f"The {role} '{model}' is not in the lock file {lock}: a package carries only models downloaded "
            f"with exact revisions. Run: ragcli download-model {model}")
    return resolve_model(model, settings.models_dir, role=role), entry


def copy_models(settings: Settings, dest: Path) -> dict[str, dict[str, str]]:
    """Copy the embedding model and the generator, at their locked revisions, into the models folder
    `dest` (Hub cache layout, symlinks resolved, a lock file of those two alone)."""
    from ragcli.registry import record_model, repo_folder, resolve_model

    copied: dict[str, dict[str, str]] = {}
    for role, model in (("embedding model", settings.embed_model), ("generator", settings.gen_model)):
        if model in copied:
            continue
        resolved, entry = locked_model(settings, model, role)
        repo = repo_folder(dest, model)
        snapshot = repo / "snapshots" / resolved.revision
        shutil.copytree(resolved.path, snapshot, symlinks=False)
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(resolved.revision, encoding="utf-8")
        record_model(dest, model, resolved.revision, snapshot, requested=str(entry.get("requested") or "main"))
        resolve_model(model, dest, role=role)  # the copy is complete, or this raises
        copied[model] = {"role": role, "revision": resolved.revision}
    return copied


def copy_code(dest: Path) -> Path:
    """ragcli's package folder, without caches, as the model's code path."""
    import ragcli

    src = Path(ragcli.__file__).resolve().parent
    target = dest / "ragcli"
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def requirements(remote: bool) -> list[str]:
    """The pip requirements of a package, pinned to what is installed. torch is the CPU build, from
    PyTorch's own index (the default index would pull CUDA wheels)."""
    from importlib.metadata import PackageNotFoundError, version

    names = RUNTIME_DISTRIBUTIONS + (REMOTE_DISTRIBUTIONS if remote else ())
    pinned = [f"--extra-index-url {TORCH_INDEX}"]
    for name in names:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            if name in REMOTE_DISTRIBUTIONS:
                raise ConfigError(f"Packaging for the Databricks target needs {name}, which is not installed. "
                                  "Run: pip install 'ragcli[databricks]'") from None
    return pinned


def output_example() -> dict[str, Any]:
    """An output row as `ragcli query --json` writes it (the same `QueryResult.to_json`), every part
    filled in, for the signature's output schema."""
    from ragcli.query import Answer, QueryResult
    from ragcli.types import Hit

    result = QueryResult(question="q", mode="dense", top_k=1, target="local",
                         sources=[Hit(chunk_id=1, file="a.md", position=0, score=0.5, text="t", rank=1)],
                         with_context=Answer(text="a", with_context=True),
                         without_context=Answer(text="a", with_context=False), timings={"retrieve": 0.1},
                         embed_model="e", gen_model="g", generation="gen-000001", prompt_limit=512)
    return {**result.to_json(), "session_id": "s"}


def _schema_type(name: str, value: Any) -> Any:
    from mlflow.types.schema import AnyType, Array, DataType, Map, Object, Property

    if isinstance(value, bool):
        return DataType.boolean
    if isinstance(value, int):
        return DataType.long
    if isinstance(value, float):
        return DataType.double
    if isinstance(value, str):
        return DataType.string
    if isinstance(value, list):
        return Array(_schema_type(name, value[0])) if value else Array(AnyType())
    if isinstance(value, dict):
        if name == "timings":  # stage -> seconds; the stages depend on the question
            return Map(DataType.double)
        if not value:
            return Map(AnyType())
        return Object([Property(k, _schema_type(k, v), required=False) for k, v in value.items()])
    return AnyType()


def signature() -> Any:
    """Typed inputs (query, optional top_k, query_context, session_id); outputs as `ragcli query --json`."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, DataType, Schema

    from ragcli.package.runtime import INPUTS

    inputs = Schema([ColSpec(getattr(DataType, kind), name, required=required)
                     for name, (kind, required) in INPUTS.items()])
    outputs = Schema([ColSpec(_schema_type(name, value), name, required=False)
                      for name, value in output_example().items()])
    return ModelSignature(inputs=inputs, outputs=outputs)


def databricks_resources(resources: dict[str, list[str]]) -> list[Any]:
    from mlflow.models.resources import DatabricksServingEndpoint, DatabricksVectorSearchIndex

    kinds = {"vector_search_index": lambda n: DatabricksVectorSearchIndex(index_name=n),
             "serving_endpoint": lambda n: DatabricksServingEndpoint(endpoint_name=n)}
    unknown = sorted(set(resources) - set(kinds))
    if unknown:  # pragma: no cover - a target declaring a kind this module does not map yet
        raise PackageError(f"The target needs resources this ragcli cannot declare to MLflow: {', '.join(unknown)}.")
    return [kinds[kind](name) for kind, names in sorted(resources.items()) for name in names]


# -- the package ---------------------------------------------------------------------------------------
def _fresh_out(out: Path) -> Path:
    out = out.expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not an empty folder; choose a new OUT or remove it.")
    return out


def package_mlflow(settings: Settings, out: Path, *, check: bool = True, question: str = CHECK_QUESTION,
                   log: bool = False, register: str | None = None, registry_uri: str | None = None,
                   progress: Progress | None = None) -> Packaged:
    """Write the MLflow model of `settings`' pipeline into the new folder `out`; check it, log it and
    register it as asked. Nothing is written to `out` unless the whole package is complete."""
    from ragcli.package import require_mlflow
    from ragcli.package.runtime import recorded_settings
    from ragcli.registry import model_mismatch
    from ragcli.targets import open_target

    require_mlflow()
    if register is not None and (registry_uri or DEFAULT_REGISTRY) == DEFAULT_REGISTRY and register.count(".") != 2:
        raise UsageError(f"--register {register!r}: name the model as catalog.schema.model.")
    out = _fresh_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = open_target(settings)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        step = _steps(progress)
        step("models")
        models = copy_models(settings, staging / "models")
        step("index")
        generation = target.export(staging / "index")
        if generation is not None:
            from ragcli.store import LocalIndex

            exported = LocalIndex(staging / "index").load()
            try:
                revision = models[settings.embed_model]["revision"]
                mismatch = model_mismatch(exported.embed, settings.embed_model, revision, target.label)
            finally:
                exported.close()
            if mismatch:
                raise PackageError(f"{mismatch} Package with the index's embedding model, or re-ingest.")
        resources = target.resources()
        remote = generation is None
        if remote and not (resources and settings.databricks_endpoint):
            raise ConfigError(f"{target.label} is remote: the package needs its endpoint and index name. Set "
                              "RAGCLI_DATABRICKS_ENDPOINT and RAGCLI_DATABRICKS_INDEX (or --databricks-endpoint "
                              "and --databricks-index).")
        artifacts = {"models": str(staging / "models")}
        if generation is not None:
            artifacts["index"] = str(staging / "index")
        recorded = recorded_settings(settings)
        reqs = requirements(remote)
        step("code")
        code = copy_code(staging / "code")
        kwargs = _model_kwargs(artifacts, code, recorded, reqs, resources, generation, models)
        step("save")
        import mlflow

        with _quiet_mlflow():
            mlflow.pyfunc.save_model(path=str(staging / "model"), **kwargs)
        result = Packaged(path=out, generation=generation, models=models, resources=resources,
                          requirements=reqs, settings=recorded)
        if check:  # before anything is logged or uploaded: a broken package goes nowhere
            step("check")
            result.check = check_package(staging / "model", question)
            inside = Path(result.check["ragcli_file"]).relative_to((staging / "model").resolve())
            result.check["ragcli_file"] = str(out / inside)
        if log or register:
            step("log")
            with _quiet_mlflow():
                _log(result, kwargs, register, registry_uri)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(staging / "model", out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


@contextlib.contextmanager
def _quiet_mlflow() -> Iterator[None]:
    """MLflow's advice to type-hint `predict` does not apply: the signature is given explicitly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*type hint", category=UserWarning)
        yield


def _steps(progress: Progress | None) -> Any:
    names = ["models", "index", "code", "save", "check", "log"]

    def step(name: str) -> None:
        if progress:
            progress("package", names.index(name), len(names))

    return step


def _model_kwargs(artifacts: dict[str, str], code: Path, recorded: dict[str, Any], reqs: list[str],
                  resources: dict[str, list[str]], generation: str | None,
                  models: dict[str, dict[str, str]]) -> dict[str, Any]:
    from ragcli import __version__

    return {
        "python_model": str(CODE_FILE),
        "artifacts": artifacts,
        "code_paths": [str(code)],
        "signature": signature(),
        "input_example": [{"query": CHECK_QUESTION, "session_id": "example"}],
        "pip_requirements": reqs,
        "model_config": {"settings": recorded, "ragcli_version": __version__},
        "resources": databricks_resources(resources) or None,
        "metadata": {"ragcli_version": __version__, "generation": generation,
                     "models": {name: m["revision"] for name, m in models.items()}},
    }


def _log(result: Packaged, kwargs: dict[str, Any], register: str | None, registry_uri: str | None) -> None:
    import mlflow

    if register:
        mlflow.set_registry_uri(registry_uri or DEFAULT_REGISTRY)
    try:
        with mlflow.start_run() as run:
            mlflow.log_params({f"ragcli.{k}": v for k, v in result.settings.items() if v is not None})
            info = mlflow.pyfunc.log_model(name=MODEL_NAME, registered_model_name=register, **kwargs)
    except mlflow.exceptions.MlflowException as exc:
        from ragcli.config import redact

        raise PackageError(f"Logging the model to {mlflow.get_tracking_uri()} failed: "
                           f"{redact(str(exc)).splitlines()[0][:300]}") from None
    result.run_id = run.info.run_id
    result.model_uri = info.model_uri
    if register:
        result.registered = {"name": register, "version": str(info.registered_model_version),
                             "registry_uri": mlflow.get_registry_uri()}


# -- the check -------------------------------------------------------------------------------------------
_CHECK_SCRIPT = r"""
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
import ragcli
rows = model.predict([{"query": sys.argv[2], "session_id": "ragcli-check"}])
sys.stdout.write("\n" + json.dumps({"ragcli_file": ragcli.__file__, "rows": rows}) + "\n")
"""


def check_package(out: Path, question: str = CHECK_QUESTION, *, timeout: float = CHECK_TIMEOUT) -> dict[str, Any]:
    """Load `out` with `mlflow.pyfunc.load_model` in a fresh process that can see only `out` (its
    working directory a new empty folder, no PYTHONPATH) and answer `question`. Raises PackageError
    when it does not load, does not answer, or runs a ragcli that is not the package's own."""
    out = Path(out).resolve()
    if not (out / "MLmodel").is_file():
        raise PackageError(f"{out} is not an MLflow model (no MLmodel file). Run: ragcli package mlflow {out}")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RAGCLI_")}
    with tempfile.TemporaryDirectory(prefix="ragcli-check-") as cwd:
        try:
            proc = subprocess.run([sys.executable, "-c", _CHECK_SCRIPT, str(out), question], cwd=cwd, env=env,
                                  capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise PackageError(f"Checking {out}: loading it and answering took longer than {timeout:g} s.") from None
    if proc.returncode != 0:
        from ragcli.config import redact

        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise PackageError(f"Checking {out}: the package does not load and answer in a fresh process "
                           f"({redact(lines[-1] if lines else f'exit code {proc.returncode}')[:400]}).")
    try:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise PackageError(f"Checking {out}: the fresh process printed no answer.") from None
    ragcli_file = Path(report["ragcli_file"]).resolve()
    if out not in ragcli_file.parents:
        raise PackageError(f"Checking {out}: the loaded model ran ragcli from {ragcli_file.parent}, not the "
                           "package's own copy.")
    row = report["rows"][0]
    answer = row.get("with_context") or {}
    return {"question": question, "answer": answer.get("text"), "sources": len(row.get("sources") or []),
            "generation": row.get("generation"), "ragcli_file": str(ragcli_file)}
