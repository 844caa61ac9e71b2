"""download-model against a local fake Hub (tests/fake_hub.py): no test touches the network.

Covers the contract rows D1-D5 of docs/failure-modes.md §5: pinned commits recorded only after a
complete, checksum-verified download; no pickle weights unless asked; gated, unknown and unreachable
repos; interrupted downloads and re-runs; CA bundles and TLS; remote code; offline mode; no token in
any output. Also `--onnx`/`--onnx-file`: a repo's ONNX exports, fetched and verified only when asked.
"""

from __future__ import annotations

import errno
import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from fake_hub import FakeHub, make_test_ca

from ragcli import registry
from ragcli.config import Secret, load_settings
from ragcli.errors import ConfigError, ModelDownloadError, ModelLoadError, ModelNotFoundError, UsageError
from ragcli.hub import download_model

EMBED = "acme/tiny-embed"
GEN = "acme/tiny-gen"
PICKLE_ONLY = "acme/pickle-only"
REMOTE = "acme/remote-code"
GATED = "acme/gated"
CANARY = "hf_CANARYtoken0123456789abcdefXYZ"

EMBED_FILES = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "1_Pooling/config.json",
    "model.safetensors",
}


# --------------------------------------------------------------------------------------------- fixtures


def _weights(path: Path, rows: int = 64, cols: int = 256, seed: int = 0) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    save_file({"weight": rng.standard_normal((rows, cols)).astype("float32")}, str(path))


def _write(folder: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def repo_folders(tmp_path_factory) -> dict[str, Path]:
    """Small fake model folders: right file names and formats, not loadable models."""
    root = tmp_path_factory.mktemp("fake-hub-repos")
    tokenizer = json.dumps({"version": "1.0", "model": {"type": "WordPiece", "vocab": {"[UNK]": 0, "a": 1}}})
    embed = _write(root / "embed", {
        "config.json": json.dumps({"model_type": "bert", "architectures": ["BertModel"], "hidden_size": 256}),
        "tokenizer.json": tokenizer,
        "tokenizer_config.json": json.dumps({"model_max_length": 512}),
        "special_tokens_map.json": json.dumps({"unk_token": "[UNK]"}),
        "vocab.txt": "[UNK]\na\n",
        "modules.json": json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]),
        "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 256, "pooling_mode_cls_token": True}),
        "pytorch_model.bin": b"\x80\x02pickle-that-must-never-be-fetched" * 200,
        "onnx/model.onnx": b"onnx" * 100,
        "onnx/model.onnx_data": b"external-weights" * 50,
        "onnx/model_qint8_avx512.onnx": b"qint8" * 40,
        "onnx/model_O4.onnx": b"optimised" * 30,
        "README.md": "# tiny embed\n",
        ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    })
    _weights(embed / "model.safetensors")
    gen = _write(root / "gen", {
        "config.json": json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}),
        "generation_config.json": json.dumps({"decoder_start_token_id": 0}),
        "spiece.model": b"\x0a\x0bsentencepiece" * 10,
        "tokenizer.json": tokenizer,
    })
    _weights(gen / "model.safetensors", rows=16, seed=1)
    _write(root / "pickle", {
        "config.json": json.dumps({"model_type": "bert"}),
        "tokenizer.json": tokenizer,
        "pytorch_model.bin": b"\x80\x02old-style-weights" * 100,
        "training_args.bin": b"\x80\x02training-args",
    })
    remote = _write(root / "remote", {
        "config.json": json.dumps({
            "model_type": "acme",
            "auto_map": {"AutoConfig": "configuration_acme.AcmeConfig", "AutoModel": "modeling_acme.AcmeModel"},
        }),
        "configuration_acme.py": "class AcmeConfig: ...\n",
        "modeling_acme.py": "class AcmeModel: ...\n",
        "tokenizer.json": tokenizer,
    })
    _weights(remote / "model.safetensors", rows=8, seed=2)
    gated = _write(root / "gated", {
        "config.json": json.dumps({"model_type": "bert"}),
        "tokenizer.json": tokenizer,
    })
    _weights(gated / "model.safetensors", rows=8, seed=3)
    return {EMBED: embed, GEN: gen, PICKLE_ONLY: root / "pickle", REMOTE: remote, GATED: gated}


@pytest.fixture(autouse=True)
def _hub_env(monkeypatch):
    """huggingface_hub reads its environment at import time: pin what matters on its constants too."""
    import huggingface_hub.constants as constants
    from huggingface_hub import file_download

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTHONHTTPSVERIFY"):
        monkeypatch.delenv(var, raising=False)
    # download_model(ca_bundle=...) sets these for the process: make monkeypatch restore them (set, then delete).
    for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(var, "unset-by-test")
        monkeypatch.delenv(var)
    # http_get sleeps 1 s before resuming a dropped download: not in tests.
    monkeypatch.setattr(file_download, "time", SimpleNamespace(sleep=lambda seconds: None))


@pytest.fixture
def hub(repo_folders):
    with FakeHub() as server:
        for repo_id, folder in repo_folders.items():
            server.add_repo(repo_id, folder, gated=repo_id == GATED, token=CANARY if repo_id == GATED else None)
        yield server


@pytest.fixture
def models(tmp_path) -> Path:
    return tmp_path / "models"


def make_settings(hub: FakeHub | None, models: Path, **overrides):
    values = {"models_dir": models, "hf_endpoint": hub.url if hub else None}
    values.update(overrides)
    return load_settings(values, env={})


def resolve_requests(hub: FakeHub) -> list:
    return hub.file_requests()


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


# --------------------------------------------------------------------------------------------- success


def test_download_pins_commit_verifies_and_records(hub, models, repo_folders):
    events: list[tuple[str, int, int]] = []
    [result] = download_model([EMBED], make_settings(hub, models), progress=lambda *e: events.append(e))

    sha = hub.repos[EMBED].sha
    snapshot = models / "models--acme--tiny-embed" / "snapshots" / sha
    assert result.revision == sha and len(sha) == 40
    assert result.path == snapshot
    assert set(result.files) == EMBED_FILES
    for name in EMBED_FILES:
        assert (snapshot / name).read_bytes() == (repo_folders[EMBED] / name).read_bytes()
    assert result.bytes == sum((repo_folders[EMBED] / f).stat().st_size for f in EMBED_FILES)

    entry = registry.read_lock(models)[EMBED]
    assert entry["revision"] == sha and entry["requested"] == "main"
    assert set(entry["files"]) == EMBED_FILES
    resolved = registry.resolve_model(EMBED, models)
    assert resolved.path == snapshot and resolved.revision == sha
    assert (models / "models--acme--tiny-embed" / "refs" / "main").read_text() == sha

    # Pickles, ONNX exports and docs are never even asked for.
    asked = {r.path for r in hub.requests}
    assert not any(p.endswith(("pytorch_model.bin", ".onnx", "README.md", ".gitattributes")) for p in asked)
    assert hub.file_requests("pytorch_model.bin") == []
    assert not any(r.auth for r in hub.requests)  # no token configured: none sent, not even a cached one

    # Progress: bytes, never decreasing, ending at the total.
    assert events and events[-1] == (EMBED, result.downloaded_bytes, result.downloaded_bytes)
    assert result.downloaded_bytes == result.bytes
    done = [d for _, d, _ in events]
    assert done == sorted(done)
    assert not list(models.rglob("*.incomplete"))


def test_second_run_downloads_nothing(hub, models):
    settings = make_settings(hub, models)
    download_model([EMBED], settings)
    hub.clear()
    [again] = download_model([EMBED], settings)
    assert again.downloaded_bytes == 0
    assert hub.file_requests(method="GET") == []
    assert registry.resolve_model(EMBED, models).revision == hub.repos[EMBED].sha


def test_defaults_are_the_configured_models_and_local_folders_are_skipped(hub, models, tmp_path):
    results = download_model([], make_settings(hub, models, embed_model=EMBED, gen_model=GEN))
    assert [r.repo_id for r in results] == [EMBED, GEN]
    assert "spiece.model" in results[1].files

    local = tmp_path / "my-generator"
    local.mkdir()
    (local / "config.json").write_text("{}")
    hub.clear()
    results = download_model(None, make_settings(hub, models, embed_model=EMBED, gen_model=str(local)))
    assert [r.repo_id for r in results] == [EMBED]
    assert download_model([], make_settings(hub, models, embed_model=str(local), gen_model=str(local))) == []


