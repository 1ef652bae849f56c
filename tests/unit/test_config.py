import pytest

from vlmtune.config import describe, load_config
from vlmtune.errors import VlmtuneError


def test_overrides_are_typed_and_nested():
    cfg = load_config(overrides=["train.lr=2e-4", "train.lora.r=8", "data.label_column=pieces"])
    assert cfg.train.lr == 2e-4 and cfg.train.lora.r == 8 and cfg.data.label_column == "pieces"
    assert cfg.train.batch_size == 4  # untouched default


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 1.0e-3\n  epochs: 2\n")
    cfg = load_config(path, ["train.epochs=5"])
    assert (cfg.train.lr, cfg.train.epochs) == (1e-3, 5)


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lrr=1", "unknown config key 'train.lrr'"),
        ("model.bogus.x=1", "unknown config key 'model.bogus'"),
        ("train.lr=abc", "train.lr"),
        ("train.lora.targets=vision-only", "train.lora.targets='vision-only' is invalid"),
        ("train.batch_size=0", "train.batch_size=0 is invalid: must be >= 1"),
        ("train.lr", "must look like key=value"),
    ],
)
def test_bad_values_give_one_line_errors(override, message):
    with pytest.raises(VlmtuneError) as err:
        load_config(overrides=[override])
    assert message in str(err.value) and "\n" not in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(VlmtuneError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(VlmtuneError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_every_key_is_documented():
    rows = describe()
    assert {"train.lora.targets", "data.max_length", "eval.num_beams"} <= {k for k, _, _ in rows}
    assert all(doc for _, _, doc in rows)


def test_shipped_configs_are_valid():
    from pathlib import Path

    root = Path(__file__).parents[2]
    files = sorted((root / "configs").glob("*.yaml")) + [root / "src/vlmtune/configs/demo.yaml"]
    assert len(files) >= 5
    for path in files:
        load_config(path)  # raises on an unknown key or a bad value
