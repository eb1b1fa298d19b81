"""What the routes share: the engine (through its façade), the settings, and one lock."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

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
    lock: threading.RLock = field(default_factory=threading.RLock)

    def search(self, query: Query) -> list[Hit]:
        with self.lock:
            return self.engine.search(query)

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
