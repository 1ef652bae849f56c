"""Tiny random Qwen3-VL, LLaVA-OneVision and InternVL models with their real processor classes (PIL image
processors, no video half: that needs torchvision) and families_tiny's word-level tokenizer. Nothing is downloaded.

Each builder returns (model, processor) as the row loads it. Hidden size 32, two layers per part.
"""

from __future__ import annotations

import torch

import families_tiny as ft

QWEN_SPECIALS = ft.QWEN_SPECIALS


# ---------------------------------------------------------------- Qwen3-VL
def qwen3_vl(seed: int = 0):
    """Patch 14 x merge 2 as the Qwen2-VL tiny (the real patch is 16): 56x56 px -> 4 image tokens; one DeepStack layer."""
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration, Qwen3VLProcessor

    from vlmtune.models.families.qwen import images_only
    from vlmtune.models.families.qwen3_vl import QWEN3_VL_TEMPLATE

    tok = ft.word_tokenizer(QWEN_SPECIALS, "<|im_start|>", "<|im_end|>", "<|endoftext|>")
    special = {f"{k}_token_id": tok.convert_tokens_to_ids(t) for k, t in
               [("image", "<|image_pad|>"), ("video", "<|video_pad|>"), ("vision_start", "<|vision_start|>"),
                ("vision_end", "<|vision_end|>")]}
    text = ft._text(tok, "qwen3_vl_text", head_dim=16,
                    rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "mrope_interleaved": True,
                                     "rope_theta": 10000.0})
    vision = dict(depth=2, hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN, num_heads=2, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=ft.HIDDEN, num_position_embeddings=16,
                  deepstack_visual_indexes=[0])
    torch.manual_seed(seed)
    config = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **special)
    model = ft._finish(Qwen3VLForConditionalGeneration(config), tok)
    images = Qwen2VLImageProcessorPil(min_pixels=ft.TILE * ft.TILE, max_pixels=4 * ft.TILE * ft.TILE, patch_size=14,
                                      merge_size=2, temporal_patch_size=2)
    return model, images_only(Qwen3VLProcessor)(images, tok, chat_template=QWEN3_VL_TEMPLATE)


# ---------------------------------------------------------------- LLaVA-OneVision
ONEVISION_SPECIALS = [*QWEN_SPECIALS, "<image>", "<video>"]


def llava_onevision(seed: int = 0):
    """SigLIP tiles of 28 px (2x2 patches: 4 tokens a view), grids up to 2x2 as families_tiny.PINPOINTS; strategy
    "full" and the last layer, as the real checkpoints."""
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                              LlavaOnevisionImageProcessorPil)

    from vlmtune.models.families.llava_onevision import ONEVISION_TEMPLATE, onevision_processor_class

    tok = ft.word_tokenizer(ONEVISION_SPECIALS, "<|im_start|>", "<|im_end|>", "<|endoftext|>")
    vision = dict(model_type="siglip_vision_model", hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN,
                  num_hidden_layers=2, num_attention_heads=2, image_size=ft.TILE, patch_size=14, vision_use_head=False)
    torch.manual_seed(seed)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=ft._text(tok, "qwen2"),
                                  image_grid_pinpoints=ft.PINPOINTS, image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
                                  vision_feature_select_strategy="full", tie_word_embeddings=False)
    model = ft._finish(LlavaOnevisionForConditionalGeneration(config), tok)
    images = LlavaOnevisionImageProcessorPil(size={"height": ft.TILE, "width": ft.TILE}, image_grid_pinpoints=ft.PINPOINTS)
    processor = onevision_processor_class()(images, tok, num_image_tokens=(ft.TILE // 14) ** 2,
                                            vision_feature_select_strategy="full", chat_template=ONEVISION_TEMPLATE)
    return model, processor


# ---------------------------------------------------------------- InternVL
INTERNVL_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
INTERNVL_TILE = 56  # patch 14: 4x4 patches (CLS dropped), pixel-shuffled 2x2 -> 4 tokens a tile
INTERNVL_TILE_TOKENS = 4


def internvl_tokenizer():
    """Names the image tokens as the real tokenizer_config.json does (extra_special_tokens)."""
    from transformers import PreTrainedTokenizerFast

    words = ft.word_tokenizer(INTERNVL_SPECIALS, "<|im_start|>", "<|im_end|>", "<|endoftext|>")
    return PreTrainedTokenizerFast(
        tokenizer_object=words.backend_tokenizer, unk_token="[UNK]", pad_token="<|endoftext|>",
        bos_token="<|im_start|>", eos_token="<|im_end|>",
        extra_special_tokens={"start_image_token": "<img>", "end_image_token": "</img>",
                              "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"})


def internvl(seed: int = 0):
    """InternViT + Qwen2, tiles of 56 px, at most 4 tiles + a thumbnail (a 1:2 picture gets 2 + 1)."""
    from transformers import GotOcr2ImageProcessorPil, InternVLConfig, InternVLForConditionalGeneration

    from vlmtune.models.families.internvl import INTERNVL_TEMPLATE, internvl_processor_class

    tok = internvl_tokenizer()
    vision = dict(hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                  image_size=[INTERNVL_TILE, INTERNVL_TILE], patch_size=[14, 14], use_mask_token=False,
                  use_absolute_position_embeddings=True, layer_scale_init_value=0.1, norm_type="layer_norm")
    torch.manual_seed(seed)
    config = InternVLConfig(vision_config=vision, text_config=ft._text(tok, "qwen2"),
                            image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5,
                            image_seq_length=INTERNVL_TILE_TOKENS, vision_feature_layer=-1,
                            vision_feature_select_strategy="default", tie_word_embeddings=False)
    model = ft._finish(InternVLForConditionalGeneration(config), tok)
    images = GotOcr2ImageProcessorPil(size={"height": INTERNVL_TILE, "width": INTERNVL_TILE}, crop_to_patches=True,
                                      min_patches=1, max_patches=4)
    processor = internvl_processor_class()(images, tok, image_seq_length=INTERNVL_TILE_TOKENS,
                                           chat_template=INTERNVL_TEMPLATE)
    return model, processor
