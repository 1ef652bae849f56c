"""Multi-turn chat about one picture: conversation rendering, streamed replies, the command loop.

The first turn renders exactly like the training prompt (``PromptAnswerTokenizer.prompt_text``); later turns
re-render the whole history through the chat template with the image kept in the first user turn,
so the model always sees one image placeholder and one image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TextIO

import torch

from vlmtune.config import EvalConfig
from vlmtune.models.prompting import PromptAnswerTokenizer, user_turn
from vlmtune.errors import VlmtuneError
from vlmtune.evaluation.generate import generation_kwargs
from vlmtune.models.family import FamilySpec

HELP = "commands: /image PATH (new picture, new conversation), /reset (forget the conversation), /quit (or an empty line)"


def chat_messages(history: list[tuple[str, str]], question: str) -> list[dict]:
    """Chat-template messages: the image in the first user turn only, then alternating text turns."""
    messages: list[dict] = []
    for i, (asked, answer) in enumerate([*history, (question, None)]):
        messages += user_turn(asked) if i == 0 else [{"role": "user", "content": [{"type": "text", "text": asked}]}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def render_chat(processor, spec: FamilySpec, history: list[tuple[str, str]], question: str) -> str:
    """Prompt text for the next reply; the first turn is the training prompt, byte for byte."""
    encoder = PromptAnswerTokenizer(processor, spec)
    if not history:
        return encoder.prompt_text(question)
    if not spec.hooks.multi_turn:
        raise VlmtuneError(f"family {spec.name} builds single-turn prompts only; /reset to ask a new question")
    template = getattr(processor, "chat_template", None) or spec.chat_template
    return processor.apply_chat_template(chat_messages(history, question), add_generation_prompt=True,
                                         tokenize=False, chat_template=template)


def _streamer(tokenizer, out: TextIO):
    from transformers import TextStreamer

    class StreamTo(TextStreamer):
        """TextStreamer writes to stdout with print(); this one writes to any stream and flushes."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            out.write(text + ("\n" if stream_end else ""))
            out.flush()

    return StreamTo(tokenizer, skip_prompt=True, skip_special_tokens=True)


@torch.no_grad()
def stream_reply(model, processor, spec: FamilySpec, image, text: str, cfg: EvalConfig, out: TextIO) -> str:
    """Generate from the rendered prompt, writing tokens to ``out`` as they come; returns the reply."""
    encoder = PromptAnswerTokenizer(processor, spec)
    device = next(model.parameters()).device
    inputs = processor(images=[image], text=[text], return_tensors="pt", **dict(spec.processor_kwargs))
    inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    ids = model.generate(**inputs, **generation_kwargs(cfg, encoder), streamer=_streamer(encoder.tokenizer, out))
    return encoder.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@dataclass
class ChatSession:
    model: object
    processor: object
    spec: FamilySpec
    cfg: EvalConfig
    image: object  # model-ready RGB picture
    history: list[tuple[str, str]] = field(default_factory=list)

    def ask(self, question: str, out: TextIO) -> str:
        text = render_chat(self.processor, self.spec, self.history, question)
        answer = stream_reply(self.model.eval(), self.processor, self.spec, self.image, text, self.cfg, out)
        self.history.append((question, answer))
        return answer


def chat_loop(session: ChatSession, lines: Iterable[str], out: TextIO, err: TextIO,
              open_picture: Callable[[str], object], prompt: str = "") -> None:
    """Answer each line until an empty line, /quit or the end of input; notices go to ``err``."""
    for line in _prompted(lines, out, prompt):
        line = line.strip()
        if not line or line in ("/quit", "/exit"):
            return
        if line == "/reset":
            session.history.clear()
            err.write("(conversation cleared)\n")
        elif line.startswith("/image"):
            _switch_image(session, line.removeprefix("/image").strip(), err, open_picture)
        elif line.startswith("/"):
            err.write(HELP + "\n")
        else:
            try:
                session.ask(line, out)
            except VlmtuneError as error:
                err.write(f"error: {error}\n")


def _switch_image(session: ChatSession, path: str, err: TextIO, open_picture) -> None:
    if not path:
        err.write("usage: /image PATH\n")
        return
    try:
        session.image = open_picture(path)
    except VlmtuneError as error:  # a typo in a path should not end the chat
        err.write(f"error: {error}\n")
        return
    session.history.clear()  # the image lives in the first user turn: a new picture starts over
    err.write(f"(new picture {path}; conversation cleared)\n")


def _prompted(lines: Iterable[str], out: TextIO, prompt: str):
    """Lines from ``lines``, writing ``prompt`` before each read (only wanted on a terminal)."""
    iterator = iter(lines)
    while True:
        if prompt:
            out.write(prompt)
            out.flush()
        try:
            yield next(iterator)
        except StopIteration:
            if prompt:
                out.write("\n")
            return
