"""mmsearch as a LangChain retriever and embeddings (``pip install 'mmsearch[langchain]'``).

    from mmsearch import Engine
    from mmsearch.integrations.langchain import MmsearchRetriever

    retriever = MmsearchRetriever(engine=Engine.open("~/photos-index"), k=4, target="any")
    docs = retriever.invoke("receipts from the trip to Lisbon")

or against a running ``mmsearch serve``: ``MmsearchRetriever(url="http://127.0.0.1:8000", token=...)``.
Each :class:`~langchain_core.documents.Document` holds what an LLM can read of the item (a note's or a
recording's words, a picture's caption, else its file name) and, in ``metadata``, ``id``, ``path``,
``modality``, ``score``, ``rank`` and the item's own metadata (``match`` for the moment of a video).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from mmsearch.errors import MmsearchError

TIMEOUT_S = 60.0


def _content(hit: dict[str, Any]) -> str:
    meta = hit.get("metadata") or {}
    match = meta.get("match") or {}
    return str(meta.get("excerpt") or meta.get("caption") or match.get("text") or Path(hit["path"]).name)


def _document(hit: dict[str, Any]) -> Document:
    meta = {k: hit[k] for k in ("id", "rank", "score", "path", "modality")}
    return Document(page_content=_content(hit), metadata={**(hit.get("metadata") or {}), **meta})


class _Remote:
    """A running ``mmsearch serve``: its native JSON routes."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url, self.token = url.rstrip("/"), token

    def post(self, route: str, body: dict[str, Any]) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        try:
            r = requests.post(self.url + route, json=body, headers=headers, timeout=TIMEOUT_S)
        except requests.RequestException as e:
            raise MmsearchError(f"cannot reach mmsearch at {self.url}: {e}") from e
        if r.status_code != 200:
            detail = (
                r.json().get("detail") if r.headers.get("content-type", "").startswith("application/json") else r.text
            )
            raise MmsearchError(f"mmsearch at {self.url} answered {r.status_code}: {detail}")
        return r.json()


class MmsearchRetriever(BaseRetriever):
    """Items of an index ranked for a query, as LangChain Documents.

    Attributes:
        engine: An open :class:`mmsearch.Engine` (in-process), or
        url: a ``mmsearch serve`` base URL, with ``token`` when it asks for one.
        k: How many documents.
        target: A modality (``image``, ``text``, ``audio``, ``video``) or ``any``; default: the engine's.
        options: Other query fields (``fusion``, ``path``, ``after``, ``min_score``, ``dedupe`` ...).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: Any = None
    url: str | None = None
    token: str | None = None
    k: int = 4
    target: str | None = None
    options: dict[str, Any] = {}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        if self.engine is not None:
            hits = [h.as_dict() for h in self.engine.search(query, target=self.target, k=self.k, **self.options)]
        elif self.url:
            body = {"text": query, "k": self.k, **({"target": self.target} if self.target else {}), **self.options}
            hits = _Remote(self.url, self.token).post("/search", body)
        else:
            raise MmsearchError("MmsearchRetriever needs an engine or a url")
        return [_document(h) for h in hits]


class MmsearchEmbeddings(Embeddings):
    """Texts embedded as the index embeds text queries (``target``: the modality whose space they are
    for, with a composite model), in-process or through a server's ``/embed``."""

    def __init__(
        self, engine: Any = None, url: str | None = None, token: str | None = None, target: str | None = None
    ) -> None:
        if engine is None and not url:
            raise MmsearchError("MmsearchEmbeddings needs an engine or a url")
        self.engine, self.target = engine, target
        self.remote = _Remote(url, token) if url else None

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        if self.engine is not None:
            return [list(map(float, v)) for v in self.engine.embed("text", texts, target=self.target)]
        assert self.remote is not None
        body: dict[str, Any] = {"text": texts, **({"target": self.target} if self.target else {})}
        return [list(map(float, v)) for v in self.remote.post("/embed", body)["vectors"]]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
