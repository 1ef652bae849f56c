"""`vlmtune families`: every row with what it supports, its presets and the checkpoints it was checked on,
and the row data behind it kept honest against the configs and the real-shape test data."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from vlmtune.cli import app
from vlmtune.models.generic import GENERIC
from vlmtune.models.registry import ROWS, UNSUPPORTED, family_for

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "model-configs"
HOW = {"shapes", "tokenizer", "trained"}


@pytest.fixture(scope="module")
def output():
    result = CliRunner().invoke(app, ["families"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def block(output: list[str], family: str) -> list[str]:
    start = next(i for i, line in enumerate(output) if line.startswith(f"{family}: "))
    return output[start:start + 5]


def test_every_row_and_the_generic_row_are_listed_once(output):
    heads = [line.split(":")[0] for line in output if line and not line.startswith((" ", "verified:", "refused:"))]
    assert heads == [spec.name for spec in ROWS] + [GENERIC]
    assert [line for line in output if line.startswith("refused:")] == [
        f"refused: llama4: {UNSUPPORTED['llama4']}"]


def test_a_row_lists_what_it_supports_its_presets_and_checkpoints(output):
    assert block(output, "llava_next") == [
        "llava_next: llava_next (LlavaNextForConditionalGeneration)",
        "  supports: vision LoRA yes, projector model.multi_modal_projector, model.image_newline, feature cache no, "
        "logits_to_keep yes, model.max_image_tokens mapped onto the processor",
        "  presets: configs/llava-next-mistral-7b.yaml",
        "  verified on: llava-hf/llava-v1.6-mistral-7b-hf (shapes+tokenizer); llava-hf/llava-v1.6-vicuna-7b-hf (shapes); "
        "llava-hf/llava-v1.6-34b-hf (shapes)",
        "  notes: LLaVA-NeXT / 1.6: Mistral-7B, Vicuna-7B/13B, Yi-34B",
    ]
    assert block(output, "llava")[1].endswith("feature cache yes, logits_to_keep yes, model.max_image_tokens fixed "
                                              "count, checked")


def test_the_generic_row_says_what_is_off(output):
    lines = block(output, GENERIC)
    assert lines[0] == f"{GENERIC}: any other AutoModelForImageTextToText type with a chat template (read off the model)"
    assert lines[1] == ("  supports: vision LoRA yes, projector read off the model, feature cache no, logits_to_keep no, "
                        "model.max_image_tokens refused (model.max_image_tokens unset)")
    assert lines[3] == "  verified on: tiny random models only"


@pytest.mark.parametrize("spec", ROWS, ids=[s.name for s in ROWS])
def test_shape_claims_have_the_published_config_and_it_resolves_to_the_row(spec):
    for checkpoint, how in spec.verified:
        assert set(how.split("+")) <= HOW, (checkpoint, how)
        if "shapes" in how:
            folder = DATA / checkpoint.replace("/", "__")
            model_type = json.loads((folder / "config.json").read_text())["model_type"]
            assert family_for(model_type) is spec, checkpoint


def test_every_config_in_configs_is_the_preset_of_exactly_one_row():
    named = sorted(f"configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")
                   if (yaml.safe_load(p.read_text()) or {}).get("model", {}).get("name"))
    listed = sorted(p for spec in ROWS for p in spec.presets)
    assert listed == named  # none missing, none twice
    for spec in ROWS:
        for preset in spec.presets:
            name = yaml.safe_load((ROOT / preset).read_text())["model"]["name"]
            folder = DATA / name.replace("/", "__")
            if folder.is_dir():  # the preset's checkpoint is served by this row
                assert family_for(json.loads((folder / "config.json").read_text())["model_type"]) is spec, preset
