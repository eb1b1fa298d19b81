"""clip-retrieval's backend routes (``/knn-service``, ``/indices-list``, ``/metadata``): its ClipClient and
front end work against mmsearch unchanged."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mmsearch.encoders import IMAGE, TEXT, l2_normalize
from mmsearch.errors import MmsearchError
from mmsearch.modalities import VECTOR, all_modalities, get
from mmsearch.search import Query, QueryPart
from mmsearch.search.query import MAX_RESULTS
from mmsearch.server import fetch, files
from mmsearch.server.models import MetadataIn, Uploads, b64
from mmsearch.server.state import ServerState, State

router = APIRouter()


@router.get("/indices-list")
def indices_list(s: State) -> list[str]:
    """clip-retrieval: the index names this backend serves."""
    return [s.index_name]


@router.post("/knn-service")
async def knn_service(request: Request, s: State) -> JSONResponse:
    """clip-retrieval's search route; the body is JSON whatever the Content-Type says."""
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return JSONResponse({"detail": "body is not JSON (or nested too deeply)"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"detail": "body must be a JSON object"}, status_code=400)
    try:
        # decoding, fetching, the model and FAISS block: never on the event loop (/health must answer)
        result = await run_in_threadpool(knn, s, body, str(request.base_url))
    except HTTPException as e:
        return JSONResponse({"detail": e.detail}, status_code=e.status_code)
    except MmsearchError as e:
        return JSONResponse({"detail": str(e).splitlines()[0]}, status_code=400)
    return JSONResponse(result)


def knn(s: ServerState, body: dict[str, Any], base_url: str) -> list[dict[str, Any]]:
    name = body.get("indice_name")
    if name not in (None, "", s.index_name, "default"):
        raise HTTPException(404, f"unknown indice_name {name!r}; this backend serves {s.index_name!r}")
    modality = body.get("modality") or IMAGE
    known = [m.name for m in all_modalities()]
    if modality not in known:
        raise HTTPException(400, f"unknown modality {modality!r}: {', '.join(known)}")
    k = body.get("num_images") or body.get("num_result_ids") or 40
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_RESULTS:
        raise HTTPException(400, f"num_images must be an integer from 1 to {MAX_RESULTS}")
    with Uploads() as uploads:
        parts: list[QueryPart] = []
        if body.get("text"):
            if not isinstance(body["text"], str):
                raise HTTPException(400, "text must be a string")
            parts.append(QueryPart(TEXT, body["text"]))
        if body.get("image"):
            if not isinstance(body["image"], str):
                raise HTTPException(400, "image must be a base64 string")
            parts.append(QueryPart(IMAGE, uploads.file(b64(body["image"], "image"))))
        if body.get("image_url"):
            if not s.allow_url_fetch:
                raise HTTPException(403, "image_url fetching is off: start the server with --allow-url-fetch")
            if not isinstance(body["image_url"], str):
                raise HTTPException(400, "image_url must be a string")
            policy = fetch.any_address if s.allow_private_urls else fetch.public_only
            try:
                fetched = fetch.fetch(body["image_url"], allowed=policy)
            except fetch.FetchError as e:
                raise HTTPException(e.status, str(e)) from e
            parts.append(QueryPart(IMAGE, uploads.file(fetched)))
        if body.get("embedding_input") is not None:
            dim = s.engine.dim_of(modality)
            given = body["embedding_input"]
            numbers = isinstance(given, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in given
            )
            vec = np.asarray(given, dtype=np.float32) if numbers else None
            if vec is None or vec.ndim != 1 or vec.size != dim or not np.isfinite(vec).all():
                raise HTTPException(400, f"embedding_input must be a list of {dim} numbers")
            parts.append(QueryPart(VECTOR, l2_normalize(vec[None])[0]))
        if not parts:
            raise HTTPException(400, "give text, image, image_url or embedding_input")
        hits = s.search(Query(parts=parts, target=modality, k=k, dedupe=bool(body.get("deduplicate"))))
    s.remember_moments(hits)
    base = base_url.rstrip("/")
    out = []
    for h in hits:
        row: dict[str, Any] = {
            "id": h.id,
            "similarity": h.score,
            "caption": h.metadata.get("caption") or h.metadata.get("excerpt") or Path(h.path).stem,
            "url": f"{base}/items/{h.id}/file",
            "image_path": h.path,
        }
        if get(h.modality).thumbnails:
            try:
                at = h.metadata.get("match", {}).get("start") if get(h.modality).segmented else None
                row["image"] = base64.b64encode(files.thumbnail(s.thumbs, s.item(h.id), at)).decode()
            except (HTTPException, OSError, MmsearchError):
                pass
        out.append(row)
    return out


@router.post("/metadata")
def metadata(body: MetadataIn, request: Request, s: State) -> list[dict[str, Any]]:
    """clip-retrieval: metadata of result ids."""
    with s.lock:
        items = s.engine.items(body.ids)
    base = str(request.base_url).rstrip("/")
    return [
        {
            "id": i,
            "metadata": {
                "caption": items[i].caption or items[i].excerpt or Path(items[i].path).stem,
                "url": f"{base}/items/{i}/file",
                "image_path": items[i].path,
                "modality": items[i].modality,
                **get(items[i].modality).metadata(items[i]),
            },
        }
        for i in body.ids
        if i in items
    ]
