"""The page: one picture, one question, every model's answer streamed in its own labelled column.

gradio is a heavy optional dependency (the ``[web]`` extra): it is imported inside the functions
that build and launch the page, so nothing else in vlmtune needs it installed.
"""

from __future__ import annotations

import ctypes
import html
import ipaddress
import os
from dataclasses import dataclass, field, replace
from functools import cache

from vlmtune.config import EvalConfig
from vlmtune.errors import VlmtuneError
from vlmtune.web.browser import CSS, PLACEHOLDER, TYPE_SHIM
from vlmtune.web.pictures import WEB_MAX_PIXELS, PictureCache, thumbnail_data_url
from vlmtune.web.streams import Column, side_by_side

@dataclass
class Page:
    """Everything the page shows; the serve stage fills it from a run directory or a model."""

    title: str
    subtitle: str
    columns: list[Column]
    prompt: str
    eval: EvalConfig
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # (picture file, prompt, reference)
    report_html: str | None = None
    max_pixels: int = WEB_MAX_PIXELS


def error_html(message: str) -> str:
    return f'<div class="vt-error" role="alert">{html.escape(message)}</div>'


def picture_html(picture) -> str:
    w, h = picture.size
    return (f'<div class="vt-ok"><img src="{thumbnail_data_url(picture)}" alt="what the models see">'
            f"<span>{w}×{h} px, upright: what the models see</span></div>")


class Handlers:
    """The page's event handlers, plain Python: what each does is tested without a browser."""

    def __init__(self, page: Page, is_upload=lambda path: True):
        self.page = page
        self.pictures = PictureCache(is_upload, page.max_pixels)

    def picture_changed(self, path: str | None) -> str:
        """A new picture (upload, paste, drop or example): decoded at once, so a bad file is named now."""
        if not path:
            return ""
        try:
            return picture_html(self.pictures.get(path))
        except VlmtuneError as err:
            return error_html(str(err))

    def settings(self, max_new_tokens, sample, temperature) -> EvalConfig:
        # Streaming shows one sequence, so no beam search; the rest (top_p, repetition) is the run's.
        return replace(self.page.eval, max_new_tokens=int(max_new_tokens), do_sample=bool(sample),
                       temperature=float(temperature), num_beams=1)

    def compare(self, path: str | None, prompt: str, max_new_tokens, sample, temperature):
        """Yields (status, answer per column) as the answers grow; the upload is deleted at the end."""
        blank = [""] * len(self.page.columns)
        try:
            picture = self.pictures.get(path)
        except VlmtuneError as err:
            yield (error_html(str(err)), *blank)
            return
        status = picture_html(picture)
        question = (prompt or "").strip() or self.page.prompt
        try:
            for texts in side_by_side(self.page.columns, picture, question,
                                      self.settings(max_new_tokens, sample, temperature)):
                yield (status, *texts)
        finally:
            self.pictures.forget(path)


@cache
def picture_input_class():
    import gradio as gr  # heavy optional dependency ([web] extra)

    class Picture(gr.Image):
        """gr.Image that hands over the uploaded file untouched: its own preprocess opens it with
        PIL first, so a broken file would fail inside Gradio before vlmtune's decoder could name it."""

        is_template = True  # rendered by the frontend's own Image component

        def preprocess(self, payload):
            if payload is None or not payload.path:
                return super().preprocess(payload)  # data: URLs (webcam) are written to a file by Gradio
            return payload.path

    return Picture


def report_html(page: Page) -> str:
    if not page.report_html:
        return "<p>No report: serve a run directory (<code>vlmtune serve runs/NAME</code>) to see its metrics, " \
               "loss curve and before/after answers here.</p>"
    # The report is a whole self-contained HTML document: an iframe keeps its styles apart from the page's.
    return f'<iframe class="vt-report" title="run report" srcdoc="{html.escape(page.report_html, quote=True)}"></iframe>'


def require_gradio() -> None:
    """Before any model loads: a missing extra is one line, not a traceback."""
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise VlmtuneError("vlmtune serve needs gradio, which is not installed: pip install 'vlmtune[web]'")


