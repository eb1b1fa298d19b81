"""`mmsearch index`: embed files into the index, incrementally."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from mmsearch.cli._common import (
    DeviceOption,
    IndexOption,
    JsonOption,
    cli_errors,
    console,
    count,
    err_console,
    print_json,
    shown,
)

if TYPE_CHECKING:
    from mmsearch.engine import Engine

# Exit status of a run that finished but skipped files (0: everything indexed; 1: an error stopped it).
SKIPPED_EXIT = 3


def index(
    paths: Annotated[
        list[Path], typer.Argument(help="Folders (searched recursively) or files to index.", show_default=False)
    ],
    index_dir: IndexOption = None,
    device: DeviceOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Encoder for a new index (see `mmsearch models`); the index records it, later runs and "
            "queries reuse it. A tower per modality: image=MODEL,audio=MODEL. Default: auto (MobileCLIP2-S0 "
            "+ CLAP, downloaded once) when it can be had, else builtin (offline), said in one line.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Files embedded per model call.")] = 32,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Decoding threads. Default: CPU count (max 8).", show_default=False)
    ] = None,
    hidden: Annotated[bool, typer.Option("--hidden", help="Also index hidden files and folders.")] = False,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, help="Seconds to wait while another `mmsearch index` writes this index."),
    ] = 0.0,
    ocr: Annotated[
        bool | None,
        typer.Option(
            "--ocr/--no-ocr",
            help="Read the text in pictures (RapidOCR; pip install 'mmsearch[ocr]'). Default: on when installed; "
            "the choice sticks to the index.",
            show_default=False,
        ),
    ] = None,
    follow_symlinks: Annotated[
        bool, typer.Option("--follow-symlinks", help="Follow symbolic links (each folder is visited once).")
    ] = False,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="Force a FAISS recipe (flat, ivf, ivf-sq8, ivf-pq). Default: chosen by size and --memory-budget.",
            show_default=False,
        ),
    ] = None,
    memory_budget: Annotated[
        str | None,
        typer.Option(
            help="RAM the FAISS indexes may take (8G, 512M; 0: no limit): past it, more compressed recipes "
            "(ivf-sq8, ivf-pq, re-ranked exactly from SQLite). Sticks to the index.",
            show_default=False,
        ),
    ] = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Decode and embed on a Ray cluster (pip install 'mmsearch[ray]'): a new local one, or "
            "--ray-address. Every worker must see the folders at the same paths.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            help="The cluster to join (auto, ray://HEAD:10001; implies --ray). Default: $RAY_ADDRESS, else local.",
            show_default=False,
        ),
    ] = None,
    ray_actors: Annotated[
        int | None,
        typer.Option(
            min=1, help="Encoder actors (--ray). Default: the cluster's GPUs, else its CPUs.", show_default=False
        ),
    ] = None,
    json_out: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no skip lines.")] = False,
) -> None:
    """Index pictures, notes (.txt, .md) and sounds (wav, flac, ogg, mp3, m4a) under PATHS.

    Re-running is incremental: only new or changed files are embedded, files that share content
    with an indexed one reuse its vector, and files deleted from disk leave the index. A caption
    file beside an image ([bold]photo.jpg[/bold] + [bold]photo.txt[/bold]) is stored as its caption.
    One run writes an index at a time (a second one refuses, or waits with --wait).

    Exit status: 0 all indexed, 3 finished but some files were skipped (listed), 1 error, 130 Ctrl-C.

    Example: [bold]mmsearch index ~/Pictures --model openclip:ViT-B-32/openai[/bold]
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from mmsearch.engine import Engine
    from mmsearch.errors import MmsearchError
    from mmsearch.ingest import IndexOptions, IngestHooks, RayOptions

    with cli_errors():
        from mmsearch.device import set_device

        set_device(device)
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise MmsearchError(f"no such file or folder: {', '.join(missing)}")
        notice = None
        if model is None and not Engine.exists(index_dir):
            from mmsearch.encoders import choose_default

            model, notice = choose_default()
        progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
            disable=quiet or json_out or not err_console.is_terminal,
        )
        task = progress.add_task("scanning", total=None, rate="")

        def skip(path: str, reason: str) -> None:
            if not quiet:
                progress.console.print(
                    f"skipping {shown(path)}: {shown(reason)}", markup=False, highlight=False, soft_wrap=True
                )

        def start(total: int) -> None:
            progress.update(task, description="embedding", total=total, completed=0)

        def advance(n: int) -> None:
            progress.advance(task, n)
            t = progress.tasks[0]
            if t.speed:
                progress.update(task, rate=f"{t.speed:.1f} files/s")

        budget = None
        if memory_budget is not None:
            from mmsearch.memory import parse_size

            budget = parse_size(memory_budget)
        with Engine.open(index_dir, model=model, create=True, recipe=recipe, memory_budget=budget) as engine:
            if engine.store.get_meta("model") is None:
                _load_model(engine, quiet or json_out)  # first, so the bar measures embedding

            def load() -> None:  # an index that knows its model loads it only when there is work
                progress.stop()
                try:
                    _load_model(engine, quiet or json_out)
                finally:
                    progress.start()

            remote = RayOptions(ray_address, ray_actors) if ray or ray_address or ray_actors else None
            options = IndexOptions(batch_size, workers, hidden, follow_symlinks, ocr, wait, remote)
            hooks = IngestHooks(skip=skip, start=start, advance=advance, load=load)
            # Ray's driver prints its workers' failures (a retried batch) on stdout: stdout stays the report's
            with progress, contextlib.redirect_stdout(sys.stderr) if remote else contextlib.nullcontext():
                report = engine.index(paths, options, hooks=hooks)
            counts = engine.info().counts
            model = engine.model_name
        if notice and not quiet:
            err_console.print(notice, markup=False, highlight=False, soft_wrap=True)
        if json_out:
            print_json({**report.as_dict(), "index": str(engine.dir), "counts": counts})
            if report.skipped:
                raise typer.Exit(SKIPPED_EXIT)
            return
        summary = (
            f"Indexed {report.added} new, {report.updated} changed, removed {report.removed}, "
            f"{report.unchanged} unchanged ({report.reused} vectors reused) in {report.seconds:.1f} s"
        )
        if report.skipped:
            summary += f"; [yellow]skipped {len(report.skipped)}[/yellow]"
        console.print(summary, soft_wrap=True)
        for path, note in report.notes:
            console.print(f"Note: {escape(shown(path))}: {escape(note)}", soft_wrap=True)
        for modality, n in sorted(report.ignored.items()):
            console.print(f"Ignored {count(n, modality)}: model {model} does not embed them.", soft_wrap=True)
        totals = ", ".join(count(n, m) for m, n in sorted(counts.items())) or "nothing"
        console.print(f"Index {escape(shown(str(engine.dir)))} (model {model}) now holds {totals}.", soft_wrap=True)
        if report.skipped:
            raise typer.Exit(SKIPPED_EXIT)


def _load_model(engine: Engine, quiet: bool) -> None:
    """Load the index's model under a spinner that shows what is being downloaded into the hub cache."""
    import threading

    from mmsearch import hub

    if quiet or not err_console.is_terminal:
        engine.towers  # noqa: B018
        return
    done = threading.Event()
    with err_console.status(f"loading {engine.model_name}") as status:

        def watch() -> None:
            start = hub.downloaded_bytes()
            while not done.wait(0.25):
                got = hub.downloaded_bytes() - start
                if got > 0:
                    status.update(f"loading {engine.model_name}: downloading weights, {got / 1e6:.1f} MB")

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            engine.towers  # noqa: B018
        finally:
            done.set()
