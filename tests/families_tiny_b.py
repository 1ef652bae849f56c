"""Tiny random IDEFICS, Idefics2, Idefics3, SmolVLM and Mllama models with their real processor classes.

Each builder returns (model, processor) from configs a few layers deep (hidden 32) and a
hand-made word-level tokenizer whose vocabulary is the family's special tokens + ``WORDS``, so a
test can spell the expected token ids out by hand. Nothing is downloaded.
"""

from __future__ import annotations

import torch

import families_tiny as ft

WORDS = ["a", "an", "and", "white", "black", "rook", "knight", "bishop", "queen", "king", "pawn", "describe",
         "what", "is", "this", "picture", "in", "few", "words", "user", "assistant", ".", ",", "?", ":"]
HIDDEN = 32
GRID_TOKENS = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]  # Idefics3/SmolVLM sub-image tags


def word_tokenizer(specials: list[str], bos: str, eos: str, pad: str, tail: list[str] = (), adds_bos: bool = True):
    """families_tiny's tokenizer over this file's ``WORDS``, without a "\\n" token (these templates' newlines
    fall away in the whitespace split). ``adds_bos``: like the real Llama/Mistral/Llama-3 tokenizers, tokenizing
    puts BOS first (unless add_special_tokens=False), so a test sees a doubled BOS where a row would produce one."""
    return ft.word_tokenizer(specials, bos, eos, pad, bos_first=adds_bos, tail=tail, words=WORDS, newline=False)


def _text(vocab_size: int, **kw) -> dict:
    return dict(vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, **kw)


def _vision(image_size: int, patch_size: int, **kw) -> dict:
    return dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                image_size=image_size, patch_size=patch_size, **kw)


def _special_ids(tok) -> dict:
    return {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}


# ---------------------------------------------------------------- IDEFICS (v1)
IDEFICS_IMAGE = 28  # patch 14: 2x2 patches + CLS; the perceiver resamples them to 4 latents


def idefics(seed: int = 0):
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsImageProcessor, IdeficsProcessor

    # As in the real tokenizer, the two image tokens are the "additional vocabulary" past vocab_size.
    tok = word_tokenizer(["<pad>", "<s>", "</s>", "<end_of_utterance>"], "<s>", "</s>", "<pad>",
                         tail=["<fake_token_around_image>", "<image>"])
    torch.manual_seed(seed)
    config = IdeficsConfig(
        vocab_size=len(tok) - 2, additional_vocab_size=2, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN,
        num_hidden_layers=2, num_attention_heads=2, cross_layer_interval=1, use_resampler=True,
        alpha_initializer="ones",  # trained checkpoints have open gates; zeros would cut the image off
        vision_config=dict(embed_dim=HIDDEN, image_size=IDEFICS_IMAGE, patch_size=14, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=2 * HIDDEN),
        perceiver_config=dict(resampler_n_latents=4, resampler_depth=1, resampler_n_heads=2, resampler_head_dim=8),
        **_special_ids(tok))
    model = IdeficsForVisionText2Text(config).eval()
    processor = IdeficsProcessor(IdeficsImageProcessor(image_size=IDEFICS_IMAGE), tok)
    return model, processor


# ---------------------------------------------------------------- Idefics2 / Idefics3 / SmolVLM
IDEFICS2_LATENTS = 4  # image tokens per sub-image (perceiver latents)
IDEFICS3_TILE = 32  # patch 8 -> 4x4 patches, pixel shuffle x2 -> 4 image tokens per sub-image
IDEFICS3_SEQ = (IDEFICS3_TILE // 8) ** 2 // 4


def idefics2(seed: int = 0):
    from transformers import Idefics2Config, Idefics2ForConditionalGeneration, Idefics2ImageProcessor, Idefics2Processor

    tok = word_tokenizer(["<pad>", "<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"],
                         "<s>", "</s>", "<pad>")
    torch.manual_seed(seed)
    config = Idefics2Config(
        text_config=dict(model_type="mistral", **_text(len(tok), **_special_ids(tok))),
        vision_config=_vision(56, 14),
        perceiver_config=dict(hidden_size=HIDDEN, resampler_n_latents=IDEFICS2_LATENTS, resampler_depth=1,
                              resampler_n_heads=2, resampler_head_dim=8, num_key_value_heads=1),
        image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    model = Idefics2ForConditionalGeneration(config).eval()
    # Splitting = 4 crops + the whole picture; sizes vary with the aspect ratio (zero-padded per batch).
    images = Idefics2ImageProcessor(do_image_splitting=True, size={"shortest_edge": 28, "longest_edge": 56})
    return model, Idefics2Processor(images, tok, image_seq_len=IDEFICS2_LATENTS)


def _idefics3_like(config_cls, model_cls, bos: str, eos: str, seed: int, adds_bos: bool = True):
    tok = word_tokenizer(["<pad>", bos, eos, "<fake_token_around_image>", "<image>", "<end_of_utterance>",
                          "<global-img>", *GRID_TOKENS], bos, eos, "<pad>", adds_bos=adds_bos)
    torch.manual_seed(seed)
    config = config_cls(
        text_config=dict(model_type="llama", **_text(len(tok), **_special_ids(tok))),
        vision_config=_vision(IDEFICS3_TILE, 8), scale_factor=2,
        image_token_id=tok.convert_tokens_to_ids("<image>"), tie_word_embeddings=False)
    return model_cls(config).eval(), tok


def _splitting(image_processor_cls):
    # Longest edge 64 -> up to 2x2 tiles of 32 + the whole picture: the sub-image count depends on the aspect ratio.
    return image_processor_cls(do_image_splitting=True, size={"longest_edge": 2 * IDEFICS3_TILE},
                               max_image_size={"longest_edge": IDEFICS3_TILE})


def idefics3(seed: int = 0):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    model, tok = _idefics3_like(Idefics3Config, Idefics3ForConditionalGeneration, "<|begin_of_text|>",
                                "<|end_of_text|>", seed)
    return model, Idefics3Processor(_splitting(Idefics3ImageProcessor), tok, image_seq_len=IDEFICS3_SEQ)


def smolvlm(seed: int = 0):
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration, SmolVLMImageProcessor

    from vlmtune.models.families.idefics import smolvlm_processor_class

    model, tok = _idefics3_like(SmolVLMConfig, SmolVLMForConditionalGeneration, "<|im_start|>", "<|im_end|>", seed,
                                adds_bos=False)  # SmolLM2's tokenizer adds no BOS
    # The stock class less its video slot, as the smolvlm row loads it (the video half needs torchvision).
    processor = smolvlm_processor_class()(_splitting(SmolVLMImageProcessor), tok, image_seq_len=IDEFICS3_SEQ)
    return model, processor


# ---------------------------------------------------------------- Mllama
MLLAMA_TILE = 28  # patch 14 -> 4 patches + CLS per tile
MLLAMA_TILES = 2


def mllama(seed: int = 0):
    from transformers import MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor

    from vlmtune.models.families.mllama import mllama_processor_class

    specials = ["<|finetune_right_pad_id|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>", "<|python_tag|>"]
    # <|image|> sits right past the LM head's vocabulary, as in the real checkpoints (id 128256).
    tok = word_tokenizer(specials, "<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>",
                         tail=["<|image|>"])
    torch.manual_seed(seed)
    text = _text(len(tok) - 1, **_special_ids(tok))
    text.update(num_hidden_layers=3, cross_attention_layers=[1])
    vision = dict(hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=2, num_global_layers=1,
                  attention_heads=2, image_size=MLLAMA_TILE, patch_size=14, max_num_tiles=MLLAMA_TILES,
                  vision_output_dim=2 * HIDDEN, intermediate_layers_indices=[0],
                  supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]])
    config = MllamaConfig(text_config=text, vision_config=vision,
                          image_token_index=tok.convert_tokens_to_ids("<|image|>"))
    model = MllamaForConditionalGeneration(config).eval()
    with torch.no_grad():  # trained checkpoints have open gates; the zero init would cut the image off
        for name, param in model.named_parameters():
            if name.endswith("gate"):
                param.fill_(1.0)
    images = MllamaImageProcessor(size={"height": MLLAMA_TILE, "width": MLLAMA_TILE}, max_image_tiles=MLLAMA_TILES)
    return model, mllama_processor_class()(images, tok)


# registry row -> builder: (seed) -> (model, processor)
FAMILIES = {"idefics": idefics, "idefics2": idefics2, "idefics3": idefics3, "smolvlm": smolvlm, "mllama": mllama}
