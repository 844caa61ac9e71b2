"""Build a held-out Markdown corpus with one question a page from documentation already on this machine.

Sources (whatever exists): the long descriptions in the METADATA of installed Python packages (the
package's README), the Node.js API docs and the npm command docs under /usr. Each page becomes one
Markdown file; its question is built from its title only ("What is <title> and what is it used for?"),
so a page's body never leaks into its question. Writes DEST/docs/*.md and DEST/qa.jsonl (bench's QA format).

    python scripts/heldout_corpus.py /tmp/heldout [--site-packages DIR] [--limit 400]
"""

from __future__ import annotations

import argparse
import email
import json
import re
import sys
from pathlib import Path

DOC_GLOBS = ("/usr/share/doc/nodejs/api/*.md", "/usr/lib/node_modules/npm/docs/content/commands/*.md")
MAX_CHARS = 6000  # keep the embedding work small: the first part of each page


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "page"


def _title(md: str) -> str | None:
    front = re.match(r"---\n(.*?)\n---\n", md, re.S)
    if front:
        m = re.search(r"^title:\s*(.+)$", front.group(1), re.M)
        if m:
            return m.group(1).strip().strip("'\"")
    m = re.search(r"^#\s+(.+)$", md, re.M)
    return m.group(1).strip() if m else None


def pages(site_packages: Path, names: bool = False) -> list[tuple[str, str, str]]:
    """(file name, title, text) of every usable page, in a stable order."""
    out = []
    for meta in sorted(site_packages.glob("*.dist-info/METADATA")):
        msg = email.message_from_bytes(meta.read_bytes())
        body = msg.get_payload()
        name, summary = msg.get("Name"), msg.get("Summary")
        if not isinstance(body, str) or len(body) < 800 or not name:
            continue
        title = f"{name}: {summary}" if summary and summary != "UNKNOWN" else name
        out.append((f"pypi-{_slug(name)}.md", name if names else title, f"# {name}\n\n{body}"))
    for pattern in DOC_GLOBS:
        root = Path(pattern).parent
        for path in sorted(root.glob(Path(pattern).name)):
            text = path.read_text(encoding="utf-8", errors="replace")
            title = _title(text)
            if title and len(text) >= 800:
                out.append((f"{root.name}-{_slug(path.stem)}.md", title, text))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dest", type=Path)
    ap.add_argument("--site-packages", type=Path, default=Path(sys.prefix) / "lib" /
                    f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages")
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--names", action="store_true",
                    help="ask by the page's short name only (\"What is aiohttp?\"): questions a small dense model finds hard")
    args = ap.parse_args(argv)
    docs = args.dest / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    rows = []
    for name, title, text in pages(args.site_packages, args.names)[: args.limit]:
        if name in seen:
            continue
        seen.add(name)
        (docs / name).write_text(text[:MAX_CHARS], encoding="utf-8")
        question = f"What is {title.rstrip('.')}?" if args.names else \
            f"What is {title.rstrip('.')} and what is it used for?"
        rows.append({"id": f"h{len(rows) + 1}", "question": question,
                     "answers": [title], "sources": [name]})
    with (args.dest / ("qa-names.jsonl" if args.names else "qa.jsonl")).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} pages and questions in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
