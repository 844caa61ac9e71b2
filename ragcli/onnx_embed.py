"""The embedding model through ONNX Runtime: fp32, or with dynamically quantised int8 weights.

ragcli exports the downloaded safetensors weights itself (`torch.onnx.export`, the TorchScript
exporter, dynamic batch and sequence axes: optimum's exporters do not support transformers 5), unless
the model folder already ships `onnx/model.onnx`. The int8 file is made from the fp32 one with
`onnxruntime.quantization.quantize_dynamic`. Both are cached beside the model:

    models/models--org--name/ragcli-onnx/<revision>/model.onnx, model-int8.onnx, export.json

(`export.json` records the exporter's versions; for a local model folder the cache lives in
`<models dir>/ragcli-onnx/local-<hash of the folder and its weights>/`). Files are written to a
temporary name and renamed, so a crashed export leaves nothing half-written.

The graph returns the last hidden state only; tokenization (the model's own tokenizer, padding to the
longest text of a batch, truncation at sentence-transformers' `max_seq_length`), pooling (as
`1_Pooling/config.json` says: mean, CLS, max, mean-sqrt-len or last token) and normalisation are done
here exactly as sentence-transformers does them, so fp32 vectors equal the torch backend's to float
rounding. Texts of one call are sorted by length before batching (as sentence-transformers does), so
padding stays small.

onnx, onnxruntime, torch and transformers are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragcli.config import EMBED_BACKENDS
from ragcli.errors import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

BACKENDS = EMBED_BACKENDS
OPSET = 17
CACHE_NAME = "ragcli-onnx"
_POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}
_KNOWN_MODULES = ("Transformer", "Pooling", "Normalize")


def backend_parts(backend: str) -> tuple[str, str]:
    """("torch" | "onnx", "none" | "int8" | "bf16") of a backend setting."""
    if backend == "onnx-int8":
        return "onnx", "int8"
    if backend == "torch-bf16":
        return "torch", "bf16"
    return backend, "none"


@dataclass(frozen=True)
class PoolingConfig:
    """What sentence-transformers does after the transformer, read from the model folder."""

    modes: tuple[str, ...]
    normalize: bool
    max_seq_length: int | None
    do_lower_case: bool


def read_pooling(path: Path) -> PoolingConfig:
    """The pooling, normalisation and sequence limit of a sentence-transformers folder (a plain
    transformers folder gets mean pooling, as sentence-transformers gives it)."""
    modules_file = path / "modules.json"
    normalize = False
    pooling_dir: Path | None = None
    if modules_file.is_file():
        for module in json.loads(modules_file.read_text(encoding="utf-8")):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            if kind not in _KNOWN_MODULES:
                raise ModelLoadError(
                    f"{modules_file} has a {kind} module, which the onnx embedding backend does not run. "
                    "Use --embed-backend torch for this model."
                )
            if kind == "Pooling":
                pooling_dir = path / str(module.get("path") or "1_Pooling")
            elif kind == "Normalize":
                normalize = True
    modes: tuple[str, ...] = ("mean",)
    if pooling_dir is not None and (pooling_dir / "config.json").is_file():
        config = json.loads((pooling_dir / "config.json").read_text(encoding="utf-8"))
        if config.get("pooling_mode_weightedmean_tokens"):
            raise ModelLoadError(f"{pooling_dir}/config.json asks for weighted-mean pooling, which the onnx "
                                 "embedding backend does not implement. Use --embed-backend torch.")
        if config.get("include_prompt") is False:
            raise ModelLoadError(f"{pooling_dir}/config.json pools without the prompt tokens, which the onnx "
                                 "embedding backend does not implement. Use --embed-backend torch.")
        modes = tuple(name for key, name in _POOLING_KEYS.items() if config.get(key))
        if not modes:
            raise ModelLoadError(f"{pooling_dir}/config.json names no pooling mode.")
    max_seq = None
    do_lower = False
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        data = json.loads(st_config.read_text(encoding="utf-8"))
        max_seq = data.get("max_seq_length")
        do_lower = bool(data.get("do_lower_case"))
    return PoolingConfig(modes=modes, normalize=normalize, max_seq_length=int(max_seq) if max_seq else None,
                         do_lower_case=do_lower)


def pool(hidden: np.ndarray, mask: np.ndarray, modes: tuple[str, ...]) -> np.ndarray:
    """Sentence vectors from token states (batch, seq, dim) and the attention mask (batch, seq), in the
    order sentence-transformers concatenates pooling modes."""
    import numpy as np

    hidden = hidden.astype(np.float32, copy=False)
    m = mask.astype(np.float32)[:, :, None]
    parts = []
    for mode in ("cls", "max", "mean", "mean_sqrt_len", "lasttoken"):
        if mode not in modes:
            continue
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(m > 0, hidden, np.float32(-1e9)).max(axis=1))
        elif mode in ("mean", "mean_sqrt_len"):
            total = (hidden * m).sum(axis=1)
            count = np.clip(m.sum(axis=1), 1e-9, None)
            parts.append(total / (count if mode == "mean" else np.sqrt(count)))
        else:
            last = np.clip(mask.sum(axis=1).astype(np.int64) - 1, 0, None)
            parts.append(hidden[np.arange(hidden.shape[0]), last])
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


# -- the cache -------------------------------------------------------------------------------------
def cache_dir(model_path: Path, revision: str, models_dir: Path) -> Path:
    """Where the ONNX files of the model at `model_path` live."""
    model_path = Path(model_path)
    if model_path.parent.name == "snapshots":  # Hub cache layout: beside the snapshots
        return model_path.parent.parent / CACHE_NAME / model_path.name
    digest = hashlib.sha256(str(model_path.resolve()).encode())
    for weights in sorted(model_path.glob("*.safetensors")):
        st = weights.stat()
        digest.update(f"{weights.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return Path(models_dir) / CACHE_NAME / f"local-{digest.hexdigest()[:16]}"


def _atomic_target(dest: Path) -> Path:
    """A temporary file beside `dest` (renamed onto it once complete), readable like any other file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}-", suffix=dest.suffix, dir=dest.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return Path(tmp)


