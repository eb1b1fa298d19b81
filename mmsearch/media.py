"""Decoding files into what encoders take. Every failure is a MediaError with a short reason."""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from mmsearch.errors import MediaError

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


def decode_image(data: bytes, size: int = DECODE_SIZE) -> DecodedImage:
    """Decode image bytes to an upright RGB picture, reduced to about ``size`` px.

    JPEGs use Pillow's draft mode (DCT scaling), so a 24 MP photo decodes at a fraction of the cost.
    Raises:
        MediaError: empty, not an image, truncated, or over MAX_PIXELS.
    """
    if not data:
        raise MediaError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Corrupt EXIF data": the pixels are fine
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im: Image.Image = Image.open(io.BytesIO(data))
            width, height = im.size
            if width * height > MAX_PIXELS:
                raise MediaError(f"image too large ({width}x{height} pixels, limit {MAX_PIXELS:,})")
            if im.format == "JPEG":
                im.draft("RGB", (size, size))
            exif = im.getexif()
            orientation = exif.get(0x0112, 1)
            taken_at = exif_time(exif)
            im = ImageOps.exif_transpose(im)
            if orientation in (5, 6, 7, 8):
                width, height = height, width
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                im = im.point(lambda v: v * (1 / 256)).convert("L")  # 16-bit grey -> 8-bit
            im = im.convert("RGB")  # forces the full decode: truncation surfaces here
            if max(im.size) > 2 * size:
                im.thumbnail((2 * size, 2 * size), Image.Resampling.BICUBIC)
    except MediaError:
        raise
    except UnidentifiedImageError as e:
        raise MediaError("not a readable image") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise MediaError("image too large (decompression bomb)") from e
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise MediaError(f"broken image ({e})") from e
    return DecodedImage(im, width, height, taken_at)


def load_image(path: str | Path) -> Image.Image:
    """Read and decode an image file (for image queries)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MediaError(f"cannot read {path}: {e.strerror or e}") from e
    return decode_image(data).image


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
