"""A small local HTTP server that answers like the Hugging Face Hub, for download tests.

It speaks the part of the protocol huggingface_hub 2.x uses in `model_info`, `snapshot_download` and
`hf_hub_download` (read from its source: hf_api.py, _snapshot_download.py, file_download.py, utils/_http.py):

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}` (query `blobs=true` adds `size`,
  `blobId` and `lfs` to each sibling): the model info, with `sha` and `siblings`;
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`: the tree listing `snapshot_download` uses
  once it knows the commit (files: `type`, `oid`, `size`, `path`, `lfs{oid,size,pointerSize}`);
- `HEAD`/`GET /{repo}/resolve/{rev}/{filename}`: `X-Repo-Commit`, `ETag` (git blob id, or the SHA-256 for
  LFS files, also sent as `X-Linked-Etag`/`X-Linked-Size`), `Content-Length`, `Accept-Ranges`; `Range:
  bytes=N-` answers 206 with `Content-Range`. No `X-Xet-Hash` header and no `xetHash` field are ever
  sent, so downloads never go through hf-xet;
- errors with the headers huggingface_hub maps to exceptions: `X-Error-Code: RepoNotFound` (404),
  `RevisionNotFound` (404), `EntryNotFound` (404, with `X-Repo-Commit`), `GatedRepo` (401 without a token,
  403 with a wrong one) for a gated repo's files.

Repos are served from local folders, each at one fixed 40-hex commit (also reachable as `main`). Every
request is recorded (method, path, query, whether an Authorization header was present, Range): never the
token itself. Faults can be injected: close the connection after N bytes of a file's body, for the next
`times` GETs of that file; or serve other bytes for a file than its size and hashes advertise (`tamper`).
`--tls` support (a test CA and a server certificate for 127.0.0.1) is in `make_test_ca`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".model", ".gguf")


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class RepoFileEntry:
    path: str
    data: bytes
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self) -> bytes:
        return f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n".encode()

    @property
    def blob_id(self) -> str:
        return git_blob_id(self.pointer if self.lfs else self.data)

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else git_blob_id(self.data)


@dataclass
class FakeRepo:
    repo_id: str
    folder: Path
    sha: str
    gated: bool = False
    token: str | None = None  # the bearer token that may read a gated repo
    refs: tuple[str, ...] = ("main",)

    def files(self) -> dict[str, RepoFileEntry]:
        out = {}
        for path in sorted(self.folder.rglob("*")):
            if path.is_file():
                rel = path.relative_to(self.folder).as_posix()
                out[rel] = RepoFileEntry(rel, path.read_bytes(), rel.endswith(LFS_SUFFIXES))
        return out

    def knows(self, revision: str) -> bool:
        return revision == self.sha or revision in self.refs


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted path, without the query
    query: str
    auth: bool  # an Authorization header was present (its value is never stored)
    range: str | None
    status: int


@dataclass
class _Fault:
    after_bytes: int
    times: int


@dataclass
class FakeHub:
    """`with FakeHub() as hub: hub.add_repo(...); settings.hf_endpoint = hub.url`."""

    tls: tuple[Path, Path] | None = None  # (certificate chain, private key) to serve https
    repos: dict[str, FakeRepo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: dict[tuple[str, str], _Fault] = field(default_factory=dict)
    tampered: dict[tuple[str, str], bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- set-up

    def add_repo(
        self,
        repo_id: str,
        folder: Path,
        *,
        sha: str | None = None,
        gated: bool = False,
        token: str | None = None,
        refs: tuple[str, ...] = ("main",),
    ) -> FakeRepo:
        sha = sha or hashlib.sha1(repo_id.encode()).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{40}", sha)
        repo = FakeRepo(repo_id, Path(folder), sha, gated=gated, token=token, refs=refs)
        self.repos[repo_id] = repo
        return repo

    def fail_body(self, repo_id: str, filename: str, *, after_bytes: int, times: int = 1) -> None:
        """The next `times` GETs of the file send `after_bytes` bytes of the body, then drop the connection."""
        with self._lock:
            self.faults[(repo_id, filename)] = _Fault(after_bytes, times)

    def tamper(self, repo_id: str, filename: str, data: bytes) -> None:
        """GETs of the file answer `data`; the model info, tree and headers still describe the real file."""
        with self._lock:
            self.tampered[(repo_id, filename)] = data

    # ---- lifecycle

    def start(self) -> FakeHub:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the hub first"
        host, port = self._server.server_address[:2]
        return f"{'https' if self.tls else 'http'}://{host}:{port}"

    # ---- assertions

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()

    def file_requests(self, filename: str | None = None, method: str | None = None) -> list[Request]:
        """Requests for `/.../resolve/<rev>/<filename>` (all files when filename is None)."""
        out = []
        for r in list(self.requests):
            if "/resolve/" not in r.path:
                continue
            name = r.path.split("/resolve/", 1)[1].split("/", 1)[-1]
            if (filename is None or name == filename) and (method is None or r.method == method):
                out.append(r)
        return out

    def take_fault(self, repo_id: str, filename: str) -> int | None:
        with self._lock:
            fault = self.faults.get((repo_id, filename))
            if fault is None or fault.times <= 0:
                return None
            fault.times -= 1
            return fault.after_bytes


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeHub/1.0"
        timeout = 10  # seconds per socket operation: a stuck client never pins a server thread

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
            return None

        def setup(self) -> None:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                try:
                    self.connection.do_handshake()
                except (ssl.SSLError, OSError):
                    self.close_connection = True
                    raise ConnectionAbortedError from None

        def handle(self) -> None:
            try:
                super().handle()
            except (ConnectionError, ssl.SSLError, OSError):
                pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._dispatch(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._dispatch(head=False)

        # ---- responses

        def _send(self, status: int, headers: dict[str, str], body: bytes = b"", *, head: bool = False,
                  path: str = "", query: str = "") -> None:
            hub.record(Request(self.command, path, query, "Authorization" in self.headers,
                               self.headers.get("Range"), status))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _json(self, status: int, data: object, *, path: str, query: str, extra: dict[str, str] | None = None,
                  head: bool = False) -> None:
            body = json.dumps(data).encode()
            headers = {"Content-Type": "application/json; charset=utf-8", **(extra or {})}
            self._send(status, headers, body, head=head, path=path, query=query)

        def _error(self, status: int, code: str | None, message: str, *, path: str, query: str,
                   extra: dict[str, str] | None = None, head: bool = False) -> None:
            headers = {"X-Error-Message": message}
            if code:
                headers["X-Error-Code"] = code
            self._json(status, {"error": message}, path=path, query=query, extra={**headers, **(extra or {})},
                       head=head)

        # ---- routing

        def _dispatch(self, *, head: bool) -> None:
            split = urlsplit(self.path)
            path, query = unquote(split.path), split.query
            if path.startswith("/api/models/"):
                if head:
                    return self._error(405, None, "Method not allowed", path=path, query=query, head=True)
                return self._api(path, query)
            if "/resolve/" in path:
                return self._resolve(path, query, head=head)
            return self._error(404, None, "Not found", path=path, query=query, head=head)

        def _find_repo(self, parts: list[str]) -> tuple[FakeRepo | None, str, list[str]]:
            if len(parts) >= 2 and "/".join(parts[:2]) in hub.repos:
                return hub.repos["/".join(parts[:2])], "/".join(parts[:2]), parts[2:]
            if parts and parts[0] in hub.repos:
                return hub.repos[parts[0]], parts[0], parts[1:]
            n = 2 if len(parts) >= 2 and parts[1] not in ("revision", "tree", "resolve") else 1
            return None, "/".join(parts[:n]), parts[n:]

        def _api(self, path: str, query: str) -> None:
            parts = [p for p in path[len("/api/models/"):].split("/") if p]
            repo, repo_id, rest = self._find_repo(parts)
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found", path=path, query=query)
            params = {k: v[-1] for k, v in parse_qs(query).items()}
            if not rest:
                return self._info(repo, "main", params, path, query)
            if rest[0] == "revision" and len(rest) >= 2:
                return self._info(repo, "/".join(rest[1:]), params, path, query)
            if rest[0] == "tree" and len(rest) >= 2:
                return self._tree(repo, rest[1], "/".join(rest[2:]), params, path, query)
            return self._error(404, None, "Not found", path=path, query=query)

        def _info(self, repo: FakeRepo, revision: str, params: dict[str, str], path: str, query: str) -> None:
            if not repo.knows(revision):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", path=path, query=query)
            blobs = params.get("blobs", "").lower() == "true"
            siblings = []
            files = repo.files()
            for entry in files.values():
                sibling: dict[str, object] = {"rfilename": entry.path}
                if blobs:
                    sibling.update(size=entry.size, blobId=entry.blob_id)
                    if entry.lfs:
                        sibling["lfs"] = {"sha256": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
                siblings.append(sibling)
            config = {}
            if "config.json" in files:
                try:
                    config = {k: v for k, v in json.loads(files["config.json"].data).items()
                              if k in ("architectures", "model_type", "auto_map")}
                except ValueError:
                    config = {}
            data = {
                "_id": hashlib.md5(repo.repo_id.encode(), usedforsecurity=False).hexdigest()[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "author": repo.repo_id.split("/")[0],
                "sha": repo.sha,
                "lastModified": "2025-01-01T00:00:00.000Z",
                "createdAt": "2024-01-01T00:00:00.000Z",
                "private": False,
                "gated": "manual" if repo.gated else False,
                "disabled": False,
                "downloads": 0,
                "likes": 0,
                "tags": ["transformers", "safetensors"],
                "library_name": "transformers",
                "config": config,
                "siblings": siblings,
                "spaces": [],
            }
            self._json(200, data, path=path, query=query)

        def _tree(self, repo: FakeRepo, revision: str, sub: str, params: dict[str, str], path: str,
                  query: str) -> None:
            if not repo.knows(revision):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", path=path, query=query)
            recursive = params.get("recursive", "").lower() == "true"
            prefix = sub.strip("/") + "/" if sub.strip("/") else ""
            entries: list[dict[str, object]] = []
            folders: set[str] = set()
            for entry in repo.files().values():
                if not entry.path.startswith(prefix):
                    continue
                rel = entry.path[len(prefix):]
                if "/" in rel:
                    top = prefix + rel.split("/", 1)[0]
                    folders.add(top)
                    if recursive:
                        for i, _ in enumerate(rel.split("/")[:-1]):
                            folders.add(prefix + "/".join(rel.split("/")[: i + 1]))
                    if not recursive:
                        continue
                item: dict[str, object] = {"type": "file", "oid": entry.blob_id, "size": entry.size,
                                           "path": entry.path}
                if entry.lfs:
                    item["lfs"] = {"oid": entry.sha256, "size": entry.size, "pointerSize": len(entry.pointer)}
                entries.append(item)
            if sub and not entries and not folders:
                return self._error(404, "EntryNotFound", f"{sub} does not exist", path=path, query=query)
            for folder in sorted(folders):
                entries.append({"type": "directory", "oid": git_blob_id(folder.encode()), "size": 0,
                                "path": folder})
            self._json(200, entries, path=path, query=query)

        def _resolve(self, path: str, query: str, *, head: bool) -> None:
            before, after = path.lstrip("/").split("/resolve/", 1)
            repo = hub.repos.get(before)
            revision, _, filename = after.partition("/")
            if repo is None:
                return self._error(404, "RepoNotFound", "Repository not found", path=path, query=query, head=head)
            if not repo.knows(revision):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", path=path, query=query,
                                   head=head)
            if repo.gated:
                auth = self.headers.get("Authorization", "")
                if not auth:
                    return self._error(
                        401, "GatedRepo",
                        f"Access to model {repo.repo_id} is restricted. You must have access to it and be "
                        "authenticated to access it. Please log in.",
                        path=path, query=query, head=head,
                    )
                if repo.token is None or auth != f"Bearer {repo.token}":
                    return self._error(
                        403, "GatedRepo",
                        f"Access to model {repo.repo_id} is restricted and you are not in the authorized list. "
                        f"Visit https://huggingface.co/{repo.repo_id} to ask for access.",
                        path=path, query=query, head=head,
                    )
            entry = repo.files().get(filename)
            if entry is None:
                return self._error(404, "EntryNotFound", f"{filename} does not exist on \"{revision}\"",
                                   path=path, query=query, extra={"X-Repo-Commit": repo.sha}, head=head)
            headers = {
                "X-Repo-Commit": repo.sha,
                "ETag": f'"{entry.etag}"',
                "Accept-Ranges": "bytes",
                "Content-Type": "application/octet-stream",
            }
            if entry.lfs:
                headers["X-Linked-Etag"] = f'"{entry.sha256}"'
                headers["X-Linked-Size"] = str(entry.size)
            data, status = hub.tampered.get((repo.repo_id, filename), entry.data), 200
            range_header = self.headers.get("Range")
            if range_header and not head:
                match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
                if match is None or not match.group(1):
                    return self._error(416, None, "Unsupported range", path=path, query=query)
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else entry.size - 1
                if start >= entry.size or end < start:
                    return self._error(416, None, "Range not satisfiable", path=path, query=query,
                                       extra={"Content-Range": f"bytes */{entry.size}"})
                data, status = data[start : end + 1], 206
                headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{entry.size}"
            headers["Content-Length"] = str(len(data))
            cut = None if head else hub.take_fault(repo.repo_id, filename)
            if cut is None:
                return self._send(status, headers, data, head=head, path=path, query=query)
            # Fault: promise the whole body, send part of it, then drop the connection.
            hub.record(Request(self.command, path, query, "Authorization" in self.headers, range_header, status))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data[:cut])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler


# --------------------------------------------------------------------------------------------- TLS helpers


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # not a pytest test class

    ca_cert: Path  # PEM: what a client passes as --ca-bundle
    server_cert: Path  # PEM chain for the server (leaf)
    server_key: Path


def make_test_ca(directory: Path) -> TestCA:
    """A throw-away CA and a certificate for 127.0.0.1/localhost signed by it (EC keys: fast)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ragcli test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    out.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    out.server_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    out.server_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption())
    )
    os.chmod(out.server_key, 0o600)
    return out
