"""``FamilySpec``: what differs between model families, as data (one row per family).

Where a family needs behaviour rather than data (its own processor class, a prompt built without
a chat template, labels the processor makes itself), it subclasses ``FamilyHooks`` in its own
module and overrides only what differs. Hooks return values; they never rebuild the caller's
objects. Adding a family = one row (+ a hooks subclass if it needs one) + one entry in the shared
test module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LLAMA_LEAVES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class FamilyHooks:
    """The stock transformers way of loading, prompting and encoding; families override what differs.

    ``tok`` arguments are ``models.prompting.PromptAnswerTokenizer`` instances.
    """

    def load_processor(self, path: str, offline: bool = False):
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, local_files_only=offline)

    def fallback_template(self, spec: "FamilySpec", config, tokenizer) -> str | None:
        """The chat template for a checkpoint whose processor ships none (the row's, by default)."""
        return spec.chat_template

    def end_of_turn(self, spec: "FamilySpec", tokenizer) -> str:
        """The string that closes an assistant answer (kept in the labels, and a stop token)."""
        return spec.end_of_turn or tokenizer.eos_token

    def prompt_text(self, tok, prompt: str) -> str | None:
        """The prompt text without a chat template, or None to render the chat template."""
        return None

    def encode(self, tok, image, prompt: str, answer: str, where: str) -> dict:
        """One training example (see ``PromptAnswerTokenizer.encode``)."""
        return tok.standard_encode(image, prompt, answer, where)

    @property
    def multi_turn(self) -> bool:
        """Whether later chat turns can be rendered through the chat template."""
        return True

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        """Set the processor's own resolution arguments so that no picture gets more than
        ``max_image_tokens`` image tokens (``model.max_image_tokens``); never raises a resolution.

        Returns what it set plus ``image_tokens``, the most any picture can get now, or raises a
        ``VlmtuneError`` when the family cannot go that low. Edits ``model_config`` too where the
        model reads the same setting (LLaVA-NeXT's grid pinpoints). The default sets nothing and
        returns {}: every picture gets a fixed count, which the caller measures and checks
        (models/resolution.py). A family whose count varies with the picture must override this.
        """
        return {}

    def for_model(self, spec: "FamilySpec", model, processor) -> "FamilySpec":
        """The row as this loaded checkpoint needs it. Registry rows are fixed data and return
        ``spec``; the generic row (models/generic.py) fills in what it reads off the processor."""
        return spec


DEFAULT_HOOKS = FamilyHooks()


def has_token(tokenizer, token: str) -> bool:
    """Whether ``token`` is one token of the vocabulary, added tokens included. One lookup, not
    ``token in tokenizer.get_vocab()``, which builds the whole vocabulary as a dict (56 ms a call
    on SmolLM2's 49k). An unknown token looks up as the unk id, or None where there is no unk."""
    token_id = tokenizer.convert_tokens_to_ids(token)
    return token_id is not None and token_id != tokenizer.unk_token_id


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
    # Keyword arguments for every processor call, training and generation alike, as (name, value)
    # pairs: e.g. add_special_tokens=False where the chat template writes BOS itself and the
    # tokenizer would add a second one (Llama-3 based Mllama/Idefics3).
    processor_kwargs: tuple[tuple[str, object], ...] = ()
    # Behaviour that is not data (processor class, prompt layout, encoding): see FamilyHooks.
    hooks: FamilyHooks = field(default=DEFAULT_HOOKS, compare=False)
    # Model inputs aligned with input_ids on dim 1 (token_type_ids, cross-attention masks...):
    # the collator right-pads them with zeros alongside input_ids.
    seq_keys: tuple[str, ...] = ()
    # Frozen vision features can be computed once per image and fed back via mm_encoder_outputs.
    feature_cache: bool = False
    # How the model reads cached, projected features: one [views, tokens, dim] tensor (Aya Vision)
    # or a per-picture list (LLaVA).
    pooled_as_tensor: bool = False
    # The forward accepts a boolean [batch, seq] logits_to_keep (LM head on answer positions only).
    logits_to_keep: bool = True
    # Trained/saved whole with the projector: module paths, or bare nn.Parameter paths such as
    # LLaVA-NeXT's "model.image_newline" (PEFT cannot wrap those; see models/lora.py).
    extra_trainable: tuple[str, ...] = ()
    # What the row covers (checkpoints, quirks): documentation only.
    notes: str = ""
    # Example configs (configs/*.yaml) that start from a checkpoint of this row (`vlmtune families`).
    presets: tuple[str, ...] = ()
    # Published checkpoints the row was checked against, as (hub id, how): "shapes" = its real config
    # built on the meta device (parameter count, exact LoRA targets); "tokenizer" = prompts and labels
    # with its chat template and a real tokenizer of its kind; "trained" = fine-tuned end to end.
    # Documentation, kept honest by tests/unit/test_families_command.py.
    verified: tuple[tuple[str, str], ...] = ()

    def lm_pattern(self) -> str:
        return rf"{self.lm_prefix}\.(.*\.)?({'|'.join(self.lm_leaves)})"

    def fallback_template(self, config, tokenizer) -> str | None:
        """The chat template for a checkpoint whose processor ships none."""
        return self.hooks.fallback_template(self, config, tokenizer)

    def vision_pattern(self) -> str | None:
        if not self.vision_leaves:
            return None
        return rf"{self.vision_prefix}\.(.*\.)?({'|'.join(self.vision_leaves)})"
