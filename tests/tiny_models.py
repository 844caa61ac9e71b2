"""Tiny random models for tests: built from configs, saved in Hugging Face layout, no network.

`build_tiny_models(dest)` writes three model folders that load through the same public APIs ragcli
uses for real models (AutoConfig/AutoTokenizer/AutoModel*, SentenceTransformer, llama-index's
HuggingFaceEmbedding):

* ``embed``   - a BERT encoder (hidden 32) in sentence-transformers layout (mean pooling, 32-dim).
* ``seq2seq`` - a T5 encoder-decoder (d_model 32).
* ``causal``  - a Llama decoder-only LM (hidden 32) with a Jinja chat template.

Weights are random (``torch.manual_seed``), so outputs are meaningless but deterministic. All three
tokenizers are WordPiece over a hand-written vocabulary (~2,100 pieces): single characters and their
``##`` continuations guarantee that any English text tokenizes (unknown words fall back to letter
pairs and letters; only non-Latin scripts and emoji become the unknown token), and a few hundred
whole words and common endings make token counts roughly one per word. Only ``.safetensors``
weights are written; the whole build takes about 2 s after imports and about 1.3 MB on disk.

Pitfalls this works around (transformers 5, sentence-transformers 6):

* The seq2seq and causal tokenizers are saved as ``TokenizersBackend`` (what ``PreTrainedTokenizerFast``
  is now), not ``T5Tokenizer``/``LlamaTokenizer``: in transformers 5 those classes rebuild their own
  tokenizers model from the vocab: T5Tokenizer fails ("TypeError: 'dict' object is not an instance of
  'Sequence'") and LlamaTokenizer silently rebuilds a merge-less BPE that splits text into letters.
* Their ``model_input_names`` is pinned to ``["input_ids", "attention_mask"]`` in tokenizer_config.json.
  ``generate()`` of T5 and Llama raises ValueError ("model_kwargs are not used by the model:
  ['token_type_ids']") when given ``token_type_ids``, which BERT-style tokenizers return.
* ``BertTokenizerFast`` is an alias of ``BertTokenizer`` (tokenizers-backed) and takes ``vocab=`` as a
  dict; it saves only tokenizer.json (no vocab.txt).

`install_in_models_dir(models_dir, repo_id, src)` copies a folder into the Hub cache layout and
records it in ragcli's lock file, as if ``ragcli download-model`` had fetched it.
"""

from __future__ import annotations

import json
import shutil
import string
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TinyModels", "build_tiny_models", "build_wordy_seq2seq", "install_in_models_dir", "DEFAULT_REVISION"]

DEFAULT_REVISION = "0" * 40
SEED = 1234

EMBED_DIM = 32
EMBED_MAX_SEQ = 128
SEQ2SEQ_MAX_LEN = 512
CAUSAL_MAX_LEN = 256

# Whole words, so common text costs about one token per word (the rest falls back to pieces).
_WORDS = """
the of and to in is was for on that with as by at from it be are this an or which not have has
had were but their they its been one all can more also there when who will would into than other
some what so if about up out only new time may use used using first two after over most such
these then them many any how each where between both much well very just like make made because
through while should could does do did being same under before very without within per via
a i we you he she his her our your my me us him no yes any every all each few less least
data index indexes indexed indexing vector vectors embedding embeddings embed model models
search query queries retrieve retrieval retriever rank ranking rerank score scores scoring
document documents doc docs text texts chunk chunks chunking split splitter token tokens
tokenizer tokenize sentence sentences word words paragraph page pages file files folder path
language large small tiny local remote server client network offline online download cache
answer answers question questions context prompt prompts generate generation generator
output input inputs outputs result results value values key keys name names number numbers
similar similarity distance cosine dot product nearest neighbor neighbors dense sparse hybrid
bm25 faiss llama transformer transformers bert t5 gpt encoder decoder attention layer layers
hidden size dimension dimensions length max min mean average pooling normalize normalized
train training trained test tests testing eval evaluation bench benchmark metric metrics recall
precision accuracy latency memory speed fast slow cpu gpu batch batches step steps
python code function functions class method methods module modules package library command
line lines config configuration setting settings option options default error errors warning
read write load save store stored storage database table tables record records list lists set
source sources information knowledge system systems user users assistant chat message messages
content role format json yaml markdown html pdf docx csv report reports summary summarize
example examples sample samples simple system process processing pipeline step work works
world people year years day days way part parts place case cases point group problem fact
first last next long short high low good great big old young early late important public
able right left own other different following general national local social open close
city country state government company market business service services health school
water history family life home room book books article articles paper research study
science computer software hardware internet web website online version versions update
create created change changes run runs running start stop end begin user support help
find found show shows give given take takes taken know known think see seen get got go goes
call called need needs want try include includes including provide provides based
example called however because during since until although though whether either neither
apple banana cat dog house car tree sun moon river mountain ocean music art food
""".split()

# Common English endings (continuation pieces); all letter pairs are added separately.
_SUFFIXES = """
ing ers est tion tions sion ment ments ness able ible ity ive ize ise ous ful less ism ist ical ary ory ance
ence ant ent ies ally ated ation ations ings ship
""".split()

# Latin-1 and common typographic characters that survive accent stripping (so they do not become UNK).
_EXTRA_CHARS = "°±²³µ·¹º¼½¾×÷ßæðøþœ€£¥©®™§¶•…–—‘’“”«»¿¡"


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    pieces: list[str] = list(specials)
    chars = string.ascii_lowercase + string.digits + string.punctuation + _EXTRA_CHARS
    pieces += list(chars)
    pieces += ["##" + c for c in chars]
    pieces += ["##" + s for s in _SUFFIXES]
    # Every letter pair, word-initial and continuing: unknown words cost about one token per two letters.
    pairs = [a + b for a in string.ascii_lowercase for b in string.ascii_lowercase]
    pieces += pairs
    pieces += ["##" + p for p in pairs]
    pieces += _WORDS
    vocab: dict[str, int] = {}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    return vocab


