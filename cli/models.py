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
        for col in ("model", "modalities", "dim", "offline", "notes"):
            table.add_column(col)
        for m in found:
            table.add_row(m.name, "+".join(m.modalities), str(m.dim or "-"), "yes" if m.offline else "no", m.note)
        console.print(table)
