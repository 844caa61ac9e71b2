"""download-model: fetch Hub repos into the models folder, pinned to a commit, safetensors only.

`download_model` is the only code in ragcli that talks to the Hugging Face Hub. For each repo it

1. checks the TLS settings (CA bundle readable and PEM, no `CURL_CA_BUNDLE=""`) before any network I/O;
2. resolves the requested revision to a 40-hex commit (`HfApi.model_info`, with file sizes and hashes);
3. picks the files to fetch: config, tokenizer and safetensors files; never pickle weights (`*.bin`, `*.pt`,
   ...) unless `allow_pickle` and the repo has no safetensors; `*.py` only with `trust_remote_code`, which
   needs a pinned commit; ONNX exports only when asked (`onnx`: `onnx/model.onnx`; `onnx_files`: other
   files of `onnx/`), each with its external data file (`onnx/NAME.onnx_data`) where the repo has one;
4. runs `snapshot_download` on that exact commit into the models folder (Hub cache layout), fetching exactly
   the files picked, then checks that every one is there with the Hub's size and checksum (SHA-256 for LFS
   files, git blob id for the others);
5. writes the model's entry in the lock file (`registry.record_model`) last, so an interrupted download is
   never taken for a complete one.

Everything that can go wrong becomes a `ModelDownloadError` (or `ConfigError`/`UsageError`) whose message is
one line naming the model and what to do; the token never appears in it. huggingface_hub is imported inside
the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ragcli import registry
from ragcli.config import Settings, redact
from ragcli.errors import ConfigError, ModelDownloadError, RagcliError, UsageError

ProgressCallback = Callable[[str, int, int], None]

#: Files a model needs: configs, tokenizers, safetensors weights, sentence-transformers modules, chat templates.
ALLOW_PATTERNS = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "tokenizer*",
    "1_Pooling/*",
    "*.jinja",
]
#: Pickled weights (they run code when loaded) and other frameworks' exports: never fetched by default.
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt", "*.h5", "*.msgpack", "*.joblib"]
IGNORE_PATTERNS = [
    *PICKLE_PATTERNS,
    "*.onnx",
    "*.onnx_data",
    "*.ot",
    "*.tflite",
    "*.gguf",
    "onnx/*",
    "openvino/*",
    "coreml/*",
]
#: With allow_pickle, PyTorch pickles are accepted where a repo has no safetensors weights.
PICKLE_WEIGHT_PATTERNS = ["*.bin"]
PICKLE_NEVER = ["training_args.bin", "*optimizer*", "*scheduler*", "rng_state*"]
REMOTE_CODE_PATTERNS = ["*.py"]
#: Files whose `auto_map` means "this model needs the repo's own Python code".
AUTO_MAP_FILES = ("config.json", "tokenizer_config.json")
#: `onnx=True` fetches ONNX_DEFAULT (the onnx embedding backend runs it as is); `onnx_files` names other files of
#: ONNX_DIR. An export's weights may sit beside it, in a file named like it plus one of ONNX_DATA_SUFFIXES.
ONNX_DIR = "onnx/"
ONNX_DEFAULT = ONNX_DIR + "model.onnx"
ONNX_DATA_SUFFIXES = ("_data", ".data")

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_TRUE = {"1", "ON", "YES", "TRUE"}
_API_TIMEOUT = 10.0  # seconds, for the metadata call that runs first (huggingface_hub defaults to none)
_DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class DownloadResult:
    """One downloaded model."""

    repo_id: str
    revision: str  # the resolved 40-hex commit
    path: Path  # the snapshot folder (models/models--org--name/snapshots/<commit>)
    files: list[str]  # paths relative to `path`, sorted
    bytes: int  # total size of `files`
    requested: str = _DEFAULT_BRANCH  # the revision asked for (branch, tag or commit)
    downloaded_bytes: int = 0  # what this run had to fetch (0: everything was already there)
    trusted_code: list[str] = field(default_factory=list)  # *.py files fetched under trust_remote_code
    from_cache: bool = False  # offline mode: taken from the models folder without any network call
    onnx: list[str] = field(default_factory=list)  # the ONNX files among `files` (with their external data)
    notes: list[str] = field(default_factory=list)  # one-line remarks for people, e.g. no onnx/model.onnx

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "requested": self.requested,
            "path": str(self.path),
            "files": list(self.files),
            "bytes": self.bytes,
            "downloaded_bytes": self.downloaded_bytes,
            "trusted_code": list(self.trusted_code),
            "from_cache": self.from_cache,
            "onnx": list(self.onnx),
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------- public API


def download_model(
    repo_ids: list[str] | None,
    settings: Settings,
    *,
    revision: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: ProgressCallback | None = None,
    max_workers: int = 8,
    file: str | None = None,
    onnx: bool = False,
    onnx_files: list[str] | None = None,
) -> list[DownloadResult]:
    """Download Hub repos into `settings.models_dir` and record them in the lock file.

    With no repo ids, the configured embedding model and generator are fetched (those that are local
    folders are skipped). `progress(stage, done, total)` is called with bytes, `stage` being the repo id.
    Returns one `DownloadResult` per model, in order. `file` fetches that one file of one repo only
    (e.g. a GGUF generator: `file="model.Q4_1.gguf"`), whatever its type.

    `onnx` also fetches the repo's `onnx/model.onnx` where it has one (otherwise the result says so in
    `notes`, and the onnx embedding backend exports the model itself); `onnx_files` fetches the named files
    of `onnx/` (e.g. `["model_qint8_avx512.onnx"]`), which must exist. With no repo ids, both apply to the
    configured embedding model only: the generator does not run through ONNX."""
    targets = _targets(repo_ids, settings)
    onnx_named = _onnx_paths(onnx_files or [])
    if file is not None and (onnx or onnx_named):
        raise UsageError("--file fetches exactly one file: leave out --onnx and --onnx-file, or fetch the ONNX "
                         "file itself with --file onnx/NAME.")
    onnx_for = set(targets) if repo_ids else {settings.embed_model}
    if file is not None:
        file = file.strip().lstrip("/")
        if not file or ".." in file.split("/"):
            raise UsageError("--file names one file of the repo by its path, e.g. --file model.Q4_1.gguf.")
        if len(targets) != 1:
            raise UsageError(f"--file names a file of one repo, but {len(targets)} models were selected; "
                             "download it with: ragcli download-model ORG/NAME --file NAME")
    if revision is not None:
        revision = revision.strip()
        if not revision:
            raise UsageError("--revision is empty; give a branch, tag or 40-hex commit, or leave it out.")
        if len(targets) != 1:
            raise UsageError(
                f"--revision names a commit of one repo, but {len(targets)} models were selected; "
                "download them one at a time: ragcli download-model ORG/NAME --revision REV"
            )
    if trust_remote_code and (revision is None or not _COMMIT.match(revision)):
        raise UsageError(
            "--trust-remote-code runs Python code from the repo: pin the commit you have read with "
            "--revision <40-hex commit> (a branch or tag can change under you)."
        )
    check_tls_environment(settings)
    if not targets:
        return []

    endpoint = _endpoint(settings)
    token = settings.hf_token.get() if settings.hf_token else None
    if token and urlsplit(endpoint).scheme == "http" and not _is_loopback(endpoint):
        raise ConfigError(
            f"HF_ENDPOINT={endpoint} is plain http: refusing to send HF_TOKEN unencrypted; use an https endpoint."
        )
    models_dir = settings.models_dir
    secrets = [token] if token else []

    if _offline():
        return [
            _from_cache_offline(repo_id, models_dir, revision, onnx=onnx and repo_id in onnx_for,
                                onnx_named=onnx_named if repo_id in onnx_for else [])
            for repo_id in targets
        ]

    results = []
    with _tls_client(settings.ca_bundle):
        for repo_id in targets:
            ctx = _Context(repo_id=repo_id, endpoint=endpoint, models_dir=models_dir, revision=revision,
                           token_sent=bool(token))
            try:
                results.append(
                    _download_one(
                        ctx,
                        token=token or False,
                        allow_pickle=allow_pickle,
                        trust_remote_code=trust_remote_code,
                        progress=progress,
                        max_workers=max_workers,
                        only_file=file,
                        onnx=onnx and repo_id in onnx_for,
                        onnx_named=onnx_named if repo_id in onnx_for else [],
                    )
                )
            except RagcliError as exc:
                if secrets and any(s in str(exc) for s in secrets):
                    raise type(exc)(redact(str(exc), secrets)) from None
                raise
            except Exception as exc:  # noqa: BLE001 - every library failure is translated or re-raised
                translated = _translate(exc, ctx)
                if translated is None:
                    raise
                raise ModelDownloadError(redact(translated, secrets)) from exc
    return results


def check_tls_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse settings that switch TLS checks off or point at an unusable CA bundle. No network I/O."""
    env = os.environ if environ is None else environ
    if "CURL_CA_BUNDLE" in env and not env["CURL_CA_BUNDLE"].strip():
        raise ConfigError(
            "CURL_CA_BUNDLE is set to an empty string, an old trick to switch TLS certificate checks off "
            "(it does nothing with current libraries, and ragcli never disables them); unset it, and behind a "
            "proxy that re-signs TLS pass your organisation's CA bundle with --ca-bundle PATH (or RAGCLI_CA_BUNDLE)."
        )
    if env.get("PYTHONHTTPSVERIFY", "").strip() == "0":
        raise ConfigError(
            "PYTHONHTTPSVERIFY=0 asks Python to skip TLS certificate checks; ragcli never does. Unset it and, "
            "behind a proxy that re-signs TLS, pass your organisation's CA bundle with --ca-bundle PATH."
        )
    if settings.ca_bundle is not None:
        validate_ca_bundle(Path(settings.ca_bundle))
        return
    cert_file = env.get("SSL_CERT_FILE", "").strip()
    if cert_file and not Path(cert_file).expanduser().is_file():
        raise ConfigError(
            f"SSL_CERT_FILE={cert_file} does not exist; fix or unset it, or pass a CA bundle with --ca-bundle PATH."
        )


