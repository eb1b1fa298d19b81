"""`mmsearch models`: the encoders this install can use."""

from __future__ import annotations

from typing import Annotated

import typer

from mmsearch.cli._common import JsonOption, cli_errors, console, print_json


def models(
    all_models: Annotated[bool, typer.Option("--all", help="List every OpenCLIP pretrained tag.")] = False,
    json_out: JsonOption = False,
) -> None:
    """List model names for `mmsearch index --model NAME`.

    [bold]offline[/bold] models need no download; the others fetch weights on first use.
    """
    from mmsearch.encoders import available_models

    with cli_errors():
        found = available_models(include_all_openclip=all_models)
        if json_out:
            print_json([m.__dict__ | {"modalities": list(m.modalities)} for m in found])
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        # names are never cut (they are for copying): a narrow or absent terminal wraps the notes instead
        table.add_column("model", no_wrap=True, min_width=max(len(m.name) for m in found))
        for col in ("modalities", "dim", "offline"):
            table.add_column(col, no_wrap=True)
        table.add_column("notes", overflow="fold")
        for m in found:
            table.add_row(m.name, "+".join(m.modalities), str(m.dim or "-"), "yes" if m.offline else "no", m.note)
        if console.is_terminal:
            console.print(table)
        else:  # piped: one model a line, nothing wrapped (a file has no width)
            from rich.console import Console

            Console(width=1000, highlight=False).print(table)
