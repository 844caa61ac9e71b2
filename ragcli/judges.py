"""Cross-encoders over retrieved text: a reranker and a faithfulness judge.

Both are sequence-classification models loaded with transformers' standard classes
(`AutoModelForSequenceClassification`, safetensors only, no remote code) from the models folder, like
the other models (`ragcli download-model org/name` fetches them; a local folder works too).

* **Reranker** (`--rerank MODEL --rerank-depth N`): a cross-encoder with one output (e.g.
  cross-encoder/ms-marco-MiniLM-L6-v2) reads (question, passage) pairs; the top N candidates of any
  mode and target are reordered by its score, and the best k kept. Its score replaces the hit's
  score (higher is better; the raw logit of the model).
  A multi-vector (ColBERT-style, late-interaction) model saved by sentence-transformers
  (`config_sentence_transformers.json` model type `MultiVectorEncoder`, or a PyLate `ColBERT`
  checkpoint it converts) reranks by MaxSim instead: the question and each passage are encoded to
  one vector per token, and a passage's score is the sum over question tokens of the best match
  among its tokens (`LateInteractionReranker`).
* **Faithfulness** (`--faithfulness MODEL`): an NLI cross-encoder with an "entailment" label
  (id2label) reads (passage, answer) pairs; an answer's faithfulness is the highest entailment
  probability over the passages its prompt held (softmax over the model's labels): 1 when some
  passage entails the answer, near 0 when none supports it.

torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.errors import ModelLoadError
from ragcli.registry import resolve_model

if TYPE_CHECKING:  # pragma: no cover
    from ragcli.config import Settings
    from ragcli.types import Hit

_LOCK = threading.Lock()
BATCH = 16


@dataclass
class CrossEncoder:
    """A loaded sequence-classification model scoring text pairs."""

    model_id: str
    revision: str
    path: Path
    max_length: int
    labels: dict[int, str]
    _model: Any = field(repr=False)
    _tokenizer: Any = field(repr=False)
    pairs_scored: int = 0

    def logits(self, pairs: list[tuple[str, str]]) -> Any:
        """Logits (n, labels) of the pairs, in batches; the second text is truncated first."""
        import numpy as np
        import torch

        out = []
        for start in range(0, len(pairs), BATCH):
            batch = pairs[start : start + BATCH]
            enc = self._tokenizer([a for a, _ in batch], [b for _, b in batch], padding=True,
                                  truncation="longest_first", max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                out.append(self._model(**enc).logits.float().numpy())
            self.pairs_scored += len(batch)
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), dtype=np.float32)

    def score(self, question: str, passages: list[str]) -> Any:
        """Relevance of each passage to `question` (a one-output reranker's logit)."""
        return self.logits([(question, p) for p in passages])[:, 0]

    def info(self) -> dict[str, Any]:
        return {"model": self.model_id, "revision": self.revision}


# Model types of sentence-transformers' config that mean "one vector per token, scored by MaxSim".
LATE_INTERACTION_TYPES = ("MultiVectorEncoder", "ColBERT")


@dataclass
class LateInteractionReranker:
    """A multi-vector encoder (sentence-transformers' `MultiVectorEncoder`) scoring passages by MaxSim."""

    model_id: str
    revision: str
    path: Path
    _model: Any = field(repr=False)
    pairs_scored: int = 0
    kind: str = "late-interaction"

    def score(self, question: str, passages: list[str]) -> Any:
        """MaxSim of the question's token vectors against each passage's (the model's own similarity)."""
        import torch

        if not passages:
            import numpy as np

            return np.zeros(0, dtype=np.float32)
        with torch.inference_mode():
            query = self._model.encode_query([question], batch_size=BATCH, show_progress_bar=False)
            docs = self._model.encode_document(passages, batch_size=BATCH, show_progress_bar=False)
            scores = self._model.similarity(query, docs)[0]
        self.pairs_scored += len(passages)
        return scores.float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {"model": self.model_id, "revision": self.revision, "kind": self.kind}


def late_interaction_type(path: Path) -> str | None:
    """The model type of a multi-vector model folder (see LATE_INTERACTION_TYPES), else None."""
    import json

    config = Path(path) / "config_sentence_transformers.json"
    if not config.is_file():
        return None
    try:
        kind = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None
    return kind if kind in LATE_INTERACTION_TYPES else None


@functools.lru_cache(maxsize=4)
def _load_late(path: str, model_id: str, revision: str) -> LateInteractionReranker:
    from ragcli.models import quiet_libraries

    quiet_libraries()
    try:
        from sentence_transformers import MultiVectorEncoder
    except ImportError as exc:  # sentence-transformers before its multi-vector support
        raise ModelLoadError(f"The reranker {model_id} is a late-interaction (multi-vector) model, which needs "
                             "sentence-transformers >= 6 (MultiVectorEncoder): pip install -U sentence-transformers.") from exc
    try:
        model = MultiVectorEncoder(path, device="cpu", local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load the late-interaction reranker at {path}: {str(exc).splitlines()[0]}; "
                             f"re-download with: ragcli download-model {model_id}") from exc
    model.eval()
    return LateInteractionReranker(model_id=model_id, revision=revision, path=Path(path), _model=model)


@functools.lru_cache(maxsize=4)
def _load(path: str, model_id: str, revision: str, role: str) -> CrossEncoder:
    from ragcli.models import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(
            path, local_files_only=True, use_safetensors=True, trust_remote_code=False, dtype=torch.float32).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load the {role} at {path}: {str(exc).splitlines()[0]}. It must be a "
                             f"sequence-classification model with safetensors weights; re-download with: "
                             f"ragcli download-model {model_id}") from exc
    limit = getattr(tokenizer, "model_max_length", None)
    positions = getattr(model.config, "max_position_embeddings", None)
    candidates = [v for v in (limit, positions) if isinstance(v, int) and 0 < v < 1_000_000]
    labels = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return CrossEncoder(model_id=model_id, revision=revision, path=Path(path),
                        max_length=min(candidates) if candidates else 512, labels=labels,
                        _model=model, _tokenizer=tokenizer)