# --------------------------------------------------------------------------------------------- pickles, remote code


def test_pickle_only_repo_is_refused(hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model([PICKLE_ONLY], make_settings(hub, models))
    message = one_line(str(info.value))
    assert PICKLE_ONLY in message and "--allow-pickle" in message and "pytorch_model.bin" in message
    assert resolve_requests(hub) == []
    assert PICKLE_ONLY not in registry.read_lock(models)


def test_allow_pickle_fetches_the_torch_weights(hub, models):
    [result] = download_model([PICKLE_ONLY], make_settings(hub, models), allow_pickle=True)
    assert "pytorch_model.bin" in result.files
    assert "training_args.bin" not in result.files and hub.file_requests("training_args.bin") == []
    assert registry.resolve_model(PICKLE_ONLY, models).revision == hub.repos[PICKLE_ONLY].sha


def test_allow_pickle_still_prefers_safetensors(hub, models):
    [result] = download_model([EMBED], make_settings(hub, models), allow_pickle=True)
    assert "model.safetensors" in result.files and "pytorch_model.bin" not in result.files
    assert hub.file_requests("pytorch_model.bin") == []


def test_remote_code_is_refused_by_default(hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model([REMOTE], make_settings(hub, models))
    message = one_line(str(info.value))
    assert REMOTE in message and "--trust-remote-code" in message
    assert f"--revision {hub.repos[REMOTE].sha}" in message
    assert not any(r.path.endswith(".py") for r in hub.requests)
    assert hub.file_requests("model.safetensors") == []  # refused before the weights
    assert REMOTE not in registry.read_lock(models)


@pytest.mark.parametrize("revision", [None, "main", "abc123"])
def test_trust_remote_code_needs_a_pinned_commit(hub, models, revision):
    with pytest.raises(UsageError) as info:
        download_model([REMOTE], make_settings(hub, models), trust_remote_code=True, revision=revision)
    assert "--revision" in one_line(str(info.value))
    assert hub.requests == []


def test_trust_remote_code_with_a_commit_lists_the_code(hub, models):
    sha = hub.repos[REMOTE].sha
    [result] = download_model([REMOTE], make_settings(hub, models), trust_remote_code=True, revision=sha)
    assert result.trusted_code == ["configuration_acme.py", "modeling_acme.py"]
    assert {"configuration_acme.py", "modeling_acme.py", "model.safetensors"} <= set(result.files)
    entry = registry.read_lock(models)[REMOTE]
    assert entry["revision"] == sha and entry["requested"] == sha


# --------------------------------------------------------------------------------------------- Hub errors


def test_unknown_repo_names_it(hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model(["acme/does-not-exist"], make_settings(hub, models))
    message = one_line(str(info.value))
    assert "acme/does-not-exist" in message and "not found" in message
    with pytest.raises(ModelNotFoundError):
        registry.resolve_model("acme/does-not-exist", models)


def test_unknown_revision_names_it(hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], make_settings(hub, models), revision="v9.9")
    message = one_line(str(info.value))
    assert "v9.9" in message and EMBED in message and "--revision" in message


def test_gated_repo_without_token(hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model([GATED], make_settings(hub, models))
    message = one_line(str(info.value))
    assert f"{hub.url}/{GATED}" in message and "licence" in message and "HF_TOKEN" in message
    assert resolve_requests(hub) and not any(r.auth for r in resolve_requests(hub))
    assert GATED not in registry.read_lock(models)


def test_gated_repo_with_a_wrong_token_never_shows_it(hub, models):
    wrong = "hf_wrongTOKENabcdefghijklmnopqrstuv"
    with pytest.raises(ModelDownloadError) as info:
        download_model([GATED], make_settings(hub, models, hf_token=Secret(wrong)))
    message = one_line(str(info.value))
    assert wrong not in message and "no access" in message and f"{hub.url}/{GATED}" in message
    assert all(r.auth for r in resolve_requests(hub))


def test_gated_repo_with_the_token(hub, models):
    [result] = download_model([GATED], make_settings(hub, models, hf_token=Secret(CANARY)))
    assert "model.safetensors" in result.files
    assert hub.requests and all(r.auth for r in hub.requests)
    assert CANARY not in (models / registry.LOCK_NAME).read_text()


def test_unreachable_endpoint_fails_fast(models):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    settings = load_settings({"models_dir": models, "hf_endpoint": f"http://127.0.0.1:{port}"}, env={})
    start = time.monotonic()
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], settings)
    assert time.monotonic() - start < 5
    message = one_line(str(info.value))
    assert message.startswith(f"Cannot reach http://127.0.0.1:{port}") and EMBED in message
    assert "HF_ENDPOINT" in message and "--ca-bundle" in message


# --------------------------------------------------------------------------------------------- interruptions


def test_dropped_connection_is_resumed_with_a_range_request(hub, models, repo_folders, monkeypatch):
    import huggingface_hub.constants as constants

    # huggingface_hub only counts bytes in whole chunks (10 MB by default): what was buffered is fetched again.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 4096)
    hub.fail_body(EMBED, "model.safetensors", after_bytes=10_000, times=1)
    [result] = download_model([EMBED], make_settings(hub, models))
    gets = hub.file_requests("model.safetensors", method="GET")
    assert [r.range for r in gets] == [None, "bytes=8192-"]
    assert (result.path / "model.safetensors").read_bytes() == (repo_folders[EMBED] / "model.safetensors").read_bytes()


def test_interrupted_download_is_not_recorded_and_a_rerun_completes(hub, models):
    hub.fail_body(EMBED, "model.safetensors", after_bytes=0, times=1000)  # the connection always drops
    settings = make_settings(hub, models)
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], settings)
    message = one_line(str(info.value))
    assert message.startswith(f"Download of {EMBED} interrupted") and "run the command again" in message
    assert EMBED not in registry.read_lock(models)
    with pytest.raises(ModelLoadError, match="incomplete .*ragcli download-model acme/tiny-embed"):
        registry.resolve_model(EMBED, models)
    assert not list(models.rglob("*.incomplete"))
    got_before = {f for f in EMBED_FILES if hub.file_requests(f, method="GET")}

    hub.faults.clear()
    hub.clear()
    [result] = download_model([EMBED], settings)
    assert registry.resolve_model(EMBED, models).path == result.path
    refetched = {f for f in EMBED_FILES if hub.file_requests(f, method="GET")}
    assert "model.safetensors" in refetched
    # Files completed by the interrupted run are kept, not fetched again.
    completed_before = got_before - {"model.safetensors"}
    assert completed_before and not (completed_before & refetched)


