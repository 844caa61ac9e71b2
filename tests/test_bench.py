"""ragcli bench: QA validation, gates, and the report end to end on sample_docs with the tiny models."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest

from ragcli.bench import check_gates, load_baseline, load_qa, parse_threshold
from ragcli.errors import BaselineError, QAFileError, UsageError

GOOD = {"id": "q1", "question": "What?", "answers": ["x"], "sources": ["a.md"], "evidence": ["x is so."]}


def _qa(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(("line", "fragment"), [
    ("{not json", "not valid JSON"),
    ('["a list"]', "expected a JSON object"),
    (json.dumps({**GOOD, "question": ""}), "missing or empty \"question\""),
    (json.dumps({k: v for k, v in GOOD.items() if k != "question"}), "missing or empty \"question\""),
    (json.dumps({**GOOD, "answers": [""]}), "\"answers\" must be"),
    (json.dumps({**GOOD, "answers": "x"}), "\"answers\" must be"),
    (json.dumps({**GOOD, "sources": {"a.md": 0}}), "grades > 0"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "sources"}), "\"sources\" must be"),
    (json.dumps({**GOOD, "sources": "a.md"}), "\"sources\" must be"),
    (json.dumps({**GOOD, "evidence": "text"}), "\"evidence\" must be"),
    (json.dumps(GOOD), "repeated"),
])
def test_bad_qa_line_is_named(tmp_path, line, fragment):
    path = _qa(tmp_path, json.dumps(GOOD), "", line)
    with pytest.raises(QAFileError) as info:
        load_qa(path)
    assert f"{path}:3" in str(info.value) and fragment in str(info.value)


def test_empty_or_missing_qa_file(tmp_path):
    with pytest.raises(QAFileError, match="holds no questions"):
        load_qa(_qa(tmp_path, "", "  "))
    with pytest.raises(QAFileError, match="does not exist"):
        load_qa(tmp_path / "nope.jsonl")


def test_qa_rows_are_parsed(tmp_path):
    qa = load_qa(_qa(tmp_path, json.dumps(GOOD), json.dumps({**GOOD, "id": "q2", "sources": ["sub\\b.md"]})))
    rows = qa.rows
    assert [r.id for r in rows] == ["q1", "q2"] and rows[1].sources == ["sub/b.md"] and rows[0].line == 1
    assert qa.shape == "jsonl" and not qa.graded and rows[0].relevance == {"a.md": 1.0}


def test_answers_and_evidence_are_optional_and_sources_may_be_graded(tmp_path):
    retrieval_only = {"id": "r1", "question": "Where?", "sources": {"a.md": 2, "b.md": 1}}
    qa = load_qa(_qa(tmp_path, json.dumps(GOOD), json.dumps(retrieval_only),
                     json.dumps({"question": "And?", "sources": ["c.md"], "answers": None})))
    assert [r.answers for r in qa.rows] == [["x"], [], []]
    assert qa.with_answers == 1 and qa.with_evidence == 1 and qa.graded
    assert qa.rows[1].relevance == {"a.md": 2.0, "b.md": 1.0} and qa.rows[2].id == "line3"


def test_thresholds_parse():
    assert parse_threshold("dense.mrr=0.5") == ("dense.mrr", 0.5)
    for bad in ("dense.mrr", "=1", "dense.mrr=high"):
        with pytest.raises(UsageError):
            parse_threshold(bad)


def _report(**metrics):
    return {"metrics": metrics, "fingerprint": {"qa_sha256": "q", "corpus_sha256": "c"}}


def test_gates():
    report = _report(**{"dense.mrr": 0.5, "ratio.retrieval_over_raw": 1.3, "answers.context.token_f1": 0.2})
    assert check_gates(report, fail_under=[("dense.mrr", 0.5)]) == []
    failed = check_gates(report, fail_under=[("dense.mrr", 0.6), ("bm25.mrr", 0.1)],
                         fail_over=[("ratio.retrieval_over_raw", 1.2)])
    assert len(failed) == 3
    assert failed[0] == "dense.mrr = 0.5 < 0.6"
    assert failed[1].startswith("bm25.mrr: no such metric")
    assert failed[2] == "ratio.retrieval_over_raw = 1.3 > 1.2"
    base = _report(**{"dense.mrr": 0.53, "ratio.retrieval_over_raw": 0.5, "answers.context.token_f1": 0.3})
    regressions = check_gates(report, baseline=base, tolerance=0.05)
    # 0.5 is within 0.05 of 0.53; 0.2 is not within 0.05 of 0.3; timing ratios are never compared to a baseline.
    assert regressions == ["answers.context.token_f1 = 0.2 regressed from 0.3 (tolerance 0.05)"]


def test_baseline_from_other_inputs_is_refused(tmp_path):
    path = tmp_path / "base.json"
    path.write_text(json.dumps({"metrics": {}, "fingerprint": {"qa_sha256": "other", "corpus_sha256": "c"}}))
    with pytest.raises(BaselineError, match="another QA file"):
        load_baseline(path, _report())
    with pytest.raises(BaselineError, match="does not exist"):
        load_baseline(tmp_path / "missing.json", _report())
    (tmp_path / "junk.json").write_text("[1]")
    with pytest.raises(BaselineError, match="not a ragcli bench report"):
        load_baseline(tmp_path / "junk.json", _report())


# -- end to end -----------------------------------------------------------------------------------

def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "LOCK":
            h.update(p.relative_to(root).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bench_report(models_dir, tmp_path_factory):
    """One full bench run (ingest, three modes, answers) shared by the tests of this module."""
    import shutil

    from conftest import EMBED, GEN, SAMPLE_DOCS
    from typer.testing import CliRunner

    from ragcli.cli.app import app

    root = tmp_path_factory.mktemp("bench")
    docs = root / "docs"
    shutil.copytree(SAMPLE_DOCS, docs)
    out = root / "report.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for var, value in {"RAGCLI_MODELS_DIR": str(models_dir), "RAGCLI_EMBED_MODEL": EMBED, "RAGCLI_GEN_MODEL": GEN,
                           "RAGCLI_MAX_NEW_TOKENS": "8", "NO_COLOR": "1", "COLUMNS": "200"}.items():
            mp.setenv(var, value)
        result = CliRunner().invoke(app, ["bench", "--qa", str(docs / "qa.jsonl"), "--corpus", str(docs), "--json",
                                          str(out), "--pairs", "1", "--no-startup", "--quiet",
                                          "--fail-under", "bm25.hit_rate=0.7"])
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result


@pytest.mark.slow
def test_bench_report_shape(bench_report):
    from conftest import SAMPLE_DOCS as docs

    report, result = bench_report
    assert report["questions"] == sum(1 for line in (docs / "qa.jsonl").read_text().splitlines() if line.strip())
    assert set(report["retrieval"]) == {"dense", "bm25", "hybrid"}
    for mode, r in report["retrieval"].items():
        for name in ("hit_rate", "recall", "mrr", "ndcg", "evidence_hit"):
            assert 0.0 <= r[name] <= 1.0
            assert report["metrics"][f"{mode}.{name}"] == r[name]
        assert r["latency_ms"]["total"]["p50"] <= r["latency_ms"]["total"]["p99"]
        assert len(r["per_question"]) == report["questions"]
        assert r["evidence_rows"] == report["questions"]
        q = r["per_question"][0]
        assert q["question"] and q["relevant"] and len(q["hits"]) == len(q["retrieved"]) <= report["k"]
        assert [h["rank"] for h in q["hits"]] == list(range(1, len(q["hits"]) + 1))
        assert set(q["hits"][0]) == {"rank", "chunk_id", "source", "position", "score"}
        assert q["first_relevant_rank"] is None or q["hits"][q["first_relevant_rank"] - 1]["source"] in q["relevant"]
        # Unrounded: the mean is exactly the mean of the per-question values.
        assert r["mrr"] == math.fsum(p["mrr"] for p in r["per_question"]) / len(r["per_question"])
    assert set(report["retrieval"]["dense"]["latency_ms"]) >= {"embed_question", "search_dense", "total"}
    assert set(report["retrieval"]["hybrid"]["latency_ms"]) >= {"search_bm25", "fuse"}
    answers = report["answers"]
    for side in ("with_context", "without_context"):
        assert set(answers[side]) == {"exact_match", "token_f1", "contained", "token_recall", "cut_rate"}
    assert answers["scored"] == report["questions"] and answers["skipped_without_answers"] == 0
    assert 0 <= answers["changed_by_context"] <= report["questions"]
    assert answers["generator"]["revision"] and answers["max_new_tokens"] == 8
    for q in answers["per_question"]:
        assert q["question"] and q["answers"] and isinstance(q["changed_by_context"], bool)
        for side in ("with_context", "without_context"):
            a = q[side]
            assert set(a) >= {"text", "exact_match", "token_f1", "contained", "tokens", "cut"}
            # cut: the generator's own flag (no end token or stop sequence before --max-new-tokens)
            assert isinstance(a["cut"], bool) and a["tokens"] <= 8
        assert all(h["source"] for h in q["sources"])
    assert answers["with_context"]["cut_rate"] == math.fsum(q["with_context"]["cut"] for q in answers["per_question"]) / len(answers["per_question"])
    assert set(answers["latency_ms"]) == {"generate_context", "generate_bare"}
    ingest = report["ingest"]
    assert ingest["chunks"] > 0 and ingest["chunks_per_s"] > 0 and ingest["encode_seconds"] > 0
    assert ingest["reingest_texts_embedded"] == 0 and report["metrics"]["count.reingest_texts_embedded"] == 0
    assert report["retrieval_over_raw"]["pairs"] == 4
    fp = report["fingerprint"]
    from ragcli import query

    assert fp["gen_revision"] == answers["generator"]["revision"]
    assert fp["prompt_template"]["context"] == query.CONTEXT_PROMPT and len(fp["prompt_template"]["sha256"]) == 64
    for key in ("embed_model", "embed_revision", "gen_model", "gen_revision", "splitter", "retrieval", "corpus_sha256", "qa_sha256",
                "ragcli_version", "python", "platform", "libraries"):
        assert fp[key] is not None
    assert report["memory"]["peak_rss_mb"] > 0
    assert report["gates"] == {"failed": [], "passed": True, "fail_under": {"bm25.hit_rate": 0.7}, "fail_over": {},
                               "tolerance": None}
    assert report["created"].endswith("+00:00")
    assert "Retrieval on" in result.stdout and "Speed" in result.stdout and "nan" not in result.stdout


@pytest.mark.slow
def test_bm25_retrieval_quality_on_sample_docs(bench_report):
    # BM25 does not depend on the random tiny encoder: it is a real quality check of chunking + retrieval.
    report, _ = bench_report
    assert report["retrieval"]["bm25"]["hit_rate"] >= 0.75
    assert report["retrieval"]["bm25"]["mrr"] >= 0.6


@pytest.mark.slow
def test_bench_is_deterministic_gates_and_never_changes_the_index(cli, model_env, bench_report, docs, tmp_path,
                                                                  monkeypatch):
    report, _ = bench_report
    monkeypatch.setenv("RAGCLI_MAX_NEW_TOKENS", "8")
    # An existing index is only read.
    assert cli("ingest", docs, "--quiet").exit_code == 0
    index = Path("ragcli-index")
    before = _tree_hash(index)
    out = tmp_path / "again.json"
    args = ["bench", "--qa", docs / "qa.jsonl", "--json", out, "--pairs", "1", "--no-startup", "--quiet",
            "--modes", "dense,bm25"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert _tree_hash(index) == before
    again = json.loads(out.read_text())
    assert "ingest" not in again
    for name in ("dense.hit_rate", "dense.mrr", "bm25.ndcg", "answers.context.token_f1", "answers.bare.exact_match"):
        assert again["metrics"][name] == report["metrics"][name]
    # --fail-under turns a shortfall into exit 3, naming every failed metric.
    failed = cli(*args, "--no-answers", "--fail-under", "bm25.hit_rate=1.01", "--fail-under", "dense.mrr=1.01")
    assert failed.exit_code == 3
    assert "bm25.hit_rate" in failed.stderr and "dense.mrr" in failed.stderr
    # --baseline: a baseline better than this run is a regression.
    better = dict(again, metrics={**again["metrics"], "bm25.ndcg": min(1.0, again["metrics"]["bm25.ndcg"] + 0.2)})
    base = tmp_path / "base.json"
    base.write_text(json.dumps(better))
    regressed = cli(*args, "--no-answers", "--baseline", base, "--tolerance", "0.05")
    assert regressed.exit_code == 3 and "bm25.ndcg" in regressed.stderr and "regressed" in regressed.stderr
    base.write_text(json.dumps(again))
    assert cli(*args, "--no-answers", "--baseline", base).exit_code == 0


@pytest.mark.slow
def test_bench_rejects_unknown_source_and_bad_lines(cli, model_env, docs, tmp_path):
    assert cli("ingest", docs, "--quiet").exit_code == 0
    qa = _qa(tmp_path, json.dumps({**GOOD, "sources": ["no/such/file.md"]}))
    result = cli("bench", "--qa", qa, "--no-answers", "--no-startup", "--quiet")
    assert result.exit_code == 1 and "no/such/file.md" in result.stderr and f"{qa}:1" in result.stderr
    qa = _qa(tmp_path, "not json")
    result = cli("bench", "--qa", qa, "--no-startup", "--quiet")
    assert result.exit_code == 1 and f"{qa}:1" in result.stderr and "Traceback" not in result.output
    result = cli("bench", "--modes", "dense,vectors", "--quiet")
    assert result.exit_code == 2 and "vectors" in result.stderr


def test_metric_directions_and_lower_is_better_baseline():
    from ragcli.bench import metric_direction

    assert metric_direction("dense.mrr") == "higher" and metric_direction("local.bm25.ndcg") == "higher"
    assert metric_direction("latency.dense.p50_ms") == "lower" and metric_direction("databricks.ratio.x") == "lower"
    assert metric_direction("answers.context.cut_rate") == "lower" and metric_direction("count.prompts_truncated") == "lower"
    assert metric_direction("answers.changed_by_context") == "none"
    assert metric_direction("local.answers.changed_by_context") == "none"
    report = _report(**{"answers.context.cut_rate": 0.5, "answers.changed_by_context": 1,
                        "answers.context.contained": 0.4, "latency.dense.p50_ms": 9.0})
    base = _report(**{"answers.context.cut_rate": 0.2, "answers.changed_by_context": 30,
                      "answers.context.contained": 0.3, "latency.dense.p50_ms": 1.0})
    # More cut answers is worse; fewer changed answers is neither; a slower timing is left to --fail-over.
    assert check_gates(report, baseline=base, tolerance=0.05) == [
        "answers.context.cut_rate = 0.5 regressed from 0.2 (lower is better; tolerance 0.05)"]
    assert check_gates(base, baseline=report, tolerance=0.05) == [
        "answers.context.contained = 0.3 regressed from 0.4 (tolerance 0.05)"]


def _q(qid, hit, rank=None, retrieved=("a.md",)):
    return {"id": qid, "question": f"question {qid}?", "hit_rate": hit, "first_relevant_rank": rank,
            "retrieved": list(retrieved), "relevant": {"a.md": 1.0}}


def _ans(qid, text, f1, sources=("a.md",)):
    return {"id": qid, "question": f"question {qid}?", "answers": ["gold"],
            "sources": [{"rank": i, "source": s} for i, s in enumerate(sources, 1)],
            "with_context": {"text": text, "token_f1": f1}}


def test_flipped_questions_against_a_hand_made_baseline():
    from ragcli.bench import count_flips, flipped_questions

    base = {"retrieval": {"dense": {"per_question": [_q("q1", 1.0, 1), _q("q2", 0.0), _q("q3", 1.0, 2)]},
                          "bm25": {"per_question": [_q("q1", 1.0, 1)]}},
            "answers": {"per_question": [_ans("q1", "The gold.", 1.0), _ans("q2", "no idea", 0.0),
                                         # an old-format row: answers as plain strings
                                         {"id": "q3", "with_context": "Gold", "without_context": "x"}]}}
    now = {"retrieval": {"dense": {"per_question": [_q("q1", 0.0, None, ("b.md",)), _q("q2", 1.0, 3),
                                                    _q("q3", 1.0, 1), _q("q4", 1.0, 1)]},
                         "hybrid": {"per_question": [_q("q1", 0.0)]}},
           "answers": {"per_question": [_ans("q1", "the  gold", 1.0), _ans("q2", "gold", 1.0, ("a.md", "b.md")),
                                        _ans("q3", "silver", 0.0), _ans("q4", "new", 0.0)]}}
    flips = flipped_questions(now, base)
    dense = flips["retrieval"]["dense"]
    # q3 moved from rank 2 to 1 (still a hit), q4 is new: neither is a flip. No bm25 now, no hybrid before.
    assert [(f["id"], f["change"]) for f in dense] == [("q1", "hit->miss"), ("q2", "miss->hit")]
    assert dense[0]["was"]["retrieved"] == ["a.md"] and dense[0]["now"]["retrieved"] == ["b.md"]
    assert dense[1]["now"]["first_relevant_rank"] == 3 and dense[1]["question"] == "question q2?"
    assert set(flips["retrieval"]) == {"dense", "hybrid"} and flips["retrieval"]["hybrid"] == []
    # "The gold." and "the  gold" normalise alike: not changed.
    assert [f["id"] for f in flips["answers"]] == ["q2", "q3"]
    q2 = flips["answers"][0]
    assert q2["was"]["text"] == "no idea" and q2["now"]["text"] == "gold" and q2["now"]["token_f1"] == 1.0
    assert q2["was"]["sources"] == ["a.md"] and q2["now"]["sources"] == ["a.md", "b.md"]
    assert flips["answers"][1]["was"]["text"] == "Gold"
    assert count_flips(flips) == 4
    both = flipped_questions({"targets": {"local": now}}, {"targets": {"local": base}})
    assert count_flips(both) == 4


@pytest.mark.slow
def test_beir_set_and_retrieval_only_jsonl_score_end_to_end(cli, model_env, docs, tmp_path):
    from test_qa import beir

    root = beir(tmp_path / "beir")
    out = tmp_path / "beir.json"
    result = cli("bench", "--qa", root, "--json", out, "--pairs", "1", "--no-startup", "--quiet")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["qa_shape"] == "beir" and report["questions"] == 2 and report["qa"]["graded"]
    assert report["ingest"]["files"] == 3 and report["index"]["files"] == 3
    assert "answers" not in report and "no row of the QA set has answers" in report["answers_skipped"]
    bm25 = {q["id"]: q for q in report["retrieval"]["bm25"]["per_question"]}
    assert bm25["q1"]["hits"][0]["source"] == "doc-1.md" and bm25["q1"]["relevant"] == {"doc-1.md": 2.0, "doc-3.md": 1.0}
    assert report["metrics"]["bm25.hit_rate"] == 1.0 and "bm25.evidence_hit" not in report["metrics"]
    assert report["retrieval"]["bm25"]["evidence_rows"] == 0
    assert "nan" not in result.stdout and "Answers not scored" in result.stdout
    # ragcli's own JSON Lines with answers on some rows only: retrieval on all, answers on those.
    rows = [json.loads(line) for line in (docs / "qa.jsonl").read_text().splitlines() if line.strip()][:6]
    for row in rows[::2]:
        del row["answers"], row["evidence"]
    qa = tmp_path / "mixed.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "mixed.json"
    result = cli("bench", "--qa", qa, "--corpus", docs, "--json", out, "--pairs", "1", "--no-startup", "--quiet",
                 "--max-new-tokens", "4", "--fusion", "weighted", "--alpha", "0.25")
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["questions"] == 6 and report["answers"]["scored"] == 3
    assert report["answers"]["skipped_without_answers"] == 3
    assert [q["id"] for q in report["answers"]["per_question"]] == [r["id"] for r in rows[1::2]]
    assert all(len(r["per_question"]) == 6 and r["evidence_rows"] == 3 for r in report["retrieval"].values())
    assert report["fingerprint"]["retrieval"] == {**report["fingerprint"]["retrieval"], "fusion": "weighted",
                                                  "alpha": 0.25, "max_new_tokens": 4}
    assert all(q["with_context"]["tokens"] <= 4 for q in report["answers"]["per_question"])
    assert "Answers on 3 of 6 questions" in result.stdout
    # --baseline against itself: nothing flipped, said so in the terminal and recorded in the report.
    again = cli("bench", "--qa", qa, "--corpus", docs, "--json", tmp_path / "again.json", "--pairs", "1",
                "--no-startup", "--quiet", "--max-new-tokens", "4", "--fusion", "weighted", "--alpha", "0.25",
                "--baseline", out)
    assert again.exit_code == 0, again.output
    assert "No question flipped" in again.stdout
    assert json.loads((tmp_path / "again.json").read_text())["flips"]["answers"] == []
    # A baseline where one bm25 question was the other way and one context answer differed: both listed.
    base = json.loads(out.read_text())
    q0 = base["retrieval"]["bm25"]["per_question"][0]
    q0["hit_rate"] = 1.0 - q0["hit_rate"]
    base["answers"]["per_question"][0]["with_context"]["text"] = "an older answer"
    (tmp_path / "base.json").write_text(json.dumps(base))
    flipped = cli("bench", "--qa", qa, "--corpus", docs, "--json", tmp_path / "flips.json", "--pairs", "1",
                  "--no-startup", "--quiet", "--max-new-tokens", "4", "--fusion", "weighted", "--alpha", "0.25",
                  "--baseline", tmp_path / "base.json")
    assert flipped.exit_code == 0, flipped.output
    assert "Retrieval flips against the baseline (1)" in flipped.stdout and q0["id"] in flipped.stdout
    assert "Context answers changed against the baseline (1)" in flipped.stdout
    assert "an older answer" in flipped.stdout
    flips = json.loads((tmp_path / "flips.json").read_text())["flips"]
    assert [f["id"] for f in flips["retrieval"]["bm25"]] == [q0["id"]] and flips["retrieval"]["dense"] == []


@pytest.mark.slow
def test_calibrate_fusion_records_alpha_that_query_then_uses(cli, model_env, docs, tmp_path):
    assert cli("ingest", docs, "--quiet").exit_code == 0

    def bench_hybrid(name: str):
        run = cli("bench", "--qa", docs / "qa.jsonl", "--modes", "hybrid", "--no-answers", "--no-startup",
                  "--pairs", "1", "--quiet", "--json", tmp_path / name)
        assert run.exit_code == 0, run.output
        return run, json.loads((tmp_path / name).read_text())

    # Uncalibrated, the default fusion is RRF; bench says so, and how to record a weight.
    plain, report = bench_hybrid("plain.json")
    assert report["retrieval"]["hybrid"]["fusion"] == {"fusion": "adaptive", "applied": "rrf", "alpha": None}
    assert "no fusion weight is recorded" in plain.stdout and "--calibrate-fusion" in plain.stdout
    out = tmp_path / "fusion.json"
    result = cli("bench", "--calibrate-fusion", "--qa", docs / "qa.jsonl", "--json", out)
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text())
    assert 0.0 <= record["alpha"] <= 1.0 and record["questions"] > 0
    assert json.loads((Path("ragcli-index") / "fusion.json").read_text())["alpha"] == record["alpha"]
    # The chosen α is the best hit@1 of the grid it measured.
    best = max(scores["hit@1"] for scores in record["grid"].values())
    assert record["grid"][f"{record['alpha']:.1f}"]["hit@1"] == best
    answer = cli("query", "--context", "--json", "--mode", "hybrid", "--max-new-tokens", "2", "What is retained?")
    assert answer.exit_code == 0, answer.output
    assert answer.json()["fusion"] == {**answer.json()["fusion"], "fusion": "adaptive", "applied": "weighted",
                                       "alpha": record["alpha"]}
    # bench applies it too, and its fingerprint records the weight applied (a new record changes results).
    tuned, report = bench_hybrid("tuned.json")
    applied = report["retrieval"]["hybrid"]["fusion"]
    assert applied["applied"] == "weighted" and applied["alpha"] == record["alpha"]
    assert report["fingerprint"]["retrieval"]["fusion_applied"] == applied
    assert "no fusion weight is recorded" not in tuned.stdout
    refused = cli("bench", "--calibrate-fusion", "--qa", docs / "qa.jsonl", "--corpus", docs)
    assert refused.exit_code == 2 and "--calibrate-fusion" in refused.stderr