def validate_ca_bundle(path: Path) -> ssl.SSLContext:
    """Check that `path` is a readable PEM bundle of CA certificates; return an SSL context trusting it."""
    hint = "pass a PEM file of CA certificates (certifi's bundle plus your organisation's root), or leave --ca-bundle out."
    if not path.exists():
        raise ConfigError(f"CA bundle {path} does not exist; {hint}")
    if not path.is_file():
        raise ConfigError(f"CA bundle {path} is not a file; {hint}")
    try:
        text = path.read_bytes().decode("ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"CA bundle {path} cannot be read ({exc.strerror or exc}); {hint}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"CA bundle {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); {hint}")
    try:
        return ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"CA bundle {path} is not a valid PEM certificate bundle ({reason}); {hint}") from None


# --------------------------------------------------------------------------------------------- selection


def _targets(repo_ids: list[str] | None, settings: Settings) -> list[str]:
    if repo_ids:
        targets = []
        for raw in repo_ids:
            repo_id = raw.strip()
            if Path(repo_id).expanduser().is_dir():
                raise UsageError(
                    f"'{repo_id}' is a local folder: nothing to download (download-model fetches Hub repos like org/name)."
                )
            _check_repo_id(repo_id, "argument")
            if repo_id not in targets:
                targets.append(repo_id)
        return targets
    targets = []
    for role, model in (("embedding model", settings.embed_model), ("generator", settings.gen_model)):
        if Path(model).expanduser().is_dir():
            continue  # a local folder: nothing to fetch
        _check_repo_id(model, role)
        if model not in targets:
            targets.append(model)
    return targets


