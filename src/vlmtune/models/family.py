"""``FamilySpec``: what differs between model families, as data (one row per family)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

LLAMA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class FamilySpec:
    """How vlmtune loads, prompts and fine-tunes one model family.

    Module paths are regexes matched with ``re.fullmatch`` against full module names, scoped to
    one sub-model each: vision towers and LMs share leaf names such as ``q_proj``.
    """

    name: str
    model_types: tuple[str, ...]  # config.model_type values this row serves
    model_class: str  # attribute of ``transformers``
    lm_prefix: str  # regex of the language model's module path
    vision_prefix: str  # regex of the vision tower's module path
    projector_modules: tuple[str, ...]  # trained and saved whole with the "projector" target
    lm_leaves: tuple[str, ...] = LLAMA_LEAVES
    vision_leaves: tuple[str, ...] = ()
    # The end-of-turn string that closes an assistant answer (kept in the labels); None = EOS.
    end_of_turn: str | None = None
    # More strings that end generation (e.g. "<|eot_id|>" beside EOS).
    stop_tokens: tuple[str, ...] = ()
    # Prepended to the answer before tokenizing, for templates whose prompt ends without the
    # space SentencePiece expects (e.g. llama-2 "[/INST]").
    answer_prefix: str = ""
    # Used only when the processor ships no chat template of its own.
    chat_template: str | None = None
    # Picks that fallback from data when one row serves checkpoints with different LMs (LLaVA-NeXT:
    # Mistral [INST], Vicuna, Yi ChatML): (config, tokenizer) -> template. Wins over chat_template;
    # load_model installs it on a processor that has none, so saved runs keep it.
    template_for: Callable | None = None
    # Builds the processor instead of AutoProcessor.from_pretrained: (path) -> processor. For stock
    # processors that cannot load here (Qwen-VL's needs torchvision for its video half).
    processor_hook: Callable | None = None
    # Keyword arguments for every processor call, training and generation alike, as (name, value)
    # pairs: e.g. add_special_tokens=False where the chat template writes BOS itself and the
    # tokenizer would add a second one (Llama-3 based Mllama/Idefics3).
    processor_kwargs: tuple[tuple[str, object], ...] = ()
    # Builds the prompt text instead of a chat template: (processor, prompt) -> text.
    prompt_hook: Callable | None = None
    # Replaces PromptAnswerTokenizer.encode for families whose processor builds labels or sequence-aligned
    # tensors itself: (encoder, image, prompt, answer) -> example dict (see models/prompting.py).
    encode_hook: Callable | None = None
    # Model inputs aligned with input_ids on dim 1 (token_type_ids, cross-attention masks...):
    # the collator right-pads them with zeros alongside input_ids.
    seq_keys: tuple[str, ...] = ()
    # Frozen vision features can be computed once per image and fed back via mm_encoder_outputs.
    feature_cache: bool = False
    # The forward accepts a boolean [batch, seq] logits_to_keep (LM head on answer positions only).
    logits_to_keep: bool = True
    # Trained/saved whole with the projector: module paths, or bare nn.Parameter paths such as
    # LLaVA-NeXT's "model.image_newline" (PEFT cannot wrap those; see models/lora.py).
    extra_trainable: tuple[str, ...] = ()
    # What the row covers (checkpoints, quirks): documentation only.
    notes: str = ""

    def lm_pattern(self) -> str:
        return rf"{self.lm_prefix}\.(.*\.)?({'|'.join(self.lm_leaves)})"

    def fallback_template(self, config, tokenizer) -> str | None:
        """The chat template for a checkpoint whose processor ships none."""
        return self.template_for(config, tokenizer) if self.template_for else self.chat_template

    def vision_pattern(self) -> str | None:
        if not self.vision_leaves:
            return None
        return rf"{self.vision_prefix}\.(.*\.)?({'|'.join(self.vision_leaves)})"
