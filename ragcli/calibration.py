"""The hybrid weight measured on a QA set, kept beside the index and reused by every later search.

`calibrate` asks the target for the dense and the bm25 list of every QA question (the candidate depth
hybrid search uses), picks α with `ragcli.fusion.pick_alpha` (a relevant chunk is one from a file the
question lists as its source) and writes `fusion.json` into the index folder. `fusion="adaptive"` (the
default) then fuses with that α; without the file it is reciprocal rank fusion. The record names the QA
file, the index generation and chunk count it was measured on, and every α's hit@1 and MRR, so a
report can say where the weight came from.

Only targets where ragcli fuses (no native hybrid) use it; the file is written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.retrieval import Retriever

FILE_NAME = "fusion.json"
FORMAT = 1


def path_in(index_dir: Path) -> Path:
    return Path(index_dir) / FILE_NAME


def load(index_dir: Path) -> dict[str, Any] | None:
    """The recorded calibration, or None where there is none."""
    path = path_in(index_dir)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is not valid JSON ({exc}). Delete it, or run ragcli bench again to rewrite it.") \
            from None
    alpha = data.get("alpha") if isinstance(data, dict) else None
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"{path} has no alpha within [0, 1]. Delete it, or run ragcli bench again to rewrite it.")
    return data


def save(index_dir: Path, record: dict[str, Any]) -> Path:
    path = path_in(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fusion-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(record, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def calibrate(retriever: Retriever, questions: list[tuple[str, list[str]]], *, qa_file: str | None = None,
              index_dir: Path | None = None) -> dict[str, Any]:
    """Pick the hybrid α for `retriever`'s content from (question, source files) pairs; write it to
    `index_dir` when given. Returns the record."""
    from ragcli import fusion

    queries = []
    for question, sources in questions:
        dense, sparse = retriever.candidate_lists(question)
        wanted = set(sources)
        relevant = {h.chunk_id for h in (*dense, *sparse) if h.file in wanted}
        queries.append(([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse], relevant))
    alpha, table = fusion.pick_alpha(queries)
    record = {
        "format": FORMAT,
        "fusion": "weighted",
        "alpha": alpha,
        "grid": {f"{a:.1f}": scores for a, scores in table.items()},
        "questions": len(queries),
        "qa_file": qa_file,
        "generation": retriever.info.name,
        "chunks": retriever.info.chunks,
        "embed_model": retriever.info.embed.get("model"),
        "depth": retriever.depth(1),
        "measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if index_dir is not None:
        save(index_dir, record)
    return record
