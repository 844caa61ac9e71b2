"""Loading the embedding model and the generator, offline, once per process.

A model setting is a Hub repo id (found in the models folder through `ragcli.registry`, without any
network call) or a local folder. Only `ragcli download-model` talks to the Hub.

- The embedder is loaded with llama-index's `HuggingFaceEmbedding` (sentence-transformers underneath),
  always from a local path, on the CPU, with normalised vectors. `Embedder` adds what ragcli needs on
  top: the dimension, the token limit, exact token counts, and counters of how many texts were embedded
  (so tests and bench can prove that unchanged files cost nothing).
- The generator is chosen from the model's config: encoder-decoder models (flan-t5) load with
  `AutoModelForSeq2SeqLM`, decoder-only ones with `AutoModelForCausalLM` (with the tokenizer's chat
  template where it has one). transformers 5 has no text2text pipeline, so `generate` is called directly,
  greedy by default, so answers are deterministic.

torch, transformers and llama_index are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import ModelLoadError, RagcliError
from ragcli.prompts import Prompt, StopText, cut_at_stop
from ragcli.registry import resolve_model

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from ragcli.config import Settings

# Query instructions published on the model cards of instruction-tuned embedders. Recorded in the index
# manifest, so a change is noticed.
_QUERY_INSTRUCTIONS = {
    "baai/bge-small-en-v1.5": "Represent this sentence for searching relevant passages: ",
    "baai/bge-base-en-v1.5": "Represent this sentence for searching relevant passages: ",
    "baai/bge-large-en-v1.5": "Represent this sentence for searching relevant passages: ",
    "baai/bge-small-en": "Represent this sentence for searching relevant passages: ",
    "baai/bge-base-en": "Represent this sentence for searching relevant passages: ",
}
_E5_PREFIXES = ("query: ", "passage: ")

_LOCK = threading.Lock()


def instructions_for(model_name: str, path: str | Path | None = None) -> tuple[str, str]:
    """(query instruction, text instruction) for a model name or repo id, read from the model's own files
    where its folder (`path`) is known: the `prompts` of its config_sentence_transformers.json first, else
    the repo id the folder was downloaded as (models folder lock file, or Hub cache folder name) looked up
    like a name. So a model given as a folder path gets the same instructions as by its repo id."""
    if path is not None:
        folder = Path(path)
        found = _configured_prompts(folder)
        if found is not None:
            return found
        model_name = _recorded_repo_id(folder) or model_name
    key = model_name.lower()
    if key in _QUERY_INSTRUCTIONS:
        return _QUERY_INSTRUCTIONS[key], ""
    if "/e5-" in key or key.startswith("e5-") or "multilingual-e5" in key:
        return _E5_PREFIXES
    return "", ""


def _configured_prompts(folder: Path) -> tuple[str, str] | None:
    """(query, text) prompts of a sentence-transformers model folder; None where it names none."""
    import json

    try:
        config = json.loads((folder / "config_sentence_transformers.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    prompts = config.get("prompts") if isinstance(config, dict) else None
    if not isinstance(prompts, dict):
        return None

    def first(*names: str) -> str:
        for name in names:
            value = prompts.get(name)
            if isinstance(value, str) and value:
                return value
        return ""

    query = first("query", "search_query", "retrieval.query")
    text = first("document", "passage", "search_document", "retrieval.passage", "corpus")
    return (query, text) if query or text else None


def _recorded_repo_id(folder: Path) -> str | None:
    """The Hub repo id a snapshot folder (`…/models--org--name/snapshots/<rev>`) was downloaded as: its
    entry in the models folder's lock file, else the cache folder's name."""
    from ragcli.registry import read_lock

    try:
        folder = folder.resolve()
    except OSError:
        return None
    if folder.parent.name != "snapshots" or not folder.parent.parent.name.startswith("models--"):
        return None
    models_dir = folder.parents[2]
    try:
        for repo_id, entry in read_lock(models_dir).items():
            if isinstance(entry, dict) and (models_dir / str(entry.get("snapshot", ""))).resolve() == folder:
                return str(repo_id)
    except (ModelLoadError, OSError, ValueError, RagcliError):
        pass
    return folder.parent.parent.name[len("models--"):].replace("--", "/", 1)


@dataclass
class Embedder:
    """A loaded embedding model. Vectors are float32, L2-normalised, shape (n, dim)."""

    model_id: str
    revision: str
    path: Path
    dim: int
    max_tokens: int
    query_instruction: str
    text_instruction: str
    batch_size: int
    _hf: Any = field(repr=False)
    _tokenizer: Any = field(repr=False)
    texts_embedded: int = 0
    calls: int = 0
    backend: str = "torch"  # "torch" (sentence-transformers) or "onnx" (ONNX Runtime, ragcli.onnx_embed)
    quantization: str = "none"  # "none", "int8" (onnx) or "bf16" (torch: run in bf16 autocast)

    def _compute(self) -> Any:
        """The context every forward pass runs in: bf16 autocast for a bf16 torch embedder (matrix
        products in bf16, normalisations and softmax in fp32), else nothing."""
        if self.backend == "torch" and self.quantization == "bf16":
            import torch

            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def in_precision(self, quantization: str) -> Embedder:
        """This torch model computing in another precision ("bf16"): the same loaded weights, counters
        of its own."""
        return dataclasses.replace(self, quantization=quantization, texts_embedded=0, calls=0)

    # -- token accounting ---------------------------------------------------------------------
    def token_ids(self, text: str) -> list[int]:
        """Token ids of `text` without special tokens (what counts against the chunk cap).

        Uses the fast `tokenizers` backend directly when there is one: the splitter counts tokens of
        many small pieces, and the transformers wrapper costs more than the tokenization itself."""
        backend = self._backend
        if backend is not None:
            return backend.encode(text, add_special_tokens=False).ids
        return list(self._tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])

    @functools.cached_property
    def _backend(self) -> Any:
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        # A private copy without truncation or padding, so counts are exact for long texts.
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.no_truncation()
        copy.no_padding()
        return copy

    def token_offsets(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids of `text` (no special tokens) and each token's (start, end) character span."""
        backend = self._backend
        if backend is not None:
            enc = backend.encode(text, add_special_tokens=False)
            return list(enc.ids), [tuple(o) for o in enc.offsets]
        enc = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]

    def with_special_tokens(self, ids: list[int]) -> tuple[list[int], int]:
        """`ids` framed as the encoder expects (CLS … SEP for BERT) and where `ids` begin in the result."""
        prefix, suffix = self._special_frame
        return [*prefix, *ids, *suffix], len(prefix)

    @functools.cached_property
    def _special_frame(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after one text (read off a probe)."""
        bare = list(self._tokenizer("a", add_special_tokens=False)["input_ids"])
        framed = list(self._tokenizer("a", add_special_tokens=True)["input_ids"])
        for lead in range(len(framed) - len(bare) + 1):
            if framed[lead : lead + len(bare)] == bare:
                return framed[:lead], framed[lead + len(bare):]
        return [], []

    def count_tokens(self, text: str) -> int:
        return len(self.token_ids(text))

    def decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))

    @property
    def chunk_token_limit(self) -> int:
        """The most tokens a chunk may have so the encoder sees all of it (room for special tokens)."""
        specials = len(self._tokenizer("", add_special_tokens=True)["input_ids"])
        return max(8, self.max_tokens - specials - self._instruction_tokens())

    def _instruction_tokens(self) -> int:
        return self.count_tokens(self.text_instruction) if self.text_instruction else 0

    # -- embedding ----------------------------------------------------------------------------
    def embed_documents(self, texts: list[str], progress: Any = None) -> np.ndarray:
        """Embed chunk texts in batches; `progress(done, total)` after each batch."""
        import numpy as np

        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            with self._compute():
                vectors = self._hf.get_text_embedding_batch(batch)
            out[start : start + len(batch)] = np.asarray(vectors, dtype=np.float32)
            self.texts_embedded += len(batch)
            if progress is not None:
                progress(start + len(batch), len(texts))
        return _normalise(out)

    def embed_query(self, text: str) -> np.ndarray:
        import numpy as np

        self.calls += 1
        self.texts_embedded += 1
        with self._compute():
            vector = np.asarray(self._hf.get_query_embedding(text), dtype=np.float32)[None, :]
        return _normalise(vector)[0]

    def token_states(self, sequences: list[list[int]]) -> list[np.ndarray]:
        """Contextual token vectors (the encoder's last hidden state) of each token id sequence, special
        tokens included, in one batch per `batch_size` sequences (for late chunking). Counted as texts
        embedded."""
        import numpy as np

        self.calls += 1
        out: list[np.ndarray] = []
        pad = self._tokenizer.pad_token_id or 0
        for start in range(0, len(sequences), self.batch_size):
            batch = sequences[start : start + self.batch_size]
            width = max(len(s) for s in batch)
            ids = np.full((len(batch), width), pad, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)] = seq
                mask[row, : len(seq)] = 1
            if self.backend == "onnx":
                hidden = self._hf.hidden_states(ids, mask)
            else:
                import torch

                with torch.inference_mode(), self._compute():
                    hidden = self._auto_model(input_ids=torch.from_numpy(ids),
                                              attention_mask=torch.from_numpy(mask)).last_hidden_state.float().numpy()
            out.extend(hidden[row, : len(seq)] for row, seq in enumerate(batch))
            self.texts_embedded += len(batch)
        return out

    @functools.cached_property
    def _auto_model(self) -> Any:
        """The transformer under the sentence-transformers model (the same weights the vectors come from)."""
        st = getattr(self._hf, "_model", None)
        try:
            return st[0].auto_model  # sentence-transformers' Transformer module
        except (TypeError, AttributeError, IndexError, KeyError):
            from transformers import AutoModel

            return AutoModel.from_pretrained(self.path, local_files_only=True, use_safetensors=True).eval()

    def raw_query_vector(self, text: str) -> Any:
        """The underlying model's query embedding with nothing of ragcli around it (no counting, no
        normalisation): bench's baseline for the cost of retrieval."""
        with self._compute():
            return self._hf.get_query_embedding(text)

    def llama_embed_model(self) -> Any:
        """This embedder as a llama-index `BaseEmbedding` (for the semantic splitter), counted like the rest."""
        return _llama_adapter(self)

    def info(self) -> dict[str, Any]:
        return {
            "model": self.model_id,
            "revision": self.revision,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "normalize": True,
            "query_instruction": self.query_instruction,
            "text_instruction": self.text_instruction,
            "backend": self.backend,
            "quantization": self.quantization,
        }


def _normalise(vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32, copy=False)


def _llama_adapter(embedder: Embedder) -> Any:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.bridge.pydantic import PrivateAttr

    class _RagcliEmbedding(BaseEmbedding):
        _owner: Any = PrivateAttr()

        def __init__(self, owner: Embedder) -> None:
            super().__init__(model_name=owner.model_id, embed_batch_size=owner.batch_size)
            self._owner = owner

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._owner.embed_documents([text])[0].tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._owner.embed_documents(list(texts)).tolist()

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._owner.embed_query(query).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

        async def _aget_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embedding(text)

    return _RagcliEmbedding(embedder)


def check_readable(folder: str | Path) -> None:
    """Open every file of a model folder once (following the snapshot's links into the blobs), so a
    file or folder the user may not read is named with the missing permission, instead of a loading
    error that advises a re-download."""
    import os

    from ragcli.errors import PermissionDeniedError

    for here, dirs, files in os.walk(folder, followlinks=True, onerror=_raise_denied):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            try:
                os.close(os.open(os.path.join(here, name), os.O_RDONLY))
            except PermissionError as exc:
                raise PermissionDeniedError.from_os_error(exc) from None
            except OSError:  # a broken link or the like: the loader names what it misses
                continue


def _raise_denied(exc: OSError) -> None:
    from ragcli.errors import PermissionDeniedError

    if isinstance(exc, PermissionError):
        raise PermissionDeniedError(exc.filename, "read", is_dir=True) from None


@functools.lru_cache(maxsize=4)
def _load_embedder(path: str, model_id: str, revision: str, batch_size: int, backend: str = "torch",
                   models_dir: str = "", onnx_file: str | None = None) -> Embedder:
    _quiet_libraries()
    if backend == "torch-bf16":  # the torch model, loaded once, computing in bf16
        return _load_embedder(path, model_id, revision, batch_size, "torch", models_dir).in_precision("bf16")
    if backend != "torch":
        return _load_onnx_embedder(path, model_id, revision, batch_size, backend, models_dir, onnx_file)
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from transformers import AutoTokenizer

    check_readable(path)
    query_instruction, text_instruction = instructions_for(model_id, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        hf = HuggingFaceEmbedding(
            model_name=path,
            device="cpu",
            normalize=True,
            embed_batch_size=batch_size,
            trust_remote_code=False,
            query_instruction=query_instruction or None,
            text_instruction=text_instruction or None,
            local_files_only=True,
        )
        probe = hf.get_text_embedding("dimension probe")
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"Cannot load the embedding model at {path}: {exc}. Re-download it with: ragcli download-model {model_id}"
        ) from exc
    max_tokens = int(hf.max_length or 512)
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < max_tokens:
        max_tokens = model_max
    return Embedder(
        model_id=model_id,
        revision=revision,
        path=Path(path),
        dim=len(probe),
        max_tokens=max_tokens,
        query_instruction=query_instruction,
        text_instruction=text_instruction,
        batch_size=batch_size,
        _hf=hf,
        _tokenizer=tokenizer,
    )


def _load_onnx_embedder(path: str, model_id: str, revision: str, batch_size: int, backend: str,
                        models_dir: str, onnx_file: str | None) -> Embedder:
    """The same model run through ONNX Runtime (ragcli.onnx_embed): same tokenizer, pooling and
    normalisation as the torch backend; `backend` "onnx" (fp32) or "onnx-int8"."""
    from ragcli.onnx_embed import backend_parts, load_onnx_encoder

    _, quantization = backend_parts(backend)
    query_instruction, text_instruction = instructions_for(model_id)
    encoder, tokenizer = load_onnx_encoder(Path(path), revision, Path(models_dir or path), quantization, batch_size,
                                           query_instruction, text_instruction,
                                           onnx_file=Path(onnx_file) if onnx_file else None)
    probe = encoder.get_text_embedding("dimension probe")
    return Embedder(
        model_id=model_id,
        revision=revision,
        path=Path(path),
        dim=len(probe),
        max_tokens=encoder.max_length,
        query_instruction=query_instruction,
        text_instruction=text_instruction,
        batch_size=batch_size,
        _hf=encoder,
        _tokenizer=tokenizer,
        backend="onnx",
        quantization=quantization,
    )


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products natively (AMX tiles or AVX512-BF16): there bf16
    autocast runs the encoder 2-3x faster than fp32; elsewhere it is emulated and slower."""
    import torch

    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except (RuntimeError, AttributeError):  # a private probe that changed: assume no
            continue
    return False


def window_precision(settings: Settings, embedder: Embedder) -> str:
    """The precision the semantic splitter's window vectors are computed in: "bf16", "int8" or "same"
    (the embedder's own); "" where no window is embedded (another splitter or vector mode).
    `RAGCLI_WINDOW_PRECISION=auto` (the default) means bf16 where the embedder is torch fp32 and the
    CPU has native bf16, the embedder's own precision otherwise."""
    if settings.splitter != "semantic" or settings.semantic_vectors != "window":
        return ""
    wanted = settings.window_precision
    if wanted == "auto":
        return "bf16" if (embedder.backend, embedder.quantization) == ("torch", "none") and native_bf16() else "same"
    if (wanted, embedder.backend, embedder.quantization) in (("bf16", "torch", "bf16"), ("int8", "onnx", "int8")):
        return "same"
    return wanted


def window_embedder_for(settings: Settings, embedder: Embedder) -> Embedder:
    """The embedder of the semantic splitter's window vectors. The windows only decide where chunks
    break, by comparing neighbours, so they may be computed in reduced precision (`window_precision`):
    bf16 autocast of the same torch model (`--embed-backend torch-bf16`), or the int8 ONNX copy of the
    model (`--embed-backend onnx-int8`, exported and cached once), each loaded once per process. The
    chunks themselves are always embedded by `embedder`."""
    precision = window_precision(settings, embedder)
    if precision not in ("bf16", "int8"):
        return embedder
    if precision == "bf16" and embedder.backend != "torch":
        from ragcli.errors import UsageError

        raise UsageError(f"RAGCLI_WINDOW_PRECISION=bf16 needs the torch embedding backend, not "
                         f"{embedder.backend}; use auto or same.")
    with _LOCK:
        return _load_embedder(str(embedder.path), embedder.model_id, embedder.revision, embedder.batch_size,
                              "torch-bf16" if precision == "bf16" else "onnx-int8", str(settings.models_dir))


def embedding_backend(settings: Settings, embedder: Embedder | None = None) -> tuple[str, str]:
    """(backend, quantization) of the embedder this run uses: the loaded `embedder`'s, else the
    configured one's ("torch"/"onnx", "none"/"int8"). Recorded in the index manifest beside the model."""
    if embedder is not None:
        return embedder.backend, embedder.quantization
    from ragcli.onnx_embed import backend_parts

    return backend_parts(settings.embed_backend)


def embedding_identity(settings: Settings, embedder: Embedder | None = None,
                       recorded: dict[str, Any] | None = None) -> tuple[str, str | None]:
    """(model id, revision) of the embedding model this run uses: the loaded `embedder`'s, else the
    configured one's, resolved in the models folder. With a `recorded` embedding record of another
    model name the revision is not resolved (None): the names differ, so it cannot matter."""
    if embedder is not None:
        return embedder.model_id, embedder.revision
    if recorded is not None and recorded.get("model") != settings.embed_model:
        return settings.embed_model, None
    return settings.embed_model, resolve_model(settings.embed_model, settings.models_dir,
                                               role="embedding model").revision


def load_embedder(settings: Settings) -> Embedder:
    """The configured embedding model, loaded once per process."""
    resolved = resolve_model(settings.embed_model, settings.models_dir, role="embedding model")
    with _LOCK:
        return _load_embedder(str(resolved.path), settings.embed_model, resolved.revision, settings.embed_batch_size,
                              settings.embed_backend, str(settings.models_dir))


@dataclass
class Completion:
    """What the generator produced for one prompt."""

    text: str
    prompt_tokens: int
    new_tokens: int
    cut: bool = False  # ended without the model's end token or a stop sequence (max_new_tokens, or stopped early)
    tokens: int = 0  # generator tokens of `text`, the answer as returned (no stop sequence, no special tokens)


@dataclass
class Generator:
    """A loaded generator. `generate` is greedy unless told otherwise, so runs are reproducible."""

    model_id: str
    revision: str
    path: Path
    kind: str  # "seq2seq" or "causal"
    max_input_tokens: int
    _model: Any = field(repr=False)
    _tokenizer: Any = field(repr=False)
    chat_template: bool = False

    def _render(self, prompt: str | Prompt) -> str:
        """The text the tokenizer sees: chat messages through the chat template (a plain text becomes one
        user message there), then the prompt's answer prefix, which opens the assistant turn; anything
        else as it is."""
        if not (self.kind == "causal" and self.chat_template):
            return prompt.flat() if isinstance(prompt, Prompt) else prompt
        if isinstance(prompt, Prompt) and prompt.messages:
            messages = prompt.chat_messages()
        else:
            messages = [{"role": "user", "content": prompt.flat() if isinstance(prompt, Prompt) else prompt}]
        text = str(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False))
        return text + (prompt.answer_prefix if isinstance(prompt, Prompt) else "")

    @property
    def _add_special_tokens(self) -> bool:
        # A rendered chat template already holds the special tokens.
        return self.kind == "seq2seq" or not self.chat_template

    def count_tokens(self, prompt: str | Prompt) -> int:
        """Tokens the model will see for `prompt` (chat template and special tokens included)."""
        enc = self._tokenizer(self._render(prompt), add_special_tokens=self._add_special_tokens, verbose=False)
        return len(enc["input_ids"])

    def _inputs(self, prompt: str | Prompt) -> dict[str, Any]:
        enc = self._tokenizer(
            self._render(prompt),
            return_tensors="pt",
            add_special_tokens=self._add_special_tokens,
            truncation=True,
            max_length=self.max_input_tokens,
            verbose=False,
        )
        # Some tokenizers return token_type_ids, which generate() rejects for these models.
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def _generate_kwargs(self, max_new_tokens: int) -> dict[str, Any]:
        pad = self._tokenizer.pad_token_id
        if pad is None:
            pad = self._tokenizer.eos_token_id
        return {"max_new_tokens": max_new_tokens, "do_sample": False, "num_beams": 1, "pad_token_id": pad}

    def _new_ids(self, inputs: dict[str, Any], sequence: Any) -> Any:
        return sequence if self.kind == "seq2seq" else sequence[int(inputs["input_ids"].shape[1]):]

    def _decode(self, ids: Any) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True))

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        config = getattr(self._model, "generation_config", None)
        for value in (getattr(config, "eos_token_id", None), self._tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(v for v in value if isinstance(v, int))
        return ids

    def _completion(self, inputs: dict[str, Any], output: Any, stops: tuple[str, ...] = ()) -> Completion:
        prompt_len = int(inputs["input_ids"].shape[1])
        ids = self._new_ids(inputs, output[0])
        text, hit = cut_at_stop(self._decode(ids), stops)
        text = text.strip()
        ended = len(ids) > 0 and int(ids[-1]) in self._eos_ids()
        tokens = len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]) if text else 0
        return Completion(text=text, prompt_tokens=prompt_len, new_tokens=int(len(ids)), cut=not (ended or hit),
                          tokens=tokens)

    def _stop_criteria(self, inputs: dict[str, Any], stops: tuple[str, ...],
                       stop: Callable[[], bool] | None) -> Any:
        from transformers import StoppingCriteriaList

        criteria = StoppingCriteriaList()
        if stop is not None:
            criteria.append(_stopping(stop))
        if stops:
            criteria.append(_stop_sequences(self, inputs, stops))
        return criteria

    def generate(self, prompt: str | Prompt, max_new_tokens: int = 64, *,
                 stop: Callable[[], bool] | None = None) -> Completion:
        """Greedy answer to `prompt`. `stop`, if given, is asked after every token; when it returns True
        the generation ends there (the completion is what was generated so far). A `Prompt`'s stop
        sequences end the generation too, and are cut from the answer."""
        import torch

        stops = prompt.stop if isinstance(prompt, Prompt) else ()
        inputs = self._inputs(prompt)
        kwargs = self._generate_kwargs(max_new_tokens)
        if stop is not None or stops:
            kwargs["stopping_criteria"] = self._stop_criteria(inputs, stops, stop)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **kwargs)
        return self._completion(inputs, output, stops)

    def stream(self, prompt: str | Prompt, max_new_tokens: int = 64) -> TokenStream:
        """Generate like `generate`, yielding text pieces as they are decoded.

        Iterate the result for the pieces; once it is exhausted, `.completion` holds the same
        `Completion` that `generate` returns for this prompt. Closing it early (`close()`, or leaving a
        `with` block) stops the generation at the next token; `.completion` then holds what was
        generated until then."""
        return TokenStream(self, prompt, max_new_tokens)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The first `max_tokens` generator tokens of `text`, as text."""
        ids = self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        if len(ids) <= max_tokens:
            return text
        return str(self._tokenizer.decode(ids[: max(0, max_tokens)], skip_special_tokens=True)).strip()

    def info(self) -> dict[str, Any]:
        return {"model": self.model_id, "revision": self.revision, "kind": self.kind, "max_input_tokens": self.max_input_tokens}


def _stopping(stop: Callable[[], bool]) -> Any:
    """A transformers stopping criterion that ends the generation once `stop()` is true."""
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), bool(stop()), dtype=torch.bool, device=input_ids.device)

    return _Stop()


def _stop_sequences(generator: Generator, inputs: dict[str, Any], stops: tuple[str, ...]) -> Any:
    """A stopping criterion that ends the generation once the text generated so far holds a stop sequence
    (decoded the way the answer is, so it stops exactly where `cut_at_stop` cuts)."""
    from transformers import StoppingCriteria

    class _StopText(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            hit = [cut_at_stop(generator._decode(generator._new_ids(inputs, row)), stops)[1] for row in input_ids]
            return torch.tensor(hit, dtype=torch.bool, device=input_ids.device)

    return _StopText()


class TokenStream:
    """Text pieces of one generation as they are produced (see `Generator.stream`).

    `model.generate` runs in a background thread with transformers' `TextIteratorStreamer`; an error
    there is raised here, in the reading thread, once the pieces before it are read."""

    def __init__(self, generator: Generator, prompt: str | Prompt, max_new_tokens: int) -> None:
        from transformers import TextIteratorStreamer

        self.completion: Completion | None = None
        self._stop = threading.Event()
        self._generator = generator
        self._stops = prompt.stop if isinstance(prompt, Prompt) else ()
        self._inputs = generator._inputs(prompt)
        self._streamer = TextIteratorStreamer(generator._tokenizer, skip_prompt=True, skip_special_tokens=True,
                                              clean_up_tokenization_spaces=True)
        self._output: Any = None
        self._error: BaseException | None = None
        kwargs = {**self._inputs, **generator._generate_kwargs(max_new_tokens), "streamer": self._streamer,
                  "stopping_criteria": generator._stop_criteria(self._inputs, self._stops, self._stop.is_set)}
        self._thread = threading.Thread(target=self._run, args=(kwargs,), name="ragcli-generate", daemon=True)
        self._thread.start()

    def _run(self, kwargs: dict[str, Any]) -> None:
        import torch

        try:
            with torch.inference_mode():
                self._output = self._generator._model.generate(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            self._error = exc
            self._streamer.end()  # wake the reader, which re-raises

    def __iter__(self) -> Iterator[str]:
        # `generate` strips the answer and cuts it at a stop sequence; the stream holds back whitespace
        # until text follows it, and text that may be the start of a stop sequence until it is known not
        # to be, so the pieces joined are exactly `completion.text`.
        held = ""
        started = False
        stops = StopText(self._stops)
        for raw in itertools.chain(self._streamer, [None]):
            piece = stops.finish() if raw is None else stops.feed(raw)
            if stops.hit:
                self._stop.set()  # the answer is complete: end the generation at the next token
            text = piece.rstrip()
            if text:
                out = (held + text) if started else (held + text).lstrip()
                started = started or bool(out)
                if out:
                    yield out
                held = piece[len(text):]
            else:
                held += piece
        self._join()
        if self._error is not None:
            raise self._error

    def _join(self) -> None:
        self._thread.join()
        if self._error is None and self.completion is None:
            self.completion = self._generator._completion(self._inputs, self._output, self._stops)

    def close(self) -> None:
        """Stop the generation (if still running) and wait for it; `completion` is then what was generated
        (None if the generation failed: iterating raises its error)."""
        self._stop.set()
        self._join()

    def __enter__(self) -> TokenStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@functools.lru_cache(maxsize=2)
def _load_generator(path: str, model_id: str, revision: str, max_new_tokens: int) -> Generator:
    gguf_file = gguf_file_of(Path(path))
    if gguf_file is not None:
        return _load_gguf_generator(gguf_file, model_id, revision, max_new_tokens)
    _quiet_libraries()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    check_readable(path)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=False)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        kind = "seq2seq" if getattr(config, "is_encoder_decoder", False) else "causal"
        cls = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForCausalLM
        model = cls.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=torch.float32
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"Cannot load the generator at {path}: {str(exc).splitlines()[0]}. "
            f"It must be a seq2seq or causal LM with safetensors weights; re-download with: "
            f"ragcli download-model {model_id}"
        ) from exc
    model.eval()
    limit = _input_limit(tokenizer, config)
    if kind == "causal":
        # The prompt and the answer share the causal model's window.
        limit = max(16, limit - max_new_tokens)
    return Generator(
        model_id=model_id,
        revision=revision,
        path=Path(path),
        kind=kind,
        max_input_tokens=limit,
        _model=model,
        _tokenizer=tokenizer,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )


# -- GGUF generators: a .gguf file, or a folder holding one ----------------------------------------
def gguf_file_of(path: Path) -> Path | None:
    """The GGUF file a generator path names: the path itself if it is a .gguf file, else the one .gguf
    file of a folder that has no config.json (a folder with config.json is a Hugging Face model folder).
    None when the path is not a GGUF model. Several .gguf files in one folder: an error naming them."""
    if path.is_file():
        return path if path.suffix.lower() == ".gguf" else None
    if not path.is_dir() or (path / "config.json").is_file():
        return None
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".gguf")
    if len(files) > 1:
        raise ModelLoadError(f"{path} holds several GGUF files ({', '.join(p.name for p in files)}); point the "
                             f"generator at one of them, e.g. RAGCLI_GEN_MODEL={files[0]}")
    return files[0] if files else None


def _load_gguf_generator(file: Path, model_id: str, revision: str, max_new_tokens: int) -> Generator:
    """A causal LM from a GGUF file. transformers reads it with the gguf package and dequantises the
    weights to float32 (so it runs on the same code path as any other generator)."""
    _quiet_libraries()
    import contextlib
    import importlib.util
    import io

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"The generator {file} is a GGUF file, which needs the gguf package: "
                             "pip install 'ragcli[gguf]'")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(file.parent), file.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=name, local_files_only=True)
        if getattr(config, "is_encoder_decoder", False):
            raise ValueError("an encoder-decoder model; ragcli reads causal LMs from GGUF files")
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
        # transformers draws its own tqdm bar while it dequantises (not the one _quiet_libraries turns off).
        with contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, local_files_only=True,
                                                         dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
        raise ModelLoadError(
            f"Cannot load the GGUF generator {file}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}. "
            "It must be a causal LM architecture that transformers reads from GGUF (e.g. llama, qwen2, mistral)."
        ) from exc
    model.eval()
    limit = max(16, _input_limit(tokenizer, config) - max_new_tokens)
    return Generator(
        model_id=model_id,
        revision=revision,
        path=file,
        kind="causal",
        max_input_tokens=limit,
        _model=model,
        _tokenizer=tokenizer,
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
    )


def _input_limit(tokenizer: Any, config: Any) -> int:
    candidates = []
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:
        candidates.append(model_max)
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            candidates.append(value)
    return min(candidates) if candidates else 512


def load_generator(settings: Settings) -> Generator:
    """The configured generator, loaded once per process."""
    resolved = resolve_model(settings.gen_model, settings.models_dir, role="generator")
    with _LOCK:
        return _load_generator(str(resolved.path), settings.gen_model, resolved.revision, settings.max_new_tokens)


def quiet_libraries() -> None:
    """Keep library chatter out of ragcli's output (for the other model loaders)."""
    _quiet_libraries()


def _quiet_libraries() -> None:
    """Keep library chatter (progress bars, advisory warnings) out of ragcli's output."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as tlogging

        tlogging.set_verbosity_error()
        tlogging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass

