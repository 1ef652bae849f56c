"""Tiny random models for the generic row (Aya Vision, VipLLaVA: types without a row) and the Mistral 3 and
LFM2-VL rows, with their real processor classes and families_tiny's word-level tokenizer (no download).

Each builder returns (model, processor). Hidden size 32, two layers per part, so a test can spell
the token layout out by hand.
"""

from __future__ import annotations

import torch

import families_tiny as ft

# ---------------------------------------------------------------- Aya Vision (generic row)
# SigLIP at 56 px: 4x4 patches of 14 px, pixel-shuffled 2x2 by the projector -> 4 image tokens.
AYA_IMAGE, AYA_TOKENS = 56, 4
AYA_SPECIALS = ["<PAD>", "<BOS_TOKEN>", "<EOS_TOKEN>", "<|START_OF_TURN_TOKEN|>", "<|END_OF_TURN_TOKEN|>",
                "<|USER_TOKEN|>", "<|CHATBOT_TOKEN|>", "<|START_OF_IMG|>", "<|END_OF_IMG|>", "<|IMG_PATCH|>",
                "<|IMG_LINE_BREAK|>", "TILE", "TILE_GLOBAL", "<image>"]
# The Cohere turn layout Aya Vision's template writes: BOS, then role tokens, each turn closed by END_OF_TURN.
AYA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|START_OF_TURN_TOKEN|>"
    "{% if message['role'] == 'user' %}<|USER_TOKEN|>{% else %}<|CHATBOT_TOKEN|>{% endif %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}<|END_OF_TURN_TOKEN|>{% endfor %}"
    "{% if add_generation_prompt %}<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>{% endif %}"
)


def aya_vision(seed: int = 0):
    """Cohere2 LM (sliding + full layers) + SigLIP + pixel-shuffle SwiGLU projector; the tokenizer adds BOS too."""
    from transformers import (AyaVisionConfig, AyaVisionForConditionalGeneration, AyaVisionProcessor,
                              GotOcr2ImageProcessorPil)

    tok = ft.word_tokenizer(AYA_SPECIALS, "<BOS_TOKEN>", "<EOS_TOKEN>", "<PAD>", bos_first=True)
    text = ft._text(tok, "cohere2", head_dim=16, sliding_window=8, layer_types=["sliding_attention", "full_attention"])
    vision = dict(model_type="siglip_vision_model", hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN,
                  num_hidden_layers=2, num_attention_heads=2, image_size=AYA_IMAGE, patch_size=14,
                  vision_use_head=False)
    torch.manual_seed(seed)
    config = AyaVisionConfig(text_config=text, vision_config=vision, downsample_factor=2,
                             image_token_index=tok.convert_tokens_to_ids("<|IMG_PATCH|>"),
                             alignment_intermediate_size=2 * ft.HIDDEN, tie_word_embeddings=False)
    model = ft._finish(AyaVisionForConditionalGeneration(config), tok)
    # One tile per picture (Aya's processor crops to patches by default; max_patches=1 keeps the whole picture).
    images = GotOcr2ImageProcessorPil(size={"height": AYA_IMAGE, "width": AYA_IMAGE}, max_patches=1)
    processor = AyaVisionProcessor(images, tok, patch_size=14, img_size=AYA_IMAGE, downsample_factor=2,
                                   chat_template=AYA_TEMPLATE)
    return model, processor


