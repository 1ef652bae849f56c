"""``vlmtune data ...``: commands that turn pictures into a caption folder or a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from vlmtune.data.check import DEFAULT_MIN_SIDE
from vlmtune.data.schema import DEFAULT_PROMPT

data_app = typer.Typer(help="Prepare data: synthesise, convert photos, write caption templates, build datasets.", no_args_is_help=True)


@data_app.command("synth-chess")
def synth_chess(
    out: Path = typer.Argument(..., help="Folder to write images/ and captions.csv into (must not exist or be empty)."),
    n: int = typer.Option(300, help="Number of pictures."),
    test_ratio: float = typer.Option(0.2, help="Share of pictures marked split=test."),
    seed: int = typer.Option(0, help="Same seed, same pictures."),
    size: int = typer.Option(224, help="Side of the square pictures in pixels."),
    domain: str = typer.Option("train", help="Render domain: train (brutalchess meshes) or heldout (dreamchess "
                                             "meshes, colours no train render uses; for data.heldout_domain)."),
) -> None:
    """Pictures of 1-3 chess pieces with exact captions and a `pieces` label column."""
    from vlmtune.data.synth.chess import synth_chess as run

    run(out, n=n, seed=seed, size=size, test_ratio=test_ratio, domain=domain)


@data_app.command("synth-shapes")
def synth_shapes(
    out: Path = typer.Argument(..., help="Folder to write images/ and captions.csv into."),
    n: int = typer.Option(1000, help="Number of pictures."),
    test_ratio: float = typer.Option(0.1, help="Share of pictures marked split=test."),
    seed: int = typer.Option(0, help="Same seed, same pictures."),
    size: int = typer.Option(112, help="Side of the square pictures in pixels."),
) -> None:
    """Generic scenes of coloured shapes with exact captions (the alignment data; never chess)."""
    from vlmtune.data.synth.shapes import synth_shapes as run

    run(out, n=n, seed=seed, size=size, test_ratio=test_ratio)


IMAGE_COLUMN = typer.Option(None, help="Column with the image (tables: file name; default file_name / image).")
CAPTION_COLUMN = typer.Option(None, help="Column with the caption/answer (default: caption, text or answer).")
PROMPT_COLUMN = typer.Option(None, help="Column with a per-row prompt/question, for VQA-style data (default: prompt).")
LABEL_COLUMN = typer.Option(None, help="Class column for the balance table (default: label, class or category).")
TEST_RATIO = typer.Option(0.2, min=0.0, max=1.0, help="Share of rows proposed/cut as test where no split is given.")
PROMPT = typer.Option(DEFAULT_PROMPT, help="Prompt for rows without a prompt column.")
WORKERS = typer.Option(2, min=1, help="Parallel worker processes.")
MAX_PIXELS = typer.Option(
    None, min=1, help="Refuse pictures with more pixels (decompression-bomb guard; default 256 million)."
)


@data_app.command("convert")
def convert(
    src: Path = typer.Argument(..., help="Folder of photos; searched recursively and never modified."),
    dst: Path = typer.Argument(..., help="Output folder for the JPEGs (outside SRC; created if needed)."),
    prefix: str = typer.Option("", help="Prepended to each output name: PREFIX + original stem + .jpg."),
    quality: int = typer.Option(95, min=1, max=100, help="JPEG quality."),
    max_side: int = typer.Option(None, min=1, help="Shrink pictures whose longer side exceeds this many pixels."),
    max_pixels: int = MAX_PIXELS,
    on_conflict: str = typer.Option("refuse", help="DST already holds a different file of that name: refuse | suffix."),
    keep_gps: bool = typer.Option(False, "--keep-gps", help="Keep GPS position in the EXIF (dropped by default)."),
    min_side: int = typer.Option(DEFAULT_MIN_SIDE, min=1, help="Warn about pictures whose shorter side is below this."),
    workers: int = WORKERS,
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 if any file failed."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Convert every picture in SRC to an upright RGB JPEG in DST (HEIC, AVIF, WebP, PNG, TIFF, GIF, ...)."""
    from vlmtune.data.convert import FAILED, NOT_IMAGE, ConvertOptions, convert_folder

    if on_conflict not in ("refuse", "suffix"):
        raise typer.BadParameter("must be refuse or suffix", param_hint="--on-conflict")
    limit = {"max_pixels": max_pixels} if max_pixels else {}
    options = ConvertOptions(prefix, quality, max_side, keep_gps=keep_gps, on_conflict=on_conflict, min_side=min_side, **limit)
    summary = convert_folder(src, dst, options, workers=workers, progress=progress)
    for o in summary.outcomes:
        if o.status in (FAILED, NOT_IMAGE):
            typer.echo(f"{'failed ' if o.status == FAILED else 'skipped'} {o.source}: {o.reason}")
        for note in o.notes:
            typer.echo(f"note    {o.source}: {note}")
        for warning in o.warnings:
            typer.echo(f"warning {o.source}: {warning}")
    typer.echo(f"{summary.line()} -> {dst}")
    if summary.usable == 0:
        typer.echo("error: nothing converted", err=True)
        raise typer.Exit(1)
    if strict and summary.count(FAILED):
        raise typer.Exit(1)


