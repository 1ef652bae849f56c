"""``vlmtune data template``: the caption template, optionally with captions drafted by a model.

Running a model is orchestration, so it happens here: the data layer only writes the CSV and
calls the captioner it is given for the rows whose caption is still empty.
"""

from __future__ import annotations

from pathlib import Path

from vlmtune.data.schema import DEFAULT_PROMPT
from vlmtune.data.template import TemplateResult, write_template
from vlmtune.evaluation.generate import caption_images


def run_template(folder: Path, test_ratio: float = 0.2, prefill: str | None = None, prompt: str = DEFAULT_PROMPT,
                 batch_size: int = 8) -> TemplateResult:
    """captions.csv in ``folder``; ``prefill`` names a model (hub id, folder or run) that drafts empty captions."""
    captioner = (lambda paths: caption_images(prefill, paths, prompt, batch_size=batch_size)) if prefill else None
    return write_template(folder, test_ratio=test_ratio, prefill=captioner, prefill_name=prefill or "")
