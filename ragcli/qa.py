"""QA sets for `ragcli bench`, in the shapes people already have (stdlib only).

Three shapes, chosen by what `--qa` points at:

- **JSON Lines** (`*.jsonl`, ragcli's own): one object a line with `question` and `sources` (a list
  of file paths relative to the ingested folder, or an object mapping each path to a graded
  relevance, e.g. `{"a.md": 2, "b.md": 1}`); `id`, `answers` and `evidence` are optional.
- **CSV** (`*.csv`): a header row with `question` and `source` (or `sources`) columns, optional `id`,
  `answer` (or `answers`) and `evidence`. Several values in one cell are separated by `|`.
- **BEIR** (a folder with `corpus.jsonl`, `queries.jsonl` and `qrels/*.tsv`, or one of its
  `qrels/*.tsv` files): graded relevance from the qrels file (`query-id corpus-id score`); queries
  without a positive qrel are not scored, as in BEIR's own evaluation. The documents of
  `corpus.jsonl` become one Markdown file each (`write_beir_corpus`) so ragcli can ingest them; a
  document's source path is `beir_source(doc_id)`.

Every problem names the file and the line (`file:line`) and what to do.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ragcli.errors import QAFileError

__all__ = ["QARow", "QASet", "beir_source", "load_qa", "write_beir_corpus"]


@dataclass(frozen=True)
class QARow:
    """One question. `relevance` maps each relevant source to its grade (> 0; 1 for plain labels)."""

    line: int
    id: str
    question: str
    answers: list[str]
    relevance: dict[str, float]
    evidence: list[str] = field(default_factory=list)
    where: str = ""  # "file:line", for messages

    @property
    def sources(self) -> list[str]:
        return list(self.relevance)

    @property
    def graded(self) -> bool:
        return any(g != 1 for g in self.relevance.values())


@dataclass(frozen=True)
class QASet:
    """The rows of a QA set and where they came from. `corpus` is the BEIR corpus file, if any."""

    path: Path
    shape: str  # "jsonl", "csv" or "beir"
    rows: list[QARow]
    corpus: Path | None = None
    files: list[Path] = field(default_factory=list)  # every file read (for the fingerprint)

    @property
    def with_answers(self) -> int:
        return sum(1 for r in self.rows if r.answers)

    @property
    def with_evidence(self) -> int:
        return sum(1 for r in self.rows if r.evidence)

    @property
    def graded(self) -> bool:
        return any(r.graded for r in self.rows)


def load_qa(path: Path) -> QASet:
    """Read and validate a QA set: a BEIR folder (or its qrels file), a CSV file, or JSON Lines."""
    path = Path(path)
    if path.is_dir() or (path.suffix.lower() == ".tsv" and path.parent.name == "qrels"):
        return _load_beir(path)
    if not path.is_file():
        raise QAFileError(f"QA file {path} does not exist. Pass --qa with a JSON Lines or CSV file, or a BEIR "
                          "folder (see docs/bench.md).")
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    return _load_jsonl(path)


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise QAFileError(f"{path} is not UTF-8 text.") from None


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _source(s: str) -> str:
    return s.strip().replace("\\", "/")


def _relevance(where: str, sources: object) -> dict[str, float]:
    if isinstance(sources, dict):
        out: dict[str, float] = {}
        for name, grade in sources.items():
            if not isinstance(name, str) or not name.strip() or isinstance(grade, bool) \
                    or not isinstance(grade, (int, float)) or not grade > 0:
                raise QAFileError(f"{where}: \"sources\" as an object maps file paths to grades > 0, "
                                  f"e.g. {{\"a.md\": 2}}; got {name!r}: {grade!r}.")
            out[_source(name)] = float(grade)
        if out:
            return out
    elif _strings(sources) and sources and all(s.strip() for s in sources):
        return dict.fromkeys((_source(s) for s in sources), 1.0)
    raise QAFileError(f"{where}: \"sources\" must be a non-empty list of file paths relative to the corpus root "
                      "(or an object mapping them to graded relevance).")


def _row(where: str, n: int, qid: object, question: object, answers: object, sources: object, evidence: object,
         seen: set[str]) -> QARow:
    if not isinstance(question, str) or not question.strip():
        raise QAFileError(f"{where}: missing or empty \"question\".")
    if answers is None:
        answers = []
    if not _strings(answers) or not all(a.strip() for a in answers):
        raise QAFileError(f"{where}: \"answers\" must be a list of non-empty strings (or left out).")
    relevance = _relevance(where, sources)
    if evidence is None:
        evidence = []
    if not _strings(evidence):
        raise QAFileError(f"{where}: \"evidence\" must be a list of strings.")
    if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not str(qid).strip() or str(qid) in seen:
        raise QAFileError(f"{where}: id {qid!r} is missing or repeated.")
    seen.add(str(qid))
    return QARow(n, str(qid), question.strip(), list(answers), relevance, [e for e in evidence if e.strip()], where)


def _load_jsonl(path: Path) -> QASet:
    rows: list[QARow] = []
    seen: set[str] = set()
    for n, where, obj in _json_lines(path, "a JSON object with question and sources"):
        rows.append(_row(where, n, obj.get("id", f"line{n}"), obj.get("question"), obj.get("answers"),
                         obj.get("sources"), obj.get("evidence"), seen))
    if not rows:
        raise QAFileError(f"{path} holds no questions.")
    return QASet(path, "jsonl", rows, files=[path])


def _cells(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split("|") if v.strip()]


def _load_csv(path: Path) -> QASet:
    import io

    reader = csv.reader(io.StringIO(_text(path), newline=""))
    try:
        header = [h.strip().lower() for h in next(reader, [])]

        def column(*names: str) -> int | None:
            return next((header.index(n) for n in names if n in header), None)

        q_col, s_col = column("question"), column("sources", "source")
        a_col, e_col, id_col = column("answers", "answer"), column("evidence"), column("id")
        if q_col is None or s_col is None:
            raise QAFileError(f"{path}:1: the header needs \"question\" and \"source\" columns "
                              f"(optional: id, answer, evidence); found {', '.join(header) or 'none'}.")
        rows: list[QARow] = []
        seen: set[str] = set()
        start = reader.line_num + 1
        for cells in reader:
            # A quoted cell may span lines: the row is named by the line it starts on.
            n, start = start, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(header):
                raise QAFileError(f"{path}:{n}: more cells than the header has columns.")
            cells += [""] * (len(header) - len(cells))
            where = f"{path}:{n}"
            rows.append(_row(where, n, cells[id_col].strip() if id_col is not None else f"line{n}",
                             cells[q_col], _cells(cells[a_col]) if a_col is not None else [],
                             _cells(cells[s_col]) or None, _cells(cells[e_col]) if e_col is not None else [], seen))
    except csv.Error as exc:
        raise QAFileError(f"{path}:{reader.line_num}: not valid CSV ({exc}).") from None
    if not rows:
        raise QAFileError(f"{path} holds no questions.")
    return QASet(path, "csv", rows, files=[path])


def beir_source(doc_id: str) -> str:
    """The file name a BEIR document gets when its corpus is written out for ingest."""
    return quote(doc_id, safe="") + ".md"


def _json_lines(path: Path, expected: str, required: tuple[str, ...] = ()):
    """(line number, "file:line", object) for each non-blank line of a JSON Lines file; a line that is not
    a JSON object (with the `required` string fields) is named with what was `expected`."""
    for n, line in enumerate(_text(path).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise QAFileError(f"{where}: not valid JSON ({exc.args[0].split(':')[0]}).") from None
        if not isinstance(obj, dict) or any(not isinstance(obj.get(key), str) for key in required):
            raise QAFileError(f"{where}: expected {expected}.")
        yield n, where, obj


def _jsonl_objects(path: Path, required: tuple[str, ...]):
    for _, where, obj in _json_lines(path, f"a JSON object with string fields {', '.join(required)}", required):
        if not obj["_id"].strip():
            raise QAFileError(f"{where}: empty \"_id\".")
        yield where, obj


def _load_beir(path: Path) -> QASet:
    if path.is_dir():
        root = path
        qrels_dir = root / "qrels"
        tsvs = sorted(qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
        if (qrels_dir / "test.tsv").is_file():
            qrels = qrels_dir / "test.tsv"
        elif len(tsvs) == 1:
            qrels = tsvs[0]
        elif tsvs:
            raise QAFileError(f"{qrels_dir} holds {', '.join(t.name for t in tsvs)} and no test.tsv: pass the one to "
                              f"score, e.g. --qa {tsvs[0]}.")
        else:
            raise QAFileError(f"{root} is not a BEIR folder: it needs corpus.jsonl, queries.jsonl and qrels/*.tsv.")
    else:
        qrels, root = path, path.parent.parent
        if not qrels.is_file():
            raise QAFileError(f"QA file {qrels} does not exist.")
    corpus, queries_path = root / "corpus.jsonl", root / "queries.jsonl"
    for needed in (corpus, queries_path):
        if not needed.is_file():
            raise QAFileError(f"{needed} is missing: a BEIR folder needs corpus.jsonl, queries.jsonl and qrels/*.tsv.")
    doc_ids = {obj["_id"] for _, obj in _jsonl_objects(corpus, ("_id", "text"))}
    queries: dict[str, tuple[str, int]] = {}
    for where, obj in _jsonl_objects(queries_path, ("_id", "text")):
        if obj["_id"] in queries:
            raise QAFileError(f"{where}: query id {obj['_id']!r} is repeated.")
        queries[obj["_id"]] = (obj["text"], int(where.rsplit(":", 1)[1]))
    grades: dict[str, dict[str, float]] = {}
    for n, line in enumerate(_text(qrels).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{qrels}:{n}"
        cells = line.split("\t")
        if n == 1 and cells[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue  # header
        if len(cells) != 3:
            raise QAFileError(f"{where}: expected 3 tab-separated cells (query-id, corpus-id, score), got {len(cells)}.")
        qid, did, raw = (c.strip() for c in cells)
        try:
            grade = float(raw)
        except ValueError:
            raise QAFileError(f"{where}: score {raw!r} is not a number.") from None
        if qid not in queries:
            raise QAFileError(f"{where}: query id {qid!r} is not in {queries_path}.")
        if did not in doc_ids:
            raise QAFileError(f"{where}: corpus id {did!r} is not in {corpus}.")
        if grade > 0:
            grades.setdefault(qid, {})[beir_source(did)] = grade
    rows = []
    for qid, (text, line) in queries.items():
        if qid in grades:
            where = f"{queries_path}:{line}"
            if not text.strip():
                raise QAFileError(f"{where}: empty query text.")
            rows.append(QARow(line, qid, text.strip(), [], grades[qid], [], where))
    if not rows:
        raise QAFileError(f"{qrels} has no positive judgement for any query of {queries_path}.")
    return QASet(qrels, "beir", rows, corpus=corpus, files=[corpus, queries_path, qrels])


def write_beir_corpus(corpus: Path, folder: Path) -> int:
    """Write each document of a BEIR corpus.jsonl as `folder/beir_source(_id)` (title as a heading)."""
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for _, obj in _jsonl_objects(corpus, ("_id", "text")):
        title = obj.get("title") if isinstance(obj.get("title"), str) else ""
        body = f"# {title.strip()}\n\n{obj['text']}\n" if title.strip() else f"{obj['text']}\n"
        (folder / beir_source(obj["_id"])).write_text(body, encoding="utf-8")
        count += 1
    return count
