"""The generic row: a FamilySpec read off the model's structure, for model types no row describes.

Tried on two tiny models, forced onto the generic row with model.family=generic (Aya Vision, which has a
row of its own since it became the default's layout: Cohere2 + SigLIP + pixel-shuffle
projector, its template writing BOS and closing turns with <|END_OF_TURN_TOKEN|>; VipLLaVA: CLIP
features of two layers + Llama, a Vicuna-style template with a space before the answer), on
hand-written rows it must agree with, and on models it must refuse.
"""

import json

import pytest
import torch
import transformers
from peft import PeftModel
from torch import nn
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

import families_tiny as ft
import families_tiny_d as fd
import family_cases as fcs
import tiny
from vlmtune.config import ModelConfig, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.families.llava import LLAVA
from vlmtune.models.families.qwen import QWEN2_VL
from vlmtune.models.generic import GENERIC, analyse, spec_for_config, turn_format
from vlmtune.models.loading import load_for_inference, load_model
from vlmtune.models.lora import plan_for
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.models.registry import family_for, matching_modules
from vlmtune.stages.train import train_run
from vlmtune.training.collate import Collator
from vlmtune.training.fit import fit

CPU = torch.device("cpu")
PROMPT, ANSWER = "Describe this picture.", "a white rook"
# Hand-spelled token layouts of PROMPT + ANSWER for a 40x30 picture.
AYA_PROMPT = ["<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|START_OF_IMG|>", "TILE_GLOBAL",
              *["<|IMG_PATCH|>"] * fd.AYA_TOKENS, "<|END_OF_IMG|>", "describe", "this", "picture", ".",
              "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>"]
AYA_ANSWER = ["a", "white", "rook", "<|END_OF_TURN_TOKEN|>"]
VIP_PROMPT = ["<s>", "user", ":", *["<image>"] * fd.VIP_TOKENS, "\n", "describe", "this", "picture", ".", "assistant", ":"]
VIP_ANSWER = ["a", "white", "rook", "</s>"]
CASES = {  # type -> (builder, prompt, answer, stop tokens, answer_prefix, processor_kwargs)
    "aya_vision": (fd.aya_vision, AYA_PROMPT, AYA_ANSWER, ["<EOS_TOKEN>", "<|END_OF_TURN_TOKEN|>"], "",
                   (("add_special_tokens", False),)),
    "vipllava": (fd.vipllava, VIP_PROMPT, VIP_ANSWER, ["</s>"], " ", ()),
}


def picture(colour=(200, 30, 30)):
    from PIL import Image

    return Image.new("RGB", (40, 30), colour)


def token_ids(processor, tokens) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(list(tokens))


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    return request.param


@pytest.fixture(scope="module")
def saved(case, tmp_path_factory):
    """The tiny base saved to disk and loaded back through load_model: (dir, model, processor, spec)."""
    base = ft.save(*CASES[case][0](), tmp_path_factory.mktemp(case) / "base")
    model, processor, spec, _ = load_model(ModelConfig(name=str(base), family=GENERIC), training=True, device=CPU)
    return base, model, processor, spec


# ---------------------------------------------------------------- choosing the generic row
def test_types_without_a_row_get_the_generic_row_and_others_a_one_line_refusal():
    assert family_for("vipllava") is None and family_for("aya_vision", explicit=GENERIC) is None  # read off the model
    assert family_for("llava", explicit=GENERIC) is None and family_for("llava") is LLAVA
    with pytest.raises(VlmtuneError, match="^model_type 'bert' is not supported; .* not an AutoModelForImageTextToText"):
        family_for("bert")
    with pytest.raises(VlmtuneError, match=r"^model.family='blip' is unknown; known families: .*generic"):
        family_for("llava", explicit="blip")


