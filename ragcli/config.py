"""Settings, read in one place with one precedence.

    command-line flag  >  environment variable  >  .env in the working directory  >  default

`.env` is read with python-dotenv but never written into `os.environ`: a value already set in the
environment always wins, and nothing leaks into other code in the same process. Library functions
take a `Settings` object; only `load_settings` looks at the environment.

Secrets (Hugging Face and Databricks tokens, the `serve` API key) are wrapped in `Secret`, whose `str`
and `repr` are masked, and `redact` removes their values from any text before it is shown or written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragcli.errors import ConfigError

DEFAULT_EMBED_MODEL = "BAAI/bge-small-en-v1.5"
DEFAULT_GEN_MODEL = "google/flan-t5-small"
DEFAULT_MODELS_DIR = "models"
DEFAULT_INDEX_DIR = "ragcli-index"

TARGETS = ("local", "databricks")
INDEX_KINDS = ("direct-access", "delta-sync")  # kinds of Databricks index (--index-kind)
SPLITTERS = ("semantic", "sentence")
SEMANTIC_VECTORS = ("late", "pooled", "window")
# Precision of the semantic splitter's window vectors (they only place breakpoints): "auto" = bf16 where
# the CPU computes bf16 natively (AMX / AVX512-BF16) and the embedder runs in torch fp32, else "same".
WINDOW_PRECISIONS = ("auto", "same", "bf16", "int8")
MODES = ("dense", "bm25", "hybrid")
FUSIONS = ("adaptive", "rrf", "weighted")
INDEX_TYPES = ("flat", "hnsw", "ivf", "auto")
EMBED_BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")  # ragcli.onnx_embed.BACKENDS (kept here: config imports nothing)

# Environment variables whose values are secrets wherever they appear.
SECRET_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "DATABRICKS_TOKEN", "DATABRICKS_CLIENT_SECRET", "RAGCLI_API_KEY")


class Secret:
    """A string that never shows itself: `str()` and `repr()` give `***`; `.get()` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    """Everything a command needs to know, resolved once. Paths are absolute."""

    embed_model: str = DEFAULT_EMBED_MODEL
    gen_model: str = DEFAULT_GEN_MODEL
    models_dir: Path = field(default_factory=lambda: Path(DEFAULT_MODELS_DIR).resolve())
    index_dir: Path = field(default_factory=lambda: Path(DEFAULT_INDEX_DIR).resolve())
    target: str = "local"
    # Splitting
    splitter: str = "semantic"
    buffer_size: int = 1
    breakpoint_percentile: float = 95.0
    semantic_vectors: str = "window"
    window_precision: str = "auto"  # WINDOW_PRECISIONS; ragcli.models.window_embedder_for
    window_cache: str = ""  # semantic splitter's window vectors between ingests: "" = <models_dir>/ragcli-cache, "off", or a folder
    max_chunk_tokens: int = 256
    embed_batch_size: int = 32
    # Loader caps (ragcli.loaders.LoaderLimits): the largest input file, and the largest part of a .docx
    # once decompressed (its word/document.xml), in MiB
    max_file_mb: int = 50
    max_docx_part_mb: int = 50
    embed_backend: str = "torch"  # torch (sentence-transformers), torch-bf16 (the same in bf16 autocast), onnx (ONNX Runtime fp32) or onnx-int8
    index_type: str | None = None  # None: keep the index's own type (flat for a new index)
    # Retrieval and generation
    top_k: int = 4
    mode: str = "dense"
    fusion: str = "adaptive"  # weighted with the α bench measured (ragcli.calibration), else rrf
    hybrid_alpha: float = 0.5
    max_new_tokens: int = 64
    rerank_model: str | None = None  # cross-encoder reordering the top rerank_depth candidates (ragcli.judges)
    rerank_depth: int = 20
    faithfulness_model: str | None = None  # NLI cross-encoder scoring each answer against its passages
    # Hub access (download-model only)
    hf_token: Secret | None = None
    hf_endpoint: str | None = None
    ca_bundle: Path | None = None
    # Databricks target
    databricks_host: str | None = None
    databricks_token: Secret | None = None
    databricks_client_id: str | None = None
    databricks_client_secret: Secret | None = None
    databricks_profile: str | None = None
    databricks_endpoint: str | None = None
    databricks_index: str | None = None
    databricks_index_kind: str = "direct-access"  # or "delta-sync": a Delta table behind the index
    databricks_batch_rows: int = 200  # rows per upsert/delete request
    databricks_timeout: float = 60.0  # seconds per HTTP request (the client library sets none)
    databricks_retries: int = 5  # retries of a transient failure (429, 5xx, timeout, connection reset)
    databricks_backoff: float = 1.0  # first retry delay in seconds; doubles each retry (capped at 30 s)
    # `ragcli serve`: the key clients must send (environment or .env only, never a flag)
    api_key: Secret | None = None
    # Delta Sync index (a Unity Catalog Delta table behind the index, written through a SQL warehouse)
    databricks_warehouse: str | None = None  # SQL warehouse id
    databricks_table: str | None = None  # catalog.schema.table, the index's source table
    databricks_volume: str | None = None  # /Volumes/catalog/schema/volume[/folder], staging for Parquet uploads
    databricks_embedding_endpoint: str | None = None  # managed embeddings (model serving endpoint); None: self-managed
    databricks_statement_timeout: float = 600.0  # seconds a SQL statement may take, a warehouse start included
    databricks_sync_timeout: float = 3600.0  # seconds an index sync may take
    # Diagnostics
    debug: bool = False

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (None values are ignored, so flags can pass through)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def public(self) -> dict[str, Any]:
        """The settings as plain JSON-able values, secrets left out (for reports and manifests)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                out[f.name] = "***" if value else None
            elif isinstance(value, Path):
                out[f.name] = str(value)
            else:
                out[f.name] = value
        return out


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use 1 or 0.")


def _parser_int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a whole number.") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range; use a value from {lo} to {hi}.")
        return value

    return parse


def _parser_float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number.") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range; use a value from {lo} to {hi}.")
        return value

    return parse


def _parser_choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().lower()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} is not one of: {', '.join(choices)}.")
        return value

    return parse


def _parse_str(name: str, raw: str) -> str:
    return raw.strip()


def _parse_path(name: str, raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _parse_cache(name: str, raw: str) -> str:
    value = raw.strip()
    return "off" if value.lower() == "off" else str(Path(value).expanduser().resolve())


def _parse_secret(name: str, raw: str) -> Secret:
    return Secret(raw.strip())


def _parse_host(name: str, raw: str) -> str:
    return raw.strip().rstrip("/")


# field name -> (environment variables in order of preference, parser)
_FIELDS: dict[str, tuple[tuple[str, ...], Callable[[str, str], Any]]] = {
    "embed_model": (("RAGCLI_EMBED_MODEL",), _parse_str),
    "gen_model": (("RAGCLI_GEN_MODEL", "MODEL_ID"), _parse_str),
    "models_dir": (("RAGCLI_MODELS_DIR",), _parse_path),
    "index_dir": (("RAGCLI_INDEX_DIR",), _parse_path),
    "target": (("RAGCLI_TARGET",), _parser_choice(TARGETS)),
    "splitter": (("RAGCLI_SPLITTER",), _parser_choice(SPLITTERS)),
    "buffer_size": (("RAGCLI_BUFFER_SIZE",), _parser_int(0, 10)),
    "breakpoint_percentile": (("RAGCLI_BREAKPOINT_PERCENTILE",), _parser_float(1.0, 100.0)),
    "semantic_vectors": (("RAGCLI_SEMANTIC_VECTORS",), _parser_choice(SEMANTIC_VECTORS)),
    "window_precision": (("RAGCLI_WINDOW_PRECISION",), _parser_choice(WINDOW_PRECISIONS)),
    "window_cache": (("RAGCLI_WINDOW_CACHE",), _parse_cache),
    "max_chunk_tokens": (("RAGCLI_MAX_CHUNK_TOKENS",), _parser_int(16, 8192)),
    "embed_batch_size": (("RAGCLI_EMBED_BATCH_SIZE",), _parser_int(1, 4096)),
    "max_file_mb": (("RAGCLI_MAX_FILE_MB",), _parser_int(1, 4096)),
    "max_docx_part_mb": (("RAGCLI_MAX_DOCX_PART_MB",), _parser_int(1, 4096)),
    "embed_backend": (("RAGCLI_EMBED_BACKEND",), _parser_choice(EMBED_BACKENDS)),
    "index_type": (("RAGCLI_INDEX_TYPE",), _parser_choice(INDEX_TYPES)),
    "top_k": (("RAGCLI_TOP_K",), _parser_int(1, 1000)),
    "mode": (("RAGCLI_MODE",), _parser_choice(MODES)),
    "fusion": (("RAGCLI_FUSION",), _parser_choice(FUSIONS)),
    "hybrid_alpha": (("RAGCLI_HYBRID_ALPHA",), _parser_float(0.0, 1.0)),
    "max_new_tokens": (("RAGCLI_MAX_NEW_TOKENS",), _parser_int(1, 4096)),
    "rerank_model": (("RAGCLI_RERANK_MODEL",), _parse_str),
    "rerank_depth": (("RAGCLI_RERANK_DEPTH",), _parser_int(1, 1000)),
    "faithfulness_model": (("RAGCLI_FAITHFULNESS_MODEL",), _parse_str),
    "hf_token": (("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"), _parse_secret),
    "hf_endpoint": (("HF_ENDPOINT",), _parse_host),
    "ca_bundle": (("RAGCLI_CA_BUNDLE",), _parse_path),
    "databricks_host": (("DATABRICKS_HOST",), _parse_host),
    "databricks_token": (("DATABRICKS_TOKEN",), _parse_secret),
    "databricks_client_id": (("DATABRICKS_CLIENT_ID",), _parse_str),
    "databricks_client_secret": (("DATABRICKS_CLIENT_SECRET",), _parse_secret),
    "databricks_profile": (("DATABRICKS_CONFIG_PROFILE",), _parse_str),
    "databricks_endpoint": (("RAGCLI_DATABRICKS_ENDPOINT",), _parse_str),
    "databricks_index": (("RAGCLI_DATABRICKS_INDEX",), _parse_str),
    "databricks_index_kind": (("RAGCLI_DATABRICKS_INDEX_KIND",), _parser_choice(INDEX_KINDS)),
    "databricks_batch_rows": (("RAGCLI_DATABRICKS_BATCH_ROWS",), _parser_int(1, 10_000)),
    "databricks_timeout": (("RAGCLI_DATABRICKS_TIMEOUT",), _parser_float(0.1, 3600.0)),
    "databricks_retries": (("RAGCLI_DATABRICKS_RETRIES",), _parser_int(0, 20)),
    "databricks_backoff": (("RAGCLI_DATABRICKS_BACKOFF",), _parser_float(0.0, 60.0)),
    "api_key": (("RAGCLI_API_KEY",), _parse_secret),
    "databricks_warehouse": (("RAGCLI_DATABRICKS_WAREHOUSE",), _parse_str),
    "databricks_table": (("RAGCLI_DATABRICKS_TABLE",), _parse_str),
    "databricks_volume": (("RAGCLI_DATABRICKS_VOLUME",), _parse_str),
    "databricks_embedding_endpoint": (("RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT",), _parse_str),
    "databricks_statement_timeout": (("RAGCLI_DATABRICKS_STATEMENT_TIMEOUT",), _parser_float(1.0, 24 * 3600.0)),
    "databricks_sync_timeout": (("RAGCLI_DATABRICKS_SYNC_TIMEOUT",), _parser_float(1.0, 7 * 24 * 3600.0)),
    "debug": (("RAGCLI_DEBUG",), _parse_bool),
}


def read_dotenv(cwd: Path | None = None) -> dict[str, str]:
    """The variables of `.env` in `cwd` (default: the working directory); empty if there is none."""
    path = (cwd or Path.cwd()) / ".env"
    if not path.is_file():
        return {}
    from dotenv import dotenv_values

    return {k: v for k, v in dotenv_values(path).items() if v is not None}


def environment(cwd: Path | None = None) -> dict[str, str]:
    """The process environment laid over `.env`: a variable already set always wins."""
    merged = read_dotenv(cwd)
    merged.update(os.environ)
    return merged


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Resolve settings: `overrides` (flags; None means "not given") > environment > .env > defaults."""
    env = environment(cwd) if env is None else env
    values: dict[str, Any] = {}
    for name, (variables, parse) in _FIELDS.items():
        for var in variables:
            raw = env.get(var)
            if raw is not None and raw.strip() != "":
                values[name] = parse(var, raw)
                break
    for name, value in (overrides or {}).items():
        if name not in _FIELDS:
            raise TypeError(f"unknown setting {name!r}")
        if value is None:
            continue
        if name in ("models_dir", "index_dir", "ca_bundle"):
            value = Path(value).expanduser().resolve()
        elif name == "databricks_host":
            value = _parse_host(name, str(value))
        values[name] = value
    return Settings(**values)


def known_secrets(settings: Settings | None = None, env: Mapping[str, str] | None = None) -> list[str]:
    """Every secret value in play: from the settings and from the secret environment variables."""
    env = environment() if env is None else env
    found = {env[var].strip() for var in SECRET_VARS if env.get(var, "").strip()}
    if settings is not None:
        for f in dataclasses.fields(settings):
            value = getattr(settings, f.name)
            if isinstance(value, Secret) and value:
                found.add(value.get())
    # Longest first, so a secret that contains another is masked whole.
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` with every known secret value replaced by `***`."""
    for secret in known_secrets() if secrets is None else secrets:
        text = text.replace(secret, "***")
    return text
