"""The HTTP API: the native routes, clip-retrieval's, OpenAI's embeddings, and a search page.

One :class:`~mmsearch.engine.Engine` is opened when the app is created (model loaded once and kept warm)
and every route goes through its façade. Routes that touch a file serve only indexed items, by id: there
is no path parameter anywhere.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence

from fastapi import Depends, FastAPI

from mmsearch.errors import MmsearchError
from mmsearch.server import clip_retrieval, native, openai_compat, page
from mmsearch.server.batching import Arrivals
from mmsearch.server.security import MAX_BODY_BYTES, install, token_guard
from mmsearch.server.security import allowed_hosts as hosts_for
from mmsearch.server.state import ServerState


def create_app(
    index: str | os.PathLike[str] | None = None,
    token: str | None = None,
    allow_url_fetch: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
    *,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    allow_private_urls: bool = False,
    cors_origins: Sequence[str] = (),
    max_batch: int = 32,
    batch_window_ms: float = 50.0,
) -> FastAPI:
    """The FastAPI app serving the index at ``index`` (default: ``$MMSEARCH_INDEX`` or the data dir).

    Args:
        token: Require ``Authorization: Bearer TOKEN`` (or ``?token=``) on every route, the docs included.
        allow_url_fetch: Let ``/knn-service`` fetch ``image_url`` (public addresses only, unless
            ``allow_private_urls``).
        host: The address the server listens on. Requests must name it (or a loopback name when it is a
            loopback address) in their ``Host`` header, which stops DNS rebinding; any name is accepted on
            a wildcard address (``0.0.0.0``) unless ``allowed_hosts`` lists them.
        allowed_hosts: More host names requests may use.
        cors_origins: Origins whose web pages may call the API (``https://front.example``; ``*`` for any):
            CORS headers for them, preflights answered. None by default.
        max_batch: The most concurrent searches answered as one batch (1: one at a time, serialised).
        batch_window_ms: The most a batch waits for searches on their way (see server.batching).

    Raises:
        IndexNotFoundError: no index there.
        MmsearchError: an empty token (it would let an empty ``?token=`` in).
    """
    from mmsearch.engine import Engine

    if token is not None and not token.strip():
        raise MmsearchError("the token is empty: give a real one, or none (loopback only) — never an empty string")
    hosts = hosts_for(host, allowed_hosts)
    engine = Engine.open(index)
    engine.towers  # noqa: B018 - load the model now: the first request should not pay for it
    # What is alive now (the model, the libraries) lives as long as the server: out of the collector's
    # sight, a full collection takes 3 ms instead of ~150 ms (a stall every few seconds under load).
    gc.collect()
    gc.freeze()
    app = FastAPI(
        title="mmsearch",
        version="0.1.0",
        description="Search photos, notes and recordings by meaning. Native API, clip-retrieval's "
        "`/knn-service`, and OpenAI-style `/v1/embeddings`.",
        docs_url=None,  # served by the page router, behind the token like every other route
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    app.state.mm = ServerState(
        engine,
        engine.dir.name or "default",
        engine.dir / "thumbnails",
        allow_url_fetch=allow_url_fetch,
        allow_private_urls=allow_private_urls,
        max_batch=max_batch,
        batch_window_s=batch_window_ms / 1000,
    )
    app.add_middleware(Arrivals, batcher=app.state.mm.batcher)  # innermost: refused requests never count
    install(app, hosts, max_body_bytes, cors_origins)
    guarded = [Depends(token_guard(token))]
    for router in (native.router, clip_retrieval.router, openai_compat.router, page.docs):
        app.include_router(router, dependencies=guarded)
    app.include_router(page.router)  # the page itself holds nothing; what it fetches checks the token
    return app
