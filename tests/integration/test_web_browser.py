"""`vlmtune serve` end to end in a real headless Chromium (playwright, Debian's chromium package).

The page must show exactly what the models generate (checked against batched generation in this
process), name a bad file in the page and keep serving, and delete every upload after the answer.
A screenshot is written to the test's tmp dir, and to $VLMTUNE_SCREENSHOT when set (the README's).
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from vlmtune.config import load_config
from vlmtune.data.images import ORIENTATION, register_plugins
from vlmtune.data.pictures import open_picture
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.loading import load_for_inference

PROMPT = "describe this picture"
pytestmark = pytest.mark.slow  # a server subprocess and real models
WAIT_MS = 90_000  # a contended 2-core machine: model answers take seconds, the first page load longer


def install_chromium() -> str | None:
    """Debian's chromium through apt (never a browser download); returns why not, or None."""
    if not shutil.which("apt-get"):
        return "no apt-get on this machine"
    if os.geteuid() != 0:
        return "installing it needs root (apt-get install chromium)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd, limit in ((["apt-get", "update", "-qq"], 300), (["apt-get", "install", "-y", "-qq", "chromium"], 900)):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            return f"'{' '.join(cmd)}' took over {limit} s"
        if done.returncode:
            return f"'{' '.join(cmd)}' failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        why = install_chromium()
        found = shutil.which("chromium")
        if not found:
            if os.environ.get("CI"):  # CI machines of this kind can install it: there it must run
                pytest.fail(f"Chromium could not be installed on CI: {why}")
            pytest.skip(f"Chromium is not installed and cannot be installed here: {why}")
    return found


@pytest.fixture(scope="module")
def browser(chromium):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra: pip install -e '.[dev]'")
    sync_api.expect.set_options(timeout=WAIT_MS)
    with sync_api.sync_playwright() as p:
        # Debian's build, not playwright's own (no browser downloads here); no sandbox as root in CI.
        instance = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        yield instance
        instance.close()


@pytest.fixture()
def page(browser, served_run):
    tab = browser.new_page(viewport={"width": 1280, "height": 860})
    tab.set_default_timeout(WAIT_MS)
    tab.goto(served_run.url)
    tab.wait_for_selector("#go")
    yield tab
    tab.close()


@pytest.fixture(scope="module")
def expected(tiny_run_dir, tiny_model_dir):
    """What base and fine-tuned say about a picture, by the batched generation of `vlmtune evaluate`."""
    tuned, base = load_for_inference(tiny_run_dir), load_for_inference(tiny_model_dir)
    cfg = load_config(overrides=["eval.max_new_tokens=6"]).eval  # the run's own setting, which the page uses

    def answers(picture: Image.Image) -> tuple[str, str]:
        return tuple(generate_answers(*m, [picture], [PROMPT], cfg)[0] for m in (base, tuned))

    return answers


def photo(path: Path, size=(480, 360)) -> Path:
    """A phone-like JPEG stored sideways (EXIF orientation 6)."""
    upright = Image.new("RGB", (size[1], size[0]), (236, 230, 218))
    draw = ImageDraw.Draw(upright)
    draw.ellipse((60, 120, 300, 360), fill=(200, 30, 30))
    draw.rectangle((120, 20, 240, 110), fill=(30, 60, 200))
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    upright.rotate(90, expand=True).save(path, quality=95, exif=exif)
    return path


def upload(page, path: Path) -> None:
    page.locator("#picture input[type=file]").set_input_files(str(path))


def drop(page, path: Path) -> None:
    """Drop a file on the picture box as a file manager would (a real DragEvent with a DataTransfer)."""
    page.evaluate("""([data, name]) => {
      const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
      const files = new DataTransfer();
      files.items.add(new File([bytes], name, {type: ""}));
      const target = document.querySelector("#picture [aria-dropeffect]") || document.querySelector("#picture");
      target.dispatchEvent(new DragEvent("drop", {bubbles: true, cancelable: true, dataTransfer: files}));
    }""", [base64.b64encode(path.read_bytes()).decode(), path.name])


