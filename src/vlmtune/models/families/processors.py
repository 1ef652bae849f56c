"""Adjustments to stock processor classes that rows load through ``FamilyHooks.load_processor``."""

from __future__ import annotations

from functools import cache


class OnePicturePerPrompt:
    """Mixin: a flat list of pictures beside a list of prompts is one picture per prompt.

    That is how vlmtune batches generation. Mllama's and SmolVLM's processors would instead give
    the whole list to the first prompt (they expect [[picture], [picture], ...]).
    """

    def prepare_inputs_layout(self, images=None, text=None, **kwargs):
        if isinstance(text, list) and isinstance(images, list) and len(images) == len(text):
            images = [[image] for image in images]
        return super().prepare_inputs_layout(images=images, text=text, **kwargs)

    def to_dict(self):  # saved as the stock class, so AutoProcessor still opens a run elsewhere
        stock = next(c for c in type(self).__mro__ if c.__module__.startswith("transformers."))
        return {**super().to_dict(), "processor_class": stock.__name__}


@cache
def picture_per_prompt(base: type) -> type:
    """``base`` (a stock processor class) with ``OnePicturePerPrompt`` mixed in: Mllama, Gemma 3, LFM2-VL."""
    name = base.__name__.removesuffix("Processor") + "PicturePerPrompt"
    return type(name, (OnePicturePerPrompt, base), {"__qualname__": name})
