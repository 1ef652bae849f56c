"""Perceptual hashes (64-bit DCT pHash) and grouping of near-identical pictures.

Two pictures whose hashes differ in few bits look alike even after resizing or re-compression,
which is what turns the same photo in train and test into an inflated test score.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from PIL import Image

SIDE, LOW = 32, 8
DEFAULT_MAX_DISTANCE = 6  # of 64 bits: re-encodes and resizes stay within it, different photos do not
COLOUR_TOLERANCE = 24  # of 255 per channel, mean colour: survives re-encoding, not a recolouring


@cache
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II basis, rows = frequencies."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2 / n)
    m[0] /= np.sqrt(2)
    return m


def phash(im: Image.Image) -> int:
    grey = np.asarray(im.convert("L").resize((SIDE, SIDE), Image.Resampling.LANCZOS), dtype=np.float64)
    c = _dct_matrix(SIDE)
    low = (c @ grey @ c.T)[:LOW, :LOW].ravel()
    # The DC term only says how bright the picture is; leave it out of the threshold.
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def mean_colour(im: Image.Image) -> tuple[int, int, int]:
    r, g, b = np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return round(r), round(g), round(b)


def near_groups(
    hashes: list[int], max_distance: int = DEFAULT_MAX_DISTANCE, colours: list[tuple[int, int, int]] | None = None
) -> list[list[int]]:
    """Indices grouped transitively by hash distance <= max_distance; only groups of two or more.

    pHash sees grey structure only: with ``colours`` a pair must also agree in mean colour, so a red
    and a blue square (different captions) or two plain backgrounds are not called duplicates.
    """
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    values = np.array(hashes, dtype=np.uint64)
    tones = np.array(colours if colours is not None else [(0, 0, 0)] * len(hashes), dtype=np.int64).reshape(-1, 3)
    for i in range(len(values) - 1):
        similar = np.bitwise_count(values[i + 1 :] ^ values[i]) <= max_distance
        similar &= np.abs(tones[i + 1 :] - tones[i]).max(axis=1) <= COLOUR_TOLERANCE
        close = np.nonzero(similar)[0] + i + 1
        for j in close:
            parent[root(int(j))] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(hashes)):
        groups.setdefault(root(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
