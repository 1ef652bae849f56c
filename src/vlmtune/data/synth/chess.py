"""``vlmtune data synth-chess``: photo-like pictures of 1-3 chess pieces with exact captions.

Pieces are rendered from 3D Staunton meshes (see ``meshes`` and ``render``) so a model trained on
them has a chance with real photos; without the meshes we fall back to Unicode chess glyphs
given the same photographic treatment. Every picture is seeded from (seed, index), so the output
is byte-identical whatever the number of worker processes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from tqdm import tqdm

from vlmtune.data.captions import write_captions
from vlmtune.data.schema import CAPTIONS_FILE, TEST, TRAIN
from vlmtune.data.synth.chess_text import COLOURS, TYPES, Piece, caption_for, pieces_label
from vlmtune.data.synth.meshes import SOURCES, STAUNTON_HEIGHT, load_meshes, mesh_dir
from vlmtune.data.synth.render import HELDOUT_PALETTE, TRAIN_PALETTE, finish, render_scene, set_materials, table_view
from vlmtune.errors import VlmtuneError

FORMAT_VERSION = 1
FIELDS = ["file_name", "caption", "split", "pieces"]
JPEG_QUALITY = 92
MARKER = "synth.json"
FONT_PACKAGE = "fonts-dejavu-core"

_worker: dict = {}  # per-process renderer state: {"meshes": ..., "palette": ...} or {"glyphs": font path}
# Render domains: which mesh set and colours. "heldout" shares nothing with "train" but the
# geometry of a Staunton set: a proxy, kept out of training, for how a model does on real pieces.
DOMAINS = {"train": ("brutalchess", TRAIN_PALETTE), "heldout": ("dreamchess", HELDOUT_PALETTE)}


def synth_chess(out: Path, n: int = 300, seed: int = 0, size: int = 224, test_ratio: float = 0.2,
                workers: int | None = None, domain: str = "train") -> Path:
    """Write ``out/images/chess_#####.jpg`` and ``out/captions.csv``; return ``out``.

    ``domain``: a DOMAINS key. The held-out one needs its meshes (no glyph fallback: glyphs would
    be no proxy for real pieces)."""
    out = Path(out)
    params = {"generator": "chess", "format": FORMAT_VERSION, "n": n, "seed": seed, "size": size,
              "test_ratio": test_ratio, **({"domain": domain} if domain != "train" else {})}
    _check_args(n, size, test_ratio)
    if domain not in DOMAINS:
        raise VlmtuneError(f"domain={domain!r}: use one of {', '.join(DOMAINS)}")
    if _already_done(out, params):
        print(f"chess: {out} already holds this set; nothing to do")
        return out
    if out.exists() and not out.is_dir():
        raise VlmtuneError(f"{out}: is a file; pass a folder to write the chess pictures into")
    if out.exists() and any(out.iterdir()):
        raise VlmtuneError(f"{out}: folder is not empty and holds no chess set made with these parameters; "
                           "pick a new folder or empty this one")
    state = _renderer(domain)
    plans = plan_scenes(seed, n)
    tests = set(held_out_indices(seed, n, round(n * test_ratio)))
    (out / "images").mkdir(parents=True, exist_ok=True)
    jobs = [(i, seed, size, plans[i], str(out / _file_name(i))) for i in range(n)]
    rows = [None] * n
    for i, pieces in _run(jobs, state, workers):
        rows[i] = {"file_name": _file_name(i), "caption": caption_for(pieces), "split": TEST if i in tests else TRAIN,
                   "pieces": pieces_label(pieces)}
    write_captions(out / CAPTIONS_FILE, rows, FIELDS)
    # Written last: its presence means the set is complete, so a re-run can return at once.
    (out / MARKER).write_text(json.dumps({**params, "renderer": next(iter(state))}, indent=1) + "\n")
    return out


def _check_args(n: int, size: int, test_ratio: float) -> None:
    if n < 1:
        raise VlmtuneError(f"n={n}: need at least one picture")
    if size < 32:
        raise VlmtuneError(f"size={size}: pictures must be at least 32 pixels wide")
    if not 0 <= test_ratio <= 1:
        raise VlmtuneError(f"test_ratio={test_ratio}: must be between 0 and 1")


def _already_done(out: Path, params: dict) -> bool:
    try:
        made = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (out / CAPTIONS_FILE).is_file() and all(made.get(k) == v for k, v in params.items())


def _file_name(i: int) -> str:
    return f"images/chess_{i:05d}.jpg"


# ----------------------------------------------------------------------------- sampling
def plan_scenes(seed: int, n: int) -> list[list[Piece]]:
    """Pieces per picture: counts 1-3 equally often, types and colours balanced over the set."""
    rng = np.random.default_rng([seed, n, 7_777_777])  # 3 words: never equal to a picture's (seed, i)
    counts = rng.permutation(np.resize([1, 2, 3], n))
    total = int(counts.sum())
    types = rng.permutation(np.resize(np.arange(len(TYPES)), total))
    colours = rng.permutation(np.resize(np.arange(len(COLOURS)), total))
    ends = np.cumsum(counts)
    return [[(COLOURS[colours[k]], TYPES[types[k]]) for k in range(end - c, end)] for c, end in zip(counts, ends)]


def held_out_indices(seed: int, n: int, k: int) -> list[int]:
    return sorted(np.random.default_rng([seed, n, 9_999_999]).permutation(n)[:k].tolist())


# ----------------------------------------------------------------------------- rendering
def _renderer(domain: str = "train") -> dict:
    source, palette = DOMAINS[domain]
    meshes = load_meshes(source=source)
    if meshes is not None:
        print(f"chess: rendering 3D Staunton meshes ({source}, {domain} colours; cached in {mesh_dir()})")
        return {"meshes": meshes, "palette": palette}
    if domain != "train":
        raise VlmtuneError(f"chess: the {domain} render domain needs the {source} meshes, which could not be "
                           f"fetched (apt-get download {SOURCES[source].package}); run where apt-get reaches Debian")
    font = find_glyph_font()
    print(f"chess: 3D meshes unavailable (could not fetch the Debian package brutalchess with apt-get); "
          f"rendering Unicode glyphs from {font}")
    return {"glyphs": font}


def _run(jobs, state: dict, workers: int | None):
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs)))
    bar = tqdm(total=len(jobs), desc="chess", unit="img")
    if workers == 1:
        _init(state)
        results = map(_render_one, jobs)
    else:
        pool = multiprocessing.get_context().Pool(workers, initializer=_init, initargs=(state,))
        results = pool.imap_unordered(_render_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    try:
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()


def _init(state: dict) -> None:
    _worker.clear()
    _worker.update(state)


def _render_one(job) -> tuple[int, list[Piece]]:
    i, seed, size, pieces, path = job
    rng = np.random.default_rng([seed, i])
    if "meshes" in _worker:
        meshes = [_worker["meshes"][kind] for _, kind in pieces]
        img, order = render_scene(rng, meshes, [colour for colour, _ in pieces], size, _worker["palette"])
        pieces = [pieces[k] for k in order]  # the caption reads the picture left to right
    else:
        img = render_glyphs(rng, _worker["glyphs"], pieces, size)
    img.save(path, quality=JPEG_QUALITY)
    return i, pieces


# ----------------------------------------------------------------------------- glyph fallback
def find_glyph_font() -> str:
    """A font with the chess glyphs (U+2654-265F); Pillow's built-in font has none."""
    candidates = []
    if shutil.which("fc-list"):
        listed = subprocess.run(["fc-list", ":charset=265a", "file"], capture_output=True, text=True, timeout=30)
        candidates = [line.split(":")[0].strip() for line in listed.stdout.splitlines() if line.strip()]
    candidates += [str(p) for p in Path("/usr/share/fonts").rglob("DejaVuSans*.ttf")]
    # Upright, regular weight first: the silhouettes should look like pieces, not italics.
    candidates = sorted(set(candidates), key=lambda p: (Path(p).name != "DejaVuSans.ttf", "Oblique" in p, len(p)))
    for path in candidates:
        if Path(path).is_file():
            return path
    raise VlmtuneError(f"no font with chess glyphs found; install the Debian package {FONT_PACKAGE} (apt-get install {FONT_PACKAGE})")