def answers_are(page, base: str, tuned: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#answer-0 textarea")).to_have_value(base)
    expect(page.locator("#answer-1 textarea")).to_have_value(tuned)


def test_upload_compare_a_bad_file_then_a_good_one_again(page, served_run, expected, tmp_path):
    from playwright.sync_api import expect

    upload(page, photo(tmp_path / "IMG_0042.jpg"))
    expect(page.locator("#status")).to_contain_text("360×480 px, upright")  # EXIF applied on the server
    expect(page.locator("#answer-0")).to_contain_text("base")
    expect(page.locator("#answer-1")).to_contain_text("fine-tuned")
    page.click("#go")
    base, tuned = expected(open_picture(tmp_path / "IMG_0042.jpg"))  # the decode data convert uses
    answers_are(page, base, tuned)
    assert base != tuned  # the two columns really are two models
    shot = tmp_path / "serve.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("VLMTUNE_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["VLMTUNE_SCREENSHOT"])

    (tmp_path / "notes.jpg").write_text("a text file renamed .jpg\n")
    upload(page, tmp_path / "notes.jpg")
    error = page.locator("#status .vt-error")
    expect(error).to_have_text("notes.jpg: corrupt or unsupported image data (no decoder recognises it)")
    page.click("#go")
    expect(page.locator("#answer-1 textarea")).to_have_value("")  # no answer about a picture that is not one
    expect(error).to_be_visible()

    # HEIC straight off a phone, chosen and dropped. Playwright, like browsers without a HEIF codec,
    # gives the file no MIME type: the page's shim must type it or Gradio refuses it unseen.
    register_plugins()
    Image.new("RGB", (64, 48), (30, 160, 60)).save(tmp_path / "IMG_0043.HEIC", "HEIF")
    upload(page, tmp_path / "IMG_0043.HEIC")
    expect(page.locator("#status")).to_contain_text("64×48 px")
    page.click("#go")
    answers_are(page, *expected(open_picture(tmp_path / "IMG_0043.HEIC")))
    Image.new("RGB", (80, 40), (10, 20, 200)).save(tmp_path / "IMG_0044.HEIC", "HEIF")
    drop(page, tmp_path / "IMG_0044.HEIC")
    expect(page.locator("#status")).to_contain_text("80×40 px")
    page.click("#go")
    answers_are(page, *expected(open_picture(tmp_path / "IMG_0044.HEIC")))
    assert served_run.proc.poll() is None
    assert served_run.user_files() == []  # every upload deleted after its answer (or its refusal)


def test_an_example_from_the_test_split_is_one_click_away(page, tiny_run_dir, expected):
    from playwright.sync_api import expect

    from vlmtune.data.build import load_source
    from vlmtune.data.check import CheckOptions

    first = load_source(load_config(tiny_run_dir / "config.yaml").data.path, CheckOptions())[0]["test"][0]
    page.locator("#examples tbody tr").first.click()
    expect(page.locator("#reference textarea, #reference input")).to_have_value(first["answer"])
    expect(page.locator("#status .vt-ok")).to_be_visible()
    page.click("#go")
    answers_are(page, *expected(first["image"]))


def test_the_report_tab_shows_the_runs_report(page):
    from playwright.sync_api import expect

    page.get_by_role("tab", name="report").click()
    report = page.frame_locator("iframe.vt-report")
    expect(report.locator("h2").filter(has_text="Per picture")).to_be_visible()
    expect(report.locator("svg[aria-label='loss curve']")).to_be_visible()
    expect(report.locator("img.thumb")).to_have_count(3)


def test_without_apt_or_root_the_reason_to_skip_is_given(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert install_chromium() == "no apt-get on this machine"
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert install_chromium() == "installing it needs root (apt-get install chromium)"
