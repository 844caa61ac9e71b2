"""Build a held-out Markdown corpus with one question a page from documentation already on this machine.

Sources (whatever exists): the long descriptions in the METADATA of installed Python packages (the
package's README), the Node.js API docs and the npm command docs under /usr. Each page becomes one
Markdown file; its question is built from its title only ("What is <title> and what is it used for?"),
so a page's body never leaks into its question. Writes DEST/docs/*.md and DEST/qa.jsonl (bench's QA format);
with --names, DEST/qa-names.jsonl; with --identifiers, DEST/qa-identifiers.jsonl, which asks for the page
by a code name found in that page alone ("Which page documents `loop.create_connection`?"); pages without one
get no question.

    python scripts/heldout_corpus.py /tmp/heldout [--site-packages DIR] [--limit 400] [--names | --identifiers]
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
# code names: --long-flags, dotted.names and plain words (kept only if they hold "_" or a camelCase bump)
_IDENT = re.compile(r"(?<![\w./-])(--[a-z][a-z0-9-]*[a-z0-9]|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+|[A-Za-z_]\w*)"
                    r"(?![\w/-]|\.\w)")
_NOISE = re.compile(r"\S+://\S+|\S+@\S+")  # URLs and e-mail addresses hold dotted names that are not code


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


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _identifiers(text: str) -> list[str]:
    """Identifier-like tokens of at least 6 characters, in order of first occurrence after the title."""
    heading = re.search(r"^#\s+.+$", text, re.M)
    body = _NOISE.sub(" ", text[heading.end() if heading else 0:])
    found = dict.fromkeys(t for t in _IDENT.findall(body) if len(t) >= 6 and (
        t.startswith("--") or "." in t or "_" in t.strip("_") or re.search(r"[a-z][A-Z]", t)))
    return list(found)


def unique_identifiers(corpus: list[tuple[str, str]]) -> dict[str, str]:
    """File name -> the first identifier of its page found (case-blind) in no other page, skipping ones that
    contain the page's own name (the file name without its source prefix)."""
    lowered = [text.lower() for _, text in corpus]
    out = {}
    for n, (name, text) in enumerate(corpus):
        own = _norm(name.split("-", 1)[-1].removesuffix(".md"))
        for token in _identifiers(text):
            if len(own) >= 4 and own in _norm(token):
                continue
            if not any(token.lower() in other for m, other in enumerate(lowered) if m != n):
                out[name] = token
                break
    return out


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
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--names", action="store_true",
                      help="ask by the page's short name only (\"What is aiohttp?\"): questions a small dense model finds hard")
    mode.add_argument("--identifiers", action="store_true",
                      help="ask by a code name (snake_case, camelCase, dotted.name, --flag) that occurs in that page "
                           "only (\"Which page documents `TOKEN`?\"); pages without one get no question")
    args = ap.parse_args(argv)
    docs = args.dest / "docs"
    docs.mkdir(parents=True, exist_ok=True)
    corpus: dict[str, tuple[str, str]] = {}
    for name, title, text in pages(args.site_packages, args.names)[: args.limit]:
        corpus.setdefault(name, (title, text[:MAX_CHARS]))
    tokens = unique_identifiers([(name, text) for name, (_, text) in corpus.items()]) if args.identifiers else {}
    rows = []
    for name, (title, text) in corpus.items():
        (docs / name).write_text(text, encoding="utf-8")
        if args.identifiers:
            if name not in tokens:
                continue
            question = f"Which page documents `{tokens[name]}`?"
        else:
            question = f"What is {title.rstrip('.')}?" if args.names else \
                f"What is {title.rstrip('.')} and what is it used for?"
        rows.append({"id": f"h{len(rows) + 1}", "question": question,
                     "answers": [title], "sources": [name]})
    qa_name = "qa-names.jsonl" if args.names else "qa-identifiers.jsonl" if args.identifiers else "qa.jsonl"
    with (args.dest / qa_name).open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(corpus)} pages and {len(rows)} questions in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
