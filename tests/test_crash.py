"""Crash safety and concurrency of the local index (failure-modes.md §1.6-1.7, rows I10, I11 of §5).

* A fault after every write step of a generation, in-process (an exception) and in a real process
  killed with `os._exit(137)`: the previous generation stays published and answers the same, `ragcli
  index verify` passes, and the next ingest cleans what was left behind.
* Disk-full errors at every fsync, replace and rename: a clear one-line error, previous generation intact.
* The writer lock: a second writer fails at once naming the holder's pid (or queues with --wait), and a
  query during an ingest answers from the published generation.

Subprocess ingests here only remove a file, so they never load a model (about 1 s each).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

INDEX = Path("ragcli-index")  # the default index folder, in each test's own working directory
STEPS = ("segment", "files", "manifest", "rename", "current")

DOCS = {
    "a.md": "# Alpha\n\nThe alpha service stores vectors in a flat FAISS index. Exact search keeps recall high.\n\n"
            "## Owners\n\nThe search team owns alpha and answers pages during office hours.\n",
    "b.md": "# Beta\n\nBeta runs the nightly ingest job. Tables keep thirty days of versions.\n\n"
            "## Alerts\n\nA failed run pages the on-call engineer within five minutes.\n",
    "c.md": "# Gamma\n\nGamma fuses keyword and dense scores with reciprocal rank fusion. The constant is sixty.\n",
}

# Runs `ragcli ARGS...` in a fresh interpreter with `_after_step` replaced: "kill" ends the process
# abruptly after STEP (no cleanup, no finally blocks), "pause" waits there until SIGNAL_DIR/go exists.
HOOK_SCRIPT = """
import os, sys, time
from pathlib import Path
import ragcli.store
mode, step, signal_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
def hook(name):
    if name != step:
        return
    if mode == "kill":
        os._exit(137)
    (signal_dir / "paused").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while not (signal_dir / "go").exists():
        if time.monotonic() > deadline:
            os._exit(3)
        time.sleep(0.02)
ragcli.store._after_step = hook
sys.argv = ["ragcli", *sys.argv[4:]]
from ragcli.cli.app import main
main()
"""


def hooked(mode: str, step: str, signal_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", HOOK_SCRIPT, mode, step, str(signal_dir), *map(str, args)]


def ragcli_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "ragcli", *map(str, args)]


@pytest.fixture
def base(cli, model_env, tmp_path):
    """Three documents ingested once (gen-000001) and the answer to a question from that generation."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    result = cli("ingest", docs, "--json")
    assert result.exit_code == 0, result.output
    assert result.json()["generation"] == "gen-000001"
    return docs, ask(cli)


def ask(cli) -> dict:
    result = cli("query", "--context", "--json", "-k", "3", "--max-new-tokens", "6", "Who owns alpha?")
    assert result.exit_code == 0, result.output
    return result.json()


def same_answer(a: dict, b: dict) -> bool:
    return (a["generation"] == b["generation"]
            and [(s["chunk_id"], s["file"], s["score"]) for s in a["sources"]]
            == [(s["chunk_id"], s["file"], s["score"]) for s in b["sources"]]
            and a["with_context"]["text"] == b["with_context"]["text"])


def current() -> str:
    return (INDEX / "CURRENT").read_text().strip()


def listing() -> list[str]:
    return sorted(p.name for p in INDEX.iterdir())


def edit(docs: Path) -> None:
    (docs / "b.md").write_text(DOCS["b.md"].replace("thirty", "ninety") + "\nBeta moved to a new cluster.\n",
                               encoding="utf-8")


def check_whole(name: str | None = None):
    from ragcli.store import LocalIndex

    gen = LocalIndex(INDEX).load_verified(name)
    ids, vectors = gen.vectors()
    assert len(gen.chunks) == gen.manifest["counts"]["chunks"] == len(ids) == len(vectors)
    assert sorted(ids) == sorted(c.id for c in gen.chunks)
    return gen


def check_clean() -> None:
    """No unfinished generation or segment, no stray pointer file, nothing newer than CURRENT, and no
    segment that no generation lists."""
    import json

    names = listing()
    assert not [n for n in names if n.startswith("tmp-") or n == "CURRENT.tmp"], names
    gens = [n for n in names if n.startswith("gen-")]
    assert gens and max(gens) == current(), names
    listed = {r["name"] for g in gens for r in json.loads((INDEX / g / "manifest.json").read_text())["segments"]}
    assert sorted(p.name for p in (INDEX / "segments").iterdir()) == sorted(listed)