@data_app.command("template")
def template(
    folder: Path = typer.Argument(..., help="Folder of (converted) photos; captions.csv is written there."),
    test_ratio: float = TEST_RATIO,
    prefill: str = typer.Option(None, help="Model (hub id or folder) that drafts the empty captions for you to fix."),
    prompt: str = PROMPT,
    batch_size: int = typer.Option(8, min=1, help="Pictures per batch for --prefill."),
) -> None:
    """Write captions.csv (file_name,caption,split) to fill in; re-running adds new photos, keeps your captions."""
    from vlmtune.stages.template import run_template

    r = run_template(folder, test_ratio=test_ratio, prefill=prefill, prompt=prompt, batch_size=batch_size)
    typer.echo(
        f"{r.path}: added {r.added} row(s) (train {r.splits['train']}, test {r.splits['test']}), "
        f"kept {r.kept}; {r.captioned} of {r.added + r.kept} captioned"
        + (f", {r.prefilled} drafted by {prefill}" if prefill else "")
    )
    if r.captioned < r.added + r.kept:
        typer.echo(f"next: write the empty captions, then run 'vlmtune data check {folder}'")


@data_app.command("check")
def check(
    source: Path = typer.Argument(..., help="Caption folder (captions.csv) or a metadata.jsonl / metadata.csv."),
    image_column: str = IMAGE_COLUMN,
    caption_column: str = CAPTION_COLUMN,
    prompt_column: str = PROMPT_COLUMN,
    label_column: str = LABEL_COLUMN,
    min_side: int = typer.Option(DEFAULT_MIN_SIDE, min=1, help="Warn about pictures whose shorter side is below this "
                                 "(default: the embedded model's input side)."),
    max_distance: int = typer.Option(6, min=0, max=64, help="Perceptual-hash bits within which pictures are near-duplicates."),
    max_pixels: int = MAX_PIXELS,
    test_ratio: float = TEST_RATIO,
    workers: int = WORKERS,
    strict: bool = typer.Option(False, "--strict", help="Exit with status 1 on warnings too."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Validate a caption folder and print every problem as a table; exit 1 on errors."""
    from rich.console import Console

    from vlmtune.data.captions import Columns
    from vlmtune.data.check import CheckOptions, check_folder, render_report

    options = CheckOptions(
        Columns(image_column, caption_column, prompt_column, label_column),
        test_ratio=test_ratio,
        min_side=min_side,
        max_distance=max_distance,
        workers=workers,
        progress=progress,
        **({"max_pixels": max_pixels} if max_pixels else {}),
    )
    report = check_folder(source, options)
    render_report(report, Console())
    if report.errors or (strict and report.warnings):
        raise typer.Exit(1)


@data_app.command("build")
def build(
    source: str = typer.Argument(..., help="Caption folder, metadata.jsonl/.csv, imagefolder, saved dataset or hub name."),
    out: Path = typer.Argument(..., help="New folder for the DatasetDict (datasets.load_from_disk(OUT))."),
    prompt: str = PROMPT,
    test_ratio: float = TEST_RATIO,
    image_column: str = IMAGE_COLUMN,
    caption_column: str = CAPTION_COLUMN,
    prompt_column: str = PROMPT_COLUMN,
    push_to_hub: str = typer.Option(None, help="Also push to this hub dataset repo (needs a token and network)."),
    private: bool = typer.Option(False, "--private", help="Make the pushed repo private."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset built before at OUT."),
    workers: int = WORKERS,
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Validate and build the train/test dataset (image, prompt, answer, extras) and save it to OUT."""
    from rich.console import Console

    from vlmtune.data.build import BuildOptions, CheckFailed, build as run
    from vlmtune.data.captions import Columns
    from vlmtune.data.check import CheckOptions, render_report

    columns = Columns(image_column, caption_column, prompt_column)
    check_options = CheckOptions(columns, prompt, test_ratio, workers=workers, progress=progress)
    console = Console()
    if not progress:
        import datasets

        datasets.disable_progress_bars()
    try:
        dd, report = run(source, out, BuildOptions(check_options, overwrite, push_to_hub, private))
    except CheckFailed as failed:
        render_report(failed.report, console)
        raise
    if report and report.warnings:
        render_report(report, console)
    sizes = ", ".join(f"{name} {len(ds)}" for name, ds in dd.items())
    typer.echo(f"saved {out} ({sizes} rows; columns {', '.join(dd['train'].column_names)})"
               + (f"; pushed to {push_to_hub}" if push_to_hub else ""))
