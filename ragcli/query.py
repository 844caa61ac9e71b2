"""`query`: retrieve chunks and answer a question with them, without them, or both.

Both answers come from the same generator with the same greedy decoding, so the comparison is fair.
The prompt puts the best-ranked chunks first and stops before the generator's input limit; chunks that
did not fit are reported, never silently dropped. Retrieved passages are framed as quoted material the
model must not take instructions from, and the sources are always returned with the answer.

Scores: `dense` is the cosine similarity of question and chunk (FAISS inner product over normalised
vectors; Databricks scores are converted to the same scale); `bm25` is the raw BM25 score; `hybrid` is
the fused score (reciprocal rank fusion, or the weighted sum of per-query min-max normalised scores).

Prompts depend on the generator (`ragcli.prompts`): seq2seq models get one instruction text ending in
`Answer:`; chat models a system message with the rules and a user message with the passages and the
question. Each answer says whether it was `cut` (it ended at max_new_tokens, or was stopped, before the
model finished) and how many `tokens` it has; the result names the prompt template used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ragcli import prompts
from ragcli.errors import RagcliError
from ragcli.types import Hit

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.models import Completion, Generator
    from ragcli.retrieval import Retriever

CONTEXT_PROMPT = prompts.SEQ2SEQ_CONTEXT  # the seq2seq template's texts
BARE_PROMPT = prompts.SEQ2SEQ_BARE
NO_CONTEXT_ANSWER = "Not enough context: the index returned no passage for this question."


@dataclass
class Answer:
    text: str
    with_context: bool
    prompt_tokens: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    passages_used: int = 0
    passages_left_out: int = 0
    truncated: bool = False
    no_context: bool = False
    cut: bool = False  # the answer ended at max_new_tokens (or was stopped) before the model finished it
    tokens: int = 0  # generator tokens of `text`
    faithfulness: float | None = None  # entailment of the answer by its passages, 0..1 (with a judge configured)


@dataclass
class QueryResult:
    question: str
    mode: str
    top_k: int
    target: str
    sources: list[Hit] = field(default_factory=list)
    with_context: Answer | None = None
    without_context: Answer | None = None
    timings: dict[str, float] = field(default_factory=dict)
    embed_model: str | None = None
    gen_model: str | None = None
    generation: str | None = None
    prompt_limit: int | None = None
    prompt_template: dict[str, Any] | None = None  # ragcli.prompts.prompt_template of the generator
    fusion: dict[str, Any] | None = None  # hybrid mode: the fusion applied (Retriever.fusion_info)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for s in data["sources"]:
            s["used_in_prompt"] = s["rank"] <= (self.with_context.passages_used if self.with_context else 0)
        return data


# -- prompts ---------------------------------------------------------------------------------------
@dataclass
class PromptPlan:
    prompt: prompts.Prompt
    used: int
    left_out: int
    truncated: bool
    tokens: int


def _passage(n: int, hit: Hit, text: str | None = None) -> str:
    return f"Passage {n} (from {hit.file}):\n{text if text is not None else hit.text}"


def bare_prompt(question: str, generator: Generator | None = None) -> prompts.Prompt:
    """The prompt without passages, in the template of `generator` (None: the seq2seq one)."""
    return prompts.bare_prompt(prompts.template_for(generator), question)


def check_question(question: str, generator: Generator) -> None:
    if not question.strip():
        raise RagcliError("The question is empty. Pass the question as the argument, e.g. ragcli query \"What is X?\"")
    tokens = generator.count_tokens(bare_prompt(question, generator))
    if tokens > generator.max_input_tokens:
        raise RagcliError(
            f"The question is {tokens} tokens long with the prompt; the generator {generator.model_id} reads at "
            f"most {generator.max_input_tokens}. Shorten the question."
        )


def build_prompt(question: str, hits: list[Hit], generator: Generator) -> PromptPlan:
    """The context prompt, in the generator's template, with as many passages, best first, as fit the
    generator's input limit."""
    template = prompts.template_for(generator)

    def render(parts: list[str]) -> prompts.Prompt:
        return prompts.context_prompt(template, "\n\n".join(parts), question)

    limit = generator.max_input_tokens
    passages: list[str] = []
    truncated = False
    for n, hit in enumerate(hits, 1):
        if generator.count_tokens(render([*passages, _passage(n, hit)])) <= limit:
            passages.append(_passage(n, hit))
            continue
        if not passages:
            # Not even the best passage fits whole: keep as much of it as fits, and say so.
            room = limit - generator.count_tokens(render([_passage(n, hit, "")])) - 2
            if room > 8:
                cut = generator.truncate(hit.text, room)
                while room > 8 and generator.count_tokens(render([_passage(n, hit, cut)])) > limit:
                    room -= 8
                    cut = generator.truncate(hit.text, room)
                if room > 8:
                    passages.append(_passage(n, hit, cut))
                    truncated = True
        break
    prompt = render(passages)
    return PromptPlan(prompt=prompt, used=len(passages), left_out=len(hits) - len(passages), truncated=truncated,
                      tokens=generator.count_tokens(prompt))


