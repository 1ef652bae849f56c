"""Prompt robustness: train wordings spread by picture hash, the held-out prompt, its report section."""

import csv
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset
from PIL import Image

import tiny
from vlmtune.config import DEFAULT_PROMPT, DEFAULT_PROMPTS, HELDOUT_PROMPT, load_config, training_prompts
from vlmtune.data.prompts import pick_prompt, vary_prompts, with_prompt
from vlmtune.data.run_data import open_data
from vlmtune.data.schema import IMAGE, PROMPT, TEST, TRAIN, VALIDATION
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.report import write_report
from vlmtune.run_dir import RunDir
from vlmtune.stages.train import write_run_report

FOUR = ["p0", "p1", "p2", "p3"]


def test_pick_prompt_is_the_hash_bucket_of_the_key():
    # sha256("prompt:" + key)[:8] / 0xFFFFFFFF: a 45f8741f = 0.273, b d1701f87 = 0.818, c 2a6cac58 = 0.166,
    # e 85d4fdb7 = 0.523; times 4 prompts, floored.
    assert [pick_prompt(k, FOUR) for k in "abce"] == ["p1", "p3", "p0", "p2"]
    assert [pick_prompt(k, ["x", "y"]) for k in "abce"] == ["x", "y", "x", "y"]
    keys = [f"picture-{i}" for i in range(40)]
    assert set(pick_prompt(k, FOUR) for k in keys) == set(FOUR)  # 40 pictures use all four wordings


def test_vary_prompts_changes_only_rows_asking_the_default():
    ds = Dataset.from_dict({"image": ["i0", "i1", "i2", "i3"], PROMPT: ["D", "own?", "D", "D"], "answer": list("wxyz")})
    out = vary_prompts(ds, ["a", "b", "c", "e"], "D", FOUR)
    assert out[PROMPT] == ["p1", "own?", "p0", "p2"]  # row 1 brought its own question
    assert out.column_names == ds.column_names and out["answer"] == list("wxyz")
    assert vary_prompts(ds, ["a", "b", "c", "e"], "D", ["D"]) is ds  # one wording: today's behaviour
    assert with_prompt(ds, "H?")[PROMPT] == ["H?"] * 4 and with_prompt(ds, "H?").column_names == ds.column_names


def test_training_prompts_follow_data_prompt():
    assert training_prompts(load_config().data) == list(DEFAULT_PROMPTS)
    assert DEFAULT_PROMPTS[0] == DEFAULT_PROMPT and HELDOUT_PROMPT not in DEFAULT_PROMPTS
    assert training_prompts(load_config(overrides=["data.prompt=own"]).data) == ["own"]  # the paraphrases are not its
    assert training_prompts(load_config(overrides=["data.prompts=[]"]).data) == [DEFAULT_PROMPT]
    assert training_prompts(load_config(overrides=["data.prompt=q", "data.prompts=[r,q,r]"]).data) == ["q", "r"]


@pytest.mark.parametrize("overrides, message", [
    (["data.prompts=[other]"], f"config: data.prompts=['other'] is invalid: must include data.prompt={DEFAULT_PROMPT!r}"),
    (["data.prompt=q", "data.prompts=[q,' ']"], "config: data.prompts=['q', ' '] is invalid: every entry must be a "
                                                "non-empty question"),
    ([f"data.heldout_prompt={DEFAULT_PROMPTS[1]}"], f"config: data.heldout_prompt={DEFAULT_PROMPTS[1]!r} is invalid: "
                                                   "train rows are asked it"),
    (["data.prompt=q", "data.heldout_prompt=q"], "config: data.heldout_prompt='q' is invalid: train rows are asked it"),
])
def test_prompt_settings_are_checked(overrides, message):
    with pytest.raises(VlmtuneError) as err:
        load_config(overrides=overrides)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_empty_heldout_prompt_turns_it_off():
    assert load_config(overrides=["data.heldout_prompt="]).data.heldout_prompt is None
    assert load_config(overrides=["data.heldout_prompt=' '"]).data.heldout_prompt is None
    assert load_config().data.heldout_prompt == HELDOUT_PROMPT


def _picture_prompts(ds) -> dict[str, str]:
    return {Path(row[IMAGE].filename).name: row[PROMPT] for row in ds}


def test_open_data_spreads_wordings_over_train_only(tmp_path):
    folder = tiny.caption_folder(tmp_path / "data", n=48, test_every=6)  # 40 train (some carved off), 8 test
    cfg = load_config(overrides=[f"data.path={folder}", "data.validation_ratio=0.2"])
    data, record = open_data(cfg)
    train = data[TRAIN]
    assert len(data[VALIDATION]) > 0 and len(train) + len(data[VALIDATION]) == 40
    assert set(data[TEST][PROMPT]) == set(data[VALIDATION][PROMPT]) == {DEFAULT_PROMPT}
    assert set(train[PROMPT]) == set(DEFAULT_PROMPTS)
    for name, prompt in _picture_prompts(train).items():  # keyed by the picture's bytes
        assert prompt == pick_prompt(hashlib.sha256((folder / name).read_bytes()).hexdigest(), list(DEFAULT_PROMPTS))
    again, record_again = open_data(cfg)
    assert again[TRAIN][PROMPT] == train[PROMPT] and record_again == record
    assert record[TRAIN]["prompts"] == list(DEFAULT_PROMPTS)
    one, one_record = open_data(load_config(overrides=[f"data.path={folder}", "data.validation_ratio=0.2",
                                                       "data.prompts=[]"]))
    assert set(one[TRAIN][PROMPT]) == {DEFAULT_PROMPT} and "prompts" not in one_record[TRAIN]
    assert one_record[TRAIN]["content"] != record[TRAIN]["content"]  # a resume sees the wordings change


