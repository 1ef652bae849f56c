"""Tiny random LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL and PaliGemma models with their real processor classes.

Each builder returns (model, processor): configs two layers deep (hidden 32) and a hand-made
word-level tokenizer whose vocabulary is ``[UNK]`` + the family's special tokens + ``WORDS`` +
"\\n", so tests can spell expected token ids out by hand (``ids(processor, "a white rook")``).
Nothing is downloaded. Images are 28 px tiles of 14 px patches: 2x2 patches per tile.
"""

from __future__ import annotations

from pathlib import Path

import torch

DATA = Path(__file__).parent / "data" / "model-configs"
WORDS = ["a", "an", "and", "white", "black", "rook", "knight", "bishop", "queen", "king", "pawn", "red", "green",
         "circle", "square", "describe", "what", "is", "this", "picture", "in", "few", "words", "caption", "en",
         "user", "assistant", "system", "you", "are", "helpful", "answer", "the", "questions",
         ".", ",", "?", ":"]
HIDDEN = 32
TILE = 28
PINPOINTS = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE]]  # LLaVA-NeXT tile grids: 1x2, 2x1, 2x2


def word_tokenizer(specials: list[str], bos: str, eos: str, pad: str, bos_first: bool = False):
    """Lower-cased, whitespace-split; "\\n" is a token. ``bos_first`` prepends bos like Llama's tokenizer."""
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", *specials, *WORDS, "\n"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos_first:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B:1",
                                                           special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=pad, bos_token=bos, eos_token=eos)
    fast.add_special_tokens({"additional_special_tokens": [t for t in specials if t not in (bos, eos, pad)]})
    fast.add_tokens([AddedToken("\n", normalized=False, special=False)])
    return fast


def ids(processor, text: str) -> list[int]:
    return processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def _text(tok, model_type: str, **kw) -> dict:
    return dict(model_type=model_type, vocab_size=len(tok), hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
                num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                initializer_range=0.5,  # sharp logits: greedy output depends on the input, so padding bugs show
                **kw)


def _clip() -> dict:
    return dict(model_type="clip_vision_model", hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=2, image_size=TILE, patch_size=14)


def _finish(model, tok):
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval()


# ---------------------------------------------------------------- LLaVA-1.5 (CLIP + Vicuna)
LLAVA_IMAGE_TOKENS = 4  # 2x2 patches; strategy "default" drops CLS


def llava15(seed: int = 0):
    """Real llava-1.5 settings (feature layer -2, strategy default, its chat template), tiny sizes."""
    from transformers import CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    tok = word_tokenizer(["<pad>", "<s>", "</s>", "<image>"], "<s>", "</s>", "<pad>", bos_first=True)
    torch.manual_seed(seed)
    config = LlavaConfig(vision_config=_clip(), text_config=_text(tok, "llama"), image_token_id=tok.convert_tokens_to_ids("<image>"),
                         vision_feature_layer=-2, vision_feature_select_strategy="default")
    model = _finish(LlavaForConditionalGeneration(config), tok)
    images = CLIPImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE})
    template = (DATA / "llava-hf__llava-1.5-7b-hf" / "chat_template.jinja").read_text()
    processor = LlavaProcessor(images, tok, patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, image_token="<image>", chat_template=template)
    return model, processor


# ---------------------------------------------------------------- LLaVA-NeXT
NEXT_SPECIALS = {  # LM kind -> (specials, bos, eos, pad, text model_type)
    "mistral": (["<pad>", "<s>", "</s>", "<image>", "[INST]", "[/INST]"], "<s>", "</s>", "<pad>", "mistral"),
    "vicuna": (["<pad>", "<s>", "</s>", "<image>"], "<s>", "</s>", "<pad>", "llama"),
    "yi": (["<unk>", "<|startoftext|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"],
           "<|startoftext|>", "<|im_end|>", "<unk>", "llama"),
}


