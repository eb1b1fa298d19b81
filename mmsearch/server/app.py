"""The HTTP API: native routes, clip-retrieval's knn-service, OpenAI-style embeddings, and a search page.

One :class:`~mmsearch.engine.Engine` is opened when the app is created (model loaded once and kept
warm) and used under a lock. Every route that touches a file serves only indexed items, by id:
there is no path parameter anywhere.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import io
import json
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from mmsearch.encoders import AUDIO, IMAGE, TEXT, l2_normalize
from mmsearch.errors import IndexNotFoundError, MediaError, MmsearchError
from mmsearch.files import clamp_int64, file_version, open_regular
from mmsearch.fusion import MAX_RESULTS, Query, QueryPart
from mmsearch.server.fetch import FetchError, any_address, public_only
from mmsearch.server.fetch import fetch as fetch_url

log = logging.getLogger("mmsearch.server")

MAX_BODY_BYTES = 25 * 1024 * 1024  # uploaded images and sounds arrive base64 in JSON bodies
THUMBNAIL_SIZE = 320
MAX_ID = 2**63 - 1  # SQLite INTEGER
BODY_TIMEOUT_S = 30.0  # a request body dripping in slower than this is cut off (408)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
# What a served file is declared as: never text/html or anything a browser would run.
MEDIA_TYPES = {
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif",
    ".bmp": "image/bmp", ".tif": "image/tiff", ".tiff": "image/tiff", ".heic": "image/heic", ".heif": "image/heif",
    ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8",
    ".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".mp3": "audio/mpeg", ".aiff": "audio/aiff", ".aif": "audio/aiff", ".m4a": "audio/mp4", ".aac": "audio/aac",
    ".wma": "audio/x-ms-wma", ".webm": "audio/webm",
}  # fmt: skip
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
        return self.image_bytes(_b64(data, "image"))

    def image_bytes(self, raw: bytes) -> Any:
        from mmsearch.media import decode_image

        try:
            return decode_image(raw).image
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
    *,
    host: str = "127.0.0.1",
    allowed_hosts: Sequence[str] = (),
    allow_private_urls: bool = False,
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

    Raises:
        IndexNotFoundError: no index there.
        MmsearchError: an empty token (it would let an empty ``?token=`` in).
    """
    from mmsearch.engine import Engine

    if token is not None and not token.strip():
        raise MmsearchError("the token is empty: give a real one, or none (loopback only) — never an empty string")
    hosts = _allowed_hosts(host, allowed_hosts)
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
        docs_url=None,  # served below, behind the token like every other route
        redoc_url=None,
        openapi_url=None,
    )
    app.state.engine = engine
    page_html = resources.files("mmsearch.server").joinpath("static/index.html").read_text(encoding="utf-8")
    page_csp = _page_csp(page_html)

    # -- plumbing ---------------------------------------------------------------------------
    @app.middleware("http")
    async def guard_request(request: Request, call_next: Any) -> Any:
        if hosts is not None and _host_name(request.headers.get("host", "")) not in hosts:
            # a page on another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) lands here
            return _secured(JSONResponse({"detail": "unknown Host header"}, status_code=421))
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            return _secured(JSONResponse({"detail": f"request body over {max_body_bytes} bytes"}, status_code=413))
        if request.method in ("POST", "PUT", "PATCH"):
            # the body is read here, whole and under a deadline, so a client dripping it never holds a
            # thread (and chunked bodies meet the same size limit as declared ones)
            body = bytearray()

            async def read() -> bool:
                async for chunk in request.stream():
                    body.extend(chunk)
                    if len(body) > max_body_bytes:
                        return False
                return True

            try:
                if not await asyncio.wait_for(read(), BODY_TIMEOUT_S):
                    return _secured(
                        JSONResponse({"detail": f"request body over {max_body_bytes} bytes"}, status_code=413)
                    )
            except TimeoutError:
                return _secured(JSONResponse({"detail": "request body too slow"}, status_code=408))
            request._body = bytes(body)  # starlette reads it from here
        return _secured(await call_next(request))

    @app.exception_handler(MmsearchError)
    async def mmsearch_error(_request: Request, exc: MmsearchError) -> JSONResponse:
        status = 404 if isinstance(exc, IndexNotFoundError) else 400
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": jsonable_errors(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)

    def auth(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8")):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    guarded = [Depends(auth)]

    @app.get("/openapi.json", dependencies=guarded, include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", dependencies=guarded, include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        from fastapi.openapi.docs import get_swagger_ui_html

        given = request.query_params.get("token")
        url = "/openapi.json" + (f"?token={quote(given)}" if given else "")
        return get_swagger_ui_html(openapi_url=url, title="mmsearch API")

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
    def get_file(item_id: ItemId, request: Request) -> Response:
        """The indexed file itself, if it is still the file that was indexed (HTTP ranges for seeking)."""
        item = item_or_404(item_id)
        f = open_indexed(item)
        return _file_response(f, item.path, request.headers.get("range"))

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
        raw = await request.body()
        try:
            body = json.loads(raw or b"{}")
        except (ValueError, UnicodeDecodeError, RecursionError):
            return JSONResponse({"detail": "body is not JSON (or nested too deeply)"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"detail": "body must be a JSON object"}, status_code=400)
        try:
            # decoding, fetching, the model and FAISS block: never on the event loop (/health must answer)
            result = await run_in_threadpool(_knn, body, str(request.base_url))
        except HTTPException as e:
            return JSONResponse({"detail": e.detail}, status_code=e.status_code)
        except MmsearchError as e:
            return JSONResponse({"detail": str(e).splitlines()[0]}, status_code=400)
        return JSONResponse(result)

    def _knn(body: dict[str, Any], base_url: str) -> list[dict[str, Any]]:
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
                if not isinstance(body["image_url"], str):
                    raise HTTPException(400, "image_url must be a string")
                policy = any_address if allow_private_urls else public_only
                try:
                    fetched = fetch_url(body["image_url"], allowed=policy)
                except FetchError as e:
                    raise HTTPException(e.status, str(e)) from e
                parts.append(QueryPart(IMAGE, uploads.image_bytes(fetched)))
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
            if h.modality == IMAGE:
                try:
                    row["image"] = base64.b64encode(_thumbnail(thumbs, item_or_404(h.id))).decode()
                except (HTTPException, OSError, MmsearchError):
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
        return HTMLResponse(page_html, headers={"Content-Security-Policy": page_csp})

    return app


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [{"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in exc.errors()]


def _is_numbers(x: Any) -> bool:
    return isinstance(x, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in x)


def _allowed_hosts(host: str, extra: Sequence[str]) -> set[str] | None:
    """Host names requests may give; None: any (a wildcard bind with no list)."""
    names = {_host_name(h) for h in extra}
    if host in ("0.0.0.0", "::", ""):
        return names or None
    names.add(_host_name(host))
    if _host_name(host) in LOOPBACK_NAMES or host.startswith("127."):
        names.update(LOOPBACK_NAMES)
    return names


def _host_name(header: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _page_csp(html: str) -> str:
    """A Content-Security-Policy that lets only the page's own inline script and style run."""
    hashes = {
        kind: " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(m.encode()).digest()).decode() + "'"
            for m in re.findall(rf"<{kind}>(.*?)</{kind}>", html, flags=re.DOTALL)
        )
        for kind in ("script", "style")
    }
    return (
        f"default-src 'none'; script-src {hashes['script']}; style-src {hashes['style']}; "
        "img-src 'self' data: blob:; media-src 'self'; connect-src 'self'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    )


def _secured(response: Any) -> Any:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def open_indexed(item: Any) -> BinaryIO:
    """An indexed item's file, opened only if it is still the file that was indexed.

    A name swapped for a symbolic link to ``/etc/shadow``, a pipe, or another file since indexing is
    refused: the opened descriptor must be a regular file with the indexed inode, size and mtime.

    Raises:
        HTTPException: 404 when it cannot be opened as a regular file, 409 when it changed.
    """
    try:
        f = open_regular(item.path, follow_symlinks=item.inode is not None)
    except MediaError as e:
        raise HTTPException(404, f"item {item.id}'s file cannot be served ({e}): re-run `mmsearch index`") from e
    st = os.fstat(f.fileno())
    same = file_version(st) == (item.size, item.mtime_ns) and item.inode in (None, clamp_int64(st.st_ino))
    if not same:
        f.close()
        raise HTTPException(409, f"item {item.id}'s file changed since it was indexed: re-run `mmsearch index`")
    return f


def _file_response(f: BinaryIO, path: str, range_header: str | None) -> Response:
    """Stream an open file (one byte range when asked), declared as a type no browser executes."""
    size = os.fstat(f.fileno()).st_size
    ext = os.path.splitext(path)[1].lower()
    media_type = MEDIA_TYPES.get(ext, "application/octet-stream")
    disposition = "inline" if ext in MEDIA_TYPES else "attachment"
    name = quote(os.path.basename(path), safe="")
    headers = {
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{name}",
        "Accept-Ranges": "bytes",
        "Cache-Control": "private, max-age=60",
    }
    start, end, status = 0, size - 1, 200
    if range_header:
        m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
        if m is None or m.group(1) == m.group(2) == "":
            f.close()
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        if m.group(1) == "":  # the last N bytes
            start = max(0, size - int(m.group(2)))
        else:
            start = int(m.group(1))
            if m.group(2):
                end = min(end, int(m.group(2)))
        if start >= size or start > end:
            f.close()
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)

    def chunks() -> Iterator[bytes]:
        with f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (block := f.read(min(256 * 1024, left))):
                left -= len(block)
                yield block

    return StreamingResponse(chunks(), status_code=status, media_type=media_type, headers=headers)


def _thumbnail(folder: Path, item: Any) -> bytes:
    """A cached JPEG thumbnail, keyed by item id and file version (a damaged cache file is made again)."""
    from PIL import Image

    from mmsearch.media import decode_image

    path = folder / f"{item.id}-{item.size}-{item.mtime_ns}.jpg"
    try:
        cached = path.read_bytes()
        if cached.startswith(b"\xff\xd8") and cached.endswith(b"\xff\xd9"):
            return cached
    except OSError:
        pass
    with open_indexed(item) as f:
        try:
            im = decode_image(f, size=THUMBNAIL_SIZE).image
        except MediaError as e:
            raise HTTPException(404, f"item {item.id}: {e}") from e
    im.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    data = buf.getvalue()
    try:
        folder.mkdir(exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        pass  # read-only index dir: serve without caching
    return data