def _check_repo_id(value: str, role: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    valid = registry.is_repo_id(value)
    if valid:
        try:
            validate_repo_id(value)
        except HFValidationError:
            valid = False
    if not valid:
        where = "" if role == "argument" else f"The configured {role} "
        raise UsageError(
            f"{where}'{value}' is not a Hub repo id (org/name: letters, digits, '.', '_' or '-', no '--' or '..', "
            "96 characters at most) nor a local folder; check the spelling."
        )


# --------------------------------------------------------------------------------------------- environment


def _endpoint(settings: Settings) -> str:
    from huggingface_hub import constants

    endpoint = (settings.hf_endpoint or constants.ENDPOINT).strip().rstrip("/")
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"HF_ENDPOINT={endpoint!r} is not an http(s) URL; use e.g. https://huggingface.co")
    return endpoint


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def _offline() -> bool:
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return True
    return any(os.environ.get(v, "").strip().upper() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _from_cache_offline(repo_id: str, models_dir: Path, revision: str | None, *, onnx: bool = False,
                        onnx_named: list[str] | None = None) -> DownloadResult:
    """Offline mode: a model already complete in the models folder counts as downloaded; no network call."""
    try:
        resolved = registry.resolve_model(repo_id, models_dir)
    except RagcliError as exc:
        state = "is incomplete" if "incomplete" in str(exc) else "is not downloaded"
        raise ModelDownloadError(
            f"Offline mode is on (HF_HUB_OFFLINE) and {repo_id} {state} in {models_dir}; unset HF_HUB_OFFLINE "
            f"(and TRANSFORMERS_OFFLINE) and run: ragcli download-model {repo_id}"
        ) from None
    entry = registry.read_lock(models_dir).get(repo_id, {})
    if revision is not None and revision not in (resolved.revision, entry.get("requested")):
        raise ModelDownloadError(
            f"Offline mode is on (HF_HUB_OFFLINE) and {repo_id} is downloaded at {resolved.revision[:12]}, not "
            f"'{revision}'; unset HF_HUB_OFFLINE to fetch that revision."
        )
    files = dict(entry.get("files") or {})
    for name in onnx_named or []:
        if name not in files:
            raise ModelDownloadError(
                f"Offline mode is on (HF_HUB_OFFLINE) and {name} of {repo_id} is not in {models_dir}; unset "
                "HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE) and run the command again to fetch it."
            )
    notes = []
    if onnx and ONNX_DEFAULT not in files:
        notes.append(f"No {ONNX_DEFAULT} of {repo_id} in {models_dir} (offline mode: the Hub was not asked); "
                     "ragcli exports the model itself on first use of --embed-backend onnx.")
    return DownloadResult(
        repo_id=repo_id,
        revision=resolved.revision,
        path=resolved.path,
        files=sorted(files),
        bytes=sum(int(v) for v in files.values()),
        requested=str(entry.get("requested") or _DEFAULT_BRANCH),
        trusted_code=sorted(f for f in files if f.endswith(".py")),
        from_cache=True,
        onnx=sorted(f for f in files if f.startswith(ONNX_DIR)),
        notes=notes,
    )


@contextmanager
def _tls_client(ca_bundle: Path | None) -> Iterator[None]:
    """Make huggingface_hub's HTTP client trust `ca_bundle` (verification stays on) for the duration."""
    if ca_bundle is None:
        yield
        return
    context = validate_ca_bundle(Path(ca_bundle))
    # For every client created from here on, in this process: httpx/httpcore (SSL_CERT_FILE), the stdlib and
    # hf-xet (SSL_CERT_FILE), requests-based libraries such as databricks-sdk (REQUESTS_CA_BUNDLE).
    os.environ["SSL_CERT_FILE"] = str(ca_bundle)
    os.environ["REQUESTS_CA_BUNDLE"] = str(ca_bundle)

    import httpx2
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", _http.default_client_factory)
    hook = getattr(_http, "hf_request_event_hook", None)

    def factory() -> httpx2.Client:
        return httpx2.Client(
            event_hooks={"request": [hook]} if hook is not None else None,
            follow_redirects=True,
            timeout=None,
            verify=context,
        )

    set_client_factory(factory)  # also closes the shared client, so the next call builds one with `verify`
    try:
        yield
    finally:
        set_client_factory(previous)


# --------------------------------------------------------------------------------------------- one model


@dataclass
class _Context:
    repo_id: str
    endpoint: str
    models_dir: Path
    revision: str | None
    token_sent: bool
    commit: str | None = None
    stage: str = "resolve"


def _download_one(
    ctx: _Context,
    *,
    token: str | bool,
    allow_pickle: bool,
    trust_remote_code: bool,
    progress: ProgressCallback | None,
    max_workers: int,
    only_file: str | None = None,
    onnx: bool = False,
    onnx_named: list[str] | None = None,
) -> DownloadResult:
    import glob

    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    from ragcli import __version__

    repo_id, models_dir = ctx.repo_id, ctx.models_dir
    api = HfApi(endpoint=ctx.endpoint, token=token, library_name="ragcli", library_version=__version__)
    info = api.model_info(repo_id, revision=ctx.revision, files_metadata=True, timeout=_API_TIMEOUT)
    commit = info.sha or ""
    if not _COMMIT.match(commit):
        raise ModelDownloadError(
            f"{ctx.endpoint} gave no commit for {repo_id} (got {commit[:60]!r}); check that HF_ENDPOINT is a Hub."
        )
    ctx.commit = commit
    requested = ctx.revision or _DEFAULT_BRANCH
    siblings = {s.rfilename: s for s in (info.siblings or [])}

    if only_file is not None:
        allow, ignore = _one_file(repo_id, only_file, list(siblings), allow_pickle=allow_pickle)
    else:
        allow, ignore = _patterns(repo_id, list(siblings), allow_pickle=allow_pickle,
                                  trust_remote_code=trust_remote_code)
    expected = sorted(filter_repo_objects(list(siblings), allow_patterns=allow, ignore_patterns=ignore))
    onnx_picked, notes = _onnx_selection(repo_id, commit, list(siblings), default=onnx, named=onnx_named or [])
    expected = sorted(set(expected) | set(onnx_picked))

    storage = registry.repo_folder(models_dir, repo_id)
    snapshot = storage / "snapshots" / commit
    remaining = sum(
        (siblings[f].size or 0) for f in expected if not (snapshot / f).is_file()
    )
    _check_disk_space(ctx, remaining)

    # From here on files are written: the model stops counting as ready until its entry is written again.
    ctx.stage = "download"
    registry.forget_model(models_dir, repo_id)
    stage = repo_id
    bars = _ProgressClass(progress, stage, remaining)
    if progress is not None:
        progress(stage, 0, remaining)

    common = dict(revision=commit, cache_dir=models_dir, endpoint=ctx.endpoint, token=token,
                  library_name="ragcli", library_version=__version__)
    # Custom code is refused before the weights are fetched: read the small files that declare it first.
    if not trust_remote_code:
        for name in AUTO_MAP_FILES:
            if name in expected:
                local = Path(hf_hub_download(repo_id, name, tqdm_class=bars.cls, **common))
                if _has_auto_map(local):
                    raise ModelDownloadError(
                        f"{repo_id} needs its own Python code (auto_map in {name}), which ragcli does not run by "
                        f"default; read the repo's *.py files, then pass --trust-remote-code --revision {commit}."
                    )

    # Exactly the files picked above (and verified below): the patterns alone would skip the ONNX files.
    path = Path(
        snapshot_download(
            repo_id,
            allow_patterns=[glob.escape(f) for f in expected],
            max_workers=max_workers,
            tqdm_class=bars.cls,
            **common,
        )
    )
    if path.resolve() != snapshot.resolve():
        raise ModelDownloadError(
            f"{repo_id}: the Hub served commit {path.name[:12]} instead of {commit[:12]}; run the command again."
        )
    ctx.stage = "verify"
    total = _verify(ctx, snapshot, expected, siblings)
    if progress is not None:
        progress(stage, remaining, remaining)
    if requested != commit:
        _write_ref(storage, requested, commit)
    registry.record_model(models_dir, repo_id, commit, snapshot, requested)
    return DownloadResult(
        repo_id=repo_id,
        revision=commit,
        path=snapshot,
        files=expected,
        bytes=total,
        requested=requested,
        downloaded_bytes=remaining,
        trusted_code=[f for f in expected if f.endswith(".py")] if trust_remote_code else [],
        onnx=onnx_picked,
        notes=notes,
    )


def _onnx_paths(names: list[str]) -> list[str]:
    """Repo paths (`onnx/NAME.onnx`) of the names given to --onnx-file, checked before any network call."""
    paths: list[str] = []
    for raw in names:
        name = raw.strip().lstrip("/")
        name = name[len(ONNX_DIR):] if name.startswith(ONNX_DIR) else name
        if not name.endswith(".onnx") or "/" in name or "\\" in name or name == ".onnx":
            raise UsageError(f"--onnx-file {raw!r} is not the name of an .onnx file in the repo's onnx/ folder; "
                             "give one like --onnx-file model_qint8_avx512.onnx.")
        if ONNX_DIR + name not in paths:
            paths.append(ONNX_DIR + name)
    return paths


def _onnx_selection(
    repo_id: str, commit: str, files: list[str], *, default: bool, named: list[str]
) -> tuple[list[str], list[str]]:
    """(ONNX files to fetch, notes): `onnx/model.onnx` where the repo has it (`default`), the `named` ones,
    which must exist, and the external data file of each."""
    present = set(files)
    for path in named:
        if path not in present:
            others = sorted(f[len(ONNX_DIR):] for f in files if f.startswith(ONNX_DIR) and f.endswith(".onnx"))
            where = f"its onnx/ files: {', '.join(others[:8])}" if others else "it has no onnx/ files"
            raise ModelDownloadError(
                f"{repo_id} at {commit[:12]} has no {path} ({where}); check the name given to --onnx-file."
            )
    chosen, notes = list(named), []
    if default and ONNX_DEFAULT not in chosen:
        if ONNX_DEFAULT in present:
            chosen.append(ONNX_DEFAULT)
        else:
            notes.append(f"No {ONNX_DEFAULT} in {repo_id} at {commit[:12]}; ragcli exports the model itself on "
                         "first use of --embed-backend onnx.")
    picked = set(chosen)
    picked.update(p + s for p in chosen for s in ONNX_DATA_SUFFIXES if p + s in present)
    return sorted(picked), notes


def _one_file(repo_id: str, name: str, files: list[str], *, allow_pickle: bool) -> tuple[list[str], list[str]]:
    """allow/ignore patterns that fetch exactly `name` (download-model --file)."""
    import fnmatch
    import glob

    if name not in files:
        ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
        hint = f"; its GGUF files: {', '.join(ggufs[:6])}" if ggufs else ""
        raise ModelDownloadError(f"{repo_id} has no file {name!r}{hint}. Pass its path in the repo to --file.")
    if not allow_pickle and any(fnmatch.fnmatch(name, p) for p in PICKLE_PATTERNS):
        raise ModelDownloadError(f"{name} is a pickle, which can run code when loaded; pass --allow-pickle to "
                                 "download it anyway (only from a repo you trust).")
    return [glob.escape(name)], []


def _patterns(
    repo_id: str, files: list[str], *, allow_pickle: bool, trust_remote_code: bool
) -> tuple[list[str], list[str]]:
    """allow/ignore patterns for this repo; refuses repos without usable weights."""
    from huggingface_hub.utils import filter_repo_objects

    allow, ignore = list(ALLOW_PATTERNS), list(IGNORE_PATTERNS)
    structural_ignore = [p for p in IGNORE_PATTERNS if p not in PICKLE_PATTERNS]
    safetensors = list(filter_repo_objects(files, allow_patterns=["*.safetensors"], ignore_patterns=structural_ignore))
    if not safetensors:
        pickles = list(
            filter_repo_objects(files, allow_patterns=PICKLE_PATTERNS, ignore_patterns=structural_ignore + PICKLE_NEVER)
        )
        torch_pickles = list(filter_repo_objects(pickles, allow_patterns=PICKLE_WEIGHT_PATTERNS))
        ggufs = sorted(f for f in files if f.lower().endswith(".gguf"))
        if ggufs and not allow_pickle:
            raise ModelDownloadError(
                f"{repo_id} has no .safetensors weights but GGUF files ({', '.join(ggufs[:4])}); download one "
                f"with: ragcli download-model {repo_id} --file {ggufs[0]}"
            )
        if not pickles:
            raise ModelDownloadError(
                f"{repo_id} has no model weights (no .safetensors file); choose a repo that has them."
            )
        if not allow_pickle:
            names = ", ".join(sorted(pickles)[:3])
            raise ModelDownloadError(
                f"{repo_id} only has pickle weights ({names}), which can run code when loaded; pass --allow-pickle "
                "to download them anyway (load them with torch>=2.6 only), or choose a repo with .safetensors weights."
            )
        if not torch_pickles:
            raise ModelDownloadError(
                f"{repo_id} has no PyTorch weights (only {', '.join(sorted(pickles)[:3])}); choose another repo."
            )
        allow += PICKLE_WEIGHT_PATTERNS
        ignore = [p for p in ignore if p not in PICKLE_WEIGHT_PATTERNS] + PICKLE_NEVER
    if trust_remote_code:
        allow += REMOTE_CODE_PATTERNS
    return allow, ignore


def _has_auto_map(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data.get("auto_map"))


def _check_disk_space(ctx: _Context, needed: int) -> None:
    probe = ctx.models_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if needed > free:
        raise ModelDownloadError(
            f"Not enough disk space for {ctx.repo_id} in {ctx.models_dir}: it needs {human_bytes(needed)}, "
            f"{human_bytes(free)} is free; free some space or choose another --models-dir."
        )


def _verify(ctx: _Context, snapshot: Path, expected: list[str], siblings: dict[str, Any]) -> int:
    """Every expected file is in the snapshot with the Hub's size and checksum. Returns the total size."""
    total = 0
    for name in expected:
        path = snapshot / name
        if not path.is_file():
            raise ModelDownloadError(
                f"Download of {ctx.repo_id} is incomplete ({name} is missing); run the command again to resume."
            )
        size = path.stat().st_size
        total += size
        sibling = siblings.get(name)
        problem = _mismatch(path, size, sibling)
        if problem:
            raise ModelDownloadError(
                f"{ctx.repo_id}: {name} does not match the Hub ({problem}); delete "
                f"{registry.repo_folder(ctx.models_dir, ctx.repo_id)} and run the command again."
            )
    return total


def _mismatch(path: Path, size: int, sibling: Any) -> str | None:
    if sibling is None:
        return None
    if sibling.size is not None and sibling.size != size:
        return f"size {size} instead of {sibling.size}"
    lfs = getattr(sibling, "lfs", None)
    want_sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
    if want_sha256:
        digest = hashlib.sha256()
        _feed(path, digest)
        return None if digest.hexdigest() == want_sha256 else "SHA-256 differs"
    if sibling.blob_id:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % size)
        _feed(path, digest)
        return None if digest.hexdigest() == sibling.blob_id else "git blob id differs"
    return None


