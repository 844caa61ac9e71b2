"""The Databricks Vector Search client as ragcli uses it: the library import, HTTP timeouts and
retries, error mapping with credentials masked, and the index operations ingest and query need.

Network behaviour. The client library (databricks-ai-search 0.81) sets no HTTP timeout and retries only
GET/DELETE on 429/503/504 with waits of 0, 2, 4 s; a POST (upsert, create) is never retried. While ragcli
calls the client, a narrow hook on the client's per-thread `requests` session (`_cached_get_request_session`
in `databricks.ai_search.utils`) gives every request ragcli's timeout (RAGCLI_DATABRICKS_TIMEOUT) and CA
bundle (RAGCLI_CA_BUNDLE) and turns the library's own retries off, so all retries are ragcli's: every call
(POST included) is retried on 429, 408, 500, 502, 503, 504, timeouts and connection resets, up to
RAGCLI_DATABRICKS_RETRIES times, waiting RAGCLI_DATABRICKS_BACKOFF · 2^n seconds (capped at 30 s, plus up to
20 % jitter) or the server's Retry-After if longer (capped at 60 s). Outside ragcli's calls the hook changes
nothing. Upserts are keyed by chunk id, so a retried upsert that had in fact been applied is harmless.
Every message raised here has the credentials masked.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ragcli.errors import (
    BackendUnavailableError,
    ConfigError,
    DatabricksAuthError,
    DatabricksError,
    IndexNotFoundError,
)
from ragcli.targets.databricks.rows import (
    PRIMARY_KEY,
    SCHEMA,
    VECTOR_COLUMN,
    batches,
    failed_keys,
    struct_value,
)

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.targets.databricks.credentials import DatabricksConfig
    from ragcli.types import Progress

INSTALL_HINT = "The databricks target needs extra packages. Run: pip install 'ragcli[databricks]'"
SCAN_PAGE_ROWS = 500
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # upsert requests are also split by size (the service documents no limit)
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
INDEX_READY_TIMEOUT_S = 30 * 60
INDEX_READY_POLL_S = 5.0


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


class DatabricksClient:
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
                yield {f.get("key"): struct_value(f.get("value") or {}) for f in entry.get("fields") or []}
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
        for batch in batches(rows, self.cfg.batch_rows, MAX_REQUEST_BYTES):
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
        return failed_keys(response, [r[PRIMARY_KEY] for r in batch])

    def delete(self, index: Any, ids: list[str], progress: Progress | None = None) -> list[str]:
        failed: list[str] = []
        for start in range(0, len(ids), self.cfg.batch_rows):
            keys = ids[start : start + self.cfg.batch_rows]
            response = self.call(f"deleting {len(keys)} row(s) from {self.cfg.index}", index.delete, keys)
            failed += failed_keys(response, keys)
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
    for phrase in ("Failed to resolve", "Connection reset by peer", "Connection aborted", "DatabricksClient end closed"):
        if phrase in text:
            return phrase.lower() if phrase != "Failed to resolve" else "unknown host"
    return type(exc).__name__