def verify_ok(cli) -> None:
    result = cli("index", "verify", "--json")
    assert result.exit_code == 0, result.output
    assert all(row["ok"] for row in result.json()["generations"])


# -- a fault after every step, in-process ---------------------------------------------------------------
@pytest.mark.parametrize("step", STEPS)
def test_fault_after_each_step_keeps_the_published_generation(cli, base, monkeypatch, step):
    import ragcli.store

    docs, before = base
    edit(docs)

    def fault(name: str) -> None:
        if name == step:
            raise RuntimeError(f"injected fault after {name}")

    monkeypatch.setattr(ragcli.store, "_after_step", fault)
    result = cli("ingest", docs, "--json")
    monkeypatch.setattr(ragcli.store, "_after_step", lambda name: None)
    assert result.exit_code == 1 and f"injected fault after {step}" in result.stderr
    assert "Traceback" not in result.output

    if step == "current":  # CURRENT was already switched: the new generation is published, and whole
        assert current() == "gen-000002"
        assert sorted(check_whole().by_id) != sorted(check_whole("gen-000001").by_id)
        assert ask(cli)["generation"] == "gen-000002"
    else:
        assert current() == "gen-000001"
        left = ["gen-000002"] if step == "rename" else []  # renamed into place, never pointed to
        assert listing() == sorted(["CURRENT", "LOCK", "gen-000001", "segments", *left])
        assert same_answer(ask(cli), before)
    verify_ok(cli)

    again = cli("ingest", docs, "--json")
    assert again.exit_code == 0, again.output
    report = again.json()
    if step == "current":
        assert report["published"] is False and report["summary"]["unchanged"] == 3
    else:
        assert report["published"] is True and report["generation"] == "gen-000002"
        assert report["summary"]["changed"] == 1
    check_clean()
    gen = check_whole()
    assert any("ninety" in c.text for c in gen.chunks if c.file == "b.md")
    assert ask(cli)["generation"] == "gen-000002"
    verify_ok(cli)


# -- a real process killed after a step --------------------------------------------------------------------
@pytest.mark.parametrize("step", ["files", "manifest", "rename", "current"])
def test_killed_ingest_process_keeps_the_published_generation(cli, base, tmp_path, step):
    docs, before = base
    (docs / "c.md").unlink()  # a removal: the subprocess writes a generation without loading a model
    killed = subprocess.run(hooked("kill", step, tmp_path, "ingest", docs, "--quiet"), capture_output=True,
                            text=True, timeout=120)
    assert killed.returncode == 137, killed.stderr

    names = listing()
    if step in ("files", "manifest"):  # nobody cleaned up: the staging folder is still there
        assert current() == "gen-000001" and len([n for n in names if n.startswith("tmp-")]) == 1
        assert [n for n in names if n.startswith("gen-")] == ["gen-000001"]
    elif step == "rename":
        assert current() == "gen-000001" and "gen-000002" in names
    else:
        assert current() == "gen-000002"
    if step == "current":
        assert "c.md" not in check_whole().files
        assert ask(cli)["generation"] == "gen-000002"
    else:
        assert same_answer(ask(cli), before)
    verify_ok(cli)

    again = cli("ingest", docs, "--json")
    assert again.exit_code == 0, again.output
    assert again.json()["published"] is (step != "current")
    check_clean()
    gen = check_whole()
    assert gen.name == "gen-000002" and set(gen.files) == {"a.md", "b.md"}
    assert cli("query", "--context", "--json", "-k", "1", "Who owns alpha?").json()["generation"] == "gen-000002"


