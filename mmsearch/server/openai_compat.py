"""OpenAI's embeddings API shape (``POST /v1/embeddings``), served by the index's text tower."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException

from mmsearch.server.models import OpenAIEmbeddingsIn
from mmsearch.server.state import State

router = APIRouter()


@router.post("/v1/embeddings")
def openai_embeddings(body: OpenAIEmbeddingsIn, s: State) -> dict[str, Any]:
    """OpenAI's embeddings API shape, served by the index's text tower."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or len(texts) > 2048 or not all(isinstance(t, str) for t in texts):
        raise HTTPException(422, "input: a string or a list of 1 to 2048 strings")
    if body.encoding_format not in (None, "float", "base64"):
        raise HTTPException(422, "encoding_format: float or base64")
    with s.lock:
        vecs = s.engine.embed_text(texts)
    data = []
    for i, v in enumerate(vecs):
        emb: Any = (
            base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode()
            if body.encoding_format == "base64"
            else v.tolist()
        )
        data.append({"object": "embedding", "embedding": emb, "index": i})
    tokens = sum(len(t.split()) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": body.model or s.engine.model_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
