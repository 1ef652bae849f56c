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


@pytest.mark.parametrize("unk", ["[UNK]", None])
def test_aya_layout_ends_turns_with_coheres_token_only_where_the_vocabulary_has_it(unk):
    """The default's tokenizer has no <|END_OF_TURN_TOKEN|>: EOS ends its turns (and its labels);
    a Cohere tokenizer has it. A lookup of an unknown token gives the unk id, or None without unk."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from vlmtune.models.families.aya_vision import AYA_VISION, COHERE_END_OF_TURN

    vocab = {"a": 0, "rook": 1, "<eos>": 2, **({unk: 3} if unk else {})}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk)),
                                  eos_token="<eos>", **({"unk_token": unk} if unk else {}))
    assert AYA_VISION.hooks.end_of_turn(AYA_VISION, tok) == "<eos>"
    tok.add_special_tokens({"additional_special_tokens": [COHERE_END_OF_TURN]})
    assert AYA_VISION.hooks.end_of_turn(AYA_VISION, tok) == COHERE_END_OF_TURN


def test_aya_rows_loaded_model_gets_the_identity_logit_scale_only_where_its_config_has_none():
    """A default cached under transformers 5.24 has no text_config.logit_scale, which 5.25's Aya head reads."""
    import torch
    from tiny import aya_default

    model, processor = aya_default()
    text = model.config.text_config
    del text.logit_scale  # as saved before the fix
    assert getattr(text, "logit_scale", None) is None
    spec = REGISTRY["aya_vision"]
    assert spec.hooks.for_model(spec, model, processor) is spec
    assert text.logit_scale == 1.0
    model(input_ids=torch.tensor([[1, 2, 3]]))  # 5.25 would raise AttributeError without it
    text.logit_scale = 0.25  # Cohere's own scale is kept
    spec.hooks.for_model(spec, model, processor)
    assert text.logit_scale == 0.25
