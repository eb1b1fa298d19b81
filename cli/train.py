"""`mmsearch train`: contrastive training of heads on your own pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mmsearch.cli._common import JsonOption, cli_errors, console, err_console, print_json


def train(
    pairs_file: Annotated[Path, typer.Argument(help="Training pairs: CSV/TSV with item file and caption columns.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write (use it as --model DIR).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Base model whose towers stay frozen.")] = "builtin",
    val: Annotated[
        Path | None,
        typer.Option(help="Validation pairs. Default: --val-fraction of the items held out.", show_default=False),
    ] = None,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Items held out when no --val.")] = 0.2,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training pairs.")] = 20,
    batch_size: Annotated[int, typer.Option(min=2, help="Pairs per step (the negatives each pair sees).")] = 64,
    lr: Annotated[float, typer.Option(min=0.0, help="AdamW learning rate.")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed for the split and the batch order: a CPU run repeats exactly.")] = 0,
    train_text: Annotated[
        bool, typer.Option("--train-text", help="Also train a text head (default: text tower locked, LiT).")
    ] = False,
    unfreeze_image: Annotated[
        int,
        typer.Option(
            min=0, help="Also train the last N stages of the image CNN (builtin: 1-7). Slower; 0 keeps it frozen."
        ),
    ] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from OUT/last.pt.")] = False,
    path_key: Annotated[str, typer.Option(help="Column holding item paths.")] = "filepath",
    caption_key: Annotated[str, typer.Option(help="Column holding captions.")] = "caption",
    json_out: JsonOption = False,
) -> None:
    """Train the image side of a model into its text space on your pairs (symmetric InfoNCE).

    The base towers stay frozen; a zero-initialised head on the image features learns to move
    your images next to their captions (LiT), so training starts at the base model's zero-shot
    quality. After each epoch the validation text->item R@1 is printed and the best checkpoint
    is kept in OUT. Then use it everywhere: [bold]mmsearch index ./photos --model OUT[/bold].

    Example: [bold]mmsearch train pairs.csv --out my-model --epochs 20[/bold]
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mmsearch.evaluation import load_pairs
    from mmsearch.training.train import EpochStats, TrainConfig, TrainHooks
    from mmsearch.training.train import train as run_train

    with cli_errors():
        pairs = load_pairs(pairs_file, path_key=path_key, caption_key=caption_key)
        val_pairs = load_pairs(val, path_key=path_key, caption_key=caption_key) if val else None
        config = TrainConfig(
            base=model,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            val_fraction=val_fraction,
            train_text=train_text,
            unfreeze_image=unfreeze_image,
        )
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=err_console,
            disable=json_out or not err_console.is_terminal,
        )
        task = progress.add_task("embedding", total=None, info="")

        def epoch_end(stats: EpochStats) -> None:
            if not json_out:
                mark = "  best, saved" if stats.best else ""
                progress.console.print(
                    f"epoch {stats.epoch}: loss {stats.loss:.4f}, validation text->item R@1 {stats.val_r1:.3f}{mark}"
                )

        hooks = TrainHooks(
            extract_start=lambda total: progress.update(task, total=total, completed=0),
            extract_advance=lambda n: progress.advance(task, n),
            epoch_start=lambda epoch, steps: progress.update(
                task, description=f"epoch {epoch}/{epochs}", total=steps, completed=0
            ),
            step=lambda loss: progress.update(task, advance=1, info=f"loss {loss:.4f}"),
            epoch_end=epoch_end,
        )
        with progress:
            report = run_train(pairs, out, config, val=val_pairs, resume=resume, hooks=hooks)
        if json_out:
            print_json(report.as_dict())
            return
        console.print(
            f"Validation text->item R@1: zero-shot {report.zero_shot_val['R@1']:.3f} -> best "
            f"{report.best_val['R@1']:.3f} (epoch {report.best_epoch}); {report.pairs_per_second:.0f} pairs/s; "
            f"model in {report.out_dir}"
        )
