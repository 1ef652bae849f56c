"""What ``check`` needs to know about one picture, computed in a worker process."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vlmtune.data.images import (
    DEFAULT_MAX_PIXELS,
    JPEG_FORMATS,
    ORIENTATION,
    UnusableImage,
    decode,
    first_line,
    open_image,
    to_rgb,
    upright,
)
from vlmtune.data.phash import SIDE, mean_colour, phash

_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the picture by 90 degrees


@dataclass(frozen=True)
class ImageInfo:
    width: int = 0  # as displayed, i.e. after EXIF orientation
    height: int = 0
    format: str = ""
    phash: int = 0
    colour: tuple[int, int, int] = (0, 0, 0)
    sha256: str = ""
    error: str | None = None


def inspect_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Fully decodes (truncation only shows there) but JPEGs at 1/8 scale: the hash needs 32x32."""
    try:
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        with open_image(path, max_pixels) as im:
            width, height = im.size
            if im.getexif().get(ORIENTATION, 1) in _SWAPS_SIDES:
                width, height = height, width
            fmt = im.format or ""
            if fmt in JPEG_FORMATS:
                im.draft(None, (SIDE, SIDE))
            decode(im)
            small = to_rgb(upright(im))
            return ImageInfo(width, height, fmt, phash(small), mean_colour(small), digest)
    except UnusableImage as err:
        return ImageInfo(error=err.reason)
    except Exception as err:  # reported as this file's problem; the check goes on
        return ImageInfo(error=first_line(err))
