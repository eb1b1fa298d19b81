"""The search page, and the API's own docs (behind the token like every other route)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
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


# Swagger UI's files, served from the swagger-ui-bundle-v2 package so /docs works with no network
SWAGGER_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


def _swagger_dir() -> Path | None:
    try:
        import swagger_ui_bundle
    except ImportError:
        return None
    folder = Path(swagger_ui_bundle.swagger_ui_path)
    return folder if all((folder / name).is_file() for name in SWAGGER_ASSETS) else None


@router.get("/docs/assets/{name}")
def swagger_asset(name: str) -> Response:
    """Swagger UI's own script and style (public library files: no token, like the page)."""
    folder = _swagger_dir()
    if folder is None or name not in SWAGGER_ASSETS:
        raise HTTPException(404, "no such asset")
    return Response(
        (folder / name).read_bytes(), media_type=SWAGGER_ASSETS[name], headers={"Cache-Control": "max-age=86400"}
    )


@docs.get("/openapi.json")
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@docs.get("/docs")
def swagger(request: Request) -> HTMLResponse:
    from fastapi.openapi.docs import get_swagger_ui_html

    given = request.query_params.get("token")
    url = "/openapi.json" + (f"?token={quote(given)}" if given else "")
    if _swagger_dir() is None:  # the package is missing: Swagger UI's CDN, as FastAPI does by default
        return get_swagger_ui_html(openapi_url=url, title="mmsearch API")
    return get_swagger_ui_html(
        openapi_url=url,
        title="mmsearch API",
        swagger_js_url="/docs/assets/swagger-ui-bundle.js",
        swagger_css_url="/docs/assets/swagger-ui.css",
        swagger_favicon_url="/favicon.svg",
    )