def test_analysis_finds_each_part_and_its_exact_lora_targets(case, saved):
    _, model, _, spec = saved
    assert spec.name == GENERIC and spec.model_types == (case,) and spec.model_class == type(model).__name__
    assert (spec.lm_prefix, spec.vision_prefix, spec.projector_modules) == (
        r"model\.language_model", r"model\.vision_tower", ("model.multi_modal_projector",))
    lm, vision = set(matching_modules(model, spec.lm_pattern())), set(matching_modules(model, spec.vision_pattern()))
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert lm == {n for n in linears if n.startswith("model.language_model.")} and len(lm) == 2 * 7
    assert vision == {n for n in linears if n.startswith("model.vision_tower.")} and len(vision) == 2 * 6
    assert not spec.feature_cache and not spec.logits_to_keep  # what no row vouches for stays off


def test_analysis_agrees_with_hand_written_rows():
    """LLaVA and Qwen2-VL (whose merger lies inside the vision tower): the same parts, the same LoRA targets."""
    for build, row in ((ft.llava15, LLAVA), (ft.qwen_vl, QWEN2_VL)):
        model = build()[0]
        spec = analyse(model)
        assert (spec.lm_prefix, spec.vision_prefix, spec.projector_modules) == (
            row.lm_prefix, row.vision_prefix, row.projector_modules), row.name
        for targets in ("lm", "lm+vision"):
            lora = load_config(overrides=[f"train.lora.targets={targets}"]).train.lora
            assert matching_modules(model, plan_for(spec, lora).lora_pattern) == matching_modules(
                model, plan_for(row, lora).lora_pattern), (row.name, targets)


class Anything(nn.Module):
    """No transformers class, no telling name: the parts are found by structure alone."""

    def __init__(self, vision: str | None = "vision_model", projector: str | None = "connector"):
        super().__init__()
        self.config = type("Config", (), {"model_type": "made_up"})()
        self.core = nn.Module()
        self.core.decoder = nn.ModuleDict({"attn": nn.Linear(4, 4), "mlp": nn.Linear(4, 4)})
        if vision:
            self.core.add_module(vision, nn.ModuleDict({"fc": nn.Linear(4, 4)}))
        if projector:
            self.core.add_module(projector, nn.Linear(4, 4))
        self.head = nn.Linear(4, 4)

    def get_decoder(self):
        return self.core if self.whole_core else self.core.decoder

    whole_core = False


def test_parts_are_found_from_structure_not_from_names():
    spec = analyse(Anything())
    assert (spec.lm_prefix, spec.lm_leaves, spec.vision_prefix, spec.vision_leaves, spec.projector_modules) == (
        r"core\.decoder", ("attn", "mlp"), r"core\.vision_model", ("fc",), ("core.connector",))
    assert analyse(Anything("visual", "merger")).projector_modules == ("core.merger",)
    assert spec.model_class == "AutoModelForImageTextToText"  # not a transformers class: loaded through the Auto class


def test_a_model_it_cannot_analyse_is_refused_in_one_line_naming_what_is_missing():
    with pytest.raises(VlmtuneError, match=r"^generic row: cannot analyse Anything: it has no vision tower "
                                           r"\(vision_tower/visual/vision_model\) and no projector"):
        analyse(Anything(vision=None, projector=None))
    wide = Anything()
    wide.whole_core = True  # a decoder that holds the vision tower: the LM pattern would reach into it
    with pytest.raises(VlmtuneError, match=r"^generic row: cannot analyse Anything: get_decoder\(\) returns core, which "
                                           r"holds core.vision_model and core.connector"):
        analyse(wide)
    # Real types: Fuyu feeds patches through a bare linear (no vision tower); Janus names its projector "aligner".
    with pytest.raises(VlmtuneError, match=r"^generic row: cannot analyse FuyuForCausalLM: it has no vision tower"):
        spec_for_config(CONFIG_MAPPING["fuyu"]())
    with pytest.raises(VlmtuneError, match=r"^generic row: cannot analyse JanusForConditionalGeneration: it has no "
                                           r"projector \(multi_modal_projector/connector/merger\); .*registry row"):
        spec_for_config(CONFIG_MAPPING["janus"]())


