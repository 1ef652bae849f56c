"""Picture files given for inference (predict, chat, the web page): listed, checked, opened.

Each failure is one line naming the file, raised before a model is loaded where possible.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from vlmtune.data.images import DEFAULT_MAX_PIXELS, UnusableImage, decode, list_images, model_rgb, open_image
from vlmtune.errors import VlmtuneError


def picture_paths(items: list[Path]) -> list[Path]:
    """Files as given, folders expanded to the pictures below them (sorted); missing ones refused."""
    paths: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            found = [item / name for name in list_images(item)]
            if not found:
                raise VlmtuneError(f"{item}: folder holds no pictures")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise VlmtuneError(f"{item}: no such file")
    if not paths:
        raise VlmtuneError("no pictures given")
    return paths


def check_picture(path: Path) -> None:
    """Header checks only (no decoding): missing plugin, not an image, corrupt header, bomb guard."""
    try:
        with open_image(path):
            pass
    except UnusableImage as err:
        raise VlmtuneError(f"{path}: {err.reason}") from None
    except OSError as err:
        raise VlmtuneError(f"{path}: cannot read ({err.strerror or err})") from None


def open_picture(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """What the model sees: decoded, EXIF-upright 8-bit RGB (HEIC via the pillow-heif plugin).

    ``max_pixels``: the decompression-bomb guard (the web page sets a lower one than convert)."""
    path = Path(path)
    if not path.is_file():
        raise VlmtuneError(f"{path}: no such file")
    try:
        with open_image(path, max_pixels) as im:
            decode(im)
            rgb = model_rgb(im)
            return rgb.copy() if rgb is im else rgb  # closing the file would invalidate ``im`` itself
    except UnusableImage as err:
        raise VlmtuneError(f"{path}: {err.reason}") from None
    except OSError as err:
        raise VlmtuneError(f"{path}: cannot read ({err.strerror or err})") from None
