"""`vlmtune serve` without a browser: upload decoding and deletion, side-by-side streaming, the page's
contents from a run, and the streamed reply against batched generation (tiny LLaVA)."""

from __future__ import annotations

import io
import re
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import family_cases
from test_data_convert import BLUE, RED, bomb_png, halves
from vlmtune.cli import app
from vlmtune.config import load_config
from vlmtune.data.images import ORIENTATION, register_plugins
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generate_answers
from vlmtune.web.app import Handlers, Page, error_html, host_warning, is_loopback
from vlmtune.web.pictures import MAX_SIDE, PictureCache, decode_upload
from vlmtune.web.streams import WAITING, Column, side_by_side

EVAL = load_config().eval


def uploads(tmp_path) -> dict:
    """Files as a phone or a careless user hands them over, in a Gradio-like per-upload folder."""
    register_plugins()
    files = {}

    def put(name: str, write) -> None:
        path = tmp_path / f"h{len(files)}" / name
        path.parent.mkdir()
        write(path)
        files[name] = path

    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: the picture is 20 wide and 40 tall once upright
    put("rotated.jpg", lambda p: halves(RED, BLUE).save(p, quality=95, exif=exif))
    grey16 = np.full((16, 32), 49152, np.uint16)
    put("grey16.png", lambda p: Image.fromarray(grey16).save(p))
    put("alpha.png", lambda p: Image.new("RGBA", (8, 8), (0, 0, 255, 0)).save(p))
    put("IMG_0042.HEIC", lambda p: Image.new("RGB", (16, 12), BLUE).save(p, "HEIF"))
    put("huge.png", lambda p: Image.new("RGB", (MAX_SIDE * 2, 10), RED).save(p))
    put("notes.jpg", lambda p: p.write_text("this is a text file renamed .jpg\n"))
    put("empty.jpg", lambda p: p.write_bytes(b""))
    put("bomb.png", lambda p: p.write_bytes(bomb_png(20000)))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    put("truncated.jpg", lambda p: p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2]))
    return files


# --- pictures ----------------------------------------------------------------------------------

def test_phone_pictures_decode_like_data_convert(tmp_path):
    files = uploads(tmp_path)
    rotated = decode_upload(files["rotated.jpg"])
    assert rotated.size == (20, 40) and rotated.mode == "RGB"  # EXIF orientation applied
    top, bottom = rotated.getpixel((10, 2)), rotated.getpixel((10, 37))
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red half on top after the 90 degree turn
    assert decode_upload(files["grey16.png"]).getpixel((0, 0)) == (191, 191, 191)  # 49152/65535*255, not white
    assert decode_upload(files["alpha.png"]).getpixel((0, 0)) == (255, 255, 255)  # transparent on white
    assert decode_upload(files["IMG_0042.HEIC"]).size == (16, 12)
    assert decode_upload(files["huge.png"]).size == (MAX_SIDE, 5)  # held at most MAX_SIDE per side


@pytest.mark.parametrize("name, reason", [
    ("notes.jpg", "corrupt or unsupported image data"),
    ("empty.jpg", "empty file (0 bytes)"),
    ("bomb.png", "decompression bomb guard"),
    ("truncated.jpg", "truncated or corrupt image data"),
])
def test_bad_uploads_get_one_line_named_by_their_own_name_and_are_deleted(tmp_path, name, reason):
    path = uploads(tmp_path)[name]
    cache = PictureCache(is_upload=lambda p: True)
    with pytest.raises(VlmtuneError) as err:
        cache.get(str(path))
    message = str(err.value)
    assert message.startswith(f"{name}: {reason}") and "\n" not in message
    assert str(tmp_path) not in message  # Gradio's cache path means nothing to the user
    assert not path.exists() and not path.parent.exists()  # nothing kept of a refused file
    with pytest.raises(VlmtuneError, match=re.escape(message)):  # asked again (the button): same reason, not "gone"
        cache.get(str(path))


def test_web_bomb_guard_is_lower_than_converts_and_configurable(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    with pytest.raises(VlmtuneError, match="10,000 pixels exceeds the limit of 9,999"):
        decode_upload(path, max_pixels=9_999)
    assert decode_upload(path, max_pixels=10_000).size == (100, 100)


def test_uploads_are_deleted_after_use_examples_are_not_and_the_picture_stays_cached(tmp_path):
    files = uploads(tmp_path)
    upload, example = str(files["rotated.jpg"]), str(files["alpha.png"])
    cache = PictureCache(is_upload=lambda p: p == upload)
    first = cache.get(upload)
    cache.forget(upload)
    cache.forget(example)
    assert not files["rotated.jpg"].exists() and files["alpha.png"].exists()
    assert cache.get(upload) is first  # a second question about the same picture needs no file
    with pytest.raises(VlmtuneError, match="no picture yet"):
        cache.get(None)


def test_cache_holds_a_bounded_number_of_pictures(tmp_path):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"p{i}.png")
        Image.new("RGB", (4, 4), (i, 0, 0)).save(paths[-1])
    cache = PictureCache(is_upload=lambda p: True, size=3)
    for p in paths:
        cache.get(str(p))
        cache.forget(str(p))
    assert len(cache._pictures) == 3
    with pytest.raises(VlmtuneError, match="p0.png: no longer on the server"):
        cache.get(str(paths[0]))  # dropped from the cache and deleted: asked to drop it again


