"""Augmentations that keep a caption true: the picture changes, what it shows does not.

A few dozen photos are few enough for a model to learn their lighting and framing instead of
their subject. Photometric changes (exposure, contrast, saturation, colour temperature, blur,
JPEG quality) and a mild zoom-out with a shift are on by default: none of them can add, remove
or move an object relative to another. Zooming *in* could cut a piece at the edge off and make
"three pieces" false, so the scale jitter only shrinks the picture onto a canvas of its own
border colour. Flips and rotations are opt-in per dataset: a caption may say "left" or "upright".

Every output keeps the input's size, so a family that counts image tokens from the picture's
size gets the same tokens for every view. A view is a pure function of (seed, picture, view):
the feature cache can precompute views and an uncached run trains on exactly the same pixels.
"""

from __future__ import annotations

import io
import random
from PIL import Image, ImageEnhance, ImageFilter, ImageStat

from vlmtune.config import AugmentConfig


def active(aug: AugmentConfig) -> bool:
    """Whether views differ from the picture (unset views, before the schedule decides, count as off)."""
    return (aug.views or 1) > 1 and (aug.photometric or aug.scale_jitter > 0 or aug.flip or aug.rotate > 0)


def view_rng(seed: int, index: int, view: int) -> random.Random:
    # A string seed hashes stably across processes (Python's hash() of a tuple does not).
    return random.Random(f"vlmtune-augment/{seed}/{index}/{view}")


def augment(image: Image.Image, aug: AugmentConfig, rng: random.Random) -> Image.Image:
    """One augmented view of an RGB picture, the same size as ``image``."""
    out = image
    if aug.flip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if aug.rotate > 0:
        out = _rotate(out, rng.uniform(-aug.rotate, aug.rotate))
    if aug.scale_jitter > 0:
        out = _zoom_out(out, rng.uniform(1 - aug.scale_jitter, 1.0), rng)
    if aug.photometric:
        out = _photometric(out, rng)
    return out


def _border_colour(image: Image.Image) -> tuple[int, ...]:
    w, h = image.size
    strips = [image.crop(box) for box in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h))]
    means = [ImageStat.Stat(s).mean for s in strips]
    return tuple(round(sum(m[c] for m in means) / len(means)) for c in range(len(means[0])))


def _zoom_out(image: Image.Image, scale: float, rng: random.Random) -> Image.Image:
    """The whole picture shrunk by ``scale`` and placed anywhere on a same-size canvas: nothing is cut."""
    w, h = image.size
    sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
    if (sw, sh) == (w, h):
        return image
    canvas = Image.new(image.mode, (w, h), _border_colour(image))
    canvas.paste(image.resize((sw, sh), Image.Resampling.BILINEAR), (rng.randint(0, w - sw), rng.randint(0, h - sh)))
    return canvas


def _rotate(image: Image.Image, degrees: float) -> Image.Image:
    """Rotated with its corners kept (expand), then fitted back into the original size."""
    w, h = image.size
    turned = image.rotate(degrees, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=_border_colour(image))
    scale = min(w / turned.width, h / turned.height)
    turned = turned.resize((max(1, round(turned.width * scale)), max(1, round(turned.height * scale))),
                           Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, (w, h), _border_colour(image))
    canvas.paste(turned, ((w - turned.width) // 2, (h - turned.height) // 2))
    return canvas


def _photometric(image: Image.Image, rng: random.Random) -> Image.Image:
    """Exposure, contrast, saturation and white balance always; blur and JPEG re-encoding sometimes,
    as a phone's shake and its messenger app's compression would."""
    out = ImageEnhance.Brightness(image).enhance(rng.uniform(0.75, 1.25))
    out = ImageEnhance.Contrast(out).enhance(rng.uniform(0.75, 1.25))
    out = ImageEnhance.Color(out).enhance(rng.uniform(0.8, 1.2))
    warm = rng.uniform(-0.08, 0.08)  # tungsten to shade
    r, g, b = out.split()
    out = Image.merge("RGB", (r.point(lambda v: min(255, round(v * (1 + warm)))), g,
                              b.point(lambda v: min(255, round(v * (1 - warm))))))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0) * max(out.size) / 224))
    if rng.random() < 0.5:
        buffer = io.BytesIO()
        out.save(buffer, format="JPEG", quality=rng.randint(35, 90))
        out = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return out
