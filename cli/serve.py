"""`mmsearch serve`: the HTTP retrieval backend and search page."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from mmsearch.cli._common import DeviceOption, IndexOption, cli_errors, err_console


def serve(
    index_dir: IndexOption = None,
    device: DeviceOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on. Loopback by default: only this machine.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(
            help="Require `Authorization: Bearer TOKEN` (or ?token=) on every route. Set one before --host 0.0.0.0.",
            envvar="MMSEARCH_TOKEN",
            show_default=False,
        ),
    ] = None,
    allow_url_fetch: Annotated[
        bool,
        typer.Option(
            "--allow-url-fetch",
            help="Let /knn-service fetch image_url (public addresses only; 20 MB, 10 s at most).",
        ),
    ] = False,
    allow_private_urls: Annotated[
        bool,
        typer.Option(
            "--allow-private-urls",
            help="With --allow-url-fetch: also fetch from loopback and private networks (a trusted LAN only).",
        ),
    ] = False,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-origin",
            help="A web origin whose pages may call this API from a browser, e.g. clip-retrieval's front end "
            "at http://localhost:3000 (repeatable; '*' for any). None by default. With --token, the page must "
            "still send the token.",
            show_default=False,
        ),
    ] = None,
    max_batch: Annotated[
        int,
        typer.Option(
            min=1,
            max=1024,
            help="Searches arriving together are answered as one batch (one encoder call, one FAISS search), "
            "up to this many. 1: one at a time.",
        ),
    ] = 32,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            min=0,
            max=1000,
            help="The most a batch waits for searches on their way (ms; never more than half the last batch's "
            "run time; a lone client never waits).",
        ),
    ] = 50.0,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Server processes sharing the port, each with its own batcher and 1/N of the threads (the "
            "FAISS files are memory-mapped, so shared; the model loads in each). Under many concurrent "
            "clients 2 answered 15% more than 1 on 2 cores (docs/benchmarks.md); 1 is leaner.",
        ),
    ] = 1,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another host name clients may use in the Host header (repeatable). By default a loopback "
            "server answers only to localhost/127.0.0.1/::1 (stops DNS rebinding).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve the index over HTTP: a search page, a JSON API, and the APIs other tools already speak.

    Routes: [bold]/[/bold] (search page), [bold]POST /search[/bold], [bold]POST /embed[/bold],
    [bold]GET /items/ID[/bold] (+ /thumbnail, /file), [bold]/health[/bold], [bold]/info[/bold],
    clip-retrieval's [bold]POST /knn-service[/bold], [bold]GET /indices-list[/bold], [bold]POST /metadata[/bold],
    and OpenAI-style [bold]POST /v1/embeddings[/bold]. The OpenAPI spec is at /docs and /openapi.json.

    Examples:
      [bold]mmsearch serve[/bold]                                  http://127.0.0.1:8000
      [bold]mmsearch serve --index ~/idx --port 9000 --token s3cret[/bold]
    """
    with cli_errors():
        from mmsearch.device import set_device

        set_device(device)
        import os

        import uvicorn

        from mmsearch.errors import MmsearchError
        from mmsearch.server import create_app, server_config

        if token is None and os.environ.get("MMSEARCH_TOKEN") is not None:
            token = os.environ["MMSEARCH_TOKEN"]  # set but empty: refused below, never "no auth" in silence
        if token is not None and not token.strip():
            raise MmsearchError("the token is empty (--token or MMSEARCH_TOKEN): give a real one, or none at all")

        options = {
            "token": token,
            "allow_url_fetch": allow_url_fetch,
            "host": host,
            "allowed_hosts": list(allow_host or ()),
            "cors_origins": list(cors_origin or ()),
            "allow_private_urls": allow_private_urls,
            "max_batch": max_batch,
            "batch_window_ms": batch_window_ms,
        }
        if workers > 1:
            from mmsearch.engine import Engine
            from mmsearch.server.workers import run_workers

            with Engine.open(index_dir) as engine:  # a missing or damaged index: one error, not N workers'
                where = engine.dir
            what = f"{where} on http://{host}:{port} with {workers} worker processes"
            run_workers(
                workers, host, port, {"index": str(where), **options}, "mmsearch.cli.serve:worker_app",
                on_ready=lambda: _started(what, token, host),
            )  # fmt: skip
            return

        with err_console.status("loading the index and model"):
            app = create_app(index_dir, **options)  # type: ignore[arg-type]
        _started(f"{app.state.engine.dir} on http://{host}:{port}", token, host)
        try:
            uvicorn.Server(server_config(app, host, port)).run()
        finally:
            app.state.engine.close()


def _started(what: str, token: str | None, host: str) -> None:
    err_console.print(f"mmsearch serving {what}  (Ctrl-C stops)")
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        err_console.print(
            "[yellow]Warning:[/yellow] no --token, and listening beyond this machine: anyone who "
            "can reach the port can search and read the indexed files"
        )


def worker_app() -> Any:
    """The app of one `--workers` process (uvicorn calls it there): an error is one line and the exit code
    uvicorn's supervisor reads as "failed to start" (it stops, instead of starting the worker again)."""
    from rich.markup import escape
    from uvicorn.config import STARTUP_FAILURE

    from mmsearch.cli._common import _one_line, shown
    from mmsearch.errors import MmsearchError
    from mmsearch.server.workers import app_from_env

    try:
        return app_from_env()
    except MmsearchError as e:
        err_console.print("[red]Error:[/red] " + escape(shown(_one_line(str(e)))), soft_wrap=True)
        sys.exit(STARTUP_FAILURE)
