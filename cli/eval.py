"""`mmsearch eval`: retrieval recall of a model on a pairs file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmsearch.cli._common import JsonOption, cli_errors, console, err_console, print_json


def eval_(
    pairs_file: Annotated[
        Path, typer.Argument(help="CSV or TSV with a header: an item file column and a caption column.")
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model to evaluate (see `mmsearch models`). Default: builtin.", show_default=False
        ),
    ] = None,
    path_key: Annotated[str, typer.Option(help="Column holding item paths, relative to the pairs file.")] = "filepath",
    caption_key: Annotated[str, typer.Option(help="Column holding captions.")] = "caption",
    batch_size: Annotated[int, typer.Option(min=1, help="Items or captions embedded per model call.")] = 32,
    json_out: JsonOption = False,
) -> None:
    """Measure text->item and item->text recall@1/5/10 of a model on your own pairs.

    Each row pairs a file with a caption; an item may have several captions (several rows).
    Text->item counts a hit when the caption's item is in the top k; item->text when any of the
    item's captions is. Same conventions as CLIP_benchmark's Flickr30k/COCO retrieval.

    Example: [bold]mmsearch eval photos/pairs.csv --model openclip:ViT-B-32/openai --json[/bold]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from mmsearch.encoders import DEFAULT_MODEL, load_encoder
    from mmsearch.evaluation import evaluate, load_pairs

    with cli_errors():
        pairs = load_pairs(pairs_file, path_key=path_key, caption_key=caption_key)
        name = model or DEFAULT_MODEL
        with err_console.status(f"loading {name}"):
            encoder = load_encoder(name)
        progress = Progress(
            TextColumn("embedding"),
            BarColumn(),
            MofNCompleteColumn(),
            console=err_console,
            disable=json_out or not err_console.is_terminal,
        )
        with progress:
            task = progress.add_task("embedding", total=len(pairs.items) + len(pairs.captions))
            result = evaluate(encoder, pairs, batch_size, advance=lambda n: progress.advance(task, n))
        if json_out:
            print_json(result)
            return
        from rich.table import Table

        console.print(f"{result['model']}: {result['pairs']} pairs, {result['items']} items")
        table = Table(box=None, pad_edge=False)
        table.add_column("direction")
        for k in result["text_to_item"]:
            table.add_column(k, justify="right")
        for direction in ("text_to_item", "item_to_text"):
            table.add_row(direction.replace("_", " "), *(f"{v:.3f}" for v in result[direction].values()))
        console.print(table)