# ---------------------------------------------------------------- what it reads off the chat template
def test_turn_format_is_read_off_the_chat_template(case):
    _, _, answer, _, prefix, kwargs = CASES[case]
    processor = CASES[case][0]()[1]
    found = turn_format(processor)
    assert found["answer_prefix"] == prefix and found["end_of_turn"] == answer[-1]
    assert found.get("processor_kwargs", ()) == kwargs  # Aya's template writes BOS, and its tokenizer adds one


def test_labels_are_answer_only_and_hand_spelled(case, saved):
    _, _, processor, spec = saved
    _, prompt, answer, stops, _, _ = CASES[case]
    ex = PromptAnswerTokenizer(processor, spec, 256).encode(picture(), PROMPT, ANSWER)
    assert ex["input_ids"] == token_ids(processor, prompt + answer)
    assert ex["labels"] == [IGNORE] * len(prompt) + token_ids(processor, answer)
    assert PromptAnswerTokenizer(processor, spec).stop_token_ids() == sorted(token_ids(processor, stops))


def test_what_it_found_and_what_is_off_is_printed(saved, capsys):
    base = saved[0]
    load_model(ModelConfig(name=str(base), family=GENERIC), training=False, device=CPU)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("generic row for ") and "LM model.language_model (14 LoRA linears" in line
    assert "vision model.vision_tower (12)" in line and "projector model.multi_modal_projector" in line
    assert line.endswith("off: feature cache, logits_to_keep (LM head on every position), model.max_image_tokens")


def test_no_chat_template_and_a_resolution_budget_are_refused(case, saved, tmp_path):
    with pytest.raises(VlmtuneError, match="^model.max_image_tokens=64: the generic row does not know how"):
        load_model(ModelConfig(name=str(saved[0]), family=GENERIC, max_image_tokens=64), training=False, device=CPU)
    model, processor = CASES[case][0]()
    processor.chat_template = None
    ft.save(model, processor, tmp_path / "bare")
    with pytest.raises(VlmtuneError, match=f"^generic row: the {case} checkpoint's processor has no chat template"):
        load_model(ModelConfig(name=str(tmp_path / "bare"), family=GENERIC), training=False, device=CPU)


# ---------------------------------------------------------------- training and generation through it
def test_left_padded_batch_generates_what_single_prompts_do(saved):
    _, model, processor, spec = saved
    together, single = fcs.padded_equals_single(model.eval(), processor, spec)
    assert together == single and len(together) == 2


@pytest.fixture(scope="module")
def fitted(saved, tmp_path_factory):
    """Two LoRA steps (lm+vision+projector, gradient checkpointing) on the loaded base."""
    base, _, processor, spec = saved
    model = transformers.AutoModelForImageTextToText.from_pretrained(base)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    root = tmp_path_factory.mktemp("fit")
    cfg = ft.run_config(root, "train.lora.targets=lm+vision+projector", "train.gradient_checkpointing=true")
    result = fit(model, spec, torch.float32, ft.examples(processor, spec), None, cfg, str(root),
                 processor.tokenizer.pad_token_id)
    return before, result.model.eval()


def test_two_lora_steps_move_only_the_intended_parts(fitted):
    before, model = fitted
    after = {n: p.detach() for n, p in model.named_parameters()}
    moved = fcs.moved(before, after)
    assert {n for n in moved if "lora_" not in n and "modules_to_save" not in n} == set()  # frozen stays frozen
    adapters = {n for n in after if "lora_B" in n}
    assert len({n for n in adapters if ".language_model." in n}) == 14
    assert len({n for n in adapters if ".vision_tower." in n}) == 12 and len(adapters) == 26
    projector = {n for n in after if "modules_to_save" in n}
    assert projector and all(".multi_modal_projector." in n for n in projector) and projector <= moved


