"""Options and error handling shared by the commands."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

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
DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        envvar="MMSEARCH_DEVICE",
        help="Where models and FAISS run: auto (a GPU when there is one), cpu, cuda, cuda:N.",
        show_default=False,
    ),
]


# Characters a terminal acts on instead of showing: C0/C1 controls (ESC starts colour and cursor
# sequences, BEL rings, a newline splits a "one-line" message) and bidirectional overrides that make a
# file name read backwards. A file name is a stranger's text: they are shown as escapes.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def shown(text: str) -> str:
    """``text`` safe to print to a terminal: control characters as ``\\xNN`` / ``\\uNNNN`` escapes."""

    def esc(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _CONTROLS.sub(esc, text)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn library errors into `Error: <one line>` on stderr and exit code 1; Ctrl-C into 130."""
    try:
        yield
    except MmsearchError as e:
        err_console.print("[red]Error:[/red] " + escape(shown(_one_line(str(e)))), soft_wrap=True)
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


def count(n: int, modality: str) -> str:
    """``16 pictures``, ``1 note``: a number of items, named as their modality calls them."""
    from mmsearch.errors import QueryError
    from mmsearch.modalities import get

    try:
        one, many = get(modality).label
    except QueryError:  # a kind no longer registered
        one, many = modality, modality
    return f"{n} {one if n == 1 else many}"