def _versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter's tracer warnings and the quantiser's advice are not ragcli's output."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _uses_token_types(model: Any, tokenizer: Any) -> bool:
    import inspect

    names = getattr(tokenizer, "model_input_names", None) or []
    return "token_type_ids" in names and "token_type_ids" in inspect.signature(model.forward).parameters


def export_fp32(model_path: Path, dest: Path) -> dict[str, Any]:
    """Export the transformer at `model_path` (safetensors) to `dest`: inputs input_ids, attention_mask
    (and token_type_ids where the model takes them), output last_hidden_state, batch and sequence axes
    dynamic. Returns what export.json records."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        # Eager attention: its graph is the pattern ONNX Runtime's transformer optimizer fuses into one
        # Attention node before int8 quantisation (an SDPA export is left unfused, and int8 then gains little).
        model = AutoModel.from_pretrained(model_path, local_files_only=True, use_safetensors=True,
                                          trust_remote_code=False, dtype=torch.float32,
                                          attn_implementation="eager").eval()
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load {model_path} for the ONNX export: {str(exc).splitlines()[0]}") from exc
    token_types = _uses_token_types(model, tokenizer)
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_types else [])

    class _Hidden(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.inner(**kwargs).last_hidden_state

    sample = tokenizer(["an export sample", "a second, longer export sample text"], padding=True,
                       return_tensors="pt")
    args = tuple(sample[n] for n in names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["last_hidden_state"] = {0: "batch", 1: "sequence"}
    tmp = _atomic_target(dest)
    try:
        with torch.inference_mode(), _quiet():
            torch.onnx.export(_Hidden(model), args, str(tmp), input_names=names, output_names=["last_hidden_state"],
                              dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"source": "exported", "inputs": names, "opset": OPSET, "exporter": "torch.onnx.export (TorchScript)"}


def _after_gelu(model: Any) -> list[str]:
    """MatMul nodes whose input comes from a GELU (the feed-forward down-projections), directly (a
    fused Gelu/BiasGelu) or through the elementwise ops of an unfused one (Erf, Mul, Add, Div). Their
    inputs have outliers that per-tensor activation quantisation flattens; kept in fp32 they hold the
    vectors much closer to fp32 (MiniLM: worst cosine 0.983 -> 0.994)."""
    producer = {out: node for node in model.graph.node for out in node.output}
    elementwise = {"Mul", "Add", "Div", "Cast"}

    def from_gelu(name: str, depth: int = 4) -> bool:
        node = producer.get(name)
        if node is None:
            return False
        if node.op_type in ("Erf", "Gelu", "FastGelu", "BiasGelu"):
            return True
        return depth > 0 and node.op_type in elementwise and any(from_gelu(i, depth - 1) for i in node.input)

    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input and from_gelu(n.input[0])]


# Architectures whose exported graph ONNX Runtime's transformer optimizer fuses as model_type "bert".
_FUSABLE = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "camembert"}


def fuse_for_int8(src: Path, dest: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Fuse `src` with ONNX Runtime's transformer optimizer (EmbedLayerNormalization, Attention,
    BiasGelu, SkipLayerNormalization) into `dest`, for quantisation: int8 gains little on an unfused
    graph (MiniLM, idle 2-core Xeon, over torch: 1.03x on chunks and 1.46x on questions unfused,
    1.17x and 1.82x fused). Returns what export.json
    records; raises ValueError where the architecture is not one the optimizer knows."""
    from onnxruntime.transformers.optimizer import optimize_model

    kind = str(config.get("model_type", ""))
    heads, hidden = config.get("num_attention_heads") or config.get("n_heads"), config.get("hidden_size") or config.get("dim")
    if kind not in _FUSABLE or not heads or not hidden:
        raise ValueError(f"no fusion for model_type {kind!r}")
    with _quiet():
        optimized = optimize_model(str(src), model_type="bert", num_heads=int(heads), hidden_size=int(hidden),
                                   opt_level=1, use_gpu=False)
        optimized.save_model_to_file(str(dest))
    fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
    return {"fused": fused}


