"""The Databricks Vector Search target: `ingest`, `query` and `bench` against a Direct Vector Access index.

Chunks are embedded locally with the configured model (as for the local index) and upserted as rows

    id (string, the chunk id) | kind ("chunk") | text | source (relpath) | position | file_sha256 |
    chunk_tokens | embedding (array<float>, the model's dimension)

into an index that ragcli creates when it does not exist (the endpoint must exist: endpoints are billed
compute, so ragcli never creates one). One reserved row, id `__ragcli_manifest__` and kind "manifest",
holds ragcli's manifest as JSON in `text`: embedding model, revision and dimension, splitter settings,
corpus fingerprint and the file table. Every query filters on `kind = "chunk"`, so the manifest row is
never a search result. The manifest row is written last, after the chunk upserts and deletes: a file
whose rows do not match the manifest (an interrupted run, rejected rows) is re-processed on the next
ingest, and rows that belong to no current chunk are deleted.

Re-ingest is incremental: the index is scanned (rows come with their vectors), unchanged files are
neither read nor embedded nor uploaded, changed files have their rows replaced (vectors of chunks whose
text did not change are taken from the scan, not re-embedded), removed files have their rows deleted.

Scores (`Hit.score`): Databricks ranks by L2 distance and returns s = 1 / (1 + d²). ragcli normalises
every vector, so for unit vectors d² = 2 − 2·cos and dense scores are converted back to the cosine
similarity, cos = 1 − d²/2 with d² = 1/s − 1: the same scale as the local FAISS index. `hybrid` runs the
service's own HYBRID query (vector + BM25, fused by the service; `--fusion`/`--alpha` do not apply) and
its fused score passes through unchanged. `bm25` runs a FULL_TEXT query (the service's keyword score).

Network behaviour. The client library (databricks-ai-search 0.81) sets no HTTP timeout and retries only
GET/DELETE on 429/503/504 with waits of 0, 2, 4 s; a POST (upsert, create) is never retried. While ragcli
calls the client, a narrow hook on the client's per-thread `requests` session (`_cached_get_request_session`
in `databricks.ai_search.utils`) gives every request ragcli's timeout (RAGCLI_DATABRICKS_TIMEOUT) and CA
bundle (RAGCLI_CA_BUNDLE) and turns the library's own retries off, so all retries are ragcli's: every call
(POST included) is retried on 429, 408, 500, 502, 503, 504, timeouts and connection resets, up to
RAGCLI_DATABRICKS_RETRIES times, waiting RAGCLI_DATABRICKS_BACKOFF · 2^n seconds (capped at 30 s, plus up to
20 % jitter) or the server's Retry-After if longer (capped at 60 s). Outside ragcli's calls the hook changes
nothing. Upserts are keyed by chunk id, so a retried upsert that had in fact been applied is harmless.

Credentials come from DATABRICKS_TOKEN, DATABRICKS_CLIENT_ID + DATABRICKS_CLIENT_SECRET (a service
principal, OAuth M2M; preferred when both kinds are set) or a `~/.databrickscfg` profile
(DATABRICKS_CONFIG_PROFILE, else its DEFAULT section), never from the command line, and are passed to the
client explicitly so no mlflow / databricks-sdk discovery runs. Every message this module raises has the
credentials masked.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ragcli import __version__
from ragcli.errors import (
    BackendUnavailableError,
    ConfigError,
    DatabricksAuthError,
    DatabricksError,
    IndexModelMismatchError,
    IndexNotFoundError,
    UsageError,
)

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.ingest import IngestPlan, IngestReport
    from ragcli.models import Embedder
    from ragcli.types import Hit, Progress


INSTALL_HINT = "The databricks target needs extra packages. Run: pip install 'ragcli[databricks]'"
MANIFEST_ID = "__ragcli_manifest__"
MANIFEST_FORMAT = 1
KIND_CHUNK = "chunk"
KIND_MANIFEST = "manifest"
PRIMARY_KEY = "id"
VECTOR_COLUMN = "embedding"
SCHEMA = {
    "id": "string",
    "kind": "string",
    "text": "string",
    "source": "string",
    "position": "integer",
    "file_sha256": "string",
    "chunk_tokens": "integer",
    "embedding": "array<float>",
}
CHUNK_FILTER = {"kind": KIND_CHUNK}
RESULT_COLUMNS = ["id", "source", "position", "text"]
SCAN_PAGE_ROWS = 500
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # upsert requests are also split by size (the service documents no limit)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
INDEX_READY_TIMEOUT_S = 30 * 60
INDEX_READY_POLL_S = 5.0
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_NAME_PART = re.compile(r"^[A-Za-z0-9_\-]+$")


# -- the client library ------------------------------------------------------------------------------
def client_class() -> type:
    """`AISearchClient` (databricks-ai-search), else the older `VectorSearchClient` name; a missing extra
    is a `BackendUnavailableError` carrying the install command."""
    try:
        from databricks.ai_search.client import AISearchClient

        return AISearchClient
    except ImportError:
        pass
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from databricks.vector_search.client import VectorSearchClient
        return VectorSearchClient
    except ImportError:
        raise BackendUnavailableError(INSTALL_HINT) from None


# -- configuration -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatabricksConfig:
    """Where the index lives and how to authenticate. Secret fields never appear in `repr`."""

    host: str
    index: str
    endpoint: str | None
    auth: str  # "pat" | "service-principal"
    credential_source: str  # for messages: which variables (or profile) the credentials came from
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    batch_rows: int = 200
    timeout: float = 60.0
    retries: int = 5
    backoff: float = 1.0
    ca_bundle: str | None = None

    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.client_secret) if s]


def _check_host(raw: str, variable: str) -> str:
    host = raw.strip().rstrip("/")
    parts = urlsplit(host)
    example = "e.g. https://adb-1234567890123456.7.azuredatabricks.net"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ConfigError(f"{variable} must be the workspace URL starting with https:// ({example}).")
    if parts.username or parts.password:
        raise ConfigError(f"{variable} must not contain credentials; put the token in DATABRICKS_TOKEN.")
    if parts.path or parts.query or parts.fragment:
        raise ConfigError(f"{variable} must be the workspace URL only, without a path or query ({example}).")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"{variable} uses http:// for {parts.hostname}: tokens would travel unencrypted. Use https:// "
            "(plain http is accepted only for a local emulator on 127.0.0.1, localhost or ::1)."
        )
    return host


def _check_index_name(name: str) -> str:
    parts = name.split(".")
    if len(parts) != 3 or not all(_NAME_PART.match(p) for p in parts):
        raise ConfigError(
            f"RAGCLI_DATABRICKS_INDEX={name!r} is not a three-part Unity Catalog name; "
            "set it to catalog.schema.index (letters, digits, _ and -)."
        )
    return name


def _read_profile(name: str | None) -> dict[str, str]:
    """The `~/.databrickscfg` section `name` (or DEFAULT when no name is given and it exists)."""
    import configparser

    path = Path.home() / ".databrickscfg"
    if not path.is_file():
        if name:
            raise ConfigError(f"DATABRICKS_CONFIG_PROFILE={name} is set but {path} does not exist.")
        return {}
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read as an INI file ({type(exc).__name__}).") from None
    section = name or "DEFAULT"
    if section == "DEFAULT":
        values = dict(parser.defaults())
    elif parser.has_section(section):
        values = dict(parser.items(section))
    else:
        raise ConfigError(f"Profile {name!r} (DATABRICKS_CONFIG_PROFILE) is not in {path}.")
    return {k: v.strip() for k, v in values.items() if v and v.strip()}


def resolve_config(settings: Settings, *, need_endpoint: bool) -> DatabricksConfig:
    """Check the Databricks settings; a missing or bad one is a `ConfigError` naming the variable."""
    token = settings.databricks_token.get() if settings.databricks_token else None
    client_id = settings.databricks_client_id or None
    client_secret = settings.databricks_client_secret.get() if settings.databricks_client_secret else None
    host_raw, host_var = settings.databricks_host, "DATABRICKS_HOST"
    source = ""
    if client_id and client_secret:
        auth, source = "service-principal", "the service principal in DATABRICKS_CLIENT_ID/DATABRICKS_CLIENT_SECRET"
    elif client_id or client_secret:
        missing = "DATABRICKS_CLIENT_SECRET" if client_id else "DATABRICKS_CLIENT_ID"
        raise ConfigError(f"{missing} is not set: a service principal needs both DATABRICKS_CLIENT_ID and "
                          "DATABRICKS_CLIENT_SECRET.")
    elif token:
        auth, source = "pat", "the token in DATABRICKS_TOKEN"
    else:
        profile = _read_profile(settings.databricks_profile)
        label = settings.databricks_profile or "DEFAULT"
        if profile.get("client_id") and profile.get("client_secret"):
            auth, client_id, client_secret = "service-principal", profile["client_id"], profile["client_secret"]
            source = f"the service principal of profile {label} in ~/.databrickscfg"
        elif profile.get("token"):
            auth, token = "pat", profile["token"]
            source = f"the token of profile {label} in ~/.databrickscfg"
        else:
            raise ConfigError(
                "No Databricks credentials: set DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID and "
                "DATABRICKS_CLIENT_SECRET (a service principal, recommended), or DATABRICKS_CONFIG_PROFILE "
                "(a profile in ~/.databrickscfg). Tokens are never accepted on the command line."
            )
        if not host_raw and profile.get("host"):
            host_raw, host_var = profile["host"], f"host of profile {label} in ~/.databrickscfg"
    if not host_raw:
        raise ConfigError("DATABRICKS_HOST is not set: set it to the workspace URL, "
                          "e.g. https://adb-1234567890123456.7.azuredatabricks.net")
    host = _check_host(host_raw, host_var)
    if not settings.databricks_index:
        raise ConfigError("RAGCLI_DATABRICKS_INDEX is not set: set it to the index's three-part name "
                          "catalog.schema.index (ragcli ingest --target databricks creates it).")
    index = _check_index_name(settings.databricks_index)
    endpoint = settings.databricks_endpoint or None
    if need_endpoint and not endpoint:
        raise ConfigError("RAGCLI_DATABRICKS_ENDPOINT is not set: set it to the name of the Vector Search "
                          "endpoint that serves (or will serve) the index.")
    return DatabricksConfig(
        host=host, index=index, endpoint=endpoint, auth=auth, credential_source=source, token=token,
        client_id=client_id, client_secret=client_secret,
        batch_rows=int(getattr(settings, "databricks_batch_rows", 200)),
        timeout=float(getattr(settings, "databricks_timeout", 60.0)),
        retries=int(getattr(settings, "databricks_retries", 5)),
        backoff=float(getattr(settings, "databricks_backoff", 1.0)),
        ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
    )


# -- HTTP timeouts and retries (see the module docstring) --------------------------------------------
class _Policy:
    """What ragcli wants from HTTP while it is inside a client call, in this thread."""

    def __init__(self, timeout: float, ca_bundle: str | None) -> None:
        self.timeout = (min(10.0, timeout), timeout)  # (connect, read)
        self.ca_bundle = ca_bundle
        self.retry_after: str | None = None


_ACTIVE = threading.local()
_HOOK_LOCK = threading.Lock()
_adapter_class: type | None = None


def _guarded_adapter_class() -> type:
    """An HTTPAdapter that, while a ragcli policy is active in the thread, adds the timeout and CA bundle,
    turns urllib3's retries off and remembers Retry-After; otherwise it behaves as the one it replaces."""
    global _adapter_class
    if _adapter_class is not None:
        return _adapter_class
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    no_retry = Retry(0, read=False)

    class GuardedAdapter(HTTPAdapter):
        def __init__(self, original: Any) -> None:
            super().__init__(pool_connections=getattr(original, "_pool_connections", 10),
                             pool_maxsize=getattr(original, "_pool_maxsize", 10),
                             max_retries=original.max_retries, pool_block=getattr(original, "_pool_block", False))

        @property
        def max_retries(self) -> Any:  # read by send() when it calls urllib3
            return no_retry if getattr(_ACTIVE, "policy", None) is not None else self._library_retries

        @max_retries.setter
        def max_retries(self, value: Any) -> None:
            self._library_retries = value

        def send(self, request: Any, stream: bool = False, timeout: Any = None, verify: Any = True,
                 cert: Any = None, proxies: Any = None) -> Any:
            policy = getattr(_ACTIVE, "policy", None)
            if policy is not None:
                if timeout is None:
                    timeout = policy.timeout
                if verify is True and policy.ca_bundle:
                    verify = policy.ca_bundle
            response = super().send(request, stream=stream, timeout=timeout, verify=verify, cert=cert,
                                    proxies=proxies)
            if policy is not None:
                policy.retry_after = response.headers.get("Retry-After")
            return response

    _adapter_class = GuardedAdapter
    return GuardedAdapter


