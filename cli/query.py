"""`mmsearch query`: rank indexed items for a text, image or audio query."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmsearch.cli._common import IndexOption, JsonOption, cli_errors, console, print_json


def query(
    text: Annotated[str | None, typer.Argument(help="What to look for, in words.", show_default=False)] = None,
    image: Annotated[
        Path | None, typer.Option("--image", "-i", help="Query by example: an image file.", show_default=False)
    ] = None,
    audio: Annotated[
        Path | None,
        typer.Option("--audio", "-a", help="Query by example: a sound or recording.", show_default=False),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help="What to return: image, text, audio or any. Default: the kind of an --image/--audio query, "
            "else image (text for text-only models).",
            show_default=False,
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--top", min=1, help="Number of results.")] = 10,
    index_dir: IndexOption = None,
    json_out: JsonOption = False,
    paths_only: Annotated[bool, typer.Option("--paths-only", help="One path per line, for piping.")] = False,
) -> None:
    """Search the index with words, an example image or an example sound.

    Audio results show their duration and where they match: the time, and for speech the words said.

    Examples:
      [bold]mmsearch query "a dog on the beach"[/bold]               text -> images
      [bold]mmsearch query --image x.jpg[/bold]                      image -> images
      [bold]mmsearch query "budget meeting" --target text[/bold]      text -> notes
      [bold]mmsearch query "meeting about the budget" -t audio[/bold] text -> recordings (speech)
      [bold]mmsearch query --audio clip.wav --target text[/bold]      audio -> notes
      [bold]mmsearch query "a dog" --paths-only | xargs open[/bold]
    """
    from mmsearch.engine import Engine

    with cli_errors():
        with Engine.open(index_dir) as engine:
            hits = engine.search(text=text, image=image, audio=audio, target=target, k=k)
        if json_out:
            print_json([h.as_dict() for h in hits])
            return
        if paths_only:
            for h in hits:
                typer.echo(h.path)
            return
        if not hits:
            console.print("No results: the index has no items of that kind (see `mmsearch info`).")
            return
        from rich.table import Table

        table = Table(box=None, pad_edge=False)
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        if len({h.modality for h in hits}) > 1:
            table.add_column("kind")
        longest = max(len(h.path) for h in hits)
        table.add_column("path", overflow="fold", min_width=min(longest, max(20, console.width - 40)))
        table.add_column("about", overflow="ellipsis", no_wrap=True, max_width=72)
        for h in hits:
            about = h.metadata.get("caption") or h.metadata.get("excerpt") or ""
            if "width" in h.metadata and not about:
                about = f"{h.metadata['width']}x{h.metadata['height']}"
            if "duration" in h.metadata:
                about = _audio_about(h.metadata)
            row = [str(h.rank), f"{h.score:.3f}"]
            if len(table.columns) == 5:
                row.append(h.modality)
            table.add_row(*row, h.path, about)
        console.print(table)


def clock(seconds: float) -> str:
    """1:02:03 / 2:03 style time."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _audio_about(meta: dict[str, object]) -> str:
    """`[2:31] at 1:05 "the budget was moved..."` — duration, where it matches, the words said there."""
    out = f"[{clock(float(meta['duration']))}]"  # type: ignore[arg-type]
    match = meta.get("match")
    if isinstance(match, dict):
        out += f" at {clock(float(match['start']))}"
        if match.get("text"):
            out += f' "{match["text"]}"'
        else:
            out += " (sound)"
    return out
