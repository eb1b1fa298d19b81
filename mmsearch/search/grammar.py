"""The query text grammar: weighted parts joined by `` + `` and `` - ``.

::

    query  := term (op term)*
    op     := " + " | " - "          (a plus or minus with whitespace on both sides)
    term   := [weight ":"] words     (weight: a positive number, e.g. 2, 0.5, 1e-1)

``"cat + sunset - water"`` is three parts, the last one negative; ``"2:golden retriever + 0.5:beach"``
weights them. A ``+``/``-`` without spaces around it is part of the words (``t-shirt``, ``c++``), and a
colon after anything but a number is too (``note: budget``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from mmsearch.errors import QueryError

# One request must not hold the engine for long: 5,000 ` + ` parts took 18.6 s before these limits.
MAX_TERMS = 32
MAX_QUERY_CHARS = 10_000
MIN_WEIGHT, MAX_WEIGHT = 1e-3, 1e3  # "1e308:cat + 1e308:dog" summed to inf and zeroed every score

_OP = re.compile(r"(?<=\s)([+-])(?=\s)")
_WEIGHT = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*:(.*)$", re.DOTALL)


@dataclass(frozen=True)
class Term:
    """One part of a text query: its words, weight (> 0) and sign."""

    text: str
    weight: float = 1.0
    negative: bool = False


def parse(query: str) -> list[Term]:
    """Split a text query into weighted terms.

    Raises:
        QueryError: an empty term (``"cat + "``, ``"+ cat"``), a zero or non-finite weight, or a
            query with no positive term.
    """
    if not query or not query.strip():
        raise QueryError("empty query")
    check_text(query, "query text", MAX_QUERY_CHARS)
    padded = f" {query} "
    pieces = _OP.split(padded)
    if len(pieces) > 2 * MAX_TERMS - 1:
        raise QueryError(f"too many parts in the query ({len(pieces) // 2 + 1}; at most {MAX_TERMS})")
    # pieces: [term, op, term, op, term, ...]
    terms: list[Term] = []
    for i in range(0, len(pieces), 2):
        raw = pieces[i]
        negative = i > 0 and pieces[i - 1] == "-"
        if not raw.strip():
            where = "at the start" if i == 0 else "at the end" if i == len(pieces) - 1 else "between two operators"
            raise QueryError(f"empty term {where} of {query.strip()!r}: write `a + b` or `a - b`")
        weight = 1.0
        m = _WEIGHT.match(raw)
        if m:
            weight = float(m.group(1))
            raw = m.group(2)
            if not raw.strip():
                raise QueryError(f"weight {m.group(1)} has no words after the colon in {query.strip()!r}")
            if not (math.isfinite(weight) and MIN_WEIGHT <= weight <= MAX_WEIGHT):
                raise QueryError(
                    f"weight {m.group(1)} in {query.strip()!r} must be a positive number "
                    f"from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}"
                )
        terms.append(Term(" ".join(raw.split()), weight, negative))
    if not any(not t.negative for t in terms):
        raise QueryError(f"{query.strip()!r} has no positive term: say what to look for, then `- what to avoid`")
    return terms


def check_text(text: str, what: str, limit: int) -> None:
    """Refuse text no model can read: not valid Unicode (a lone surrogate from JSON, a byte that is not
    UTF-8 on a command line) or longer than ``limit`` characters.

    Raises:
        QueryError: one line naming ``what`` is wrong.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        try:  # a byte the terminal sent that is not UTF-8 arrives as a surrogate escape
            hint = f" (byte 0x{text[e.start : e.end].encode('utf-8', 'surrogateescape').hex()})"
        except UnicodeEncodeError:  # a lone surrogate from JSON
            hint = ""
        raise QueryError(
            f"{what} is not valid UTF-8{hint}: check the terminal's encoding, or the JSON for a lone surrogate"
        ) from None
    if len(text) > limit:
        raise QueryError(f"{what} is {len(text):,} characters long; the limit is {limit:,}")


def format_terms(terms: list[Term]) -> str:
    """The canonical text of parsed terms (``parse(format_terms(t)) == t`` for valid terms)."""
    out = []
    for i, t in enumerate(terms):
        words = t.text if t.weight == 1.0 else f"{t.weight!r}:{t.text}"
        out.append(words if i == 0 else f"{'-' if t.negative else '+'} {words}")
    return " ".join(out)
