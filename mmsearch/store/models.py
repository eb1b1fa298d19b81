"""SQLAlchemy 2.0 models. The SQLite ``items.id`` is the FAISS id of the item's vectors."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Meta(Base):
    """Index-level settings: schema version, model, dim, recipe, per-space generations."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Item(Base):
    """One indexed file. Sidecar captions belong to their image; they are not items."""

    __tablename__ = "items"
    # AUTOINCREMENT: ids of deleted items are never reused, so a stale FAISS vector can never
    # be mistaken for a new file.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(Text, unique=True)
    modality: Mapped[str] = mapped_column(String(16), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    excerpt: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text)
    caption_path: Mapped[str | None] = mapped_column(Text)
    caption_sig: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="ok")
    indexed_at: Mapped[float] = mapped_column(Float)
    duration: Mapped[float | None] = mapped_column(Float)  # seconds, audio only (m002)
    # text read by OCR: NULL = not read, "" = none found (m003)
    ocr_text: Mapped[str | None] = mapped_column(Text)
    taken_at: Mapped[float | None] = mapped_column(Float)  # EXIF DateTimeOriginal, epoch seconds (m003)
    # the file's inode when indexed: a file served later must still be this one, not a link swapped in (m004)
    inode: Mapped[int | None] = mapped_column(BigInteger)
    # what is the modality's own (a video's fps and codec), as JSON (m005)
    info: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Vector(Base):
    """An item's vector in one space. SQLite keeps them so FAISS can always be rebuilt from here.

    ``space`` is a :class:`mmsearch.modalities.Space` name: a modality's own (``image``) or one kind of
    extra vector its items own (``image.caption``); the store does not interpret it.
    """

    __tablename__ = "vectors"
    # one space's rows in id order, without scanning the others (counts, rebuilds, samples; m004)
    __table_args__ = (Index("ix_vectors_space", "space", "item_id"),)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    space: Mapped[str] = mapped_column(String(16), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Segment(Base):
    """A time-stamped stretch of an item (spoken words with their text, a window of sound), with its vector.

    The item's own vector (in ``vectors``) pools these; a hit uses them to say *where* it matched.
    """

    __tablename__ = "segments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(16))  # what its modality calls it: "speech", "sound", "frame"
    text: Mapped[str | None] = mapped_column(Text)
    data: Mapped[bytes] = mapped_column(LargeBinary)
