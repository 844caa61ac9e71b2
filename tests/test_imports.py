"""`ragcli --help` must stay fast: the CLI imports no heavy library at module level."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "transformers", "sentence_transformers", "faiss", "llama_index", "databricks", "bm25s", "huggingface_hub",
         "fastapi", "starlette", "uvicorn", "pyspark", "pandas", "pyarrow", "deltalake", "mlflow")


def _heavy_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    return eval(out.stdout.strip().splitlines()[-1])  # a list literal we printed ourselves


def test_importing_the_cli_loads_no_heavy_library():
    assert _heavy_after("import ragcli.cli.app") == []


@pytest.mark.parametrize("command", [[], ["ingest"], ["query"], ["bench"], ["download-model"], ["status"], ["index"],
                                     ["serve"], ["spark-job"], ["package"], ["package", "mlflow"]])
def test_help_loads_no_heavy_library(command):
    args = [*command, "--help"]
    assert _heavy_after(f"import sys\nfrom ragcli.cli.app import app\ntry:\n    app({args!r}, prog_name='ragcli')\n"
                        "except SystemExit:\n    pass") == []


def test_package_exports_are_lazy():
    assert _heavy_after("import ragcli\nragcli.load_settings") == []


@pytest.mark.parametrize("command", ["ingest", "query", "bench", "download-model", "status", "spark-job"])
def test_every_command_explains_itself(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0
    assert "Examples" in result.stdout
    assert "--json" in result.stdout


def test_root_help_lists_commands(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for name in ("download-model", "ingest", "query", "bench", "status", "index", "serve"):
        assert name in result.stdout


def test_version(cli):
    from ragcli import __version__

    assert cli("--version").stdout.strip() == f"ragcli {__version__}"


def test_unknown_option_is_a_usage_error(cli):
    result = cli("query", "--no-such-flag", "q")
    assert result.exit_code == 2
