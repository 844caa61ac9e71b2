"""Shared fixtures: every test runs in its own working directory with a clean environment, no
network beyond loopback, and (where asked) tiny real models built once per run."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
from tiny_models import TinyModels, build_tiny_models, install_in_models_dir

REPO = Path(__file__).resolve().parent.parent
SAMPLE_DOCS = REPO / "sample_docs"

EMBED = "tiny/embed"
EMBED_OTHER = "tiny/embed-other"  # same weights, another revision: "another model" for the index checks
GEN = "tiny/t5"
CAUSAL = "tiny/causal"
EMBED_REV = "1" * 40
EMBED_OTHER_REV = "2" * 40

_CLEARED = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "MODEL_ID", "DATABRICKS_HOST", "DATABRICKS_TOKEN",
            "DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET", "DATABRICKS_CONFIG_PROFILE", "CURL_CA_BUNDLE",
            "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    """Write {relative path: text} under `root` (UTF-8), creating folders; returns `root`."""
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """A fresh working directory and environment for each test."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERM", "dumb")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in list(os.environ):
        if var.startswith("RAGCLI_") or var in _CLEARED:
            monkeypatch.delenv(var, raising=False)
    # The default window precision (auto) depends on the CPU (bf16 where it is native): the suite runs
    # the same everywhere with the embedder's own precision; tests/test_precision.py covers the others.
    monkeypatch.setenv("RAGCLI_WINDOW_PRECISION", "same")
    # The semantic splitter's window vectors persist between ingests; per test, so counts never depend
    # on which tests ran before (and the shared models folder stays read-only).
    monkeypatch.setenv("RAGCLI_WINDOW_CACHE", str(tmp_path / "window-cache"))


_real_connect = socket.socket.connect


def _guarded_connect(self, address):
    """Only loopback and local sockets: no test may reach the network."""
    if self.family in (socket.AF_INET, socket.AF_INET6):
        host = address[0]
        if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("127."):
            raise OSError(f"test tried to reach the network ({host})")
    return _real_connect(self, address)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> TinyModels:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-src"))


@pytest.fixture(scope="session")
def models_dir(tiny_models, tmp_path_factory) -> Path:
    """A models folder as `ragcli download-model` leaves it, holding the tiny models. Read-only for tests."""
    root = tmp_path_factory.mktemp("models")
    install_in_models_dir(root, EMBED, tiny_models.embed, EMBED_REV)
    install_in_models_dir(root, EMBED_OTHER, tiny_models.embed, EMBED_OTHER_REV)
    install_in_models_dir(root, GEN, tiny_models.seq2seq, "3" * 40)
    install_in_models_dir(root, CAUSAL, tiny_models.causal, "4" * 40)
    return root


@pytest.fixture
def model_env(models_dir, monkeypatch) -> Path:
    """Point ragcli at the tiny models through the environment, as a user would."""
    monkeypatch.setenv("RAGCLI_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("RAGCLI_EMBED_MODEL", EMBED)
    monkeypatch.setenv("RAGCLI_GEN_MODEL", GEN)
    return models_dir


@pytest.fixture
def docs(tmp_path) -> Path:
    """A private copy of sample_docs that a test may edit."""
    dest = tmp_path / "docs"
    shutil.copytree(SAMPLE_DOCS, dest)
    return dest


@pytest.fixture
def settings(model_env, tmp_path):
    from ragcli.config import load_settings

    return load_settings({"index_dir": tmp_path / "work" / "ragcli-index"})


class CliResult:
    def __init__(self, result) -> None:
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.stderr = result.stderr
        self.exception = result.exception

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self):
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cli():
    """Run `ragcli ARGS…` in-process; returns exit code, stdout and stderr separately."""
    from typer.testing import CliRunner

    from ragcli.cli.app import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None) -> CliResult:
        return CliResult(runner.invoke(app, [str(a) for a in args], input=input, catch_exceptions=True))

    return invoke
