"""The counting task's captions are exact: the number drawn of each kind is the number written."""

import random

import numpy as np

from vlmtune.data.captions import read_table
from vlmtune.data.synth.counting import NUMBERS, counting_scene, synth_counting
from vlmtune.data.synth.shapes import COLOURS


def blobs(mask: np.ndarray, min_pixels: int = 20) -> int:
    """Connected regions (8-neighbour) of a boolean mask, less specks (a star's tip cut off by its outline)."""
    seen, count = np.zeros_like(mask), 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, size = [start], 0
        seen[start] = True
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        count += size >= min_pixels
    return count


def test_caption_counts_match_the_drawn_colour_blobs():
    """One kind per scene: count connected regions of the caption's colour and compare with the caption."""
    checked = 0
    for seed in range(40):
        img, caption = counting_scene(random.Random(seed), 224)
        if " and " in caption:
            continue
        number, colour, _ = caption.split(" ", 2)
        mask = np.all(np.abs(np.asarray(img).astype(int) - COLOURS[colour]) < 8, axis=-1)
        assert blobs(mask) == NUMBERS.index(number) + 1, (seed, caption)
        checked += 1
    assert checked >= 10


def test_synth_counting_writes_the_split_and_is_deterministic(tmp_path):
    a = read_table(synth_counting(tmp_path / "a", n=10, seed=3, size=112, test_ratio=0.2) / "captions.csv")
    b = read_table(synth_counting(tmp_path / "b", n=10, seed=3, size=112, test_ratio=0.2) / "captions.csv")
    assert [r["caption"] for r in a.rows] == [r["caption"] for r in b.rows]
    assert [r["split"] for r in a.rows].count("test") == 2
