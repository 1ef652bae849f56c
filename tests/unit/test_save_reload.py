"""Saving the adapter and loading it again reproduces the fine-tuned logits exactly."""

import torch
from PIL import Image

import tiny
from vlmtune.config import load_config
from vlmtune.training.collate import Collator
from vlmtune.models.prompting import PromptAnswerTokenizer
from vlmtune.models.lora import apply_plan
from vlmtune.models.loading import load_for_inference
from vlmtune.models.registry import LLAVA


def test_adapter_round_trip_gives_identical_logits(tmp_path, tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    peft_model = apply_plan(model, LLAVA, load_config(overrides=["train.lora.targets=lm+projector"]).train.lora)
    torch.manual_seed(1)
    with torch.no_grad():  # make the adapter non-trivial (LoRA B starts at zero)
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(tmp_path / "adapter")
    ex = PromptAnswerTokenizer(processor, LLAVA, 64).encode(Image.new("RGB", (30, 30), (9, 99, 199)), "Describe.", "a white rook")
    batch = Collator(tiny.VOCAB["<pad>"])([ex])
    batch.pop("labels")
    reloaded, _, spec = load_for_inference(tmp_path / "adapter")
    assert spec.name == "llava"
    with torch.no_grad():
        want = peft_model.eval()(**batch).logits
        got = reloaded(**batch).logits
        base = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)(**batch).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(base, want)  # the adapter really changes the output
