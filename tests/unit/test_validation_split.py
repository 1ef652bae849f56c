"""Eval loss and early stopping read a validation split, never test; carved off train by picture hash."""

import csv
import json
import random

import pytest

import tiny
from vlmtune.config import load_config
from vlmtune.data.dataset import build_dataset
from vlmtune.data.schema import TEST, TRAIN, VALIDATION
from vlmtune.data.splits import CARVED, carve_indices, with_validation
from vlmtune.errors import VlmtuneError

DIGESTS = [f"{i:064x}" for i in range(300)]


def chosen(digests, ratio=0.1):
    return {digests[i] for i in carve_indices(digests, ratio)}


def test_carving_does_not_depend_on_row_order_and_never_moves_an_old_picture():
    base = chosen(DIGESTS[:200])
    assert 8 <= len(base) <= 35  # ~10 % of 200, drawn by hash
    shuffled = random.Random(1).sample(DIGESTS[:200], 200)
    assert chosen(shuffled) == base
    grown = chosen(DIGESTS)  # 100 pictures added
    assert grown & set(DIGESTS[:200]) == base


def test_carving_takes_at_least_one_picture_never_all_and_keeps_duplicates_together():
    assert carve_indices(["a" * 64], 0.1) == []  # one picture: nothing to carve
    assert carve_indices(DIGESTS[:5], 0.0) == []
    for n in range(2, 6):
        assert len(carve_indices(DIGESTS[:n], 0.01)) >= 1
    assert len(carve_indices(DIGESTS[:3], 0.999)) == 2  # train keeps one
    picked = carve_indices(DIGESTS[:4] + DIGESTS[:4], 0.01)  # every picture twice
    assert len(picked) == 2 and len({(DIGESTS[:4] * 2)[i] for i in picked}) == 1


def test_validation_is_carved_off_train_only_and_recorded(tmp_path):
    dd = build_dataset(tiny.caption_folder(tmp_path / "data", n=40), "Describe.")
    out, record = with_validation(dd, 0.25, wanted=True)
    names = {s: [im.filename for im in out[s]["image"]] for s in out}
    assert set(names[TRAIN]) | set(names[VALIDATION]) == {im.filename for im in dd[TRAIN]["image"]}
    assert not set(names[TRAIN]) & set(names[VALIDATION])
    assert names[TEST] == [im.filename for im in dd[TEST]["image"]]  # test untouched
    assert record[VALIDATION]["rows"] == len(names[VALIDATION]) >= 1
    assert record[VALIDATION]["source"] == f"{CARVED} (data.validation_ratio=0.25)"
    assert record[TRAIN]["rows"] + record[VALIDATION]["rows"] == len(dd[TRAIN])
    assert all(len(record[s]["content"]) == 64 for s in record)
    unwanted, _ = with_validation(dd, 0.25, wanted=False)
    assert VALIDATION not in unwanted and len(unwanted[TRAIN]) == len(dd[TRAIN])


def test_content_digest_sees_a_picture_replaced_under_the_same_name(tmp_path):
    from PIL import Image

    folder = tiny.caption_folder(tmp_path / "data")
    _, before = with_validation(build_dataset(folder, "Describe."), 0.1, wanted=False)
    Image.new("RGB", (32, 32), (1, 2, 3)).save(folder / "pic_1.png")  # a train picture
    _, after = with_validation(build_dataset(folder, "Describe."), 0.1, wanted=False)
    assert after[TRAIN]["fingerprint"] == before[TRAIN]["fingerprint"]  # datasets hashes the paths only
    assert after[TRAIN]["content"] != before[TRAIN]["content"] and after[TEST] == before[TEST]


def test_validation_rows_of_a_caption_folder_are_used_as_they_are(tmp_path):
    folder = tiny.caption_folder(tmp_path / "data")
    with open(folder / "captions.csv") as f:
        rows = list(csv.DictReader(f))
    rows[1]["split"] = VALIDATION
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out, record = with_validation(build_dataset(folder, "Describe."), 0.5, wanted=True)
    assert [im.filename.rsplit("/", 1)[-1] for im in out[VALIDATION]["image"]] == ["pic_1.png"]
    assert record[VALIDATION]["source"] == "data" and record[TRAIN]["rows"] == 5


def test_a_saved_dataset_keeps_validation_beside_test_and_uses_it_for_test_when_alone():
    from datasets import Dataset, DatasetDict

    from vlmtune.data.sources import train_test

    part = Dataset.from_dict({"x": [1, 2]})
    three = train_test(DatasetDict({"train": part, "validation": part, "test": part}), 0.2, "here")
    assert sorted(three) == [TEST, TRAIN, VALIDATION]
    two = train_test(DatasetDict({"train": part, "validation": part}), 0.2, "here")
    assert sorted(two) == [TEST, TRAIN]


@pytest.mark.parametrize("feature_cache", ["true", "false"])  # cached rows / rows encoded on access
def test_with_early_stopping_no_test_row_is_ever_seen_by_the_trainer(tmp_path, tiny_model_dir, monkeypatch, feature_cache):
    import vlmtune.training.examples as examples
    from vlmtune.stages.train import train_run

    data = tiny.caption_folder(tmp_path / "data", n=12)  # test: pic_0, pic_4, pic_8
    seen, original = [], examples.encode_row
    monkeypatch.setattr(examples, "encode_row", lambda enc, row, where, *view: seen.append((where, row["image"].filename)) or
                        original(enc, row, where, *view))
    out = tmp_path / "run"
    train_run(load_config(overrides=[
        f"model.name={tiny_model_dir}", f"data.path={data}", f"output_dir={out}", "train.early_stopping_patience=1",
        "train.save_steps=0", "train.epochs=2", "train.batch_size=4", "train.bf16=false", "data.validation_ratio=0.3",
        "eval.before=false", "eval.max_new_tokens=2", f"train.feature_cache={feature_cache}"]))
    names = {w.split()[0]: set() for w, _ in seen}
    for where, file in seen:
        names[where.split()[0]].add(file.rsplit("/", 1)[-1])
    assert not (names[TRAIN] | names[VALIDATION]) & {"pic_0.png", "pic_4.png", "pic_8.png"}
    assert names[TRAIN] | names[VALIDATION] == {f"pic_{i}.png" for i in range(12) if i % 4}
    record = json.loads((out / "data.json").read_text())
    assert record[VALIDATION]["rows"] == len(names[VALIDATION]) >= 1 and record[TEST]["rows"] == 3
    history = json.loads((out / "log_history.json").read_text())
    assert any("eval_loss" in h for h in history)


def test_early_stopping_without_any_validation_picture_is_refused_in_one_line(tmp_path, capsys):
    from vlmtune.data.run_data import open_dataset, validation_for

    data = tiny.caption_folder(tmp_path / "data", n=2, test_every=2)  # one train picture
    cfg = load_config(overrides=[f"data.path={data}", "train.early_stopping_patience=2"])
    with pytest.raises(VlmtuneError, match=r"^train.early_stopping_patience=2 needs a validation split and there is "
                                           r"none \(train has 1 picture\(s\), too few to carve one off\)"):
        validation_for(cfg, open_dataset(cfg))
    cfg = load_config(overrides=[f"data.path={data}", "data.validation_ratio=0"])
    assert validation_for(cfg, open_dataset(cfg)) is None
    assert "note: no validation split (data.validation_ratio=0): eval loss after each epoch is off" in capsys.readouterr().out
