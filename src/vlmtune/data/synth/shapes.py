"""Generic scenes with exact captions: the stage-1 alignment data of the default model.

Deliberately nothing like chess (so the chess before/after stays meaningful): 1-3 coloured
shapes, letters or digits, small or large, listed left to right — "a large green triangle",
"a small white circle and a red letter K". Drawing is cheap (about 1 ms a picture).
"""

from __future__ import annotations

import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

from vlmtune.data.synth import write_scenes

COLOURS = {
    "red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 70, 220), "yellow": (240, 210, 20),
    "orange": (245, 130, 20), "purple": (140, 40, 170), "white": (245, 245, 245), "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle", "star", "cross")
GLYPHS = "ABCEFHKMRSTXZ2345789"


def _font(size: int) -> ImageFont.ImageFont:
    for name in ("DejaVuSans-Bold.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size)


def _polygon(kind: str, cx: float, cy: float, r: float, turn: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(turn + math.pi / 4 + k * math.pi / 2), math.sin(turn + math.pi / 4 + k * math.pi / 2)) for k in range(4)]
    elif kind == "triangle":
        pts = [(math.cos(-math.pi / 2 + k * 2 * math.pi / 3), math.sin(-math.pi / 2 + k * 2 * math.pi / 3)) for k in range(3)]
    elif kind == "star":
        pts = [((1 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                (1 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    else:  # cross
        a, b = 1.0, 0.33
        pts = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]
    return [(cx + r * x, cy + r * y) for x, y in pts]


def _background(rng: random.Random, size: int, avoid: set[str]) -> Image.Image:
    names = [n for n in COLOURS if n not in avoid]
    base = COLOURS[rng.choice(names)] if rng.random() < 0.3 else tuple(rng.randint(90, 200) for _ in range(3))
    img = Image.new("RGB", (size, size), base)
    if rng.random() < 0.5:  # a soft gradient, like uneven light
        overlay = Image.linear_gradient("L").resize((size, size)).rotate(rng.uniform(0, 360))
        img = Image.composite(img, Image.new("RGB", img.size, tuple(int(c * 0.7) for c in base)), overlay)
    return img


def _draw_object(draw: ImageDraw.ImageDraw, obj: dict, cx: float, cy: float, r: float, rng: random.Random) -> None:
    fill = COLOURS[obj["colour"]]
    outline = (0, 0, 0) if obj["colour"] != "black" else (90, 90, 90)
    if obj["kind"] == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=outline)
    elif obj["kind"] in SHAPES:
        draw.polygon(_polygon(obj["kind"], cx, cy, r, rng.uniform(-0.3, 0.3)), fill=fill, outline=outline)
    else:
        draw.text((cx, cy), obj["glyph"], font=_font(int(2.2 * r)), fill=fill, anchor="mm", stroke_width=1, stroke_fill=outline)


def article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def describe(obj: dict) -> str:
    if obj["kind"] in SHAPES:
        return article(f"{obj['size']} {obj['colour']} {obj['kind']}")
    word = "digit" if obj["glyph"].isdigit() else "letter"
    return article(f"{obj['colour']} {word} {obj['glyph']}")


def join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def scene(rng: random.Random, size: int) -> tuple[Image.Image, str]:
    count = rng.choice((1, 1, 2, 2, 3))
    objs = []
    for _ in range(count):
        glyph = rng.random() < 0.25
        objs.append({
            "kind": "glyph" if glyph else rng.choice(SHAPES), "glyph": rng.choice(GLYPHS),
            "colour": rng.choice(list(COLOURS)), "size": rng.choice(("small", "large")),
        })
    img = _background(rng, size, {o["colour"] for o in objs})
    draw = ImageDraw.Draw(img)
    slot = size / count
    for i, obj in enumerate(objs):  # left to right, one slot each: the caption order is spatial
        r = slot * (0.36 if obj["size"] == "large" or obj["kind"] == "glyph" else 0.2)
        r = min(r, size * 0.3 if obj["size"] == "large" else size * 0.14)
        cx = slot * (i + 0.5) + rng.uniform(-0.08, 0.08) * slot
        cy = size * rng.uniform(0.35, 0.65)
        _draw_object(draw, obj, cx, cy, r, rng)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.9)))
    return img, join([describe(o) for o in objs])


def synth_shapes(out: Path, n: int = 1000, seed: int = 0, size: int = 112, test_ratio: float = 0.1) -> Path:
    """Write ``out/images/shape_NNNNN.png`` and ``out/captions.csv`` (file_name, caption, split)."""
    return write_scenes(out, n, test_ratio, "shape", lambda i: scene(random.Random(f"{seed}:{i}"), size))
