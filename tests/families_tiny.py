"""Tiny random LLaVA-1.5, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL and PaliGemma models with their real processor classes.

Each builder returns (model, processor): configs two layers deep (hidden 32) and a hand-made
word-level tokenizer whose vocabulary is ``[UNK]`` + the family's special tokens + ``WORDS`` +
"\\n", so tests can spell expected token ids out by hand.
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


def word_tokenizer(specials: list[str], bos: str, eos: str, pad: str, bos_first: bool = False, tail: list[str] = (),
                   words: list[str] = WORDS, newline: bool = True):
    """Lower-cased, whitespace-split: [UNK], ``specials``, ``words``, ``tail`` (ids at the end), then "\\n".

    ``bos_first`` prepends bos like the Llama/Mistral/Llama-3 tokenizers (unless add_special_tokens=False).
    ``newline``: "\\n" is a token; without it the whitespace split drops it.
    """
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", *specials, *words, *tail, *(["\n"] if newline else [])])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bos_first:
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B:1",
                                                           special_tokens=[(bos, vocab[bos])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token=pad, bos_token=bos, eos_token=eos)
    fast.add_special_tokens({"additional_special_tokens": [t for t in [*specials, *tail] if t not in (bos, eos, pad)]})
    if newline:
        fast.add_tokens([AddedToken("\n", normalized=False, special=False)])
    return fast


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


# ---------------------------------------------------------------- the data every family's checks use (tests/family_cases.py)
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