@lru_cache(maxsize=64)
def _glyph(font_path: str, kind: str, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(silhouette, inner lines) of a piece, ``height`` pixels tall, as float masks."""
    index = TYPES.index(kind)
    filled, outline = _ink(font_path, 200, index)
    filled, outline = _ink(font_path, max(4, round(200 * height / filled.shape[0])), index)
    # The filled glyph has see-through details; flood the outside to get a hole-free silhouette.
    holes = Image.fromarray(((np.maximum(filled, outline) > 0.5) * 255).astype(np.uint8)).copy()  # writable
    ImageDraw.floodfill(holes, (0, 0), 128)
    solid = (np.asarray(holes) != 128).astype(np.float32)
    core = np.asarray(Image.fromarray((solid * 255).astype(np.uint8)).filter(ImageFilter.MinFilter(5)), np.float32)
    return solid, np.maximum(outline, 1 - filled) * core / 255


def _ink(font_path: str, points: int, index: int):
    """The filled and outlined glyph of a piece, cropped together to their ink plus 1 px."""
    font = ImageFont.truetype(font_path, points)
    canvas = []
    for code in (0x265A + index, 0x2654 + index):
        img = Image.new("L", (2 * points, 2 * points))
        ImageDraw.Draw(img).text((points // 2, points // 2), chr(code), font=font, fill=255)
        canvas.append(img)
    left, top, right, bottom = canvas[0].getbbox()
    box = (left - 1, top - 1, right + 1, bottom + 1)
    return [np.asarray(c.crop(box), np.float32) / 255 for c in canvas]


def _shade_glyph(solid, inner, mat, light_x):
    """Fake a turned piece: treat each row as a cylinder lit from the side."""
    cols = np.arange(solid.shape[1])
    inside = solid > 0.5
    left = np.where(inside.any(1), inside.argmax(1), 0)
    right = np.where(inside.any(1), solid.shape[1] - 1 - inside[:, ::-1].argmax(1), 1)
    nx = np.clip((cols - (left + right)[:, None] / 2) / np.maximum((right - left)[:, None] / 2, 1), -1, 1)
    nz = np.sqrt(1 - nx**2)
    ndl = np.clip(nx * light_x + nz * np.sqrt(1 - light_x**2), 0, 1)
    spec = mat["ks"] * ndl ** mat["gloss"] * 2
    rgb = mat["albedo"] * (2.2 * ndl + 0.45)[..., None] + spec[..., None]
    return rgb * (1 - 0.6 * inner)[..., None]


def render_glyphs(rng, font_path: str, pieces: list[Piece], size: int) -> Image.Image:
    """Glyph silhouettes standing on a photographed table, with shading and drop shadows."""
    rgb, depth, _ = table_view(rng, size)
    res = rgb.shape[0]
    materials, light_x = set_materials(rng), rng.uniform(-0.8, 0.8)
    floor = res * rng.uniform(0.8, 0.92)
    tall = floor * rng.uniform(0.7, 0.92)
    sprites = [_glyph(font_path, kind, max(8, round(tall * STAUNTON_HEIGHT[kind]))) for _, kind in pieces]
    gap = res * rng.uniform(-0.02, 0.05)
    width = sum(s.shape[1] for s, _ in sprites) + gap * (len(sprites) - 1)
    scale = min(1.0, 0.95 * res / width)
    x = (res - width * scale) / 2
    for (colour, _), (solid, inner) in zip(pieces, sprites):
        if scale < 1:
            solid, inner = (_resize(m, scale) for m in (solid, inner))
        h, w = solid.shape
        top, left = int(floor - h), int(x)
        _shadow(rgb, solid, top, left, -light_x, rng)
        piece = _shade_glyph(solid, inner, materials[colour], light_x)
        region = rgb[top : top + h, left : left + w]
        a = solid[: region.shape[0], : region.shape[1], None]
        region[:] = region * (1 - a) + piece[: region.shape[0], : region.shape[1]] * a
        depth[top : top + h, left : left + w][a[..., 0] > 0.5] = depth[int(floor) - 1, left]  # upright: one depth
        x += w + gap * scale
    focus = depth[int(floor) - 1, res // 2]
    return finish(rng, rgb, depth, (focus, focus))


def _resize(mask: np.ndarray, scale: float) -> np.ndarray:
    h, w = mask.shape
    img = Image.fromarray((mask * 255).astype(np.uint8)).resize((max(1, round(w * scale)), max(1, round(h * scale))))
    return np.asarray(img, np.float32) / 255


def _shadow(rgb, solid, top, left, direction, rng) -> None:
    """A soft shadow cast sideways and back, squashed onto the table."""
    h, w = solid.shape
    flat = Image.fromarray((solid * 255).astype(np.uint8)).resize((w, max(1, h // 3)))
    pad = max(4, w // 2)
    canvas = Image.new("L", (w + 4 * pad, flat.height + 2 * pad))
    canvas.paste(flat, (2 * pad + int(direction * pad), pad))
    soft = np.asarray(canvas.filter(ImageFilter.GaussianBlur(pad / 3)), np.float32) / 255
    y0, x0 = top + h - flat.height - pad // 2, left - 2 * pad
    ys, xs = slice(max(y0, 0), min(y0 + soft.shape[0], rgb.shape[0])), slice(max(x0, 0), min(x0 + soft.shape[1], rgb.shape[1]))
    cut = soft[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]
    rgb[ys, xs] *= (1 - rng.uniform(0.4, 0.65) * cut)[..., None]
