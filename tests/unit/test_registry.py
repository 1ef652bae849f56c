"""The registry covers every family the product promises, chosen by config.model_type only."""

import json
from pathlib import Path

import pytest
import transformers

from vlmtune.errors import VlmtuneError
from vlmtune.models.registry import REGISTRY, ROWS, family_for

CONFIGS = Path(__file__).parent.parent / "data/model-configs"
PROMISED = {  # model_type -> row (README: LLaVA-1.5, LLaVA-NeXT, IDEFICS, Idefics2/3, SmolVLM, Qwen2-VL, PaliGemma, Mllama, Gemma 3)
    "llava": "llava", "llava_next": "llava_next", "idefics": "idefics", "idefics2": "idefics2",
    "idefics3": "idefics3", "smolvlm": "smolvlm", "qwen2_vl": "qwen2_vl", "qwen2_5_vl": "qwen2_5_vl",
    "paligemma": "paligemma", "mllama": "mllama", "gemma3": "gemma3",
    "qwen3_vl": "qwen3_vl", "llava_onevision": "llava_onevision", "internvl": "internvl",
    "mistral3": "mistral3", "lfm2_vl": "lfm2_vl",
}


@pytest.mark.parametrize("model_type, row", sorted(PROMISED.items()))
def test_every_promised_family_has_a_row(model_type, row):
    spec = family_for(model_type)
    assert spec.name == row
    assert hasattr(transformers, spec.model_class), spec.model_class


@pytest.mark.parametrize("folder", sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()))
def test_every_real_config_resolves_from_its_model_type(folder):
    model_type = json.loads((CONFIGS / folder / "config.json").read_text())["model_type"]
    assert family_for(model_type).name == PROMISED[model_type]


def test_rows_are_unique():
    assert len(REGISTRY) == len(ROWS)
    types = [t for spec in ROWS for t in spec.model_types]
    assert len(types) == len(set(types))


def test_unknown_family_and_model_type_are_one_line_errors():
    with pytest.raises(VlmtuneError, match="model.family='blip' is unknown; known families: aya_vision, gemma3, idefics"):
        family_for("llava", explicit="blip")
    with pytest.raises(VlmtuneError, match="model_type 'blip_2' is not supported; supported: aya_vision, gemma3, idefics"):
        family_for("blip_2")
    assert family_for("qwen2_vl", explicit="llava").name == "llava"  # explicit wins
