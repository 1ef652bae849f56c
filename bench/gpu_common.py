"""Pieces the GPU bench scripts share: a JSON recorder that survives a timeout, the word-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import families_tiny  # tests/ is on sys.path (set by the script that imports this module)


class Recorder:
    def __init__(self, path: Path):
        self.path, self.results = path, {}
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, name: str, **values) -> None:
        self.results[name] = values
        print(name, json.dumps(values, default=str), flush=True)
        self.path.write_text(json.dumps(self.results, indent=1, default=str))  # partial results survive a timeout


def word_tokenizer():
    """The tiny word-level tokenizer with LLaVA-NeXT-Mistral's special tokens (random weights need no real one)."""
    specials, bos, eos, pad, _ = families_tiny.NEXT_SPECIALS["mistral"]
    return families_tiny.word_tokenizer(specials, bos, eos, pad, bos_first=True)
