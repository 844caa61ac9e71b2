"""Write a .docx whose word/document.xml is about N MB of ordinary paragraphs without sentence
punctuation (issue 16, item 2), and optionally ingest it in a child process to measure time and peak RSS.

    python scripts/big_docx.py OUT.docx --mb 40
    python scripts/big_docx.py OUT.docx --mb 40 --ingest --index-dir /tmp/idx   # needs RAGCLI_MODELS_DIR etc.
"""

from __future__ import annotations

import argparse
import random
import zipfile
from pathlib import Path

WORDS = ("alpha beta gamma delta service index vector search table team night ingest job keeps recall high "
         "owners answer pages during office hours rank fusion constant sixty retries backoff queue worker "
         "shard replica cluster window embedding token chunk splitter prose paragraph heading").split()
CONTENT_TYPES = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
                 '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                 '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                 '<Default Extension="xml" ContentType="application/xml"/>'
                 '<Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.'
                 'wordprocessingml.document.main+xml"/></Types>')
RELS = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
        '<Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/'
        'officeDocument" Target="word/document.xml"/></Relationships>')
# A run as Word writes it: its own formatting, a few words of text.
RUN = ('<w:r><w:rPr><w:rFonts w:ascii="Calibri" w:hAnsi="Calibri" w:cs="Calibri"/><w:color w:val="1F1F1F"/>'
       '<w:sz w:val="22"/><w:szCs w:val="22"/><w:lang w:val="en-GB"/></w:rPr><w:t xml:space="preserve">{} </w:t></w:r>')


def write_docx(path: Path, megabytes: float, *, seed: int = 0, words_per_run: int = 4, runs_per_paragraph: int = 40) -> int:
    """Write the document; returns the size of word/document.xml in bytes."""
    rng = random.Random(seed)
    target = int(megabytes * 1024 * 1024)
    head = ('<?xml version="1.0" encoding="UTF-8" standalone="yes"?><w:document xmlns:w="http://schemas.'
            'openxmlformats.org/wordprocessingml/2006/main"><w:body>')
    tail = "</w:body></w:document>"
    size = len(head) + len(tail)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("[Content_Types].xml", CONTENT_TYPES)
        zf.writestr("_rels/.rels", RELS)
        with zf.open("word/document.xml", "w", force_zip64=True) as fh:
            fh.write(head.encode())
            while size < target:
                runs = "".join(RUN.format(" ".join(rng.choice(WORDS) for _ in range(words_per_run)))
                               for _ in range(runs_per_paragraph))
                para = f"<w:p><w:pPr><w:spacing w:after=\"160\"/></w:pPr>{runs}</w:p>".encode()
                fh.write(para)
                size += len(para)
            fh.write(tail.encode())
    return size


def ingest_child(docs: Path, index_dir: Path, splitter: str) -> dict:
    """`ragcli ingest` in a child process: exit code, seconds, peak RSS of the child (MB), the report."""
    import json
    import os
    import resource
    import subprocess
    import sys
    import tempfile
    import time

    # The peak RSS is taken by a wrapper process of the ingest alone: this process's own RUSAGE_CHILDREN
    # would include every child it ever waited for (a test suite's other subprocesses).
    wrapper = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
               "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
               "sys.exit(rc)")
    with tempfile.TemporaryDirectory() as scratch:
        rss_file = os.path.join(scratch, "maxrss")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", wrapper, rss_file, sys.executable, "-m", "ragcli", "ingest",
                               str(docs), "--json", "--index-dir", str(index_dir), "--splitter", splitter],
                              capture_output=True, text=True, env=dict(os.environ))
        seconds = time.perf_counter() - started
        try:
            peak_kb = int(open(rss_file).read())
        except (OSError, ValueError):
            peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = None
    return {"rc": done.returncode, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_kb / 1024),
            "stderr": done.stderr[-2000:], "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--mb", type=float, default=40)
    parser.add_argument("--ingest", action="store_true")
    parser.add_argument("--index-dir", type=Path, default=Path("big-docx-index"))
    parser.add_argument("--splitter", default="sentence")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    size = write_docx(args.out, args.mb)
    print(f"{args.out}: word/document.xml {size / 1e6:.1f} MB, file {args.out.stat().st_size / 1e6:.1f} MB")
    if args.ingest:
        result = ingest_child(args.out.parent, args.index_dir, args.splitter)
        report = result.pop("report")
        print({k: v for k, v in result.items() if k != "stderr"})
        if report:
            print({k: report[k] for k in ("chunks_total", "summary", "seconds")})
            print([f for f in report["files"] if f["status"] == "failed"])
        else:
            print(result["stderr"])


if __name__ == "__main__":
    main()