# -- answers ---------------------------------------------------------------------------------------
def answer(
    question: str,
    settings: Settings,
    *,
    context: bool = True,
    bare: bool = False,
    retriever: Retriever | None = None,
    generator: Generator | None = None,
    on_token: Callable[[str, str], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> QueryResult:
    """Answer `question` with retrieved context (`context`), without it (`bare`), or both.

    With `on_token`, answers are streamed: `on_token(which, piece)` is called with each text piece as it
    is generated, `which` being "with_context" or "without_context"; the result is the same. An exception
    raised by `on_token` stops the generation and propagates. `stop`, if given, is asked after every
    token; once it returns True the answers end there (for a caller's deadline)."""
    from ragcli.models import load_generator

    if not (context or bare):
        raise ValueError("ask for at least one of context and bare")
    timings: dict[str, float] = {}
    result = QueryResult(question=question, mode=settings.mode, top_k=settings.top_k, target=settings.target,
                         gen_model=settings.gen_model, embed_model=settings.embed_model if context else None)
    t = time.perf_counter()
    generator = generator or load_generator(settings)
    timings["load_generator"] = time.perf_counter() - t
    check_question(question, generator)
    result.prompt_limit = generator.max_input_tokens
    result.prompt_template = prompts.prompt_template(generator)
    if context:
        t = time.perf_counter()
        if retriever is None:
            from ragcli.retrieval import open_retriever

            retriever = open_retriever(settings)
        timings["load_index"] = time.perf_counter() - t
        result.generation = retriever.info.name
        if settings.mode == "hybrid":
            result.fusion = retriever.fusion_info(settings.fusion, settings.hybrid_alpha)
        t = time.perf_counter()
        hits = retriever.search(question, settings.top_k, settings.mode, fusion=settings.fusion,
                                alpha=settings.hybrid_alpha, timings=timings)
        timings["retrieve"] = time.perf_counter() - t
        result.sources = hits
        if not hits:
            result.with_context = Answer(text=NO_CONTEXT_ANSWER, with_context=True, no_context=True)
        else:
            plan = build_prompt(question, hits, generator)
            t = time.perf_counter()
            out = _generate(generator, plan.prompt, settings.max_new_tokens, on_token, stop, "with_context")
            seconds = time.perf_counter() - t
            timings["generate_context"] = seconds
            result.with_context = Answer(text=out.text, with_context=True, prompt_tokens=out.prompt_tokens,
                                         new_tokens=out.new_tokens, seconds=round(seconds, 4),
                                         passages_used=plan.used, passages_left_out=plan.left_out,
                                         truncated=plan.truncated, cut=out.cut, tokens=out.tokens)
    if bare:
        t = time.perf_counter()
        out = _generate(generator, bare_prompt(question, generator), settings.max_new_tokens, on_token, stop,
                        "without_context")
        seconds = time.perf_counter() - t
        timings["generate_bare"] = seconds
        result.without_context = Answer(text=out.text, with_context=False, prompt_tokens=out.prompt_tokens,
                                        new_tokens=out.new_tokens, seconds=round(seconds, 4), cut=out.cut,
                                        tokens=out.tokens)
    if settings.faithfulness_model and result.sources:
        _score_faithfulness(result, settings, timings)
    result.timings = {k: round(v, 4) for k, v in timings.items()}
    return result


def _score_faithfulness(result: QueryResult, settings: Settings, timings: dict[str, float]) -> None:
    """Each answer's faithfulness to the passages the context prompt held (the bare answer is judged
    against the same passages, for comparison)."""
    from ragcli.judges import faithfulness, load_judge

    t = time.perf_counter()
    judge = load_judge(settings)
    used = result.with_context.passages_used if result.with_context is not None else 0
    passages = [h.text for h in result.sources[: used or len(result.sources)]]
    for a in (result.with_context, result.without_context):
        if a is not None and not a.no_context:
            a.faithfulness = faithfulness(a.text, passages, judge)
    timings["faithfulness"] = time.perf_counter() - t


def _generate(generator: Generator, prompt: prompts.Prompt, max_new_tokens: int, on_token: Callable[[str, str], None] | None,
              stop: Callable[[], bool] | None, which: str) -> Completion:
    if on_token is None:
        return generator.generate(prompt, max_new_tokens, stop=stop)
    with generator.stream(prompt, max_new_tokens) as stream:
        for piece in stream:
            on_token(which, piece)
            if stop is not None and stop():
                break
    assert stream.completion is not None  # set once the stream is exhausted or closed
    return stream.completion