def test_disk_full_mid_download(hub, models, monkeypatch):
    from huggingface_hub import file_download

    real_http_get = file_download.http_get

    class FullDisk:
        def __init__(self, fh):
            self._fh, self._written = fh, 0

        def write(self, data):
            if self._written + len(data) > 1000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self._written += len(data)
            return self._fh.write(data)

        def __getattr__(self, name):
            return getattr(self._fh, name)

    def http_get(url, temp_file, **kwargs):
        if url.endswith("/model.safetensors"):
            temp_file = FullDisk(temp_file)
        return real_http_get(url, temp_file, **kwargs)

    monkeypatch.setattr(file_download, "http_get", http_get)
    settings = make_settings(hub, models)
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], settings)
    message = one_line(str(info.value))
    assert EMBED in message and "no space left" in message and "run the command again" in message
    assert EMBED not in registry.read_lock(models)
    assert not list(models.rglob("*.incomplete"))

    monkeypatch.setattr(file_download, "http_get", real_http_get)
    [result] = download_model([EMBED], settings)
    assert registry.resolve_model(EMBED, models).path == result.path


def test_interrupted_redownload_leaves_no_stale_ready_entry(hub, models):
    settings = make_settings(hub, models)
    [first] = download_model([EMBED], settings)
    pointer = first.path / "model.safetensors"
    pointer.resolve().unlink()  # the blob, e.g. removed by hand: the next run must fetch it again
    pointer.unlink()

    def interrupt(stage, done, total):
        if done > 0:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        download_model([EMBED], settings, progress=interrupt)
    assert EMBED not in registry.read_lock(models)
    download_model([EMBED], settings)
    assert registry.resolve_model(EMBED, models).revision == first.revision


# --------------------------------------------------------------------------------------------- TLS


