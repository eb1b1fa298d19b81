"""all-MiniLM-L6-v2 in plain torch: the ``minilm`` model and ``builtin``'s text tower.

sentence-transformers runs this model as Transformer (BERT) -> mean Pooling -> Normalize. Importing
it pulls in transformers, scikit-learn and scipy (~5 s of a cold start); this module runs the same
BERT forward with torch, ``safetensors`` and ``tokenizers`` alone, and matches it to ~1e-7.

Where ONNX Runtime is installed that forward is exported once (:mod:`mmsearch.encoders.onnx_towers`) and
every process after the first runs it there without importing torch: a text query's cold start.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders import onnx_towers
from mmsearch.encoders.base import (
    TEXT,
    EncoderBase,
    cached_fingerprint,
    fingerprint_arrays,
    l2_normalize,
    torch_device,
)
from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

BATCH_SIZE = 64
# The key prefix sentence-transformers (>= 6) gives this model's weights in its state dict. The
# fingerprint hashes these names, so it equals the one SentenceTransformerEncoder records and
# indexes built through sentence-transformers keep opening.
ST_PREFIX = "0.model."
_QKV = ("attention.self.query", "attention.self.key", "attention.self.value")
_LAYER = (
    "attention.output.dense",
    "attention.output.LayerNorm",
    "intermediate.dense",
    "output.dense",
    "output.LayerNorm",
)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot read {path}: {e}") from e


class MiniLMEncoder(EncoderBase):
    """A sentence-transformers BERT model with mean pooling, run without sentence-transformers.

    Args:
        path: A sentence-transformers folder (``config.json``, ``model.safetensors``,
            ``tokenizer.json``, ``sentence_bert_config.json``, ``1_Pooling/``).
        device: torch device; the GPU when there is one.
        name: The registry name that loads this encoder again.

    Raises:
        ModelError: a file is missing or the folder holds a model this class does not run.
    """

    modalities = frozenset({TEXT})

    def __init__(
        self, path: str | Path, device: str | None = None, name: str = "minilm", runtime: str = "auto"
    ) -> None:
        from tokenizers import Tokenizer

        path = Path(path)
        self.name = name
        cfg = _read_json(path / "config.json")
        _check_supported(path, cfg)
        st_cfg = _read_json(path / "sentence_bert_config.json")
        try:
            self.dim = int(cfg["hidden_size"])
            self._heads = int(cfg["num_attention_heads"])
            self._layers = int(cfg["num_hidden_layers"])
            self._eps = float(cfg.get("layer_norm_eps", 1e-12))
            max_positions = int(cfg["max_position_embeddings"])
            self.max_seq_length = min(int(st_cfg.get("max_seq_length") or max_positions), max_positions)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError(f"{path}: bad config.json or sentence_bert_config.json: {e!r}") from e

        try:
            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        except Exception as e:  # missing file, corrupt JSON
            raise ModelError(f"cannot load MiniLM model from {path}: {e}") from e
        # tokenizer.json ships with fixed 128-token padding and truncation; sentence-transformers
        # overrides both: truncate to max_seq_length (special tokens included), pad to the longest.
        pad = tok.padding or {}
        tok.enable_truncation(max_length=self.max_seq_length)
        tok.enable_padding(pad_id=int(pad.get("pad_id", 0)), pad_token=str(pad.get("pad_token", "[PAD]")))
        self._tok = tok
        self._weights_file = path / "model.safetensors"
        self.fingerprint = _fingerprint(self._weights_file)

        # ONNX Runtime on the CPU unless told otherwise; torch for a GPU, or where the export is not possible.
        self._session: onnx_towers.Session | None = None
        self._w: dict[str, Any] | None = None
        self._torch: Any = None
        self.device: str = "cpu"
        if runtime not in ("auto", "torch", "onnx"):
            raise ModelError(f"unknown runtime {runtime!r}: auto, torch or onnx")
        if runtime != "torch" and device in (None, "cpu"):
            self._session = onnx_towers.open_session(self._onnx_kind, self.fingerprint, _INPUTS)
            if self._session is None:
                self._load_torch("cpu")
                self._session = self._export()
                if self._session is not None:
                    self._w = None  # the torch copy was only needed to export
        if runtime == "onnx" and self._session is None:
            raise ModelError("ONNX Runtime is not available for this model (pip install onnxruntime onnx)")
        if self._session is None and self._w is None:
            self._load_torch(device or torch_device())
        self.runtime = "onnx" if self._session is not None else "torch"

    @property
    def _onnx_kind(self) -> str:
        return f"minilm-l{self._layers}-d{self.dim}"

    def _load_torch(self, device: str) -> None:
        import torch
        from safetensors.torch import load_file

        try:
            weights = load_file(str(self._weights_file))
        except Exception as e:  # missing file, corrupt safetensors header
            raise ModelError(f"cannot load MiniLM model from {self._weights_file.parent}: {e}") from e
        self._torch = torch
        self.device = device
        self._w = self._prepare(weights)

    def _export(self) -> onnx_towers.Session | None:
        """The torch forward (masked attention, mean pooling) as an ONNX file, opened; None if it cannot be."""
        torch = self._torch
        # two texts of different lengths: the traced graph keeps the padding mask
        encs = self._tok.encode_batch(["a photo of a dog on a beach", "a cat"])
        example = tuple(torch.tensor([getattr(e, k) for e in encs]) for k in ("ids", "type_ids", "attention_mask"))
        axes = {name: {0: "n", 1: "seq"} for name in _INPUTS}
        if not onnx_towers.export(self._onnx_kind, self.fingerprint, self._pooled, example, _INPUTS, axes):
            return None
        return onnx_towers.open_session(self._onnx_kind, self.fingerprint, _INPUTS)

    def _prepare(self, w: dict[str, Any]) -> dict[str, Any]:
        """The tensors the forward reads, on the device; each layer's query/key/value fused into one matmul."""
        torch = self._torch
        names = [f"embeddings.{n}.weight" for n in ("word_embeddings", "position_embeddings", "token_type_embeddings")]
        names += ["embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias"]
        for i in range(self._layers):
            for n in (*_QKV, *_LAYER):
                names += [f"encoder.layer.{i}.{n}.weight", f"encoder.layer.{i}.{n}.bias"]
        missing = [n for n in names if n not in w]
        if missing:
            raise ModelError(f"MiniLM checkpoint lacks {len(missing)} tensors, e.g. {missing[0]}")
        out = {n: w[n] for n in names if "attention.self." not in n}
        for i in range(self._layers):
            p = f"encoder.layer.{i}."
            for part in ("weight", "bias"):
                out[f"{p}qkv.{part}"] = torch.cat([w[f"{p}{n}.{part}"] for n in _QKV])
        return {k: v.to(self.device, torch.float32).contiguous() for k, v in out.items()}

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        texts = list(texts)
        # Longest first, as sentence-transformers batches: less padding, and the same batches.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            out[idx] = self._embed([texts[i] for i in idx])
        return l2_normalize(out)

    def _embed(self, texts: list[str]) -> np.ndarray:
        """One batch: BERT, then the mean of the non-padding token vectors."""
        encs = self._tok.encode_batch(texts)
        fields = ("ids", "type_ids", "attention_mask")
        arrays = [np.array([getattr(e, k) for e in encs], dtype=np.int64) for k in fields]
        if self._session is not None:
            return np.asarray(self._session.run(dict(zip(_INPUTS, arrays, strict=True))), dtype=np.float32)
        torch = self._torch
        with torch.inference_mode():
            ids, types, mask = (torch.from_numpy(a).to(self.device) for a in arrays)
            pooled = self._pooled(ids, types, mask, skip_mask_if_full=True)
            return pooled.cpu().numpy()

    def _pooled(self, ids: Any, types: Any, mask: Any, skip_mask_if_full: bool = False) -> Any:
        """The mean of BERT's last hidden states over the non-padding tokens (torch tensors in and out)."""
        h = self._bert(ids, types, mask, skip_mask_if_full)
        m = mask.unsqueeze(-1).to(h.dtype)
        return (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)

    def _bert(self, ids: Any, types: Any, mask: Any, skip_mask_if_full: bool = False) -> Any:
        """HF ``BertModel``'s last hidden state (absolute positions, exact GELU, post-LayerNorm)."""
        torch = self._torch
        F = torch.nn.functional
        w, eps, heads = self._w, self._eps, self._heads
        assert w is not None
        n, seq = ids.shape
        positions = torch.arange(seq, device=self.device)
        h = (
            F.embedding(ids, w["embeddings.word_embeddings.weight"])
            + F.embedding(types, w["embeddings.token_type_embeddings.weight"])
            + F.embedding(positions, w["embeddings.position_embeddings.weight"])
        )
        h = F.layer_norm(h, (self.dim,), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
        # Padding keys are masked out; a batch without padding needs no mask at all (not when exporting:
        # the traced graph must keep the mask for the batches that have padding).
        attn_mask = None if skip_mask_if_full and bool(mask.all()) else mask.bool()[:, None, None, :]
        head_dim = self.dim // heads
        for i in range(self._layers):
            p = f"encoder.layer.{i}."
            qkv = F.linear(h, w[p + "qkv.weight"], w[p + "qkv.bias"])
            q, k, v = qkv.view(n, seq, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            ctx = ctx.transpose(1, 2).reshape(n, seq, self.dim)
            attn = F.linear(ctx, w[p + "attention.output.dense.weight"], w[p + "attention.output.dense.bias"])
            h = F.layer_norm(
                attn + h,
                (self.dim,),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
                eps,
            )
            ff = F.gelu(F.linear(h, w[p + "intermediate.dense.weight"], w[p + "intermediate.dense.bias"]))
            ff = F.linear(ff, w[p + "output.dense.weight"], w[p + "output.dense.bias"])
            h = F.layer_norm(ff + h, (self.dim,), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
        return h

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        raise ModelError(f"{self.name} is a text-only model: it cannot embed images")


_INPUTS = ("ids", "types", "mask")


def _fingerprint(weights_file: Path) -> str:
    """``fingerprint_arrays`` of the floating tensors, read through numpy (no torch import); kept in the user
    cache dir keyed by the file's path, size and modification time (reading the tensors is ~40 ms of a cold
    query)."""
    import hashlib

    from platformdirs import user_cache_path

    try:
        st = weights_file.stat()
    except OSError as e:
        raise ModelError(f"cannot load MiniLM model from {weights_file.parent}: {e}") from e
    key = hashlib.sha256(f"{weights_file.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = user_cache_path("mmsearch", appauthor=False) / f"minilm-{key}.fingerprint"
    return cached_fingerprint(cache, lambda: _read_fingerprint(weights_file))


def _read_fingerprint(weights_file: Path) -> str:
    from safetensors import safe_open

    try:
        with safe_open(str(weights_file), framework="np") as f:
            named = [(ST_PREFIX + k, f.get_tensor(k)) for k in sorted(f.keys())]
    except Exception as e:  # missing file, corrupt header, a dtype numpy lacks (bf16)
        raise ModelError(f"cannot load MiniLM model from {weights_file.parent}: {e}") from e
    return fingerprint_arrays((k, v) for k, v in named if np.issubdtype(v.dtype, np.floating))


def _check_supported(path: Path, cfg: dict[str, Any]) -> None:
    """Refuse a folder whose model differs from what :class:`MiniLMEncoder` computes."""
    if cfg.get("model_type") != "bert" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ModelError(f"{path} is not a BERT model with absolute positions")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ModelError(f"{path}: unsupported activation {cfg.get('hidden_act')!r}")
    modules = _read_json(path / "modules.json")
    kinds = [m.get("type", "").rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ModelError(f"{path}: unsupported sentence-transformers modules {kinds}")
    pooling = _read_json(path / modules[1].get("path", "") / "config.json")
    if not pooling.get("pooling_mode_mean_tokens") or any(
        pooling.get(k)
        for k in ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
    ):
        raise ModelError(f"{path}: only mean pooling is supported")