def test_rows_with_their_own_prompt_keep_it(tmp_path):
    folder = tmp_path / "vqa"
    folder.mkdir()
    rows = []
    for i in range(12):
        Image.new("RGB", (8, 8), (20 * i, 0, 0)).save(folder / f"p{i}.png")
        rows.append({"file_name": f"p{i}.png", "caption": "c", "prompt": f"own {i}?" if i % 2 else "",
                     "split": "test" if i >= 10 else "train"})
    with open(folder / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    data, _ = open_data(load_config(overrides=[f"data.path={folder}", "train.eval_each_epoch=false"]))
    prompts = _picture_prompts(data[TRAIN])
    assert {prompts[f"p{i}.png"] for i in range(1, 10, 2)} == {f"own {i}?" for i in range(1, 10, 2)}
    assert {prompts[f"p{i}.png"] for i in range(0, 10, 2)} <= set(DEFAULT_PROMPTS)
    assert _picture_prompts(data[TEST]) == {"p10.png": DEFAULT_PROMPT, "p11.png": "own 11?"}


HELDOUT = {"prompt": "What now?", "training_prompts": ["Describe.", "Say it."],
           "before": {"exact": 0.0, "token_f1": 0.25, "label_f1": 0.5}, "after": {"exact": 0.25, "token_f1": 0.5}}


def _sample() -> dict:
    return {"image": Image.new("RGB", (32, 32)), "reference": "r", "base": "b", "tuned": "t",
            "base_scores": {"token_f1": 0.5}, "tuned_scores": {"token_f1": 0.75}}


def test_report_has_a_prompt_robustness_table(tmp_path):
    before, after = {"exact": 0.0, "token_f1": 0.5, "label_f1": 0.25}, {"exact": 0.5, "token_f1": 0.75, "label_f1": 1.0}
    write_report(tmp_path, "t", "s", [_sample()], before, after, [], [], caveats=["a caveat"], heldout=HELDOUT)
    md = (tmp_path / "report.md").read_text()
    # gap = held-out after - training after: exact 0.25 - 0.5, token F1 0.5 - 0.75; no held-out label F1 after.
    assert ("| label-set F1 | 0.250 | 1.000 | 0.500 | — | — |\n"
            "| exact match | 0.000 | 0.500 | 0.000 | 0.250 | -0.250 |\n"
            "| token F1 | 0.500 | 0.750 | 0.250 | 0.500 | -0.250 |\n") in md
    assert "each asked 'What now?' in place of its own prompt" in md  # quotes kept: Markdown needs no entity
    assert "(train rows were asked 'Describe.'; 'Say it.')" in md
    assert md.index("## Prompt robustness") < md.index("## Caveats") and "- a caveat" in md
    html = (tmp_path / "report.html").read_text()
    assert "<h2>Prompt robustness</h2>" in html and html.count('class="num down">-0.250</td>') == 2
    assert "&#39;What now?&#39;" in html


def test_no_robustness_section_without_a_heldout_prompt_and_no_base(tmp_path):
    write_report(tmp_path, "t", "s", [_sample()], None, {"token_f1": 0.75}, [], [])
    assert "Prompt robustness" not in (tmp_path / "report.md").read_text()
    assert "Prompt robustness" not in (tmp_path / "report.html").read_text()
    write_report(tmp_path, "t", "s", [_sample()], None, {"token_f1": 0.75}, [], [], heldout={**HELDOUT, "before": None})
    assert "| token F1 | — | 0.750 | — | 0.500 | -0.250 |" in (tmp_path / "report.md").read_text()


def test_run_report_records_the_heldout_scores_in_metrics(tmp_path):
    cfg = load_config(overrides=[f"output_dir={tmp_path}"])
    data = {TRAIN: [{IMAGE: Image.new("RGB", (32, 32), (9, 9, 9))}], TEST: [{IMAGE: Image.new("RGB", (32, 32))}]}
    tuned = [{"index": 0, "reference": "r", "label": None, "prediction": "t", "scores": {"exact": 0.25, "token_f1": 0.75}}]
    write_run_report(RunDir(tmp_path), data, cfg, None, tuned, {"test_rows": 1}, {"heldout_prompt": HELDOUT})
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["heldout_prompt"] == HELDOUT and metrics["test_rows"] == 1
    assert "| exact match | — | 0.250 | 0.000 | 0.250 | +0.000 |" in (tmp_path / "report.md").read_text()


def test_train_writes_the_heldout_predictions(tmp_path, tiny_model_dir):
    run = tiny.trained_run(tmp_path / "run", tiny_model_dir, "data.prompts=[describe this picture,what is this]",
                           "data.heldout_prompt=what is in this picture", "eval.max_samples=2", steps=2)
    for name in ("base", "tuned"):
        rows = [json.loads(line) for line in (run / f"predictions/{name}_heldout_prompt.jsonl").read_text().splitlines()]
        assert [r["prompt"] for r in rows] == ["what is in this picture"] * 2
        assert [r["prompt"] for r in map(json.loads, (run / f"predictions/{name}.jsonl").read_text().splitlines())] \
            == ["describe this picture"] * 2
    metrics = json.loads((run / "metrics.json").read_text())
    held = metrics["heldout_prompt"]
    assert held["prompt"] == "what is in this picture" and held["training_prompts"] == ["describe this picture", "what is this"]
    assert held["before"].keys() == held["after"].keys() == metrics["after"].keys()
    assert Counter(json.loads((run / "data.json").read_text())[TRAIN]["prompts"]) == Counter(held["training_prompts"])
    assert "## Prompt robustness" in (run / "report.md").read_text()
