"""OpenCLIP backend: ``openclip:<arch>/<pretrained-tag>`` and ``openclip:<arch>@<checkpoint file>``.

Pretrained tags download weights from the model hub on first use (the user's machine has
internet); a local checkpoint file loads offline. Embeddings are exactly open_clip's
``encode_image`` / ``encode_text`` followed by L2 normalisation.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders.base import IMAGE, TEXT, EncoderBase, fingerprint_torch, l2_normalize, torch_device
from mmsearch.encoders.clip_tokenizer import ClipTokenizer
from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

PREFIX = "openclip"


def parse_spec(spec: str) -> tuple[str, str | None, Path | None]:
    """Split ``ARCH/TAG`` or ``ARCH@FILE`` into (arch, tag, checkpoint)."""
    if "@" in spec:
        arch, _, ckpt = spec.partition("@")
        if not arch or not ckpt:
            raise ModelError(f"bad OpenCLIP model {spec!r}: expected openclip:ARCH@/path/to/checkpoint")
        return arch, None, Path(ckpt).expanduser()
    arch, sep, tag = spec.partition("/")
    if not arch or not sep or not tag:
        raise ModelError(
            f"bad OpenCLIP model {spec!r}: expected openclip:ARCH/PRETRAINED (e.g. openclip:ViT-B-32/openai)"
        )
    return arch, tag, None


# Where the weights of well-known tags live on the hub: enough to tell, without importing open_clip (and
# torch: seconds), that an offline machine does not have them.
HUB_REPOS = {
    ("ViT-B-32", "openai"): "timm/vit_base_patch32_clip_224.openai",
    ("ViT-B-32", "laion2b_s34b_b79k"): "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    ("ViT-B-16", "laion2b_s34b_b88k"): "laion/CLIP-ViT-B-16-laion2B-s34B-b88K",
    ("ViT-L-14", "openai"): "timm/vit_large_patch14_clip_224.openai",
    ("MobileCLIP2-S0", "dfndr2b"): "timm/MobileCLIP2-S0-OpenCLIP",
    ("MobileCLIP2-S2", "dfndr2b"): "timm/MobileCLIP2-S2-OpenCLIP",
    ("ViT-B-16-SigLIP2-256", "webli"): "timm/ViT-B-16-SigLIP2-256",
}
WEIGHT_FILES = (
    "open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth",
)  # fmt: skip


def load_openclip(spec: str) -> OpenClipEncoder:
    """An OpenCLIP model, failing at once (one line, no retries) when its weights must be downloaded and
    the hub cannot be reached. When a process has exported its text tower before (see :class:`OpenClipEncoder`),
    nothing but that export is opened: no torch, no open_clip, no probe of the hub.

    Raises:
        ModelError: a bad spec, a missing checkpoint, weights neither cached nor downloadable, a load error.
    """
    arch, tag, ckpt = parse_spec(spec)
    light = _exported(arch, tag, ckpt)
    if light is not None:
        try:
            return OpenClipEncoder(spec, exported=light)
        except Exception:  # a damaged export (ONNX Runtime raises its own types): load the weights, export again
            light.remove()
    return OpenClipEncoder(spec)


def _unreachable(arch: str, tag: str | None) -> str:
    from mmsearch import hub

    return (
        f"cannot load OpenCLIP model {arch}/{tag}: its weights are not in the Hugging Face cache and "
        f"{hub.endpoint()} cannot be reached (offline?): use --model builtin, which needs no download, "
        f"or openclip:{arch}@/path/to/checkpoint"
    )


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


TEXT_BATCH = 256


@dataclass(frozen=True)
class _Export:
    """A text tower exported to ONNX (with its tokenizer) and what an encoder must say about itself without
    loading the weights: the weights' fingerprint, the embedding size, the image side."""

    fingerprint: str
    dim: int
    image_size: int
    onnx: Path
    tokenizer: Path

    def remove(self) -> None:
        from mmsearch.encoders import onnx_towers

        onnx_towers.remove(self.onnx)
        self.tokenizer.unlink(missing_ok=True)


