"""`mmsearch serve`: the HTTP retrieval backend and search page."""

from __future__ import annotations

from typing import Annotated

import typer

from mmsearch.cli._common import IndexOption, cli_errors, err_console


def serve(
    index_dir: IndexOption = None,
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
        bool, typer.Option("--allow-url-fetch", help="Let /knn-service fetch image_url (makes the server fetch URLs).")
    ] = False,
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
        import uvicorn

        from mmsearch.server import create_app

        with err_console.status("loading the index and model"):
            app = create_app(index_dir, token=token, allow_url_fetch=allow_url_fetch)
        err_console.print(f"mmsearch serving {app.state.engine.dir} on http://{host}:{port}  (Ctrl-C stops)")
        try:
            uvicorn.run(app, host=host, port=port, log_level="warning")
        finally:
            app.state.engine.close()
