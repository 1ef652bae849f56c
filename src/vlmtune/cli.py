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
CONFIG = typer.Option(None, "--config", "-c", help="YAML config file (examples in configs/).")


@app.command()
def demo(
    overrides: list[str] = OVERRIDES,
    config: Path = CONFIG,
    out: Path = typer.Option(Path("runs/demo"), help="Run directory for the demo (a previous demo there is replaced)."),
    pictures: int = typer.Option(800, help="Synthetic chess pictures in all."),
    test_pictures: int = typer.Option(48, help="Of which held out for the before/after test."),
    seed: int = typer.Option(0, help="Seed of the synthetic pictures."),
    realign: bool = typer.Option(False, "--realign", help="Rebuild the aligned projector first (vlmtune align, ~15 min)."),
) -> None:
    """The whole loop on the embedded default model: synthesise chess pictures, evaluate, fine-tune, evaluate, report."""
    from vlmtune.stages.demo import run_demo

    run_demo(out=out, config_file=config, overrides=overrides or [], pictures=pictures,
             test_pictures=test_pictures, seed=seed, realign=realign)


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
    launch: str = typer.Option(None, "--launch", help="'accelerate': run this same command under accelerate launch "
                                                      "(several GPUs; see README 'Several GPUs')."),
    launch_config: Path = typer.Option(None, "--launch-config", help="With --launch: the accelerate config file, e.g. "
                                                                     "configs/accelerate/fsdp.yaml."),
) -> None:
    """Fine-tune with LoRA (answer-only loss), evaluating before and after."""
    if launch:
        from vlmtune.stages.launch import relaunch

        relaunch(launch, sys.argv[1:], launch_config)
        return
    from vlmtune.stages.train import run_train

    run_train(config_file=config, overrides=overrides or [], resume=resume, overwrite=overwrite)


@app.command()
def plan(
    target: list[str] = typer.Argument(None, help="A run directory, and/or config overrides as dotted key=value "
                                                  "(model.name=llava-1.5-7b train.batch_size=4 ...)."),
    config: Path = CONFIG,
    gpus: int = typer.Option(None, "--gpus", help="GPUs available (default: those visible, else 1)."),
    gpu_mem: str = typer.Option(None, "--gpu-mem", help="Memory of one GPU, e.g. 80GB (default: this GPU's, else 80GB)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    seq_len: int = typer.Option(None, "--seq-len", help="Tokens per sample (default: image tokens + --text-tokens)."),
    text_tokens: int = typer.Option(64, "--text-tokens", help="Prompt + answer tokens per sample beside the image."),
) -> None:
    """GPU memory a training run needs (by part, per option), the GPUs it takes and the largest batch; no weights loaded."""
    from vlmtune.stages.plan import run_plan

    run_plan(target or [], config_file=config, gpus=gpus, gpu_mem=gpu_mem, as_json=as_json, seq_len=seq_len,
             text_tokens=text_tokens)


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


MODEL_ARG = typer.Argument(..., help="A run directory, an adapter directory, or a (merged or base) model directory.")
MAX_NEW_TOKENS = typer.Option(None, "--max-new-tokens", help="Tokens per answer (default: the run's eval setting).")
TEMPERATURE = typer.Option(None, "--temperature", help="Sample at this temperature; 0 = greedy (default: greedy).")
DTYPE = typer.Option(None, "--dtype", help="Weights dtype: auto, bf16, fp32, fp16 (default: the run's model.dtype).")


@app.command()
def merge(
    run: Path = typer.Argument(..., help="A run directory (or a PEFT adapter directory)."),
    out: Path = typer.Argument(..., help="New folder for the merged model (must not exist or be empty)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a folder an earlier 'vlmtune merge' wrote."),
    base: str = typer.Option(None, "--base", help="Merge into this checkpoint instead of the run's base (e.g. the "
                                                  "unquantized original of a 4-bit base)."),
    push_to_hub: str = typer.Option(None, "--push-to-hub", metavar="REPO_ID", help="Also upload to this Hub repo."),
    private: bool = typer.Option(False, "--private", help="With --push-to-hub: create the repo private."),
) -> None:
    """Merge the LoRA adapter into its base: a model folder that plain transformers loads, with a model card."""
    from vlmtune.stages.merge import run_merge

    run_merge(run, out, overwrite=overwrite, base=base, push_to_hub=push_to_hub, private=private)


@app.command()
def predict(
    model: Path = MODEL_ARG,
    images: list[Path] = typer.Argument(..., help="Picture files, or folders of pictures."),
    prompt: str = typer.Option(None, "--prompt", "-p", help="Question for every picture (default: the run's data.prompt)."),
    output: Path = typer.Option(Path("predictions.jsonl"), "--output", "-o", help="JSONL file: image, prompt, prediction."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    max_new_tokens: int = MAX_NEW_TOKENS,
    batch_size: int = typer.Option(None, "--batch-size", help="Pictures per batch (default: the run's eval setting)."),
    num_beams: int = typer.Option(None, "--num-beams", help="Beam search width (1 = greedy)."),
    temperature: float = TEMPERATURE,
    dtype: str = DTYPE,
) -> None:
    """Answer one prompt for many pictures, in batches, into a JSONL file."""
    from vlmtune.stages.predict import option_overrides, run_predict

    run_predict(model, images, output, prompt=prompt, overwrite=overwrite,
                overrides=option_overrides(max_new_tokens, batch_size, num_beams, temperature, dtype))


@app.command()
def chat(
    model: Path = MODEL_ARG,
    image: Path = typer.Option(..., "--image", "-i", help="The picture to talk about (/image PATH switches)."),
    max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="Tokens per reply (default 256)."),
    temperature: float = TEMPERATURE,
    dtype: str = DTYPE,
) -> None:
    """Talk about a picture: one question per line, replies streamed; /image PATH, /reset, /quit."""
    from vlmtune.stages.chat import run_chat
    from vlmtune.stages.predict import option_overrides

    run_chat(model, image, overrides=option_overrides(max_new_tokens, temperature=temperature, dtype=dtype))


@app.command()
def serve(
    model: Path = typer.Argument(..., help="A run directory (its base comes along), or a merged or any model directory."),
    overrides: list[str] = OVERRIDES,
    base: str = typer.Option(None, "--base", help="Base model for the 'base' column (default: the run's; none for "
                                                  "a model directory)."),
    port: int = typer.Option(7860, "--port", help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; anything but loopback is warned about."),
    concurrency: int = typer.Option(2, "--concurrency", min=1, help="Requests answered at once; the rest queue."),
    max_upload_mb: float = typer.Option(25, "--max-upload-mb", min=0.1, help="Largest picture file accepted."),
    max_pixels: int = typer.Option(64_000_000, "--max-pixels", min=1, help="Decompression-bomb guard for uploads."),
) -> None:
    """Open a web page: drop a photo, see the base and fine-tuned answers side by side (needs the web extra)."""
    from vlmtune.stages.serve import run_serve

    run_serve(model, base=base, host=host, port=port, concurrency=concurrency, max_upload_mb=max_upload_mb,
              max_pixels=max_pixels, overrides=overrides or [])


@app.command()
def families() -> None:
    """List every model family row: model types, what it supports, presets, checkpoints it was verified on."""
    from vlmtune.stages.families import run_families

    run_families()


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