def _weights_file(arch: str, tag: str | None, ckpt: Path | None) -> Path | None:
    """The file the weights load from, when it can be told without open_clip (a checkpoint, or a known tag's
    file in the Hugging Face cache)."""
    from mmsearch import hub

    if ckpt is not None:
        return ckpt if ckpt.is_file() else None
    repo = HUB_REPOS.get((arch, tag or ""))
    found = hub.cached(repo, WEIGHT_FILES) if repo is not None else None
    return Path(found) if found else None


def _kind(arch: str) -> str:
    return "openclip-text-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in arch)


def _exported(arch: str, tag: str | None, ckpt: Path | None) -> _Export | None:
    """The text tower's export for these weights, if a process made one (and ONNX Runtime is on)."""
    from mmsearch.encoders import onnx_towers

    got = onnx_towers.recorded_export(_kind(arch), _weights_file(arch, tag, ckpt))
    if got is None:
        return None
    info, onnx = got
    try:
        return _Export(
            str(info["fingerprint"]), int(info["dim"]), int(info["image_size"]), onnx, onnx_towers.tokenizer_file(onnx)
        )
    except (KeyError, TypeError, ValueError):
        return None


def _create(arch: str, tag: str | None, ckpt: Path | None, device: str) -> tuple[Any, Any]:
    """open_clip's model (in eval mode) and its image preprocessing.

    Raises:
        ModelError: the weights cannot be had or loaded.
    """
    import open_clip

    from mmsearch import hub

    pretrained = str(ckpt) if ckpt is not None else tag
    try:
        with hub.quiet():
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained, device=device)
    except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors alike
        hint = " (offline? use --model builtin, which needs no download)" if ckpt is None else ""
        raise ModelError(f"cannot load OpenCLIP model {arch} ({pretrained}): {e}{hint}") from e
    return model.eval(), preprocess


def _trimmable(model: Any) -> bool:
    """Whether the text tower is open_clip's ``CLIP`` with a causal mask and end-token pooling: then the
    pooled output reads no token after the end token, and the padding after it need not be computed (a
    short query costs ~1/15 of its 77 positions)."""
    return (
        type(model).__name__ == "CLIP"
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) == "argmax"
        and getattr(model.transformer, "batch_first", True)
        and all(
            type(b).__name__ == "ResidualAttentionBlock"
            and getattr(b.attn, "_qkv_same_embed_dim", False)
            and getattr(b.attn, "batch_first", False)
            and getattr(b, "ln_attn", None) is None
            for b in model.transformer.resblocks
        )
    )


def _encode_text_trimmed(model: Any, tokens: Any) -> Any:
    """open_clip's ``CLIP.encode_text`` for ``tokens`` cut after the last end token of the batch: the same
    positions, the same causal mask, sliced to the length given, and attention written with shapes the ONNX
    tracer keeps dynamic (``nn.MultiheadAttention`` bakes the traced length in). The export is checked against
    the full ``encode_text`` before it is used."""
    import torch
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:length].to(cast)
    mask = model.attn_mask[:length, :length].to(x.dtype)
    for block in model.transformer.resblocks:
        x = x + block.ls_1(_attention(block.attn, block.ln_1(x), mask))
        x = x + block.ls_2(block.mlp(block.ln_2(x)))
    x = text_global_pool(model.ln_final(x), tokens, "argmax")
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj


def _attention(attn: Any, x: Any, mask: Any) -> Any:
    """``nn.MultiheadAttention`` (batch first, self-attention, additive mask) on ``x`` ``[n, length, width]``."""
    import torch.nn.functional as F

    heads, width = attn.num_heads, attn.embed_dim
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.reshape(x.shape[0], -1, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return attn.out_proj(out.transpose(1, 2).reshape(x.shape[0], -1, width))


def _run(session: Any, tokens: np.ndarray) -> np.ndarray:
    """The exported text tower on ``tokens``; an export with a dynamic length gets them cut after the last end
    token (the highest id, as the tower pools it)."""
    if isinstance(session.shapes[0][1], str) and len(tokens):
        tokens = np.ascontiguousarray(tokens[:, : int(tokens.argmax(axis=1).max()) + 1])
    return np.asarray(session.run({"tokens": tokens}), dtype=np.float32)


class OpenClipEncoder(EncoderBase):
    """A CLIP model from open_clip_torch, text + image.

    The text tower is exported once to ONNX (with a ``tokenizers`` copy of open_clip's tokenizer) by the first
    process that loads the weights in torch on the CPU; later processes encode text in ONNX Runtime, and a
    process that only encodes text (a query) never imports torch or open_clip: the weights load in torch the
    first time a picture is encoded, and must then have the fingerprint the export was made from.
    """

    modalities = frozenset({TEXT, IMAGE})

    def __init__(self, spec: str, device: str | None = None, exported: _Export | None = None) -> None:
        arch, tag, ckpt = parse_spec(spec)
        self._spec, self._arch, self._tag, self._ckpt = spec, arch, tag, ckpt
        self._device = device
        self.name = f"{PREFIX}:{arch}@{ckpt}" if ckpt is not None else f"{PREFIX}:{arch}/{tag}"
        self._lock = threading.Lock()
        self._model: Any = None
        self._session: Any = None
        self._ids: ClipTokenizer | None = None
        if exported is not None and device in (None, "cpu"):
            from mmsearch.encoders import onnx_towers

            self.fingerprint, self.dim, self.image_size = exported.fingerprint, exported.dim, exported.image_size
            self._ids = ClipTokenizer(exported.tokenizer)
            self._session = onnx_towers.Session(exported.onnx)
            if self._session.inputs != ["tokens"]:
                raise ValueError(f"foreign export {exported.onnx}")
        else:
            self._load()
        self.feature_dims = {IMAGE: self.dim}  # a head trains on the image embedding itself

    @property
    def device(self) -> str:
        """Where the torch weights run (``cpu`` until they are loaded: text runs in ONNX Runtime)."""
        return self._device or "cpu"

    def _load(self) -> None:
        """Load the weights in torch (once), check them against an export already in use, export the text
        tower if it is not yet. Offline, weights that must be downloaded fail at once (one line, no retries,
        before torch is imported); cached ones load from the cache alone."""
        from mmsearch import hub

        arch, tag, ckpt = self._arch, self._tag, self._ckpt
        offline = ckpt is None and not hub.reachable()
        repo = HUB_REPOS.get((arch, tag or ""))
        if offline and repo is not None and hub.cached(repo, WEIGHT_FILES) is None:
            raise ModelError(_unreachable(arch, tag))
        import open_clip
        import torch

        if arch not in open_clip.list_models():
            raise ModelError(f"unknown OpenCLIP architecture {arch!r} (see `mmsearch models --all`)")
        if ckpt is not None and not ckpt.is_file():
            raise ModelError(f"OpenCLIP checkpoint not found: {ckpt}")
        device = self._device or torch_device()
        # offline: the cache only, nothing to retry against (the weights, and a Hugging Face tokenizer's files)
        with _env(HF_HUB_OFFLINE="1") if offline else contextlib.nullcontext():
            try:
                model, preprocess = _create(arch, tag, ckpt, device)
                tokenizer = open_clip.get_tokenizer(arch)
            except ModelError as e:
                if offline:
                    raise ModelError(_unreachable(arch, tag)) from e
                raise
            except Exception as e:  # the tokenizer's files (SigLIP's come from the hub)
                raise ModelError(f"cannot load the tokenizer of OpenCLIP model {arch}: {e}") from e
        size = open_clip.get_model_preprocess_cfg(model).get("size", 224)
        image_size = int(max(size) if isinstance(size, (tuple, list)) else size)
        fingerprint = fingerprint_torch(model)
        if self._session is not None and fingerprint != self.fingerprint:
            raise ModelError(
                f"the weights of {self.name} changed since its text tower was exported (fingerprint {fingerprint}, "
                f"was {self.fingerprint}): run the command again"
            )
        with torch.no_grad():
            dim = int(model.encode_text(tokenizer(["x"]).to(device)).shape[-1])
        self._torch, self._device, self.preprocess, self.tokenizer = torch, device, preprocess, tokenizer
        self.fingerprint, self.dim, self.image_size = fingerprint, dim, image_size
        self._model = model
        if self._session is None and device == "cpu":
            self._export()

    def _export(self) -> None:
        """Export the text tower and its tokenizer, remember what these weights are, open the export."""
        from mmsearch.encoders import clip_tokenizer, onnx_towers

        weights = _weights_file(self._arch, self._tag, self._ckpt)
        record = onnx_towers.record_file(_kind(self._arch), weights) if weights is not None else None
        if record is None or not onnx_towers.enabled():
            return
        info = {"fingerprint": self.fingerprint, "dim": self.dim, "image_size": self.image_size}
        if onnx_towers.read_record(record) == {**info, "onnx": False, "export": onnx_towers.EXPORT_VERSION}:
            return  # a process tried, with these weights, and could not: not at every start
        onnx = onnx_towers.cache_file(_kind(self._arch), self.fingerprint)
        tok_file = onnx_towers.tokenizer_file(onnx)
        opened = self._exported_text(onnx, tok_file)
        if opened is None:
            onnx_towers.remove(onnx)
            tok_file.unlink(missing_ok=True)
            clip_tokenizer.meta_path(tok_file).unlink(missing_ok=True)
        onnx_towers.write_record(record, {**info, "onnx": opened is not None})
        if opened is not None:
            self._session, self._ids = opened

    def _exported_text(self, onnx: Path, tok_file: Path) -> tuple[Any, ClipTokenizer] | None:
        """The text tower and its tokenizer exported (unless they are) and checked against torch, opened; None
        when this architecture cannot be (another tokenizer, an operator ONNX lacks, a mismatch)."""
        from mmsearch.encoders import clip_tokenizer, onnx_towers

        model, torch = self._model, self._torch
        try:
            clip_tokenizer.save(self.tokenizer, tok_file)
        except (clip_tokenizer.Unsupported, OSError):  # e.g. SigLIP's Hugging Face tokenizer
            return None
        example = self.tokenizer(["a photo of a dog", "x"])
        forward, dynamic = model.encode_text, {"tokens": {0: "n"}}
        if _trimmable(model):
            forward, dynamic = partial(_encode_text_trimmed, model), {"tokens": {0: "n", 1: "length"}}
            example = example[:, :9]
        if not onnx.is_file() and not onnx_towers.export(
            _kind(self._arch), self.fingerprint, forward, (example,), ("tokens",), dynamic, modules=(model,)
        ):
            return None
        try:
            session = onnx_towers.Session(onnx)
            ids = ClipTokenizer(tok_file)
            # every length the export will see: a batch, one short text alone, one past the context
            for texts in (["a photo of a dog", "x", ""], ["a cat"], ["naïve café 🐶 " * 30, "dog"]):
                with torch.no_grad():
                    want = l2_normalize(model.encode_text(self.tokenizer(texts)).float().numpy())
                tokens = ids(texts)
                got = l2_normalize(_run(session, tokens))
                if not (np.array_equal(tokens, self.tokenizer(texts).numpy()) and np.abs(got - want).max() <= 1e-4):
                    return None
        except Exception:  # ONNX Runtime's own error types: a file it cannot run
            return None
        return session, ids

    @property
    def model(self) -> Any:
        """open_clip's torch model (loaded now if only the text export was opened)."""
        return self._torch_model()

    def _torch_model(self) -> Any:
        with self._lock:
            if self._model is None:
                self._load()
        return self._model

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._session is not None and self._ids is not None:
            ids, session = self._ids, self._session
            parts = [_run(session, ids(texts[i : i + TEXT_BATCH])) for i in range(0, len(texts), TEXT_BATCH)]
            return l2_normalize(np.concatenate(parts).astype(np.float32, copy=False))
        model = self._torch_model()
        with self._torch.no_grad():
            tokens = self.tokenizer(list(texts)).to(self._device)
            out = model.encode_text(tokens).float().cpu().numpy()
        return l2_normalize(out)

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.image_features(images)[0]

    def image_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(normalised embeddings, raw embeddings): what trained heads read (``mmsearch train``)."""
        model = self._torch_model()
        with self._torch.no_grad():
            batch = self._torch.stack([self.preprocess(im) for im in images]).to(self._device)
            out = model.encode_image(batch).float().cpu().numpy()
        return l2_normalize(out), np.ascontiguousarray(out, dtype=np.float32)


def list_pretrained() -> list[tuple[str, str, int | None]]:
    """(arch, tag, embed dim) for every pretrained OpenCLIP model; no downloads."""
    import open_clip

    out = []
    for arch, tag in open_clip.list_pretrained():
        cfg = open_clip.get_model_config(arch) or {}
        out.append((arch, tag, cfg.get("embed_dim")))
    return out