def _feed(path: Path, digest: Any) -> None:
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)


def _write_ref(storage: Path, ref: str, commit: str) -> None:
    """refs/<branch> -> commit, as huggingface_hub writes it, so Hub tooling resolves the name offline."""
    target = storage / "refs" / ref
    try:
        if target.is_file() and target.read_text(encoding="utf-8") == commit:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".ref-", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(commit)
        os.replace(tmp, target)
    except OSError:
        pass  # best effort: ragcli itself resolves models through the lock file


# --------------------------------------------------------------------------------------------- progress


class _ProgressClass:
    """A tqdm stand-in for huggingface_hub that forwards byte counts to `progress(stage, done, total)`.

    snapshot_download creates a bytes bar (and a "transfer" bytes bar) and a files bar from `tqdm_class`, and
    feeds every file's chunks to them from worker threads. Nothing is drawn. The "Downloading bytes" bar
    counts network bytes, which the other byte bars count too: it is left out of the sum."""

    def __init__(self, progress: ProgressCallback | None, stage: str, total: int) -> None:
        owner = self
        self.progress = progress
        self.stage = stage
        self.total = total
        self.counts: dict[int, int] = {}
        self.lock = threading.Lock()

        class Bar:
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                self.n = kwargs.get("initial") or 0
                self.total = kwargs.get("total")
                self.desc = kwargs.get("desc") or ""
                self.unit = kwargs.get("unit") or "it"
                self.counts_bytes = self.unit == "B" and not self.desc.startswith("Downloading bytes")
                self.disable = True
                self.postfix = ""

            def update(self, n: float | None = 1) -> None:
                self.n += int(n or 0)
                if self.counts_bytes:
                    owner._bytes(id(self), self.n)

            def __enter__(self) -> Bar:
                return self

            def __exit__(self, *exc: Any) -> None:
                return None

            def refresh(self, *args: Any, **kwargs: Any) -> None:
                return None

            def close(self) -> None:
                return None

            def clear(self, *args: Any, **kwargs: Any) -> None:
                return None

            def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
                self.desc = desc or ""

            set_description_str = set_description

            def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
                self.postfix = s

            def set_postfix(self, *args: Any, **kwargs: Any) -> None:
                return None

            @property
            def format_dict(self) -> dict[str, Any]:
                return {"n": self.n, "total": self.total, "rate": None, "unit": self.unit}

        self.cls = Bar

    def _bytes(self, key: int, count: int) -> None:
        if self.progress is None:
            return
        with self.lock:
            self.counts[key] = count
            done = max(0, min(sum(self.counts.values()), self.total))
            self.progress(self.stage, done, self.total)