def test_missing_ca_bundle_is_refused_before_any_request(hub, models, tmp_path):
    with pytest.raises(ConfigError) as info:
        download_model([EMBED], make_settings(hub, models, ca_bundle=tmp_path / "nope.pem"))
    assert "nope.pem" in one_line(str(info.value)) and "does not exist" in str(info.value)
    assert hub.requests == []


@pytest.mark.parametrize(
    "content",
    ["just some text\n", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"],
    ids=["no-pem", "broken-pem"],
)
def test_ca_bundle_that_is_not_pem_is_refused_before_any_request(hub, models, tmp_path, content):
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(content)
    with pytest.raises(ConfigError) as info:
        download_model([EMBED], make_settings(hub, models, ca_bundle=bundle))
    assert str(bundle) in one_line(str(info.value))
    assert hub.requests == []


def test_empty_curl_ca_bundle_is_refused(hub, models, monkeypatch):
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    with pytest.raises(ConfigError) as info:
        download_model([EMBED], make_settings(hub, models))
    assert "CURL_CA_BUNDLE" in one_line(str(info.value)) and "--ca-bundle" in str(info.value)
    assert hub.requests == []


@pytest.fixture
def tls_hub(repo_folders, tmp_path):
    ca = make_test_ca(tmp_path / "tls")
    with FakeHub(tls=(ca.server_cert, ca.server_key)) as server:
        server.add_repo(EMBED, repo_folders[EMBED])
        server.ca = ca
        yield server


def test_tls_endpoint_with_its_ca_bundle(tls_hub, models):
    import os

    from huggingface_hub.utils import _http

    assert tls_hub.url.startswith("https://")
    [result] = download_model([EMBED], make_settings(tls_hub, models, ca_bundle=tls_hub.ca.ca_cert))
    assert result.revision == tls_hub.repos[EMBED].sha
    assert os.environ["SSL_CERT_FILE"] == str(tls_hub.ca.ca_cert)
    assert os.environ["REQUESTS_CA_BUNDLE"] == str(tls_hub.ca.ca_cert)
    assert _http._GLOBAL_CLIENT_FACTORY is _http.default_client_factory  # restored afterwards


def test_tls_endpoint_without_the_ca_fails_with_a_hint(tls_hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], make_settings(tls_hub, models))
    message = one_line(str(info.value))
    assert "not trusted" in message and "--ca-bundle" in message and EMBED in message
    assert tls_hub.requests == []  # the handshake failed: no HTTP request got through


# --------------------------------------------------------------------------------------------- offline, usage


def test_offline_mode(hub, models, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], make_settings(hub, models))
    message = one_line(str(info.value))
    assert "HF_HUB_OFFLINE" in message and EMBED in message and "not downloaded" in message
    assert hub.requests == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    download_model([EMBED], make_settings(hub, models))
    hub.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    [cached] = download_model([EMBED], make_settings(hub, models))
    assert cached.from_cache and cached.revision == hub.repos[EMBED].sha and set(cached.files) == EMBED_FILES
    assert hub.requests == []