def quantize_int8(src: Path, dest: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dynamic int8 quantisation of the weights of `src` (activations quantised at run time), per
    channel, the matrix products after a GELU left in fp32. The graph is fused first where ONNX
    Runtime's optimizer knows the architecture (`fuse_for_int8`); otherwise quantised as exported."""
    import onnx
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _atomic_target(dest)
    try:
        with tempfile.TemporaryDirectory(prefix="ragcli-onnx-fuse-") as work:
            source, fusion = src, {"fused": {}}
            try:
                fused_file = Path(work) / "fused.onnx"
                fusion = fuse_for_int8(src, fused_file, config or {})
                source = fused_file
            except (ValueError, RuntimeError, AssertionError) as exc:  # quantise the plain export
                fusion = {"fused": {}, "not_fused": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            exclude = _after_gelu(onnx.load(str(source), load_external_data=False))
            with _quiet():
                quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                                 nodes_to_exclude=exclude,
                                 extra_options={"DefaultTensorType": TensorProto.FLOAT})  # types of fused nodes
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {"quantization": "dynamic int8 (onnxruntime.quantization.quantize_dynamic, QInt8 weights, per channel)",
            "fp32_nodes": len(exclude), **fusion}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_onnx(model_path: Path, revision: str, models_dir: Path, quantization: str) -> Path:
    """The ONNX file for the model at `model_path` ("none" = fp32, "int8"), exported/quantised into the
    cache on first use. A file the model ships (onnx/model.onnx) is used as the fp32 source."""
    model_path = Path(model_path)
    folder = cache_dir(model_path, revision, models_dir)
    record_file = folder / "export.json"
    record = json.loads(record_file.read_text(encoding="utf-8")) if record_file.is_file() else {}
    shipped = model_path / "onnx" / "model.onnx"
    fp32 = shipped if shipped.is_file() else folder / "model.onnx"
    changed = False
    if not fp32.is_file():
        record["fp32"] = {**export_fp32(model_path, fp32), "versions": _versions()}
        changed = True
    elif fp32 == shipped and "fp32" not in record:
        record["fp32"] = {"source": "shipped", "file": "onnx/model.onnx"}
        changed = True
    target = fp32
    if quantization == "int8":
        target = folder / "model-int8.onnx"
        if not target.is_file():
            config_file = model_path / "config.json"
            config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
            record["int8"] = {**quantize_int8(fp32, target, config), "from": str(fp32.name), "versions": _versions()}
            changed = True
    if changed:
        for key in ("fp32", "int8"):
            if key in record:
                f = fp32 if key == "fp32" else folder / "model-int8.onnx"
                if f.is_file():
                    record[key]["sha256"] = _sha256(f)
        tmp = _atomic_target(record_file)
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, record_file)
    return target


