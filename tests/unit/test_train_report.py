"""The train stage's additions to the report: parsed label sets and train/test lookalikes."""

import numpy as np
from PIL import Image

from vlmtune.config import load_config
from vlmtune.data.schema import IMAGE, TEST, TRAIN
from vlmtune.run_dir import RunDir
from vlmtune.data.check import lookalike_caveats
from vlmtune.stages.train import label_sets, write_run_report


def gradient(vertical: bool = False, side: int = 64) -> Image.Image:
    ramp = np.tile(np.linspace(0, 255, side), (side, 1))
    grey = (ramp.T if vertical else ramp).astype("uint8")
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def checker(side: int = 64, cell: int = 8) -> Image.Image:
    y, x = np.mgrid[:side, :side]
    grey = ((x // cell + y // cell) % 2 * 255).astype("uint8")
    return Image.fromarray(np.stack([grey] * 3, axis=-1))


def test_lookalikes_name_the_test_picture_and_the_train_file(tmp_path):
    gradient().save(tmp_path / "ramp.png")
    train = [{IMAGE: Image.open(tmp_path / "ramp.png")}, {IMAGE: checker()}]
    # Test #1 is the train ramp made smaller (hash distance 0); #0 and #2 share no structure with train.
    test = [{IMAGE: gradient(vertical=True)}, {IMAGE: gradient().resize((40, 40))}, {IMAGE: checker().resize((48, 48))}]
    lines = lookalike_caveats(train, test, n_test=2)  # only the two evaluated pictures are compared
    assert lines == ["1 of 2 test pictures look like a train picture (perceptual hash distance <= 6, as in "
                     "'vlmtune data check'): their scores may be inflated", "test picture #1 looks like train ramp.png"]
    assert lookalike_caveats(train, test, n_test=3)[2] == "test picture #2 looks like train row 1"  # no file name
    assert lookalike_caveats(train, test[:1], n_test=1) == []


def test_label_sets_need_a_label_column_and_a_label_on_every_row(tmp_path):
    tuned = [{"label": "white king;black queen", "prediction": "a white king and a black king"}]
    base = [{"label": "white king;black queen", "prediction": "a white king"}]
    cfg = load_config(overrides=["data.label_column=pieces", "data.label_parser=chess"])
    [sets] = label_sets(cfg, base, tuned)
    assert sets["reference_labels"] == {("white", "king"): 1, ("black", "queen"): 1}
    assert sets["tuned_labels"] == {("white", "king"): 1, ("black", "king"): 1}
    assert sets["base_labels"] == {("white", "king"): 1}
    assert label_sets(load_config(overrides=["data.label_parser=chess"]), base, tuned) == [{}]  # no label column
    assert label_sets(cfg, None, [{**tuned[0], "label": None}]) == [{}]


def test_run_report_shows_classes_and_lookalikes(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path}", "data.label_column=pieces", "data.label_parser=chess"])
    data = {TRAIN: [{IMAGE: gradient()}], TEST: [{IMAGE: gradient()}]}
    tuned = [{"index": 0, "reference": "a white king", "label": "white king", "prediction": "a black king",
              "scores": {"exact": 0.0, "token_f1": 0.5, "label_f1": 0.0}}]
    write_run_report(RunDir(tmp_path), data, cfg, None, tuned, {})
    md = (tmp_path / "report.md").read_text()
    assert "| white king | 1 | — | 0 / 1 / 0 | — | 0.00 | — | — | black king (1) |" in md
    assert "- test picture #0 looks like train row 0" in md