@pytest.mark.parametrize(
    ("repo_ids", "kwargs", "expected"),
    [
        (["not a repo id"], {}, "not a Hub repo id"),
        (["../escape"], {}, "not a Hub repo id"),
        ([EMBED, GEN], {"revision": "main"}, "one at a time"),
    ],
)
def test_usage_errors_before_any_request(hub, models, repo_ids, kwargs, expected):
    with pytest.raises(UsageError, match=expected):
        download_model(repo_ids, make_settings(hub, models), **kwargs)
    assert hub.requests == []


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_env(hub, models, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("RAGCLI_MODELS_DIR", str(models))
    return hub


def test_cli_table_and_json(cli, cli_env, models):
    sha = cli_env.repos[EMBED].sha
    result = cli("download-model", EMBED, "--quiet")
    assert result.exit_code == 0, result.output
    assert EMBED in result.stdout and sha[:12] in result.stdout

    result = cli("download-model", EMBED, "--json")
    assert result.exit_code == 0, result.output
    [entry] = result.json()
    assert entry["repo_id"] == EMBED and entry["revision"] == sha
    assert set(entry["files"]) == EMBED_FILES and Path(entry["path"]).is_dir()


def test_cli_downloads_the_configured_models_by_default(cli, cli_env, monkeypatch):
    monkeypatch.setenv("RAGCLI_EMBED_MODEL", EMBED)
    monkeypatch.setenv("MODEL_ID", GEN)
    result = cli("download-model", "--json")
    assert result.exit_code == 0, result.output
    assert [e["repo_id"] for e in result.json()] == [EMBED, GEN]


def test_cli_errors_are_one_line_without_traceback(cli, cli_env):
    result = cli("download-model", "acme/nope")
    assert result.exit_code == 1
    assert "acme/nope" in result.stderr and "Traceback" not in result.output
    assert result.stderr.strip().startswith("Error:")


def test_cli_never_shows_the_token(cli, cli_env, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrongCANARYzzzzzzzzzzzzzzzzzzzz")
    refused = cli("download-model", GATED)
    assert refused.exit_code == 1 and f"{cli_env.url}/{GATED}" in refused.stderr
    assert "hf_wrongCANARY" not in refused.output

    monkeypatch.setenv("HF_TOKEN", CANARY)
    cli_env.clear()
    accepted = cli("download-model", GATED, "--json")
    assert accepted.exit_code == 0, accepted.output
    assert CANARY not in accepted.output
    assert cli_env.file_requests() and all(r.auth for r in cli_env.file_requests())

    monkeypatch.setenv("RAGCLI_DEBUG", "1")  # tracebacks are shown, and must be redacted
    debug = cli("download-model", "acme/nope")
    assert debug.exit_code == 1 and "Traceback" in debug.stderr
    assert CANARY not in debug.output


def test_cli_has_no_token_flag(cli, cli_env):
    result = cli("download-model", EMBED, "--token", CANARY)
    assert result.exit_code == 2
    assert cli_env.requests == []


def test_cli_refuses_a_missing_ca_bundle_before_any_request(cli, cli_env, tmp_path):
    result = cli("download-model", EMBED, "--ca-bundle", str(tmp_path / "corp.pem"))
    assert result.exit_code == 1 and "corp.pem" in result.stderr
    assert cli_env.requests == []


def test_cli_help_has_examples(cli):
    result = cli("download-model", "--help")
    assert result.exit_code == 0
    assert "--allow-pickle" in result.stdout and "ragcli download-model" in result.stdout
    assert "--token" not in result.stdout


# --------------------------------------------------------------------------------------------- ONNX exports

ONNX_DEFAULT = {"onnx/model.onnx", "onnx/model.onnx_data"}


def _onnx_requests(hub: FakeHub) -> list:
    return [r for r in hub.requests if "/onnx/" in r.path]


def test_onnx_files_are_not_fetched_unless_asked(hub, models):
    [result] = download_model([EMBED], make_settings(hub, models))
    assert result.onnx == [] and result.notes == []
    assert _onnx_requests(hub) == []
    assert not (result.path / "onnx").exists()
    assert not any(f.startswith("onnx/") for f in registry.read_lock(models)[EMBED]["files"])


def test_onnx_fetches_model_onnx_and_its_data_verified_and_recorded(hub, models, repo_folders):
    events: list[tuple[str, int, int]] = []
    settings = make_settings(hub, models)
    [result] = download_model([EMBED], settings, onnx=True, progress=lambda *e: events.append(e))

    assert result.onnx == sorted(ONNX_DEFAULT) and result.notes == []
    assert set(result.files) == EMBED_FILES | ONNX_DEFAULT
    for name in ONNX_DEFAULT:
        assert (result.path / name).read_bytes() == (repo_folders[EMBED] / name).read_bytes()
    # The quantised variants are never asked for; both chosen files were fetched at the pinned commit.
    fetched = {r.path.split("/resolve/", 1)[1] for r in hub.file_requests(method="GET")}
    sha = hub.repos[EMBED].sha
    assert {f"{sha}/{name}" for name in ONNX_DEFAULT} <= fetched
    assert not any("model_qint8" in r.path or "model_O4" in r.path for r in hub.requests)
    # Recorded in the lock like every other file, with its size; the progress counts their bytes.
    files = registry.read_lock(models)[EMBED]["files"]
    assert {n: files[n] for n in ONNX_DEFAULT} == {n: (repo_folders[EMBED] / n).stat().st_size for n in ONNX_DEFAULT}
    assert result.downloaded_bytes == result.bytes == sum(
        (repo_folders[EMBED] / f).stat().st_size for f in EMBED_FILES | ONNX_DEFAULT)
    assert events[-1] == (EMBED, result.bytes, result.bytes)
    assert registry.resolve_model(EMBED, models).path == result.path
    assert not list(models.rglob("*.incomplete"))

    hub.clear()
    [again] = download_model([EMBED], settings, onnx=True)
    assert again.downloaded_bytes == 0 and again.onnx == sorted(ONNX_DEFAULT)
    assert hub.file_requests(method="GET") == []


def test_onnx_file_fetches_the_named_variant(hub, models, repo_folders):
    [only] = download_model([EMBED], make_settings(hub, models), onnx_files=["model_qint8_avx512.onnx"])
    assert only.onnx == ["onnx/model_qint8_avx512.onnx"]
    assert {r.path.rsplit("/", 1)[-1] for r in _onnx_requests(hub)} == {"model_qint8_avx512.onnx"}
    assert (only.path / "onnx/model_qint8_avx512.onnx").read_bytes() == (
        repo_folders[EMBED] / "onnx/model_qint8_avx512.onnx").read_bytes()

    # With --onnx too, and the repo path spelt out: both, plus model.onnx's data file.
    [both] = download_model([EMBED], make_settings(hub, models), onnx=True,
                            onnx_files=["onnx/model_O4.onnx", "model_O4.onnx"])
    assert both.onnx == sorted(ONNX_DEFAULT | {"onnx/model_O4.onnx"})
    assert "onnx/model_O4.onnx" in registry.read_lock(models)[EMBED]["files"]


def test_onnx_file_the_repo_lacks_is_refused_before_any_file_is_written(hub, models):
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], make_settings(hub, models), onnx_files=["model_fp16.onnx"])
    message = one_line(str(info.value))
    assert "onnx/model_fp16.onnx" in message and EMBED in message and "--onnx-file" in message
    assert "model_qint8_avx512.onnx" in message and "model_O4.onnx" in message  # what the repo does have
    assert hub.file_requests() == []
    assert not registry.repo_folder(models, EMBED).exists()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"onnx_files": ["model.onnx_data"]}, "not the name of an .onnx file"),
        ({"onnx_files": ["../model.onnx"]}, "not the name of an .onnx file"),
        ({"onnx_files": ["sub/model.onnx"]}, "not the name of an .onnx file"),
        ({"onnx_files": [" "]}, "not the name of an .onnx file"),
        ({"onnx": True, "file": "onnx/model.onnx"}, "--file fetches exactly one file"),
    ],
)
def test_onnx_usage_errors_before_any_request(hub, models, kwargs, expected):
    with pytest.raises(UsageError, match=expected) as info:
        download_model([EMBED], make_settings(hub, models), **kwargs)
    one_line(str(info.value))
    assert hub.requests == []