def test_saved_adapter_reloads_through_the_generic_row_to_identical_logits(case, saved, fitted, tmp_path):
    """A bare adapter folder has no run marker: it reloads through the type's row where there is one
    (aya_vision), else through the generic row; the logits are the same either way."""
    _, _, processor, spec = saved
    model = fitted[1]
    model.save_pretrained(tmp_path / "adapter")
    batch = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)(ft.examples(processor, spec)[:2])
    batch.pop("labels")
    reloaded, _, reloaded_spec = load_for_inference(tmp_path / "adapter", dtype="fp32", device=CPU)
    assert isinstance(reloaded, PeftModel)
    assert reloaded_spec == spec if family_for(case) is None else reloaded_spec is family_for(case)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, model(**batch).logits, rtol=0, atol=0)


def run_train(model_dir, out, *extra):
    data = tiny.caption_folder(out.parent / f"{out.name}-data", n=4, test_every=2)
    return train_run(load_config(overrides=[
        f"model.name={model_dir}", f"data.path={data}", f"output_dir={out}", "train.max_steps=2", "train.batch_size=2",
        "train.save_steps=-1", "train.bf16=false", "train.eval_each_epoch=false", "eval.max_new_tokens=3",
        "eval.before=false", f"model.family={GENERIC}", *extra]))


def test_vlmtune_train_runs_end_to_end_and_the_run_reloads_generic(saved, tmp_path):
    metrics = run_train(saved[0], tmp_path / "run")
    info = json.loads((tmp_path / "run/vlmtune_run.json").read_text())
    assert metrics["family"] == info["family"] == GENERIC and info["status"] == "done"
    assert len((tmp_path / "run/predictions/tuned.jsonl").read_text().splitlines()) == 2
    assert load_for_inference(tmp_path / "run", dtype="fp32", device=CPU)[2].name == GENERIC


def test_a_run_trained_through_the_generic_row_reloads_through_it_even_where_a_row_exists(tmp_path):
    """model.family=generic on a LLaVA: the run marker says generic, so inference does not switch to the llava row."""
    model_dir = ft.save(*ft.llava15(), tmp_path / "llava")
    run_train(model_dir, tmp_path / "run", f"model.family={GENERIC}")
    assert json.loads((tmp_path / "run/vlmtune_run.json").read_text())["family"] == GENERIC
    spec = load_for_inference(tmp_path / "run", dtype="fp32", device=CPU)[2]
    assert spec.name == GENERIC and not spec.logits_to_keep


def test_llama4_is_refused_in_one_line_and_its_reasons_hold_in_this_transformers():
    """The refusal's reasons, checked on a tiny Llama4: the routed experts have no nn.Linear for LoRA to
    wrap (if transformers splits them, revisit the row), and 5.24's forward fails (5.25 fixed that)."""
    import transformers
    from packaging.version import Version
    from transformers import Llama4Config, Llama4ForConditionalGeneration

    with pytest.raises(VlmtuneError, match=r"^model_type 'llama4' cannot be fine-tuned here: its routed experts are "):
        family_for("llama4")
    with pytest.raises(VlmtuneError, match="cannot be fine-tuned here"):
        family_for("llama4", explicit=GENERIC)
    config = Llama4Config(
        vision_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=128,
                           image_size=56, patch_size=14, vision_output_dim=32, projector_input_dim=32,
                           projector_output_dim=32),
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, intermediate_size_mlp=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                         num_local_experts=2, pad_token_id=0),
        image_token_index=5, boi_token_index=6, eoi_token_index=7)
    model = Llama4ForConditionalGeneration(config)
    experts = model.get_submodule("language_model.model.layers.0.feed_forward.experts")
    assert not any(isinstance(m, torch.nn.Linear) for m in experts.modules())
    assert experts.gate_up_proj.dim() == 3  # [experts, hidden, 2 x intermediate]: one fused tensor
    if Version(transformers.__version__) < Version("5.25"):
        with pytest.raises(AttributeError, match="image_outputs"):
            model(input_ids=torch.tensor([[1, 10, 11]]))
