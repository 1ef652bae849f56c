"""``vlmtune data check``: each kind of problem found, with its exact message."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from vlmtune.data.captions import Columns
from vlmtune.data.check import ERROR, WARNING, CheckOptions, Issue, check_folder, render_report
from vlmtune.data.phash import hamming, near_groups, phash
from vlmtune.errors import VlmtuneError

OPTIONS = CheckOptions(min_side=16, workers=1, progress=False)
WIDE = {"COLUMNS": "200"}  # rich wraps table cells to the terminal; keep messages on one line


def pattern(seed: int, size=(64, 64)) -> Image.Image:
    """Blocky random pictures: different seeds look different, resizing keeps the look."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize(size, Image.Resampling.NEAREST)


def folder(tmp_path: Path, csv: str, pictures: dict[str, Image.Image]) -> Path:
    for name, im in pictures.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        im.save(tmp_path / name)
    (tmp_path / "captions.csv").write_text(csv, encoding="utf-8")
    return tmp_path


def issues(report) -> set[tuple[str, str, str]]:
    return {(i.level, i.where, i.message) for i in report.issues}


def test_clean_folder_has_no_issues(tmp_path):
    src = folder(tmp_path, "file_name,caption,split\na.png,one,train\nb.png,two,test\n", {"a.png": pattern(1), "b.png": pattern(2)})
    report = check_folder(src, OPTIONS)
    assert report.issues == []
    assert (report.rows, report.splits["train"], report.splits["test"]) == (2, 1, 1)


def test_row_problems(tmp_path):
    (tmp_path.parent / "outside.png").write_bytes(b"x")
    csv = (
        "file_name,caption,split\n"
        "a.png,fine,train\n"
        "missing.png,,train\n"
        "b.png,,test\n"
        "a.png,again,test\n"
        "../outside.png,escape,train\n"
        "/etc/hosts,absolute,train\n"
        "c.png,bad split,valid\n"
        'd.png,"two\nlines",train\n'
        "e.png,red, blue,train\n"
    )
    src = folder(tmp_path, csv, {n: pattern(i) for i, n in enumerate(["a.png", "b.png", "c.png", "d.png", "e.png"])})
    assert issues(check_folder(src, OPTIONS)) == {
        (ERROR, "captions.csv:11", "4 fields for 3 columns; put quotes around captions that contain commas"),
        (ERROR, "captions.csv:3", "image 'missing.png' not found"),
        (ERROR, "captions.csv:3", "empty caption for 'missing.png'"),  # every problem of a row, not the first
        (ERROR, "captions.csv:4", "empty caption for 'b.png'"),
        (ERROR, "captions.csv:2, 5", "'a.png' is listed 2 times; keep one row"),
        (ERROR, "captions.csv:6", "'../outside.png' leaves the folder with '..'"),
        (ERROR, "captions.csv:7", f"'/etc/hosts' is an absolute path; write it relative to {tmp_path}"),
        (ERROR, "captions.csv:8", "split 'valid' must be train, validation or test"),
        (ERROR, "captions.csv:11", "split 'blue' must be train, validation or test"),  # the comma shifted the columns
        (WARNING, "captions.csv:9", "caption of 'd.png' contains a line break"),
        (WARNING, "a.png", "leakage: the same image is used by train and test rows"),
    }


def test_names_equal_up_to_case_or_accents(tmp_path):
    import unicodedata

    nfd = unicodedata.normalize("NFD", "é.png")
    pictures = {"A.png": pattern(1), "a.png": pattern(2), "é.png": pattern(3), nfd: pattern(4)}
    csv = f"file_name,caption,split\nA.png,x,train\na.png,y,test\né.png,z,train\n{nfd},w,test\n"
    src = folder(tmp_path, csv, pictures)
    if len(list(src.glob("*.png"))) < 4:
        pytest.skip("this filesystem folds case or accents: the four names are fewer files")
    assert issues(check_folder(src, OPTIONS)) == {
        (WARNING, "captions.csv", "names differ only in case or accents: A.png, a.png"),
        (WARNING, "captions.csv", f"names differ only in case or accents: {', '.join(sorted(['é.png', nfd]))}"),
    }


