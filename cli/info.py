"""`mmsearch info`: where the index is and what it holds."""

from __future__ import annotations

from datetime import datetime

from mmsearch.cli._common import IndexOption, JsonOption, cli_errors, console, human_size, print_json


def info(index_dir: IndexOption = None, json_out: JsonOption = False) -> None:
    """Show the index location, its model, item counts per modality, FAISS recipes and size on disk."""
    from mmsearch.engine import Engine

    with cli_errors():
        with Engine.open(index_dir) as engine:
            data = engine.info(check=True)
        if json_out:
            print_json(data.as_dict())
            return
        from rich.table import Table

        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        table.add_row("index", data.path)
        table.add_row("model", f"{data.model} (dim {data.dim}, fingerprint {data.fingerprint})")
        if data.created:
            table.add_row("created", datetime.fromtimestamp(data.created).isoformat(sep=" ", timespec="seconds"))
        for modality, n in sorted(data.counts.items()):
            table.add_row(modality, f"{n} items, FAISS recipe {data.recipes.get(modality, '-')}")
        if not data.counts:
            table.add_row("items", "none yet")
        table.add_row("size on disk", human_size(data.size_bytes))
        table.add_row("schema", str(data.schema_version))
        console.print(table)
