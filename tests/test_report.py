"""The HTML report: built from bench JSON, self-contained, and rendered by a real headless Chromium."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("plotly")

from ragcli.report import ReportError, build_html, load_runs, trend_key  # noqa: E402

FP = {"embed_model": "e", "embed_revision": "r1", "gen_model": "g", "gen_revision": "r2",
      "prompt_template": {"context": "C {passages} {question}", "bare": "B {question}", "sha256": "ab" * 32},
      "splitter": {"type": "semantic"}, "retrieval": {"k": 4}, "corpus_sha256": "c", "qa_sha256": "q",
      "target": "local", "ragcli_version": "0.1", "platform": "x"}


def _run(created: str, mrr: float, answer: str, hit: float, fp: dict | None = None) -> dict:
    per_q = [{"id": "q1", "question": "Who leads the team?", "hit_rate": hit, "first_relevant_rank": 1 if hit else None,
              "retrieved": ["overview.md" if hit else "other.md"], "relevant": {"overview.md": 1.0}}]
    return {
        "format": 2, "created": created, "ragcli_version": "0.1", "qa_file": "qa.jsonl", "questions": 1, "k": 4,
        "fingerprint": fp or FP,
        "retrieval": {"dense": {"hit_rate": hit, "recall": hit, "mrr": mrr, "ndcg": 0.61803, "per_question": per_q,
                                "latency_ms": {"total": {"p50": 3.25, "p95": 7.5, "p99": 9.125}}},
                      "bm25": {"hit_rate": 1.0, "recall": 1.0, "mrr": 0.875, "ndcg": 0.9,
                               "latency_ms": {"total": {"p50": 1.5, "p95": 2.5, "p99": 2.75}}, "per_question": []}},
        "answers": {"scored": 1, "with_context": {"exact_match": 0.0, "token_f1": 0.4321, "contained": 1.0},
                    "without_context": {"exact_match": 0.0, "token_f1": 0.1234, "contained": 0.0},
                    "per_question": [{"id": "q1", "question": "Who leads the team?", "answers": ["Priya Ramanathan"],
                                      "sources": [{"rank": 1, "source": "overview.md"}],
                                      "with_context": {"text": answer, "token_f1": 0.5}}]},
        "metrics": {"dense.hit_rate": hit, "dense.mrr": mrr, "bm25.mrr": 0.875, "answers.context.token_f1": 0.4321,
                    "ratio.retrieval_over_raw": 1.0625, "ratio.help_over_typer": 1.3125},
        "gates": {"failed": [], "passed": True, "fail_under": {"dense.mrr": 0.55}, "fail_over": {}},
    }


def _write(tmp_path: Path, *runs: dict) -> list[Path]:
    paths = []
    for n, run in enumerate(runs, 1):
        path = tmp_path / f"run{n}.json"
        path.write_text(json.dumps(run))
        paths.append(path)
    return paths


THREE = [("2026-01-01T00:00:00+00:00", 0.5625, "Priya Ramanathan leads it.", 1.0),
         ("2026-01-02T00:00:00+00:00", 0.6875, "Priya Ramanathan leads it.", 1.0),
         ("2026-01-03T00:00:00+00:00", 0.8125, "Somebody else.", 0.0)]


def test_page_holds_figures_trends_gates_and_flips(tmp_path):
    # Given out of order: the page orders runs by time.
    paths = _write(tmp_path, _run(*THREE[2]), _run(*THREE[0]), _run(*THREE[1]))
    runs = load_runs(paths)
    assert [r["created"][:10] for _, r in runs] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    page = build_html(runs)
    # Self-contained: plotly's library is inline, nothing is loaded from elsewhere.
    # (The browser test below also renders it with every host name unresolvable.)
    assert page.count("<script") >= 2 and not re.search(r"<script[^>]+src=", page) and "<link" not in page
    for name in ("quality", "latency", "answers", "speed", "trend dense.mrr", "trend ratio.retrieval_over_raw"):
        assert f"data-figure='{name}'" in page
    assert "0.5625" in page and "0.8125" in page and "gate: at least 0.55" in page
    # The newest run flipped q1 against the run before it (same fingerprint): both answers and sources shown.
    assert "hit &harr; miss against run3" in page and "Somebody else." in page and "Priya Ramanathan leads it." in page
    assert "other.md" in page
    assert "different fingerprints" not in page


def test_runs_with_other_fingerprints_are_never_one_line(tmp_path):
    other = dict(FP, splitter={"type": "sentence"})
    assert trend_key(other) != trend_key(FP) and trend_key(dict(FP, ragcli_version="0.2")) == trend_key(FP)
    runs = load_runs(_write(tmp_path, _run(*THREE[0]), _run(*THREE[1], fp=other), _run(*THREE[2])))
    page = build_html(runs)
    assert "different fingerprints, drawn as separate lines" in page
    assert f"fingerprint {trend_key(FP)}" in page and f"fingerprint {trend_key(other)}" in page
    # Flips compare with the newest earlier run of the same fingerprint (run1, not run2).
    assert "against run1" in page


def test_bad_inputs_are_refused(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(ReportError, match="is not JSON"):
        load_runs([bad])
    bad.write_text(json.dumps({"kind": "grid", "arms": []}))
    with pytest.raises(ReportError, match="--grid report"):
        load_runs([bad])
    bad.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ReportError, match="not a ragcli bench report"):
        load_runs([bad])
    with pytest.raises(ReportError, match="does not exist"):
        load_runs([tmp_path / "nope.json"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
           "--host-resolver-rules=MAP * ~NOTFOUND",
           f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(cli, tmp_path):
    paths = _write(tmp_path, *(_run(*t) for t in THREE))
    out = tmp_path / "report.html"
    result = cli("report", *paths, "-o", out)
    assert result.exit_code == 0, result.output
    assert f"Wrote {out} (3 run(s))" in result.stdout
    url = out.resolve().as_uri()
    dom = _chromium(tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    # Plotly drew every figure as SVG, with the JSON's numbers as text on the bars and lines.
    n_figures = open(out).read().count("data-figure=")
    assert html.count('class="main-svg"') >= n_figures >= 8
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", html)
    for value in ("0.562", "0.688", "0.812", "0.875", "3.250", "9.125", "0.432", "1.062"):
        assert value in texts, value
    assert "dense.mrr over runs" in texts and "Somebody else." in html
    shot = tmp_path / "shot.png"
    taken = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", url)
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    from PIL import Image, ImageStat

    image = Image.open(shot).convert("L")
    assert image.size == (1200, 2400)
    stat = ImageStat.Stat(image)
    assert stat.stddev[0] > 10  # not a blank page: bars, text and axes
    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50


@pytest.mark.slow
def test_bench_html_writes_this_run(cli, model_env, docs, tmp_path):
    out = tmp_path / "run.html"
    result = cli("bench", "--qa", docs / "qa.jsonl", "--corpus", docs, "--no-answers", "--no-startup", "--quiet",
                 "--pairs", "1", "--modes", "bm25", "--json", tmp_path / "run.json", "--html", out)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    report = json.loads((tmp_path / "run.json").read_text())
    assert "data-figure='quality'" in page and f"{report['retrieval']['bm25']['mrr']:.3f}" in page
    assert report["fingerprint"]["qa_sha256"] in page
    copy.deepcopy(report)


def test_targets_side_by_side(tmp_path):
    local, remote = _run(*THREE[0]), _run(*THREE[1])
    remote["metrics"]["dense.mrr"] = 0.4375
    both = {"format": 2, "created": "2026-01-04T00:00:00+00:00", "ragcli_version": "0.1", "qa_file": "qa.jsonl",
            "questions": 1, "k": 4, "targets": {"local": local, "databricks": remote},
            "fingerprint": {**FP, "targets": ["local", "databricks"]},
            "metrics": {**{f"local.{k}": v for k, v in local["metrics"].items()},
                        **{f"databricks.{k}": v for k, v in remote["metrics"].items()}}}
    page = build_html(load_runs(_write(tmp_path, both)))
    assert "data-figure='targets'" in page and "Targets side by side" in page
    assert '"name":"databricks"' in page and '"name":"local"' in page and "0.4375" in page