def build_app(page: Page, concurrency: int = 2):
    """The Gradio Blocks of the page (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing leaves the machine
    import gradio as gr  # heavy optional dependency ([web] extra)

    with gr.Blocks(title=page.title, analytics_enabled=False) as demo:
        handlers = Handlers(page, is_upload=lambda path: path in getattr(demo, "upload_file_set", ()))
        demo.vlmtune_handlers = handlers
        gr.Markdown(f"## {html.escape(page.title)}\n{html.escape(page.subtitle)}")
        with gr.Tab("compare"):
            with gr.Row():
                with gr.Column(scale=2):
                    picture = picture_input_class()(label="picture", type="filepath", sources=["upload", "clipboard"],
                                                    height=300, elem_id="picture", placeholder=PLACEHOLDER)
                    status = gr.HTML(elem_id="status")
                    prompt = gr.Textbox(label="prompt", value=page.prompt, lines=2, elem_id="prompt")
                    reference = gr.Textbox(label="reference caption (test split)", interactive=False,
                                           visible=bool(page.examples), elem_id="reference")
                    with gr.Accordion("generation settings", open=False):
                        max_new = gr.Slider(1, 512, step=1, value=page.eval.max_new_tokens, label="max new tokens")
                        sample = gr.Checkbox(value=page.eval.do_sample, label="sample (off: greedy)")
                        temperature = gr.Slider(0.05, 2.0, step=0.05, value=page.eval.temperature,
                                                label="temperature (when sampling)")
                    button = gr.Button("compare" if len(page.columns) > 1 else "answer", variant="primary",
                                       elem_id="go")
                with gr.Column(scale=3):
                    with gr.Row():
                        answers = [gr.Textbox(label=c.label, lines=8, interactive=False, elem_id=f"answer-{i}")
                                   for i, c in enumerate(page.columns)]
                    if page.examples:
                        gr.Examples(examples=[list(e) for e in page.examples], inputs=[picture, prompt, reference],
                                    label="test pictures of the run (click one, then compare)", examples_per_page=8,
                                    elem_id="examples")
        with gr.Tab("report"):
            gr.HTML(report_html(page), elem_id="report")
        picture.change(handlers.picture_changed, inputs=[picture], outputs=[status], concurrency_limit=concurrency,
                       concurrency_id="decode", show_progress="hidden")
        button.click(handlers.compare, inputs=[picture, prompt, max_new, sample, temperature],
                     outputs=[status, *answers], concurrency_limit=concurrency, concurrency_id="generate")
    return demo


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    if is_loopback(host):
        return None
    return (f"warning: serving on {host}, not loopback: anyone who can reach this machine can use the page and "
            "upload pictures to it (there is no login)")


def steady_memory() -> None:
    """glibc only: allocations of 1 MiB and more (decoded photos) always get their own mapping.

    glibc's default threshold rises after each large free, so later photos land in the heap and
    freed ones stay in RSS: measured here, the server grew ~190 MB over 100 requests of
    1600x1200 photos with it and stayed flat with a fixed 1 MiB threshold."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to tune
        return
    m_mmap_threshold = -3
    libc.mallopt(m_mmap_threshold, 1 << 20)


def launch(demo, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = 25, max_queue: int = 64,
           block: bool = True):
    """Start the server; returns the URL once it answers. ``block``: serve until Ctrl+C."""
    warning = host_warning(host)
    if warning:
        print(warning)
    steady_memory()
    demo.queue(max_size=max_queue)
    try:
        demo.launch(server_name=host, server_port=port, max_file_size=f"{max_upload_mb:g}mb", share=False,
                    prevent_thread_lock=True, quiet=True, show_error=False, ssr_mode=False, mcp_server=False,
                    inbrowser=False, css=CSS, js=TYPE_SHIM,
                    run_history=False, footer_links=["api", "gradio", "settings"])  # no saved runs, no bucket offer
    except OSError as err:
        raise VlmtuneError(f"--host {host} --port {port}: cannot listen there ({str(err).splitlines()[0]}); "
                           "pass another --port") from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{demo.server_port}/"
    print(f"vlmtune serve: open {url} in a browser (Ctrl+C stops)", flush=True)
    if block:
        try:
            demo.block_thread()
        finally:
            close(demo)
    return url


def close(demo) -> None:
    """Stop serving and delete every upload still on disk (one never asked about, say)."""
    demo.close()
    for path in list(getattr(demo, "upload_file_set", ())):
        demo.vlmtune_handlers.pictures.forget(path)