# -- I/O errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("call", ["fsync", "replace", "rename"])
def test_disk_full_at_every_call_is_a_clean_error(base, settings, monkeypatch, call):
    """ENOSPC at the k-th os.<call> for k = 1, 2, ... until an ingest gets through. Each attempt either
    fails with a clear error and the previous generation published, or (a failed fsync of a folder is
    tolerated) publishes a whole new generation, which is then rolled back for the next k."""
    from ragcli.errors import RagcliError
    from ragcli.ingest import ingest
    from ragcli.store import LocalIndex

    docs, before = base
    edit(docs)
    store = LocalIndex(INDEX)
    real = getattr(os, call)
    errors = 0
    for k in range(1, 100):
        calls = 0

        def failing(*args, _k=k, **kwargs):
            nonlocal calls
            calls += 1
            if calls == _k:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        monkeypatch.setattr(os, call, failing)
        try:
            report = ingest([docs], settings)
        except RagcliError as exc:
            message = str(exc)
            assert "No space left on device" in message and "still serves gen-000001" in message, message
            assert "\n" not in message
            errors += 1
            outcome = "failed"
        else:
            outcome = "published"
        finally:
            monkeypatch.setattr(os, call, real)
        if outcome == "failed":
            assert current() == "gen-000001"
            assert store.load().name == "gen-000001"
            assert not [n for n in listing() if n.startswith("tmp-")]
            extra = [n for n in listing() if n.startswith("gen-") and n != "gen-000001"]
            assert extra in ([], ["gen-000002"])  # at most a whole, unpublished generation; removed next time
            continue
        assert report.generation == current() == "gen-000002"
        check_whole()
        if calls < k:  # the fault was never reached: every call of this kind was tried
            break
        with store.lock():  # a tolerated fault (fsync of a folder): go back and try the next k
            assert store.rollback() == "gen-000001"
    else:
        pytest.fail("ingest never got through")
    assert errors >= {"fsync": 10, "replace": 2, "rename": 1}[call]
    check_clean()
    assert any("ninety" in c.text for c in check_whole().chunks)


def test_failed_write_of_the_vectors_is_one_clear_line(cli, base, monkeypatch):
    """The vectors' write() hits a full disk: one line naming the file and the generation still served."""
    import builtins

    import ragcli.segments

    docs, before = base
    edit(docs)

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def close(self):
            self.fh.close()

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    def open_on_full_disk(path, mode="r", *args, **kwargs):
        fh = builtins.open(path, mode, *args, **kwargs)
        return FullDisk(fh) if Path(path).name == "vectors.f32" and "w" in mode else fh

    monkeypatch.setattr(ragcli.segments, "open", open_on_full_disk, raising=False)
    result = cli("ingest", docs)
    monkeypatch.delattr(ragcli.segments, "open")
    assert result.exit_code == 1 and "Traceback" not in result.output and "Internal error" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Error" in line]
    assert len(lines) == 1, result.stderr
    assert "No space left on device" in lines[0] and "vectors.f32" in lines[0] and "gen-000001" in lines[0]
    assert listing() == ["CURRENT", "LOCK", "gen-000001", "segments"]
    assert same_answer(ask(cli), before)
    check_clean()  # the half-written segment went with the failed write


def test_faiss_write_error_is_reported_as_a_write_failure(cli, base, monkeypatch):
    import faiss

    docs, _ = base
    edit(docs)

    def write_error(index, path):
        raise RuntimeError("Error in faiss::FileIOWriter::operator() write error: No space left on device")

    real = faiss.write_index
    monkeypatch.setattr(faiss, "write_index", write_error)
    result = cli("ingest", docs, "--index-type", "hnsw")  # the approximate index is a FAISS file
    monkeypatch.setattr(faiss, "write_index", real)
    assert result.exit_code == 1 and "Internal error" not in result.output
    assert "ann.faiss" in result.stderr and "gen-000001" in result.stderr
    assert listing() == ["CURRENT", "LOCK", "gen-000001", "segments"]
    check_clean()


# -- the writer lock and concurrent ingests -------------------------------------------------------------------
LOCK_HOLDER = """
import sys
from pathlib import Path
from ragcli.store import LocalIndex
with LocalIndex(Path(sys.argv[1])).lock():
    print("locked", flush=True)
    sys.stdin.readline()
    Path(sys.argv[2]).write_text("released")
"""


