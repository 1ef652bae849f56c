"""The IDEFICS line: IDEFICS (v1, Flamingo-style cross-attention) and Idefics2, Idefics3, SmolVLM.

Module trees (counted on the real configs in tests/unit/test_real_shapes_b.py):
- IDEFICS: LM ``model.layers``; gated cross-attention ``model.gated_cross_attn_layers`` (one per
  ``cross_layer_interval`` LM layers, siblings of them); CLIP vision ``model.vision_model``;
  perceiver ``model.perceiver_resampler``.
- Idefics2 / Idefics3 / SmolVLM: LM ``model.text_model``; SigLIP vision ``model.vision_model``;
  connector ``model.connector`` (Idefics2: MLP + perceiver; Idefics3/SmolVLM: pixel shuffle + linear).
  Pictures are split into sub-images: pixel_values [batch, n_images, 3, H, W] with a
  pixel_attention_mask; the collator zero-pads ragged n_images and H/W, and the models drop
  all-zero images and attend only to unpadded pixels (checked in tests/unit/test_family_idefics.py).
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from vlmtune.errors import VlmtuneError
from vlmtune.models.families.cross_attention import CrossAttentionHooks
from vlmtune.models.families.processors import OnePicturePerPrompt
from vlmtune.models.families.qwen import images_only
from vlmtune.models.family import FamilyHooks, FamilySpec

EOU = "<end_of_utterance>"
# CLIP (IDEFICS) and SigLIP (Idefics2/3, SmolVLM) name their projections alike.
CLIP_VISION = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


# ---------------------------------------------------------------- IDEFICS (v1)
def _turn_end(tokenizer) -> str | None:
    """<end_of_utterance> where the tokenizer knows it (the instruct ones), else None: the turn ends with EOS."""
    token_id = tokenizer.convert_tokens_to_ids(EOU)
    return EOU if token_id is not None and token_id != tokenizer.unk_token_id else None


class IdeficsHooks(CrossAttentionHooks):
    """No chat template; the turn ends with <end_of_utterance> where the tokenizer has it, else EOS."""

    def prompt_text(self, tok, prompt: str) -> str:
        # The processor puts "<s><fake><image><fake>" before this text.
        return f"User: {prompt}{_turn_end(tok.tokenizer) or ''}\nAssistant:"

    def end_of_turn(self, spec, tokenizer) -> str:
        return _turn_end(tokenizer) or tokenizer.eos_token

    @property
    def multi_turn(self) -> bool:
        return False


IDEFICS = FamilySpec(
    name="idefics",
    model_types=("idefics",),
    model_class="IdeficsForVisionText2Text",
    # LoRA "lm" also adapts the gated cross-attention layers (q/k/v/o_proj + MLP): the LM's path
    # to the picture. "projector" trains the perceiver resampler and the gated cross-attention
    # layers whole, tanh gates included (PEFT then leaves them out of the LoRA targets).
    lm_prefix=r"model\.(?:layers|gated_cross_attn_layers)",
    vision_prefix=r"model\.vision_model",
    projector_modules=("model.perceiver_resampler", "model.gated_cross_attn_layers"),
    vision_leaves=CLIP_VISION,
    end_of_turn=EOU,
    # No answer_prefix: SentencePiece (LLaMA, Mistral) starts a text with "▁" itself, so "a" gives
    # the "▁a" that "Assistant: a" holds; " a" could give a stray "▁" first.
    hooks=IdeficsHooks(),
    seq_keys=("image_attention_mask",),
    notes="IDEFICS 9B/80B (+instruct): prompts are (image, text) pairs, image_attention_mask extended over the answer",
    presets=("configs/idefics-9b-instruct.yaml",),
    verified=(("HuggingFaceM4/idefics-9b-instruct", "shapes+tokenizer"),),
)


# ---------------------------------------------------------------- Idefics2 / Idefics3 / SmolVLM
def _template(start: str) -> str:
    """Their chat format: "User:<image>Describe.<end_of_utterance>\\nAssistant:" (+ " answer<end_of_utterance>")."""
    return (
        start + "{% for message in messages %}{{ message['role'] | capitalize }}"
        "{% if message['content'][0]['type'] == 'image' %}:{% else %}: {% endif %}"
        "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
        "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    )


def _too_few(max_image_tokens: int, least: int, what: str) -> VlmtuneError:
    return VlmtuneError(f"model.max_image_tokens={max_image_tokens}: {what} needs at least {least} image tokens per "
                        "picture (one sub-image); raise it")


class Idefics2Hooks(FamilyHooks):
    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """Splitting gives 5 sub-images (4 crops + the whole) of image_seq_len tokens each; off, 1."""
        per, images = processor.image_seq_len, processor.image_processor
        if per > max_image_tokens:
            raise _too_few(max_image_tokens, per, "Idefics2")
        if images.do_image_splitting and 5 * per > max_image_tokens:
            images.do_image_splitting = False
        return {"do_image_splitting": images.do_image_splitting,
                "image_tokens": (5 if images.do_image_splitting else 1) * per}


class Idefics3Hooks(FamilyHooks):
    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """size["longest_edge"] = k tiles: a picture becomes at most k x k tiles + a global view.

        Each sub-image is image_seq_len tokens; the checkpoint default (4 x 364 px, 4 x 512 px for
        SmolVLM) allows 17 sub-images. One tile (k = 1) is the whole picture alone.
        """
        per, images = processor.image_seq_len, processor.image_processor
        tile = images.max_image_size["longest_edge"]
        k = -(-images.size["longest_edge"] // tile) if images.do_image_splitting else 1

        def tokens(k: int) -> int:
            return (k * k + 1 if k > 1 else 1) * per

        if per > max_image_tokens:
            raise _too_few(max_image_tokens, per, "Idefics3/SmolVLM")
        while tokens(k) > max_image_tokens:
            k -= 1
            images.size = type(images.size)(longest_edge=k * tile)  # the processor's own SizeDict
        return {"longest_edge": images.size["longest_edge"], "image_tokens": tokens(k)}


IDEFICS2 = FamilySpec(
    name="idefics2",
    model_types=("idefics2",),
    model_class="Idefics2ForConditionalGeneration",
    lm_prefix=r"model\.text_model",
    vision_prefix=r"model\.vision_model",
    projector_modules=("model.connector",),
    vision_leaves=CLIP_VISION,
    end_of_turn=EOU,
    chat_template=_template(""),  # no BOS in the text: the Mistral tokenizer adds <s>
    hooks=Idefics2Hooks(),
    notes="Idefics2-8B (+chatty): Mistral-7B, SigLIP, MLP + perceiver connector, 5 sub-images with splitting",
    presets=("configs/idefics2-8b.yaml",),
    verified=(("HuggingFaceM4/idefics2-8b", "shapes+tokenizer"),),
)

# The template writes BOS ("<|begin_of_text|>", SmolVLM's "<|im_start|>"); Llama-3 tokenizers would
# add a second one, so the processor is called with add_special_tokens=False.
IDEFICS3 = replace(
    IDEFICS2,
    name="idefics3",
    model_types=("idefics3",),
    model_class="Idefics3ForConditionalGeneration",
    answer_prefix=" ",  # byte-level BPE (Llama-3, SmolLM2): "Assistant:" + " a" is "Ġa"
    chat_template=_template("{{ bos_token }}"),
    processor_kwargs=(("add_special_tokens", False),),
    hooks=Idefics3Hooks(),
    notes="Idefics3-8B-Llama3 and SmolVLM-256M/500M/2.2B (model_type idefics3): pixel shuffle + linear connector",
    presets=("configs/idefics3-8b.yaml", "configs/smolvlm-256m.yaml"),
    verified=(("HuggingFaceM4/Idefics3-8B-Llama3", "shapes+tokenizer"),
              ("HuggingFaceTB/SmolVLM-256M-Instruct", "shapes+tokenizer")),
)


@cache
def smolvlm_processor_class() -> type:
    """The stock SmolVLMProcessor less its video slot (that needs torchvision, absent beside CPU torch)."""
    from transformers import ProcessorMixin, SmolVLMProcessor

    class SmolVLMImagesProcessor(OnePicturePerPrompt, images_only(SmolVLMProcessor)):
        # SmolVLM's own apply_chat_template reads the (absent) video processor's frame settings
        # first, then renders through ProcessorMixin's: go there directly.
        apply_chat_template = ProcessorMixin.apply_chat_template

        def __init__(self, image_processor=None, tokenizer=None, image_seq_len: int = 169, chat_template=None,
                     **kwargs):
            # Named here because ProcessorMixin saves only __init__'s named arguments: a run's
            # saved processor must keep the checkpoint's image_seq_len (64 for the 256M/500M models).
            super().__init__(image_processor, tokenizer, image_seq_len=image_seq_len, chat_template=chat_template,
                             **kwargs)

    return SmolVLMImagesProcessor


class SmolVLMHooks(Idefics3Hooks):
    def load_processor(self, path: str, offline: bool = False):
        return smolvlm_processor_class().from_pretrained(path, local_files_only=offline)


SMOLVLM = replace(
    IDEFICS3,
    name="smolvlm",
    model_types=("smolvlm",),
    model_class="SmolVLMForConditionalGeneration",
    hooks=SmolVLMHooks(),
    notes="SmolVLM2 (model_type smolvlm; the first SmolVLMs are idefics3): pictures only, no video",
    presets=("configs/smolvlm2-256m.yaml",),
    verified=(("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", "tokenizer"), ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "shapes")),
)
