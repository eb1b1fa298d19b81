"""Pictures: decoded by content among allowed formats, upright, only as large as the model looks, within a
process-wide pixel budget; embedded by the image tower, with caption, file-name and OCR text vectors."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import warnings
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from mmsearch.encoders import IMAGE
from mmsearch.errors import MediaError, QueryError
from mmsearch.files import hash_stream
from mmsearch.memory import trim_memory
from mmsearch.modalities.base import CAPTION, NAME, OCR, BaseModality, Pending, ReadJob, Space, check_version

if TYPE_CHECKING:
    from mmsearch.encoders.towers import Towers

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
HEIF_EXTS = frozenset({".heic", ".heif"})
# Refuse images over this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 120_000_000
# Decoded images are reduced to about this size: models look at 224-448 px.
DECODE_SIZE = 512


def heif_available() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def image_exts() -> frozenset[str]:
    return IMAGE_EXTS | HEIF_EXTS if heif_available() else IMAGE_EXTS


@dataclass
class DecodedImage:
    image: Image.Image
    width: int
    height: int
    taken_at: float | None = None  # EXIF DateTimeOriginal (local time read as UTC), epoch seconds


def exif_time(exif: Image.Exif) -> float | None:
    """EXIF DateTimeOriginal (or DateTime) as epoch seconds; None when absent or malformed."""
    from datetime import UTC, datetime

    try:
        value = exif.get_ifd(0x8769).get(0x9003) or exif.get(0x0132)
    except (KeyError, ValueError, TypeError, OSError):
        return None
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip()[:19], "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


# The formats decoded, whatever a file's name says (content decides among these): Pillow knows ~40 more,
# some with decoders nobody should run on a stranger's file (EPS runs Ghostscript where installed).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers phones' MPO files
HEIF_FORMATS = ("HEIF",)
# Files larger than this are not read as pictures: a 120-megapixel image compresses far below it, and
# reading (hashing) a multi-GB file named .jpg costs seconds for nothing.
MAX_IMAGE_BYTES = 256 << 20
# Decoded pixels held at once by all decoding threads together (indexing workers, server requests): one
# 9000x9000 PNG decodes full size before it can be reduced, and eight of them at once would need GBs.
PIXEL_BUDGET = 100_000_000
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "PA", "RGBa", "La"})


class PixelBudget:
    """A counting semaphore over decoded pixels, shared by every thread of the process.

    A picture takes ``min(pixels, capacity)`` units while it decodes, so a huge one waits until it can
    decode alone and small ones run side by side.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free = capacity
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        need = max(1, min(int(pixels), self.capacity))
        with self._cond:
            self._cond.wait_for(lambda: self._free >= need)
            self._free -= need
        try:
            yield
        finally:
            with self._cond:
                self._free += need
                self._cond.notify_all()


PIXELS = PixelBudget(PIXEL_BUDGET)