def install_http_guard() -> bool:
    """Hook the client library's session factory (once per process). False when this client version
    has no such factory: then requests run without ragcli's timeout and with the library's own retries
    (ragcli's retries still apply on top)."""
    try:
        from databricks.ai_search import utils as lib_utils
    except ImportError:
        return False
    with _HOOK_LOCK:
        original = getattr(lib_utils, "_cached_get_request_session", None)
        if original is None or not callable(original):
            return False
        if getattr(original, "_ragcli_guard", False):
            return True
        adapter_class = _guarded_adapter_class()

        def guarded(*args: Any, **kwargs: Any) -> Any:
            session = original(*args, **kwargs)
            if not getattr(session, "_ragcli_guarded", False):
                for prefix, adapter in list(session.adapters.items()):
                    if not isinstance(adapter, adapter_class):
                        session.mount(prefix, adapter_class(adapter))
                session._ragcli_guarded = True
            return session

        guarded._ragcli_guard = True  # type: ignore[attr-defined]
        lib_utils._cached_get_request_session = guarded
        return True


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, min(float(value.strip()), MAX_RETRY_AFTER_S))
    except ValueError:
        return None  # an HTTP date: fall back to the backoff


class _TooLarge(Exception):
    """413 on an upsert: the caller splits the batch."""