def test_a_held_lock_fails_ingest_at_once_and_wait_queues(cli, base, tmp_path):
    docs, _ = base
    edit(docs)
    marker = tmp_path / "released"
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(INDEX), str(marker)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (INDEX / "LOCK").read_text().strip() == str(holder.pid)

        started = time.monotonic()
        result = cli("ingest", docs)
        assert result.exit_code == 1, result.output
        assert time.monotonic() - started < 10  # at once, not after a timeout
        assert f"pid {holder.pid}" in result.stderr and "--wait" in result.stderr
        assert "Traceback" not in result.output
        assert current() == "gen-000001" and listing() == ["CURRENT", "LOCK", "gen-000001", "segments"]

        # A second open file description in this process conflicts too (flock is per description).
        from ragcli.errors import IndexLockedError
        from ragcli.store import LocalIndex

        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"):
            with LocalIndex(INDEX).lock():
                pass

        def release() -> None:
            holder.stdin.write("go\n")
            holder.stdin.flush()

        threading.Timer(1.0, release).start()
        waited = cli("ingest", docs, "--wait", "--json")
        assert waited.exit_code == 0, waited.output
        assert marker.exists()  # it got the lock only after the holder let go
        assert waited.json()["generation"] == "gen-000002"
        assert holder.wait(timeout=30) == 0
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert (INDEX / "LOCK").read_text() == ""  # the last writer cleared its pid
    check_whole()


def test_concurrent_ingests_and_a_query_during_an_ingest(cli, base, tmp_path):
    docs, before = base
    (docs / "c.md").unlink()
    env = dict(os.environ)
    first = subprocess.Popen(hooked("pause", "manifest", tmp_path, "ingest", docs, "--json", "--quiet"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    waiting = None
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "paused").exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first ingest never reached its manifest"
            time.sleep(0.05)
        # The first writer has staged a complete generation (manifest written) but not published it.
        staged = [n for n in listing() if n.startswith("tmp-")]
        assert len(staged) == 1 and (INDEX / staged[0] / "manifest.json").is_file()

        # Readers see the published generation, answering exactly as before.
        assert same_answer(ask(cli), before)

        # A second writer fails fast, naming the first one's pid.
        second = subprocess.run(ragcli_cmd("ingest", docs, "--quiet"), capture_output=True, text=True,
                                env=env, timeout=120)
        assert second.returncode == 1, second.stderr
        assert f"pid {first.pid}" in second.stderr and "--wait" in second.stderr
        assert "Traceback" not in second.stderr

        # A third, with --wait, queues behind it (and sees a change made meanwhile).
        (docs / "b.md").unlink()
        waiting = subprocess.Popen(ragcli_cmd("ingest", docs, "--wait", "--json", "--quiet"),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        time.sleep(2.0)
        assert waiting.poll() is None, waiting.communicate()
        assert current() == "gen-000001" and same_answer(ask(cli), before)
        (tmp_path / "go").write_text("")

        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        import json

        report = json.loads(out)
        assert report["generation"] == "gen-000002" and report["summary"]["removed"] == 1
        out, err = waiting.communicate(timeout=120)
        assert waiting.returncode == 0, err
        report = json.loads(out)
        assert report["generation"] == "gen-000003"
        assert [(f["file"], f["status"]) for f in report["files"] if f["status"] != "unchanged"] == [
            ("b.md", "removed")]
    finally:
        (tmp_path / "go").write_text("")
        for proc in (first, waiting):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    check_clean()
    gen = check_whole()
    assert gen.name == "gen-000003" and set(gen.files) == {"a.md"}
    verify_ok(cli)
    assert ask(cli)["generation"] == "gen-000003"


@pytest.mark.parametrize("step", STEPS)
def test_killed_compaction_keeps_the_published_generation(cli, base, tmp_path, step):
    docs, before = base
    edit(docs)
    assert cli("ingest", docs).exit_code == 0  # gen-000002, with dead rows to compact away
    answer = ask(cli)
    killed = subprocess.run(hooked("kill", step, tmp_path, "index", "compact"), capture_output=True, text=True,
                            timeout=120)
    assert killed.returncode == 137, killed.stderr
    published = "gen-000003" if step == "current" else "gen-000002"
    assert current() == published
    after = ask(cli)
    assert after["generation"] == published and [s["chunk_id"] for s in after["sources"]] == [
        s["chunk_id"] for s in answer["sources"]]
    verify_ok(cli)
    again = cli("index", "compact", "--json")
    assert again.exit_code == 0, again.output
    check_clean()
    check_whole()
    verify_ok(cli)
