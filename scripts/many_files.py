"""Ingest N tiny Markdown files and report files/s (issue 16, item 6): where the per-file time goes.

    RAGCLI_MODELS_DIR=... RAGCLI_EMBED_MODEL=... python scripts/many_files.py --files 2000 [--profile 25]

The embedder is loaded before the clock starts (its load time is not per-file overhead); the same
model and the same files are used for every run, so figures from one machine compare as ratios.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import tempfile
import time
from pathlib import Path

WORDS = "alpha beta gamma delta service index vector search table team night ingest job recall".split()


def write_files(folder: Path, count: int) -> None:
    for n in range(count):
        sub = folder / f"d{n // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        body = " ".join(WORDS[(n + i) % len(WORDS)] for i in range(12))
        (sub / f"note-{n:05d}.md").write_text(f"# Note {n}\n\nNote {n} says {body}. It ends here.\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions (cProfile)")
    parser.add_argument("--splitter", default="sentence")
    args = parser.parse_args()

    from ragcli.config import load_settings
    from ragcli.ingest import ingest
    from ragcli.models import load_embedder

    work = Path(tempfile.mkdtemp(prefix="many-files-"))
    try:
        docs = work / "docs"
        write_files(docs, args.files)
        settings = load_settings({"index_dir": work / "index", "splitter": args.splitter})
        embedder = load_embedder(settings)
        embedder.embed_documents(["warm up"])
        embed_seconds = [0.0]
        real_embed = embedder.embed_documents

        def timed_embed(texts, progress=None):
            t0 = time.perf_counter()
            try:
                return real_embed(texts, progress=progress)
            finally:
                embed_seconds[0] += time.perf_counter() - t0

        object.__setattr__(embedder, "embed_documents", timed_embed)
        profile = cProfile.Profile() if args.profile else None
        started = time.perf_counter()
        if profile:
            profile.enable()
        report = ingest([docs], settings, embedder=embedder)
        if profile:
            profile.disable()
        seconds = time.perf_counter() - started
        assert report.count("added") == args.files, report.summary()
        print(f"{args.files} files, {report.chunks_total} chunks, {seconds:.1f} s: {args.files / seconds:.0f} files/s "
              f"({1000 * seconds / args.files:.2f} ms per file; splitter {args.splitter}); embedding {embed_seconds[0]:.1f} s, "
              f"everything else {1000 * (seconds - embed_seconds[0]) / args.files:.2f} ms per file")
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(args.profile)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
