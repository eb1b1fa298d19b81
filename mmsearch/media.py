"""Decoding files into what encoders take. Every failure is a MediaError with a short reason."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, UnidentifiedImageError

from mmsearch.errors import MediaError
from mmsearch.memory import trim_memory

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
HEIF_EXTS = frozenset({".heic", ".heif"})
TEXT_EXTS = frozenset({".txt", ".md"})

# Refuse images over this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 120_000_000
# Text items: the first MiB is read and embedded, the first EXCERPT_CHARS kept for display.
MAX_TEXT_BYTES = 1 << 20
EXCERPT_CHARS = 400
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


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=20).hexdigest()


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f, formats=image_formats()) as im:
                width, height = im.size
    except UnidentifiedImageError as e:
        raise MediaError("not a readable image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("image too large (decompression bomb)") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise MediaError(f"broken image ({e})") from e
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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels are fine
            warnings.simplefilter("error", Image.DecompressionBombWarning)
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
    except MediaError:
        raise
    except UnidentifiedImageError as e:
        raise MediaError("not a readable image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("image too large (decompression bomb)") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise MediaError(f"broken image ({e})") from e
    if width * height >= 16_000_000:
        trim_memory()  # hand a big decode's memory back (a server must not keep its peak)
    return DecodedImage(im, width, height, taken_at)


def load_image(path: str | Path) -> Image.Image:
    """Read and decode an image file the user named (an image query)."""
    from mmsearch.files import open_regular

    try:
        with open_regular(path, follow_symlinks=True) as f:
            if os.fstat(f.fileno()).st_size > MAX_IMAGE_BYTES:
                raise MediaError(f"file too large for a picture (limit {MAX_IMAGE_BYTES >> 20} MiB)")
            return decode_image(f).image
    except MediaError as e:
        raise MediaError(f"{path}: {e}") from e


def decode_text(data: bytes) -> str:
    """Bytes of a .txt/.md file to text. Raises MediaError for binary or empty content."""
    import codecs

    data = data[:MAX_TEXT_BYTES]
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):  # Windows Notepad's "Unicode"
        text = data.decode("utf-16", errors="replace")
    elif b"\x00" in data:
        raise MediaError("binary content in a text file")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            text = data.decode("latin-1")
    text = text.strip()
    if not text:
        raise MediaError("empty text file")
    return text


def excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[: EXCERPT_CHARS - 1] + "…"


_SKIP_WORDS = frozenset(
    {"img", "dsc", "dscn", "dscf", "pxl", "mvimg", "vid", "image", "photo", "pic", "copy", "edit", "final", "new"}
    | {"of", "the", "and", "to", "in", "on", "at", "by", "for", "with"}
)


def name_words(path: str) -> str:
    """Meaningful words of a file name: ``golden_retriever-beach2.jpg`` -> ``golden retriever beach``.

    Camera names (``IMG_2041``, ``DSC00012``), numbers, hash-like chunks and little words give nothing.
    """
    import os
    import re

    stem = os.path.splitext(os.path.basename(path))[0]
    chunks = [c for c in re.split(r"[\s._-]+", stem) if not re.fullmatch(r"[0-9a-fA-F]{8,}", c)]
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", " ".join(chunks))  # camelCase
    words = [t.lower() for t in re.split(r"[^A-Za-z]+", text)]
    return " ".join(t for t in words if len(t) >= 2 and t not in _SKIP_WORDS)
