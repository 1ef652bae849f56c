"""``vlmtune data build`` from every accepted source, and ``build_dataset`` (the demo's path)."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import datasets
import pytest
from PIL import Image

from vlmtune.data.build import BuildOptions, CheckFailed, build, detect
from vlmtune.data.captions import Columns
from vlmtune.data.check import CheckOptions
from vlmtune.data.dataset import build_dataset
from vlmtune.data.schema import DEFAULT_PROMPT
from vlmtune.errors import VlmtuneError

QUIET = CheckOptions(workers=1, progress=False, min_side=8)


@pytest.fixture(autouse=True)
def quiet_datasets(tmp_path, monkeypatch):
    datasets.disable_progress_bars()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # never the user's cache


def picture(path: Path, colour, size=(24, 16)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def caption_folder(root: Path) -> Path:
    picture(root / "images" / "a b.png", (255, 0, 0))
    picture(root / "images" / "é.png", (0, 255, 0))
    picture(root / "images" / "c.png", (0, 0, 255))
    (root / "captions.csv").write_text(
        "file_name,caption,split,pieces,prompt\n"
        'images/a b.png,"red, bright",train,K,\n'
        "images/é.png,green,train,Q,Which colour?\n"
        "images/c.png,blue,test,,\n",
        encoding="utf-8",
    )
    return root


def test_caption_folder_builds_a_self_contained_dataset(tmp_path):
    src = caption_folder(tmp_path / "photos")
    dd, report = build(str(src), tmp_path / "out", BuildOptions(QUIET))
    assert report.issues == []
    shutil.rmtree(src)  # the saved dataset carries the image bytes itself
    loaded = datasets.load_from_disk(str(tmp_path / "out"))
    assert sorted(loaded) == ["test", "train"]
    assert loaded["train"].column_names == ["image", "prompt", "answer", "pieces"]
    assert isinstance(loaded["train"].features["image"], datasets.Image)
    assert loaded["train"]["answer"] == ["red, bright", "green"]
    assert loaded["train"]["prompt"] == [DEFAULT_PROMPT, "Which colour?"]
    assert loaded["train"]["pieces"] == ["K", "Q"]
    image = loaded["test"][0]["image"]
    assert (image.size, image.convert("RGB").getpixel((3, 3))) == ((24, 16), (0, 0, 255))


def test_build_dataset_fast_path(tmp_path):
    src = caption_folder(tmp_path)
    dd = build_dataset(src, "Q?", test_ratio=0.2)
    assert {k: len(v) for k, v in dd.items()} == {"train": 2, "test": 1}
    assert dd["train"]["prompt"] == ["Q?", "Which colour?"]


def test_build_dataset_errors_name_the_line(tmp_path):
    picture(tmp_path / "a.png", "red")
    (tmp_path / "captions.csv").write_text("file_name,caption,split\na.png,x,train\nb.png,y,test\n")
    with pytest.raises(VlmtuneError, match=r"captions.csv:3: image 'b.png' not found$"):
        build_dataset(tmp_path, "Q?")
    (tmp_path / "captions.csv").write_text("file_name,caption,split\na.png,x,train\n")
    with pytest.raises(VlmtuneError, match=r"captions.csv: no test rows; set split=test on some rows or raise --test-ratio"):
        build_dataset(tmp_path, "Q?")


def test_errors_stop_the_build_before_writing(tmp_path):
    src = caption_folder(tmp_path / "photos")
    (src / "captions.csv").write_text("file_name,caption,split\nimages/c.png,,train\n../x.png,y,test\n")
    with pytest.raises(CheckFailed) as failed:
        build(str(src), tmp_path / "out", BuildOptions(QUIET))
    assert str(failed.value) == f"{src / 'captions.csv'}: 2 error(s) listed above; fix them and run build again"
    assert [i.message for i in failed.value.report.errors] == [
        "empty caption for 'images/c.png'",
        "'../x.png' leaves the folder with '..'",
    ]
    assert not (tmp_path / "out").exists()


def test_metadata_jsonl_with_questions(tmp_path):
    picture(tmp_path / "data" / "x.png", "red")
    picture(tmp_path / "data" / "y.png", "blue")
    rows = [
        {"file_name": "x.png", "question": "What colour?", "answer": "red", "split": "train", "n": 1},
        {"file_name": "y.png", "question": "Which hue?", "answer": "blue", "split": "test", "n": 2},
    ]
    (tmp_path / "data" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = BuildOptions(CheckOptions(columns=Columns(prompt="question"), workers=1, progress=False, min_side=8))
    dd, _ = build(str(tmp_path / "data" / "metadata.jsonl"), tmp_path / "out", options)
    assert dd["train"].column_names == ["image", "prompt", "answer", "n"]
    assert (dd["train"]["prompt"], dd["test"]["answer"], dd["test"]["n"]) == (["What colour?"], ["blue"], [2])


def test_imagefolder_with_class_folders(tmp_path):
    for i in range(5):
        picture(tmp_path / "pets" / "cat" / f"c{i}.png", (i, 0, 0))
        picture(tmp_path / "pets" / "dog" / f"d{i}.png", (0, i, 0))
    assert detect(str(tmp_path / "pets"))[0] == "imagefolder"
    options = BuildOptions(CheckOptions(test_ratio=0.2, workers=1, progress=False))
    dd, report = build(str(tmp_path / "pets"), tmp_path / "out", options)
    assert report is None
    assert (len(dd["train"]), len(dd["test"])) == (8, 2)
    assert sorted([*dd["train"]["answer"], *dd["test"]["answer"]]) == ["cat"] * 5 + ["dog"] * 5
    assert dd["test"]["prompt"] == [DEFAULT_PROMPT] * 2


def test_folder_without_captions_points_to_template(tmp_path):
    picture(tmp_path / "photos" / "a.png", "red")
    with pytest.raises(VlmtuneError) as err:
        build(str(tmp_path / "photos"), tmp_path / "out", BuildOptions(QUIET))
    assert str(err.value) == (
        f"{tmp_path / 'photos'}: pictures without captions; run 'vlmtune data template {tmp_path / 'photos'}' and fill them in"
    )


def test_saved_dataset_validation_becomes_test(tmp_path):
    rows = {"image": [str(tmp_path / "p.png")], "text": ["red"]}
    picture(tmp_path / "p.png", "red")
    unlabelled = datasets.Dataset.from_dict({"image": rows["image"]})
    splits = {"train": rows, "validation": rows}
    saved = datasets.DatasetDict({k: datasets.Dataset.from_dict(v) for k, v in splits.items()} | {"extra": unlabelled})
    saved.save_to_disk(str(tmp_path / "saved"))
    dd, _ = build(str(tmp_path / "saved"), tmp_path / "out", BuildOptions(QUIET))
    assert sorted(dd) == ["test", "train"]
    assert isinstance(dd["test"].features["image"], datasets.Image)
    assert dd["test"]["answer"] == ["red"]


def test_hub_name_offline_fails_fast(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.monotonic()
    with pytest.raises(VlmtuneError, match=r"^nobody/nothing: could not load it from the hub \(HF_HUB_OFFLINE is set"):
        build("nobody/nothing", tmp_path / "out", BuildOptions(QUIET))
    assert time.monotonic() - start < 10


def test_hub_unreachable_is_one_line(tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online mode, but no network
    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    with pytest.raises(VlmtuneError) as err:
        build("nobody/nothing", tmp_path / "out", BuildOptions(QUIET))
    assert str(err.value) == (
        "nobody/nothing: no such local path, and the hub is unreachable "
        "(ConnectionError: Name or service not known); check the path or the network"
    )


def test_push_without_token_fails_before_building(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    src = caption_folder(tmp_path / "photos")
    with pytest.raises(VlmtuneError, match=r"^--push-to-hub me/set: no Hugging Face token; run 'hf auth login' or set HF_TOKEN$"):
        build(str(src), tmp_path / "out", BuildOptions(QUIET, push_to_hub="me/set"))
    assert not (tmp_path / "out").exists()


def test_output_folder_is_never_clobbered(tmp_path):
    src = caption_folder(tmp_path / "photos")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(VlmtuneError, match="already exists; pass --overwrite"):
        build(str(src), tmp_path / "mine", BuildOptions(QUIET))
    with pytest.raises(VlmtuneError, match="not a dataset built by vlmtune; refusing to replace it"):
        build(str(src), tmp_path / "mine", BuildOptions(QUIET, overwrite=True))
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
    build(str(src), tmp_path / "out", BuildOptions(QUIET))
    (src / "captions.csv").write_text("file_name,caption,split\nimages/c.png,blue,train\nimages/é.png,green,test\n")
    build(str(src), tmp_path / "out", BuildOptions(QUIET, overwrite=True))
    assert len(datasets.load_from_disk(str(tmp_path / "out"))["train"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "out", "photos"]  # no temporary leftovers


def test_cli_prints_one_line_errors(tmp_path, monkeypatch, capsys):
    from vlmtune.cli import main

    monkeypatch.setattr(sys, "argv", ["vlmtune", "data", "build", str(tmp_path / "no such dir"), str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'no such dir'}: no such file or folder\n"


def test_cli_build_prints_the_problems_then_fails(tmp_path):
    from typer.testing import CliRunner

    from vlmtune.cli import app

    src = caption_folder(tmp_path / "photos")
    args = ["data", "build", str(src), str(tmp_path / "out"), "--no-progress", "--workers", "1"]
    wide = {"COLUMNS": "200"}  # rich wraps table cells to the terminal width
    ok = CliRunner().invoke(app, args, env=wide)
    assert ok.exit_code == 0
    assert f"saved {tmp_path / 'out'} (train 2, test 1 rows; columns image, prompt, answer, pieces)" in ok.output
    (src / "captions.csv").write_text("file_name,caption,split\nimages/c.png,,train\n")
    bad = CliRunner().invoke(app, [*args[:3], str(tmp_path / "out2"), *args[4:]], env=wide)
    assert isinstance(bad.exception, CheckFailed)
    assert "empty caption for 'images/c.png'" in bad.output and "no test rows" in bad.output


def test_imagefolder_with_split_folders_and_metadata(tmp_path):
    for split, colour in (("train", "red"), ("test", "blue")):
        for i in range(2):
            picture(tmp_path / "hf" / split / f"{split}{i}.png", colour)
        rows = [{"file_name": f"{split}{i}.png", "text": f"a {colour} card"} for i in range(2)]
        (tmp_path / "hf" / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    dd, _ = build(str(tmp_path / "hf"), tmp_path / "out", BuildOptions(QUIET))
    assert (list(dd["train"]["answer"]), list(dd["test"]["answer"])) == (["a red card"] * 2, ["a blue card"] * 2)
    assert dd["test"][0]["image"].convert("RGB").getpixel((1, 1)) == (0, 0, 255)
