"""Serving an indexed item's file and its preview, only while the file is still the one indexed."""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from fastapi import HTTPException
from fastapi.responses import Response, StreamingResponse

from mmsearch.errors import MediaError
from mmsearch.files import clamp_int64, file_version, open_regular
from mmsearch.modalities import get

THUMBNAIL_SIZE = 320


def open_indexed(item: Any) -> BinaryIO:
    """An indexed item's file, opened only if it is still the file that was indexed.

    A name swapped for a symbolic link to ``/etc/shadow``, a pipe, or another file since indexing is
    refused: the opened descriptor must be a regular file with the indexed inode, size and mtime.

    Raises:
        HTTPException: 404 when it cannot be opened as a regular file, 409 when it changed.
    """
    try:
        f = open_regular(item.path, follow_symlinks=item.inode is not None)
    except MediaError as e:
        raise HTTPException(404, f"item {item.id}'s file cannot be served ({e}): re-run `mmsearch index`") from e
    st = os.fstat(f.fileno())
    same = file_version(st) == (item.size, item.mtime_ns) and item.inode in (None, clamp_int64(st.st_ino))
    if not same:
        f.close()
        raise HTTPException(409, f"item {item.id}'s file changed since it was indexed: re-run `mmsearch index`")
    return f


def file_response(item: Any, range_header: str | None) -> Response:
    """Stream the item's file (one byte range when asked), as the type its modality declares (never one a
    browser executes: anything else is a download)."""
    f = open_indexed(item)
    size = os.fstat(f.fileno()).st_size
    media_type = get(item.modality).media_type(item.path)
    disposition = "inline" if media_type else "attachment"
    name = quote(os.path.basename(item.path), safe="")
    headers = {
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{name}",
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=60",
    }
    start, end, status = 0, size - 1, 200
    if range_header:
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
        if m is None or m.group(1) == m.group(2) == "":
            f.close()
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if m.group(1) == "":  # the last N bytes
            start = max(0, size - int(m.group(2)))
        else:
            start = int(m.group(1))
            if m.group(2):
                end = min(end, int(m.group(2)))
        if start >= size or start > end:
            f.close()
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)

    def chunks() -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (block := f.read(min(256 * 1024, left))):
                left -= len(block)
                yield block

    return StreamingResponse(
        chunks(), status_code=status, media_type=media_type or "application/octet-stream", headers=headers
    )


def thumbnail(folder: Path, item: Any, at: float | None = None) -> bytes:
    """A JPEG preview of at most THUMBNAIL_SIZE px from the item's modality, cached by item id and file
    version (a damaged cache file is made again).

    Raises:
        HTTPException: 404 when the item has no preview or its file cannot be read.
    """
    from PIL import Image

    tag = "" if at is None else f"-t{at:.2f}"
    path = folder / f"{item.id}-{item.size}-{item.mtime_ns}{tag}.jpg"
    try:
        cached = path.read_bytes()
        if cached.startswith(b"\xff\xd8") and cached.endswith(b"\xff\xd9"):
            return cached
    except OSError:
        pass
    modality = get(item.modality)
    with open_indexed(item) as f:
        try:
            im = modality.thumbnail(f, THUMBNAIL_SIZE, at)
        except MediaError as e:
            raise HTTPException(404, f"item {item.id}: {e}") from e
    if im is None:
        raise HTTPException(404, f"item {item.id} is not a picture")
    im.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    try:
        folder.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only index dir: serve without caching
    return data
