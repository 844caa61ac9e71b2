"""Local emulator of the Databricks Vector Search REST API, for tests and demos.

The real client library (``databricks-ai-search`` 0.81) talks to it over HTTP on 127.0.0.1; nothing in the
client is mocked. Standard library only. The endpoint-scoped data paths that client 0.21 uses are served too,
but 0.21 itself was not tried.

    with Emulator(tokens={"dapi-test"}, endpoints=["ep"]) as emu:
        client = AISearchClient(workspace_url=emu.url, personal_access_token="dapi-test", disable_notice=True)
        emu.fail("upsert-data", 429, times=1, retry_after=1)     # fault injection
        emu.rows("main.default.idx"), emu.requests("query")      # state and request log

By hand:  python tests/dbx_emulator.py --port 8765 --token dapi-demo
(``python -m tests.dbx_emulator`` works only if ``tests`` resolves to this folder: databricks-ai-search 0.81
installs its own top-level ``tests`` package into site-packages, which wins over a folder without
``__init__.py``.)

Contract: /work/shared/docs/databricks-vector-search.md (§2 REST, §8 checklist). Served: endpoint-scoped and
index-scoped index paths, endpoints CRUD, upsert-data, delete-data, query, query-next-page, scan, sync,
/oidc/v1/token, /api/2.0/serving-endpoints/{name}, /.well-known/databricks-config.

Emulator choices (no public source documents these; they are rules for the test double, not claims about the
service):
- Upsert: a row with a missing/null primary key, an unknown column, a value of the wrong type, or a missing or
  wrong-dimension vector fails on its own and its key goes to ``failed_primary_keys`` (``null`` when the key is
  missing); status SUCCESS / PARTIAL_SUCCESS / FAILURE. Rows replace earlier rows with the same key whole.
  ``inputs_json`` that is not a JSON array of objects is 400. Upserting into a Delta Sync index is 400.
- Empty repeated fields are omitted, as proto3 JSON does: ``failed_primary_keys`` on SUCCESS, ``data_array``
  on an empty query result. ``success_row_count`` of delete-data counts the keys asked for; unknown keys succeed.
- Query: 400 INVALID_PARAMETER_VALUE for no vector and no text, a wrong dimension, an unknown column, a
  malformed filter, ``query_text`` with no vector (the emulator never embeds), ``num_results`` outside
  1..10,000, ``filter_string`` (storage-optimized syntax), ``reranker``, ``query_columns``, ``sort_columns``,
  ``facets``, and cross-column ``"a OR b"`` filters. ``query_text`` with ANN and a vector is ignored.
- HYBRID (any case): reciprocal rank fusion, k=60, of the vector rank (L2) and the BM25 rank (k1=1.2, b=0.75,
  ``\\w+`` lower-case tokens over every ``string`` column except the primary key; rows without a term match
  get no text rank); score = the RRF sum; at most 200 rows. FULL_TEXT: BM25 score alone, matching rows only,
  at most 200 rows. ``score_threshold`` applies to whichever score is returned.
- Filters: null values never match equality, IN, ranges or LIKE, and always match NOT. LIKE without ``%`` is a
  case-insensitive token match (every token of the value is a token of the cell); with ``%``/``_`` it is a
  case-sensitive SQL pattern on the whole cell. A list of filter dicts is ANDed. Range operators take scalars.
- Ties in score are broken by primary key, ascending. Page tokens are single use.
- Scan: null cells are omitted from ``fields``; ``last_primary_key`` is a string; an empty page has no
  ``last_primary_key``. Pages hold ``num_results`` rows (default 10).
- Index names must be three-part (``catalog.schema.index``). Deleting an endpoint that still has indexes is 400
  INVALID_STATE. An index addressed under the wrong endpoint is 404. Unknown routes and methods are 404
  ENDPOINT_NOT_FOUND. ``status.index_url`` is absent unless ``index_url_host`` is given (then
  ``http://{index_url_host}:{port}/api/2.0/vector-search/endpoints/{ep}/indexes/{name}``).
- Limits are configuration (the service documents none): ``max_dimension`` (400 at index creation),
  ``max_upsert_rows`` (400 for the whole request), ``max_request_bytes`` (413 INVALID_PARAMETER_VALUE by
  default, ``too_large_status=400`` to change; checked before auth, the body is drained).
- Order of checks per request: injected fault, request size, authentication, then the operation. Each request
  consumes at most one injected fault.
- Auth: a missing, unknown, revoked or expired bearer token is 401 UNAUTHENTICATED with a fixed message. OAuth
  tokens minted by /oidc/v1/token are ``emu-oauth-<hex>`` and expire after ``oauth_expires_in`` seconds. With
  ``enforce_authorization_details=True`` a data-plane token must carry a matching ReadVectorIndex /
  WriteVectorIndex entry (403 PERMISSION_DENIED otherwise); tokens without authorization_details pass.
- Serving endpoints: every name exists; ``route_optimized`` is true only for names in
  ``route_optimized_serving_endpoints``.
- Delta Sync indexes without a ``workspace`` have no rows and ``sync`` does nothing. With one
  (tests/dbx_workspace.py: SQL statements, the Files API, Delta tables) they read their source Delta table:
  see that module for what is served there.
"""

from __future__ import annotations

import argparse
import base64
import copy
import json
import math
import re
import secrets
import socket
import struct
import sys
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["Emulator", "RequestRecord", "ApiError", "main"]

API = "/api/2.0/vector-search"
PAGE_SIZE = 1000
MAX_RESULTS = 10_000
TEXT_MAX_RESULTS = 200
RRF_K = 60
BM25_K1 = 1.2
BM25_B = 0.75

ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_ALREADY_EXISTS",
    413: "INVALID_PARAMETER_VALUE",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
FAULT_MESSAGES = {
    429: "Too many requests. Please retry later.",
    500: "Internal error (injected by the emulator).",
    502: "Bad gateway (injected by the emulator).",
    503: "The service is temporarily unavailable (injected by the emulator).",
    504: "Deadline exceeded (injected by the emulator).",
}
UNPARSEABLE_BODY = b"<html><body><h1>500 Internal Server Error</h1>upstream connect error</body></html>"

SCALAR_TYPES = {
    "string",
    "integer",
    "long",
    "int",
    "bigint",
    "short",
    "float",
    "double",
    "boolean",
    "date",
    "timestamp",
}
ARRAY_INNER = {"float", "double", "string", "integer", "long", "int", "bigint"}
INT_TYPES = {"integer", "long", "int", "bigint", "short"}
PK_TYPES = {"string"} | INT_TYPES

# op name -> data-plane permission needed by an SP token carrying authorization_details
DATA_OPS = {
    "query": "ReadVectorIndex",
    "query-next-page": "ReadVectorIndex",
    "scan": "ReadVectorIndex",
    "upsert-data": "WriteVectorIndex",
    "delete-data": "WriteVectorIndex",
}
INDEX_OP_METHODS = {
    "query": {"GET", "POST"},
    "query-next-page": {"GET", "POST"},
    "scan": {"GET", "POST"},
    "upsert-data": {"POST"},
    "delete-data": {"DELETE", "POST"},
    "sync": {"POST"},
}

_WORD = re.compile(r"\w+", re.UNICODE)
_RANGE_KEY = re.compile(r"^(.*?)\s*(<=|>=|<|>)$")
_WORD_OP_KEY = re.compile(r"^(.*?)\s+(NOT|LIKE)$", re.IGNORECASE)


