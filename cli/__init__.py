"""The `mmsearch` command line, installed as ``mmsearch.cli``. One file per command."""

from __future__ import annotations

from typing import Annotated

import typer

from mmsearch import __version__
from mmsearch.cli import eval as _eval
from mmsearch.cli import index as _index
from mmsearch.cli import info as _info
from mmsearch.cli import models as _models
from mmsearch.cli import query as _query
from mmsearch.cli import serve as _serve
from mmsearch.cli import train as _train

app = typer.Typer(
    name="mmsearch",
    help=(
        "Search your own photos and notes by meaning.\n\n"
        "[bold]mmsearch index ./photos[/bold] embeds every image and text file into a FAISS index "
        '(incremental on re-runs); [bold]mmsearch query "a dog"[/bold] ranks them. '
        "The index lives in your data dir unless you pass --index DIR or set MMSEARCH_INDEX."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mmsearch {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Search your own photos and notes by meaning."""


app.command("index")(_index.index)
app.command("query")(_query.query)
app.command("info")(_info.info)
app.command("models")(_models.models)
app.command("eval")(_eval.eval_)
app.command("train")(_train.train)
app.command("serve")(_serve.serve)
