"""captions.csv reading/writing, path safety and ``vlmtune data template`` merging."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from vlmtune.data.captions import (
    Columns,
    append_captions,
    member_path,
    missing_reason,
    read_captions,
    read_table,
    write_captions,
)
from vlmtune.data.dataset import stable_split
from vlmtune.data.template import write_template
from vlmtune.errors import VlmtuneError
from vlmtune.stages.template import run_template


def picture(path: Path, colour="red", size=(16, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_stable_split_values_never_change():
    # Hand-computed: sha256(name)[:8] / 0xFFFFFFFF = 0.0923 for 'photo 1.jpg', 0.3149 for 'a.jpg'.
    assert stable_split("photo 1.jpg", 0.2) == "test"
    assert stable_split("a.jpg", 0.2) == "train"
    assert stable_split("a.jpg", 0.32) == "test"


def test_awkward_captions_round_trip(tmp_path):
    rows = [
        {"file_name": "a b/Été 1.jpg", "caption": 'a "quoted", comma, caption', "split": "train"},
        {"file_name": "b.jpg", "caption": "two\nlines", "split": "test"},
        {"file_name": "c.jpg", "caption": "", "split": ""},
    ]
    write_captions(tmp_path / "captions.csv", rows, ["file_name", "caption", "split"])
    assert read_captions(tmp_path / "captions.csv") == rows


def test_table_lines_and_unquoted_commas(tmp_path):
    (tmp_path / "captions.csv").write_text(
        'file_name,caption,split\na.jpg,"two\nlines",train\nb.jpg,red, blue,test\nc.jpg,ok\n', encoding="utf-8"
    )
    table = read_table(tmp_path / "captions.csv")
    assert table.lines == [2, 4, 5]
    assert table.problems == [(4, "4 fields for 3 columns; put quotes around captions that contain commas")]
    assert table.rows[2] == {"file_name": "c.jpg", "caption": "ok", "split": ""}


def test_non_utf8_and_missing_columns_are_one_line_errors(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_bytes("file_name,caption\nx.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(VlmtuneError, match=r"captions.csv: not UTF-8 text; save it as 'CSV UTF-8'"):
        read_captions(path)
    path.write_text("name,text\n", encoding="utf-8")
    with pytest.raises(VlmtuneError, match=r"missing column\(s\) caption, file_name; expected file_name,caption\[,split\]"):
        read_captions(path)


def test_jsonl_table(tmp_path):
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "x", "n": 3}\n\nnot json\n[1]\n{"file_name": "b.png", "extra": true}\n'
    )
    table = read_table(tmp_path / "metadata.jsonl")
    assert table.header == ["file_name", "text", "n", "extra"]
    assert table.lines == [1, 5]
    assert [line for line, _ in table.problems] == [3, 4]
    assert Columns().resolve(table.header, "m").caption == "text"


def test_path_traversal_rejected(tmp_path):
    base = tmp_path / "photos"
    picture(base / "ok.png")
    picture(tmp_path / "secret.png")
    (base / "link.png").symlink_to(tmp_path / "secret.png")
    (base / "inner.png").symlink_to(base / "ok.png")
    assert member_path(base, "ok.png") == (base / "ok.png", None)
    assert member_path(base, "inner.png") == (base / "inner.png", None)  # a link that stays inside is fine
    assert member_path(base, "../secret.png") == (None, "'../secret.png' leaves the folder with '..'")
    assert member_path(base, "/etc/passwd") == (None, f"'/etc/passwd' is an absolute path; write it relative to {base}")
    assert member_path(base, "C:/x.png")[1] == f"'C:/x.png' is an absolute path; write it relative to {base}"
    assert member_path(base, "sub\\x.png") == (None, "'sub\\x.png' uses '\\'; write paths with '/'")
    assert member_path(base, "link.png") == (None, f"'link.png' is a symlink that points outside {base}")
    assert member_path(base, " ") == (None, "empty file name")


def test_missing_file_names_the_lookalike(tmp_path):
    picture(tmp_path / unicodedata.normalize("NFD", "Été.png"))
    assert missing_reason(tmp_path, "Été.png") == (
        f"image 'Été.png' not found; did you mean '{unicodedata.normalize('NFD', 'Été.png')}'?"
    )
    assert missing_reason(tmp_path, "nope.png") == "image 'nope.png' not found"
    picture(tmp_path / "a.png")
    assert missing_reason(tmp_path, "A.png ") == "image 'A.png ' not found; did you mean 'a.png'?"


def test_append_keeps_user_bytes(tmp_path):
    path = tmp_path / "captions.csv"
    original = b'file_name,caption,split\r\nold.jpg,"my ""own"" caption",train'  # CRLF, no final newline
    path.write_bytes(original)
    append_captions(path, [{"file_name": "new.jpg", "caption": "", "split": "test"}], ["file_name", "caption", "split"])
    assert path.read_bytes() == original + b"\r\nnew.jpg,,test\r\n"


def test_template_fresh_folder(tmp_path):
    picture(tmp_path / "photo 1.jpg")
    picture(tmp_path / "a.jpg")
    picture(tmp_path / "sub" / "Été.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.jpg").write_bytes(b"")
    result = write_template(tmp_path)
    assert (tmp_path / "captions.csv").read_text(encoding="utf-8").splitlines() == [
        "file_name,caption,split",
        "a.jpg,,train",
        "photo 1.jpg,,test",
        f"sub/Été.png,,{stable_split('sub/Été.png', 0.2)}",
    ]
    assert (result.added, result.kept, result.captioned) == (3, 0, 0)


def test_template_merge_keeps_user_captions(tmp_path):
    picture(tmp_path / "a.jpg")
    picture(tmp_path / "b.jpg")
    path = tmp_path / "captions.csv"
    user = "file_name,caption,split,pieces\na.jpg,\"a king, alone\",test,K\ngone.jpg,kept although missing,train,\n"
    path.write_text(user, encoding="utf-8")
    result = write_template(tmp_path)
    assert path.read_text(encoding="utf-8") == user + "b.jpg,,train,\n"
    assert (result.added, result.kept, result.captioned) == (1, 2, 2)
    before = path.stat().st_mtime_ns
    assert write_template(tmp_path).added == 0
    assert path.stat().st_mtime_ns == before  # nothing new: the file is not even rewritten


def test_template_matches_names_across_unicode_forms(tmp_path):
    picture(tmp_path / unicodedata.normalize("NFD", "Été.jpg"))
    (tmp_path / "captions.csv").write_text("file_name,caption\nÉté.jpg,summer\n", encoding="utf-8")
    assert write_template(tmp_path).added == 0


def test_template_on_empty_folder(tmp_path):
    with pytest.raises(VlmtuneError, match="no pictures found"):
        write_template(tmp_path)


@pytest.fixture
def fake_captioner(monkeypatch):
    calls = []

    def caption_images(model, image_paths, prompt, batch_size=8):
        calls.append((model, [p.name for p in image_paths], prompt, batch_size))
        return [f"draft of\n{p.stem}" for p in image_paths]

    monkeypatch.setattr("vlmtune.stages.template.caption_images", caption_images)
    return calls


def test_prefill_fills_only_empty_captions(tmp_path, fake_captioner):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        picture(tmp_path / name)
    path = tmp_path / "captions.csv"
    user = "file_name,caption,split\na.jpg,mine,train\nb.jpg,,test\n"
    path.write_text(user, encoding="utf-8")
    result = run_template(tmp_path, prefill="some/model", prompt="What is it?", batch_size=2)
    assert fake_captioner == [("some/model", ["b.jpg", "c.jpg"], "What is it?", 2)]
    assert read_captions(path) == [
        {"file_name": "a.jpg", "caption": "mine", "split": "train"},
        {"file_name": "b.jpg", "caption": "draft of b", "split": "test"},
        {"file_name": "c.jpg", "caption": "draft of c", "split": "train"},
    ]
    assert (tmp_path / "captions.csv.bak").read_text(encoding="utf-8") == user
    assert result.prefilled == 2


def test_prefill_refuses_to_rewrite_a_malformed_file(tmp_path, fake_captioner):
    picture(tmp_path / "a.jpg")
    path = tmp_path / "captions.csv"
    path.write_text("file_name,caption\na.jpg,\nb.jpg,x,y\n", encoding="utf-8")
    with pytest.raises(VlmtuneError, match=r"captions.csv:3: 3 fields for 2 columns"):
        run_template(tmp_path, prefill="m")
    assert fake_captioner == []
    assert path.read_text(encoding="utf-8") == "file_name,caption\na.jpg,\nb.jpg,x,y\n"


def test_cli_template_summary(tmp_path):
    from typer.testing import CliRunner

    from vlmtune.cli import app

    picture(tmp_path / "photo 1.jpg")
    picture(tmp_path / "a.jpg")
    result = CliRunner().invoke(app, ["data", "template", str(tmp_path)])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"{tmp_path / 'captions.csv'}: added 2 row(s) (train 1, test 1), kept 0; 0 of 2 captioned",
        f"next: write the empty captions, then run 'vlmtune data check {tmp_path}'",
    ]
