"""``vlmtune serve RUN_OR_MODEL``: the browser page with the base and fine-tuned answers side by side.

A run directory brings everything: its base model (no ``--base`` needed), its prompt and eval
settings, examples from its test split with their reference captions, and its report. A merged or
any other model directory is served alone (one column), or beside ``--base MODEL``. Models load
once, here; the page (``web/``) gets one streaming reply function per model.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vlmtune.config import ModelConfig, RunConfig
from vlmtune.data.build import load_source
from vlmtune.data.captions import Columns
from vlmtune.data.check import CheckOptions
from vlmtune.data.images import model_rgb
from vlmtune.data.schema import ANSWER, IMAGE, PROMPT, TEST
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.chat import render_chat, stream_reply
from vlmtune.models.loading import load_for_inference, load_model, read_run_info
from vlmtune.models.merge import MERGED_MARKER
from vlmtune.run_dir import inference_config
from vlmtune.web.app import Page, build_app, launch, require_gradio
from vlmtune.web.pictures import WEB_MAX_PIXELS
from vlmtune.web.streams import Column

EXAMPLES = 8  # test pictures offered one click away
EXAMPLE_SIDE = 1024  # example files are re-encoded copies; no model here looks at more


def replier(model, processor, spec):
    """One model's streaming answer to a first-turn question: the prompt training used, byte for byte."""
    def reply(picture, question: str, cfg, out) -> str:
        return stream_reply(model, processor, spec, picture, render_chat(processor, spec, [], question), cfg, out)

    return reply


def column(label: str, loaded) -> Column:
    model, processor, spec = loaded
    # One generation at a time per model on CPU: two would share the same cores and both crawl.
    return Column(label, replier(model, processor, spec), exclusive=next(model.parameters()).device.type == "cpu")


def load_columns(model: Path, base: str | None, cfg: RunConfig) -> list[tuple[Column, str]]:
    """(column, where it came from): [base, fine-tuned] for a run (or with --base), the model alone otherwise."""
    info = read_run_info(model)
    print(f"loading {model} ...")
    tuned = load_for_inference(model, dtype=cfg.model.dtype)
    base_name = base or (info["model"]["name"] if info else None)
    if base:
        print(f"loading base {base} ...")
        base_loaded = load_for_inference(base, dtype=cfg.model.dtype)
    elif info:
        print(f"loading the run's base {base_name} ...")
        base_loaded = load_model(ModelConfig(**{**info["model"], "dtype": cfg.model.dtype}), training=False)[:3]
    fine_tuned = bool(base_name or (model / MERGED_MARKER).is_file())
    tuned_column = (column("fine-tuned" if fine_tuned else model.name, tuned), str(model))
    return [(column("base", base_loaded), base_name), tuned_column] if base_name else [tuned_column]


def examples_from_test_split(cfg: RunConfig, folder: Path, n: int = EXAMPLES) -> list[tuple[str, str, str]]:
    """(picture file, prompt, reference) for the first ``n`` test rows; [] with a note if the data is gone."""
    d = cfg.data
    try:
        columns = Columns(image=d.image_column, caption=d.caption_column, prompt=d.prompt_column)
        data, _ = load_source(d.path, CheckOptions(columns=columns, prompt=d.prompt, test_ratio=d.test_ratio))
    except (VlmtuneError, OSError, ValueError) as err:  # examples are a convenience: the page works without
        print(f"note: no examples from the test split of {d.path} ({str(err).splitlines()[0]})")
        return []
    if TEST not in data:
        return []
    test = data[TEST].select(range(min(n, len(data[TEST]))))
    examples = []
    for i, row in enumerate(test):
        picture = model_rgb(row[IMAGE])
        picture.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE))
        path = folder / f"test-{i:02d}.png"
        picture.save(path)
        examples.append((str(path), row[PROMPT], row[ANSWER]))
    return examples


def build_page(model: Path, base: str | None, overrides: list[str], examples_dir: Path,
               max_pixels: int = WEB_MAX_PIXELS) -> Page:
    model = Path(model)  # or 'default', the embedded model: load_for_inference resolves it
    cfg = inference_config(model, overrides)
    is_run = bool(read_run_info(model))
    loaded = load_columns(model, base, cfg)
    report = model / "report.html"
    return Page(
        title=f"vlmtune: {model.name}", subtitle=" · ".join(f"{c.label}: {source}" for c, source in loaded),
        columns=[c for c, _ in loaded], prompt=cfg.data.prompt, eval=cfg.eval,
        examples=examples_from_test_split(cfg, examples_dir) if is_run and cfg.data.path else [],
        report_html=report.read_text(encoding="utf-8") if is_run and report.is_file() else None,
        max_pixels=max_pixels,
    )


def run_serve(model: Path, base: str | None = None, host: str = "127.0.0.1", port: int = 7860,
              concurrency: int = 2, max_upload_mb: float = 25, max_pixels: int = WEB_MAX_PIXELS,
              overrides: list[str] | None = None) -> None:
    require_gradio()
    examples_dir = Path(tempfile.mkdtemp(prefix="vlmtune-serve-"))
    try:
        page = build_page(model, base, overrides or [], examples_dir, max_pixels)
        launch(build_app(page, concurrency=concurrency), host=host, port=port, max_upload_mb=max_upload_mb)
    finally:
        shutil.rmtree(examples_dir, ignore_errors=True)