# ---------------------------------------------------------------- VipLLaVA (generic row)
VIP_TOKENS = 4  # 28 px CLIP view, 2x2 patches, CLS dropped
# Vicuna-style, the assistant's text after "ASSISTANT:" and a space, closed by </s>.
VIP_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% else %} ASSISTANT: {% for part in message['content'] %}{{ part['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
)


def vipllava(seed: int = 0):
    """CLIP whose features from two layers are concatenated, a LayerNorm + MLP projector, a Llama LM."""
    from transformers import CLIPImageProcessorPil, LlavaProcessor, VipLlavaConfig, VipLlavaForConditionalGeneration

    tok = ft.word_tokenizer(["<pad>", "<s>", "</s>", "<image>"], "<s>", "</s>", "<pad>", bos_first=True)
    torch.manual_seed(seed)
    config = VipLlavaConfig(vision_config=ft._clip(), text_config=ft._text(tok, "llama"),
                            image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layers=[-2, -1])
    model = ft._finish(VipLlavaForConditionalGeneration(config), tok)
    images = CLIPImageProcessorPil(size={"shortest_edge": ft.TILE}, crop_size={"height": ft.TILE, "width": ft.TILE})
    processor = LlavaProcessor(images, tok, patch_size=14, vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, image_token="<image>", chat_template=VIP_TEMPLATE)
    return model, processor


# ---------------------------------------------------------------- Mistral 3 (Pixtral vision)
# Patch 14, spatial merge 2: one token per 28 px. Longest edge 56 px: a 40x30 picture stays 40x30 -> 2x2 tokens
# (sides rounded up to 28 px steps) + a break per row, the last one [IMG_END].
MISTRAL3_EDGE = 56
MISTRAL3_SPECIALS = ["<pad>", "<s>", "</s>", "[INST]", "[/INST]", "[IMG]", "[IMG_BREAK]", "[IMG_END]",
                     "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"]


def mistral3(seed: int = 0):
    """Pixtral vision (2D RoPE, SwiGLU) + RMSNorm/patch-merger projector + Mistral LM; the tokenizer adds BOS."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, PixtralImageProcessorPil

    from vlmtune.models.families.mistral3 import MISTRAL3_TEMPLATE, pixtral_processor_class

    tok = ft.word_tokenizer(MISTRAL3_SPECIALS, "<s>", "</s>", "<pad>", bos_first=True)
    vision = dict(model_type="pixtral", hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN, num_hidden_layers=2,
                  num_attention_heads=2, head_dim=16, image_size=MISTRAL3_EDGE, patch_size=14, hidden_act="silu")
    torch.manual_seed(seed)
    config = Mistral3Config(text_config=ft._text(tok, "mistral", head_dim=16), vision_config=vision,
                            image_token_index=tok.convert_tokens_to_ids("[IMG]"), spatial_merge_size=2,
                            tie_word_embeddings=False)
    model = ft._finish(Mistral3ForConditionalGeneration(config), tok)
    images = PixtralImageProcessorPil(size={"longest_edge": MISTRAL3_EDGE}, patch_size=14)
    processor = pixtral_processor_class()(images, tok, patch_size=14, spatial_merge_size=2,
                                          chat_template=MISTRAL3_TEMPLATE)
    return model, processor


# ---------------------------------------------------------------- LFM2-VL
# SigLIP2 NaFlex with 8 px patches, 2x2 unshuffled: one token per 16 px. At most 4 tokens per view (1-4), tiles
# of 32 px (4 tokens), 2-4 tiles + a thumbnail for pictures over 4 x 16^2 x 2 px. A 40x30 picture is one
# 32x32 view (sides rounded to 16 px steps): 4 tokens; 56x56 is 2x2 tiles + a 32x32 thumbnail: 20.
LFM2_SPECIALS = ["<|pad|>", "<|startoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<|image_start|>",
                 "<|image_end|>", "<|img_thumbnail|>", *[f"<|img_row_{r}_col_{c}|>" for r in (1, 2, 3, 4) for c in (1, 2, 3, 4)]]


def lfm2_vl(seed: int = 0):
    """Hybrid LM (one short-convolution layer, one attention layer) + NaFlex SigLIP2 + unshuffle MLP projector."""
    from transformers import Lfm2VlConfig, Lfm2VlForConditionalGeneration

    from vlmtune.models.families.lfm2_vl import LFM2_VL_TEMPLATE, lfm2_vl_processor_class
    from vlmtune.models.families.lfm2_vl_images import lfm2_vl_image_processor_class

    tok = ft.word_tokenizer(LFM2_SPECIALS, "<|startoftext|>", "<|im_end|>", "<|pad|>", bos_first=True)
    text = ft._text(tok, "lfm2", layer_types=["conv", "full_attention"], block_auto_adjust_ff_dim=False,
                    block_ff_dim=2 * ft.HIDDEN, conv_L_cache=3)
    vision = dict(model_type="siglip2_vision_model", hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN,
                  num_hidden_layers=2, num_attention_heads=2, patch_size=8, num_patches=16, vision_use_head=False)
    torch.manual_seed(seed)
    config = Lfm2VlConfig(text_config=text, vision_config=vision, image_token_id=tok.convert_tokens_to_ids("<image>"),
                          downsample_factor=2, projector_hidden_size=ft.HIDDEN, tie_word_embeddings=False)
    model = ft._finish(Lfm2VlForConditionalGeneration(config), tok)
    images = lfm2_vl_image_processor_class()(encoder_patch_size=8, tile_size=32, min_image_tokens=1, max_image_tokens=4,
                                     min_tiles=2, max_tiles=4)
    return model, lfm2_vl_processor_class()(images, tok, chat_template=LFM2_VL_TEMPLATE)

