"""LFM2-VL (LiquidAI LFM2-VL-450M/1.6B/3B, LFM2.5-VL-1.6B; model_type lfm2_vl): SigLIP2 NaFlex vision,
a pixel-unshuffle MLP projector, and the LFM2 hybrid LM (gated short convolutions + attention).

Module tree (counted on the real LFM2.5-VL-1.6B config in tests/unit/test_family_lfm2_vl.py):
- LM ``model.language_model``: 16 layers; 10 short-convolution blocks (``conv.in_proj``/``conv.out_proj``
  around a depthwise Conv1d) and 6 attention blocks (``self_attn.q/k/v/out_proj``); every layer's
  SwiGLU ``feed_forward.w1/w2/w3``.
- vision ``model.vision_tower`` (SigLIP2 NaFlex): q/k/v/out_proj + fc1/fc2 per encoder layer; the patch
  embedding is an nn.Linear over flattened 16 px patches, kept out of vision LoRA (no CLIP leaf name).
- projector ``model.multi_modal_projector``: 2x2 pixel unshuffle, (LayerNorm,) linear_1, GELU, linear_2.

Data, checked against transformers' lfm2_vl and lfm2 code:
- The stock image processor is torchvision-only; lfm2_vl_images.py is its algorithm on PIL. The
  stock Lfm2VlProcessor (no torchvision) expands each <image> into <|image_start|>, per 512 px tile
  <|img_row_R_col_C|> + 256 <image>, <|img_thumbnail|> + the thumbnail's tokens, <|image_end|>.
  pixel_values are [views, max_num_patches, 768] with a pixel mask and spatial_shapes per view; the
  collator concatenates the views of a batch.
- ChatML turns; the template writes <|startoftext|> and the processor calls the tokenizer without
  special tokens itself; answers end with <|im_end|>.
- feature_cache stays off: get_image_features needs spatial_shapes and the pixel mask, and the
  projector runs on each view's unshuffled patch grid, not on per-picture features.
- logits_to_keep: the forward slices hidden states with slice_logits_to_keep.
- The short convolutions zero padded positions first (apply_mask_to_padding_states), so
  left-padded batches generate what single prompts do.
"""

from __future__ import annotations


from vlmtune.errors import VlmtuneError
from vlmtune.models.families.lfm2_vl_images import lfm2_vl_image_processor_class
from vlmtune.models.families.llava import CLIP_LIKE_VISION
from vlmtune.models.families.processors import picture_per_prompt
from vlmtune.models.family import FamilyHooks, FamilySpec

# LFM2's ChatML, for processors that ship no template of their own.
LFM2_VL_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
LFM2_LEAVES = ("q_proj", "k_proj", "v_proj", "out_proj", "in_proj", "w1", "w2", "w3")


def lfm2_vl_processor_class() -> type:
    """The stock Lfm2VlProcessor, one picture per prompt (its own layout gives a flat list to the first prompt)."""
    # Imported here as every row does: importing the registry must not import transformers' processors.
    from transformers import Lfm2VlProcessor

    return picture_per_prompt(Lfm2VlProcessor)


class Lfm2VlHooks(FamilyHooks):
    def load_processor(self, path: str, offline: bool = False):
        """ProcessorMixin.from_pretrained, less its AutoImageProcessor step (that finds the torchvision class only)."""
        from transformers import AutoTokenizer

        cls = lfm2_vl_processor_class()
        images = lfm2_vl_image_processor_class().from_pretrained(path, local_files_only=offline)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=offline)
        settings, _ = cls.get_processor_dict(path, local_files_only=offline)
        return cls.from_args_and_dict([images, tokenizer], settings)

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """Fewer tiles, then no tiling, then a smaller whole-picture view: the first that fits.

        Tiled, a picture gets at most max_tiles x 256 tokens (512 px tiles) + a thumbnail of at most
        max_image_tokens; untiled, one view of at most max_image_tokens (sides in 32 px steps; a
        side never drops below one step, so only a picture thinner than 1:budget can pass it).
        """
        images = processor.image_processor
        per_tile = (-(-(images.tile_size // images.encoder_patch_size) // images.downsample_factor)) ** 2  # as the processor
        thumbnail = images.max_image_tokens if images.use_thumbnail else 0
        if images.do_image_splitting:
            tiles = min(images.max_tiles, (max_image_tokens - thumbnail) // per_tile)
            if tiles >= images.min_tiles:
                images.max_tiles = tiles
                return {"max_tiles": tiles, "image_tokens": tiles * per_tile + thumbnail}
            images.do_image_splitting = False
        if max_image_tokens < 1:
            raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: LFM2-VL needs at least 1 image token")
        images.max_image_tokens = min(images.max_image_tokens, max_image_tokens)
        images.min_image_tokens = min(images.min_image_tokens, images.max_image_tokens)
        return {"do_image_splitting": False, "max_image_tokens": images.max_image_tokens,
                "image_tokens": images.max_image_tokens}


LFM2_VL = FamilySpec(
    name="lfm2_vl",
    model_types=("lfm2_vl",),
    model_class="Lfm2VlForConditionalGeneration",
    lm_prefix=r"model\.language_model",
    vision_prefix=r"model\.vision_tower",
    projector_modules=("model.multi_modal_projector",),
    lm_leaves=LFM2_LEAVES,
    vision_leaves=CLIP_LIKE_VISION,
    end_of_turn="<|im_end|>",
    chat_template=LFM2_VL_TEMPLATE,
    hooks=Lfm2VlHooks(),
    notes="LFM2-VL-450M/1.6B/3B, LFM2.5-VL-1.6B: NaFlex SigLIP2, 512 px tiles + thumbnail, hybrid conv/attention LM",
    presets=("configs/lfm2.5-vl-1.6b.yaml",),
    verified=(("LiquidAI/LFM2.5-VL-1.6B", "shapes"),),
)
