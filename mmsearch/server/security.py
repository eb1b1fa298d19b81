"""What every request passes before a route: the Host check (DNS rebinding), body limits and deadline,
the token, error shapes, and the headers every response carries."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mmsearch.errors import IndexNotFoundError, MmsearchError

log = logging.getLogger("mmsearch.server")

MAX_BODY_BYTES = 25 * 1024 * 1024  # uploaded images and sounds arrive base64 in JSON bodies
BODY_TIMEOUT_S = 30.0  # a request body dripping in slower than this is cut off (408)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def allowed_hosts(host: str, extra: Sequence[str]) -> set[str] | None:
    """Host names requests may give; None: any (a wildcard bind with no list)."""
    names = {host_name(h) for h in extra}
    if host in ("0.0.0.0", "::", ""):
        return names or None
    names.add(host_name(host))
    if host_name(host) in LOOPBACK_NAMES or host.startswith("127."):
        names.update(LOOPBACK_NAMES)
    return names


def host_name(header: str) -> str:
    """``[::1]:8000`` -> ``::1``, ``Example.org:80`` -> ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def page_csp(html: str) -> str:
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


# Bodies sent as these types are read as JSON: clip-retrieval's front end posts JSON as text/plain (a
# "simple" request, no preflight), and `curl -d` sends it as a form.
JSON_AS = ("", "text/plain", "application/x-www-form-urlencoded")


class Guard:
    """Pure ASGI middleware (Starlette's ``BaseHTTPMiddleware`` cost ~1 ms a request): the Host check, the
    body read whole under a size limit and a deadline, JSON whatever the Content-Type, and the headers
    every response carries."""

    def __init__(self, app: ASGIApp, hosts: set[str] | None, max_body_bytes: int) -> None:
        self.app = app
        self.hosts = hosts
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
            await send(message)

        headers = Headers(scope=scope)
        if self.hosts is not None and host_name(headers.get("host", "")) not in self.hosts:
            # a page on another site whose name was re-pointed at 127.0.0.1 (DNS rebinding) lands here
            await JSONResponse({"detail": "unknown Host header"}, status_code=421)(scope, receive, send_secured)
            return
        length = headers.get("content-length")
        too_big = JSONResponse({"detail": f"request body over {self.max_body_bytes} bytes"}, status_code=413)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await too_big(scope, receive, send_secured)
            return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            # the body is read here, whole and under a deadline, so a client dripping it never holds a
            # thread (and chunked bodies meet the same size limit as declared ones)
            body = bytearray()

            async def read() -> bool:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return True
                    body.extend(message.get("body", b""))
                    if len(body) > self.max_body_bytes:
                        return False
                    if not message.get("more_body", False):
                        return True

            try:
                if not await asyncio.wait_for(read(), BODY_TIMEOUT_S):
                    await too_big(scope, receive, send_secured)
                    return
            except TimeoutError:
                slow = JSONResponse({"detail": "request body too slow"}, status_code=408)
                await slow(scope, receive, send_secured)
                return
            media = headers.get("content-type", "").split(";")[0].strip().lower()
            if body and media in JSON_AS:  # JSON whatever the type says (routes take JSON or nothing)
                kept = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": [*kept, (b"content-type", b"application/json")]}
            replay: list[Message] = [{"type": "http.request", "body": bytes(body), "more_body": False}]

            async def receive_body() -> Message:
                return replay.pop() if replay else await receive()

            await self.app(scope, receive_body, send_secured)
            return
        await self.app(scope, receive, send_secured)


def install(app: FastAPI, hosts: set[str] | None, max_body_bytes: int, cors_origins: Sequence[str] = ()) -> None:
    """The middleware and error handlers of the app.

    Args:
        cors_origins: Origins whose pages may call the API from a browser (CORS); none by default. A
            preflight is answered before the token is asked for (browsers send none on it); the request
            itself still needs the token.
    """

    app.add_middleware(Guard, hosts=hosts, max_body_bytes=max_body_bytes)

    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        # added last, so outermost: a preflight is answered before the Host check and the token
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )

    @app.exception_handler(MmsearchError)
    async def mmsearch_error(_request: Request, exc: MmsearchError) -> JSONResponse:
        status = 404 if isinstance(exc, IndexNotFoundError) else 400
        return JSONResponse({"detail": str(exc).splitlines()[0]}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", [])), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged on the server)"}, status_code=500)


def token_guard(token: str | None) -> Any:
    """A dependency: ``Authorization: Bearer TOKEN`` (or ``?token=``), compared in constant time."""

    async def auth(request: Request) -> None:  # async: checked on the event loop, no thread hop
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else request.query_params.get("token", "")
        if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode("utf-8")):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    return auth