class ApiError(Exception):
    """An error answered as ``{"error_code", "message"}`` with an HTTP status."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code or ERROR_CODES.get(status, "INTERNAL_ERROR")


class _OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str):
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


@dataclass
class RequestRecord:
    """One request as the emulator saw it. Tokens and secrets are never stored."""

    method: str
    path: str  # normalised: '//' collapsed, no query string
    op: str  # e.g. "query", "upsert-data", "get-index"; "unknown" for unrouted paths
    endpoint: str | None
    index: str | None
    query: dict[str, list[str]]
    body: Any  # parsed JSON with vectors summarised as "<vector dim=N>"; inputs_json parsed the same way
    auth: str | None  # "bearer", "basic", "other" or None (no Authorization header)
    authorized: bool | None = None  # None when the request never reached the auth check
    status: int | None = None
    fault: str | None = None  # "status:429", "unparseable:500", "delay:2.0", "reset"
    sdk_version: str | None = None  # X-Databricks-Python-SDK-Version header
    oauth_client_id: str | None = None  # Basic-auth user of /oidc/v1/token (never the secret)


@dataclass
class _Fault:
    op: str
    kind: str  # status | unparseable | delay | reset
    remaining: int | None  # None: until cleared
    status: int = 500
    retry_after: str | None = None
    error_code: str | None = None
    message: str | None = None
    body: bytes | None = None
    seconds: float = 0.0


@dataclass
class _Index:
    name: str
    endpoint_name: str
    primary_key: str
    index_type: str
    spec: dict
    schema: dict[str, str]
    vector_column: str | None
    dimension: int | None
    embedding_model: str | None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created: int = field(default_factory=lambda: int(time.time() * 1000))
    rows: dict[Any, dict] = field(default_factory=dict)


@dataclass
class _Ctx:
    method: str
    path: str
    op: str
    params: dict[str, str]
    query: dict[str, list[str]]
    body: dict
    token_info: dict | None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dbx-vector-search-emulator/1"

    def setup(self):
        super().setup()
        try:  # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, format, *args):  # noqa: A002 - keep stderr quiet
        pass

    def do_GET(self):
        self.server.emulator._handle(self)

    do_POST = do_DELETE = do_PATCH = do_PUT = do_HEAD = do_GET


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if isinstance(sys.exc_info()[1], OSError):  # client went away (timeouts, resets): not news
            return
        super().handle_error(request, client_address)


class Emulator:
    """Databricks Vector Search emulator on 127.0.0.1 (port 0 = any free port).

    :param tokens: valid bearer tokens (personal access tokens).
    :param service_principals: ``{client_id: client_secret}`` accepted by /oidc/v1/token.
    :param endpoints: endpoint names created up front (STANDARD, ONLINE).
    :param max_upsert_rows, max_request_bytes, max_dimension: limits; None = unlimited.
    :param index_url_host: if set, ``status.index_url`` names this host (e.g. "localhost") on the same port, so
        the client treats it as a separate data-plane origin.
    :param oauth_expires_in: lifetime in seconds of minted OAuth tokens.
    :param refused_scopes: scopes /oidc/v1/token refuses with 403 ``access_denied`` (tests the client's fallback).
    :param enforce_authorization_details: check Read/WriteVectorIndex entries of SP tokens on data-plane calls.
    :param workspace: a ``dbx_workspace.Workspace`` served on the same port (SQL, Files API, Delta tables).
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        service_principals: dict[str, str] | None = None,
        endpoints: Iterable[str] = (),
        max_upsert_rows: int | None = None,
        max_request_bytes: int | None = None,
        max_dimension: int | None = None,
        too_large_status: int = 413,
        index_url_host: str | None = None,
        oauth_expires_in: int = 3600,
        refused_scopes: Iterable[str] = (),
        enforce_authorization_details: bool = False,
        route_optimized_serving_endpoints: Iterable[str] = (),
        workspace: Any = None,
    ):
        if isinstance(tokens, str):
            tokens = {tokens}
        self._tokens: set[str] = set(tokens)
        self._service_principals = dict(service_principals or {})
        self._oauth_tokens: dict[str, dict] = {}
        self.host = host
        self._requested_port = port
        self.max_upsert_rows = max_upsert_rows
        self.max_request_bytes = max_request_bytes
        self.max_dimension = max_dimension
        self.too_large_status = too_large_status
        self.index_url_host = index_url_host
        self.oauth_expires_in = oauth_expires_in
        self.refused_scopes = set(refused_scopes)
        self.enforce_authorization_details = enforce_authorization_details
        self.route_optimized_serving_endpoints = set(route_optimized_serving_endpoints)
        self.workspace = workspace

        self._lock = threading.RLock()
        self._stop_event = threading.Event()
        self._endpoints: dict[str, dict] = {}
        self._indexes: dict[str, _Index] = {}
        self._pages: dict[str, dict] = {}
        self._faults: list[_Fault] = []
        self._log: list[RequestRecord] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for name in endpoints:
            self.create_endpoint(name)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stop_event.clear()
        self._server = _Server((self.host, self._requested_port), _Handler)
        self._server.emulator = self
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="dbx-emulator",
            daemon=True,
        )
        self._thread.start()
        if self.workspace is not None:
            self.workspace.url = self.url
        return self

    def stop(self) -> None:
        self._stop_event.set()  # wakes injected delays
        if self.workspace is not None:
            self.workspace.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """Workspace URL without a trailing slash, e.g. http://127.0.0.1:54321."""
        return f"http://{self.host}:{self.port}"

    # ------------------------------------------------------------------ tokens

    def add_token(self, token: str) -> None:
        with self._lock:
            self._tokens.add(token)

    def revoke_token(self, token: str) -> None:
        """Make a PAT or minted OAuth token invalid (simulates expiry or revocation)."""
        with self._lock:
            self._tokens.discard(token)
            self._oauth_tokens.pop(token, None)

    def expire_oauth_tokens(self) -> None:
        with self._lock:
            self._oauth_tokens.clear()

    # ------------------------------------------------------------------ fault injection

    def fail(
        self,
        op: str,
        status: int,
        *,
        times: int | None = 1,
        retry_after: int | str | None = None,
        error_code: str | None = None,
        message: str | None = None,
    ) -> None:
        """Answer the next ``times`` requests for ``op`` ("*" = any) with ``status`` and a JSON error body.

        ``times=None`` keeps failing until :meth:`clear_faults`. ``retry_after`` sets the Retry-After header.
        """
        self._add_fault(
            _Fault(
                op=op,
                kind="status",
                remaining=times,
                status=status,
                retry_after=None if retry_after is None else str(retry_after),
                error_code=error_code,
                message=message,
            )
        )

    def fail_unparseable(
        self, op: str, status: int = 500, *, times: int | None = 1, body: bytes = UNPARSEABLE_BODY
    ) -> None:
        """Answer with a non-JSON (HTML) body, as a proxy in front of the service might."""
        self._add_fault(_Fault(op=op, kind="unparseable", remaining=times, status=status, body=body))

    def delay(self, op: str, seconds: float, *, times: int | None = 1) -> None:
        """Sleep ``seconds`` before handling the request normally (for client timeouts)."""
        self._add_fault(_Fault(op=op, kind="delay", remaining=times, seconds=seconds))

    def reset_connection(self, op: str, *, times: int | None = 1) -> None:
        """Close the connection (TCP RST) without answering."""
        self._add_fault(_Fault(op=op, kind="reset", remaining=times))

    def clear_faults(self, op: str | None = None) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if op is not None and f.op != op]

    def faults_pending(self, op: str | None = None) -> int:
        """Number of queued fault responses left (a fault with times=None counts as 1)."""
        with self._lock:
            return sum(f.remaining or 1 for f in self._faults if op is None or f.op == op)

    def _add_fault(self, fault: _Fault) -> None:
        if fault.remaining is not None and fault.remaining < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, op: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.op in (op, "*"):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining == 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # ------------------------------------------------------------------ log and state

    def requests(self, op: str | None = None) -> list[RequestRecord]:
        """Logged requests, oldest first, optionally only those of one op."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._log if op is None or r.op == op]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def rows(self, index_name: str) -> list[dict]:
        """Copies of the stored rows of an index, in primary-key order."""
        with self._lock:
            idx = self._get_index(index_name)
            self._settle(idx)
            return [copy.deepcopy(idx.rows[k]) for k in sorted(idx.rows, key=_sort_key)]

    def index_info(self, index_name: str) -> dict:
        """What GET index returns."""
        with self._lock:
            idx = self._get_index(index_name)
            self._settle(idx)
            return self._index_json(idx)

    def endpoint_names(self) -> list[str]:
        with self._lock:
            return sorted(self._endpoints)

    def index_names(self) -> list[str]:
        with self._lock:
            return sorted(self._indexes)

    # Python-side seeding, same validation as the REST calls (raises ApiError).

    def create_endpoint(self, name: str, endpoint_type: str = "STANDARD") -> dict:
        with self._lock:
            return self._create_endpoint({"name": name, "endpoint_type": endpoint_type})

    def create_direct_access_index(
        self,
        endpoint_name: str,
        index_name: str,
        *,
        primary_key: str,
        embedding_dimension: int,
        embedding_vector_column: str,
        schema: dict[str, str],
    ) -> dict:
        body = {
            "name": index_name,
            "index_type": "DIRECT_ACCESS",
            "primary_key": primary_key,
            "direct_access_index_spec": {
                "embedding_vector_columns": [
                    {"name": embedding_vector_column, "embedding_dimension": embedding_dimension}
                ],
                "schema_json": json.dumps(schema),
            },
        }
        with self._lock:
            return self._create_index(endpoint_name, body)

    def seed_rows(self, index_name: str, rows: list[dict]) -> dict:
        """Upsert rows without HTTP (and without ``max_upsert_rows``); returns the upsert-data response."""
        with self._lock:
            return self._upsert(self._get_index(index_name), rows, enforce_limit=False)

    # ------------------------------------------------------------------ HTTP plumbing

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        method = h.command
        split = urlsplit(h.path)
        path = "/" + "/".join(s for s in split.path.split("/") if s)
        query = parse_qs(split.query, keep_blank_values=True)
        auth_header = h.headers.get("Authorization")
        auth_kind = None
        if auth_header is not None:
            scheme = auth_header.split(" ", 1)[0].lower()
            auth_kind = scheme if scheme in ("bearer", "basic") else "other"
        op, params = self._route(method, path)
        if self.workspace is not None:
            if op == "unknown":
                op, params = self.workspace.route(method, [unquote(s) for s in path.split("/") if s])
            elif op == "well-known":
                op = "host-metadata"  # a workspace serves its host metadata (databricks-sdk reads it)
        record = RequestRecord(
            method=method,
            path=path,
            op=op,
            endpoint=params.get("endpoint"),
            index=params.get("index"),
            query=query,
            body=None,
            auth=auth_kind,
            sdk_version=h.headers.get("X-Databricks-Python-SDK-Version"),
        )
        with self._lock:
            self._log.append(record)

        try:
            raw, too_large = self._read_body(h)
        except (ValueError, OSError):
            h.close_connection = True
            self._send(h, record, 400, {"error_code": "BAD_REQUEST", "message": "Malformed request body."})
            return

        fault = self._take_fault(op)
        if fault is not None:
            if fault.kind == "delay":
                record.fault = f"delay:{fault.seconds}"
                if self._stop_event.wait(fault.seconds):
                    h.close_connection = True
                    return
            elif fault.kind == "reset":
                record.fault = "reset"
                self._reset(h)
                return
            elif fault.kind == "unparseable":
                record.fault = f"unparseable:{fault.status}"
                self._send_raw(h, record, fault.status, fault.body or b"", "text/html; charset=utf-8")
                return
            else:
                record.fault = f"status:{fault.status}"
                headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
                self._send(
                    h,
                    record,
                    fault.status,
                    {
                        "error_code": fault.error_code or ERROR_CODES.get(fault.status, "INTERNAL_ERROR"),
                        "message": fault.message or FAULT_MESSAGES.get(fault.status, "Injected error."),
                    },
                    headers,
                )
                return

        if too_large:
            self._send(
                h,
                record,
                self.too_large_status,
                {
                    "error_code": ERROR_CODES.get(self.too_large_status, "INVALID_PARAMETER_VALUE"),
                    "message": f"Request body exceeds the limit of {self.max_request_bytes} bytes.",
                },
            )
            return

        if op == "oidc-token":
            self._handle_oidc(h, record, raw, auth_header)
            return

        body: dict = {}
        raw_body = self.workspace is not None and op in self.workspace.RAW_BODY_OPS
        if raw_body:
            record.body = f"<{len(raw)} bytes>"
        elif raw:
            try:
                parsed = json.loads(raw)
            except (ValueError, UnicodeDecodeError):
                record.body = f"<malformed JSON, {len(raw)} bytes>"
                parsed = _MALFORMED
            if parsed is not _MALFORMED:
                record.body = self._summarise(parsed, params.get("index"))
                if isinstance(parsed, dict):
                    body = parsed
                else:
                    parsed = _MALFORMED

        token_info = None
        if op not in ("well-known", "host-metadata", "oidc-discovery"):
            token_info = self._check_bearer(auth_header)
            record.authorized = token_info is not None
            if token_info is None:
                msg = (
                    "Missing credentials: send an Authorization: Bearer header."
                    if auth_header is None
                    else "Invalid access token."
                )
                self._send(h, record, 401, {"error_code": "UNAUTHENTICATED", "message": msg})
                return

        try:
            if raw and not raw_body and parsed is _MALFORMED:
                raise _bad("Malformed request: the body must be a JSON object.")
            if self.workspace is not None and self.workspace.owns(op):
                # Outside the emulator's lock: a statement may wait for its warehouse.
                status, data, headers = self.workspace.dispatch(op, params, query, body, raw)
                if isinstance(data, (bytes, bytearray)):
                    ctype = "application/octet-stream" if op in ("fs-get", "fs-head") else "application/json"
                    self._send_raw(h, record, status, bytes(data), ctype, headers)
                else:
                    self._send(h, record, status, data, headers)
                return
            ctx = _Ctx(
                method=method,
                path=path,
                op=op,
                params=params,
                query=query,
                body=body,
                token_info=token_info if token_info is not _PAT else None,
            )
            with self._lock:
                status, payload = self._dispatch(ctx)
        except ApiError as e:
            self._send(h, record, e.status, {"error_code": e.error_code, "message": e.message})
            return
        except Exception as e:  # a bug in the emulator: answer 500, keep serving
            self._send(
                h,
                record,
                500,
                {"error_code": "INTERNAL_ERROR", "message": f"Emulator error: {type(e).__name__}: {e}"},
            )
            return
        self._send(h, record, status, payload)

    def _read_body(self, h) -> tuple[bytes, bool]:
        """Read (or, past max_request_bytes, drain) the body; returns (body, too_large)."""
        limit = self.max_request_bytes
        chunks: list[bytes] = []
        total = 0

        def take(data: bytes) -> None:
            nonlocal total
            total += len(data)
            if limit is None or total <= limit:
                chunks.append(data)

        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            while True:
                size_line = h.rfile.readline(65537)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                remaining = size
                while remaining:
                    data = h.rfile.read(min(remaining, 65536))
                    if not data:
                        raise ValueError("truncated chunk")
                    take(data)
                    remaining -= len(data)
                h.rfile.readline(65537)
        else:
            length = int(h.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative Content-Length")
            while length:
                data = h.rfile.read(min(length, 65536))
                if not data:
                    raise ValueError("truncated body")
                take(data)
                length -= len(data)
        too_large = limit is not None and total > limit
        return (b"" if too_large else b"".join(chunks)), too_large

    def _send(
        self, h, record: RequestRecord, status: int, payload: dict, headers: dict | None = None
    ) -> None:
        self._send_raw(h, record, status, json.dumps(payload).encode(), "application/json", headers)

    def _send_raw(
        self,
        h,
        record: RequestRecord,
        status: int,
        data: bytes,
        content_type: str,
        headers: dict | None = None,
    ) -> None:
        record.status = status
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                h.send_header(k, v)
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
        except OSError:
            h.close_connection = True

    def _reset(self, h) -> None:
        h.close_connection = True
        try:
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass

    def _check_bearer(self, header: str | None):
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        token = token.strip()
        with self._lock:
            if token in self._tokens:
                return _PAT
            info = self._oauth_tokens.get(token)
            if info is None:
                return None
            if info["expires_at"] <= time.time():
                del self._oauth_tokens[token]
                return None
            return info

    def _summarise(self, obj: Any, index_name: str | None) -> Any:
        vector_col = None
        if index_name:
            idx = self._indexes.get(index_name)
            vector_col = idx.vector_column if idx else None
        return _summarise(obj, None, vector_col)

    # ------------------------------------------------------------------ routing

    @staticmethod
    def _route(method: str, path: str) -> tuple[str, dict[str, str]]:
        segs = [unquote(s) for s in path.split("/") if s]
        if segs == ["oidc", "v1", "token"] and method == "POST":
            return "oidc-token", {}
        if segs == [".well-known", "databricks-config"] and method in ("GET", "HEAD"):
            return "well-known", {}
        if len(segs) == 4 and segs[:3] == ["api", "2.0", "serving-endpoints"] and method == "GET":
            return "get-serving-endpoint", {"serving_endpoint": segs[3]}
        if segs[:3] != ["api", "2.0", "vector-search"]:
            return "unknown", {}
        rest = segs[3:]
        if not rest:
            return "unknown", {}
        if rest[0] == "endpoints":
            rest = rest[1:]
            if not rest:
                return {"GET": "list-endpoints", "POST": "create-endpoint"}.get(method, "unknown"), {}
            ep = rest[0]
            if len(rest) == 1:
                op = {"GET": "get-endpoint", "DELETE": "delete-endpoint", "PATCH": "update-endpoint"}.get(
                    method
                )
                return op or "unknown", {"endpoint": ep}
            if rest[1] != "indexes":
                return "unknown", {"endpoint": ep}
            return Emulator._route_indexes(method, rest[2:], {"endpoint": ep})
        if rest[0] == "indexes":
            return Emulator._route_indexes(method, rest[1:], {})
        return "unknown", {}

    @staticmethod
    def _route_indexes(method: str, rest: list[str], params: dict) -> tuple[str, dict[str, str]]:
        if not rest:
            return {"GET": "list-indexes", "POST": "create-index"}.get(method, "unknown"), params
        params = {**params, "index": rest[0]}
        if len(rest) == 1:
            op = {"GET": "get-index", "DELETE": "delete-index", "PATCH": "update-index"}.get(method)
            return op or "unknown", params
        if len(rest) == 2 and rest[1] in INDEX_OP_METHODS and method in INDEX_OP_METHODS[rest[1]]:
            return rest[1], params
        return "unknown", params

    def _dispatch(self, ctx: _Ctx) -> tuple[int, dict]:
        op = ctx.op
        if op == "unknown":
            raise ApiError(404, f"No API found for '{ctx.method} {ctx.path}'.", "ENDPOINT_NOT_FOUND")
        if op == "well-known":
            raise ApiError(404, "Not found.", "NOT_FOUND")
        if op == "get-serving-endpoint":
            name = ctx.params["serving_endpoint"]
            return 200, {
                "name": name,
                "id": uuid.uuid5(uuid.NAMESPACE_URL, name).hex,
                "route_optimized": name in self.route_optimized_serving_endpoints,
                "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
            }
        if op == "list-endpoints":
            return 200, {"endpoints": [self._endpoint_json(e) for e in self._endpoints.values()]}
        if op == "create-endpoint":
            return 200, self._create_endpoint(ctx.body)
        if op in ("get-endpoint", "delete-endpoint", "update-endpoint"):
            ep = self._get_endpoint(ctx.params["endpoint"])
            if op == "get-endpoint":
                return 200, self._endpoint_json(ep)
            if op == "update-endpoint":
                if "target_qps" in ctx.body:
                    ep["target_qps"] = ctx.body["target_qps"]
                ep["last_updated_timestamp"] = _now_ms()
                return 200, self._endpoint_json(ep)
            if any(i.endpoint_name == ep["name"] for i in self._indexes.values()):
                raise ApiError(
                    400, f"Endpoint {ep['name']} still has indexes; delete them first.", "INVALID_STATE"
                )
            del self._endpoints[ep["name"]]
            return 200, {}
        if op == "list-indexes":
            ep_name = ctx.params.get("endpoint") or _first(ctx.query.get("endpoint_name"))
            if not ep_name:
                raise _bad("endpoint_name is required.")
            self._get_endpoint(ep_name)
            return 200, {
                "vector_indexes": [
                    {
                        "name": i.name,
                        "endpoint_name": i.endpoint_name,
                        "primary_key": i.primary_key,
                        "index_type": i.index_type,
                        "creator": "emulator@example.com",
                    }
                    for i in sorted(self._indexes.values(), key=lambda i: i.name)
                    if i.endpoint_name == ep_name
                ]
            }
        if op == "create-index":
            ep_name = ctx.params.get("endpoint") or ctx.body.get("endpoint_name")
            if not ep_name:
                raise _bad("endpoint_name is required.")
            return 200, self._create_index(ep_name, ctx.body)

        idx = self._resolve_index(ctx.params)
        self._settle(idx)
        if op == "get-index":
            return 200, self._index_json(idx)
        if op == "delete-index":
            del self._indexes[idx.name]
            self._pages = {k: v for k, v in self._pages.items() if v["index"] != idx.name}
            return 200, {}
        if op == "update-index":
            if "payload_logging_enabled" in ctx.body:
                idx.spec["payload_logging_enabled"] = ctx.body["payload_logging_enabled"]
            return 200, self._index_json(idx)
        if op in DATA_OPS:
            self._check_data_permission(ctx, idx)
        if op == "sync":
            if idx.index_type != "DELTA_SYNC":
                raise _bad(
                    f"Index {idx.name} is a Direct Vector Access index; sync applies to Delta Sync "
                    "indexes only."
                )
            if idx.spec.get("pipeline_type", "").upper() == "CONTINUOUS":
                raise _bad(f"Index {idx.name} uses a CONTINUOUS pipeline; sync applies to TRIGGERED only.")
            if self.workspace is not None:
                self.workspace.start_sync(idx)
            return 200, {}
        if op == "upsert-data":
            return 200, self._op_upsert(idx, ctx.body)
        if op == "delete-data":
            return 200, self._op_delete(idx, ctx)
        if op == "query":
            return 200, self._op_query(idx, ctx.body)
        if op == "query-next-page":
            return 200, self._op_next_page(idx, ctx.body)
        if op == "scan":
            return 200, self._op_scan(idx, ctx.body)
        raise ApiError(404, f"No API found for op {op}.", "ENDPOINT_NOT_FOUND")

    def _check_data_permission(self, ctx: _Ctx, idx: _Index) -> None:
        if not self.enforce_authorization_details or not ctx.token_info:
            return
        details = ctx.token_info.get("authorization_details") or []
        if not details:
            return
        needed = DATA_OPS[ctx.op]
        for d in details:
            if (
                isinstance(d, dict)
                and d.get("type") == "unity_catalog_permission"
                and d.get("securable_object_name") == idx.name
                and d.get("operation") == needed
            ):
                return
        raise ApiError(403, f"The token does not grant {needed} on {idx.name}.")

    # ------------------------------------------------------------------ endpoints and indexes

    def _create_endpoint(self, body: dict) -> dict:
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("name is required.")
        etype = str(body.get("endpoint_type") or "STANDARD").upper()
        if etype not in ("STANDARD", "STORAGE_OPTIMIZED"):
            raise _bad(f"Invalid endpoint_type {etype!r}: expected STANDARD or STORAGE_OPTIMIZED.")
        if name in self._endpoints:
            raise ApiError(409, f"Endpoint with name {name} already exists.")
        now = _now_ms()
        self._endpoints[name] = {
            "name": name,
            "id": str(uuid.uuid4()),
            "endpoint_type": etype,
            "creator": "emulator@example.com",
            "creation_timestamp": now,
            "last_updated_timestamp": now,
            "last_updated_user": "emulator@example.com",
            "target_qps": body.get("target_qps"),
        }
        return self._endpoint_json(self._endpoints[name])

    def _endpoint_json(self, ep: dict) -> dict:
        out = {k: v for k, v in ep.items() if k != "target_qps"}
        out["endpoint_status"] = {"state": "ONLINE", "message": "Endpoint is online."}
        out["num_indexes"] = sum(1 for i in self._indexes.values() if i.endpoint_name == ep["name"])
        if ep.get("target_qps") is not None:
            out["scaling_info"] = {
                "requested_target_qps": ep["target_qps"],
                "state": "SCALING_CHANGE_APPLIED",
            }
        return out

    def _get_endpoint(self, name: str) -> dict:
        ep = self._endpoints.get(name)
        if ep is None:
            raise ApiError(404, f"Vector search endpoint {name} not found.")
        return ep

    def _get_index(self, name: str) -> _Index:
        idx = self._indexes.get(name)
        if idx is None:
            raise ApiError(404, f"Index {name} does not exist.")
        return idx

    def _resolve_index(self, params: dict) -> _Index:
        ep_name = params.get("endpoint")
        if ep_name is not None:
            self._get_endpoint(ep_name)
        idx = self._get_index(params["index"])
        if ep_name is not None and idx.endpoint_name != ep_name:
            raise ApiError(404, f"Index {idx.name} does not exist on endpoint {ep_name}.")
        return idx

    def _create_index(self, ep_name: str, body: dict) -> dict:
        self._get_endpoint(ep_name)
        name = body.get("name")
        if not isinstance(name, str) or len(name.split(".")) != 3 or not all(name.split(".")):
            raise _bad(f"Invalid index name {name!r}: expected a three-part name catalog.schema.index.")
        pk = body.get("primary_key")
        if not isinstance(pk, str) or not pk:
            raise _bad("primary_key is required.")
        index_type = str(body.get("index_type") or "").upper()
        if index_type == "DIRECT_ACCESS":
            spec = body.get("direct_access_index_spec")
            if not isinstance(spec, dict):
                raise _bad("direct_access_index_spec is required for a DIRECT_ACCESS index.")
            schema_json = spec.get("schema_json")
            if not isinstance(schema_json, str):
                raise _bad("direct_access_index_spec.schema_json must be a JSON string.")
            try:
                schema = json.loads(schema_json)
            except ValueError:
                raise _bad("direct_access_index_spec.schema_json is not valid JSON.") from None
            if not isinstance(schema, dict) or not schema:
                raise _bad("schema_json must be a non-empty JSON object of column: type.")
            for col, typ in schema.items():
                if not isinstance(typ, str) or not _valid_type(typ):
                    raise _bad(f"Unsupported type {typ!r} for column {col!r}.")
            if pk not in schema:
                raise _bad(f"Primary key {pk!r} is not in schema_json.")
            if schema[pk].lower() not in PK_TYPES:
                raise _bad(f"Primary key {pk!r} must be a string or integer column.")
            vcols = spec.get("embedding_vector_columns")
            if not isinstance(vcols, list) or len(vcols) != 1 or not isinstance(vcols[0], dict):
                raise _bad("embedding_vector_columns must list exactly one column.")
            vcol, dim = vcols[0].get("name"), vcols[0].get("embedding_dimension")
            if vcol not in schema or schema[vcol].lower().replace(" ", "") not in (
                "array<float>",
                "array<double>",
            ):
                raise _bad(f"Embedding vector column {vcol!r} must be in schema_json as array<float>.")
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
                raise _bad("embedding_dimension must be a positive integer.")
            if self.max_dimension is not None and dim > self.max_dimension:
                raise _bad(f"embedding_dimension {dim} exceeds the maximum of {self.max_dimension}.")
            src = spec.get("embedding_source_columns") or []
            model = src[0].get("embedding_model_endpoint_name") if src and isinstance(src[0], dict) else None
            stored_spec = {k: v for k, v in spec.items()}
            idx = _Index(
                name=name,
                endpoint_name=ep_name,
                primary_key=pk,
                index_type="DIRECT_ACCESS",
                spec=stored_spec,
                schema=schema,
                vector_column=vcol,
                dimension=dim,
                embedding_model=model,
            )
        elif index_type == "DELTA_SYNC":
            spec = body.get("delta_sync_index_spec")
            if not isinstance(spec, dict) or not spec.get("source_table"):
                raise _bad("delta_sync_index_spec.source_table is required for a DELTA_SYNC index.")
            pipeline = str(spec.get("pipeline_type") or "").upper()
            if pipeline not in ("TRIGGERED", "CONTINUOUS"):
                raise _bad("pipeline_type must be TRIGGERED or CONTINUOUS.")
            vcols = spec.get("embedding_vector_columns") or []
            vcol = vcols[0].get("name") if vcols else None
            dim = vcols[0].get("embedding_dimension") if vcols else None
            src = spec.get("embedding_source_columns") or []
            model = src[0].get("embedding_model_endpoint_name") if src else None
            schema = {pk: "string"}
            if self.workspace is not None:
                schema, dim = self.workspace.delta_sync_schema(spec, pk)
                if model:
                    vcol = self.workspace.MANAGED_VECTOR
            idx = _Index(
                name=name,
                endpoint_name=ep_name,
                primary_key=pk,
                index_type="DELTA_SYNC",
                spec=dict(spec),
                schema=schema,
                vector_column=vcol,
                dimension=dim,
                embedding_model=model,
            )
        else:
            raise _bad(
                f"Invalid index_type {body.get('index_type')!r}: expected DIRECT_ACCESS or DELTA_SYNC."
            )
        if name in self._indexes:
            raise ApiError(409, f"Index {name} already exists.")
        if "payload_logging_enabled" in body:
            idx.spec["payload_logging_enabled"] = body["payload_logging_enabled"]
        self._indexes[name] = idx
        if self.workspace is not None and index_type == "DELTA_SYNC":
            self.workspace.start_sync(idx, initial=True)
        return self._index_json(idx)

    def _settle(self, idx: _Index) -> None:
        if self.workspace is not None and idx.index_type == "DELTA_SYNC":
            self.workspace.settle(idx)

    def _index_json(self, idx: _Index) -> dict:
        status = {
            "ready": True,
            "indexed_row_count": len(idx.rows),
            "message": "Index is online.",
            "detailed_state": (
                "ONLINE_DIRECT_ACCESS" if idx.index_type == "DIRECT_ACCESS" else "ONLINE_NO_PENDING_UPDATE"
            ),
        }
        if self.workspace is not None and idx.index_type == "DELTA_SYNC":
            status = self.workspace.index_status(idx)
        if self.index_url_host and self._server is not None:
            status["index_url"] = (
                f"http://{self.index_url_host}:{self.port}{API}/endpoints/"
                f"{idx.endpoint_name}/indexes/{idx.name}"
            )
        spec = copy.deepcopy(idx.spec)
        spec.pop("payload_logging_enabled", None)
        if self.workspace is not None and idx.index_type == "DELTA_SYNC":
            spec["pipeline_id"] = self.workspace.pipeline_id(idx)
        out = {
            "name": idx.name,
            "endpoint_name": idx.endpoint_name,
            "primary_key": idx.primary_key,
            "index_type": idx.index_type,
            "creator": "emulator@example.com",
            "id": idx.id,
            "endpoint_id": self._endpoints[idx.endpoint_name]["id"]
            if idx.endpoint_name in self._endpoints
            else None,
            "status": status,
        }
        out["direct_access_index_spec" if idx.index_type == "DIRECT_ACCESS" else "delta_sync_index_spec"] = (
            spec
        )
        if "payload_logging_enabled" in idx.spec:
            out["payload_logging_enabled"] = idx.spec["payload_logging_enabled"]
        return out

    # ------------------------------------------------------------------ data plane

    def _op_upsert(self, idx: _Index, body: dict) -> dict:
        if idx.index_type != "DIRECT_ACCESS":
            raise _bad(
                f"Index {idx.name} is a Delta Sync index; upsert-data applies to Direct Vector Access "
                "indexes only."
            )
        inputs_json = body.get("inputs_json")
        if not isinstance(inputs_json, str):
            raise _bad("inputs_json is required and must be a JSON string.")
        try:
            rows = json.loads(inputs_json)
        except ValueError:
            raise _bad("inputs_json is not valid JSON.") from None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise _bad("inputs_json must be a JSON array of objects.")
        return self._upsert(idx, rows, enforce_limit=True)

    def _upsert(self, idx: _Index, rows: list[dict], *, enforce_limit: bool) -> dict:
        if idx.index_type != "DIRECT_ACCESS":
            raise _bad(f"Index {idx.name} is not a Direct Vector Access index.")
        if enforce_limit and self.max_upsert_rows is not None and len(rows) > self.max_upsert_rows:
            raise _bad(f"Too many rows in one upsert: {len(rows)} > {self.max_upsert_rows}.")
        failed: list[Any] = []
        ok = 0
        for row in rows:
            key = row.get(idx.primary_key)
            if key is None or _row_problem(idx, row):
                failed.append(key)
                continue
            stored = {col: copy.deepcopy(row.get(col)) for col in idx.schema}
            idx.rows[key] = stored
            ok += 1
        status = "SUCCESS" if not failed else ("PARTIAL_SUCCESS" if ok else "FAILURE")
        result: dict[str, Any] = {"success_row_count": ok}
        if failed:
            result["failed_primary_keys"] = failed
        return {"status": status, "result": result}

    def _op_delete(self, idx: _Index, ctx: _Ctx) -> dict:
        if idx.index_type != "DIRECT_ACCESS":
            raise _bad(
                f"Index {idx.name} is a Delta Sync index; delete-data applies to Direct Vector Access "
                "indexes only."
            )
        keys = ctx.body.get("primary_keys") if "primary_keys" in ctx.body else ctx.query.get("primary_keys")
        if keys is None:
            raise _bad("primary_keys is required (JSON body or query parameters).")
        if not isinstance(keys, list):
            raise _bad("primary_keys must be a list.")
        for k in keys:
            coerced = _coerce_pk(idx, k)
            idx.rows.pop(coerced, None)
        return {"status": "SUCCESS", "result": {"success_row_count": len(keys)}}

    def _op_query(self, idx: _Index, body: dict) -> dict:
        started = time.perf_counter()
        for unsupported in ("reranker", "query_columns", "sort_columns", "facets"):
            if body.get(unsupported):
                raise _bad(f"{unsupported} is not supported by the emulator.")
        if body.get("filter_string"):
            raise _bad("filter_string is only supported on storage-optimized endpoints; use filters_json.")
        num_results = body.get("num_results", 10)
        if (
            not isinstance(num_results, int)
            or isinstance(num_results, bool)
            or not 1 <= num_results <= MAX_RESULTS
        ):
            raise _bad(f"num_results must be an integer between 1 and {MAX_RESULTS}.")
        columns = body.get("columns")
        if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
            raise _bad("columns must be a non-empty list of column names.")
        if idx.index_type == "DIRECT_ACCESS":
            unknown = [c for c in columns if c not in idx.schema]
            if unknown:
                raise _bad(f"Requested columns not in the index schema: {', '.join(unknown)}.")
        query_type = str(body.get("query_type") or "ANN").upper()
        if query_type not in ("ANN", "HYBRID", "FULL_TEXT"):
            raise _bad(f"Invalid query_type {body.get('query_type')!r}: expected ANN, HYBRID or FULL_TEXT.")
        vector = body.get("query_vector")
        text = body.get("query_text")
        if vector is not None:
            if (
                not isinstance(vector, list)
                or not vector
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vector)
            ):
                raise _bad("query_vector must be a non-empty list of numbers.")
            if idx.dimension is not None and len(vector) != idx.dimension:
                raise _bad(f"query_vector has dimension {len(vector)}; the index expects {idx.dimension}.")
        if text is not None and not isinstance(text, str):
            raise _bad("query_text must be a string.")
        if vector is None and text and idx.embedding_model and self.workspace is not None:
            vector = self.workspace.embed(idx.embedding_model, text)  # managed embeddings: the index embeds
        if query_type == "ANN" and vector is None:
            if text:
                raise _bad(
                    "query_text needs an embedding model and the emulator never embeds; send query_vector."
                )
            raise _bad("Either query_vector or query_text must be provided.")
        if query_type == "HYBRID" and (vector is None or not text):
            raise _bad(
                "HYBRID on an index with self-managed embeddings needs both query_vector and query_text."
            )
        if query_type == "FULL_TEXT" and not text:
            raise _bad("FULL_TEXT needs query_text.")
        threshold = body.get("score_threshold")
        if threshold is not None and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)):
            raise _bad("score_threshold must be a number.")
        filters = _parse_filters(body.get("filters_json"), idx)

        candidates = [r for r in idx.rows.values() if all(_match(r, f) for f in filters)]
        scored: list[tuple[float, dict]]
        if query_type == "ANN":
            scored = [(_l2_score(vector, r.get(idx.vector_column)), r) for r in candidates]
        else:
            bm25 = _bm25_scores(text, candidates, _text_columns(idx))
            if query_type == "FULL_TEXT":
                scored = [(s, r) for s, r in zip(bm25, candidates, strict=True) if s > 0]
            else:
                vec = [_l2_score(vector, r.get(idx.vector_column)) for r in candidates]
                fused = [0.0] * len(candidates)
                for rank, i in enumerate(_rank(vec, candidates, idx), start=1):
                    fused[i] += 1.0 / (RRF_K + rank)
                for rank, i in enumerate(_rank(bm25, candidates, idx, positive_only=True), start=1):
                    fused[i] += 1.0 / (RRF_K + rank)
                scored = list(zip(fused, candidates, strict=True))
            num_results = min(num_results, TEXT_MAX_RESULTS)
        if threshold is not None:
            scored = [(s, r) for s, r in scored if s >= threshold]
        scored.sort(key=lambda sr: (-sr[0], _sort_key(sr[1].get(idx.primary_key))))
        data = [[copy.deepcopy(r.get(c)) for c in columns] + [s] for s, r in scored[:num_results]]
        manifest = {
            "column_count": len(columns) + 1,
            "columns": [{"name": c} for c in columns] + [{"name": "score"}],
        }
        out = self._page(idx, manifest, data)
        if isinstance(body.get("debug_level"), int) and body["debug_level"] >= 1:
            out["debug_info"] = {"response_time": round((time.perf_counter() - started) * 1000, 3)}
        return out

    def _page(self, idx: _Index, manifest: dict, data: list[list]) -> dict:
        page, rest = data[:PAGE_SIZE], data[PAGE_SIZE:]
        result: dict[str, Any] = {"row_count": len(page)}
        if page:
            result["data_array"] = page
        out = {"manifest": manifest, "result": result}
        if rest:
            token = secrets.token_urlsafe(16)
            self._pages[token] = {"index": idx.name, "manifest": manifest, "rest": rest}
            out["next_page_token"] = token
        return out

    def _op_next_page(self, idx: _Index, body: dict) -> dict:
        token = body.get("page_token")
        if not isinstance(token, str) or not token:
            raise _bad("page_token is required.")
        state = self._pages.pop(token, None)
        if state is None or state["index"] != idx.name:
            raise _bad("Invalid or expired page_token.")
        return self._page(idx, state["manifest"], state["rest"])

    def _op_scan(self, idx: _Index, body: dict) -> dict:
        num = body.get("num_results", 10)
        if not isinstance(num, int) or isinstance(num, bool) or not 1 <= num <= MAX_RESULTS:
            raise _bad(f"num_results must be an integer between 1 and {MAX_RESULTS}.")
        keys = sorted(idx.rows, key=_sort_key)
        last = body.get("last_primary_key")
        if last not in (None, ""):
            last_key = _sort_key(_coerce_pk(idx, last))
            keys = [k for k in keys if _sort_key(k) > last_key]
        keys = keys[:num]
        out: dict[str, Any] = {
            "data": [
                {
                    "fields": [
                        {"key": col, "value": _struct_value(idx.rows[k][col])}
                        for col in idx.schema
                        if idx.rows[k].get(col) is not None
                    ]
                }
                for k in keys
            ]
        }
        if keys:
            out["last_primary_key"] = str(keys[-1])
        return out

    # ------------------------------------------------------------------ OAuth

    def _handle_oidc(self, h, record: RequestRecord, raw: bytes, auth_header: str | None) -> None:
        try:
            form = {
                k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True).items()
            }
        except ValueError:
            form = {}
        details_raw = form.get("authorization_details")
        details: Any = None
        if details_raw:
            try:
                details = json.loads(details_raw)
            except ValueError:
                details = "<malformed>"
        record.body = {
            "grant_type": form.get("grant_type"),
            "scope": form.get("scope"),
            "authorization_details": details,
        }
        try:
            client_id = self._check_basic(auth_header)
            record.oauth_client_id = client_id
            record.authorized = client_id is not None
            if client_id is None:
                raise _OAuthError(401, "invalid_client", "Client authentication failed.")
            if form.get("grant_type") != "client_credentials":
                raise _OAuthError(400, "unsupported_grant_type", "Only client_credentials is supported.")
            scope = form.get("scope") or "all-apis"
            refused = [s for s in scope.split() if s in self.refused_scopes]
            if refused:
                raise _OAuthError(
                    403, "access_denied", f"Scopes {refused} are not assigned to the client {client_id}."
                )
            if details == "<malformed>" or (details is not None and not isinstance(details, list)):
                raise _OAuthError(400, "invalid_request", "authorization_details must be a JSON array.")
        except _OAuthError as e:
            self._send(h, record, e.status, {"error": e.error, "error_description": e.description})
            return
        token = "emu-oauth-" + secrets.token_hex(16)
        with self._lock:
            self._oauth_tokens[token] = {
                "client_id": client_id,
                "scope": scope,
                "authorization_details": details or [],
                "expires_at": time.time() + self.oauth_expires_in,
            }
        self._send(
            h,
            record,
            200,
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.oauth_expires_in,
                "scope": scope,
            },
        )

    def _check_basic(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        expected = self._service_principals.get(user)
        if expected is None or not secrets.compare_digest(expected.encode(), password.encode()):
            return None
        return user


_MALFORMED = object()
_PAT = {"kind": "pat"}


# ---------------------------------------------------------------------- helpers


def _now_ms() -> int:
    return int(time.time() * 1000)


def _first(values: list[str] | None) -> str | None:
    return values[0] if values else None


def _valid_type(typ: str) -> bool:
    t = typ.lower().replace(" ", "")
    if t in SCALAR_TYPES:
        return True
    m = re.fullmatch(r"array<(\w+)>", t)
    return bool(m and m.group(1) in ARRAY_INNER)


def _type_ok(typ: str, value: Any) -> bool:
    if value is None:
        return True
    t = typ.lower().replace(" ", "")
    if t in ("string", "date", "timestamp"):
        return isinstance(value, str)
    if t in INT_TYPES:
        return isinstance(value, int) and not isinstance(value, bool)
    if t in ("float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "boolean":
        return isinstance(value, bool)
    m = re.fullmatch(r"array<(\w+)>", t)
    if m:
        return isinstance(value, list) and all(_type_ok(m.group(1), v) and v is not None for v in value)
    return True


def _row_problem(idx: _Index, row: dict) -> str | None:
    for col, value in row.items():
        if col not in idx.schema:
            return f"unknown column {col}"
        if not _type_ok(idx.schema[col], value):
            return f"wrong type for {col}"
    vec = row.get(idx.vector_column)
    if not isinstance(vec, list) or len(vec) != idx.dimension:
        return "missing vector or wrong dimension"
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in vec):
        return "non-finite vector"
    return None


def _coerce_pk(idx: _Index, value: Any) -> Any:
    if idx.schema.get(idx.primary_key, "string").lower() in INT_TYPES and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    return value


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool):
        return (0, int(value), "")
    if isinstance(value, (int, float)):
        return (0, value, "")
    return (1, 0, str(value))


def _l2_score(q: list[float], v: list[float] | None) -> float:
    if not v:
        return 0.0
    d2 = math.fsum((a - b) * (a - b) for a, b in zip(q, v, strict=True))
    return 1.0 / (1.0 + d2)


def _text_columns(idx: _Index) -> list[str]:
    return [c for c, t in idx.schema.items() if t.lower() == "string" and c != idx.primary_key]


def _tokens(text: Any) -> list[str]:
    return _WORD.findall(str(text).lower()) if text is not None else []


def _bm25_scores(query: str, rows: list[dict], columns: list[str]) -> list[float]:
    docs = [[t for c in columns for t in _tokens(r.get(c))] for r in rows]
    if not docs:
        return []
    n = len(docs)
    avgdl = (sum(len(d) for d in docs) / n) or 1.0
    q_terms = set(_tokens(query))
    df = {t: sum(1 for d in docs if t in d) for t in q_terms}
    scores = []
    for d in docs:
        counts: dict[str, int] = {}
        for t in d:
            if t in q_terms:
                counts[t] = counts.get(t, 0) + 1
        s = 0.0
        for t, tf in counts.items():
            idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
            s += idf * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * len(d) / avgdl))
        scores.append(s)
    return scores


def _rank(scores: list[float], rows: list[dict], idx: _Index, positive_only: bool = False) -> list[int]:
    order = [i for i in range(len(rows)) if not positive_only or scores[i] > 0]
    order.sort(key=lambda i: (-scores[i], _sort_key(rows[i].get(idx.primary_key))))
    return order


def _struct_value(v: Any) -> dict:
    if isinstance(v, bool):
        return {"bool_value": v}
    if isinstance(v, (int, float)):
        return {"number_value": float(v)}
    if isinstance(v, str):
        return {"string_value": v}
    if isinstance(v, list):
        return {"list_value": {"values": [_struct_value(x) for x in v if x is not None]}}
    if isinstance(v, dict):
        return {"struct_value": {"fields": {k: _struct_value(x) for k, x in v.items() if x is not None}}}
    return {}


def _summarise(obj: Any, key: str | None, vector_col: str | None) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "inputs_json" and isinstance(v, str):
                try:
                    out[k] = _summarise(json.loads(v), None, vector_col)
                except ValueError:
                    out[k] = f"<unparseable inputs_json, {len(v)} chars>"
            else:
                out[k] = _summarise(v, k, vector_col)
        return out
    if isinstance(obj, list):
        numeric = obj and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in obj)
        if numeric and (key in ("query_vector", vector_col) or any(isinstance(x, float) for x in obj)):
            return f"<vector dim={len(obj)}>"
        return [_summarise(x, None, vector_col) for x in obj]
    return obj


# ---------------------------------------------------------------------- filters


@dataclass
class _Filter:
    column: str
    op: str  # "=", "NOT", "<", "<=", ">", ">=", "LIKE"
    value: Any


def _parse_filters(filters_json: Any, idx: _Index) -> list[_Filter]:
    if filters_json in (None, ""):
        return []
    if isinstance(filters_json, str):
        try:
            filters = json.loads(filters_json)
        except ValueError:
            raise _bad("filters_json is not valid JSON.") from None
    else:
        filters = filters_json
    groups = filters if isinstance(filters, list) else [filters]
    out = []
    for group in groups:
        if not isinstance(group, dict):
            raise _bad("filters_json must be a JSON object (or a list of objects).")
        for key, value in group.items():
            out.append(_parse_filter(key, value, idx))
    return out


def _parse_filter(key: str, value: Any, idx: _Index) -> _Filter:
    key = key.strip()
    m = _RANGE_KEY.match(key) or _WORD_OP_KEY.match(key)
    col, op = (m.group(1).strip(), m.group(2).upper()) if m else (key, "=")
    if re.search(r"\s+OR\s+", col, re.IGNORECASE):
        raise _bad(f"Cross-column OR filters ({key!r}) are not supported by the emulator.")
    if idx.index_type == "DIRECT_ACCESS" and col not in idx.schema:
        raise _bad(f"Filter column {col!r} is not in the index schema.")
    if col == idx.vector_column:
        raise _bad(f"Cannot filter on the vector column {col!r}.")
    if op in ("<", "<=", ">", ">="):
        if isinstance(value, (list, dict, bool)) or value is None:
            raise _bad(f"Filter {key!r} needs a single number or string.")
    elif op == "LIKE":
        if not isinstance(value, str):
            raise _bad(f"Filter {key!r} needs a string.")
    elif isinstance(value, dict) or (
        isinstance(value, list) and any(isinstance(v, (list, dict)) for v in value)
    ):
        raise _bad(f"Filter {key!r} needs a value or a flat list of values.")
    return _Filter(col, op, value)


def _eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return False
    if isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def _match(row: dict, f: _Filter) -> bool:
    cell = row.get(f.column)
    values = f.value if isinstance(f.value, list) else [f.value]
    if f.op == "=":
        return any(_eq(cell, v) for v in values)
    if f.op == "NOT":
        return not any(_eq(cell, v) for v in values)
    if cell is None or isinstance(cell, (list, dict)):
        return False
    if f.op == "LIKE":
        if "%" in f.value or "_" in f.value:
            pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in f.value)
            return re.fullmatch(pattern, str(cell), re.DOTALL) is not None
        wanted = _tokens(f.value)
        have = set(_tokens(cell))
        return bool(wanted) and all(t in have for t in wanted)
    try:
        if isinstance(cell, str) != isinstance(f.value, str):
            return False
        return {"<": cell < f.value, "<=": cell <= f.value, ">": cell > f.value, ">=": cell >= f.value}[f.op]
    except TypeError:
        return False


# ---------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="dbx_emulator",
        description="Local Databricks Vector Search REST emulator (for tests and demos; loopback only).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 = any free port; default 8765)")
    parser.add_argument("--token", action="append", default=[], help="accepted bearer token (repeatable)")
    parser.add_argument(
        "--service-principal",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="accepted OAuth client credentials (repeatable)",
    )
    parser.add_argument(
        "--endpoint", action="append", default=[], help="endpoint to create up front (repeatable)"
    )
    parser.add_argument("--workspace", metavar="DIR", help="also serve SQL warehouses, volumes and Delta tables "
                        "kept in DIR (tests/dbx_workspace.py)")
    parser.add_argument("--warehouse", action="append", default=[], help="SQL warehouse id (with --workspace)")
    parser.add_argument("--volume", action="append", default=[], help="volume catalog.schema.volume (with --workspace)")
    parser.add_argument("--max-upsert-rows", type=int)
    parser.add_argument("--max-request-bytes", type=int)
    parser.add_argument("--max-dimension", type=int)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the emulator has no TLS and test-grade auth: bind a loopback address only")
    if not args.token and not args.service_principal:
        parser.error("give at least one --token or --service-principal")
    sps = {}
    for item in args.service_principal:
        cid, sep, secret = item.partition(":")
        if not sep or not cid or not secret:
            parser.error("--service-principal takes ID:SECRET")
        sps[cid] = secret
    workspace = None
    if args.workspace:
        from dbx_workspace import Workspace  # this folder is sys.path[0] when run as a script

        workspace = Workspace(args.workspace, warehouses=args.warehouse, volumes=args.volume)
    elif args.warehouse or args.volume:
        parser.error("--warehouse and --volume need --workspace DIR")
    emu = Emulator(
        workspace=workspace,
        tokens=args.token,
        host=args.host,
        port=args.port,
        service_principals=sps,
        endpoints=args.endpoint,
        max_upsert_rows=args.max_upsert_rows,
        max_request_bytes=args.max_request_bytes,
        max_dimension=args.max_dimension,
    )
    emu.start()
    print(f"Databricks Vector Search emulator listening on {emu.url}", flush=True)
    print(f"  export DATABRICKS_HOST={emu.url}   (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
