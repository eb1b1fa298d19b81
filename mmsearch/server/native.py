"""The native API: the full query layer, embeddings, items, their files and previews."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import Response

from mmsearch.encoders import TEXT
from mmsearch.modalities import get
from mmsearch.search import Hit, QueryPart
from mmsearch.search import Query as SearchQuery
from mmsearch.server import files
from mmsearch.server.models import MAX_ID, EmbedIn, SearchIn, Uploads, b64
from mmsearch.server.state import State

ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="an item id from a search result")]
router = APIRouter()


def hit_json(h: Hit) -> dict[str, Any]:
    """A hit as the API gives it: with the URLs of its preview (when its kind has one; for timed media the
    frame at the moment that matched) and of its file (``#t=SECONDS`` to play from that moment)."""
    out = h.as_dict()
    modality = get(h.modality)
    at = h.metadata.get("match", {}).get("start") if modality.player else None
    out["thumbnail"] = None
    if modality.thumbnails:
        out["thumbnail"] = f"/items/{h.id}/thumbnail" + (f"?t={at:g}" if at is not None and modality.segmented else "")
    out["file"] = f"/items/{h.id}/file"
    out["player"] = modality.player
    out["at"] = at
    return out


def search_query(body: SearchIn, uploads: Uploads) -> SearchQuery:
    """The Query a /search body asks for (uploaded files become temp files their modality reads)."""
    parts = []
    for p in body.parts:
        if p.kind == TEXT:
            if not p.text or not p.text.strip():
                raise HTTPException(422, "a text part needs text")
            parts.append(QueryPart(TEXT, p.text, p.weight, p.negative))
        else:
            get(p.kind)  # an unknown kind is a 400 naming the known ones
            parts.append(QueryPart(p.kind, uploads.file(b64(p.data or "", p.kind)), p.weight, p.negative))
    return SearchQuery.parse(body.text, parts=parts, **body.fields())


@router.get("/health")
def health(s: State) -> dict[str, Any]:
    """Liveness: the index is open and the model loaded; how searches were batched lately."""
    sizes = list(s.batcher.batches)
    batching = {
        "max_batch": s.batcher.max_batch,
        "batches": len(sizes),
        "searches": sum(sizes),
        "sizes": {str(k): sizes.count(k) for k in sorted(set(sizes))},
    }
    return {"status": "ok", "model": s.engine.model_name, "batching": batching}


@router.get("/info")
def info(s: State) -> dict[str, Any]:
    """What `mmsearch info --json` prints (without reading every page of the database)."""
    with s.lock:
        return s.engine.info().as_dict()


@router.post("/search")
def search(body: SearchIn, s: State) -> list[dict[str, Any]]:
    """The full query of the query layer; JSON hits, best first."""
    with Uploads() as uploads:
        hits = s.search(search_query(body, uploads))
    s.remember_moments(hits)
    return [hit_json(h) for h in hits]


@router.post("/embed")
def embed(body: EmbedIn, s: State) -> dict[str, Any]:
    """Text, an image or a sound -> vectors in the index's space (L2-normalised float32)."""
    with Uploads() as uploads:
        if body.text is not None:
            texts = [body.text] if isinstance(body.text, str) else body.text
            if not texts or len(texts) > 2048:
                raise HTTPException(422, "text: give 1 to 2048 strings")
            kind, values = TEXT, list[Any](texts)
        elif body.image is not None:
            kind, values = "image", [uploads.file(b64(body.image, "image"))]
        elif body.audio is not None:
            kind, values = "audio", [uploads.file(b64(body.audio, "audio"))]
        else:
            raise HTTPException(422, "give text, image or audio")
        with s.lock:
            vecs = s.engine.embed(kind, values, target=body.target)
    return {"model": s.engine.model_name, "dim": int(vecs.shape[1]), "vectors": vecs.tolist()}


@router.get("/items/{item_id}")
def get_item(item_id: ItemId, s: State) -> dict[str, Any]:
    """One indexed item: path, kind and metadata."""
    item = s.item(item_id)
    meta = get(item.modality).metadata(item)
    return {"id": item.id, "path": item.path, "modality": item.modality, "metadata": meta}


@router.get("/items/{item_id}/file")
def get_file(item_id: ItemId, request: Request, s: State) -> Response:
    """The indexed file itself, if it is still the file that was indexed (HTTP ranges for seeking)."""
    return files.file_response(s.item(item_id), request.headers.get("range"))


@router.get("/items/{item_id}/thumbnail")
def get_thumbnail(
    item_id: ItemId,
    s: State,
    t: Annotated[float | None, Query(ge=0, le=1e7, description="seconds into a video: the frame then")] = None,
) -> Response:
    """A JPEG of at most 320 px, cached in the index directory. For a video, the frame at ``t`` (default:
    the best-matching moment of the last search that found it, else the first frame)."""
    item = s.item(item_id)
    modality = get(item.modality)
    if not modality.thumbnails:
        raise HTTPException(404, f"item {item_id} is not a picture")
    at = (t if t is not None else s.moments.get(item_id, 0.0)) if modality.segmented else None
    data = files.thumbnail(s.thumbs, item, at)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})
