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
    padded = f" {query} "
    pieces = _OP.split(padded)
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
            if weight == 0 or not math.isfinite(weight):
                raise QueryError(f"weight {m.group(1)} in {query.strip()!r} must be a positive number")
        terms.append(Term(" ".join(raw.split()), weight, negative))
    if not any(not t.negative for t in terms):
        raise QueryError(f"{query.strip()!r} has no positive term: say what to look for, then `- what to avoid`")
    return terms


def format_terms(terms: list[Term]) -> str:
    """The canonical text of parsed terms (``parse(format_terms(t)) == t`` for valid terms)."""
    out = []
    for i, t in enumerate(terms):
        words = t.text if t.weight == 1.0 else f"{t.weight!r}:{t.text}"
        out.append(words if i == 0 else f"{'-' if t.negative else '+'} {words}")
    return " ".join(out)
