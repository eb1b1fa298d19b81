"""Request bodies (they make the OpenAPI spec), and uploaded files as what the engine reads."""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import HTTPException
from pydantic import BaseModel, Field

from mmsearch.search.query import MAX_PARTS, MAX_RESULTS

MAX_ID = 2**63 - 1  # SQLite INTEGER


class PartIn(BaseModel):
    kind: str = Field("text", description="text, image, audio (any modality the index holds)")
    text: str | None = Field(None, description="for kind=text (the query grammar applies)")
    data: str | None = Field(None, description="base64 file content for the other kinds")
    weight: float = Field(1.0, gt=0, le=1e6)
    negative: bool = False


class SearchIn(BaseModel):
    text: str | None = Field(None, description='query text: "cat + sunset - water", "2:dog + 0.5:beach"')
    parts: list[PartIn] = Field(default_factory=list, max_length=MAX_PARTS)
    target: str | None = Field(None, description="image, text, audio (a modality) or any")
    k: int = Field(10, ge=1, le=MAX_RESULTS)
    offset: int = Field(0, ge=0, le=MAX_RESULTS)
    fusion: str = "sum"
    path: str | None = None
    after: str | None = Field(None, description="YYYY-MM-DD")
    before: str | None = Field(None, description="YYYY-MM-DD")
    min_score: float | None = None
    dedupe: bool = False
    explain: bool = False

    def fields(self) -> dict[str, Any]:
        """Everything but the text and parts: the :class:`~mmsearch.search.Query` fields as given."""
        return self.model_dump(exclude={"text", "parts"})


class EmbedIn(BaseModel):
    text: str | list[str] | None = None
    image: str | None = Field(None, description="base64 image file")
    audio: str | None = Field(None, description="base64 audio file")
    target: str | None = Field(
        None, description="the modality whose space the vectors are for (default: the input's own; composites)"
    )


class OpenAIEmbeddingsIn(BaseModel):
    input: str | list[str]
    model: str | None = None
    encoding_format: str | None = "float"
    dimensions: int | None = None
    user: str | None = None


class MetadataIn(BaseModel):
    ids: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(max_length=10_000)
    indice_name: str | None = None


def b64(data: str, what: str) -> bytes:
    """A base64 field (or a browser's ``data:`` URL) as bytes; 400 when it is not."""
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise HTTPException(400, f"{what} is not valid base64") from e
    if not raw:
        raise HTTPException(400, f"{what} is empty")
    return raw


class Uploads:
    """Uploaded files as temp files the modalities read like any query file; removed on close."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def file(self, raw: bytes) -> Path:
        fd, name = tempfile.mkstemp(prefix="mmsearch-upload-", suffix=".upload")
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        self.paths.append(name)
        return Path(name)

    def __enter__(self) -> Uploads:
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.paths:
            try:
                os.unlink(p)
            except OSError:
                pass
