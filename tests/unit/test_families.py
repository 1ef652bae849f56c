"""The checks every registry row must pass, on its tiny random model (one ``Case`` per row, tests/family_cases.py).

Family quirks (M-RoPE positions, cross-attention masks, the PaliGemma prefix, tiles, token types)
stay in tests/unit/test_family_<name>.py. Run one row with ``-k <row>``.
"""

import json
import re

import pytest
import torch
from safetensors.torch import load_file

import family_cases as fcs
from family_cases import ANSWER, CASES, PROMPT, token_ids
from vlmtune.config import ModelConfig, load_config
from vlmtune.errors import VlmtuneError
from vlmtune.models.loading import load_for_inference, load_model
from vlmtune.models.prompting import IGNORE, PromptAnswerTokenizer
from vlmtune.models.lora import plan_for
from vlmtune.models.registry import REGISTRY, family_for, matching_modules
from vlmtune.training.collate import Collator
from vlmtune.training.features import FEATURES, compute_features
from vlmtune.training.trainer import answer_loss

CPU = torch.device("cpu")  # fp32 and the same device as the test batches, also where a GPU is present


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def case(request):
    return request.param


@pytest.fixture(scope="module")
def built(case):
    return case.build()


@pytest.fixture(scope="module")
def fitted(case, tmp_path_factory):
    """Two LoRA steps of case.fit_targets with gradient checkpointing, shared by the checks below."""
    return fcs.two_lora_steps(case, tmp_path_factory.mktemp(case.name))


def test_every_row_has_one_case():
    assert sorted(c.name for c in CASES) == sorted(REGISTRY)


def test_row_is_chosen_by_model_type(case, built):
    assert family_for(built[0].config.model_type) is case.spec


def test_labels_hand_spelled(case, built):
    _, processor = built
    ex = PromptAnswerTokenizer(processor, case.spec, 256).encode(case.picture(), PROMPT, ANSWER)
    assert ex["input_ids"] == token_ids(processor, case.prompt + case.answer)
    assert ex["labels"] == [IGNORE] * len(case.prompt) + token_ids(processor, case.answer)
    assert ex["truncated"] is False


def test_stop_tokens_hand_spelled(case, built):
    _, processor = built
    assert PromptAnswerTokenizer(processor, case.spec).stop_token_ids() == sorted(token_ids(processor, case.stops))


def test_max_length_cutting_image_tokens_or_the_answer_is_refused(case, built):
    _, processor = built
    least = len(case.prompt) + len(case.answer)

    def encode(max_length: int, where: str = "sample"):
        return PromptAnswerTokenizer(processor, case.spec, max_length).encode(case.picture(), PROMPT, ANSWER, where=where)

    with pytest.raises(VlmtuneError, match=f"^train row 3: .* would cut image tokens; raise data.max_length to at least {least}"):
        encode(len(case.prompt) - 1, "train row 3")
    with pytest.raises(VlmtuneError, match=f"^train row 4: .* the answer would be cut; raise data.max_length to at least {least} "):
        encode(len(case.prompt) + 2, "train row 4")
    fits = encode(least)
    assert fits["labels"] == [IGNORE] * len(case.prompt) + token_ids(processor, case.answer)
    for key in case.spec.seq_keys:  # masks and token types cover exactly the kept sequence
        if key in fits:
            assert fits[key].shape[1] == least, key


def test_saved_checkpoint_loads_through_the_row_with_the_same_prompt(case, built, tmp_path):
    model, processor = built
    fcs.ft.save(model, processor, tmp_path)
    assert json.loads((tmp_path / "processor_config.json").read_text())["processor_class"] == case.processor_class
    _, loaded, spec, _ = load_model(ModelConfig(name=str(tmp_path)), training=True, device=CPU)
    # the checkpoint's own template, else the row's fallback
    assert spec is case.spec and loaded.chat_template == (processor.chat_template or spec.fallback_template(model.config, processor.tokenizer))
    ex = PromptAnswerTokenizer(loaded, spec, 256).encode(case.picture(), PROMPT, ANSWER)
    assert ex["input_ids"] == token_ids(processor, case.prompt + case.answer)


def test_collated_batch_pads_and_gives_each_sample_its_own_logits(case, built):
    model, processor = built
    examples = fcs.ft.examples(processor, case.spec)[::2]  # different picture sizes and answer lengths
    batch = fcs.collate(processor, case.spec, examples)
    longest = batch["input_ids"].shape[1]
    for row, ex in enumerate(examples):
        pad = longest - len(ex["input_ids"])
        assert batch["labels"][row].tolist() == ex["labels"] + [IGNORE] * pad
        assert batch["attention_mask"][row].tolist() == [1] * len(ex["input_ids"]) + [0] * pad
    assert len(examples[0]["input_ids"]) != len(examples[1]["input_ids"])
    single = [fcs.answer_logits(model, fcs.collate(processor, case.spec, [ex]))[0] for ex in examples]
    for got, want in zip(fcs.answer_logits(model, batch), single):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_logits_to_keep_gives_the_full_forwards_logits_at_the_kept_positions(case, built):
    """Rows with logits_to_keep=True must have a forward that takes a boolean [batch, seq] mask (training's
    LM head runs on answer positions only); the others are trained with logits sliced after the head."""
    model, processor = built
    if not case.spec.logits_to_keep:
        pytest.skip(f"{case.name}: logits_to_keep=False (training slices after the LM head)")
    batch = fcs.collate(processor, case.spec, fcs.ft.examples(processor, case.spec)[::2])
    keep = torch.nn.functional.pad(batch["labels"][:, 1:] != IGNORE, (0, 1), value=False)
    with torch.no_grad():
        full = model(**fcs.inputs_of(batch)).logits
        kept = model(**fcs.inputs_of(batch), logits_to_keep=keep).logits
    assert kept.shape == (int(keep.sum()), full.shape[-1])
    torch.testing.assert_close(kept, full[keep], rtol=1e-4, atol=1e-5)


