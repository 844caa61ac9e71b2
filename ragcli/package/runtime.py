"""What a packaged model runs once loaded: ragcli's own pipeline over the artifacts it carries.

`PackagedPipeline` is built by the model's `load_context` from the artifact folders (the models in
the Hub cache layout with their lock file, and for the local target the exported index) and the
recorded settings. `predict(rows)` answers each row alone, exactly as `ragcli query --json` and
`POST /query` do: the output row is `QueryResult.to_json()` of the same `answer()`, plus the row's
`session_id`, echoed (ragcli answers one question at a time; it keeps no conversation).

Nothing here imports MLflow: the model's code file (`pyfunc_model`) adapts MLflow's call to this.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ragcli.errors import RagcliError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings

# Input columns of the signature: name -> (type, required). `query_context` defaults to true. `top_k` is
# declared a double: rows arrive as one DataFrame, where an integer column with a row that leaves it out
# is float64 (NaN), and MLflow refuses float64 for a long column; a top_k that is not whole is refused here.
INPUTS: dict[str, tuple[str, bool]] = {"query": ("string", True), "top_k": ("double", False),
                                       "query_context": ("boolean", False), "session_id": ("string", False)}
MAX_TOP_K = 1000
# The settings a package records (and its loaded model answers with). Paths are the artifacts' own;
# secrets and hub/TLS access are never recorded; Databricks credentials come from the serving environment.
RECORDED = ("embed_model", "gen_model", "target", "splitter", "buffer_size", "breakpoint_percentile",
            "semantic_vectors", "max_chunk_tokens", "embed_batch_size", "index_type", "top_k", "mode", "fusion",
            "hybrid_alpha", "max_new_tokens", "databricks_host", "databricks_endpoint", "databricks_index",
            "databricks_index_kind", "databricks_embedding_endpoint",
            "databricks_timeout", "databricks_retries", "databricks_backoff")


class BadInput(RagcliError):
    """An input row the model cannot answer (a serving platform's 400)."""


def recorded_settings(settings: Settings) -> dict[str, Any]:
    """The settings a package records: plain values, no secrets, no local paths."""
    public = settings.public()
    return {name: public[name] for name in RECORDED}


def packaged_settings(recorded: Mapping[str, Any], models_dir: str, index_dir: str | None,
                      env: Mapping[str, str] | None = None) -> Settings:
    """The settings of a loaded package: the recorded ones over the serving environment, the
    artifact folders for models and index. A DATABRICKS_HOST set where the model is served wins over
    the recorded host (Model Serving sets it with the credentials it passes through)."""
    import os

    from ragcli.config import load_settings

    env = dict(os.environ) if env is None else dict(env)
    overrides = {name: recorded.get(name) for name in RECORDED if name in recorded}
    if env.get("DATABRICKS_HOST", "").strip():
        overrides.pop("databricks_host", None)
    overrides["models_dir"] = models_dir
    if index_dir is not None:
        overrides["index_dir"] = index_dir
    return load_settings(overrides, env=env)


def _missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return isinstance(value, float) and math.isnan(value)
    except TypeError:  # pragma: no cover - pandas NA and friends
        return False


def input_rows(model_input: Any) -> list[dict[str, Any]]:
    """The rows of a pandas DataFrame, a list of dicts or one dict, missing values as None."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        records = [dict(model_input)]
    elif isinstance(model_input, list) and all(isinstance(r, Mapping) for r in model_input):
        records = [dict(r) for r in model_input]
    else:
        raise BadInput("The input must be rows with a 'query' column: a DataFrame, a list of objects or one "
                       f"object, not {type(model_input).__name__}.")
    rows = []
    for n, record in enumerate(records):
        unknown = sorted(set(record) - set(INPUTS))
        if unknown:
            raise BadInput(f"Row {n}: unknown field(s) {', '.join(map(str, unknown))}; the inputs are "
                           f"{', '.join(INPUTS)}.")
        rows.append({name: (None if _missing(record.get(name)) else record.get(name)) for name in INPUTS})
    return rows


def _checked(n: int, row: dict[str, Any]) -> tuple[str, int | None, bool, str | None]:
    query, top_k, query_context, session_id = row["query"], row["top_k"], row["query_context"], row["session_id"]
    if not isinstance(query, str) or not query.strip():
        raise BadInput(f"Row {n}: 'query' must be a non-empty string.")
    if top_k is not None:
        if isinstance(top_k, bool) or not float(top_k).is_integer() or not 1 <= int(top_k) <= MAX_TOP_K:
            raise BadInput(f"Row {n}: 'top_k' must be a whole number from 1 to {MAX_TOP_K}, not {top_k!r}.")
        top_k = int(top_k)
    query_context = True if query_context is None else bool(query_context)
    if session_id is not None and not isinstance(session_id, str):
        session_id = str(session_id)
    return query, top_k, query_context, session_id


class PackagedPipeline:
    """The loaded models and index of a package; answers rows one at a time (the models are not
    shared between threads)."""

    def __init__(self, settings: Settings) -> None:
        from ragcli.serve.pipeline import Pipeline

        self.settings = settings
        self.pipeline = Pipeline(settings)
        self._lock = threading.Lock()

    def predict(self, model_input: Any) -> list[dict[str, Any]]:
        from ragcli.query import answer, check_question

        rows = [_checked(n, row) for n, row in enumerate(input_rows(model_input))]
        out = []
        with self._lock:
            for n, (query, top_k, query_context, session_id) in enumerate(rows):
                try:
                    check_question(query, self.pipeline.generator)
                except RagcliError as exc:
                    raise BadInput(f"Row {n}: {exc}") from None
                settings = self.settings.replace(top_k=top_k)
                retriever = self.pipeline.retriever() if query_context else None
                result = answer(query, settings, context=query_context, bare=not query_context,
                                retriever=retriever, generator=self.pipeline.generator)
                out.append({**result.to_json(), "session_id": session_id})
        return out