def test_symlink_out_of_the_folder(tmp_path):
    inside = tmp_path / "photos"
    pattern(1).save(tmp_path / "private.png")
    src = folder(inside, "file_name,caption,split\nok.png,x,train\nlink.png,y,test\n", {"ok.png": pattern(2)})
    (src / "link.png").symlink_to(tmp_path / "private.png")
    report = check_folder(src, OPTIONS)
    assert (ERROR, "captions.csv:3", f"'link.png' is a symlink that points outside {src}") in issues(report)


def test_duplicates_near_duplicates_and_leakage(tmp_path):
    base = pattern(7, (128, 128))
    pictures = {
        "a.png": base,
        "a_copy.png": base,
        "b.png": pattern(8, (96, 96)),
        "b_resized.jpg": pattern(8, (64, 64)),
        "c.png": pattern(9),
    }
    csv = (
        "file_name,caption,split\n"
        "a.png,one,train\na_copy.png,two,test\n"  # the same photo on both sides: leakage
        "b.png,three,train\nb_resized.jpg,four,train\n"  # near-duplicates on one side: no leakage
        "c.png,five,test\n"
    )
    report = check_folder(folder(tmp_path, csv, pictures), OPTIONS)
    assert issues(report) == {
        (WARNING, "a.png, a_copy.png", "identical files; leakage: they are in train and test, give them one split"),
        (WARNING, "b.png, b_resized.jpg", "near-duplicate images (hash distance <= 6)"),
    }


def test_jpeg_recompression_stays_near(tmp_path):
    base = pattern(3, (128, 128))
    buf = io.BytesIO()
    base.resize((100, 100)).save(buf, "JPEG", quality=60)
    assert hamming(phash(base), phash(Image.open(buf))) <= 6
    assert hamming(phash(base), phash(pattern(4, (128, 128)))) > 6


def test_near_groups_are_transitive():
    # 0b0000 -1 bit- 0b0001 -1 bit- 0b0011; 0b1111_0000 is 6 bits from all of them
    assert near_groups([0b0, 0b1, 0b11, 0b11110000], max_distance=1) == [[0, 1, 2]]
    assert near_groups([0b0, 0b11110000], max_distance=3) == []
    # Same structure, different mean colour (a red and a blue square): not duplicates.
    assert near_groups([0, 0], 6, [(255, 0, 0), (0, 0, 255)]) == []
    assert near_groups([0, 0], 6, [(255, 0, 0), (231, 24, 0)]) == [[0, 1]]  # 24 is the tolerance
    assert near_groups([0, 0], 6, [(255, 0, 0), (230, 0, 0)]) == []


def test_plain_pictures_of_different_colours_are_not_duplicates(tmp_path):
    pictures = {n: Image.new("RGB", (32, 32), c) for n, c in [("r.png", "red"), ("b.png", "blue"), ("r2.png", "red")]}
    csv = "file_name,caption,split\nr.png,red,train\nb.png,blue,test\nr2.png,red too,train\n"
    assert issues(check_folder(folder(tmp_path, csv, pictures), OPTIONS)) == {
        (WARNING, "r.png, r2.png", "identical files")
    }


def test_vqa_rows_may_share_an_image(tmp_path):
    csv = "file_name,question,answer,split\na.png,What colour?,red,train\na.png,How many?,two,train\nb.png,What?,x,test\n"
    src = folder(tmp_path, csv, {"a.png": pattern(1), "b.png": pattern(2)})
    assert check_folder(src, CheckOptions(columns=Columns(prompt="question"), min_side=16, workers=1, progress=False)).issues == []
    # Without a prompt column the same rows are duplicates.
    assert (ERROR, "captions.csv:2, 3", "'a.png' is listed 2 times; keep one row") in issues(check_folder(src, OPTIONS))


def test_caption_lengths(tmp_path):
    # Lengths 2, 10, 10, 12, 39, 50: median 11; 50 > 4 * 11 and 2 * 4 < 11 are flagged, 39 is not.
    captions = ["x" * 10, "y" * 10, "z" * 12, "w" * 39, "v" * 50, "uu"]
    rows = "".join(f"p{i}.png,{c},{'test' if i == 0 else 'train'}\n" for i, c in enumerate(captions))
    src = folder(tmp_path, "file_name,caption,split\n" + rows, {f"p{i}.png": pattern(i) for i in range(6)})
    assert issues(check_folder(src, OPTIONS)) == {
        (WARNING, "captions.csv:6", "caption of 'p4.png' is 50 characters, the median is 11; complete and intended?"),
        (WARNING, "captions.csv:7", "caption of 'p5.png' is 2 characters, the median is 11; complete and intended?"),
    }


