"""A tiny random Gemma 3 (SigLIP + Gemma3 text) with its real processor class and a word-level tokenizer.

Built like families_tiny.py (same WORDS, same hand-spellable ids); nothing is downloaded.
Pictures are 56 px: 4x4 SigLIP patches of 14 px, average-pooled 2x2 into 4 image tokens, as the
real model pools 64x64 patches into 256.
"""

from __future__ import annotations

import torch

import families_tiny as ft

GEMMA3_SPECIALS = ["<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>",
                   "<image_soft_token>"]
GEMMA3_IMAGE = 56
GEMMA3_IMAGE_TOKENS = 4  # mm_tokens_per_image
# Small enough that the prompt (~20 tokens) crosses it: sliding and full layers see different masks.
GEMMA3_WINDOW = 8


def gemma3_tokenizer():
    """Adds BOS like the real Gemma tokenizer (add_bos_token=True); names boi/eoi/image tokens as it does."""
    from transformers import PreTrainedTokenizerFast

    words = ft.word_tokenizer(GEMMA3_SPECIALS, "<bos>", "<eos>", "<pad>", bos_first=True)
    words.add_tokens(["model"])  # the template's role name for the assistant turn
    return PreTrainedTokenizerFast(
        tokenizer_object=words.backend_tokenizer, unk_token="[UNK]", pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                                 "image_token": "<image_soft_token>"})


def gemma3(seed: int = 0):
    """(Gemma3ForConditionalGeneration, Gemma3Processor as the gemma3 row loads it), tiny sizes."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3ImageProcessorPil

    from vlmtune.models.families.gemma3 import GEMMA3_TEMPLATE, gemma3_processor_class

    tok = gemma3_tokenizer()
    text = ft._text(tok, "gemma3_text", head_dim=16, query_pre_attn_scalar=16, sliding_window=GEMMA3_WINDOW,
                    layer_types=["sliding_attention", "full_attention"])
    vision = dict(model_type="siglip_vision_model", hidden_size=ft.HIDDEN, intermediate_size=2 * ft.HIDDEN,
                  num_hidden_layers=2, num_attention_heads=2, image_size=GEMMA3_IMAGE, patch_size=14,
                  vision_use_head=False)
    ids = {f"{k}_token_index": tok.convert_tokens_to_ids(t) for k, t in
           [("boi", "<start_of_image>"), ("eoi", "<end_of_image>"), ("image", "<image_soft_token>")]}
    torch.manual_seed(seed)
    # Untied, sharp head: with tied embeddings a random Gemma (embeddings scaled by sqrt(hidden)) echoes
    # its last input token, and greedy answers would not depend on the prompt.
    config = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=GEMMA3_IMAGE_TOKENS,
                          tie_word_embeddings=False, initializer_range=0.5, **ids)
    model = Gemma3ForConditionalGeneration(config)
    with torch.no_grad():  # zero-initialised: the picture would not reach the LM (trained checkpoints are not zero)
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0, 0.5)
    images = Gemma3ImageProcessorPil(size={"height": GEMMA3_IMAGE, "width": GEMMA3_IMAGE})
    processor = gemma3_processor_class()(images, tok, chat_template=GEMMA3_TEMPLATE,
                                         image_seq_length=GEMMA3_IMAGE_TOKENS)
    return ft._finish(model, tok), processor
