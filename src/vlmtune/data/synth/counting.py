"""Counting scenes with exact captions: a third small-data task beside chess and shapes.

One or two kinds of shape, one to five of each, scattered without overlap: "three red stars",
"two blue circles and four yellow crosses" (kinds in a fixed order, so the caption is unique).
Unlike the shape scenes of the alignment set, the answer hinges on a number the model must count.
"""

from __future__ import annotations

import random
from pathlib import Path

from PIL import ImageDraw

from vlmtune.data.synth import write_scenes
from vlmtune.data.synth.shapes import COLOURS, SHAPES, _background, _draw_object, join

NUMBERS = ("one", "two", "three", "four", "five")


def _plural(count: int, colour: str, kind: str) -> str:
    noun = kind + ("es" if kind.endswith(("s", "x")) and count > 1 else "s" if count > 1 else "")
    return f"{NUMBERS[count - 1]} {colour} {noun}"


def _spots(rng: random.Random, n: int, size: int, r: float) -> list[tuple[float, float]]:
    """``n`` centres at least 2.2 r apart inside the frame (rejection sampling; a small grid as fallback)."""
    spots: list[tuple[float, float]] = []
    for _ in range(400):
        if len(spots) == n:
            return spots
        p = (rng.uniform(r * 1.2, size - r * 1.2), rng.uniform(r * 1.2, size - r * 1.2))
        if all((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2 >= (2.2 * r) ** 2 for q in spots):
            spots.append(p)
    step = size / 4
    return [(step * (0.5 + i % 4), step * (0.5 + i // 4)) for i in range(n)]


def counting_scene(rng: random.Random, size: int):
    kinds = sorted(rng.sample(SHAPES, rng.choice((1, 1, 2))), key=SHAPES.index)
    groups = [(kind, rng.choice([c for c in COLOURS if c not in ("white", "black")]), rng.randint(1, 5)) for kind in kinds]
    img = _background(rng, size, {colour for _, colour, _ in groups})
    draw = ImageDraw.Draw(img)
    r = size * 0.07
    centres = iter(_spots(rng, sum(n for *_, n in groups), size, r))
    for kind, colour, n in groups:
        for _ in range(n):
            cx, cy = next(centres)
            _draw_object(draw, {"kind": kind, "colour": colour}, cx, cy, r, rng)
    return img, join([_plural(n, colour, kind) for kind, colour, n in groups])


def synth_counting(out: Path, n: int = 200, seed: int = 0, size: int = 224, test_ratio: float = 0.2) -> Path:
    """Write ``out/images/count_NNNNN.png`` and ``out/captions.csv`` (file_name, caption, split)."""
    return write_scenes(out, n, test_ratio, "count", lambda i: counting_scene(random.Random(f"count:{seed}:{i}"), size))
