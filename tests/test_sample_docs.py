"""The sample corpus in sample_docs/ and its question file qa.jsonl are consistent with each other.

Every question must be answerable from the documents it cites: its evidence sentences occur verbatim
in those documents (whitespace collapsed; .docx read with docx2txt, as ingestion reads them) and its
canonical answer occurs in its evidence. The committed .docx files must be exactly what
scripts/make_sample_docx.py builds from its sources. No models are loaded.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import docx2txt
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_docs"
QA_PATH = SAMPLE / "qa.jsonl"
GENERATOR = ROOT / "scripts" / "make_sample_docx.py"

DOC_SUFFIXES = {".md", ".markdown", ".docx"}
QA_KEYS = {"id", "question", "answers", "sources", "evidence"}


def collapse(text: str) -> str:
    return " ".join(text.split())


def corpus_files() -> list[Path]:
    return sorted(p for p in SAMPLE.rglob("*") if p.is_file() and p.suffix.lower() in DOC_SUFFIXES)


def rel(path: Path) -> str:
    return path.relative_to(SAMPLE).as_posix()


@functools.cache
def doc_text(relpath: str) -> str:
    """The text of a corpus document, whitespace collapsed."""
    path = SAMPLE / relpath
    if path.suffix.lower() == ".docx":
        return collapse(docx2txt.process(str(path)))
    return collapse(path.read_text(encoding="utf-8"))


@functools.cache
def qa_items() -> tuple[dict, ...]:
    lines = QA_PATH.read_text(encoding="utf-8").splitlines()
    items = []
    for n, line in enumerate(lines, 1):
        assert line.strip(), f"qa.jsonl line {n} is blank"
        obj = json.loads(line)
        assert isinstance(obj, dict), f"qa.jsonl line {n} is not a JSON object"
        items.append(obj)
    return tuple(items)


def load_generator():
    spec = importlib.util.spec_from_file_location("make_sample_docx", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- qa.jsonl --------------------------------------------------------------------------------------


def test_qa_parses_with_exact_shape():
    items = qa_items()
    assert len(items) >= 36
    for item in items:
        assert set(item) == QA_KEYS, item
        assert isinstance(item["id"], str) and re.fullmatch(r"q\d+", item["id"]), item["id"]
        assert isinstance(item["question"], str) and len(item["question"]) >= 15, item["id"]
        assert item["question"].rstrip().endswith("?"), item["id"]
        for key in ("answers", "sources", "evidence"):
            value = item[key]
            assert isinstance(value, list) and value, (item["id"], key)
            assert all(isinstance(s, str) and s.strip() for s in value), (item["id"], key)
            assert len(set(value)) == len(value), (item["id"], key, "duplicates")


def test_qa_ids_unique():
    ids = [item["id"] for item in qa_items()]
    assert len(ids) == len(set(ids)), [i for i, c in Counter(ids).items() if c > 1]


def test_answers_are_short():
    for item in qa_items():
        for answer in item["answers"]:
            assert 1 <= len(answer.split()) <= 6, (item["id"], answer)


def test_sources_exist_under_sample_docs():
    for item in qa_items():
        assert 1 <= len(item["sources"]) <= 3, item["id"]
        for source in item["sources"]:
            assert "\\" not in source and not source.startswith("/") and ".." not in source.split("/"), source
            path = SAMPLE / source
            assert path.is_file(), (item["id"], source)
            assert path.suffix.lower() in DOC_SUFFIXES, (item["id"], source)


def test_evidence_occurs_verbatim_in_sources():
    for item in qa_items():
        texts = {source: doc_text(source) for source in item["sources"]}
        cited = set()
        for sentence in item["evidence"]:
            sentence = collapse(sentence)
            # A real sentence, not a fragment that would match anywhere.
            assert len(sentence) >= 20 and sentence[-1] in ".!?:", (item["id"], sentence)
            hits = [source for source, text in texts.items() if sentence in text]
            assert hits, f"{item['id']}: evidence not found in {item['sources']}: {sentence!r}"
            cited.update(hits)
        # Every listed source is needed: it holds at least one evidence sentence.
        assert cited == set(item["sources"]), (item["id"], sorted(set(item["sources"]) - cited))


def test_first_answer_occurs_in_evidence():
    for item in qa_items():
        answer = collapse(item["answers"][0]).casefold()
        evidence = [collapse(s).casefold() for s in item["evidence"]]
        assert any(answer in s for s in evidence), (item["id"], item["answers"][0])


def test_some_questions_need_two_documents():
    multi = [item["id"] for item in qa_items() if len(item["sources"]) >= 2]
    assert 2 <= len(multi) <= 6, multi


def test_every_document_has_two_questions():
    counts = Counter(source for item in qa_items() for source in item["sources"])
    docs = [rel(p) for p in corpus_files()]
    thin = {doc: counts.get(doc, 0) for doc in docs if counts.get(doc, 0) < 2}
    assert not thin, thin


# --- the corpus ------------------------------------------------------------------------------------


def test_corpus_shape():
    files = corpus_files()
    suffixes = Counter(p.suffix.lower() for p in files)
    assert len(files) >= 10, [rel(p) for p in files]
    assert suffixes[".md"] + suffixes[".markdown"] >= 1 and suffixes[".docx"] >= 4, suffixes
    assert any(len(p.relative_to(SAMPLE).parts) > 1 for p in files), "no document in a subfolder"


@pytest.mark.parametrize("relpath", [rel(p) for p in corpus_files()])
def test_document_length_and_text(relpath):
    text = doc_text(relpath)
    words = len(text.split())
    assert 300 <= words <= 900, (relpath, words)
    assert "<w:" not in text and "\ufffd" not in text, relpath
    # Sample documents are prose for retrieval tests, never instructions aimed at a model.
    assert not re.search(r"ignore (all |any )?(previous|prior|above) instructions", text, re.IGNORECASE), (
        relpath
    )


def test_markdown_has_headings_lists_and_a_table():
    md = [p for p in corpus_files() if p.suffix.lower() in {".md", ".markdown"}]
    tables = 0
    for path in md:
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines and lines[0].startswith("# "), rel(path)
        assert any(line.startswith("## ") for line in lines), rel(path)
        tables += any(re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", line.strip()) for line in lines)
    assert tables >= 1
    assert any(
        re.match(r"\s*(- |\d+\. )", line) for p in md for line in p.read_text(encoding="utf-8").splitlines()
    )


def test_docx_have_headings_and_a_table():
    import zipfile

    docx = [p for p in corpus_files() if p.suffix.lower() == ".docx"]
    with_table = 0
    for path in docx:
        with zipfile.ZipFile(path) as zf:
            xml = zf.read("word/document.xml").decode("utf-8")
        assert '<w:pStyle w:val="Heading1"/>' in xml, rel(path)
        assert '<w:pStyle w:val="Heading2"/>' in xml, rel(path)
        with_table += "<w:tbl>" in xml
        # docx2txt puts a blank line between paragraphs; the first line is the title.
        raw = docx2txt.process(str(path))
        assert "\n\n" in raw and raw.splitlines()[0].strip(), rel(path)
    assert with_table >= 1


# --- the .docx generator ---------------------------------------------------------------------------


def test_docx_generator_reproduces_committed_files(tmp_path):
    generator = load_generator()
    built = generator.build_all(tmp_path)
    assert built and all(p.parent == tmp_path for p in built)
    committed = sorted(p.name for p in SAMPLE.glob("*.docx"))
    assert sorted(p.name for p in built) == committed, "sample_docs/*.docx and scripts/docx_src differ"
    for path in built:
        assert path.read_bytes() == (SAMPLE / path.name).read_bytes(), (
            f"{path.name} is stale: run `python scripts/make_sample_docx.py`"
        )
    # Deterministic: a second build gives the same bytes again.
    again = generator.build_all(tmp_path / "again")
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in built]