@contextlib.contextmanager
def _pillow() -> Iterator[None]:
    """Pillow's warnings off the terminal, a decompression bomb refused, and its errors as one MediaError line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels are fine
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except UnidentifiedImageError as e:
        raise MediaError("not a readable image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("image too large (decompression bomb)") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise MediaError(f"broken image ({e})") from e


def image_formats() -> tuple[str, ...]:
    return IMAGE_FORMATS + HEIF_FORMATS if heif_available() else IMAGE_FORMATS


def check_image(f: BinaryIO) -> None:
    """Refuse, from its header alone, a file that is no picture of an allowed format or is too large.

    Reads a few KB: a multi-GB file named ``.jpg`` is turned away before it is hashed or decoded.
    The file is left at its start.

    Raises:
        MediaError: not an image of IMAGE_FORMATS, or over MAX_PIXELS.
    """
    try:
        with _pillow(), Image.open(f, formats=image_formats()) as im:
            width, height = im.size
    finally:
        f.seek(0)
    if width * height > MAX_PIXELS:
        raise MediaError(f"image too large ({width}x{height} pixels, limit {MAX_PIXELS:,})")


def decode_image(source: bytes | BinaryIO, size: int = DECODE_SIZE) -> DecodedImage:
    """Decode an image (bytes or a file open for reading) to an upright RGB picture of about ``size`` px.

    Only the formats in :data:`IMAGE_FORMATS` are tried, by content. JPEGs use Pillow's draft mode (DCT
    scaling), so a 24 MP photo decodes at a fraction of the cost; other formats are reduced right after
    decoding, and every decode holds its pixels in :data:`PIXELS`, so memory stays bounded whatever
    the pictures and the number of threads.

    Raises:
        MediaError: empty, not an image of an allowed format, truncated, or over MAX_PIXELS.
    """
    if isinstance(source, bytes | bytearray):
        if not source:
            raise MediaError("empty file")
        source = io.BytesIO(source)
    with _pillow():
        im: Image.Image = Image.open(source, formats=image_formats())
        width, height = im.size
        if width * height > MAX_PIXELS:
            raise MediaError(f"image too large ({width}x{height} pixels, limit {MAX_PIXELS:,})")
        if im.format in ("JPEG", "MPO"):
            im.draft("RGB", (size, size))
        with PIXELS.hold(im.size[0] * im.size[1]):
            im.load()  # the full decode: truncation surfaces here
            exif = im.getexif()  # after load: a PNG's eXIf chunk may follow its pixels (getexif loads them)
            orientation = exif.get(0x0112, 1)
            taken_at = exif_time(exif)
            if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                im = im.convert("I")
            if im.mode == "I":
                im = im.point(lambda v: v * (1 / 256)).convert("L")  # 16-bit grey -> 8-bit
            if im.mode not in _REDUCIBLE:
                im = im.convert("RGB")
            factor = max(im.size) // (2 * size)
            if factor >= 2:
                im = im.reduce(factor)  # cheap box filter; the thumbnail below smooths the rest
            im = im.convert("RGB")
            if max(im.size) > 2 * size:
                im.thumbnail((2 * size, 2 * size), Image.Resampling.BICUBIC)
        if orientation in _ORIENT:
            im = im.transpose(_ORIENT[orientation])
        if orientation in (5, 6, 7, 8):
            width, height = height, width
    if width * height >= 16_000_000:
        trim_memory()  # hand a big decode's memory back (a server must not keep its peak)
    return DecodedImage(im, width, height, taken_at)


def load_image(path: str | os.PathLike[str]) -> Image.Image:
    """Read and decode an image file the user named (an image query, a pairs file's picture)."""
    from mmsearch.files import open_regular

    with open_regular(path, follow_symlinks=True) as f:
        if os.fstat(f.fileno()).st_size > MAX_IMAGE_BYTES:
            raise MediaError(f"too large for a picture (limit {MAX_IMAGE_BYTES >> 20} MiB)")
        return decode_image(f).image


class ImageModality(BaseModality):
    name = IMAGE
    label = ("picture", "pictures")
    spaces = (Space(IMAGE), Space(IMAGE, CAPTION, 1.0), Space(IMAGE, NAME, 0.5), Space(IMAGE, OCR, 1.0))
    owns_caption = True
    thumbnails = True
    media_types = {
        ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp",
        ".gif": "image/gif", ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff",
        ".heic": "image/heic", ".heif": "image/heif",
    }  # fmt: skip

    def extensions(self) -> frozenset[str]:
        return image_exts()

    def indexable(self, towers: Towers) -> bool:
        return towers.get(IMAGE) is not None

    def read(self, f: BinaryIO, item: Pending, job: ReadJob) -> None:
        if item.size > MAX_IMAGE_BYTES:
            raise MediaError(f"too large for a picture ({item.size >> 20} MiB, limit {MAX_IMAGE_BYTES >> 20} MiB)")
        if item.size == 0:
            raise MediaError("empty file")
        check_image(f)  # by its header: not a picture, or too many pixels, is refused before hashing
        item.content_hash, read = hash_stream(f, item.size)
        if read != item.size:
            from mmsearch.errors import CHANGED_WHILE_READ

            raise MediaError(CHANGED_WHILE_READ)
        reused = job.reusable(item.content_hash)
        if reused is not None:  # same bytes: the same upright size, date and text as when decoded
            item.adopt(reused)
        else:
            f.seek(0)
            decoded = decode_image(f, size=job.decode_size)
            item.payload = decoded.image
            item.attrs.width, item.attrs.height, item.attrs.taken_at = decoded.width, decoded.height, decoded.taken_at
        if job.ocr and item.attrs.ocr_text is None:
            from mmsearch.ocr import read_text

            f.seek(0)
            picture = item.payload if item.payload is not None else decode_image(f).image
            item.attrs.ocr_text = read_text(picture)
        if item.attrs.ocr_text:
            item.texts[OCR] = item.attrs.ocr_text
        check_version(f, item)

    def embed(self, batch: Sequence[Pending], towers: Towers, job: ReadJob) -> None:
        need = [x for x in batch if x.vector is None]
        if need:
            vecs = towers.need(IMAGE).encode_image([x.payload for x in need])
            for x, v in zip(need, vecs, strict=True):
                x.vector, x.payload, x.fresh = v, None, True

    def embed_query(self, value: Any, towers: Towers, roles: Collection[str]) -> dict[str, np.ndarray]:
        return self.embed_query_batch([value], towers, roles)[0]

    def embed_query_batch(
        self, values: Sequence[Any], towers: Towers, roles: Collection[str]
    ) -> list[dict[str, np.ndarray]]:
        reach = {r: enc for r in roles if (enc := towers.get(r)) is not None and IMAGE in enc.modalities}
        if not reach:
            return [{} for _ in values]
        pictures = [_query_picture(v) for v in values]
        # one call per encoder for all the pictures
        by_encoder = {id(enc): enc.encode_image(pictures) for enc in reach.values()}
        return [{r: by_encoder[id(enc)][i][None] for r, enc in reach.items()} for i in range(len(pictures))]

    def about(self, metadata: Mapping[str, Any]) -> str:
        text = metadata.get("caption") or metadata.get("excerpt")
        if text:
            return str(text)
        return f"{metadata['width']}x{metadata['height']}" if "width" in metadata else ""

    def thumbnail(self, f: BinaryIO, size: int, at: float | None = None) -> Image.Image | None:
        return decode_image(f, size=size).image


def _query_picture(value: Any) -> Image.Image:
    """A query picture (a path, or a PIL image) as RGB.

    Raises:
        QueryError: the file cannot be used.
    """
    if isinstance(value, str | os.PathLike):
        try:
            return load_image(value)
        except MediaError as e:
            raise QueryError(f"cannot use {value} as a query image: {e}") from e
    return value.convert("RGB")