# --- streaming ---------------------------------------------------------------------------------

def scripted(pieces: list[str], delay: float = 0.0, fail: Exception | None = None):
    def reply(picture, question, cfg, out):
        for piece in pieces:
            time.sleep(delay)
            out.write(piece)
        if fail:
            raise fail
        return "".join(pieces).strip()
    return reply


def test_two_columns_stream_side_by_side_to_their_final_answers():
    columns = [Column("base", scripted(["a ", "red ", "circle"], 0.01)), Column("fine-tuned", scripted(["a ", "rook"]))]
    updates = list(side_by_side(columns, None, "describe", EVAL))
    assert updates[-1] == ["a red circle", "a rook"]
    assert any(u[0] == "a red " for u in updates)  # partial text shown before the end


def test_a_failing_model_is_reported_and_the_other_still_answers(capsys):
    columns = [Column("base", scripted(["x"], fail=RuntimeError("CUDA out of memory\nmore"))),
               Column("fine-tuned", scripted(["a rook"])), Column("third", scripted([], fail=VlmtuneError("bad prompt")))]
    final = list(side_by_side(columns, None, "q", EVAL))[-1]
    assert final == ["error: generation failed (RuntimeError: CUDA out of memory)", "a rook", "error: bad prompt"]
    assert "Traceback" in capsys.readouterr().err  # the server log keeps the details


def test_one_generation_at_a_time_per_exclusive_model():
    running, most = [0], [0]
    guard = threading.Lock()

    def reply(picture, question, cfg, out):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with guard:
            running[0] -= 1
        return question

    shared = Column("fine-tuned", reply)
    results, seen = [], []

    def ask(q):
        updates = list(side_by_side([shared], None, q, EVAL))
        seen.extend(u[0] for u in updates)
        results.append(updates[-1][0])

    threads = [threading.Thread(target=ask, args=(f"q{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == ["q0", "q1", "q2", "q3"] and most[0] == 1
    assert WAITING in seen  # a request behind another one says so
    most[0] = 0
    free = Column("gpu", reply, exclusive=False)
    threads = [threading.Thread(target=lambda: list(side_by_side([free], None, "q", EVAL))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] > 1  # not exclusive: requests overlap


# --- handlers ----------------------------------------------------------------------------------

def page(columns, **kw) -> Page:
    return Page(title="t", subtitle="s", columns=columns, prompt="describe this picture", eval=EVAL, **kw)


def test_compare_streams_both_answers_then_deletes_the_upload(tmp_path):
    files = uploads(tmp_path)
    asked = []

    def echo(picture, question, cfg, out):
        asked.append((picture.size, question, cfg.max_new_tokens, cfg.do_sample, cfg.temperature, cfg.num_beams))
        out.write("ok")
        return "ok"

    handlers = Handlers(page([Column("base", echo), Column("fine-tuned", echo)]))
    path = str(files["rotated.jpg"])
    assert "20×40 px" in handlers.picture_changed(path)
    outputs = list(handlers.compare(path, "  ", 7, True, 0.5))
    assert outputs[-1][1:] == ("ok", "ok") and "vt-ok" in outputs[-1][0]
    assert asked == [((20, 40), "describe this picture", 7, True, 0.5, 1)] * 2  # empty prompt: the run's
    assert not files["rotated.jpg"].exists()
    again = list(handlers.compare(path, "what is this ?", 3, False, 1.0))  # same picture, new question
    assert again[-1][1:] == ("ok", "ok")


def test_bad_picture_shows_the_reason_and_blank_answers(tmp_path):
    files = uploads(tmp_path)
    handlers = Handlers(page([Column("base", scripted(["x"])), Column("fine-tuned", scripted(["y"]))]))
    assert handlers.picture_changed(str(files["notes.jpg"])) == error_html(
        "notes.jpg: corrupt or unsupported image data (no decoder recognises it)")
    assert list(handlers.compare(str(files["notes.jpg"]), "q", 4, False, 1.0)) == [
        (error_html("notes.jpg: corrupt or unsupported image data (no decoder recognises it)"), "", "")]
    assert list(handlers.compare(None, "q", 4, False, 1.0))[0][0].startswith('<div class="vt-error"')


def test_error_messages_are_escaped():
    assert error_html("<img src=x onerror=alert(1)>.jpg: not an image") == (
        '<div class="vt-error" role="alert">&lt;img src=x onerror=alert(1)&gt;.jpg: not an image</div>')


def test_only_loopback_is_quiet():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.5.0.1", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "192.168.1.20", "::", "example.org"))
    assert host_warning("127.0.0.1") is None
    assert "0.0.0.0, not loopback" in host_warning("0.0.0.0")


# --- the serve stage on a real tiny run --------------------------------------------------------

def test_page_from_a_run_has_base_and_fine_tuned_examples_and_report(tiny_run_dir, tmp_path):
    from vlmtune.stages.serve import build_page

    built = build_page(tiny_run_dir, None, [], tmp_path)
    assert [c.label for c in built.columns] == ["base", "fine-tuned"]
    assert built.prompt == "describe this picture" and built.eval.max_new_tokens == 6  # the run's own settings
    refs = [json.loads(line)["reference"] for line in (tiny_run_dir / "predictions/tuned.jsonl").read_text().splitlines()]
    assert len(refs) == 3 and [(p, r) for _, p, r in built.examples] == [("describe this picture", r) for r in refs]
    assert all(Path(f).parent == tmp_path and Image.open(f).size == (32, 32) for f, _, _ in built.examples)
    assert "Per picture" in built.report_html and "loss curve" in built.report_html


def test_streamed_reply_equals_batched_generation(tiny_run_dir, tmp_path):
    from vlmtune.models.loading import load_for_inference
    from vlmtune.stages.serve import replier

    model, processor, spec = load_for_inference(tiny_run_dir)
    picture = Image.new("RGB", (30, 30), (9, 99, 199))
    cfg = load_config(overrides=["eval.max_new_tokens=6"]).eval
    streamed = io.StringIO()
    answer = replier(model, processor, spec)(picture, "describe this picture", cfg, streamed)
    assert answer == generate_answers(model, processor, spec, [picture], ["describe this picture"], cfg)[0]
    assert streamed.getvalue().strip() == answer and answer


def test_a_model_alone_gets_one_column_and_base_adds_one(tiny_model_dir, tmp_path):
    from vlmtune.stages.serve import build_page

    alone = build_page(tiny_model_dir, None, [], tmp_path)
    assert [c.label for c in alone.columns] == [tiny_model_dir.name]
    assert alone.examples == [] and alone.report_html is None and alone.prompt == load_config().data.prompt
    both = build_page(tiny_model_dir, str(tiny_model_dir), [], tmp_path)
    assert [c.label for c in both.columns] == ["base", "fine-tuned"]
    assert all(c.exclusive for c in both.columns)  # CPU: one generation at a time per model


def test_serve_without_gradio_says_which_extra(monkeypatch, tiny_model_dir):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else real(name, *a))
    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir)])
    assert isinstance(result.exception, VlmtuneError)
    assert str(result.exception) == "vlmtune serve needs gradio, which is not installed: pip install 'vlmtune[web]'"