# --------------------------------------------------------------------------------------------- errors


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop(0)
        if any(current is s for s in seen):
            continue
        seen.append(current)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return seen


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0].strip() if text else ""
    first = first or type(exc).__name__
    return first if len(first) <= 160 else first[:157] + "..."


def _translate(exc: Exception, ctx: _Context) -> str | None:
    """One actionable line for a failure of huggingface_hub, httpx or the file system; None if unknown."""
    import httpx2
    from huggingface_hub.errors import (
        DisabledRepoError,
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo, endpoint = ctx.repo_id, ctx.endpoint
    chain = _chain(exc)

    def find(kind: type | tuple[type, ...]) -> Any:
        return next((e for e in chain if isinstance(e, kind)), None)

    if isinstance(exc, HFValidationError):
        return f"'{repo}' is not a valid Hub repo id or revision ({_reason(exc)}); check the spelling."
    if find(OfflineModeIsEnabled) is not None:
        return (
            f"Offline mode is on (HF_HUB_OFFLINE) and {repo} must be downloaded; unset HF_HUB_OFFLINE "
            f"(and TRANSFORMERS_OFFLINE) and run: ragcli download-model {repo}"
        )
    http_error = find(HfHubHTTPError)
    if isinstance(http_error, GatedRepoError):
        url = f"{endpoint}/{repo}"
        if ctx.token_sent:
            return (
                f"Model {repo} is gated and the token in HF_TOKEN has no access to it: accept its licence at {url} "
                "with that account (or set HF_TOKEN to a token of an account that did)."
            )
        return (
            f"Model {repo} is gated: accept its licence at {url}, then set HF_TOKEN (environment or .env) to a "
            "read token of that account."
        )
    if isinstance(http_error, RevisionNotFoundError):
        return (
            f"Revision '{ctx.revision or _DEFAULT_BRANCH}' of {repo} was not found on {endpoint}; check --revision "
            "(a branch, tag or commit of that repo)."
        )
    if isinstance(http_error, DisabledRepoError):
        return f"Model {repo} has been disabled on {endpoint}; choose another model."
    if isinstance(http_error, RepositoryNotFoundError):
        private = "" if ctx.token_sent else "; if it is private, set HF_TOKEN to a token that can read it"
        return f"Model {repo} was not found on {endpoint}: check the repo id (org/name){private}."
    if isinstance(http_error, RemoteEntryNotFoundError):
        return (
            f"{endpoint} lists a file of {repo}@{(ctx.commit or '')[:12]} that it does not serve "
            f"({_reason(http_error)}); run the command again later."
        )
    if http_error is not None:
        status = http_error.response.status_code if http_error.response is not None else 0
        if status == 401:
            if ctx.token_sent:
                return (
                    f"{endpoint} rejected HF_TOKEN (HTTP 401) for {repo}; set HF_TOKEN to a valid read token, or "
                    "unset it for public models."
                )
            return f"{endpoint} requires a token for {repo} (HTTP 401); set HF_TOKEN to a read token."
        if status == 403:
            return f"{endpoint} refused access to {repo} (HTTP 403); check that HF_TOKEN's account may read it."
        if status == 429:
            return f"{endpoint} is rate-limiting downloads (HTTP 429) of {repo}; wait a little and run the command again."
        if ctx.stage == "download" and status >= 500:
            return f"Download of {repo} interrupted (HTTP {status} from {endpoint}); run the command again to resume."
        return f"{endpoint} answered HTTP {status} for {repo}; run the command again later, or check HF_ENDPOINT."

    texts = " ".join(str(e) for e in chain)
    if find(ssl.SSLCertVerificationError) is not None or "CERTIFICATE_VERIFY_FAILED" in texts:
        return (
            f"Cannot reach {endpoint} for {repo}: its TLS certificate is not trusted. Behind a proxy that re-signs "
            "TLS, add your organisation's CA with --ca-bundle PATH (or RAGCLI_CA_BUNDLE); certificate checks stay on."
        )
    if find(httpx2.ProxyError) is not None:
        return f"The proxy refused the connection to {endpoint} for {repo} ({_reason(find(httpx2.ProxyError))}); check HTTPS_PROXY."
    if ctx.stage == "resolve":
        transport = find(httpx2.TransportError)
        if transport is not None:
            return (
                f"Cannot reach {endpoint} to download {repo} ({_reason(transport)}); check the network, "
                "HF_ENDPOINT or --ca-bundle."
            )
    connect = find(httpx2.ConnectError)
    if connect is not None:
        return (
            f"Download of {repo} interrupted: lost the connection to {endpoint} ({_reason(connect)}); check the "
            "network and run the command again to resume."
        )
    transport = find(httpx2.TransportError)
    if transport is not None:
        return f"Download of {repo} interrupted ({_reason(transport)}); run the command again to resume."
    if find(FileMetadataError) is not None:
        return (
            f"{endpoint} does not answer like a Hugging Face Hub for {repo} ({_reason(find(FileMetadataError))}); "
            "check HF_ENDPOINT and the proxy settings."
        )
    os_error = find(OSError)
    if os_error is not None:
        if getattr(os_error, "errno", None) == errno.ENOSPC:
            return (
                f"Download of {repo} interrupted (no space left on device in {ctx.models_dir}); free some space "
                "and run the command again to resume."
            )
        if getattr(os_error, "errno", None) in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"Cannot write the models folder {ctx.models_dir} for {repo} ({_reason(os_error)}); choose another --models-dir."
        if isinstance(os_error, LocalEntryNotFoundError) or ctx.stage != "resolve":
            return f"Download of {repo} interrupted ({_reason(os_error)}); run the command again to resume."
    return None


def human_bytes(n: int) -> str:
    """A byte count for people: 512 B, 1.5 KB, 3.2 MB, 1.1 GB."""
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover
