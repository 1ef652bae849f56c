"""The ``vlmtune`` command: each subcommand parses arguments and calls one stage function."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from vlmtune.cli_data import data_app
from vlmtune.errors import VlmtuneError

app = typer.Typer(
    help="Fine-tune a vision-language model on your own captioned photos; compare before and after.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data_app, name="data")

OVERRIDES = typer.Argument(None, help="Config overrides as dotted key=value, e.g. train.lr=2e-4 train.epochs=3.")
CONFIG = typer.Option(None, "--config", "-c", help="YAML config file (see configs/).")


@app.command()
def demo(
    overrides: list[str] = OVERRIDES,
    config: Path = CONFIG,
    out: Path = typer.Option(Path("runs/demo"), help="Run directory for the demo (a previous demo there is replaced)."),
    pictures: int = typer.Option(400, help="Synthetic chess pictures in all."),
    test_pictures: int = typer.Option(48, help="Of which held out for the before/after test."),
    seed: int = typer.Option(0, help="Seed of the synthetic pictures."),
) -> None:
    """The whole loop on the embedded default model: synthesise chess pictures, evaluate, fine-tune, evaluate, report."""
    from vlmtune.stages.demo import run_demo

    run_demo(out=out, config_file=config, overrides=overrides or [], pictures=pictures,
             test_pictures=test_pictures, seed=seed)


@app.command()
def align(
    overrides: list[str] = OVERRIDES,
    out: Path = typer.Option(None, help="Where to write the projector (default: the packaged asset)."),
    steps: int = typer.Option(300, help="Optimizer steps (batch 16)."),
    n_images: int = typer.Option(3000, help="Generated shape scenes to train on."),
    seed: int = typer.Option(0, help="Seed for data and initialisation."),
) -> None:
    """Stage 1: train the default model's projector on generated shape scenes (vision and LM frozen)."""
    from vlmtune.stages.align import run_align

    run_align(out=out, steps=steps, n_images=n_images, seed=seed, overrides=overrides or [])


@app.command()
def train(
    overrides: list[str] = OVERRIDES,
    config: Path = CONFIG,
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest complete checkpoint in the run dir."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a different run in the output dir."),
) -> None:
    """Fine-tune with LoRA (answer-only loss), evaluating before and after."""
    from vlmtune.stages.train import run_train

    run_train(config_file=config, overrides=overrides or [], resume=resume, overwrite=overwrite)


@app.command()
def evaluate(
    run_or_model: Path = typer.Argument(..., help="A run directory or any model directory transformers loads."),
    overrides: list[str] = OVERRIDES,
    split: str = typer.Option("test", help="Dataset split to evaluate."),
    out: Path = typer.Option(None, help="Folder for predictions and scores (default: RUN/eval)."),
) -> None:
    """Generate on a split and score it (exact match, token F1, ROUGE-L, label-set F1)."""
    from vlmtune.stages.evaluate import run_evaluate

    run_evaluate(run_or_model, split=split, overrides=overrides or [], out=out)


@app.command("config")
def show_config(
    overrides: list[str] = OVERRIDES,
    config: Path = CONFIG,
    keys: bool = typer.Option(False, "--keys", help="List every key with its default and meaning."),
) -> None:
    """Print the resolved config (YAML + overrides), or the reference of all keys."""
    from vlmtune.config import describe, load_config, to_dict

    if keys:
        for key, default, text in describe():
            print(f"{key:32} {default:24} {text}")
        return
    import yaml

    print(yaml.safe_dump(to_dict(load_config(config, overrides or [])), sort_keys=False), end="")


def main() -> None:
    try:
        app()
    except VlmtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
