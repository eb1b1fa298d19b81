"""The modalities mmsearch indexes, each one unit behind one protocol, registered by name.

``register(MyModality())`` adds one (a plugin, or a test): its file kinds are then walked, read,
embedded, searched and served like the built-in ones. Order matters where two could claim a file
(the last registered wins) and for ``--target any`` (listed in registration order).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mmsearch.errors import QueryError
from mmsearch.modalities.base import (
    CAPTION,
    NAME,
    OCR,
    OWN,
    VECTOR,
    BaseModality,
    Modality,
    Pending,
    ReadJob,
    Space,
    name_words,
    split_space,
)

if TYPE_CHECKING:
    from mmsearch.encoders.towers import Towers

__all__ = [
    "CAPTION",
    "NAME",
    "OCR",
    "OWN",
    "VECTOR",
    "BaseModality",
    "Modality",
    "Pending",
    "ReadJob",
    "Space",
    "all_modalities",
    "for_path",
    "get",
    "indexable",
    "name_words",
    "register",
    "space",
    "unregister",
]

_registry: dict[str, Modality] = {}
_lock = threading.Lock()


def register(modality: Modality) -> None:
    """Add a modality under ``modality.name``, after those already registered (or in the place of the
    one it replaces)."""
    _builtins()
    with _lock:
        _registry[modality.name] = modality


def unregister(name: str) -> None:
    with _lock:
        _registry.pop(name, None)


def all_modalities() -> list[Modality]:
    """Every registered modality, in registration order."""
    _builtins()
    return list(_registry.values())


def get(name: str) -> Modality:
    """The modality called ``name``.

    Raises:
        QueryError: no such modality (the message lists the known ones).
    """
    _builtins()
    try:
        return _registry[name]
    except KeyError:
        raise QueryError(f"unknown kind {name!r}: one of {', '.join(_registry)}") from None


def for_path(path: str) -> Modality | None:
    """The modality that claims a file by its extension: the last registered one that does, so a later
    modality takes over a kind from an earlier one (video takes ``.webm`` from audio)."""
    import os

    ext = os.path.splitext(path)[1].lower()
    return next((m for m in reversed(all_modalities()) if ext in m.extensions()), None)


def indexable(towers: Towers) -> list[Modality]:
    """The modalities the towers can embed, in registration order."""
    return [m for m in all_modalities() if m.indexable(towers)]


def space(name: str) -> Space:
    """The Space a stored name (``image.caption``) stands for, with its modality's fusion weight."""
    _builtins()
    modality, kind = split_space(name)
    known = _registry.get(modality)
    found = next((s for s in known.spaces if s.kind == kind), None) if known is not None else None
    return found or Space(modality, kind)


_loaded = False


def _builtins() -> None:
    """Register image, text and audio on first use (keeps ``import mmsearch`` light)."""
    global _loaded
    if _loaded:
        return
    with _lock:
        if _loaded:
            return
        from mmsearch.modalities.audio import AudioModality
        from mmsearch.modalities.image import ImageModality
        from mmsearch.modalities.text import TextModality
        from mmsearch.modalities.video import VideoModality

        for m in (ImageModality(), TextModality(), AudioModality(), VideoModality()):
            _registry[m.name] = m
        _loaded = True
