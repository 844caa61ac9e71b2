"""QA sets in the shapes people have: ragcli's JSON Lines (answers optional), CSV, and BEIR folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragcli.errors import QAFileError
from ragcli.qa import beir_source, load_qa, write_beir_corpus

CORPUS = [
    {"_id": "doc-1", "title": "Retention", "text": "Deleted files of Delta tables are kept for 30 days."},
    {"_id": "doc/2", "title": "", "text": "The on-call engineer acknowledges a page within 15 minutes."},
    {"_id": "doc-3", "title": "Backups", "text": "Backups run nightly at 02:00 UTC."},
]
QUERIES = [
    {"_id": "q1", "text": "How long are deleted files kept?"},
    {"_id": "q2", "text": "How fast must a page be acknowledged?"},
    {"_id": "q3", "text": "A query nobody judged"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\tdoc-1\t2\nq1\tdoc-3\t1\nq2\tdoc/2\t1\nq2\tdoc-3\t0\n"


def beir(root: Path, qrels: str = QRELS, name: str = "test.tsv", queries: list | None = None) -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS), encoding="utf-8")
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries or QUERIES), encoding="utf-8")
    (root / "qrels" / name).write_text(qrels, encoding="utf-8")
    return root


def test_beir_folder_reads_graded_qrels(tmp_path):
    qa = load_qa(beir(tmp_path / "set"))
    assert qa.shape == "beir" and qa.graded and qa.with_answers == 0
    # q3 has no judgement and a zero grade is not relevant: BEIR's own rules.
    assert [(r.id, r.relevance) for r in qa.rows] == [
        ("q1", {"doc-1.md": 2.0, "doc-3.md": 1.0}), ("q2", {"doc%2F2.md": 1.0})]
    assert qa.rows[1].where == f"{tmp_path / 'set' / 'queries.jsonl'}:2"
    assert qa.corpus == tmp_path / "set" / "corpus.jsonl" and len(qa.files) == 3
    # A qrels file may be named directly (dev.tsv beside test.tsv).
    beir(tmp_path / "set", "q2\tdoc-3\t1\n", name="dev.tsv")
    dev = load_qa(tmp_path / "set" / "qrels" / "dev.tsv")
    assert [(r.id, r.relevance) for r in dev.rows] == [("q2", {"doc-3.md": 1.0})]


def test_beir_corpus_is_written_as_files_named_by_source(tmp_path):
    qa = load_qa(beir(tmp_path / "set"))
    out = tmp_path / "docs"
    assert write_beir_corpus(qa.corpus, out) == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(beir_source(d["_id"]) for d in CORPUS)
    assert (out / "doc-1.md").read_text() == "# Retention\n\nDeleted files of Delta tables are kept for 30 days.\n"
    assert (out / beir_source("doc/2")).read_text().startswith("The on-call engineer")
    assert all(s in {p.name for p in out.iterdir()} for r in qa.rows for s in r.sources)


@pytest.mark.parametrize(("qrels", "line", "fragment"), [
    ("query-id\tcorpus-id\tscore\nq1\tdoc-1\n", 2, "3 tab-separated cells"),
    ("q1\tdoc-1\t1\nq1\tdoc-1\thigh\n", 2, "not a number"),
    ("q1\tdoc-1\t1\nq9\tdoc-1\t1\n", 2, "query id 'q9' is not in"),
    ("q1\tdoc-1\t1\n\nq1\tnope\t1\n", 3, "corpus id 'nope' is not in"),
])
def test_bad_qrels_line_is_named(tmp_path, qrels, line, fragment):
    root = beir(tmp_path / "set", qrels)
    with pytest.raises(QAFileError) as info:
        load_qa(root)
    assert f"{root / 'qrels' / 'test.tsv'}:{line}:" in str(info.value) and fragment in str(info.value)


def test_bad_beir_folders(tmp_path):
    root = beir(tmp_path / "set", queries=[QUERIES[0], {"_id": "q2"}])
    with pytest.raises(QAFileError, match=rf"{root / 'queries.jsonl'}:2: expected a JSON object"):
        load_qa(root)
    root = beir(tmp_path / "two", name="dev.tsv")
    (root / "qrels" / "train.tsv").write_text(QRELS)
    with pytest.raises(QAFileError, match="pass the one to score"):
        load_qa(root)
    (tmp_path / "empty").mkdir()
    with pytest.raises(QAFileError, match="not a BEIR folder"):
        load_qa(tmp_path / "empty")
    root = beir(tmp_path / "nocorpus")
    (root / "corpus.jsonl").unlink()
    with pytest.raises(QAFileError, match="corpus.jsonl is missing"):
        load_qa(root)
    root = beir(tmp_path / "zero", "q1\tdoc-1\t0\n")
    with pytest.raises(QAFileError, match="no positive judgement"):
        load_qa(root)


def test_csv_with_question_answer_source_columns(tmp_path):
    path = tmp_path / "set.csv"
    path.write_text(
        "Question,Answer,Source,Evidence\n"
        "How long are deleted files kept?,30 days|thirty days,retention.md,kept for 30 days\n"
        "\"A question\nover two lines?\",,a.md|sub\\b.md,\n"
        "\n"
        "Retrieval only?,,c.md,\n", encoding="utf-8")
    qa = load_qa(path)
    assert qa.shape == "csv" and qa.with_answers == 1 and qa.with_evidence == 1
    assert [(r.line, r.id, r.answers, r.sources) for r in qa.rows] == [
        (2, "line2", ["30 days", "thirty days"], ["retention.md"]),
        (3, "line3", [], ["a.md", "sub/b.md"]),
        (6, "line6", [], ["c.md"]),
    ]
    assert qa.rows[1].question == "A question\nover two lines?"


@pytest.mark.parametrize(("text", "line", "fragment"), [
    ("question,answer\nq?,a\n", 1, "\"question\" and \"source\" columns"),
    ("question,source\nq?,a.md\n,b.md\n", 3, "missing or empty \"question\""),
    ("question,source\nq?,a.md\n\"multi\nline\",\n", 3, "\"sources\" must be"),
    ("id,question,source\n1,q?,a.md\n1,r?,b.md\n", 3, "repeated"),
    ("question,source\nq?,a.md,extra\n", 2, "more cells than the header"),
])
def test_bad_csv_row_is_named(tmp_path, text, line, fragment):
    path = tmp_path / "set.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(QAFileError) as info:
        load_qa(path)
    assert f"{path}:{line}:" in str(info.value) and fragment in str(info.value)
