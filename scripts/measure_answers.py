"""Answers of a chat generator with and without context, under three prompts (issue 17).

- "before": how ragcli prompted every generator at first: the seq2seq text ending in `Answer:`, sent as
  one user message through the chat template, no stop sequences.
- "plain": the chat template without its answer prefix and without the first-sentence stop (system rules,
  user passages and question, the other stop sequences): ragcli's chat prompt before both were added.
- "after": `ragcli.prompts`' chat template as it is now.

Same retrieved passages, same greedy decoding, same max_new_tokens. Reports exact match, token F1,
contained, token recall, how many answers were cut, and their length in tokens.

The generator is a folder with a GGUF file (loaded here with transformers' gguf support, for this
measurement only) or a Hugging Face model folder; retrieval uses an index built by `ragcli ingest`.

    RAGCLI_EMBED_MODEL=/path/to/all-MiniLM-L6-v2 RAGCLI_INDEX_DIR=/tmp/idx \\
        python scripts/measure_answers.py sample_docs/qa.jsonl --gen DIR [--gguf FILE] [--max-new-tokens 64] \\
        [--cases plain,after]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _generator(folder: Path, gguf: str | None, max_new_tokens: int):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragcli.models import Generator

    extra = {"gguf_file": gguf} if gguf else {}
    tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **extra).eval()
    window = min(int(getattr(model.config, "max_position_embeddings", 2048) or 2048), 8192)
    return Generator(model_id=folder.name + (f"/{gguf}" if gguf else ""), revision="local", path=folder, kind="causal",
                     max_input_tokens=window - max_new_tokens, _model=model, _tokenizer=tokenizer,
                     chat_template=bool(getattr(tokenizer, "chat_template", None)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qa", type=Path)
    ap.add_argument("--gen", type=Path, required=True)
    ap.add_argument("--gguf")
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--mode", default="dense")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--limit", type=int)
    ap.add_argument("--cases", default="before,plain,after", help="which prompts, comma-separated")
    ap.add_argument("--rows", type=Path, help="write every answer here (JSON Lines)")
    ap.add_argument("--summarise", action="store_true", help="only summarise the --rows file of an earlier run")
    args = ap.parse_args(argv)
    if args.summarise:
        return _summarise([json.loads(line) for line in args.rows.read_text(encoding="utf-8").splitlines()], None)

    from ragcli import metrics as M
    from ragcli import prompts
    from ragcli.bench import load_qa
    from ragcli.config import load_settings
    from ragcli.query import bare_prompt, build_prompt
    from ragcli.retrieval import open_retriever

    settings = load_settings({})
    retriever = open_retriever(settings, mode=args.mode)
    gen = _generator(args.gen, args.gguf, args.max_new_tokens)
    import dataclasses

    old = prompts.TEMPLATES["seq2seq"]
    chat = prompts.TEMPLATES["chat"]
    plain = dataclasses.replace(chat, name="plain", answer_prefix="",
                                stop=tuple(s for s in chat.stop if s != prompts.SENTENCE_END))
    wanted = set(args.cases.split(","))
    qa = load_qa(args.qa).rows[: args.limit]
    rows = []
    sink = args.rows.open("w", encoding="utf-8") if args.rows else None
    for n, row in enumerate(qa, 1):
        hits = retriever.search(row.question, args.k, args.mode)
        plan = build_prompt(row.question, hits, gen)
        passages = plan.prompt.messages[-1][1].split("Passages:\n\n", 1)[1].rsplit("\n\nQuestion: ", 1)[0]
        cases = {
            "before/context": old.context.format(passages=passages, question=row.question),
            "before/bare": old.bare.format(question=row.question),
            "plain/context": prompts.context_prompt(plain, passages, row.question),
            "plain/bare": prompts.bare_prompt(plain, row.question),
            "after/context": plan.prompt,
            "after/bare": bare_prompt(row.question, gen),
        }
        for case, prompt in cases.items():
            if case.split("/")[0] not in wanted:
                continue
            out = gen.generate(prompt, args.max_new_tokens)
            rec = {"id": row.id, "case": case, "answer": out.text, "cut": out.cut, "tokens": out.tokens,
                   "reference": row.answers, "exact_match": M.exact_match(out.text, row.answers),
                   "token_f1": M.token_f1(out.text, row.answers),
                   "contained": M.answer_contained(out.text, row.answers),
                   "token_recall": M.token_recall(out.text, row.answers)}
            rows.append(rec)
            if sink:
                sink.write(json.dumps(rec, ensure_ascii=False) + "\n")
                sink.flush()
        print(f"{n}/{len(qa)}", file=sys.stderr, flush=True)
    return _summarise(rows, {"generator": gen.model_id, "template": prompts.prompt_template(gen)["sha256"],
                             "max_new_tokens": args.max_new_tokens})


def _summarise(rows: list[dict], about: dict | None) -> int:
    from ragcli import metrics as M

    names = ("exact_match", "token_f1", "contained", "token_recall", "tokens")
    summary: dict[str, dict[str, float]] = {}
    for case in dict.fromkeys(r["case"] for r in rows):
        mine = [r for r in rows if r["case"] == case]
        summary[case] = {k: round(M.mean(float(r[k]) for r in mine), 4) for k in names}
        summary[case]["cut"] = sum(bool(r["cut"]) for r in mine)
        summary[case]["answers"] = len(mine)
    # Which metric separates with-context from without-context answers best (after the change)?
    gap = {k: round(summary["after/context"][k] - summary["after/bare"][k], 4) for k in names[:4]} \
        if {"after/context", "after/bare"} <= set(summary) else {}
    print(json.dumps({**(about or {}), "summary": summary, "context_minus_bare_after": gap}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
