"""`ragcli package mlflow`: the pipeline as an MLflow model, loaded where only the package is.

One package of the tiny models and a tiny index is written by the real command (a subprocess, its
default check included) and logged and registered against a local file store; the tests then load
it in fresh processes that cannot see this checkout (working directory a new folder, no PYTHONPATH,
the proof being the loaded `ragcli`'s own file), serve it with `mlflow models serve` on loopback, and
compare its answers with `ragcli query --json` on the same inputs. Refusals write no package.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import EMBED, GEN, REPO, write_tree

pytestmark = pytest.mark.slow

QUESTION = "What is a delta lake"
REGISTERED = "main.rag.ragcli_model"
VENV_BIN = Path(sys.executable).parent


def _corpus(folder: Path) -> Path:
    return write_tree(folder, {
        "delta.md": "# Delta Lake\n\nA delta lake keeps tables as Parquet files with a transaction log, and "
                    "vacuum removes deleted files after the retention period.\n",
        "faiss.md": "# FAISS\n\nThe vector index uses HNSW graphs with thirty-two neighbours per node.\n",
        "runbook.md": "# Runbook\n\nIngestion retries a failed upload three times before it reports the file.\n",
    })


def _env(base: Path, models_dir: Path, index_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAGCLI_", "MLFLOW_"))}
    env.update(PYTHONPATH=str(REPO), HOME=str(base / "home"), HF_HOME=str(base / "hf"), NO_COLOR="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_OFFLINE="1", RAGCLI_MODELS_DIR=str(models_dir),
               RAGCLI_EMBED_MODEL=EMBED, RAGCLI_GEN_MODEL=GEN, RAGCLI_INDEX_DIR=str(index_dir),
               RAGCLI_SPLITTER="sentence", RAGCLI_MAX_NEW_TOKENS="8", MLFLOW_ALLOW_FILE_STORE="true", **extra)
    return env


def _ragcli(env: dict[str, str], *args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragcli", *map(str, args)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def _clean_env(base: Path) -> dict[str, str]:
    """The environment of a process that has only the package: no PYTHONPATH, no ragcli settings."""
    env = {k: v for k, v in os.environ.items()
           if k != "PYTHONPATH" and not k.startswith(("RAGCLI_", "MLFLOW_"))}
    env.update(HOME=str(base / "home"), HF_HOME=str(base / "hf"), HF_HUB_OFFLINE="1")
    return env


@pytest.fixture(scope="module")
def packaged(models_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("package")
    (base / "work").mkdir()
    index_dir = base / "index"
    tracking = (base / "mlruns").as_uri()
    env = _env(base, models_dir, index_dir, MLFLOW_TRACKING_URI=tracking)
    ingest = _ragcli(env, "ingest", _corpus(base / "docs"), "--quiet", cwd=base / "work")
    assert ingest.returncode == 0, ingest.stderr
    out = base / "out" / "model"
    run = _ragcli(env, "package", "mlflow", out, "--json", "--question", QUESTION, "--register", REGISTERED,
                  "--registry-uri", tracking, cwd=base / "work")
    assert run.returncode == 0, run.stderr
    return {"base": base, "env": env, "out": out, "report": json.loads(run.stdout), "index_dir": index_dir,
            "tracking": tracking}


def _query_json(packaged, *args: str) -> dict:
    done = _ragcli(packaged["env"], "query", "--json", *args, cwd=packaged["base"] / "work")
    assert done.returncode == 0, done.stderr
    return done.stdout and json.loads(done.stdout)


RETRY = "How many times does ingestion retry?"


@pytest.fixture(scope="module")
def expected(packaged) -> dict[str, dict]:
    """`ragcli query --json` on the inputs the package is asked, with the same settings."""
    return {"context": _query_json(packaged, "--context", QUESTION),
            "top2": _query_json(packaged, "--context", "-k", "2", RETRY),
            "bare": _query_json(packaged, QUESTION)}


def _comparable(row: dict) -> dict:
    """An answer without what differs between two runs of the same answer (wall-clock times)."""
    row = json.loads(json.dumps(row))
    row.pop("timings", None)
    for which in ("with_context", "without_context"):
        if row.get(which):
            row[which].pop("seconds", None)
    return row


_LOAD_SCRIPT = r"""
import json, sys
import mlflow.pyfunc
import pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
records = json.loads(sys.argv[2])
frame = model.predict(pd.DataFrame.from_records(records))
listed = model.predict(records)
print(json.dumps({"ragcli_file": sys.modules["ragcli"].__file__, "path": sys.path, "frame": frame,
                  "listed": listed}))