def llava_next(lm: str = "mistral", seed: int = 0, template: bool = True):
    """Tiles of 28 px, pinpoints up to 2x2; ``template=False`` leaves the processor without one."""
    from transformers import (LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil,
                              LlavaNextProcessor)

    from vlmtune.models.families.llava import LLAVA_NEXT

    specials, bos, eos, pad, text_type = NEXT_SPECIALS[lm]
    tok = word_tokenizer(specials, bos, eos, pad, bos_first=True)
    torch.manual_seed(seed)
    config = LlavaNextConfig(vision_config=_clip(), text_config=_text(tok, text_type), image_grid_pinpoints=PINPOINTS,
                             image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy="default")
    model = _finish(LlavaNextForConditionalGeneration(config), tok)
    images = LlavaNextImageProcessorPil(size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                        image_grid_pinpoints=PINPOINTS)
    processor = LlavaNextProcessor(images, tok, patch_size=14, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1, image_token="<image>")
    if template:
        processor.chat_template = LLAVA_NEXT.fallback_template(config, tok)
    return model, processor


# ---------------------------------------------------------------- Qwen2-VL / Qwen2.5-VL
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]


def qwen_vl(version: str = "2", seed: int = 0):
    """Pictures are resized to multiples of 28 px (patch 14 x merge 2), at most 56x56: <= 4 image tokens."""
    import transformers
    from transformers import Qwen2VLImageProcessorPil

    from vlmtune.models.families.qwen import QWEN_CHATML, images_only

    tok = word_tokenizer(QWEN_SPECIALS, "<|im_start|>", "<|im_end|>", "<|endoftext|>")
    special = {f"{k}_token_id": tok.convert_tokens_to_ids(t) for k, t in
               [("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("vision_start", "<|vision_start|>"),
                ("vision_end", "<|vision_end|>")]}
    text = _text(tok, f"qwen2{'_5' if version == '2.5' else ''}_vl_text", rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]})
    vision = dict(depth=2, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    if version == "2":
        vision.update(embed_dim=HIDDEN, hidden_size=HIDDEN, mlp_ratio=2)
        config_cls, model_cls, processor_cls = "Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor"
    else:
        vision.update(hidden_size=HIDDEN, out_hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, window_size=56,
                      fullatt_block_indexes=[1])
        config_cls, model_cls, processor_cls = "Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor"
    torch.manual_seed(seed)
    config = getattr(transformers, config_cls)(text_config=text, vision_config=vision, **special)
    model = _finish(getattr(transformers, model_cls)(config), tok)
    images = Qwen2VLImageProcessorPil(min_pixels=TILE * TILE, max_pixels=4 * TILE * TILE, patch_size=14, merge_size=2,
                                      temporal_patch_size=2)
    processor = images_only(getattr(transformers, processor_cls))(images, tok, chat_template=QWEN_CHATML)
    return model, processor


# ---------------------------------------------------------------- PaliGemma
PALIGEMMA_IMAGE_TOKENS = 4


def paligemma(seed: int = 0):
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor, SiglipImageProcessorPil

    tok = word_tokenizer(["<pad>", "<eos>", "<bos>", "<image>"], "<bos>", "<eos>", "<pad>")
    vision = dict(model_type="siglip_vision_model", hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                  num_attention_heads=2, image_size=TILE, patch_size=14, vision_use_head=False)
    torch.manual_seed(seed)
    config = PaliGemmaConfig(vision_config=vision, text_config=_text(tok, "gemma", head_dim=16), projection_dim=HIDDEN,
                             image_token_id=tok.convert_tokens_to_ids("<image>"))
    model = _finish(PaliGemmaForConditionalGeneration(config), tok)
    images = SiglipImageProcessorPil(size={"height": TILE, "width": TILE})
    images.image_seq_length = PALIGEMMA_IMAGE_TOKENS  # what the real preprocessor_config.json carries
    # PaliGemmaProcessor adds 1152 <locNNNN>/<segNNN> tokens past the model's tiny vocabulary; none occur here.
    return model, PaliGemmaProcessor(images, tok)


BUILDERS = {"llava": llava15, "llava_next": llava_next, "qwen2_vl": qwen_vl,
            "qwen2_5_vl": lambda seed=0: qwen_vl("2.5", seed), "paligemma": paligemma}


def save(model, processor, path: Path) -> Path:
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


# ---------------------------------------------------------------- checks every family's tests run
ANSWERS = ["a white rook", "a black knight", "a white queen and a black pawn", "a red circle"]
SIZES = [(56, 56), (40, 30), (30, 60), (60, 40)]  # mixed aspect ratios: different tile / patch counts


def pictures(n: int = 4) -> list:
    from PIL import Image

    return [Image.new("RGB", SIZES[i % 4], ((70 * i) % 256, (150 * i) % 256, (230 * i) % 256)) for i in range(n)]


def examples(processor, spec, max_length: int = 256) -> list[dict]:
    from vlmtune.models.prompting import PromptAnswerTokenizer

    enc = PromptAnswerTokenizer(processor, spec, max_length)
    return [enc.encode(img, "Describe this picture.", a) for img, a in zip(pictures(), ANSWERS)]


def run_config(tmp_path, *extra):
    from vlmtune.config import load_config

    return load_config(overrides=[f"output_dir={tmp_path}", "train.max_steps=2", "train.lr=1e-2", "train.batch_size=4",
                                  "train.logging_steps=1", "train.save_steps=-1", "train.eval_each_epoch=false",
                                  "train.bf16=false", "train.warmup_ratio=0", "train.scheduler=constant", *extra])


def original_name(peft_name: str) -> str:
    """Parameter name in the unwrapped model."""
    name = peft_name.removeprefix("base_model.model.")
    for wrapper in (".base_layer", ".modules_to_save.default", ".original_module"):
        name = name.replace(wrapper, "")
    return name


def two_lora_steps(build, spec, root: Path, targets: str = "lm+vision+projector", checkpointing: bool = True):
    """Save a tiny base under ``root``, load it back (so the adapter names its base) and run two
    optimizer steps of ``fit`` on it: {base_dir, processor, before, after (by PEFT name), model}."""
    import transformers

    from vlmtune.training.fit import fit

    base_dir = save(*build(), root / "base")
    model = getattr(transformers, spec.model_class).from_pretrained(base_dir)
    processor = build()[1]
    cfg = run_config(root / "fit", f"train.lora.targets={targets}", f"train.gradient_checkpointing={str(checkpointing).lower()}")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = fit(model, spec, torch.float32, examples(processor, spec), None, cfg, str(root / "fit"), processor.tokenizer.pad_token_id)
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


def padded_equals_single(model, processor, spec) -> tuple[list[str], list[str]]:
    """Greedy answers for two pictures as one left-padded batch, and one at a time."""
    from vlmtune.config import EvalConfig
    from vlmtune.evaluation.generate import generate_answers

    from vlmtune.models.prompting import PromptAnswerTokenizer

    imgs, prompts = pictures(2)[::-1], ["Describe this picture.", "What?"]
    assert (PromptAnswerTokenizer(processor, spec).encode_prompts(imgs, prompts)["attention_mask"][:, 0] == 0).any()  # left-padded
    batch = generate_answers(model, processor, spec, imgs, prompts, EvalConfig(max_new_tokens=4, batch_size=2), desc="gen")
    single = [generate_answers(model, processor, spec, [i], [p], EvalConfig(max_new_tokens=4, batch_size=1), desc="gen")[0]
              for i, p in zip(imgs, prompts)]
    return batch, single


def adapter_round_trip(fitted: dict, spec, out: Path):
    """(logits of the trained adapter in memory, after save + load_for_inference, of the base)."""
    import transformers

    from vlmtune.training.collate import Collator
    from vlmtune.models.loading import load_for_inference

    fitted["model"].save_pretrained(out)
    processor = fitted["processor"]
    batch = Collator(processor.tokenizer.pad_token_id, spec.seq_keys)(examples(processor, spec)[:2])
    batch.pop("labels")
    reloaded, _, reloaded_spec = load_for_inference(out, dtype="fp32", device=torch.device("cpu"))
    assert reloaded_spec is spec
    base = getattr(transformers, spec.model_class).from_pretrained(fitted["base_dir"]).eval()
    with torch.no_grad():
        return fitted["model"](**batch).logits, reloaded(**batch).logits, base(**batch).logits
