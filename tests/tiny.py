"""Tiny random models built from configs, with a hand-made word-level tokenizer (no download).

The vocabulary is fixed and small so tests can spell out expected token ids by hand.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["[UNK]", "<pad>", "<|im_start|>", "<|im_end|>", "<image>", "user", "assistant",
         "a", "an", "and", "white", "black", "rook", "knight", "bishop", "queen", "king", "pawn",
         "describe", "what", "is", "this", "picture", "in", "few", "words", ".", ",", "?", "red", "green", "circle", "square"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<image>"]
IMAGE_SIZE = 28  # patch 14 -> 2x2 patches + CLS = 5 image tokens
IMAGE_TOKENS = 5


def tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="<pad>",
                                   bos_token="<|im_start|>", eos_token="<|im_end|>")
    fast.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<image>"]})
    return fast


def llava(seed: int = 0, hidden: int = 32):
    """(LlavaForConditionalGeneration, LlavaProcessor) shaped like the embedded default, tiny."""
    from transformers import Dinov2Config, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    from vlmtune.models.default import DefaultBaseSpec, build_processor

    torch.manual_seed(seed)
    vision = Dinov2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
                          patch_size=14, image_size=IMAGE_SIZE)
    text = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(WORDS), pad_token_id=VOCAB["<pad>"],
                       bos_token_id=VOCAB["<|im_start|>"], eos_token_id=VOCAB["<|im_end|>"], tie_word_embeddings=True,
                       initializer_range=0.5)  # large enough that tied logits can express a sharp answer
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=VOCAB["<image>"],
                         vision_feature_layer=-1, vision_feature_select_strategy="full", projector_hidden_act="gelu",
                         tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = VOCAB["<|im_end|>"]
    model.generation_config.pad_token_id = VOCAB["<pad>"]
    # The default's LLaVA layout (pixel_shuffle=1: a token per patch + CLS); aya_default() is today's.
    spec = DefaultBaseSpec(image_size=IMAGE_SIZE, pixel_shuffle=1, vision_feature_select_strategy="full")
    processor = build_processor(tokenizer(), spec)
    return model, processor


def aya_default(seed: int = 0, hidden: int = 32):
    """(AyaVisionForConditionalGeneration, LlavaProcessor) laid out as the embedded default, tiny:
    DINOv2 patches 2x2 pixel-shuffled into one token each, CLS dropped, a Llama LM."""
    from transformers import AyaVisionConfig, AyaVisionForConditionalGeneration, Dinov2Config, LlamaConfig

    from vlmtune.models.default import DefaultBaseSpec, build_processor
    from vlmtune.models.families.aya_vision import identity_logit_scale

    torch.manual_seed(seed)
    size = 2 * IMAGE_SIZE  # an even patch grid
    vision = Dinov2Config(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * hidden,
                          patch_size=14, image_size=size)
    text = LlamaConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=2,
                       num_key_value_heads=1, vocab_size=len(WORDS), pad_token_id=VOCAB["<pad>"],
                       bos_token_id=VOCAB["<|im_start|>"], eos_token_id=VOCAB["<|im_end|>"], tie_word_embeddings=True,
                       initializer_range=0.5)
    identity_logit_scale(text)  # as models/default.py does: transformers 5.25's Aya head reads it
    config = AyaVisionConfig(vision_config=vision, text_config=text, image_token_index=VOCAB["<image>"],
                             downsample_factor=2, vision_feature_layer=-1, vision_feature_select_strategy="default",
                             alignment_intermediate_size=2 * hidden, tie_word_embeddings=True)
    model = AyaVisionForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = VOCAB["<|im_end|>"]
    model.generation_config.pad_token_id = VOCAB["<pad>"]
    return model, build_processor(tokenizer(), DefaultBaseSpec(image_size=size))


def save_llava(path: Path, seed: int = 0) -> Path:
    model, processor = llava(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


CAPTIONS = ["a white rook", "a black knight", "a white queen and a black pawn", "a red circle",
            "a green square", "a black king", "a white bishop", "a black pawn and a white pawn"]


def caption_folder(path: Path, n: int = 8, test_every: int = 4) -> Path:
    """A caption folder of solid-colour pictures: ``captions.csv`` with file_name, caption, split, pieces."""
    import csv

    from PIL import Image

    path.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        name = f"pic_{i}.png"
        Image.new("RGB", (32, 32), ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)).save(path / name)
        caption = CAPTIONS[i % len(CAPTIONS)]
        rows.append({"file_name": name, "caption": caption, "split": "test" if i % test_every == 0 else "train"})
    with open(path / "captions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "caption", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def trained_run(path: Path, model_dir: Path, *extra: str, steps: int = 40) -> Path:
    """A real ``vlmtune train`` run dir on the tiny LLaVA: adapter, predictions, report, test split."""
    from vlmtune.config import load_config
    from vlmtune.stages.train import train_run

    data = caption_folder(path.parent / f"{path.name}-data", n=12)
    cfg = load_config(overrides=[
        f"output_dir={path}", f"model.name={model_dir}", f"data.path={data}", "data.prompt=describe this picture",
        f"train.max_steps={steps}", "train.batch_size=4", "train.lr=1e-2", "train.bf16=false",
        "train.eval_each_epoch=false", "train.save_steps=-1", "eval.max_new_tokens=6", *extra])
    train_run(cfg)
    return path
