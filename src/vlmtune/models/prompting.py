"""Prompt + answer -> token ids with answer-only labels: family knowledge, so it lives with the models.

Following torchtune, the prompt (chat template with the image placeholder, expanded into image
tokens by the processor) and the answer are tokenized separately and concatenated, so the label
mask is exact by construction: every prompt position is -100, the answer and its end-of-turn
token are kept, and padding is -100. Generation later continues from exactly the same prompt ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vlmtune.errors import VlmtuneError
from vlmtune.models.family import FamilySpec

IGNORE = -100
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")


def user_turn(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


@dataclass
class PromptAnswerTokenizer:
    """Tokenizes one (image, prompt, answer) sample for one family (not a vision encoder)."""

    processor: object
    spec: FamilySpec
    max_length: int = 512

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    def prompt_text(self, prompt: str) -> str:
        own = self.spec.hooks.prompt_text(self, prompt)
        if own is not None:
            return own
        template = getattr(self.processor, "chat_template", None) or self.spec.chat_template
        if template is None:
            raise VlmtuneError(f"family {self.spec.name}: the processor has no chat template; set one in the registry")
        return self.processor.apply_chat_template(user_turn(prompt), add_generation_prompt=True, tokenize=False, chat_template=template)

    def end_of_turn(self) -> str:
        return self.spec.hooks.end_of_turn(self.spec, self.tokenizer)

    def stop_token_ids(self) -> list[int]:
        """Ids that end generation: the end of turn the labels teach, the row's extra stops, and EOS."""
        tok = self.tokenizer
        stop = {tok.convert_tokens_to_ids(t) for t in (self.end_of_turn(), *self.spec.stop_tokens)}
        return sorted(t for t in stop | {tok.eos_token_id} if t is not None and t != tok.unk_token_id)

    def encode_prompts(self, images: list, prompts: list[str]) -> dict:
        """Left-padded prompt batch for generation (the same prompt ids training used)."""
        texts = [self.prompt_text(p) for p in prompts]
        self.tokenizer.padding_side = "left"
        return self.processor(images=images, text=texts, return_tensors="pt", padding=True, **dict(self.spec.processor_kwargs))

    def answer_ids(self, answer: str) -> list[int]:
        text = self.spec.answer_prefix + answer + self.end_of_turn()
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def room_for_answer(self, prompt_len: int, answer_len: int, where: str) -> int:
        """Answer tokens that fit (all of them); refuses a sample that ``max_length`` would cut.

        Cutting image tokens breaks the model's image-token count; cutting the answer drops its
        end-of-turn token and teaches the model not to stop. Either way the row is named.
        """
        need = prompt_len + answer_len
        if prompt_len >= self.max_length:
            raise VlmtuneError(
                f"{where}: prompt with its image tokens is {prompt_len} tokens, data.max_length="
                f"{self.max_length} would cut image tokens; raise data.max_length to at least {need}"
            )
        if need > self.max_length:
            raise VlmtuneError(
                f"{where}: prompt ({prompt_len} tokens) + answer ({answer_len} tokens with its end of turn) = {need} > "
                f"data.max_length={self.max_length}: the answer would be cut; raise data.max_length to at least "
                f"{need} or shorten the answer"
            )
        return answer_len

    def encode(self, image, prompt: str, answer: str, where: str = "sample") -> dict:
        """{input_ids, labels, truncated, **image inputs}, as the family's hooks build it."""
        return self.spec.hooks.encode(self, image, prompt, answer, where)

    def standard_encode(self, image, prompt: str, answer: str, where: str = "sample") -> dict:
        """Prompt through the processor (image tokens expanded), answer tokenized apart, concatenated."""
        enc = self.processor(images=[image], text=[self.prompt_text(prompt)], return_tensors="pt", **dict(self.spec.processor_kwargs))
        prompt_ids = enc["input_ids"][0].tolist()
        answer_ids = self.answer_ids(answer)
        room = self.room_for_answer(len(prompt_ids), len(answer_ids), where)
        example = {
            "input_ids": prompt_ids + answer_ids[:room],
            "labels": [IGNORE] * len(prompt_ids) + answer_ids[:room],
            "truncated": len(answer_ids) > room,
        }
        example.update({k: v for k, v in enc.items() if k not in TEXT_KEYS})
        for key in self.spec.seq_keys:  # e.g. Qwen-VL's mm_token_type_ids: the answer is text, type 0
            if key in enc:
                example[key] = pad_seq(enc[key], enc[key].shape[1] + len(answer_ids[:room]))
        return example


def pad_seq(value: torch.Tensor, length: int) -> torch.Tensor:
    pad = [0, 0] * (value.dim() - 2) + [0, length - value.shape[1]]
    return torch.nn.functional.pad(value, pad)