def test_onnx_on_a_repo_without_one_downloads_and_says_so(hub, models):
    [result] = download_model([GEN], make_settings(hub, models), onnx=True)
    sha = hub.repos[GEN].sha
    assert result.onnx == []
    assert result.notes == [f"No onnx/model.onnx in {GEN} at {sha[:12]}; ragcli exports the model itself on "
                            "first use of --embed-backend onnx."]
    assert registry.resolve_model(GEN, models).revision == sha


def test_onnx_with_the_default_models_is_for_the_embedding_model_only(hub, models):
    results = download_model([], make_settings(hub, models, embed_model=EMBED, gen_model=GEN), onnx=True)
    embed, gen = results
    assert embed.onnx == sorted(ONNX_DEFAULT)
    assert gen.onnx == [] and gen.notes == []  # the generator does not run through ONNX: nothing to say


@pytest.mark.parametrize(("name", "problem"), [("onnx/model.onnx", "SHA-256 differs"),
                                               ("onnx/model.onnx_data", "git blob id differs")])
def test_corrupted_onnx_file_is_refused(hub, models, repo_folders, name, problem):
    good = (repo_folders[EMBED] / name).read_bytes()
    hub.tamper(EMBED, name, bytes([good[0] ^ 0xFF]) + good[1:])  # same size, other bytes
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], make_settings(hub, models), onnx=True)
    message = one_line(str(info.value))
    assert f"{EMBED}: {name} does not match the Hub ({problem})" in message
    assert str(registry.repo_folder(models, EMBED)) in message
    assert EMBED not in registry.read_lock(models)


