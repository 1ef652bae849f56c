"""`vlmtune merge`: the merged folder reproduces base+adapter, loads with plain transformers, and is safe to write."""

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import tiny
from vlmtune.config import load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generate_answers
from vlmtune.models.loading import load_for_inference
from vlmtune.models.lora import apply_plan
from vlmtune.models.merge import MERGED_MARKER
from vlmtune.stages.merge import merge
from vlmtune.models.registry import LLAVA
from vlmtune.run_dir import RunDir, write_json

PROMPT = "describe this picture"
PICTURE = Image.new("RGB", (30, 30), (9, 99, 199))
METRICS = {"before": {"exact": 0.25, "token_f1": 0.5}, "after": {"exact": 0.75, "token_f1": 0.875},
           "train_seconds": 1.0, "test_rows": 2}
DATA = {"train": {"rows": 6, "fingerprint": "abc123"}, "test": {"rows": 2, "fingerprint": "def456"}}


def make_run(path, base_dir):
    """A finished run dir as `vlmtune train` leaves it, with a non-trivial lm+projector adapter."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    cfg = load_config(overrides=[f"output_dir={path}", f"model.name={base_dir}", "train.lora.targets=lm+projector",
                                 f"data.prompt={PROMPT}"])
    run = RunDir(path).prepare(cfg)
    model = apply_plan(AutoModelForImageTextToText.from_pretrained(base_dir), LLAVA, cfg.train.lora)
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA B starts at zero and the projector copy equals the base: move both
        for _, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(run / "adapter")
    AutoProcessor.from_pretrained(base_dir).save_pretrained(run / "adapter")
    write_json(run / "data.json", DATA)
    write_json(run / "metrics.json", METRICS)
    run.mark(cfg, status="done", weights="adapter", family="llava")
    return path


@pytest.fixture(scope="module")
def merged(tmp_path_factory, tiny_model_dir):
    """(run dir, merged dir): merged once for the module, the slow part."""
    root = tmp_path_factory.mktemp("merge")
    run = make_run(root / "run", tiny_model_dir)
    return run, merge(run, root / "merged")


def batch(processor):
    ex = PromptAnswerTokenizer(processor, LLAVA, 64).encode(PICTURE, PROMPT, "a white rook")
    out = Collator(tiny.VOCAB["<pad>"])([ex])
    out.pop("labels")
    return out


def test_merged_logits_equal_base_plus_adapter(merged, tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    run, out = merged
    adapted, processor, _ = load_for_inference(run)
    plain = AutoModelForImageTextToText.from_pretrained(out).eval()
    inputs = batch(processor)
    with torch.no_grad():
        want = adapted(**inputs).logits
        got = plain(**inputs).logits
        base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)(**inputs).logits
    # fp32 rounding: W x + B(A x) and (W + BA) x differ by ~2e-5 on logits up to ~11 here; the adapter moves them by ~10
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (base - want).abs().max() > 0.1  # the adapter really changes the output


def test_trained_projector_is_in_the_merged_weights_and_no_adapter_keys_remain(merged, tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    run, out = merged
    adapter = load_file(run / "adapter/adapter_model.safetensors")
    weights = AutoModelForImageTextToText.from_pretrained(out).state_dict()
    base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir).state_dict()
    trained = {k.removeprefix("base_model.model."): v for k, v in adapter.items() if "multi_modal_projector" in k}
    assert sorted(trained) == [f"model.multi_modal_projector.linear_{i}.{p}" for i in (1, 2) for p in ("bias", "weight")]
    for name, value in trained.items():
        assert torch.equal(weights[name], value) and not torch.equal(base[name], value), name
    saved = load_file(out / "model.safetensors")
    assert len(saved) == len(load_file(tiny_model_dir / "model.safetensors"))
    assert [k for k in saved if "lora" in k or "modules_to_save" in k or "base_layer" in k] == []


def test_plain_pipeline_generates_what_base_plus_adapter_generates(merged):
    from transformers import pipeline

    run, out = merged
    model, processor, spec = load_for_inference(run)
    cfg = load_config(overrides=["eval.max_new_tokens=6"]).eval
    want = generate_answers(model, processor, spec, [PICTURE], [PROMPT], cfg)[0]
    assert len(want.split()) >= 2  # a real answer, not an immediate stop
    pipe = pipeline("image-text-to-text", model=str(out))
    messages = [{"role": "user", "content": [{"type": "image", "image": PICTURE}, {"type": "text", "text": PROMPT}]}]
    got = pipe(text=messages, max_new_tokens=6, return_full_text=False)[0]["generated_text"]
    assert got.strip() == want


def test_marker_model_card_and_processor(merged, tiny_model_dir):
    run, out = merged
    info = json.loads((out / MERGED_MARKER).read_text())
    assert (info["source"], info["source_kind"], info["base_model"], info["family"], info["dtype"]) == (
        str(run.resolve()), "run", str(tiny_model_dir), "llava", "fp32")
    assert info["lora"]["modules_to_save"] == ["model.multi_modal_projector"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\npipeline_tag: image-text-to-text\n")
    assert "base_model:" not in card  # a local path is not a hub id
    assert "| exact match | 0.250 | 0.750 | +0.500 |" in card
    assert "| token F1 | 0.500 | 0.875 | +0.375 |" in card
    assert "| train | 6 | `abc123` |" in card and "| test | 2 | `def456` |" in card
    assert 'Training prompt: "describe this picture"\n' in card
    assert '{"type": "text", "text": "describe this picture"}' in card
    assert 'pipeline("image-text-to-text", model="merged")' in card
    assert "r: 16" in card  # the run's config.yaml, embedded
    template = (out / "chat_template.jinja").read_text()
    assert template == (tiny_model_dir / "chat_template.jinja").read_text()
    config = json.loads((out / "generation_config.json").read_text())
    assert config["eos_token_id"] == [tiny.VOCAB["<|im_end|>"]]  # stops where vlmtune's generation stops


def test_keeps_a_bf16_base_in_bf16(tmp_path, merged, tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run, _ = merged
    base = tmp_path / "bf16-base"
    AutoModelForImageTextToText.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(base)
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(base)
    out = merge(run, tmp_path / "out", base=str(base))
    assert {v.dtype for v in load_file(out / "model.safetensors").values()} == {torch.bfloat16}
    assert json.loads((out / MERGED_MARKER).read_text())["dtype"] == "bf16"


def test_refuses_a_quantized_base(tmp_path, merged, tiny_model_dir):
    run, _ = merged
    quantized = tmp_path / "nf4"
    quantized.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized / "config.json").write_text(json.dumps(config))
    with pytest.raises(VlmtuneError, match=r"is stored 4-bit: .*pass --base with the unquantized checkpoint"):
        merge(run, tmp_path / "out", base=str(quantized))
    assert not (tmp_path / "out").exists()


def test_never_writes_over_a_users_folder(tmp_path, merged):
    run, _ = merged
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(VlmtuneError, match="folder is not empty"):
        merge(run, mine)
    with pytest.raises(VlmtuneError, match="not written by 'vlmtune merge'"):
        merge(run, mine, overwrite=True)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_overwrite_replaces_an_earlier_merge_and_an_empty_folder_is_used(tmp_path, merged):
    run, _ = merged
    out = tmp_path / "out"
    out.mkdir()
    merge(run, out)  # empty folder: fine
    (out / "stale.txt").write_text("from before")
    with pytest.raises(VlmtuneError, match="folder is not empty"):
        merge(run, out)
    merge(run, out, overwrite=True)
    assert not (out / "stale.txt").exists() and (out / MERGED_MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder left beside it


def test_nothing_to_merge_in_a_model_folder(tiny_model_dir, tmp_path):
    with pytest.raises(VlmtuneError, match="neither a vlmtune run .* nor a PEFT adapter"):
        merge(tiny_model_dir, tmp_path / "out")


def test_push_to_hub_fails_fast_offline_without_token_or_network(tmp_path, merged, monkeypatch):
    from vlmtune.stages import merge as stage

    run, _ = merged
    out = tmp_path / "out"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(VlmtuneError, match="^--push-to-hub me/tiny: HF_HUB_OFFLINE is set"):
        stage.run_merge(run, out, push_to_hub="me/tiny")
    monkeypatch.setattr(stage, "hub_offline", lambda: False)
    monkeypatch.setattr(stage, "hub_token", lambda: None)
    with pytest.raises(VlmtuneError, match="^--push-to-hub me/tiny: no Hugging Face token; run 'hf auth login'"):
        stage.run_merge(run, out, push_to_hub="me/tiny")
    monkeypatch.setattr(stage, "hub_token", lambda: "hf_not_a_token")
    monkeypatch.setattr(stage, "hub_endpoint", lambda: "http://127.0.0.1:9")  # loopback discard port: refused
    with pytest.raises(VlmtuneError, match="^--push-to-hub me/tiny: cannot reach 127.0.0.1"):
        stage.run_merge(run, out, push_to_hub="me/tiny")
    assert not out.exists()  # checked before merging
