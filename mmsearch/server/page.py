"""The search page, and the API's own docs (behind the token like every other route)."""

from __future__ import annotations

from importlib import resources
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mmsearch.server.security import page_csp

router = APIRouter(include_in_schema=False)
docs = APIRouter(include_in_schema=False)
PAGE = resources.files("mmsearch.server").joinpath("static/index.html").read_text(encoding="utf-8")
PAGE_CSP = page_csp(PAGE)
ICON = resources.files("mmsearch.server").joinpath("static/favicon.svg").read_bytes()


@router.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": PAGE_CSP})


@router.get("/favicon.svg")
@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(ICON, media_type="image/svg+xml", headers={"Cache-Control": "max-age=86400"})


@docs.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    from fastapi.openapi.docs import get_swagger_ui_html

    given = request.query_params.get("token")
    url = "/openapi.json" + (f"?token={quote(given)}" if given else "")
    return get_swagger_ui_html(openapi_url=url, title="mmsearch API")