_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]+")
_PAT = re.compile(r"\bdapi[0-9a-fA-F\-]{8,}")
_TAGS = re.compile(r"<[^>]*>")


def _one_line(text: str, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Remote:
    """A connected client plus ragcli's retry policy and error mapping. Every client call goes through
    `call`, so every failure becomes a `RagcliError` with credentials masked."""

    def __init__(self, cfg: DatabricksConfig) -> None:
        self.cfg = cfg
        cls = client_class()
        self.guarded = install_http_guard()
        kwargs: dict[str, Any] = {"workspace_url": cfg.host, "disable_notice": True}
        if cfg.auth == "service-principal":
            kwargs.update(service_principal_client_id=cfg.client_id,
                          service_principal_client_secret=cfg.client_secret)
        else:
            kwargs["personal_access_token"] = cfg.token
        self._objects: list[Any] = []
        self.client = self.call("connecting", cls, **kwargs)
        self._objects.append(self.client)

    # -- masking ---------------------------------------------------------------------------------
    def clean(self, text: str) -> str:
        """`text` without any credential in play (configured secrets, minted OAuth tokens, bearer values)."""
        from ragcli.config import redact

        secrets = list(self.cfg.secrets())
        for obj in self._objects:
            for attr in ("_control_plane_oauth_token", "_read_oauth_token", "_write_oauth_token",
                         "personal_access_token", "service_principal_client_secret"):
                value = getattr(obj, attr, None)
                if isinstance(value, str) and len(value) >= 4:
                    secrets.append(value)
        for secret in sorted(set(secrets), key=len, reverse=True):
            text = text.replace(secret, "***")
        text = _BEARER.sub(r"\1***", text)
        text = _PAT.sub("dapi***", text)
        return redact(text)

    # -- calls -----------------------------------------------------------------------------------
    def call(self, what: str, fn: Callable[..., Any], *args: Any,
             on: dict[str, Callable[[], Exception]] | None = None, **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)` with ragcli's timeout, retries and error mapping. `on` maps a failure kind
        ("not_found", "conflict", "too_large", ...) to the exception to raise instead of the generic one."""
        attempt = 0
        while True:
            policy = _Policy(self.cfg.timeout, self.cfg.ca_bundle)
            previous = getattr(_ACTIVE, "policy", None)
            _ACTIVE.policy = policy
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - every client failure is mapped below
                kind = _classify(exc)
                if on and kind in on:
                    raise on[kind]() from None
                if kind in ("transient", "timeout", "connection") and attempt < self.cfg.retries:
                    time.sleep(self._delay(attempt, policy.retry_after))
                    attempt += 1
                    continue
                raise self._error(exc, kind, what, attempt + 1) from None
            finally:
                _ACTIVE.policy = previous

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.cfg.backoff * (2 ** attempt), MAX_BACKOFF_S) * (1 + 0.2 * random.random())
        server = _retry_after_seconds(retry_after)
        return max(delay, server) if server is not None else delay

    def _detail(self, exc: Exception) -> str:
        content = getattr(exc, "response_content", None)
        if isinstance(content, (bytes, bytearray)) and content:
            try:
                json.loads(content)
            except ValueError:
                text = _one_line(_TAGS.sub(" ", content.decode("utf-8", "replace")), 120)
                return self.clean(f"the response was not JSON: {text!r}" if text else "the response was not JSON")
        return self.clean(_one_line(str(exc)))

    def _error(self, exc: Exception, kind: str, what: str, attempts: int) -> Exception:
        cfg, host = self.cfg, self.cfg.host
        status = getattr(exc, "status_code", None)
        detail = self._detail(exc)
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        http = f"HTTP {status}" if isinstance(status, int) else type(exc).__name__
        if kind == "auth":
            return DatabricksAuthError(
                f"Databricks authentication failed for {host}: {cfg.credential_source} was rejected ({detail}). "
                "Set a valid, unexpired credential in the environment (never on the command line)."
            )
        if kind == "forbidden":
            return DatabricksAuthError(
                f"Databricks denied access for {host} while {what} ({detail}). The identity behind "
                f"{cfg.credential_source} needs CAN USE on the endpoint and SELECT (query) or MODIFY (ingest) "
                f"on {cfg.index}; ask a workspace admin."
            )
        if kind == "not_found":
            return DatabricksError(f"Not found on {host} while {what} ({detail}).")
        if kind == "conflict":
            return DatabricksError(f"Conflict on {host} while {what} ({detail}).")
        if kind == "too_large":
            return DatabricksError(f"Databricks refused a request as too large while {what} ({detail}). "
                                   "Lower RAGCLI_DATABRICKS_BATCH_ROWS.")
        if kind == "transient":
            return DatabricksError(
                f"Databricks Vector Search at {host} kept failing while {what} ({http}{tries}: {detail}). "
                "Try again later, or raise RAGCLI_DATABRICKS_RETRIES / RAGCLI_DATABRICKS_BACKOFF."
            )
        if kind == "timeout":
            return DatabricksError(
                f"No answer from {host} within {cfg.timeout:g} s while {what}{tries}. Try again later, or raise "
                "RAGCLI_DATABRICKS_TIMEOUT."
            )
        if kind == "tls":
            return DatabricksError(
                f"TLS verification failed for {host} ({detail}). If your network inspects TLS, point "
                "RAGCLI_CA_BUNDLE (or REQUESTS_CA_BUNDLE) at your organisation's CA bundle."
            )
        if kind in ("connection", "unreachable"):
            return DatabricksError(f"Cannot reach {host} while {what}{tries} ({_network_reason(exc)}). Check "
                                   "DATABRICKS_HOST and your network or proxy settings.")
        if kind == "config":
            return ConfigError(f"The Databricks client refused the configuration: {detail}")
        if kind == "rejected":
            return DatabricksError(f"Databricks rejected the request while {what} ({http}: {detail}).")
        if kind == "server":
            return DatabricksError(f"Databricks failed while {what} ({http}: {detail}). Try again later.")
        return DatabricksError(f"Unexpected answer from {host} while {what} ({type(exc).__name__}: {detail}).")

    # -- endpoint and index --------------------------------------------------------------------------
    def check_endpoint(self) -> None:
        name = self.cfg.endpoint
        info = self.call(
            f"reading endpoint {name}", self.client.get_endpoint, name,
            on={"not_found": lambda: DatabricksError(
                f"The Vector Search endpoint {name!r} (RAGCLI_DATABRICKS_ENDPOINT) does not exist on "
                f"{self.cfg.host}. Create it in the workspace (Compute > Vector Search > Create endpoint, type "
                "Standard) or set RAGCLI_DATABRICKS_ENDPOINT to an existing one; ragcli never creates endpoints."
            )},
        )
        state = str(((info or {}).get("endpoint_status") or {}).get("state") or "ONLINE").upper()
        if state != "ONLINE":
            raise DatabricksError(f"The Vector Search endpoint {name!r} is {state}; wait until it is ONLINE "
                                  "(workspace: Compute > Vector Search) and run again.")

    def get_index(self, *, missing_ok: bool) -> tuple[Any, dict[str, Any]] | None:
        """(index object, its description), or None when it does not exist and `missing_ok`."""
        name = self.cfg.index

        def missing() -> Exception:
            return _Missing() if missing_ok else IndexNotFoundError(
                f"There is no Databricks Vector Search index {name} on {self.cfg.host}. "
                "Run: ragcli ingest --target databricks <paths>"
            )

        try:
            index = self.call(f"opening index {name}", self.client.get_index, index_name=name,
                              on={"not_found": missing})
        except _Missing:
            return None
        self._objects.append(index)
        info = self.call(f"describing index {name}", index.describe, on={"not_found": missing}) or {}
        return index, info

    def create_index(self, dim: int) -> tuple[Any, dict[str, Any]]:
        name, endpoint = self.cfg.index, self.cfg.endpoint
        try:
            index = self.call(f"creating index {name} on endpoint {endpoint}",
                              self.client.create_direct_access_index, endpoint_name=endpoint, index_name=name,
                              primary_key=PRIMARY_KEY, embedding_dimension=dim,
                              embedding_vector_column=VECTOR_COLUMN, schema=SCHEMA, on={"conflict": _Conflict})
        except _Conflict:  # a retried create whose first attempt went through, or another ingest won a race
            got = self.get_index(missing_ok=False)
            assert got is not None
            return got
        self._objects.append(index)
        info = self.wait_until_ready(index)
        return index, info

    def wait_until_ready(self, index: Any) -> dict[str, Any]:
        deadline = time.monotonic() + INDEX_READY_TIMEOUT_S
        while True:
            info = self.call(f"describing index {self.cfg.index}", index.describe) or {}
            status = info.get("status") or {}
            state = str(status.get("detailed_state") or "")
            if status.get("ready") or "ONLINE" in state:
                return info
            if "OFFLINE" in state or "FAILED" in state:
                raise DatabricksError(f"The new index {self.cfg.index} is {state}: "
                                      f"{self.clean(_one_line(str(status.get('message') or '')))}")
            if time.monotonic() > deadline:
                raise DatabricksError(f"The new index {self.cfg.index} did not come online within "
                                      f"{INDEX_READY_TIMEOUT_S // 60} minutes (state {state or 'unknown'}).")
            time.sleep(INDEX_READY_POLL_S)

    # -- data ------------------------------------------------------------------------------------
    def scan(self, index: Any, progress: Progress | None = None) -> Iterator[dict[str, Any]]:
        """Every row of the index, in primary-key order, as plain dicts."""
        last: str | None = None
        seen = 0
        while True:
            page = self.call(f"scanning index {self.cfg.index}", index.scan, num_results=SCAN_PAGE_ROWS,
                             last_primary_key=last) or {}
            data = page.get("data") or []
            for entry in data:
                yield {f.get("key"): _struct_value(f.get("value") or {}) for f in entry.get("fields") or []}
            seen += len(data)
            if progress:
                progress("scan", seen, 0)
            last = page.get("last_primary_key")
            if not data or not last:
                return

    def write(self, index: Any, rows: list[dict[str, Any]], progress: Progress | None = None,
              stage: str = "upload") -> list[str]:
        """Upsert rows in batches (by count and size); returns the ids the service rejected."""
        failed: list[str] = []
        done = 0
        for batch in _batches(rows, self.cfg.batch_rows, MAX_REQUEST_BYTES):
            failed += self._write_batch(index, batch)
            done += len(batch)
            if progress:
                progress(stage, done, len(rows))
        return failed

    def _write_batch(self, index: Any, batch: list[dict[str, Any]]) -> list[str]:
        try:
            response = self.call(f"upserting {len(batch)} row(s) into {self.cfg.index}", index.upsert, batch,
                                 on={"too_large": _TooLarge} if len(batch) > 1 else None)
        except _TooLarge:
            middle = len(batch) // 2
            return self._write_batch(index, batch[:middle]) + self._write_batch(index, batch[middle:])
        return _failed_keys(response, [r[PRIMARY_KEY] for r in batch])

    def delete(self, index: Any, ids: list[str], progress: Progress | None = None) -> list[str]:
        failed: list[str] = []
        for start in range(0, len(ids), self.cfg.batch_rows):
            keys = ids[start : start + self.cfg.batch_rows]
            response = self.call(f"deleting {len(keys)} row(s) from {self.cfg.index}", index.delete, keys)
            failed += _failed_keys(response, keys)
            if progress:
                progress("delete", min(start + len(keys), len(ids)), len(ids))
        return failed

    def query(self, index: Any, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Rows of a similarity search as dicts, each with `score`."""
        response = self.call(what, index.similarity_search, disable_notice=True, total_retries=0, **kwargs) or {}
        columns = [c.get("name") for c in (response.get("manifest") or {}).get("columns") or []]
        out = []
        for values in (response.get("result") or {}).get("data_array") or []:
            row = dict(zip(columns, values, strict=False))
            row["score"] = float(values[-1])
            out.append(row)
        return out


class _Missing(Exception):
    pass


class _Conflict(Exception):
    pass


def _classify(exc: Exception) -> str:
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        if status == 401:
            return "auth"
        if status == 403:
            return "forbidden"
        if status == 404:
            return "not_found"
        if status == 409:
            return "conflict"
        if status == 413:
            return "too_large"
        if status in TRANSIENT_STATUS:
            return "transient"
        if status == 400 and re.search(r"invalid_client|invalid_grant|unauthorized_client", str(exc)):
            return "auth"
        return "rejected" if 400 <= status < 500 else "server"
    try:
        import requests
    except ImportError:  # pragma: no cover - the client depends on requests
        requests = None
    if requests is not None:
        errors = requests.exceptions
        if isinstance(exc, errors.SSLError):
            return "tls"
        if isinstance(exc, errors.RetryError):
            return "transient"
        if isinstance(exc, errors.Timeout):
            return "timeout"
        if isinstance(exc, (errors.ConnectionError, errors.ChunkedEncodingError)):
            text = str(exc)
            if "NewConnectionError" in text or "NameResolutionError" in text or "Failed to resolve" in text:
                return "unreachable"  # refused, unknown host, no route: retrying will not help
            return "connection"  # reset or dropped mid-request: retried
    if type(exc).__name__ == "InvalidInputException":
        return "config"
    return "other"


def _network_reason(exc: Exception) -> str:
    """The useful part of a requests/urllib3 connection error ("[Errno 111] Connection refused")."""
    text = str(exc)
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if found:
        return found.group(0).strip()
    for phrase in ("Failed to resolve", "Connection reset by peer", "Connection aborted", "Remote end closed"):
        if phrase in text:
            return phrase.lower() if phrase != "Failed to resolve" else "unknown host"
    return type(exc).__name__


def _struct_value(value: dict[str, Any]) -> Any:
    """A protobuf `Value` in JSON form (what scan returns) as a plain Python value."""
    if "string_value" in value:
        return value["string_value"]
    if "number_value" in value:
        return value["number_value"]
    if "bool_value" in value:
        return value["bool_value"]
    if "list_value" in value:
        return [_struct_value(v or {}) for v in (value["list_value"] or {}).get("values") or []]
    if "struct_value" in value:
        return {k: _struct_value(v or {}) for k, v in ((value["struct_value"] or {}).get("fields") or {}).items()}
    return None


def _failed_keys(response: Any, sent: list[str]) -> list[str]:
    response = response if isinstance(response, dict) else {}
    result = response.get("result") or {}
    keys = result.get("failed_primary_keys") or []
    if not keys and str(response.get("status") or "").upper() == "FAILURE":
        keys = list(sent)
    return [str(k) if k is not None else "<missing id>" for k in keys]


def _batches(rows: list[dict[str, Any]], max_rows: int, max_bytes: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for row in rows:
        row_size = len(json.dumps(row, separators=(",", ":"))) + 1
        if batch and (len(batch) >= max_rows or size + row_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(row)
        size += row_size
    if batch:
        yield batch


# -- scores ------------------------------------------------------------------------------------------
def cosine_from_score(score: float) -> float:
    """Databricks' ANN score s = 1/(1+d²) as the cosine similarity of unit vectors: 1 − d²/2."""
    if score <= 0:
        return -1.0
    d2 = 1.0 / score - 1.0
    return max(-1.0, min(1.0, 1.0 - d2 / 2.0))


def _vector(values: Any) -> list[float]:
    return [round(float(x), 7) for x in values]


def _unit_vector(dim: int) -> list[float]:
    return [1.0] + [0.0] * (dim - 1)


# -- index description and manifest --------------------------------------------------------------------
def _index_dimension(info: dict[str, Any]) -> int | None:
    spec = info.get("direct_access_index_spec") or {}
    for col in spec.get("embedding_vector_columns") or []:
        if col.get("name") == VECTOR_COLUMN and col.get("embedding_dimension") is not None:
            return int(col["embedding_dimension"])
    return None


def _check_ragcli_index(info: dict[str, Any], cfg: DatabricksConfig) -> int:
    """The index's vector dimension, after checking that its layout is the one ragcli writes."""
    problems = []
    if str(info.get("index_type") or "").upper() != "DIRECT_ACCESS":
        problems.append(f"it is a {info.get('index_type') or 'unknown'} index, not DIRECT_ACCESS")
    if info.get("primary_key") not in (None, PRIMARY_KEY):
        problems.append(f"its primary key is {info.get('primary_key')!r}, not {PRIMARY_KEY!r}")
    spec = info.get("direct_access_index_spec") or {}
    try:
        schema = json.loads(spec.get("schema_json") or "{}")
    except ValueError:
        schema = {}
    if schema:
        missing = [c for c in SCHEMA if c not in schema]
        if missing:
            problems.append(f"it lacks the column(s) {', '.join(missing)}")
    dim = _index_dimension(info)
    if dim is None and not problems:
        problems.append(f"it has no vector column {VECTOR_COLUMN!r}")
    if problems:
        raise DatabricksError(
            f"The Databricks index {cfg.index} was not created by ragcli ({'; '.join(problems)}). Set "
            "RAGCLI_DATABRICKS_INDEX to a new name: ragcli ingest --target databricks creates the index."
        )
    assert dim is not None
    return dim


def _parse_manifest(text: Any) -> dict[str, Any] | None:
    try:
        data = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") != "ragcli-index" or int(data.get("format", 0)) > MANIFEST_FORMAT:
        return None
    return data


def _model_mismatch(cfg: DatabricksConfig, embed: dict[str, Any], model: str, revision: str | None) -> str | None:
    from ragcli.registry import model_mismatch

    return model_mismatch(embed, model, revision, f"The Databricks index {cfg.index}")


def _dimension_mismatch(cfg: DatabricksConfig, remote_dim: int, model: str, dim: int,
                        manifest: dict[str, Any] | None) -> IndexModelMismatchError:
    built = (manifest or {}).get("embed", {}).get("model")
    hint = f", or pass --embed-model {built} (the model it was built with)" if built and built != model else ""
    return IndexModelMismatchError(
        f"The Databricks index {cfg.index} holds {remote_dim}-d vectors, but {model} gives {dim}-d ones. "
        f"An index cannot change its dimension: set RAGCLI_DATABRICKS_INDEX to a new name (ragcli creates it), "
        f"or delete {cfg.index} in the workspace first{hint}."
    )


# -- ingest ------------------------------------------------------------------------------------------
@dataclass
class _RemoteState:
    chunks: dict[str, dict[str, Any]]  # id -> row (with its vector)
    manifest: dict[str, Any] | None
    manifest_present: bool


def _read_state(remote: Remote, index: Any, progress: Progress | None) -> _RemoteState:
    chunks: dict[str, dict[str, Any]] = {}
    manifest = None
    present = False
    for row in remote.scan(index, progress):
        key = str(row.get(PRIMARY_KEY))
        if key == MANIFEST_ID:
            present = True
            manifest = _parse_manifest(row.get("text"))
        elif row.get("kind") == KIND_CHUNK:
            chunks[key] = row
    return _RemoteState(chunks=chunks, manifest=manifest, manifest_present=present)


def _prior_files(state: _RemoteState) -> dict[str, Any]:
    """The file table `plan_ingest` expects, from the rows actually in the index. A file counts as
    unchanged ("ok") only if its rows agree with the last manifest (same checksum, same row count)."""
    recorded = (state.manifest or {}).get("files") or {}
    by_file: dict[str, list[dict[str, Any]]] = {}
    shas_by_file: dict[str, set[str]] = {}
    for key, row in state.chunks.items():
        try:
            chunk = {"id": int(key), "file": str(row.get("source") or ""), "position": int(row.get("position") or 0),
                     "text": str(row.get("text") or ""), "tokens": int(row.get("chunk_tokens") or 0), "metadata": {}}
        except (TypeError, ValueError):
            continue  # not a ragcli chunk id; it is deleted as a leftover
        if str(chunk["id"]) != key:
            continue  # same: ragcli writes ids as plain decimal strings
        by_file.setdefault(chunk["file"], []).append(chunk)
        shas_by_file.setdefault(chunk["file"], set()).add(str(row.get("file_sha256") or ""))
    out: dict[str, Any] = {}
    for relpath, rows in by_file.items():
        rows.sort(key=lambda r: r["position"])
        shas = shas_by_file[relpath]
        meta = recorded.get(relpath) or {}
        sha = shas.pop() if len(shas) == 1 else None
        ok = (sha is not None and meta.get("sha256") == sha and meta.get("chunks") == len(rows)
              and meta.get("status", "ok") == "ok")
        out[relpath] = {"sha256": sha, "bytes": meta.get("bytes"), "root": meta.get("root"),
                        "status": "ok" if ok else "partial", "chunks": rows}
    return out


def _manifest(plan: IngestPlan, embed: dict[str, Any], partial: set[str]) -> dict[str, Any]:
    files = {}
    for relpath, meta in sorted(plan.files.items()):
        status = "partial" if relpath in partial else meta.get("status", "ok")
        files[relpath] = {"sha256": meta.get("sha256"), "bytes": meta.get("bytes"), "root": meta.get("root"),
                          "chunks": len(meta.get("chunks") or []), "status": status}
    return {"kind": "ragcli-index", "format": MANIFEST_FORMAT, "ragcli_version": __version__, "embed": embed,
            "splitter": plan.splitter, "corpus_sha256": plan.corpus_fingerprint(), "chunks": len(plan.chunks),
            "files": files}


def _same_manifest(old: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    if old is None:
        return False
    ignore = ("updated_at", "ragcli_version")
    return {k: v for k, v in old.items() if k not in ignore} == {k: v for k, v in new.items() if k not in ignore}


def ingest_databricks(
    paths: list[Path | str],
    settings: Settings,
    *,
    rebuild: bool = False,
    encoding: str | None = None,
    progress: Progress | None = None,
    embedder: Embedder | None = None,
) -> IngestReport:
    """Ingest files into the Databricks index (created if missing). Nothing is written to the index
    before every check passed and every changed file was split and embedded."""
    from ragcli.ingest import plan_ingest
    from ragcli.models import load_embedder
    from ragcli.registry import resolve_model

    started = time.perf_counter()
    client_class()  # a missing extra says so before any configuration message
    cfg = resolve_config(settings, need_endpoint=True)
    remote = Remote(cfg)
    remote.check_endpoint()
    found = remote.get_index(missing_ok=True)

    if embedder is not None:
        model_id, revision = embedder.model_id, embedder.revision
    else:
        model_id = settings.embed_model
        revision = resolve_model(settings.embed_model, settings.models_dir, role="embedding model").revision

    state = _RemoteState(chunks={}, manifest=None, manifest_present=False)
    index = None
    if found is not None:
        index, info = found
        served_by = info.get("endpoint_name")
        if served_by and cfg.endpoint and served_by != cfg.endpoint:
            raise DatabricksError(f"The Databricks index {cfg.index} is served by endpoint {served_by!r}, not "
                                  f"{cfg.endpoint!r}: set RAGCLI_DATABRICKS_ENDPOINT={served_by}.")
        remote_dim = _check_ragcli_index(info, cfg)
        state = _read_state(remote, index, progress)
        if state.manifest_present and state.manifest is None and not rebuild:
            raise DatabricksError(
                f"The ragcli manifest row of the Databricks index {cfg.index} cannot be read (damaged, or written "
                f"by a newer ragcli than {__version__}). Upgrade ragcli, or run: ragcli ingest --target databricks "
                "--rebuild <paths>"
            )
        manifest_embed = (state.manifest or {}).get("embed") or {}
        mismatch = _model_mismatch(cfg, manifest_embed, model_id, revision) if state.manifest else None
        if state.manifest and not mismatch and manifest_embed.get("dim"):
            local_dim = int(manifest_embed["dim"])
        else:
            embedder = embedder or load_embedder(settings)
            local_dim = embedder.dim
        if local_dim != remote_dim:
            raise _dimension_mismatch(cfg, remote_dim, model_id, local_dim, state.manifest)
        if mismatch and not rebuild:
            raise IndexModelMismatchError(
                f"{mismatch} Run: ragcli ingest --target databricks --rebuild <paths> "
                f"(or pass --embed-model {manifest_embed.get('model')})."
            )

    # Without a manifest nothing in the index is trusted (its rows may come from another model): everything
    # is embedded again and rows that are not part of this run are deleted.
    use_prior = state.manifest is not None and not rebuild
    prior_files = _prior_files(state) if use_prior else {}
    plan = plan_ingest(paths, settings, prior_files=prior_files,
                       prior_embed=(state.manifest or {}).get("embed") if use_prior else None,
                       prior_splitter=(state.manifest or {}).get("splitter") if use_prior else None,
                       encoding=encoding, progress=progress, embedder=embedder)
    report = plan.report
    report.index = cfg.index
    report.generation = cfg.index
    report.target = "databricks"

    embed = dict(plan.embed_info)
    if not embed.get("dim"):
        embedder = embedder or load_embedder(settings)
        embed = dict(embedder.info(), chunk_token_limit=embedder.chunk_token_limit)
    if index is None:
        if progress:
            progress("create index", 0, 1)
        index, _info = remote.create_index(int(embed["dim"]))
        if progress:
            progress("create index", 1, 1)

    # Rows to upsert: every chunk embedded or re-used in this run (chunks of unchanged files stay as they are).
    rows: list[dict[str, Any]] = []
    reembed: list[tuple[int, Any]] = []
    for chunk in plan.chunks:
        vector = plan.new_vectors.get(chunk.id)
        if vector is None:
            continue
        if isinstance(vector, tuple):  # ("reuse", prior chunk id): the vector came with the scan
            prior = state.chunks.get(str(vector[1])) or {}
            values = prior.get(VECTOR_COLUMN)
            if isinstance(values, list) and len(values) == int(embed["dim"]):
                vector = values
            else:
                reembed.append((len(rows), chunk))
                vector = None
        rows.append({
            PRIMARY_KEY: str(chunk.id), "kind": KIND_CHUNK, "text": chunk.text, "source": chunk.file,
            "position": chunk.position, "file_sha256": str(plan.files[chunk.file].get("sha256") or ""),
            "chunk_tokens": chunk.tokens, VECTOR_COLUMN: _vector(vector) if vector is not None else None,
        })
    if reembed:  # the service returned no vector for some rows: embed those texts again
        embedder = embedder or load_embedder(settings)
        vectors = embedder.embed_documents([c.text for _, c in reembed])
        for (row_number, _), v in zip(reembed, vectors, strict=True):
            rows[row_number][VECTOR_COLUMN] = _vector(v)
        report.chunks_reused -= len(reembed)
        report.chunks_embedded += len(reembed)
        report.texts_embedded += len(reembed)

    keep = {str(c.id) for c in plan.chunks}
    stale = sorted(key for key in state.chunks if key not in keep)
    failed_upserts = remote.write(index, rows, progress) if rows else []
    failed_deletes = remote.delete(index, stale, progress) if stale else []

    by_id = {str(c.id): c.file for c in plan.chunks}
    partial = {by_id[k] for k in failed_upserts if k in by_id}
    manifest = json.loads(json.dumps(_manifest(plan, embed, partial)))  # JSON types, as read back
    wrote_manifest = False
    if rows or stale or rebuild or not _same_manifest(state.manifest, manifest):
        manifest["updated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest_row = {PRIMARY_KEY: MANIFEST_ID, "kind": KIND_MANIFEST, "text": json.dumps(manifest, sort_keys=True),
                        "source": "", "position": -1, "file_sha256": "", "chunk_tokens": 0,
                        VECTOR_COLUMN: _unit_vector(int(embed["dim"]))}
        failed_manifest = remote.write(index, [manifest_row], stage="manifest")
        if failed_manifest:
            raise DatabricksError(f"Databricks rejected ragcli's manifest row of {cfg.index}; the chunk rows were "
                                  "written. Run the ingest again.")
        wrote_manifest = True
    report.published = bool(rows or stale or wrote_manifest)
    report.seconds = round(time.perf_counter() - started, 3)

    failed = failed_upserts + failed_deletes
    if failed:
        shown = ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
        what = []
        if failed_upserts:
            what.append(f"{len(failed_upserts)} of {len(rows)} row upserts")
        if failed_deletes:
            what.append(f"{len(failed_deletes)} of {len(stale)} row deletes")
        raise DatabricksError(
            f"Databricks rejected {' and '.join(what)} in {cfg.index} (ids: {shown}). The other rows were "
            "written and the affected files are marked for another try: run the same ingest again."
        )
    return report


# -- query -------------------------------------------------------------------------------------------
class _RemoteChunks(Sequence):
    """The index's chunks: the count comes from the manifest; the rows are scanned only if iterated."""

    def __init__(self, count: int, load: Callable[[], list[Any]]) -> None:
        self._count = count
        self._load = load
        self._rows: list[Any] | None = None

    def _all(self) -> list[Any]:
        if self._rows is None:
            self._rows = self._load()
        return self._rows

    def __len__(self) -> int:
        return self._count if self._rows is None else len(self._rows)

    def __getitem__(self, item: Any) -> Any:
        return self._all()[item]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._all())


class DatabricksGeneration:
    """What `query`/`bench` read about the remote index, shaped like a local `Generation`."""

    def __init__(self, name: str, manifest: dict[str, Any], dim: int, chunks: Sequence) -> None:
        self.name = name
        self.manifest = manifest
        self.dim = dim
        self.files: dict[str, Any] = dict(manifest.get("files") or {})
        self.chunks = chunks

    @property
    def embed(self) -> dict[str, Any]:
        return self.manifest.get("embed") or {}

    @property
    def splitter(self) -> dict[str, Any]:
        return self.manifest.get("splitter") or {}


class DatabricksRetriever:
    """`query.Retriever`'s interface over a Databricks index."""

    def __init__(self, remote: Remote, index: Any, generation: DatabricksGeneration,
                 embedder: Embedder | None, settings: Settings) -> None:
        self.remote = remote
        self.index = index
        self.generation = generation
        self.embedder = embedder
        self._settings = settings

    def _get_embedder(self) -> Embedder:
        if self.embedder is None:
            from ragcli.models import load_embedder

            _check_query_model(self.remote.cfg, self.generation, self._settings, None)
            self.embedder = load_embedder(self._settings)
            _check_query_dim(self.remote.cfg, self.generation, self.embedder)
        return self.embedder

    def search(self, question: str, k: int, mode: str, *, fusion: str = "rrf", alpha: float = 0.5,
               timings: dict[str, float] | None = None) -> list[Hit]:
        """Top `k` chunks. `fusion` and `alpha` do not apply: the service fuses hybrid results itself."""
        from ragcli.types import Hit

        timings = {} if timings is None else timings
        if mode not in ("dense", "hybrid", "bm25"):
            raise UsageError(f"Unknown retrieval mode {mode!r}; use dense, bm25 or hybrid.")
        kwargs: dict[str, Any] = {"columns": RESULT_COLUMNS, "filters": CHUNK_FILTER, "num_results": k}
        if mode in ("dense", "hybrid"):
            embedder = self._get_embedder()
            t = time.perf_counter()
            kwargs["query_vector"] = _vector(embedder.embed_query(question))
            timings["embed_question"] = time.perf_counter() - t
        if mode == "hybrid":
            kwargs.update(query_text=question, query_type="HYBRID")
        elif mode == "bm25":
            kwargs.update(query_text=question, query_type="FULL_TEXT")
        t = time.perf_counter()
        try:
            rows = self.remote.query(self.index, f"searching {self.remote.cfg.index} ({mode})", **kwargs)
        except DatabricksError as exc:
            if mode != "dense" and "rejected the request" in str(exc):
                raise DatabricksError(f"{exc} {mode} search needs full-text support on the index; "
                                      "--mode dense works on every Vector Search index.") from None
            raise
        timings[f"search_{mode}"] = time.perf_counter() - t
        hits = []
        for rank, row in enumerate(rows[:k], 1):
            try:
                chunk_id = int(row.get("id"))
            except (TypeError, ValueError):
                continue  # never answer from a row that is not a ragcli chunk
            score = cosine_from_score(row["score"]) if mode == "dense" else row["score"]
            hits.append(Hit(chunk_id=chunk_id, file=str(row.get("source") or ""),
                            position=int(float(row.get("position") or 0)), score=round(float(score), 6),
                            text=str(row.get("text") or ""), rank=rank))
        return hits


def _check_query_model(cfg: DatabricksConfig, generation: DatabricksGeneration, settings: Settings,
                       embedder: Embedder | None) -> None:
    from ragcli.registry import resolve_model

    embed = generation.embed
    if embedder is not None:
        model, revision = embedder.model_id, embedder.revision
    else:
        model = settings.embed_model
        revision = None  # only resolved when the names agree: a different model is refused either way
        if embed.get("model") == model:
            revision = resolve_model(model, settings.models_dir, role="embedding model").revision
    problem = _model_mismatch(cfg, embed, model, revision)
    if problem:
        raise IndexModelMismatchError(f"{problem} Pass --embed-model {embed.get('model')}, or run: "
                                      "ragcli ingest --target databricks --rebuild <paths>")


def _check_query_dim(cfg: DatabricksConfig, generation: DatabricksGeneration, embedder: Embedder) -> None:
    if embedder.dim != generation.dim:
        raise _dimension_mismatch(cfg, generation.dim, embedder.model_id, embedder.dim, generation.manifest)


def _read_manifest_row(remote: Remote, index: Any, dim: int) -> dict[str, Any] | None:
    rows = remote.query(index, f"reading ragcli's manifest row of {remote.cfg.index}", columns=["id", "text"],
                        query_vector=_unit_vector(dim), filters={"kind": KIND_MANIFEST}, num_results=1)
    for row in rows:
        if str(row.get("id")) == MANIFEST_ID:
            return _parse_manifest(row.get("text"))
    return None


def open_databricks_retriever(settings: Settings, embedder: Embedder | None = None) -> DatabricksRetriever:
    """Open the configured index for searching: check that ragcli built it with this embedding model.
    The embedding model is loaded now for dense/hybrid (or taken from `embedder`)."""
    from ragcli.types import Chunk

    client_class()
    cfg = resolve_config(settings, need_endpoint=False)
    remote = Remote(cfg)
    found = remote.get_index(missing_ok=False)
    assert found is not None
    index, info = found
    dim = _check_ragcli_index(info, cfg)
    manifest = _read_manifest_row(remote, index, dim)
    if manifest is None:
        raise IndexNotFoundError(
            f"The Databricks index {cfg.index} has no readable ragcli manifest: no ragcli ingest (of this "
            "version or older) has finished into it. "
            "Run: ragcli ingest --target databricks <paths>"
        )

    def load_chunks() -> list[Any]:
        state = _read_state(remote, index, None)
        chunks = [Chunk.from_json(row) for meta in _prior_files(state).values() for row in meta["chunks"]]
        return sorted(chunks, key=lambda c: (c.file, c.position))

    generation = DatabricksGeneration(cfg.index, manifest, dim, _RemoteChunks(int(manifest.get("chunks") or 0),
                                                                                load_chunks))
    if embedder is not None:
        _check_query_model(cfg, generation, settings, embedder)
        _check_query_dim(cfg, generation, embedder)
    retriever = DatabricksRetriever(remote, index, generation, embedder, settings)
    if embedder is None and settings.mode in ("dense", "hybrid"):
        retriever._get_embedder()
    return retriever
