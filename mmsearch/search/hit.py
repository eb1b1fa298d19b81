"""One search result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Hit:
    """One search result. ``id`` is the SQLite item id (and FAISS id)."""

    id: int
    rank: int
    score: float
    path: str
    modality: str
    metadata: dict[str, Any] = field(default_factory=dict)
    explain: list[dict[str, Any]] | None = None  # per part and vector, with `explain`

    def as_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "rank": self.rank,
            "score": round(self.score, 6),
            "path": self.path,
            "modality": self.modality,
            "metadata": self.metadata,
        }
        if self.explain is not None:
            out["explain"] = _rounded(self.explain)
        return out


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 6)
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    return x