# -- running ---------------------------------------------------------------------------------------
class OnnxEncoder:
    """Runs the model through ONNX Runtime with the interface `Embedder` uses of llama-index's
    HuggingFaceEmbedding: `get_text_embedding_batch`, `get_text_embedding`, `get_query_embedding`,
    `max_length`. Vectors come back pooled (and normalised where the model's config says so)."""

    def __init__(self, onnx_file: Path, tokenizer: Any, pooling: PoolingConfig, max_length: int, batch_size: int,
                 query_instruction: str = "", text_instruction: str = "", threads: int | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(onnx_file), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"ONNX Runtime cannot load {onnx_file}: {str(exc).splitlines()[0]}. "
                                 f"Delete {Path(onnx_file).parent} to export it again.") from exc
        self._inputs = [i.name for i in self._session.get_inputs()]
        self.onnx_file = Path(onnx_file)
        self._tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.batch_size = batch_size
        self.query_instruction = query_instruction
        self.text_instruction = text_instruction

    def _run(self, texts: list[str]) -> np.ndarray:
        import numpy as np

        if self.pooling.do_lower_case:
            texts = [t.lower() for t in texts]
        out = np.zeros((len(texts), 0), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        results: list[Any] = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self._tokenizer([texts[i] for i in idx], padding=True, truncation="longest_first",
                                  max_length=self.max_length, return_tensors="np")
            feed = {}
            for name in self._inputs:
                if name in enc:
                    feed[name] = enc[name].astype(np.int64)
                elif name == "token_type_ids":
                    feed[name] = np.zeros_like(enc["input_ids"], dtype=np.int64)
            hidden = self._session.run(None, feed)[0]
            vectors = pool(hidden, enc["attention_mask"], self.pooling.modes)
            if self.pooling.normalize:
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.clip(norms, 1e-12, None)
            for row, i in enumerate(idx):
                results[i] = vectors[row]
        if results:
            out = np.stack(results).astype(np.float32)
        return out

    def hidden_states(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """The last hidden state (batch, seq, dim) of padded token ids."""
        import numpy as np

        feed = {"input_ids": input_ids.astype(np.int64), "attention_mask": attention_mask.astype(np.int64)}
        if "token_type_ids" in self._inputs:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        return self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]

    def get_text_embedding_batch(self, texts: list[str]) -> np.ndarray:
        return self._run([self.text_instruction + t for t in texts])

    def get_text_embedding(self, text: str) -> np.ndarray:
        return self._run([self.text_instruction + text])[0]

    def get_query_embedding(self, query: str) -> np.ndarray:
        return self._run([self.query_instruction + query])[0]


def sequence_limit(path: Path, tokenizer: Any, pooling: PoolingConfig) -> int:
    """The most tokens the encoder reads, as sentence-transformers decides it."""
    limit = pooling.max_seq_length
    config_file = path / "config.json"
    positions = None
    if config_file.is_file():
        positions = json.loads(config_file.read_text(encoding="utf-8")).get("max_position_embeddings")
    model_max = getattr(tokenizer, "model_max_length", None)
    candidates = [v for v in (limit,) if v]
    if not candidates:
        candidates = [v for v in (model_max, positions) if isinstance(v, int) and 0 < v < 1_000_000]
    return min(candidates) if candidates else 512


def load_onnx_encoder(path: Path, revision: str, models_dir: Path, quantization: str, batch_size: int,
                      query_instruction: str, text_instruction: str,
                      onnx_file: Path | None = None) -> tuple[OnnxEncoder, Any]:
    """(encoder, tokenizer) for the model folder `path`. `onnx_file` runs that file instead of the
    cached export (it must take the same inputs and return the last hidden state)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ModelLoadError("The onnx embedding backend needs onnxruntime and onnx: "
                             "pip install 'ragcli[onnx]', or use --embed-backend torch.") from exc
    from transformers import AutoTokenizer

    pooling = read_pooling(Path(path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Cannot load the tokenizer at {path}: {exc}.") from exc
    target = Path(onnx_file) if onnx_file is not None else ensure_onnx(Path(path), revision, models_dir, quantization)
    encoder = OnnxEncoder(target, tokenizer, pooling, sequence_limit(Path(path), tokenizer, pooling), batch_size,
                          query_instruction, text_instruction)
    return encoder, tokenizer
