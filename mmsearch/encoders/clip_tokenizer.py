"""open_clip's CLIP tokenizer (``SimpleTokenizer``) without open_clip, so a text query never imports torch.

open_clip's tokenizer module imports torch, so a process that only encodes a query cannot use it. At
export time (a process that has open_clip loaded) :func:`save` writes the same byte-level BPE as a
``tokenizers`` file, from the tokenizer's own vocabulary and merge ranks; :class:`ClipTokenizer` reads it
and gives the token ids open_clip gives: the same cleaning (ftfy + HTML unescape + whitespace + lower
case), the same split into words, the same merges, start/end tokens, truncation keeping the end token,
zero padding. Tested against open_clip on hostile texts (``tests/test_onnx_towers.py``).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# open_clip's split into words, less its special tokens (added to the tokenizer as special tokens instead)
WORDS = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


class Unsupported(Exception):
    """The tokenizer is not a plain CLIP BPE (another cleaning, a reduction mask, a Hugging Face one)."""


def save(tokenizer: Any, path: Path) -> None:
    """Write open_clip ``SimpleTokenizer`` ``tokenizer`` as a ``tokenizers`` file at ``path`` (atomically),
    with its start/end ids and context length beside it (``PATH.meta.json``).

    Raises:
        Unsupported: not a SimpleTokenizer with open_clip's default cleaning and truncation.
        OSError: the file cannot be written.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    clean = getattr(getattr(tokenizer, "clean_fn", None), "__name__", "")
    if type(tokenizer).__name__ != "SimpleTokenizer" or clean != "_clean_lower" or tokenizer.reduction_fn:
        raise Unsupported(f"{type(tokenizer).__name__} (clean={clean or '?'})")
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.__getitem__)
    special = [t for t in tokenizer.cache if t in tokenizer.encoder]  # its cache starts as the special tokens
    bpe = models.BPE(vocab=dict(tokenizer.encoder), merges=merges, end_of_word_suffix="</w>", fuse_unk=False)
    tok = Tokenizer(bpe)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WORDS), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special)
    meta = {"sot": tokenizer.sot_token_id, "eot": tokenizer.eot_token_id, "context_length": tokenizer.context_length}
    _write(path, tok.to_str())
    _write(meta_path(path), json.dumps(meta))


def meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def clean(text: str) -> str:
    """open_clip's ``_clean_lower``: ftfy, HTML unescaped twice, whitespace collapsed, lower case. ftfy
    (~50 ms to import) only runs on text it could change: anything but printable ASCII without ``&``."""
    if not (text.isascii() and "&" not in text and all(c >= " " and c != "\x7f" or c in "\t\n\r" for c in text)):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.strip().split()).lower()


class ClipTokenizer:
    """Token ids as open_clip's tokenizer gives them, from a file :func:`save` wrote.

    Raises:
        OSError, ValueError: a missing or damaged file.
    """

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        meta = json.loads(meta_path(path).read_text(encoding="utf-8"))
        self.sot, self.eot = int(meta["sot"]), int(meta["eot"])
        self.context_length = int(meta["context_length"])
        try:
            self._tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises its own Exception type for a bad file
            raise ValueError(f"bad tokenizer file {path}: {e}") from e

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """int64 ``[len(texts), context_length]``."""
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        encoded = self._tok.encode_batch([clean(t) for t in texts], add_special_tokens=False)
        for row, enc in zip(out, encoded, strict=True):
            ids = [self.sot, *enc.ids, self.eot]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot
            row[: len(ids)] = ids
        return out
