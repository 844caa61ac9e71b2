"""Measure the hybrid weight α on a QA file and record it beside the configured local index.

`--fusion adaptive` (the default) fuses with the recorded α from then on. Uses the configured settings
(environment, .env): the index folder, the embedding model.

    python scripts/calibrate_fusion.py QA.jsonl [--dry-run]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qa", type=Path)
    ap.add_argument("--dry-run", action="store_true", help="print the record, do not write it")
    args = ap.parse_args(argv)

    from ragcli import calibration
    from ragcli.bench import load_qa
    from ragcli.config import load_settings
    from ragcli.retrieval import open_retriever

    settings = load_settings({})
    retriever = open_retriever(settings, mode="hybrid")
    qa = load_qa(args.qa)
    record = calibration.calibrate(retriever, [(row.question, row.sources) for row in qa.rows if row.sources],
                                   qa_file=str(args.qa),
                                   index_dir=None if args.dry_run else settings.index_dir)
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
