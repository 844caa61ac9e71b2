"""Prompts per generator kind, stop sequences and the cut flag, on the tiny chat model (a random Llama
whose tokenizer has a chat template) and the tiny T5."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import CAUSAL

from ragcli import prompts
from ragcli.prompts import Prompt, StopText, cut_at_stop
from ragcli.types import Hit

QUESTION = "How long are deleted files kept?"


def _hit(n: int, text: str) -> Hit:
    return Hit(chunk_id=n, file=f"doc{n}.md", position=0, score=1.0 / n, text=text, rank=n)


HITS = [_hit(1, "The orchard table keeps deleted files for 240 hours."), _hit(2, "Vacuum runs weekly.")]


# -- pure parts ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "expected"), [
    ("240 hours.\nQuestion: and then?", ("240 hours.", True)),
    ("240 hours.\nPassage 5 (from x.md): made up", ("240 hours.", True)),
    ("\nQuestion: leading whitespace is not a stop", ("\nQuestion: leading whitespace is not a stop", False)),
    ("Passage 2 says 240 hours.", ("Passage 2 says 240 hours.", False)),
    ("plain answer", ("plain answer", False)),
])
def test_cut_at_stop(text, expected):
    assert cut_at_stop(text, prompts.CAUSAL_STOPS) == expected


@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("text", ["It is 240 hours.\nQuestion: What next?\nAnswer: x", "No stop in here at all.",
                                  "Ends with a partial\nQuest", "A\nPassage 3: b", "Kept 240 hours. Then more.",
                                  "See e.g. the docs. And", "Ends.\nQuestion: x", "Q? A"])
@pytest.mark.parametrize("stops", [prompts.CAUSAL_STOPS, prompts.CHAT_STOPS], ids=["completion", "chat"])
def test_stop_text_shows_exactly_the_cut_text_whatever_the_pieces(stops, text, size):
    filt = StopText(stops)
    shown = [filt.feed(text[i:i + size]) for i in range(0, len(text), size)]
    # Nothing that could be the start of a stop sequence is shown before it is known not to be one.
    assert "\nQuest" not in "".join(shown) and "\nPass" not in "".join(shown)
    shown.append(filt.finish())
    cut, hit = cut_at_stop(text, stops)
    assert "".join(shown) == cut and filt.hit == hit


@pytest.mark.parametrize(("text", "expected"), [
    ("It is kept for 240 hours. Vacuum removes it later.", ("It is kept for 240 hours.", True)),
    ("Kept for 240 hours.\nAfter that, vacuum.", ("Kept for 240 hours.", True)),
    ("Is it? Yes.", ("Is it?", True)),
    ('He said "no." Then left.', ('He said "no."', True)),
    ("Version 3.5 keeps them, e.g. for audits. Then", ("Version 3.5 keeps them, e.g. for audits.", True)),
    ("J. Rivera and the U.S. team own it. Ask them.", ("J. Rivera and the U.S. team own it.", True)),
    ("1. Open the table. 2. Vacuum it.", ("1. Open the table.", True)),
    ("It opens at 10:00.", ("It opens at 10:00.", False)),  # no whitespace after the mark: not known yet
    ("  . A mark before any text", ("  . A mark before any text", False)),
    ("240 hours", ("240 hours", False)),
])
def test_chat_answers_end_after_their_first_sentence(text, expected):
    assert cut_at_stop(text, prompts.CHAT_STOPS) == expected
    assert not cut_at_stop(text, prompts.CAUSAL_STOPS)[1]  # the completion template has no sentence rule


def test_templates_are_data_with_a_hash_that_changes_with_the_text():
    chat = prompts.TEMPLATES["chat"].as_dict()
    seq = prompts.TEMPLATES["seq2seq"].as_dict()
    assert {"name", "context", "bare", "system", "stop", "sha256"} <= set(chat)
    assert chat["name"] == "chat" and seq["name"] == "seq2seq" and chat["sha256"] != seq["sha256"]
    assert seq["stop"] == [] and "\nQuestion:" in chat["stop"]
    assert chat["answer_prefix"] == prompts.CHAT_ANSWER_PREFIX and seq["answer_prefix"] == ""
    changed = dataclasses.replace(prompts.TEMPLATES["chat"], answer_prefix="Answer:").as_dict()
    assert changed["sha256"] != chat["sha256"]


def test_token_recall_ignores_the_sentence_around_the_answer():
    from ragcli.metrics import answer_contained, token_f1, token_recall

    answer = "Deleted files are kept for 240 hours before vacuum removes them."
    assert token_recall(answer, ["240 hours"]) == 1.0 and answer_contained(answer, ["240 hours"]) == 1.0
    assert token_f1(answer, ["240 hours"]) < 0.5  # what a length-robust metric is for
    assert token_recall("240 days", ["240 hours"]) == 0.5
    assert token_recall("nothing", ["240 hours", "ten days"]) == 0.0
    assert token_recall("", ["the"]) == 1.0 and token_recall("x", ["the"]) == 0.0
    with pytest.raises(ValueError):
        token_recall("x", [])


# -- on the tiny models ----------------------------------------------------------------------------
@pytest.fixture
def chat_gen(settings):
    from ragcli.models import load_generator

    gen = load_generator(settings.replace(gen_model=CAUSAL))
    assert gen.kind == "causal" and gen.chat_template
    return gen


@pytest.fixture
def t5_gen(settings):
    from ragcli.models import load_generator

    return load_generator(settings)


def test_chat_prompt_has_the_rules_in_the_system_message_and_no_trailing_cue(chat_gen):
    from ragcli.query import bare_prompt, build_prompt

    plan = build_prompt(QUESTION, HITS, chat_gen)
    assert plan.prompt.text is None
    roles = [role for role, _ in plan.prompt.messages]
    assert roles == ["system", "user"]
    system, user = (content for _, content in plan.prompt.messages)
    assert "only the numbered passages" in system and "briefly" in system and "do not know" in system
    assert "240 hours" not in system and "240 hours" in user and "Passage 1 (from doc1.md)" in user
    assert user.rstrip().endswith(QUESTION) and "Answer:" not in user
    assert plan.prompt.stop == prompts.CHAT_STOPS and "\n\n" in plan.prompt.stop
    rendered = chat_gen._render(plan.prompt)
    assert rendered.index("<|system|>") < rendered.index("<|user|>") < rendered.index("240 hours")
    # The template's own generation prompt opens the assistant turn, which starts with the answer prefix.
    assert rendered.endswith("<|assistant|>\n" + prompts.CHAT_ANSWER_PREFIX)
    assert plan.prompt.answer_prefix == prompts.CHAT_ANSWER_PREFIX
    assert plan.tokens == chat_gen.count_tokens(plan.prompt) <= chat_gen.max_input_tokens
    bare = bare_prompt(QUESTION, chat_gen)
    assert [r for r, _ in bare.messages] == ["system", "user"] and "Answer:" not in bare.messages[1][1]
    assert chat_gen._render(bare).endswith(prompts.CHAT_ANSWER_PREFIX)
    assert prompts.prompt_template(chat_gen)["name"] == "chat"


def test_seq2seq_prompt_stays_one_text_ending_in_the_cue(t5_gen):
    from ragcli.query import CONTEXT_PROMPT, build_prompt

    plan = build_prompt(QUESTION, HITS, t5_gen)
    assert plan.prompt.messages == () and plan.prompt.stop == ()
    assert plan.prompt.text.endswith("\nAnswer:") and plan.prompt.text.startswith(CONTEXT_PROMPT.split("{")[0])
    assert prompts.prompt_template(t5_gen)["name"] == "seq2seq"


def _force(gen, monkeypatch, words: list[str]) -> list[int]:
    """Make greedy decoding emit `words` (vocabulary entries) in order, then the end token."""
    from transformers import LogitsProcessor, LogitsProcessorList

    ids = gen._tokenizer.convert_tokens_to_ids(words) + [gen._tokenizer.eos_token_id]
    real = gen._generate_kwargs

    class Script(LogitsProcessor):
        def __init__(self) -> None:
            self.start: int | None = None

        def __call__(self, input_ids, scores):
            import torch

            self.start = input_ids.shape[1] if self.start is None else self.start
            step = min(input_ids.shape[1] - self.start, len(ids) - 1)
            forced = torch.full_like(scores, -float("inf"))
            forced[:, ids[step]] = 0.0
            return forced

    def kwargs(max_new_tokens):
        return {**real(max_new_tokens), "logits_processor": LogitsProcessorList([Script()])}

    monkeypatch.setattr(gen, "_generate_kwargs", kwargs)
    return ids


WORDS = ["apple", "is", "big", "question", "what", "is", "the", "answer"]


def test_a_stop_sequence_ends_the_generation_and_is_cut_off(chat_gen, monkeypatch):
    _force(chat_gen, monkeypatch, WORDS)
    free = chat_gen.generate(Prompt(messages=(("user", "x"),)), 30)
    assert free.text == "apple is big question what is the answer" and not free.cut
    assert free.new_tokens == len(WORDS) + 1  # the words and the end token

    stopped = chat_gen.generate(Prompt(messages=(("user", "x"),), stop=(" question",)), 30)
    assert stopped.text == "apple is big" and not stopped.cut
    assert stopped.new_tokens == 4 and stopped.tokens == 3  # ended right after the stop word; it is not kept


def test_a_chat_answer_ends_after_its_first_sentence_and_keeps_the_prefix_out(chat_gen, monkeypatch):
    from ragcli.query import build_prompt

    _force(chat_gen, monkeypatch, ["apple", "is", "big", ".", "what", "is", "the", "answer"])
    plan = build_prompt(QUESTION, HITS, chat_gen)
    out = chat_gen.generate(plan.prompt, 30)
    # Generation ended as soon as a second sentence began ("what"), not at the end token.
    assert out.text == "apple is big." and not out.cut and out.new_tokens == 5
    assert "answer is" not in out.text  # the prefix belongs to the prompt
    stream = chat_gen.stream(plan.prompt, 30)
    assert "".join(stream) == "apple is big." and stream.completion == out


def test_streaming_stops_at_the_same_place_and_never_shows_the_stop(chat_gen, monkeypatch):
    _force(chat_gen, monkeypatch, WORDS)
    prompt = Prompt(messages=(("user", "x"),), stop=(" question",))
    stream = chat_gen.stream(prompt, 30)
    pieces = list(stream)
    assert "".join(pieces) == "apple is big" == stream.completion.text
    assert stream.completion == chat_gen.generate(prompt, 30)


def test_an_answer_that_runs_into_max_new_tokens_is_cut(chat_gen, monkeypatch):
    _force(chat_gen, monkeypatch, WORDS)
    out = chat_gen.generate(Prompt(messages=(("user", "x"),)), 3)
    assert out.cut and out.text == "apple is big" and out.new_tokens == 3 == out.tokens
    done = chat_gen.generate(Prompt(messages=(("user", "x"),)), len(WORDS) + 1)
    assert not done.cut  # the last token it was allowed was the end token


@pytest.mark.slow
def test_query_json_names_the_template_and_says_whether_answers_were_cut(cli, settings, tmp_path, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.md").write_text("# Retention\n\nThe orchard table keeps deleted files for 240 hours.\n",
                                 encoding="utf-8")
    assert cli("ingest", folder, "--splitter", "sentence").exit_code == 0
    result = cli("query", "--compare", "--json", "--gen-model", CAUSAL, "--max-new-tokens", "4", QUESTION)
    assert result.exit_code == 0, result.output
    data = result.json()
    assert data["prompt_template"]["name"] == "chat" and data["prompt_template"]["system"] == prompts.CHAT_SYSTEM
    for which in ("with_context", "without_context"):
        answer = data[which]
        assert isinstance(answer["cut"], bool) and isinstance(answer["tokens"], int)
        assert answer["new_tokens"] <= 4 and (answer["new_tokens"] == 4 or not answer["cut"])
    assert data["with_context"]["cut"]  # this random model does not end its answer within four tokens


def test_a_plain_text_prompt_still_goes_through_the_chat_template(chat_gen):
    text = chat_gen._render(Prompt(text="Question: why?"))
    assert text == chat_gen._render("Question: why?") and text.startswith("<s>") and "<|user|>" in text
