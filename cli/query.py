"""`mmsearch query`: rank indexed items for a text, image or audio query."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mmsearch.cli._common import DeviceOption, IndexOption, JsonOption, cli_errors, console, print_json, shown


def query(
    text: Annotated[
        str | None,
        typer.Argument(
            help='What to look for, in words. Parts join with " + " and " - " (spaces around), '
            'a weight goes before a colon: "2:golden retriever + 0.5:beach - snow".',
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option("--image", "-i", help="Query by example: an image file (repeatable).", show_default=False),
    ] = None,
    audio: Annotated[
        list[Path] | None,
        typer.Option("--audio", "-a", help="Query by example: a sound or recording (repeatable).", show_default=False),
    ] = None,
    more_text: Annotated[
        list[str] | None,
        typer.Option("--text", help="Another text part (repeatable); same grammar.", show_default=False),
    ] = None,
    minus: Annotated[
        list[str] | None,
        typer.Option("--minus", help="Text to push away from (repeatable): demotes what it names.", show_default=False),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            "--modality",
            help="What to return: image, text, audio or any. Default: the kind of an --image/--audio query, "
            "else image (text for text-only models).",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, max=10_000, help="Number of results.")] = 10,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many results (paging).")] = 0,
    path: Annotated[
        str | None,
        typer.Option("--path", help='Only paths matching this glob ("*/2023/*"; "*.png" matches names).'),
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", help="Only items from this date on (YYYY-MM-DD; EXIF date, else mtime).")
    ] = None,
    before: Annotated[str | None, typer.Option("--before", help="Only items before this date (YYYY-MM-DD).")] = None,
    min_score: Annotated[float | None, typer.Option("--min-score", help="Drop results scoring below this.")] = None,
    dedupe: Annotated[bool, typer.Option("--dedupe", help="Show near-duplicates (and copies) once.")] = False,
    fusion: Annotated[
        str,
        typer.Option(
            "--fusion", help="How an item's vectors and the query's parts combine: sum (calibrated), rrf or max."
        ),
    ] = "sum",
    explain: Annotated[
        bool, typer.Option("--explain", help="Show each part's and each vector's contribution to every score.")
    ] = False,
    index_dir: IndexOption = None,
    device: DeviceOption = None,
    json_out: JsonOption = False,
    paths_only: Annotated[
        bool,
        typer.Option("--paths-only", help="One path per line, for piping (control characters in names shown escaped)."),
    ] = False,
    null: Annotated[
        bool,
        typer.Option(
            "--null",
            "-0",
            help="Paths exactly as they are, each ended by a NUL byte (for xargs -0; names with newlines).",
        ),
    ] = False,
) -> None:
    """Search the index with words, example images and example sounds, fused into one ranking.

    Each item is scored through all its vectors: its own (picture, note, sound) and, for pictures
    and sounds, the text of its caption file, its file name and the text read in it (OCR).
    Audio results show their duration and where they match: the time, and for speech the words said.

    Examples:
      [bold]mmsearch query "a dog on the beach"[/bold]               text -> images
      [bold]mmsearch query "cat + sunset - water"[/bold]             parts: add two, push one away
      [bold]mmsearch query --image x.jpg "at night"[/bold]           an example picture plus words
      [bold]mmsearch query "invoice" --path "*/2023/*" --after 2023-01-01 -k 20[/bold]
      [bold]mmsearch query "budget meeting" --target text[/bold]      text -> notes
      [bold]mmsearch query "meeting about the budget" -t audio[/bold] text -> recordings (speech)
      [bold]mmsearch query --audio clip.wav --target text[/bold]      audio -> notes
      [bold]mmsearch query "a dog" --explain[/bold]                  why each result scored what it did
      [bold]mmsearch query "a dog" --paths-only | xargs open[/bold]
    """
    from mmsearch.encoders import onnx_towers
    from mmsearch.engine import Engine
    from mmsearch.modalities import get
    from mmsearch.search import Query, QueryPart
    from mmsearch.search.grammar import parse

    onnx_towers.quick_start()  # one query: towers run once or twice, so their sessions open fast instead

    with cli_errors():
        from mmsearch.device import set_device

        set_device(device)
        parts = []
        for extra in more_text or []:
            parts += [QueryPart("text", t.text, t.weight, t.negative) for t in parse(extra)]
        for neg in minus or []:
            parts += [QueryPart("text", t.text, t.weight, True) for t in parse(neg)]
        parts += [QueryPart("image", p) for p in image or []]
        parts += [QueryPart("audio", p) for p in audio or []]
        q = Query.parse(
            text,
            parts=parts,
            target=target,
            k=k,
            offset=offset,
            fusion=fusion,
            path=path,
            after=after,
            before=before,
            min_score=min_score,
            dedupe=dedupe,
            explain=explain,
        )
        with Engine.open(index_dir) as engine:
            hits = engine.search(q)
        if json_out:
            print_json([h.as_dict() for h in hits])
            return
        if null:
            out = sys.stdout.buffer
            for h in hits:
                out.write(os.fsencode(h.path) + b"\0")
            out.flush()
            return
        if paths_only:
            for h in hits:
                typer.echo(shown(h.path))
            return
        if not hits:
            console.print("No results: the index has no items of that kind (see `mmsearch info`).")
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        # rank, score and kind never give way (a narrow terminal folds the path and cuts the about text)
        table.add_column("rank", justify="right", no_wrap=True, min_width=max(4, len(str(hits[-1].rank))))
        table.add_column("score", justify="right", no_wrap=True, min_width=6)
        if len({h.modality for h in hits}) > 1:
            table.add_column("kind", no_wrap=True, min_width=max(len(h.modality) for h in hits))
        # the path gets what it needs (folded past that), the about text what is left (cut with an ellipsis)
        fixed = sum(c.min_width or 0 for c in table.columns) + 2 * len(table.columns)
        longest = max(len(shown(h.path)) for h in hits)
        path_width = min(longest, max(20, console.width - fixed - 24))
        about_width = max(10, min(72, console.width - fixed - path_width - 2))
        table.add_column("path", overflow="fold", min_width=path_width, max_width=path_width)
        table.add_column("about", overflow="ellipsis", no_wrap=True, max_width=about_width)
        for h in hits:
            about = get(h.modality).about(h.metadata)
            row = [str(h.rank), f"{h.score:.3f}"]
            if len(table.columns) == 5:
                row.append(h.modality)
            table.add_row(*row, escape(shown(h.path)), escape(shown(about)))
        console.print(table)
        if explain:
            _print_explain(hits)


def _print_explain(hits: list) -> None:
    from rich.table import Table

    for h in hits:
        # the header on a line of its own: as a table title it wrapped to the table's width
        console.print(f"#{h.rank} {escape(shown(h.path))}  score {h.score:.3f}", soft_wrap=True)
        table = Table(box=None, pad_edge=False)
        for col in ("part", "vector", "similarity", "z", "weight", "contribution"):
            table.add_column(col, justify="left" if col in ("part", "vector") else "right")
        for part in h.explain or []:
            for v in part["vectors"]:
                table.add_row(
                    escape(shown(part["part"])),
                    v["space"],
                    f"{v['similarity']:.3f}",
                    f"{v['z']:+.2f}",
                    f"{v['weight']:g}",
                    f"{v['contribution']:+.3f}",
                )
        console.print(table)
