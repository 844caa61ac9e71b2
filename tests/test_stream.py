"""`Generator.stream`: the pieces as they are generated, the same completion as `generate`."""

from __future__ import annotations

import pytest
from conftest import EMBED, EMBED_REV
from tiny_models import build_wordy_seq2seq, install_in_models_dir

pytestmark = pytest.mark.slow

PROMPTS = ("What is a delta lake", "Answer the question.\n\nQuestion: how long?\nAnswer:", "x")


@pytest.fixture(scope="module")
def wordy(tiny_models, tmp_path_factory):
    from ragcli.config import load_settings
    from ragcli.models import load_generator

    root = tmp_path_factory.mktemp("stream")
    install_in_models_dir(root / "models", EMBED, tiny_models.embed, EMBED_REV)
    install_in_models_dir(root / "models", "tiny/wordy", build_wordy_seq2seq(tiny_models.seq2seq, root / "w"),
                          "7" * 40)
    return load_generator(load_settings({"models_dir": root / "models", "gen_model": "tiny/wordy"}, env={}))


@pytest.mark.parametrize("prompt", PROMPTS)
def test_pieces_join_to_the_completion_of_generate(wordy, prompt):
    whole = wordy.generate(prompt, 30)
    stream = wordy.stream(prompt, 30)
    pieces = list(stream)
    assert len(pieces) > 3
    assert "".join(pieces) == whole.text
    assert stream.completion == whole


def test_closing_early_stops_the_generation(wordy):
    with wordy.stream("What is a delta lake", 1000) as stream:
        for n, _ in enumerate(stream):
            if n == 2:
                break
    assert stream.completion is not None
    assert 3 <= stream.completion.new_tokens < 900  # far from the 1000 it was allowed
    assert stream.completion.text.startswith("vector") or stream.completion.text.startswith("index")


def test_generate_asks_stop_after_every_token(wordy):
    asked = []

    def stop() -> bool:
        asked.append(1)
        return len(asked) >= 5

    cut = wordy.generate("What is a delta lake", 1000, stop=stop)
    assert len(asked) == 5 and cut.new_tokens <= 7  # five tokens (and the decoder's start token)
    assert wordy.generate("What is a delta lake", 30).text.startswith(cut.text)


def test_errors_in_the_generation_thread_reach_the_reader(wordy):
    with pytest.raises(ValueError) as direct:
        wordy.generate("x", 0)
    with pytest.raises(ValueError) as streamed:
        list(wordy.stream("x", 0))
    assert str(streamed.value) == str(direct.value)