def _raw_wordpiece(vocab: dict[str, int], unk: str):
    """A lowercasing, accent-stripping WordPiece tokenizer (tokenizers library) over `vocab`."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece

    tok = Tokenizer(WordPiece(vocab, unk_token=unk, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=True, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


@dataclass(frozen=True)
class TinyModels:
    embed: Path  # sentence-transformers layout encoder (BERT)
    seq2seq: Path  # T5 encoder-decoder
    causal: Path  # Llama decoder-only LM with a chat template


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _build_embed(dest: Path) -> None:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = _wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tokenizer = BertTokenizerFast(
        vocab=vocab, do_lower_case=True, strip_accents=True, model_max_length=EMBED_MAX_SEQ
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=EMBED_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        type_vocab_size=2,
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(SEED)
    model = BertModel(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)

    # sentence-transformers layout (the classic one most Hub embedding models use).
    _write_json(
        dest / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    _write_json(dest / "sentence_bert_config.json", {"max_seq_length": EMBED_MAX_SEQ, "do_lower_case": False})
    _write_json(
        dest / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": EMBED_DIM,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
            "pooling_mode_weightedmean_tokens": False,
            "pooling_mode_lasttoken": False,
            "include_prompt": True,
        },
    )
    # No 2_Normalize folder: Normalize has no files, and Hub repos (git) hold no empty folders.
    _write_json(
        dest / "config_sentence_transformers.json",
        {
            "__version__": {"sentence_transformers": "3.0.0", "transformers": "4.40.0", "pytorch": "2.3.0"},
            "prompts": {},
            "default_prompt_name": None,
            "similarity_fn_name": "cosine",
        },
    )


def _build_seq2seq(dest: Path) -> None:
    import torch
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    vocab = _wordpiece_vocab(["<pad>", "</s>", "<unk>"])
    raw = _raw_wordpiece(vocab, "<unk>")
    raw.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=SEQ2SEQ_MAX_LEN,
        padding_side="right",
        # Pinned: T5 generate() raises ValueError when given token_type_ids.
        model_input_names=["input_ids", "attention_mask"],
    )
    config = T5Config(
        vocab_size=len(vocab),
        d_model=32,
        d_ff=64,
        d_kv=16,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="relu",
        tie_word_embeddings=True,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
    )
    torch.manual_seed(SEED)
    model = T5ForConditionalGeneration(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _build_causal(dest: Path) -> None:
    import torch
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    roles = ["<|system|>", "<|user|>", "<|assistant|>"]
    vocab = _wordpiece_vocab(["<unk>", "<s>", "</s>", "<pad>", *roles])
    raw = _raw_wordpiece(vocab, "<unk>")
    raw.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=roles,
        model_max_length=CAUSAL_MAX_LEN,
        padding_side="left",
        model_input_names=["input_ids", "attention_mask"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=CAUSAL_MAX_LEN,
        tie_word_embeddings=True,
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=vocab["<pad>"],
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)


def build_tiny_models(dest: Path) -> TinyModels:
    """Write the three tiny models under `dest` (created if needed) and return their folders."""
    dest = Path(dest)
    from transformers.utils import logging as hf_logging

    models = TinyModels(embed=dest / "tiny-embed", seq2seq=dest / "tiny-t5", causal=dest / "tiny-llama")
    for folder in (models.embed, models.seq2seq, models.causal):
        folder.mkdir(parents=True, exist_ok=True)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bars in test output
    try:
        _build_embed(models.embed)
        _build_seq2seq(models.seq2seq)
        _build_causal(models.causal)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return models


def build_wordy_seq2seq(seq2seq: Path, dest: Path, words: tuple[str, str] = ("index", "vector")) -> Path:
    """A copy of the tiny T5 whose output head can only pick between two whole words, so its answers are
    words separated by spaces ("vector index index …"). The random T5 answers in one run of word pieces,
    which a text streamer (it emits at spaces) delivers as a single piece; this one streams word by word."""
    import torch
    from transformers import AutoTokenizer, T5ForConditionalGeneration
    from transformers.utils import logging as hf_logging

    shutil.copytree(seq2seq, dest)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        ids = AutoTokenizer.from_pretrained(dest).convert_tokens_to_ids(list(words))
        model = T5ForConditionalGeneration.from_pretrained(dest).eval()
        torch.manual_seed(SEED)
        head = torch.zeros_like(model.lm_head.weight)
        direction = torch.randn(head.shape[1])
        head[ids[0]], head[ids[1]] = direction, -direction  # one of the two always outscores every other token
        model.config.tie_word_embeddings = False
        model.lm_head.weight = torch.nn.Parameter(head)
        model.save_pretrained(dest, safe_serialization=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return dest


def install_in_models_dir(
    models_dir: Path, repo_id: str, src: Path, revision: str = DEFAULT_REVISION
) -> Path:
    """Copy `src` into `models_dir` in Hub cache layout and record it, like ``ragcli download-model``.

    Returns the snapshot folder (``models--org--name/snapshots/<revision>``).
    """
    from ragcli.registry import record_model, repo_folder

    if len(revision) != 40 or any(c not in string.hexdigits for c in revision):
        raise ValueError(f"revision must be a 40-hex commit hash, got {revision!r}")
    models_dir = Path(models_dir)
    repo_dir = repo_folder(models_dir, repo_id)
    snapshot = repo_dir / "snapshots" / revision
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(src, snapshot)
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision, encoding="utf-8")
    record_model(models_dir, repo_id, revision, snapshot, requested="main")
    return snapshot
