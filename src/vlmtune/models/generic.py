"""The generic row: any other ``AutoModelForImageTextToText`` checkpoint that ships a chat template.

No explicit row knows its module tree, so one is read off the model itself, never off its name:
- the LM is what ``model.get_decoder()`` returns;
- the vision tower is the outermost submodule named ``vision_tower``, ``visual`` or ``vision_model``;
- the projector is the outermost submodule named ``multi_modal_projector``, ``connector`` or ``merger``.
LoRA targets are the ``nn.Linear`` leaf names inside each part (a leaf name that also names a
non-linear module there is left out, so a pattern never reaches a whole block). Where the
projector sits inside the vision tower (Qwen-style mergers), vision LoRA is scoped to the
tower's layer stack so it cannot reach the projector.

What the checkpoint's chat template says is read off a rendered turn: the text between the
generation prompt and the answer (a space for "Assistant:" templates), the special token that
closes the answer, and whether the template writes BOS itself. Everything a row would otherwise
assert from the model code stays off: no feature cache, the LM head on every position, no
resolution knob. A model that cannot be analysed is refused in one line naming what is missing.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import replace

import torch
from PIL import Image
from torch import nn

from vlmtune.errors import VlmtuneError
from vlmtune.models.family import FamilyHooks, FamilySpec
from vlmtune.models.prompting import PromptAnswerTokenizer, user_turn

GENERIC = "generic"  # the row's name: model.family=generic, and the run marker's family
VISION_NAMES = ("vision_tower", "visual", "vision_model")
PROJECTOR_NAMES = ("multi_modal_projector", "connector", "merger")
_ANSWER = "vlmtune-answer-sentinel"  # rendered as the assistant's text to find what surrounds an answer


def is_image_text_to_text(model_type: str | None) -> bool:
    """Whether transformers maps ``model_type`` to an ``AutoModelForImageTextToText`` class."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    return model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def spec_for_config(config) -> FamilySpec:
    """The generic row for a checkpoint config: its model built on the meta device (no memory), analysed."""
    from transformers import AutoModelForImageTextToText

    model_type = getattr(config, "model_type", None)
    if not is_image_text_to_text(model_type):
        raise VlmtuneError(f"model.family={GENERIC}: model_type {model_type!r} is not an AutoModelForImageTextToText "
                           "type in this transformers, so the generic row cannot load it")
    try:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(config)
    except Exception as err:  # any failure of third-party model code: one line, not a traceback
        raise VlmtuneError(f"generic row: {model_type} could not be built from its config to analyse it "
                           f"({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
    return analyse(model)


def analyse(model) -> FamilySpec:
    """A FamilySpec read off ``model``'s own structure (any device, meta included)."""
    import transformers

    modules = dict(model.named_modules())
    cls = type(model).__name__
    lm = _decoder_path(model, modules)
    vision = _outermost(modules, VISION_NAMES)
    projector = _outermost(modules, PROJECTOR_NAMES)
    missing = [what for what, found in (("language model (get_decoder())", lm),
                                        (f"vision tower ({'/'.join(VISION_NAMES)})", vision),
                                        (f"projector ({'/'.join(PROJECTOR_NAMES)})", projector)) if found is None]
    if missing:
        raise VlmtuneError(f"generic row: cannot analyse {cls}: it has no {' and no '.join(missing)}; "
                           "this model needs a registry row (models/families/)")
    inside = [part for part in (vision, projector) if _under(part, lm)]
    if inside:  # the LM pattern would reach into them
        raise VlmtuneError(f"generic row: cannot analyse {cls}: get_decoder() returns {lm}, which holds "
                           f"{' and '.join(inside)}; this model needs a registry row (models/families/)")
    vision_scope = _vision_scope(modules, vision, projector)
    lm_leaves = _linear_leaves(modules, lm, exclude=None)
    vision_leaves = _linear_leaves(modules, vision_scope, exclude=projector)
    if not lm_leaves:
        raise VlmtuneError(f"generic row: cannot analyse {cls}: its language model {lm} has no nn.Linear layers "
                           "for LoRA; this model needs a registry row (models/families/)")
    model_type = model.config.model_type
    return FamilySpec(
        name=GENERIC,
        model_types=(model_type,),
        model_class=cls if hasattr(transformers, cls) else "AutoModelForImageTextToText",
        lm_prefix=re.escape(lm),
        vision_prefix=re.escape(vision_scope),
        projector_modules=(projector,),
        lm_leaves=lm_leaves,
        vision_leaves=vision_leaves,
        hooks=GenericHooks(),
        feature_cache=False,  # the cache needs the family's get_image_features contract: unknown here
        logits_to_keep=False,  # a boolean logits_to_keep needs a forward that slices with it: unknown here
        notes=f"{model_type} ({cls}), read off its structure",
    )


def _decoder_path(model, modules: dict) -> str | None:
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or decoder is model:
        return None
    return next((name for name, module in modules.items() if module is decoder and name), None)


def _outermost(modules: dict, names: tuple[str, ...]) -> str | None:
    found = [name for name in modules if name.rpartition(".")[2] in names]
    return min(found, key=lambda n: n.count("."), default=None)


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _vision_scope(modules: dict, vision: str, projector: str) -> str:
    """The vision tower, or where the projector lives inside it, the tower's largest layer stack."""
    if not _under(projector, vision):
        return vision
    stacks = [name for name, module in modules.items() if isinstance(module, nn.ModuleList)
              and _under(name, vision) and not _under(projector, name) and not _under(name, projector)]
    if not stacks:
        raise VlmtuneError(f"generic row: the projector {projector} lies inside the vision tower {vision}, which has "
                           "no separate layer stack to scope vision LoRA to; this model needs a registry row")
    return max(stacks, key=lambda n: sum(p.numel() for p in modules[n].parameters()))


def _linear_leaves(modules: dict, scope: str, exclude: str | None) -> tuple[str, ...]:
    """Leaf names of the nn.Linear layers under ``scope`` that name nothing else there."""
    inside = {n: m for n, m in modules.items() if _under(n, scope) and n != scope
              and not (exclude and _under(n, exclude))}
    linear = {n.rpartition(".")[2] for n, m in inside.items() if isinstance(m, nn.Linear)}
    other = {n.rpartition(".")[2] for n, m in inside.items() if not isinstance(m, nn.Linear)}
    return tuple(sorted(linear - other))


class GenericHooks(FamilyHooks):
    """Loading and prompting for a model no row describes: stock AutoProcessor, its own chat template."""

    def load_processor(self, path: str, offline: bool = False):
        processor = super().load_processor(path, offline)
        lacks = [part for part in ("tokenizer", "image_processor") if getattr(processor, part, None) is None]
        if lacks:
            raise VlmtuneError(f"generic row: {path}: AutoProcessor gives a {type(processor).__name__} without "
                               f"{' or '.join(lacks)}; the generic row needs a processor that has both")
        return processor

    def fallback_template(self, spec, config, tokenizer) -> str | None:
        raise VlmtuneError(f"generic row: the {spec.model_types[0]} checkpoint's processor has no chat template; add "
                           "one (chat_template.jinja in the model directory) or use a family with a registry row")

    def limit_image_tokens(self, processor, model_config, max_image_tokens: int) -> dict:
        raise VlmtuneError(f"model.max_image_tokens={max_image_tokens}: the generic row does not know how "
                           f"{type(processor).__name__} sets its resolution; leave model.max_image_tokens unset")

    def for_model(self, spec, model, processor) -> FamilySpec:
        try:
            spec = replace(spec, **turn_format(processor))
            spec = replace(spec, seq_keys=sequence_keys(spec, model, processor))
        except VlmtuneError:
            raise
        except Exception as err:  # the processor and its template are third-party code: one line, not a traceback
            raise VlmtuneError(f"generic row: {type(processor).__name__} could not render and encode one picture with "
                               f"its chat template ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
        print(describe(spec, model))
        return spec


def turn_format(processor) -> dict:
    """answer_prefix, end_of_turn and processor_kwargs as the checkpoint's chat template writes a turn."""
    tok = processor.tokenizer
    turn = user_turn("Describe this picture.")
    prompt = processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
    reply = [{"role": "assistant", "content": [{"type": "text", "text": _ANSWER}]}]
    full = processor.apply_chat_template(turn + reply, tokenize=False)
    found = {}
    if full.startswith(prompt) and _ANSWER in full[len(prompt):]:
        before, _, after = full[len(prompt):].partition(_ANSWER)
        if before.strip() == "":
            found["answer_prefix"] = before  # "Assistant:" templates put the space before the answer
        found["end_of_turn"] = _leading_special(tok, after.lstrip())
    ids = tok(prompt)["input_ids"]
    if tok.bos_token_id is not None and ids[:2] == [tok.bos_token_id] * 2:  # the template writes BOS too
        found["processor_kwargs"] = (("add_special_tokens", False),)
    return found


def _leading_special(tok, text: str) -> str | None:
    """The special token ``text`` starts with (the longest one), or None: the answer ends with EOS."""
    specials = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
    hits = [t for t in specials if t and text.startswith(t)]
    return max(hits, key=len) if hits else None


def sequence_keys(spec: FamilySpec, model, processor) -> tuple[str, ...]:
    """Processor outputs aligned with input_ids (token types, masks) that the model's forward takes."""
    enc = PromptAnswerTokenizer(processor, spec).encode_prompts([Image.new("RGB", (64, 48))], ["Describe."])
    accepted = inspect.signature(model.forward).parameters
    shape = tuple(enc["input_ids"].shape)
    return tuple(k for k, v in enc.items() if k not in ("input_ids", "attention_mask") and k in accepted
                 and isinstance(v, torch.Tensor) and tuple(v.shape) == shape)


def describe(spec: FamilySpec, model) -> str:
    """One line: what the analysis found and what stays off."""
    def count(pattern: str | None) -> int:
        return sum(1 for name, _ in model.named_modules() if pattern and re.fullmatch(pattern, name))

    lm, vision_count = count(spec.lm_pattern()), count(spec.vision_pattern())
    turn_end = spec.end_of_turn or "EOS"
    return (f"generic row for {spec.notes}: LM {spec.lm_prefix.replace(chr(92), '')} ({lm} LoRA linears: "
            f"{', '.join(spec.lm_leaves)}), vision {spec.vision_prefix.replace(chr(92), '')} ({vision_count}), "
            f"projector {spec.projector_modules[0]}; answers end with {turn_end}; "
            "off: feature cache, logits_to_keep (LM head on every position), model.max_image_tokens")