def test_onnx_offline_reports_the_cached_files(hub, models, monkeypatch):
    import huggingface_hub.constants as constants

    download_model([EMBED], make_settings(hub, models), onnx=True)
    download_model([GEN], make_settings(hub, models))
    hub.clear()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    [cached] = download_model([EMBED], make_settings(hub, models), onnx=True)
    assert cached.from_cache and cached.onnx == sorted(ONNX_DEFAULT) and cached.notes == []
    [gen] = download_model([GEN], make_settings(hub, models), onnx=True)
    assert gen.onnx == [] and "offline mode: the Hub was not asked" in one_line(gen.notes[0])
    with pytest.raises(ModelDownloadError) as info:
        download_model([EMBED], make_settings(hub, models), onnx_files=["model_O4.onnx"])
    message = one_line(str(info.value))
    assert "onnx/model_O4.onnx" in message and "HF_HUB_OFFLINE" in message
    assert hub.requests == []


def test_cli_onnx_json_and_note(cli, cli_env):
    result = cli("download-model", EMBED, "--onnx", "--onnx-file", "model_O4.onnx", "--json")
    assert result.exit_code == 0, result.output
    [entry] = result.json()
    assert entry["onnx"] == sorted(ONNX_DEFAULT | {"onnx/model_O4.onnx"}) and entry["notes"] == []
    assert ONNX_DEFAULT <= set(entry["files"])

    result = cli("download-model", GEN, "--onnx", "--json")
    assert result.exit_code == 0, result.output
    [entry] = result.json()  # stdout is the JSON alone; the note goes to stderr, and into the JSON
    note = f"No onnx/model.onnx in {GEN} at {cli_env.repos[GEN].sha[:12]}; ragcli exports the model itself"
    assert entry["onnx"] == [] and entry["notes"][0].startswith(note)
    assert note in result.stderr and len(result.stderr.strip().splitlines()) == 1

    result = cli("download-model", GEN, "--quiet")
    assert result.exit_code == 0 and "onnx/model.onnx" not in result.output  # no note unless --onnx is asked


def test_cli_help_explains_onnx(cli):
    result = cli("download-model", "--help")
    assert result.exit_code == 0
    assert "--onnx" in result.stdout and "--onnx-file" in result.stdout
    assert "ragcli download-model sentence-transformers/all-MiniLM-L6-v2 --onnx" in result.stdout


# A real model: the tiny random encoder, with an export ragcli made of it shipped as onnx/model.onnx.
TINY_ONNX = "acme/tiny-onnx"


@pytest.fixture(scope="session")
def tiny_onnx_repo(tiny_models, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import shutil

    from ragcli.onnx_embed import export_fp32

    folder = tmp_path_factory.mktemp("tiny-onnx-repo") / "repo"
    shutil.copytree(tiny_models.embed, folder)
    export_fp32(folder, folder / "onnx" / "model.onnx")
    return folder


def test_downloaded_onnx_export_is_run_as_is(tiny_onnx_repo, models, monkeypatch):
    from ragcli.config import load_settings
    from ragcli.models import load_embedder

    with FakeHub() as server:
        server.add_repo(TINY_ONNX, tiny_onnx_repo)
        [result] = download_model([TINY_ONNX], make_settings(server, models), onnx=True)
    assert result.onnx == ["onnx/model.onnx"]

    def no_export(*args, **kwargs):
        raise AssertionError("the shipped onnx/model.onnx should have been used, not a new export")

    monkeypatch.setattr("ragcli.onnx_embed.export_fp32", no_export)
    embedder = load_embedder(load_settings({"embed_backend": "onnx", "models_dir": models,
                                            "embed_model": TINY_ONNX}, env={}))
    assert embedder.backend == "onnx" and embedder._hf.onnx_file == result.path / "onnx" / "model.onnx"
    vectors = embedder.embed_documents(["Vector search finds the nearest chunks.", "x"])
    assert vectors.shape == (2, embedder.dim)
    cache = registry.repo_folder(models, TINY_ONNX) / "ragcli-onnx" / result.revision
    assert json.loads((cache / "export.json").read_text())["fp32"]["source"] == "shipped"
    assert not (cache / "model.onnx").exists()