"""


def test_the_command_wrote_checked_logged_and_registered(packaged):
    report, out = packaged["report"], packaged["out"]
    assert (out / "MLmodel").is_file()
    assert report["generation"] and (out / "artifacts" / "index" / "CURRENT").read_text().strip() == report["generation"]
    assert set(report["models"]) == {EMBED, GEN}
    # The default check ran the package's own ragcli in a fresh process and answered the question.
    check = report["check"]
    assert check["question"] == QUESTION and check["sources"] >= 1
    assert Path(check["ragcli_file"]).is_relative_to(out / "code")
    # Logged to the file tracking store and registered in the local registry.
    assert report["model_uri"] and report["run_id"]
    assert report["registered"] == {"name": REGISTERED, "version": "1", "registry_uri": packaged["tracking"]}


def test_the_package_records_what_it_carries(packaged, expected):
    import yaml

    out = packaged["out"]
    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    assert pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models-from-code
    assert Path(pyfunc["model_code_path"]).name == "pyfunc_model.py"  # models-from-code
    inputs = {c["name"]: (c["type"], c.get("required", True)) for c in json.loads(mlmodel["signature"]["inputs"])}
    assert inputs == {"query": ("string", True), "top_k": ("double", False), "query_context": ("boolean", False),
                      "session_id": ("string", False)}
    outputs = {c["name"] for c in json.loads(mlmodel["signature"]["outputs"])}
    assert outputs == set(expected["context"]) | {"session_id"}
    settings = pyfunc["config"]["settings"]  # model_config
    assert settings["embed_model"] == EMBED and settings["gen_model"] == GEN and settings["splitter"] == "sentence"
    assert not any(k in settings for k in ("hf_token", "databricks_token", "api_key", "models_dir", "index_dir"))
    reqs = (out / "requirements.txt").read_text().splitlines()
    import torch

    assert f"torch=={torch.__version__}" in reqs and any("download.pytorch.org/whl/cpu" in r for r in reqs)
    assert any(r.startswith("mlflow-skinny==") for r in reqs)
    # The models at the lock file's revisions, with their own lock file; the code of ragcli itself.
    lock = json.loads((out / "artifacts" / "models" / "ragcli-models.lock.json").read_text())["models"]
    assert set(lock) == {EMBED, GEN}
    assert (out / "code" / "ragcli" / "query.py").read_bytes() == (REPO / "ragcli" / "query.py").read_bytes()
    assert not list((out / "code").rglob("__pycache__"))


def test_a_clean_process_with_only_the_package_answers_as_ragcli_query(packaged, expected, tmp_path):
    out = packaged["out"]
    records = [{"query": QUESTION, "session_id": "s-1"},
               {"query": RETRY, "top_k": 2, "session_id": "s-2"},
               {"query": QUESTION, "query_context": False, "session_id": "s-3"}]
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    done = subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(out), json.dumps(records)], cwd=cwd,
                          env=_clean_env(tmp_path), capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # ragcli came from the package, not from this checkout (nor the venv's editable install of it).
    assert Path(seen["ragcli_file"]).is_relative_to(out / "code")
    assert not any(p and Path(p).resolve() == REPO for p in seen["path"])
    want = [expected["context"], expected["top2"], expected["bare"]]
    for rows in (seen["frame"], seen["listed"]):
        assert [r["session_id"] for r in rows] == ["s-1", "s-2", "s-3"]
        assert [_comparable({k: v for k, v in r.items() if k != "session_id"}) for r in rows] == \
            [_comparable(e) for e in want]
    assert len(seen["frame"][1]["sources"]) == 2 and seen["frame"][2]["with_context"] is None
    assert seen["frame"][0]["with_context"]["text"] == want[0]["with_context"]["text"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_scoring_server_answers_the_seed_request(packaged, expected, tmp_path):
    port = _free_port()
    cwd = tmp_path / "serving"
    cwd.mkdir()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    env = _clean_env(tmp_path)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"  # the server runs `uvicorn` from the PATH
    proc = subprocess.Popen([str(VENV_BIN / "mlflow"), "models", "serve", "-m", str(packaged["out"]),
                             "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "mlflow models serve did not come up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/ping", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        seed = {"dataframe_records": [{"query": QUESTION, "session_id": "abc-123"}]}
        response = httpx.post(f"{url}/invocations", json=seed, timeout=300)
        assert response.status_code == 200, response.text
        (row,) = response.json()["predictions"]
        assert row["session_id"] == "abc-123"
        assert _comparable({k: v for k, v in row.items() if k != "session_id"}) == _comparable(expected["context"])
        bad = httpx.post(f"{url}/invocations", json={"dataframe_records": [{"query": " "}]}, timeout=60)
        assert bad.status_code == 400 and "query" in bad.json()["message"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_check_of_a_broken_package_fails(packaged, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(packaged["out"], broken)
    (broken / "code" / "ragcli" / "query.py").write_text("raise ImportError('damaged on the way')\n")
    done = _ragcli(packaged["env"], "package", "mlflow", "--check", broken, cwd=packaged["base"] / "work")
    assert done.returncode == 1
    assert "does not load and answer" in done.stderr and "damaged on the way" in done.stderr
    ok = _ragcli(packaged["env"], "package", "mlflow", "--check", packaged["out"], "--json",
                 cwd=packaged["base"] / "work")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["check"]["sources"] >= 1


# -- refusals: nothing is written ------------------------------------------------------------------------
@pytest.fixture
def index_copy(packaged, tmp_path) -> Path:
    """A private copy of the packaged index, for a test to damage."""
    dest = tmp_path / "index"
    shutil.copytree(packaged["index_dir"], dest)
    return dest


def _refused(cli, out: Path, *args: str) -> str:
    result = cli("package", "mlflow", out, "--no-verify", *args)
    assert result.exit_code == 1, result.output
    assert not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    (line,) = result.stderr.strip().splitlines()  # one line
    return line


def test_a_corrupted_index_is_refused(cli, model_env, index_copy, tmp_path):
    segment = next(p for p in sorted((index_copy / "segments").rglob("*")) if p.is_file() and p.stat().st_size > 64)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    line = _refused(cli, tmp_path / "out", "--index-dir", index_copy)
    assert "Index corrupted" in line and segment.parent.name in line


def test_a_missing_index_is_refused(cli, model_env, tmp_path):
    line = _refused(cli, tmp_path / "out", "--index-dir", tmp_path / "nothing-here")
    assert "No index in" in line and "ragcli ingest" in line


def test_a_model_not_in_the_lock_file_is_refused(cli, model_env, tiny_models, tmp_path):
    # (the models are checked before the index is read: no index is needed to be refused)
    line = _refused(cli, tmp_path / "out", "--gen-model", str(tiny_models.seq2seq))
    assert "not in the lock file" in line and str(tiny_models.seq2seq) in line
    line = _refused(cli, tmp_path / "out", "--gen-model", "org/never-downloaded")
    assert "org/never-downloaded" in line and "ragcli download-model org/never-downloaded" in line


def test_an_existing_out_is_refused(cli, model_env, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = cli("package", "mlflow", out)
    assert result.exit_code == 2 and "not an empty folder" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_a_databricks_package_names_the_index_and_ships_none(cli, model_env, monkeypatch, tmp_path):
    canary = "dapi" + "Q9x" * 10
    monkeypatch.setenv("DATABRICKS_HOST", "https://example.cloud.databricks.com")
    monkeypatch.setenv("DATABRICKS_TOKEN", canary)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    out = tmp_path / "dbx"
    result = cli("package", "mlflow", out, "--target", "databricks", "--databricks-endpoint", "vs-endpoint",
                 "--databricks-index", "main.rag.docs", "--no-verify", "--json")
    assert result.exit_code == 0, result.output
    report = result.json()
    assert report["generation"] is None and report["resources"] == {"vector_search_index": ["main.rag.docs"]}
    assert not (out / "artifacts" / "index").exists() and (out / "artifacts" / "models").is_dir()
    import yaml

    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    assert mlmodel["resources"]["databricks"]["vector_search_index"] == [{"name": "main.rag.docs"}]
    settings = mlmodel["flavors"]["python_function"]["config"]["settings"]
    assert settings["target"] == "databricks" and settings["databricks_endpoint"] == "vs-endpoint"
    assert any(r.startswith("databricks-sdk==") for r in (out / "requirements.txt").read_text().splitlines())
    # No secret anywhere in the package; without --log nothing went to the tracking server.
    for path in out.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert canary.encode() not in path.read_bytes(), path
    assert canary not in result.output
    assert not (tmp_path / "mlruns").exists()


def test_a_databricks_package_needs_endpoint_and_index(cli, model_env, tmp_path):
    line = _refused(cli, tmp_path / "out", "--target", "databricks", "--databricks-index", "main.rag.docs")
    assert "RAGCLI_DATABRICKS_ENDPOINT" in line


def test_a_package_that_fails_its_check_is_neither_written_nor_registered(model_env, index_copy, monkeypatch,
                                                                           tmp_path):
    import ragcli.package.mlflow_model as pm
    from ragcli.config import load_settings

    def damaged_code(dest: Path) -> Path:
        code = real_copy_code(dest)
        (code / "retrieval.py").write_text("raise ImportError('damaged on the way')\n")
        return code

    real_copy_code = pm.copy_code
    monkeypatch.setattr(pm, "copy_code", damaged_code)
    registry = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    settings = load_settings({"index_dir": index_copy, "splitter": "sentence"})
    out = tmp_path / "out"
    with pytest.raises(pm.PackageError, match="does not load and answer.*damaged on the way"):
        pm.package_mlflow(settings, out, log=True, register=REGISTERED, registry_uri=registry)
    assert not out.exists() and not (tmp_path / "mlruns").exists()


def test_a_unity_catalog_name_needs_three_parts(cli, model_env, tmp_path):
    result = cli("package", "mlflow", tmp_path / "out", "--register", "ragcli_model")
    assert result.exit_code == 2 and "catalog.schema.model" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_delta_sync_package_declares_its_index_and_embedding_endpoint(cli, model_env, monkeypatch, tmp_path):
    monkeypatch.setenv("RAGCLI_DATABRICKS_INDEX_KIND", "delta-sync")
    monkeypatch.setenv("RAGCLI_DATABRICKS_EMBEDDING_ENDPOINT", "bge-endpoint")
    out = tmp_path / "dsync"
    result = cli("package", "mlflow", out, "--target", "databricks", "--databricks-endpoint", "vs-endpoint",
                 "--databricks-index", "main.rag.docs_index", "--no-verify", "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["resources"] == {"vector_search_index": ["main.rag.docs_index"],
                                          "serving_endpoint": ["bge-endpoint"]}
    import yaml

    mlmodel = yaml.safe_load((out / "MLmodel").read_text())
    assert mlmodel["resources"]["databricks"]["serving_endpoint"] == [{"name": "bge-endpoint"}]
    settings = mlmodel["flavors"]["python_function"]["config"]["settings"]
    assert settings["databricks_index_kind"] == "delta-sync"
    assert settings["databricks_embedding_endpoint"] == "bge-endpoint"


# -- the export of a local index -----------------------------------------------------------------------
def _export_and_compare(src: Path, dest: Path) -> str:
    from ragcli.config import load_settings
    from ragcli.store import LocalIndex
    from ragcli.targets.local import LocalTarget

    name = LocalTarget(load_settings({"index_dir": src})).export(dest)
    assert (dest / "CURRENT").read_text().strip() == name
    assert [p.name for p in dest.iterdir() if p.name.startswith("gen-")] == [name]  # one generation only
    original, copy = LocalIndex(src).load_verified(), LocalIndex(dest).load_verified()
    try:
        assert [c.to_json() for c in copy.iter_chunks()] == [c.to_json() for c in original.iter_chunks()]
        assert copy.embed == original.embed and copy.files == original.files
    finally:
        original.close()
        copy.close()
    return name


def test_export_copies_the_published_generation_and_only_its_segments(packaged, tmp_path):
    src = tmp_path / "index"
    shutil.copytree(packaged["index_dir"], src)
    name = _export_and_compare(src, tmp_path / "copy")
    listed = json.loads((src / name / "manifest.json").read_text())["segments"]
    assert sorted(p.name for p in (tmp_path / "copy" / "segments").iterdir()) == sorted(r["name"] for r in listed)


def test_export_of_a_format_1_index(tmp_path):
    src = tmp_path / "index"
    shutil.copytree(REPO / "tests" / "data" / "format1" / "index", src)
    _export_and_compare(src, tmp_path / "copy")
    assert not (tmp_path / "copy" / "segments").exists()
