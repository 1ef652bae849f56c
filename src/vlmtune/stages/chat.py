"""``vlmtune chat MODEL --image PATH``: talk about one picture, replies streamed as they are generated.

Reads one question per line from stdin (a terminal or a pipe); see ``evaluation/chat.py`` for the
commands and how the conversation is rendered.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from vlmtune.data.pictures import open_picture
from vlmtune.evaluation.chat import HELP, ChatSession, chat_loop
from vlmtune.models.loading import load_for_inference
from vlmtune.run_dir import inference_config

CHAT_MAX_NEW_TOKENS = 256  # eval's 32 suits captions, not conversation


def run_chat(model: Path, image: Path, overrides: list[str] | None = None,
             stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> ChatSession:
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    picture = open_picture(image)  # before the model loads: a wrong path fails at once
    overrides = overrides or []
    if not any(o.startswith("eval.max_new_tokens=") for o in overrides):
        overrides = [f"eval.max_new_tokens={CHAT_MAX_NEW_TOKENS}", *overrides]
    cfg = inference_config(model, overrides)
    net, processor, spec = load_for_inference(model, dtype=cfg.model.dtype)
    session = ChatSession(net, processor, spec, cfg.eval, picture)
    interactive = stdin.isatty()
    if interactive:
        stderr.write(f"chatting about {image} with {model}\n{HELP}\n")
    chat_loop(session, stdin, stdout, stderr, open_picture, prompt="> " if interactive else "")
    return session
