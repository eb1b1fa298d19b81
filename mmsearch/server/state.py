"""What the routes share: the engine (through its façade), the settings, the search batcher, and a lock
for the routes that read the engine outside searches."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from mmsearch.server.batching import Batcher

if TYPE_CHECKING:
    from mmsearch.engine import Engine
    from mmsearch.search import Hit, Query
    from mmsearch.store import Item


@dataclass
class ServerState:
    engine: Engine
    index_name: str
    thumbs: Path
    allow_url_fetch: bool = False
    allow_private_urls: bool = False
    max_batch: int = 32
    batch_window_s: float = 0.05
    lock: threading.RLock = field(default_factory=threading.RLock)
    batcher: Batcher = field(init=False)
    # item id -> the second its last search matched at: a video's thumbnail shows that frame by default
    moments: OrderedDict[int, float] = field(default_factory=OrderedDict)

    def __post_init__(self) -> None:
        self.batcher = Batcher(self.engine.search_many, self.max_batch, self.batch_window_s)

    def remember_moments(self, hits: list[Hit]) -> None:
        for h in hits:
            start = h.metadata.get("match", {}).get("start")
            if start is not None:
                self.moments[h.id] = float(start)
                self.moments.move_to_end(h.id)
        while len(self.moments) > 10_000:
            self.moments.popitem(last=False)

    def search(self, query: Query) -> list[Hit]:
        """Through the batcher: its worker is the only thread that searches."""
        return self.batcher.search(query)

    def item(self, item_id: int) -> Item:
        with self.lock:
            item = self.engine.items([item_id]).get(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id}")
        return item


def state(request: Request) -> ServerState:
    """The dependency every router uses."""
    found: ServerState = request.app.state.mm
    return found


State = Annotated[ServerState, Depends(state)]
