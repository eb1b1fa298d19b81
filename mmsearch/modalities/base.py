"""The Modality protocol, the Space type, and what an item carries between the ingest stages.

A modality is one unit: the file kinds it claims, how a file is read and decoded (in a worker thread),
which encoder tower embeds it (in the main thread, batched), the extra text vectors it owns (a caption,
the words of its file name, text read in it), the metadata it keeps and shows, how a query part of its
kind is embedded, and its preview for the server. The pipelines call these; they never ask "is this an
image?".
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import numpy as np

from mmsearch.errors import MediaError
from mmsearch.store.records import Attrs

if TYPE_CHECKING:
    from PIL import Image

    from mmsearch.encoders.towers import Towers
    from mmsearch.store import Item
    from mmsearch.store.records import Reusable, SegmentRecord

OWN = "own"
CAPTION = "caption"
NAME = "name"
OCR = "ocr"
SPEECH_KIND = "speech"  # what is said in a recording or a film, as text vectors
SOUND_KIND = "sound"  # a recording's sound-to-sound similarity vector
TEXT_DERIVED = frozenset({CAPTION, NAME, OCR, SPEECH_KIND})
CONTENT_KINDS = frozenset({SPEECH_KIND, SOUND_KIND})  # extra vectors of the bytes themselves: reused with them
VECTOR = "vector"  # a query part given as a vector in the index's space (clip-retrieval's embedding_input)


@dataclass(frozen=True)
class Space:
    """One set of vectors, with its own FAISS index: a modality's own vectors, or one kind of extra vector.

    Attributes:
        modality: The modality whose items own these vectors.
        kind: ``own`` (the item's content), or an extra kind: ``caption``, ``name``, ``ocr``, ``speech``
            (text vectors), ``sound`` (sound-to-sound similarity).
        weight: Its share in fusion, relative to the item's own vector (1.0).
        tower: The role whose encoder embeds its vectors, and the query parts compared with them
            (:mod:`mmsearch.encoders.towers`): text-derived kinds are ``text``.
        answers: Query part kinds for which this space stands for the item instead of its own space (a
            recording's ``sound`` space answers query sounds: "which recording is this one"); such a
            space is compared with those kinds only, and is what de-duplication compares.
    """

    modality: str
    kind: str = OWN
    weight: float = 1.0
    tower: str = ""
    answers: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.tower:  # own vectors: the modality's own role; text-derived ones: text
            role = "text" if self.kind in TEXT_DERIVED else self.kind if self.kind == SOUND_KIND else self.modality
            object.__setattr__(self, "tower", role)

    @property
    def name(self) -> str:
        """The name SQLite and the FAISS file carry: ``image``, ``image.caption``."""
        return self.modality if self.kind == OWN else f"{self.modality}.{self.kind}"

    @property
    def own(self) -> bool:
        return self.kind == OWN

    @property
    def text_derived(self) -> bool:
        """Embedded from text (caption, name, OCR, speech): only text query parts are compared with it, and
        its scores are calibrated against text in general."""
        return self.kind in TEXT_DERIVED

    @property
    def extra(self) -> bool:
        return self.kind != OWN

    def __str__(self) -> str:
        return self.name


def split_space(name: str) -> tuple[str, str]:
    """``image.caption`` -> (``image``, ``caption``); ``image`` -> (``image``, ``own``)."""
    modality, _, kind = name.partition(".")
    return modality, kind or OWN


@dataclass
class Pending:
    """One file on its way through ingest: read and decoded in a worker, embedded in the main thread."""

    path: str
    modality: str
    size: int
    mtime_ns: int
    inode: int | None
    content_hash: str = ""
    payload: Any = None  # what the modality's embed step takes; None once embedded or when reused
    vector: np.ndarray | None = None
    attrs: Attrs = field(default_factory=Attrs)
    segments: Sequence[SegmentRecord] = ()
    texts: dict[str, str] = field(default_factory=dict)  # extra kind -> text to embed (ocr; caption and name added)
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # extra space name -> its vector
    caption: str | None = None
    caption_path: str | None = None
    caption_sig: str | None = None
    fresh: bool = False  # embedded in this run (not reused)
    error: str | None = None  # the embed step could not embed it: skipped with this reason
    note: str | None = None  # indexed, with something the run's summary should say (a long video sampled sparsely)

    def adopt(self, reused: Reusable) -> None:
        """Take over what a file with the same content was given: no decoding, no model call."""
        self.vector = reused.vector
        self.attrs = replace(reused.attrs, info=dict(reused.attrs.info))  # its own copy: steps after may add to it
        self.segments = reused.segments
        # what came from the content (speech, sound similarity) comes along; caption and name are the file's
        self.extras.update({k: v for k, v in reused.extras.items() if split_space(k)[1] in CONTENT_KINDS})


@dataclass
class ReadJob:
    """What a modality's read step may use: the run's settings and its view of the store."""

    reusable: Callable[[str], Reusable | None]  # content hash -> what an indexed copy holds
    open: Callable[[str], BinaryIO]  # a file of the tree, opened safely (mmsearch.files.open_regular)
    decode_size: int = 512  # pictures are decoded about this large
    ocr: bool = False
    stopped: Callable[[], bool] = lambda: False


class Modality(Protocol):
    """One kind of item. Registered with :func:`mmsearch.modalities.register`.

    Attributes:
        name: The items' modality and the name of their own space (``image``).
        label: (singular, plural) for people: ``("picture", "pictures")``.
        spaces: Its spaces, its own first; extra kinds (``caption``, ``name``, ``ocr``) get text vectors.
        owns_caption: A text file named after one of its items (``a.jpg`` + ``a.txt``) is that item's caption.
        batch: Items per embed call: None for the run's ``--batch-size``, 1 for one file at a time (long
            recordings).
        text_like: Its own vectors are text embeddings (notes): they join the text population that
            calibrates every text-derived space.
        segmented: Its items keep time-stamped segments; a hit reports the one that matches best.
        thumbnails: ``thumbnail`` gives a picture of its items (the server's ``/items/ID/thumbnail``).
        player: How a browser plays its file (``audio``, ``video``), or None.
        becomes: Other modalities its files may turn out to be (a video file with no picture is a sound):
            ``read`` then sets ``item.modality``, and a later run does not take that for a change.
        moments: Segment kinds whose best match stands for the item in ranking (a film's frames and
            spoken lines: the one scene that matches counts in full); empty to rank by the own vector.
        role: The tower role of its own vectors (``image`` for pictures and film frames).
        segment_roles: The tower role of each kind of segment it keeps (``speech`` is ``text``).
    """

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    @property
    def segment_roles(self) -> Mapping[str, str]: ...

    @property
    def label(self) -> tuple[str, str]: ...

    @property
    def spaces(self) -> tuple[Space, ...]: ...

    @property
    def owns_caption(self) -> bool: ...

    @property
    def batch(self) -> int | None: ...

    @property
    def text_like(self) -> bool: ...

    @property
    def segmented(self) -> bool: ...

    @property
    def thumbnails(self) -> bool: ...

    @property
    def player(self) -> str | None: ...

    @property
    def becomes(self) -> tuple[str, ...]: ...

    @property
    def moments(self) -> frozenset[str]: ...

    def extensions(self) -> frozenset[str]:
        """File kinds it claims, lower-case with the dot (``.jpg``); may depend on what is installed."""
        ...

    def indexable(self, towers: Towers) -> bool:
        """Whether the index's towers have what it takes to embed these items."""
        ...

    def read(self, f: BinaryIO, item: Pending, job: ReadJob) -> None:
        """In a worker thread: hash ``f`` (already opened and checked), then reuse or decode into ``item``.

        Raises:
            MediaError: the file is not one of its kind (a skip, with the reason).
        """
        ...

    def embed(self, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
        """In the main thread: give every item of ``batch`` whose ``vector`` is None a vector in its own
        role's space (and segments, attributes, extra vectors of non-text kinds), or an ``error``."""
        ...

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        """A query part of this kind (text, a path, a picture), as a ``[1, dim]`` vector in each of ``roles``'
        spaces it can reach (a sound reaches a text space through what is said in it; one with no words
        does not): a role it cannot reach is absent.

        Raises:
            QueryError: the file cannot be used.
        """
        ...

    def embed_query_batch(
        self, values: Sequence[Any], towers: Towers, roles: Collection[str]
    ) -> list[dict[str, np.ndarray]]:
        """Several query parts of this kind at once, each as :meth:`embed_query` gives it (the same vectors,
        to float rounding): concurrent queries share one tower call where the tower allows.

        Raises:
            QueryError: a file cannot be used (callers retry one by one to tell whose).
        """
        ...

    def embed_queries(self, values: Sequence[Any], towers: Towers, role: str) -> np.ndarray:
        """Several values of this kind as ``[n, dim]`` in ``role``'s space (``Engine.embed``, the server's
        /embed): batched where the tower allows.

        Raises:
            ModelError: ``role``'s space cannot hold this kind.
        """
        ...

    def metadata(self, item: Item) -> dict[str, Any]:
        """What a hit shows in ``--json`` and the API."""
        ...

    def about(self, metadata: Mapping[str, Any]) -> str:
        """One short line for the CLI's ``about`` column."""
        ...

    def media_type(self, path: str) -> str | None:
        """The HTTP type its file is served as; None: served as a download."""
        ...

    def thumbnail(self, f: BinaryIO, size: int, at: float | None = None) -> Image.Image | None:
        """A picture of the item (at second ``at`` for timed media); None when it has none."""
        ...


class BaseModality:
    """What most modalities share: metadata, captions and names as extra texts, refusals."""

    name = "?"
    label = ("item", "items")
    spaces: tuple[Space, ...] = ()
    owns_caption = False
    batch: int | None = None
    text_like = False
    segmented = False
    thumbnails = False
    player: str | None = None
    becomes: tuple[str, ...] = ()
    moments: frozenset[str] = frozenset()
    segment_roles: Mapping[str, str] = {}
    media_types: Mapping[str, str] = {}

    @property
    def role(self) -> str:
        return self.spaces[0].tower if self.spaces else self.name

    def extensions(self) -> frozenset[str]:
        return frozenset(self.media_types)

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def embed_query_batch(
        self, values: Sequence[Any], towers: Towers, roles: Collection[str]
    ) -> list[dict[str, np.ndarray]]:
        return [self.embed_query(v, towers, roles) for v in values]

    def embed_queries(self, values: Sequence[Any], towers: Towers, role: str) -> np.ndarray:
        from mmsearch.errors import ModelError

        dim = towers.need(role).dim
        out = []
        for v in values:
            got = self.embed_query(v, towers, [role]).get(role)
            if got is None:
                raise ModelError(f"model {towers.name} cannot embed {self.label[1]} into its {role} space")
            out.append(got)
        return np.concatenate(out) if out else np.zeros((0, dim), dtype=np.float32)

    def metadata(self, item: Item) -> dict[str, Any]:
        meta: dict[str, Any] = {"size": item.size, "mtime": _iso(item.mtime_ns / 1e9)}
        if item.width is not None:
            meta["width"], meta["height"] = item.width, item.height
        if item.duration is not None:
            meta["duration"] = round(float(item.duration), 3)
        if item.caption:
            meta["caption"] = item.caption
        if item.ocr_text:
            meta["ocr_text"] = item.ocr_text
        if item.taken_at is not None:
            meta["taken"] = _iso(item.taken_at)
        if item.excerpt:
            meta["excerpt"] = item.excerpt
        meta.update(item.info or {})
        return meta

    def about(self, metadata: Mapping[str, Any]) -> str:
        return str(metadata.get("caption") or metadata.get("excerpt") or "")

    def media_type(self, path: str) -> str | None:
        return self.media_types.get(os.path.splitext(path)[1].lower())

    def thumbnail(self, f: BinaryIO, size: int, at: float | None = None) -> Image.Image | None:
        return None

    def space(self, kind: str) -> Space | None:
        return next((s for s in self.spaces if s.kind == kind), None)


def _iso(seconds: float) -> str:
    try:
        return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):  # a clamped mtime far outside what datetime holds
        return "unknown"


def check_version(f: BinaryIO, item: Pending) -> None:
    """The open file is still the one the walk saw and the worker hashed (size, mtime, inode).

    Raises:
        MediaError: it changed (a copy still in progress): indexed on the next run.
    """
    from mmsearch.errors import CHANGED_WHILE_READ
    from mmsearch.files import clamp_int64, file_version

    st = os.fstat(f.fileno())
    moved = item.inode is not None and clamp_int64(st.st_ino) != item.inode
    if moved or file_version(st) != (item.size, item.mtime_ns):
        raise MediaError(CHANGED_WHILE_READ)


_SKIP_WORDS = frozenset(
    {"img", "dsc", "dscn", "dscf", "pxl", "mvimg", "vid", "image", "photo", "pic", "copy", "edit", "final", "new"}
    | {"of", "the", "and", "to", "in", "on", "at", "by", "for", "with"}
)


def name_words(path: str) -> str:
    """Meaningful words of a file name: ``golden_retriever-beach2.jpg`` -> ``golden retriever beach``.

    Camera names (``IMG_2041``, ``DSC00012``), numbers, hash-like chunks and little words give nothing.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    chunks = [c for c in re.split(r"[\s._-]+", stem) if not re.fullmatch(r"[0-9a-fA-F]{8,}", c)]
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", " ".join(chunks))  # camelCase
    words = [t.lower() for t in re.split(r"[^A-Za-z]+", text)]
    return " ".join(t for t in words if len(t) >= 2 and t not in _SKIP_WORDS)