def test_left_padded_batch_generates_what_single_prompts_do(case, built):
    together, single = fcs.padded_equals_single(*built, case.spec)
    assert together == single and len(together) == 2


def test_training_forward_sees_the_answer_as_generation_did(case, built):
    generation, training = fcs.training_view_of_generation(case, *built)
    torch.testing.assert_close(training, generation, rtol=1e-4, atol=1e-4)


def test_two_lora_steps_move_only_the_intended_parts(case, fitted):
    spec, before, after = case.spec, fitted["before"], fitted["after"]
    assert fitted["model"].get_base_model().is_gradient_checkpointing
    moved = fcs.moved(before, after)
    # Frozen weights stay put; only bare parameters the row trains whole (image_newline) may move.
    extra = spec.extra_trainable if "projector" in case.fit_targets else ()
    assert {n for n in moved if "lora_" not in n and "modules_to_save" not in n} == {f"base_model.model.{p}" for p in extra}
    adapters = {n for n in after if "lora_B" in n}
    lm, vision = fcs.under(adapters, spec.lm_prefix), fcs.under(adapters, spec.vision_prefix)
    assert (len(lm), len(vision)) == (case.lm_adapters, case.vision_adapters if "vision" in case.fit_targets else 0)
    assert adapters == lm | vision  # none in the projector, patch embeddings, LM head...
    idle = {n for n in adapters if re.fullmatch(case.idle_adapters, fcs.original_name(n))}
    assert adapters & moved == adapters - idle  # every other adapter got a gradient
    whole = {n for n in after if "modules_to_save" in n}
    assert whole <= moved  # every parameter trained whole moved, bare ones inside a module included
    params = {n for n, _ in fitted["model"].get_base_model().named_parameters()}
    projector = {fcs.original_name(n) for n in whole}
    assert projector == {n for n in map(fcs.original_name, params) if n.startswith(tuple(f"{p}." for p in spec.projector_modules))}


def test_saved_adapter_reloads_to_identical_logits(case, fitted, tmp_path):
    want, got, base = fcs.adapter_round_trip(fitted, case.spec, tmp_path / "adapter")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(base, want)
    saved = {k.removeprefix("base_model.model.") for k in load_file(tmp_path / "adapter" / "adapter_model.safetensors")}
    # the adapter file holds every parameter trained whole (bare ones such as Gemma 3's projection matrix too)
    whole = {fcs.original_name(n) for n in fitted["after"] if "modules_to_save" in n}
    assert whole and {k for k in saved if k.startswith(tuple(f"{p}." for p in case.spec.projector_modules))} == whole


def test_vlmtune_train_runs_end_to_end(case, tmp_path):
    metrics, run = fcs.train_run_on(case, tmp_path)
    info = json.loads((run / "vlmtune_run.json").read_text())
    assert metrics["family"] == info["family"] == case.name and info["status"] == "done"
    assert (run / "adapter/adapter_model.safetensors").is_file()
    assert len((run / "predictions/tuned.jsonl").read_text().splitlines()) == 1  # the test row
    assert load_for_inference(run, dtype="fp32", device=CPU)[2] is case.spec


# ---------------------------------------------------------------- published checkpoints, on the meta device
REAL = [(c, r) for c in CASES for r in c.real]


@pytest.mark.parametrize("case,real", REAL, ids=[r.folder for _, r in REAL])
def test_real_checkpoint_has_its_published_size_and_exact_lora_targets(case, real):
    config, model = fcs.meta_model(real.folder)
    spec = case.spec
    assert family_for(config.model_type) is spec
    assert sum(p.numel() for p in model.parameters()) == real.params
    plan = plan_for(spec, load_config(overrides=["train.lora.targets=lm+vision+projector"]).train.lora)
    assert plan.whole == spec.projector_modules + spec.extra_trainable
    whole = tuple(f"{p}." for p in plan.whole)
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and not n.startswith(whole)}
    lm = {n for n in linears if re.match(rf"{spec.lm_prefix}\.", n)}
    vision = {n for n in linears if re.match(rf"{spec.vision_prefix}\.", n)}
    assert (len(lm), len(vision)) == (real.lm, real.vision)
    # LoRA hits every linear of the LM and the vision part and nothing else (not the projector, not lm_head)
    assert set(matching_modules(model, plan.lora_pattern)) == lm | vision
    modules, parameters = dict(model.named_modules()), dict(model.named_parameters())
    assert all(path in modules or path in parameters for path in plan.whole)  # what trains whole exists



@pytest.mark.parametrize("case", [c for c in CASES if c.spec.feature_cache], ids=lambda c: c.name)
def test_cached_vision_features_give_the_pixels_loss(case):
    """Rows with feature_cache=True: features computed once (projector input captured) and projected at
    train time give the loss the pixels give, for a batch of pictures of different sizes."""
    model, processor = case.build()
    exs = fcs.ft.examples(processor, case.spec)
    collate = Collator(processor.tokenizer.pad_token_id, case.spec.seq_keys)
    pixels = collate([dict(e) for e in exs])
    cached_exs = compute_features(model, case.spec, [dict(e) for e in exs], batch_size=3)
    cached = collate(cached_exs)
    assert FEATURES in cached and "pixel_values" not in cached
    with torch.no_grad():
        want, _ = answer_loss(model.eval(), case.spec, pixels)
        got, _ = answer_loss(model, case.spec, cached)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
