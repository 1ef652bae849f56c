"""Opening whatever a phone or a folder holds and turning it into plain 8-bit RGB.

Pillow decodes; this module adds the checks that give one-line reasons for unusable files and the
mode handling that a bare ``convert("RGB")`` gets wrong (16-bit, alpha, CMYK with a profile).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Suffixes we list as pictures (template, check). Conversion still tries every file, so a photo
# with a missing or odd extension is not lost.
IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .webp .heic .heif .hif .avif .gif .tif .tiff .bmp".split()
)
# Pillow opens some RAW files as TIFF and silently returns their small embedded preview.
RAW_SUFFIXES = frozenset(".dng .cr2 .cr3 .nef .arw .orf .rw2 .raf .srw .pef".split())
# Formats that training code may fail to read without extra plugins.
NON_PORTABLE_FORMATS = frozenset({"HEIF"})
# Phone JPEGs are often MPO: extra frames are gain maps or depth, not pictures worth a note.
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# 256 MP covers the largest phone sensors (200 MP); Pillow's own default refuses those.
DEFAULT_MAX_PIXELS = 256_000_000
ORIENTATION, GPS_IFD = 0x0112, 0x8825
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


class UnusableImage(Exception):
    """A file that cannot become a training picture; ``reason`` is one line for the user."""

    def __init__(self, reason: str, not_image: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.not_image = not_image


@cache
def register_plugins() -> None:
    """HEIC/HEIF support; AVIF and WebP are native in Pillow 13."""
    try:
        import pillow_heif
    except ImportError:  # HEIC files then fail with Pillow's own 'cannot identify' reason
        return
    pillow_heif.register_heif_opener()


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def bomb_reason(width: int, height: int, max_pixels: int) -> str:
    return (
        f"decompression bomb guard: {width}x{height} = {width * height:,} pixels exceeds the limit "
        f"of {max_pixels:,} (raise --max-pixels if the picture is genuine)"
    )


@contextmanager
def open_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Iterator[Image.Image]:
    """The opened, not yet decoded image, after every check that needs no decoding."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise UnusableImage("empty file (0 bytes)")
    if path.suffix.lower() in RAW_SUFFIXES:
        raise UnusableImage("camera RAW is not supported: export it as JPEG first")
    register_plugins()
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow only errors at twice this; the check below at once
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except UnidentifiedImageError:
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise UnusableImage("corrupt or unsupported image data (no decoder recognises it)") from None
        raise UnusableImage("not an image", not_image=True) from None
    except Image.DecompressionBombError as err:
        raise UnusableImage(f"decompression bomb guard: {err}") from None
    except Exception as err:  # plugins raise many types on malformed headers
        raise UnusableImage(f"unreadable image header ({first_line(err)})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    try:
        if im.width * im.height > max_pixels:
            raise UnusableImage(bomb_reason(im.width, im.height, max_pixels))
        yield im
    finally:
        im.close()


def decode(im: Image.Image) -> None:
    """Load the pixels; a truncated file only fails here, not at open."""
    try:
        im.load()
    except MemoryError:
        raise UnusableImage("too large to decode in memory (lower --max-pixels or --workers)") from None
    except Exception as err:
        raise UnusableImage(f"truncated or corrupt image data ({first_line(err)})") from None


def frame_note(im: Image.Image) -> str | None:
    frames = getattr(im, "n_frames", 1)
    return f"first of {frames} frames used" if frames > 1 and im.format not in JPEG_FORMATS else None


def upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; the result carries no orientation tag any more."""
    if im.getexif().get(ORIENTATION, 1) == 1:
        return im  # exif_transpose would copy the whole picture for nothing
    return ImageOps.exif_transpose(im)


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB that looks like the original: high bit depths scaled, transparency on white."""
    if im.mode in _SIXTEEN_BIT or im.mode in ("I", "F"):
        return Image.fromarray(_scale_to_8bit(np.asarray(im))).convert("RGB")
    if im.mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, "white"), rgba).convert("RGB")
    icc = im.info.get("icc_profile")
    if icc and im.mode in ("RGB", "CMYK"):
        converted = _to_srgb(im, icc)
        if converted is not None:
            return converted
    if im.mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except ValueError:
        raise UnusableImage(f"unsupported colour mode {im.mode}") from None


def model_rgb(im: Image.Image) -> Image.Image:
    """What every model input goes through: upright (EXIF) and 8-bit RGB (16-bit, alpha handled)."""
    return to_rgb(upright(im))


def _scale_to_8bit(values: np.ndarray) -> np.ndarray:
    """16-bit data keeps its tone (0..65535 -> 0..255); only unknown ranges are stretched."""
    is_float = values.dtype.kind == "f"
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if is_float and low >= 0 and high <= 1:
        top = 1.0
    elif low >= 0 and high <= 65535:
        top = 65535.0
    else:
        values, top = values - low, max(high - low, 1.0)
    return np.clip(np.rint(values * 255.0 / top), 0, 255).astype(np.uint8)


def _to_srgb(im: Image.Image, icc: bytes) -> Image.Image | None:
    """Display-P3 phone photos and print CMYK files look wrong unless mapped through their profile."""
    from PIL import ImageCms

    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode == "RGB" and "srgb" in ImageCms.getProfileDescription(source).lower():
            return None
        return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # a broken profile should not cost the picture; fall back to plain convert
        return None


def exif_bytes(im: Image.Image, keep_gps: bool) -> bytes | None:
    """EXIF to carry into the output: never orientation (pixels are upright), GPS only on request."""
    try:
        exif = im.getexif()
        exif.pop(ORIENTATION, None)
        if not keep_gps:
            exif.pop(GPS_IFD, None)
        return exif.tobytes() if len(exif) else None
    except Exception:  # malformed maker notes must not cost the picture; its metadata is expendable
        return None


def render_jpeg(
    path: Path, quality: int, max_side: int | None, max_pixels: int, keep_gps: bool = False
) -> tuple[bytes, list[str]]:
    """The converted JPEG bytes of one file and notes worth telling the user."""
    with open_image(path, max_pixels) as im:
        notes = [n for n in [frame_note(im)] if n]
        if max_side and im.format in JPEG_FORMATS:
            im.draft(None, (max_side, max_side))  # DCT-domain downscale: less memory and time
        decode(im)
        im = upright(im)
        exif = exif_bytes(im, keep_gps)
        rgb = to_rgb(im)  # may be ``im`` itself, so encode before the file closes
        if max_side and max(rgb.size) > max_side:
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        rgb.save(buf, "JPEG", quality=quality, **({"exif": exif} if exif else {}))
    return buf.getvalue(), notes


def list_images(folder: Path) -> list[str]:
    """POSIX paths, relative to ``folder``, of the pictures below it (hidden entries skipped)."""
    names = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = Path(root).relative_to(folder)
        names += [(rel / f).as_posix() for f in sorted(files) if _is_picture_name(f)]
    return names


def _is_picture_name(name: str) -> bool:
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES
