"""Options and error handling shared by the commands."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mmsearch.errors import MmsearchError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

IndexOption = Annotated[
    Path | None,
    typer.Option(
        "--index",
        envvar="MMSEARCH_INDEX",
        help="Index directory. Default: $MMSEARCH_INDEX, else the user data dir (see `mmsearch info`).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library errors into `Error: <one line>` on stderr and exit code 1; Ctrl-C into 130."""
    try:
        yield
    except MmsearchError as e:
        err_console.print(f"[red]Error:[/red] {_one_line(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("Interrupted: the work committed so far is kept.")
        raise typer.Exit(130) from None


def _one_line(msg: str) -> str:
    return " ".join(msg.split())


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