def _resolved(name: str, settings: Settings, role: str) -> CrossEncoder:
    resolved = resolve_model(name, settings.models_dir, role=role)
    with _LOCK:
        return _load(str(resolved.path), name, resolved.revision, role)


# -- reranking -------------------------------------------------------------------------------------
def load_reranker(settings: Settings) -> CrossEncoder | LateInteractionReranker:
    """The configured reranker (settings.rerank_model), loaded once per process: a one-output
    cross-encoder, or a late-interaction multi-vector model (scored by MaxSim)."""
    name = str(settings.rerank_model)
    resolved = resolve_model(name, settings.models_dir, role="reranker")
    with _LOCK:
        if late_interaction_type(resolved.path):
            return _load_late(str(resolved.path), name, resolved.revision)
        encoder = _load(str(resolved.path), name, resolved.revision, "reranker")
    if encoder._model.config.num_labels != 1:
        raise ModelLoadError(f"The reranker {encoder.model_id} has {encoder._model.config.num_labels} outputs; a "
                             "reranking cross-encoder has one (a relevance score), e.g. cross-encoder/ms-marco-MiniLM-L6-v2.")
    return encoder


def rerank(question: str, hits: list[Hit], reranker: CrossEncoder | LateInteractionReranker, k: int) -> list[Hit]:
    """`hits` reordered by the reranker's score of (question, passage), best first, the top `k` kept;
    each hit's score becomes the reranker's. Ties keep the retrieval order."""
    from dataclasses import replace

    if not hits:
        return []
    scores = reranker.score(question, [h.text for h in hits])
    order = sorted(range(len(hits)), key=lambda i: (-float(scores[i]), i))[:k]
    return [replace(hits[i], score=round(float(scores[i]), 6), rank=rank) for rank, i in enumerate(order, 1)]


# -- faithfulness ----------------------------------------------------------------------------------
def load_judge(settings: Settings) -> CrossEncoder:
    """The configured faithfulness judge (settings.faithfulness_model): an NLI model with an entailment label."""
    encoder = _resolved(str(settings.faithfulness_model), settings, "faithfulness model")
    entailment_label(encoder)
    return encoder


def entailment_label(judge: CrossEncoder) -> int:
    for index, name in judge.labels.items():
        if name.lower().startswith("entail"):
            return index
    raise ModelLoadError(f"The faithfulness model {judge.model_id} has no 'entailment' label (its labels: "
                         f"{', '.join(judge.labels.values()) or 'none'}); use an NLI cross-encoder.")


def faithfulness(answer: str, passages: list[str], judge: CrossEncoder) -> float | None:
    """The highest probability over `passages` that the passage entails `answer` (None without
    passages or without an answer)."""
    import numpy as np

    if not passages or not answer.strip():
        return None
    logits = judge.logits([(p, answer) for p in passages])
    shifted = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    return round(float(probs[:, entailment_label(judge)].max()), 6)
