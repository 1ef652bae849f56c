"""One entry per registry row, and the checks that tests/unit/test_families.py runs on every entry.

An entry says, by hand, what the row must produce on its tiny random model (tests/families_tiny*.py):
the token layout of "Describe this picture." + "a white rook" for one picture, the stop tokens,
the processor class a saved run names, and how many LoRA adapters each part gets. Everything
else (which tests, how they check) is shared. Adding a family = a builder + one ``Case`` here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import families_tiny as ft
import families_tiny_b as fb
import families_tiny_c as fc
import families_tiny_d as fd
import families_tiny_e as fe

PROMPT, ANSWER = "Describe this picture.", "a white rook"
FIT_TARGETS = "lm+vision+projector"


@dataclass(frozen=True)
class RealShape:
    """A published checkpoint's config (tests/data/model-configs/<folder>, source in its SOURCES.md)."""

    folder: str
    params: int  # parameters built on the meta device: the published size
    lm: int  # LoRA targets under spec.lm_prefix (every nn.Linear there, the projector's aside)
    vision: int  # ... under spec.vision_prefix


@dataclass(frozen=True)
class Case:
    name: str  # the registry row
    build: Callable[..., tuple]  # (seed=0) -> (model, processor), the processor as the row loads it
    size: tuple[int, int]  # the picture the hand-spelled layout is for (width, height)
    prompt: tuple[str, ...]  # tokens of PROMPT with that picture, image tokens expanded
    answer: tuple[str, ...]  # tokens of ANSWER with its end of turn
    stops: tuple[str, ...]  # tokens that end generation
    processor_class: str  # what a saved processor_config.json names (the stock class)
    lm_adapters: int  # LoRA matrices (B) under spec.lm_prefix after two steps of FIT_TARGETS
    vision_adapters: int  # ... under spec.vision_prefix
    idle_adapters: str = r"$^"  # regex of adapters that get no gradient by design (unused vision layers)
    fit_targets: str = FIT_TARGETS
    e2e_overrides: tuple[str, ...] = ()  # extra `vlmtune train` overrides for the end-to-end run
    suppress: tuple[str, ...] = ()  # tokens generation must not produce in the re-encoding check
    real: tuple[RealShape, ...] = ()  # real module trees: published size and exact LoRA target counts

    @property
    def spec(self):
        from vlmtune.models.registry import REGISTRY

        return REGISTRY[self.name]

    def picture(self, colour=(200, 30, 30)):
        from PIL import Image

        return Image.new("RGB", self.size, colour)


# ---------------------------------------------------------------- hand-spelled layouts
IMG = "<image>"
FAKE = "<fake_token_around_image>"
# LLaVA-1.5 at 56x56: one 28 px view, 2x2 patches, CLS dropped ("default") = 4 tokens.
LLAVA15 = ("<s>", "user", ":", *[IMG] * 4, "\n", "describe", "this", "picture", ".", "assistant", ":")
# LLaVA-NeXT (Mistral) picks the 2x2 grid: base view 4 + tiles 4x4 + one image_newline per row (4) = 24.
LLAVA_NEXT = ("<s>", "[INST]", *[IMG] * 24, "\n", "describe", "this", "picture", ".", "[/INST]")
# LLaVA-OneVision: the same 2x2 grid (strategy "full": 4 tokens a view), "<|im_start|>user <image>\n...".
ONEVISION = ("<|im_start|>", "user", *[IMG] * 24, "\n", "describe", "this", "picture", ".", "<|im_end|>",
             "<|im_start|>", "assistant", "\n")
