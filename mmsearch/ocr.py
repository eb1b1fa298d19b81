"""Text found in pictures (signs, receipts, screenshots), with RapidOCR: PP-OCRv4 models inside its wheel.

Optional: ``pip install 'mmsearch[ocr]'``. Where it is installed, `mmsearch index` reads the text in
every new picture (``--no-ocr`` skips it; the choice sticks to the index).
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image

# OCR looks at pictures at most this big (the detector's own default limit is close to it)
MAX_SIDE = 960
MIN_CONFIDENCE = 0.6
_local = threading.local()


def ocr_available() -> bool:
    """Whether RapidOCR is installed (looked up, not imported: its import costs ~0.1 s of every run)."""
    import importlib.util

    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def _engine() -> Any:
    engine = getattr(_local, "engine", None)
    if engine is None:  # one per thread: onnxruntime sessions are, but RapidOCR's pre/post-processing is not, shared
        import logging

        from rapidocr_onnxruntime import RapidOCR

        logging.getLogger("RapidOCR").setLevel(logging.ERROR)
        # the detector's default scales the *short* side up to 736 px: a 24 px thumbnail became a
        # 736 px image (0.14 s). Capping the long side instead is 5-50x faster on photos, same text.
        engine = _local.engine = RapidOCR(det_limit_type="max", det_limit_side_len=MAX_SIDE, use_cls=False)
    return engine


def _spaced(text: str) -> str:
    """RapidOCR often drops the space between a word and a number (``INVOICE2023``): put it back."""
    text = re.sub(r"(?<=[A-Za-z])(?=\d)|(?<=\d)(?=[A-Za-z])", " ", text)
    return " ".join(text.split())


def read_text(image: Image.Image) -> str:
    """The text RapidOCR reads in a picture, top to bottom; ``""`` when there is none."""
    im = image.convert("RGB")
    if min(im.size) < 16:
        return ""
    if max(im.size) > MAX_SIDE:
        im = im.copy()
        im.thumbnail((MAX_SIDE, MAX_SIDE))
    result, _ = _engine()(np.asarray(im))
    if not result:
        return ""
    lines = sorted(
        (
            (min(p[1] for p in box), min(p[0] for p in box), text)
            for box, text, score in result
            if score >= MIN_CONFIDENCE
        ),
    )
    return _spaced(" ".join(t for _, _, t in lines))
