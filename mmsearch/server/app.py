"""The HTTP API: native routes, clip-retrieval's knn-service, OpenAI-style embeddings, and a search page.

One :class:`~mmsearch.engine.Engine` is opened when the app is created (model loaded once and kept
warm) and used under a lock. Every route that touches a file serves only indexed items, by id:
there is no path parameter anywhere.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
import tempfile
import threading
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from mmsearch.encoders import AUDIO, IMAGE, TEXT, l2_normalize
from mmsearch.errors import IndexNotFoundError, MediaError, MmsearchError, QueryError
from mmsearch.fusion import MAX_RESULTS, Query, QueryPart

MAX_BODY_BYTES = 25 * 1024 * 1024  # uploaded images and sounds arrive base64 in JSON bodies
THUMBNAIL_SIZE = 320
MAX_ID = 2**63 - 1  # SQLite INTEGER
ItemId = Annotated[int, PathParam(ge=1, le=MAX_ID, description="an item id from a search result")]


# -- request models (they make the OpenAPI spec) -------------------------------------------------
class PartIn(BaseModel):
    kind: str = Field("text", description="text, image or audio")
    text: str | None = Field(None, description="for kind=text (the query grammar applies)")
    data: str | None = Field(None, description="base64 file content for kind=image or audio")
    weight: float = Field(1.0, gt=0, le=1e6)
    negative: bool = False


class SearchIn(BaseModel):
    text: str | None = Field(None, description='query text: "cat + sunset - water", "2:dog + 0.5:beach"')
    parts: list[PartIn] = Field(default_factory=list, max_length=32)
    target: str | None = Field(None, description="image, text, audio or any")
    k: int = Field(10, ge=1, le=MAX_RESULTS)
    offset: int = Field(0, ge=0, le=MAX_RESULTS)
    fusion: str = "sum"
    path: str | None = None
    after: str | None = Field(None, description="YYYY-MM-DD")
    before: str | None = Field(None, description="YYYY-MM-DD")
    min_score: float | None = None
    dedupe: bool = False
    explain: bool = False


class EmbedIn(BaseModel):
    text: str | list[str] | None = None
    image: str | None = Field(None, description="base64 image file")
    audio: str | None = Field(None, description="base64 audio file")


class OpenAIEmbeddingsIn(BaseModel):
    input: str | list[str]
    model: str | None = None
    encoding_format: str | None = "float"
    dimensions: int | None = None
    user: str | None = None


class MetadataIn(BaseModel):
    ids: list[Annotated[int, Field(ge=0, le=MAX_ID)]] = Field(max_length=10_000)
    indice_name: str | None = None


def _b64(data: str, what: str) -> bytes:
    if "," in data[:100] and data.startswith("data:"):
        data = data.split(",", 1)[1]  # a data: URL from a browser
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as e:
        raise HTTPException(400, f"{what} is not valid base64") from e
    if not raw:
        raise HTTPException(400, f"{what} is empty")
    return raw


class _Upload:
    """A base64 image/audio body as something the engine reads (a temp file, removed after use)."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def file(self, raw: bytes, suffix: str) -> Path:
        fd, name = tempfile.mkstemp(prefix="mmsearch-upload-", suffix=suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        self.paths.append(name)
        return Path(name)

    def image(self, data: str) -> Any:
        from mmsearch.media import decode_image

        try:
            return decode_image(_b64(data, "image")).image
        except MediaError as e:
            raise HTTPException(400, f"image: {e}") from e

    def close(self) -> None:
        for p in self.paths:
            try:
                os.unlink(p)
            except OSError:
                pass


def _sniff_audio_suffix(raw: bytes) -> str:
    if raw[:4] == b"RIFF":
        return ".wav"
    if raw[:4] == b"OggS":
        return ".ogg"
    if raw[:4] == b"fLaC":
        return ".flac"
    if raw[:3] == b"ID3" or raw[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return ".mp3"
    return ".m4a"


def create_app(
    index: str | os.PathLike[str] | None = None,
    token: str | None = None,
    allow_url_fetch: bool = False,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The FastAPI app serving the index at ``index`` (default: ``$MMSEARCH_INDEX`` or the data dir).

    Raises:
        IndexNotFoundError: no index there.
    """
    from mmsearch.engine import Engine

    engine = Engine.open(index)
    engine.encoder  # noqa: B018 - load the model now: the first request should not pay for it
    lock = threading.RLock()
    index_name = engine.dir.name or "default"
    thumbs = engine.dir / "thumbnails"

    app = FastAPI(
        title="mmsearch",
        version="0.1.0",
        description="Search photos, notes and recordings by meaning. Native API, clip-retrieval's "
        "`/knn-service`, and OpenAI-style `/v1/embeddings`.",
    )
    app.state.engine = engine

    # -- plumbing ---------------------------------------------------------------------------
    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Any:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return JSONResponse({"detail": f"request body over {max_body_bytes} bytes"}, status_code=413)
        if request.method in ("POST", "PUT", "PATCH") and length is None:
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > max_body_bytes:
                    return JSONResponse({"detail": f"request body over {max_body_bytes} bytes"}, status_code=413)
            request._body = body  # starlette reads it from here
        return await call_next(request)

    @app.exception_handler(MmsearchError)
    async def mmsearch_error(_request: Request, exc: MmsearchError) -> JSONResponse:
        status = 404 if isinstance(exc, IndexNotFoundError) else 400
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_errors(exc)}, status_code=422)

    def auth(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token")
        if given != token:
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]

    def hit_json(h: Any) -> dict[str, Any]:
        out = h.as_dict()
        out["thumbnail"] = f"/items/{h.id}/thumbnail" if h.modality == IMAGE else None
        out["file"] = f"/items/{h.id}/file"
        return out

    def run(query: Query) -> list[Any]:
        with lock:
            return engine.search(query)

    # -- native API -------------------------------------------------------------------------
    @app.get("/health", dependencies=guarded)
    def health() -> dict[str, Any]:
        """Liveness: the index is open and the model loaded."""
        return {"status": "ok", "model": engine.model_name}

    @app.get("/info", dependencies=guarded)
    def info() -> dict[str, Any]:
        """What `mmsearch info --json` prints."""
        with lock:
            return engine.info().as_dict()

    @app.post("/search", dependencies=guarded)
    def search(body: SearchIn) -> list[dict[str, Any]]:
        """The full query of the query layer; JSON hits, best first."""
        uploads = _Upload()
        try:
            parts = []
            for p in body.parts:
                if p.kind == TEXT:
                    if not p.text or not p.text.strip():
                        raise HTTPException(422, "a text part needs text")
                    parts.append(QueryPart(TEXT, p.text, p.weight, p.negative))
                elif p.kind == IMAGE:
                    parts.append(QueryPart(IMAGE, uploads.image(p.data or ""), p.weight, p.negative))
                elif p.kind == AUDIO:
                    raw = _b64(p.data or "", "audio")
                    parts.append(QueryPart(AUDIO, uploads.file(raw, _sniff_audio_suffix(raw)), p.weight, p.negative))
                else:
                    raise HTTPException(422, f"unknown part kind {p.kind!r}: text, image or audio")
            q = Query.parse(
                body.text,
                parts=parts,
                target=body.target,
                k=body.k,
                offset=body.offset,
                fusion=body.fusion,
                path=body.path,
                after=body.after,
                before=body.before,
                min_score=body.min_score,
                dedupe=body.dedupe,
                explain=body.explain,
            )
            return [hit_json(h) for h in run(q)]
        finally:
            uploads.close()

    @app.post("/embed", dependencies=guarded)
    def embed(body: EmbedIn) -> dict[str, Any]:
        """Text, an image or a sound -> vectors in the index's space (L2-normalised float32)."""
        uploads = _Upload()
        try:
            with lock:
                if body.text is not None:
                    texts = [body.text] if isinstance(body.text, str) else body.text
                    if not texts or len(texts) > 2048:
                        raise HTTPException(422, "text: give 1 to 2048 strings")
                    vecs = engine.embed_text(texts)
                elif body.image is not None:
                    vecs = engine.embed_image([uploads.image(body.image)])
                elif body.audio is not None:
                    raw = _b64(body.audio, "audio")
                    try:
                        vecs = engine.embed_audio([uploads.file(raw, _sniff_audio_suffix(raw))])
                    except MediaError as e:
                        raise HTTPException(400, f"audio: {e}") from e
                else:
                    raise HTTPException(422, "give text, image or audio")
            return {"model": engine.model_name, "dim": int(vecs.shape[1]), "vectors": vecs.tolist()}
        finally:
            uploads.close()

    def item_or_404(item_id: int) -> Any:
        with lock:
            item = engine.store.get_items([item_id]).get(item_id)
        if item is None:
            raise HTTPException(404, f"no item {item_id}")
        return item

    @app.get("/items/{item_id}", dependencies=guarded)
    def get_item(item_id: ItemId) -> dict[str, Any]:
        """One indexed item: path, kind and metadata."""
        from mmsearch.query import item_metadata

        item = item_or_404(item_id)
        return {"id": item.id, "path": item.path, "modality": item.modality, "metadata": item_metadata(item)}

    @app.get("/items/{item_id}/file", dependencies=guarded)
    def get_file(item_id: ItemId) -> FileResponse:
        """The indexed file itself (only indexed items can be read, by id)."""
        item = item_or_404(item_id)
        if not os.path.isfile(item.path):
            raise HTTPException(404, f"item {item_id}'s file is gone: re-run `mmsearch index`")
        return FileResponse(item.path)

    @app.get("/items/{item_id}/thumbnail", dependencies=guarded)
    def get_thumbnail(item_id: ItemId) -> Response:
        """A JPEG of at most 320 px, cached in the index directory."""
        item = item_or_404(item_id)
        if item.modality != IMAGE:
            raise HTTPException(404, f"item {item_id} is not a picture")
        data = _thumbnail(thumbs, item)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    # -- clip-retrieval compatibility -------------------------------------------------------
    @app.get("/indices-list", dependencies=guarded)
    def indices_list() -> list[str]:
        """clip-retrieval: the index names this backend serves."""
        return [index_name]

    @app.post("/knn-service", dependencies=guarded)
    async def knn_service(request: Request) -> JSONResponse:
        """clip-retrieval's search route; the body is JSON whatever the Content-Type says."""
        try:
            body = json.loads(await request.body() or b"{}")
        except (ValueError, UnicodeDecodeError):
            return JSONResponse({"detail": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=400)
        try:
            result = _knn(body, request)
        except HTTPException as e:
            return JSONResponse({"detail": e.detail}, status_code=e.status_code)
        except QueryError as e:
            return JSONResponse({"detail": str(e)}, status_code=400)
        return JSONResponse(result)

    def _knn(body: dict[str, Any], request: Request) -> list[dict[str, Any]]:
        name = body.get("indice_name")
        if name not in (None, "", index_name, "default"):
            raise HTTPException(404, f"unknown indice_name {name!r}; this backend serves {index_name!r}")
        modality = body.get("modality") or IMAGE
        if modality not in (IMAGE, TEXT, AUDIO):
            raise HTTPException(400, f"unknown modality {modality!r}: image, text or audio")
        k = body.get("num_images") or body.get("num_result_ids") or 40
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_RESULTS:
            raise HTTPException(400, f"num_images must be an integer from 1 to {MAX_RESULTS}")
        uploads = _Upload()
        try:
            parts: list[QueryPart] = []
            if body.get("text"):
                if not isinstance(body["text"], str):
                    raise HTTPException(400, "text must be a string")
                parts.append(QueryPart(TEXT, body["text"]))
            if body.get("image"):
                if not isinstance(body["image"], str):
                    raise HTTPException(400, "image must be a base64 string")
                parts.append(QueryPart(IMAGE, uploads.image(body["image"])))
            if body.get("image_url"):
                if not allow_url_fetch:
                    raise HTTPException(403, "image_url fetching is off: start the server with --allow-url-fetch")
                parts.append(QueryPart(IMAGE, uploads.image(base64.b64encode(_fetch(str(body["image_url"]))).decode())))
            if body.get("embedding_input") is not None:
                vec = (
                    np.asarray(body["embedding_input"], dtype=np.float32)
                    if _is_numbers(body["embedding_input"])
                    else None
                )
                if vec is None or vec.ndim != 1 or vec.size != engine.encoder.dim or not np.isfinite(vec).all():
                    raise HTTPException(400, f"embedding_input must be a list of {engine.encoder.dim} numbers")
                parts.append(QueryPart("vector", l2_normalize(vec[None])[0]))
            if not parts:
                raise HTTPException(400, "give text, image, image_url or embedding_input")
            q = Query(parts=parts, target=modality, k=k, dedupe=bool(body.get("deduplicate")))
            hits = run(q)
        finally:
            uploads.close()
        base = str(request.base_url).rstrip("/")
        out = []
        for h in hits:
            row: dict[str, Any] = {
                "id": h.id,
                "similarity": h.score,
                "caption": h.metadata.get("caption") or h.metadata.get("excerpt") or Path(h.path).stem,
                "url": f"{base}/items/{h.id}/file",
                "image_path": h.path,
            }
            if h.modality == IMAGE:
                try:
                    row["image"] = base64.b64encode(_thumbnail(thumbs, item_or_404(h.id))).decode()
                except (HTTPException, OSError, MediaError):
                    pass
            out.append(row)
        return out

    @app.post("/metadata", dependencies=guarded)
    def metadata(body: MetadataIn, request: Request) -> list[dict[str, Any]]:
        """clip-retrieval: metadata of result ids."""
        from mmsearch.query import item_metadata

        with lock:
            items = engine.store.get_items(body.ids)
        base = str(request.base_url).rstrip("/")
        return [
            {
                "id": i,
                "metadata": {
                    "caption": items[i].caption or items[i].excerpt or Path(items[i].path).stem,
                    "url": f"{base}/items/{i}/file",
                    "image_path": items[i].path,
                    "modality": items[i].modality,
                    **item_metadata(items[i]),
                },
            }
            for i in body.ids
            if i in items
        ]

    # -- OpenAI-style embeddings ------------------------------------------------------------
    @app.post("/v1/embeddings", dependencies=guarded)
    def openai_embeddings(body: OpenAIEmbeddingsIn) -> dict[str, Any]:
        """OpenAI's embeddings API shape, served by the index's text tower."""
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or len(texts) > 2048 or not all(isinstance(t, str) for t in texts):
            raise HTTPException(422, "input: a string or a list of 1 to 2048 strings")
        if body.encoding_format not in (None, "float", "base64"):
            raise HTTPException(422, "encoding_format: float or base64")
        with lock:
            vecs = engine.embed_text(texts)
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
            "model": body.model or engine.model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # -- the page ---------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        html = resources.files("mmsearch.server").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)

    return app


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in exc.errors()]


def _is_numbers(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)


def _fetch(url: str, limit: int = 20 * 1024 * 1024) -> bytes:
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise HTTPException(400, "image_url must be http(s)")
    try:
        with urllib.request.urlopen(url, timeout=10) as r:  # noqa: S310 - only with --allow-url-fetch
            data: bytes = r.read(limit + 1)
    except OSError as e:
        raise HTTPException(400, f"cannot fetch image_url: {e}") from e
    if len(data) > limit:
        raise HTTPException(413, "image_url content too large")
    return data


def _thumbnail(folder: Path, item: Any) -> bytes:
    """A cached JPEG thumbnail, keyed by item id and file version."""
    from PIL import Image

    from mmsearch.media import decode_image

    path = folder / f"{item.id}-{item.size}-{item.mtime_ns}.jpg"
    try:
        return path.read_bytes()
    except OSError:
        pass
    try:
        im = decode_image(Path(item.path).read_bytes(), size=THUMBNAIL_SIZE).image
    except OSError as e:
        raise HTTPException(404, f"item {item.id}'s file is gone") from e
    except MediaError as e:
        raise HTTPException(404, f"item {item.id}: {e}") from e
    im.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    try:
        folder.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only index dir: serve without caching
    return data