# Qwen-VL at 56x56: 4x4 patches of 14 px merged 2x2 -> 4 tokens; the stock system turn, ChatML.
QWEN = ("<|im_start|>", "system", "\n", "you", "are", "a", "helpful", "assistant", ".", "<|im_end|>", "\n",
        "<|im_start|>", "user", "\n", "<|vision_start|>", *["<|image_pad|>"] * 4, "<|vision_end|>",
        "describe", "this", "picture", ".", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n")
# Qwen3-VL: the same picture, no default system turn.
QWEN3 = ("<|im_start|>", "user", "\n", "<|vision_start|>", *["<|image_pad|>"] * 4, "<|vision_end|>",
         "describe", "this", "picture", ".", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n")
# PaliGemma: <image> x 4 + bos + prompt + "\n" (the processor's prefix layout, no template).
PALIGEMMA = (*[IMG] * ft.PALIGEMMA_IMAGE_TOKENS, "<bos>", "describe", "this", "picture", ".", "\n")
# Gemma 3: one <bos> (the template's), <start_of_image> expanded to "\n\n" boi soft x 4 eoi "\n\n".
GEMMA3 = ("<bos>", "<start_of_turn>", "user", "\n", "\n", "\n", "<start_of_image>",
          *["<image_soft_token>"] * fc.GEMMA3_IMAGE_TOKENS, "<end_of_image>", "\n", "\n", "describe", "this",
          "picture", ".", "<end_of_turn>", "\n", "<start_of_turn>", "model", "\n")
EOU_TEXT = ("describe", "this", "picture", ".", "<end_of_utterance>", "assistant", ":")
IDEFICS = ("<s>", FAKE, IMG, FAKE, "user", ":", *EOU_TEXT[:5], "assistant", ":")
IDEFICS2 = ("<s>", "user", ":", *([FAKE, *[IMG] * 4] * 5), FAKE, *EOU_TEXT)  # 4 crops + whole, 4 latents each


# Aya Vision at 40x30: one 28 px tile (max_patches=1) of 14 px patches, 2x2 pixel-shuffled, between the
# image markers; the template writes BOS (add_special_tokens=False keeps it to one), Cohere turn tokens.
AYA = ("<BOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|USER_TOKEN|>", "<|START_OF_IMG|>", "TILE_GLOBAL",
       *["<|IMG_PATCH|>"] * fd.AYA_TOKENS, "<|END_OF_IMG|>", "describe", "this", "picture", ".",
       "<|END_OF_TURN_TOKEN|>", "<|START_OF_TURN_TOKEN|>", "<|CHATBOT_TOKEN|>")


def idefics3_layout(bos: str) -> tuple[str, ...]:
    """60x30 -> 64x32: one row of two 32 px tiles + the whole picture, 4 tokens each."""
    tiles = [FAKE, "<row_1_col_1>", *[IMG] * 4, FAKE, "<row_1_col_2>", *[IMG] * 4]
    return (bos, "user", ":", *tiles, FAKE, "<global-img>", *[IMG] * 4, FAKE, *EOU_TEXT)


# InternVL at 56x56: one 56 px tile (a square picture is not split), 4 tokens between <img> and </img>.
INTERNVL = ("<|im_start|>", "user", "\n", "<img>", *["<IMG_CONTEXT>"] * fe.INTERNVL_TILE_TOKENS, "</img>", "\n",
            "describe", "this", "picture", ".", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n")
MLLAMA = ("<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>", "<|image|>", "describe", "this",
          "picture", ".", "<|eot_id|>", "<|start_header_id|>", "assistant", "<|end_header_id|>")


# Mistral 3 at 40x30: sides rounded up to 28 px steps -> 2x2 [IMG], a break per row, the last one [IMG_END].
MISTRAL3 = ("<s>", "[INST]", "[IMG]", "[IMG]", "[IMG_BREAK]", "[IMG]", "[IMG]", "[IMG_END]", "describe", "this",
            "picture", ".", "[/INST]")


# LFM2-VL at 40x30: one 32x32 view of 16 px tokens (2x2), between <|image_start|> and <|image_end|>; ChatML.
LFM2_VL = ("<|startoftext|>", "<|im_start|>", "user", "\n", "<|image_start|>", *["<image>"] * 4, "<|image_end|>",
           "describe", "this", "picture", ".", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n")


def rook(end: str) -> tuple[str, ...]:
    return ("a", "white", "rook", end)


# vision_feature_layer=-2 reads the output of vision layer 0 of the two: layer 1 gets no gradient.
LLAVA_IDLE = r".*vision_tower\..*layers\.1\..*"
# 2 LM layers x 7 linears; CLIP/SigLIP 2 layers x 6 (q/k/v/out_proj, fc1, fc2).
CASES = [
    Case("llava", ft.llava15, (56, 56), LLAVA15, rook("</s>"), ("</s>",), "LlavaProcessor", 14, 12, LLAVA_IDLE),
    Case("llava_next", ft.llava_next, (56, 56), LLAVA_NEXT, rook("</s>"), ("</s>",), "LlavaNextProcessor", 14, 12,
         LLAVA_IDLE),
    Case("llava_onevision", fe.llava_onevision, (56, 56), ONEVISION, rook("<|im_end|>"), ("<|im_end|>", "<|endoftext|>"),
         "LlavaOnevisionProcessor", 14, 12,
         real=(RealShape("llava-hf__llava-onevision-qwen2-7b-ov-hf", 8_030_807_584, 28 * 7, 26 * 6),)),  # "8.03B"
    Case("qwen2_vl", ft.qwen_vl, (56, 56), QWEN, rook("<|im_end|>"), ("<|im_end|>", "<|endoftext|>"),
         "Qwen2VLProcessor", 14, 2 * 4),  # qkv, proj, fc1, fc2
    Case("qwen2_5_vl", lambda seed=0: ft.qwen_vl("2.5", seed), (56, 56), QWEN, rook("<|im_end|>"),
         ("<|im_end|>", "<|endoftext|>"), "Qwen2_5_VLProcessor", 14, 2 * 5),  # qkv, proj, gate/up/down
    Case("qwen3_vl", fe.qwen3_vl, (56, 56), QWEN3, rook("<|im_end|>"), ("<|im_end|>", "<|endoftext|>"),
         "Qwen3VLProcessor", 14, 2 * 4,  # qkv, proj, linear_fc1, linear_fc2
         real=(RealShape("Qwen__Qwen3-VL-4B-Instruct", 4_437_815_808, 36 * 7, 24 * 4),  # "4.44B", tied head
               RealShape("Qwen__Qwen3-VL-8B-Instruct", 8_767_123_696, 36 * 7, 27 * 4))),  # "8.77B"
    Case("paligemma", ft.paligemma, (40, 30), PALIGEMMA, rook("<eos>"), ("<eos>",), "PaliGemmaProcessor", 14, 12),
    Case("gemma3", fc.gemma3, (40, 30), GEMMA3, rook("<end_of_turn>"), ("<end_of_turn>", "<eos>"), "Gemma3Processor",
         14, 12, real=(RealShape("google__gemma-3-4b-it", 4_300_079_472, 34 * 7, 27 * 6),)),  # "4.3B", tied head
    # IDEFICS: the gated cross-attention layers train whole with the projector, so no LoRA inside them.
    Case("idefics", fb.idefics, (40, 30), IDEFICS, rook("<end_of_utterance>"), ("<end_of_utterance>", "</s>"),
         "IdeficsProcessor", 14, 12),
    Case("idefics2", fb.idefics2, (40, 30), IDEFICS2, rook("<end_of_utterance>"), ("<end_of_utterance>", "</s>"),
         "Idefics2Processor", 14, 12),
    Case("idefics3", fb.idefics3, (60, 30), idefics3_layout("<|begin_of_text|>"), rook("<end_of_utterance>"),
         ("<end_of_utterance>", "<|end_of_text|>"), "Idefics3Processor", 14, 12),
    Case("smolvlm", fb.smolvlm, (60, 30), idefics3_layout("<|im_start|>"), rook("<end_of_utterance>"),
         ("<end_of_utterance>", "<|im_end|>"), "SmolVLMProcessor", 14, 12),
    # 2 self-attention + 1 cross-attention layers x 7; 2 local + 1 global vision layers x 6.
    Case("mllama", fb.mllama, (40, 30), MLLAMA, rook("<|eot_id|>"), ("<|eot_id|>", "<|end_of_text|>"),
         "MllamaProcessor", 21, 18),
    # InternViT: q/k/v_proj, projection_layer, fc1, fc2.
    Case("internvl", fe.internvl, (56, 56), INTERNVL, rook("<|im_end|>"), ("<|im_end|>", "<|endoftext|>"),
         "InternVLProcessor", 14, 12,
         real=(RealShape("OpenGVLab__InternVL3-1B-hf", 938_193_024, 24 * 7, 24 * 6),)),  # "938M", untied head
    # Pixtral names its attention and SwiGLU projections like the LM: 2 layers x 7 each.
    Case("mistral3", fd.mistral3, (40, 30), MISTRAL3, rook("</s>"), ("</s>",), "PixtralProcessor", 14, 14),
    # One short-convolution layer (in_proj, out_proj, w1-3) + one attention layer (q/k/v/out_proj, w1-3); SigLIP2 2 x 6.
    # Cohere2 2 x 7; SigLIP 2 x 6; the feature cache hands the model one [views, tokens, dim] tensor.
    Case("aya_vision", fd.aya_vision, (40, 30), AYA, rook("<|END_OF_TURN_TOKEN|>"),
         ("<|END_OF_TURN_TOKEN|>", "<EOS_TOKEN>"), "AyaVisionProcessor", 14, 12),
    Case("lfm2_vl", fd.lfm2_vl, (40, 30), LFM2_VL, rook("<|im_end|>"), ("<|im_end|>",), "Lfm2VlProcessor", 5 + 7, 12),
]


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


# ---------------------------------------------------------------- shared checks
def token_ids(processor, tokens) -> list[int]:
    return processor.tokenizer.convert_tokens_to_ids(list(tokens))


def original_name(peft_name: str) -> str:
    """Parameter name in the unwrapped model."""
    name = peft_name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(wrapper, "")
    return name


def collate(processor, spec, examples: list[dict]) -> dict:
    from vlmtune.training.collate import Collator

    return Collator(processor.tokenizer.pad_token_id, spec.seq_keys)(examples)


def inputs_of(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k != "labels"}


def answer_logits(model, batch: dict) -> list[torch.Tensor]:
    """Logits at each sample's supervised positions (what the loss sees)."""
    with torch.no_grad():
        logits = model(**inputs_of(batch)).logits
    keep = torch.nn.functional.pad(batch["labels"][:, 1:] != -100, (0, 1), value=False)
    return [logits[i][keep[i]] for i in range(len(logits))]


def next_token_logits(model, inputs: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits[:, -1]


def two_lora_steps(case: Case, root: Path) -> dict:
    """Save the tiny base under ``root``, load it back (so the adapter names its base) and run two
    optimizer steps of ``fit`` with gradient checkpointing: {base_dir, processor, before, after, model}."""
    import transformers

    from vlmtune.training.fit import fit

    spec = case.spec
    base_dir = ft.save(*case.build(), root / "base")
    model = getattr(transformers, spec.model_class).from_pretrained(base_dir)
    processor = case.build()[1]
    cfg = ft.run_config(root / "fit", f"train.lora.targets={case.fit_targets}", "train.gradient_checkpointing=true",
                        "train.batch_size=2")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    examples = ft.examples(processor, spec)[::2]  # two picture sizes (tile / patch counts), two answer lengths
    result = fit(model, spec, torch.float32, examples, None, cfg, str(root / "fit"), processor.tokenizer.pad_token_id)
    after = {n: p.detach() for n, p in result.model.named_parameters()}
    return dict(base_dir=base_dir, processor=processor, before=before, after=after, model=result.model.eval())


def moved(before: dict, after: dict) -> set[str]:
    """PEFT names of parameters that left their starting value (LoRA A starts random: not counted)."""
    out = set()
    for name, value in after.items():
        if "lora_B" in name:  # starts at zero
            changed = bool(value.abs().sum() > 0)
        else:
            changed = "lora_A" not in name and not torch.equal(value, before[original_name(name)])
        if changed:
            out.add(name)
    return out


def under(names, prefix: str) -> set[str]:
    """The names whose unwrapped form sits under the module-path regex ``prefix``."""
    return {n for n in names if re.match(rf"{prefix}\.", original_name(n))}


def padded_equals_single(model, processor, spec) -> tuple[list[str], list[str]]:
    """Greedy answers for two pictures as one left-padded batch, and one at a time; the next-token
    logits of the batch match the single prompts' too."""
    from vlmtune.config import EvalConfig
    from vlmtune.evaluation.generate import generate_answers
    from vlmtune.models.prompting import PromptAnswerTokenizer

    imgs, prompts = ft.pictures(2)[::-1], [PROMPT, "What?"]
    encoder = PromptAnswerTokenizer(processor, spec)
    batch = encoder.encode_prompts(imgs, prompts)
    assert (batch["attention_mask"][:, 0] == 0).any() and batch["attention_mask"][:, -1].tolist() == [1, 1]  # left-padded
    alone = torch.cat([next_token_logits(model, encoder.encode_prompts([i], [p])) for i, p in zip(imgs, prompts)])
    torch.testing.assert_close(next_token_logits(model, batch), alone, rtol=1e-4, atol=1e-4)
    together = generate_answers(model, processor, spec, imgs, prompts, EvalConfig(max_new_tokens=3, batch_size=2),
                                desc="gen")
    single = [generate_answers(model, processor, spec, [i], [p], EvalConfig(max_new_tokens=3, batch_size=1),
                               desc="gen")[0] for i, p in zip(imgs, prompts)]
    return together, single


def adapter_round_trip(fitted: dict, spec, out: Path):
    """(logits of the trained adapter in memory, after save + load_for_inference, of the base)."""
    import transformers

    from vlmtune.models.loading import load_for_inference

    fitted["model"].save_pretrained(out)
    processor = fitted["processor"]
    batch = inputs_of(collate(processor, spec, ft.examples(processor, spec)[:2]))
    reloaded, _, reloaded_spec = load_for_inference(out, dtype="fp32", device=torch.device("cpu"))
    assert reloaded_spec is spec
    base = getattr(transformers, spec.model_class).from_pretrained(fitted["base_dir"]).eval()
    # Frozen like the reloaded model. Seen on LLaVA-OneVision's projector (CPU torch 2.13): the same weights
    # gave outputs ~1e-5 apart, under no_grad, until both copies had the same requires_grad.
    trainable = [p for p in fitted["model"].parameters() if p.requires_grad]
    try:
        for p in trainable:
            p.requires_grad_(False)
        with torch.no_grad():
            return fitted["model"](**batch).logits, reloaded(**batch).logits, base(**batch).logits
    finally:
        for p in trainable:
            p.requires_grad_(True)


def training_view_of_generation(case: Case, model, processor, steps: int = 4):
    """(logits greedy generation saw, logits of the training forward over prompt + generated answer).

    The training encoding of an answer must show the model what generation showed it: the same
    prompt ids and, for cross-attention families, the same picture mask over the answer. Added
    tokens (image tokens, role markers) and EOS are kept out of the answer so it has all its steps
    and re-tokenizes to the same ids.
    """
    from vlmtune.models.prompting import PromptAnswerTokenizer

    encoder, tok = PromptAnswerTokenizer(processor, case.spec, 512), processor.tokenizer
    inputs = encoder.encode_prompts([case.picture()], [PROMPT])
    bad = sorted({tok.unk_token_id, tok.eos_token_id, *tok.get_added_vocab().values(), *token_ids(processor, case.suppress)})
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, suppress_tokens=bad,
                             output_logits=True, return_dict_in_generate=True)
    generated = out.sequences[0, inputs["input_ids"].shape[1]:].tolist()
    answer = tok.decode(generated).strip()
    example = encoder.encode(case.picture(), PROMPT, answer)
    start = len(example["input_ids"]) - len(encoder.answer_ids(answer))
    assert example["input_ids"][start:start + steps] == generated  # the answer re-tokenizes to the same ids
    with torch.no_grad():
        trained = model(**inputs_of(collate(processor, case.spec, [example]))).logits[0, start - 1:start - 1 + steps]
    return torch.cat(out.logits), trained


def train_run_on(case: Case, tmp_path: Path) -> tuple[dict, Path]:
    """``vlmtune train model.name=<tiny checkpoint> data.path=<caption folder>`` in process: (metrics, run dir)."""
    import tiny
    from vlmtune.config import load_config
    from vlmtune.stages.train import train_run

    model_dir = ft.save(*case.build(), tmp_path / "model")
    data = tiny.caption_folder(tmp_path / "data", n=4)  # 3 train rows, 1 test row
    run = tmp_path / "run"
    metrics = train_run(load_config(overrides=[
        f"model.name={model_dir}", f"data.path={data}", f"output_dir={run}", "train.max_steps=1",
        "train.batch_size=2", "train.save_steps=-1", "train.bf16=false", "train.eval_each_epoch=false",
        "eval.max_new_tokens=3", "eval.before=false", *case.e2e_overrides]))
    return metrics, run


# ---------------------------------------------------------------- real module trees (meta device)
def meta_model(folder: str):
    """(config, model) of tests/data/model-configs/<folder> built on the meta device with its row's class."""
    import transformers
    from transformers import AutoConfig

    from vlmtune.models.registry import family_for

    config = AutoConfig.from_pretrained(ft.DATA / folder)
    with torch.device("meta"):
        return config, getattr(transformers, family_for(config.model_type).model_class)(config)


def linears_under(model, prefix: str) -> set[str]:
    return {n for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, torch.nn.Linear)}