def test_serve_refuses_a_missing_model_in_one_line(tmp_path):
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nope")])
    assert isinstance(result.exception, VlmtuneError) and "nope" in str(result.exception)
    assert "pass a local model directory" in str(result.exception)


def test_requests_queue_and_at_most_concurrency_are_answered_at_once(tmp_path):
    """The real Gradio queue, served on loopback in this process, 8 requests to a model that can overlap."""
    from gradio_client import Client, handle_file

    from vlmtune.web.app import build_app, close, launch
    from webserver import free_port

    active, most, guard = [0], [0], threading.Lock()

    def slow(picture, question, cfg, out):
        with guard:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.3)
        with guard:
            active[0] -= 1
        return "x"

    demo = build_app(page([Column("gpu", slow, exclusive=False)]), concurrency=3)
    url = launch(demo, port=free_port(), block=False)
    try:
        Image.new("RGB", (8, 8)).save(tmp_path / "p.png")
        client = Client(url, verbose=False)
        jobs = [client.submit(handle_file(str(tmp_path / "p.png")), "q", 4, False, 1.0, api_name="/compare")
                for _ in range(8)]
        assert [job.result(timeout=60)[1] for job in jobs] == ["x"] * 8
    finally:
        close(demo)
    assert most[0] == 3  # requests overlap, up to the limit and no further


@pytest.fixture(scope="module", params=family_cases.CASES, ids=lambda c: c.name)
def family(request):
    return request.param


def test_every_registry_family_streams_what_batched_generation_gives(family):
    from vlmtune.stages.serve import replier

    model, processor = family.build()
    picture, cfg = family.picture(), load_config(overrides=["eval.max_new_tokens=5"]).eval
    streamed = io.StringIO()
    answer = replier(model.eval(), processor, family.spec)(picture, "Describe this picture.", cfg, streamed)
    assert answer == generate_answers(model, processor, family.spec, [picture], ["Describe this picture."], cfg)[0]
    assert streamed.getvalue().strip() == answer