def test_class_balance(tmp_path):
    rows = [f"c{i}.png,a cat,{'test' if i < 2 else 'train'},cat\n" for i in range(10)] + ["d.png,a dog,train,dog\n"]
    pictures = {f"c{i}.png": pattern(i) for i in range(10)} | {"d.png": pattern(99)}
    report = check_folder(folder(tmp_path, "file_name,caption,split,label\n" + "".join(rows), pictures), OPTIONS)
    assert report.balance == {"cat": {"train": 8, "test": 2}, "dog": {"train": 1}}
    assert issues(report) == {
        (WARNING, "label=dog", "no test rows for this class"),
        (WARNING, "label", "imbalanced: 'cat' has 10 rows, 'dog' only 1"),
    }


def test_image_problems(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    pictures = {"small.png": pattern(1, (40, 30)), "ok.png": pattern(2), "phone.heic": pattern(3)}
    csv = "file_name,caption,split\nsmall.png,a,train\nok.png,b,test\nbroken.jpg,c,train\nphone.heic,d,train\n"
    src = folder(tmp_path, csv, pictures)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    pattern(4).save(src / "unlisted.png")
    report = check_folder(src, CheckOptions(min_side=32, workers=1, progress=False))
    assert issues(report) == {
        (ERROR, "broken.jpg", "unusable image: unreadable image header (OSError: Truncated File Read)"),
        (WARNING, "small.png", "40x30 is smaller than 32 px (--min-side); the model will upscale it"),
        (WARNING, "phone.heic", "HEIF may not load in training code; run 'vlmtune data convert' first"),
        (WARNING, "captions.csv", "1 image(s) not listed (unlisted.png); add them with 'vlmtune data template'"),
    }


def test_empty_split_is_an_error(tmp_path):
    src = folder(tmp_path, "file_name,caption,split\na.png,x,train\n", {"a.png": pattern(1)})
    assert issues(check_folder(src, OPTIONS)) == {
        (ERROR, "captions.csv", "no test rows; set split=test on some rows or raise --test-ratio (now 0.2)")
    }


def test_no_index_file(tmp_path):
    with pytest.raises(VlmtuneError, match="no captions.csv here; create one with 'vlmtune data template"):
        check_folder(tmp_path, OPTIONS)


def test_render_shows_errors_first(tmp_path):
    src = folder(tmp_path, "file_name,caption,split\na.png,x,train\n", {"a.png": pattern(1)})
    report = check_folder(src, OPTIONS)
    report.issues.insert(0, Issue(WARNING, "w.png", "a warning"))
    console = Console(file=io.StringIO(), width=200)
    render_report(report, console)
    text = console.file.getvalue()
    assert text.index("no test rows") < text.index("a warning")
    assert text.rstrip().endswith("1 rows (train 1, test 0): 1 error(s), 1 warning(s)")


def test_cli_exit_codes(tmp_path):
    from typer.testing import CliRunner

    from vlmtune.cli import app

    def run(*extra):
        return CliRunner().invoke(app, ["data", "check", str(tmp_path), "--no-progress", "--workers", "1", *extra], env=WIDE)

    folder(tmp_path, "file_name,caption,split\na.png,one,train\nb.png,two,test\n", {"a.png": pattern(1), "b.png": pattern(2)})
    assert run("--min-side", "16").exit_code == 0
    small = run()  # 64 px pictures warn under the default 168
    assert small.exit_code == 0 and "0 error(s), 2 warning(s)" in small.output
    assert run("--strict").exit_code == 1
    (tmp_path / "captions.csv").write_text("file_name,caption,split\na.png,,train\nb.png,two,test\n")
    failed = run("--min-side", "16")
    assert failed.exit_code == 1 and "empty caption for 'a.png'" in failed.output


def test_default_min_side_is_the_default_models_input_side():
    from vlmtune.data.check import DEFAULT_MIN_SIDE
    from vlmtune.models.default import DefaultBaseSpec

    assert DEFAULT_MIN_SIDE == DefaultBaseSpec().image_size
