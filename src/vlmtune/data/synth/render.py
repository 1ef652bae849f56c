"""A small numpy renderer that makes chess pieces on a table look photographed.

Pipeline per picture: lay the pieces out side by side (sometimes staggered in depth so one hides
part of another), aim a perspective camera down at them and frame them tightly, rasterise all
triangles at once with a z-buffer (``np.minimum.at`` on packed depth|triangle keys), then shade
every pixel once: Lambert + Blinn specular + a sky reflection from a random key light, a shadow
map for cast and self shadows, a procedural table (wood, cloth, chess board, paper) on a
perspective ground plane, and camera effects (depth of field, white balance, vignette, noise).
Rendering happens at twice the output size and is box-downsampled, which anti-aliases edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from vlmtune.data.synth.meshes import Mesh

SHADOW_RES = 160
NO_HIT = np.iinfo(np.int64).max


# ----------------------------------------------------------------------------- rasteriser
def rasterize(sx, sy, depth, faces, width, height, cull):
    """Nearest triangle per covered pixel: (pixel index, triangle index, screen barycentrics).

    ``depth`` must be affine in screen space (1/z for a perspective view) with smaller = nearer.
    Triangles are bucketed by bounding-box size so each bucket tests a fixed K*K pixel grid in one
    vectorised step; no Python loop runs per triangle or per pixel.
    """
    x, y, d = sx[faces], sy[faces], depth[faces]
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    x0 = np.clip(np.ceil(x.min(1) - 0.5), 0, width).astype(np.int64)
    x1 = np.clip(np.floor(x.max(1) - 0.5), -1, width - 1).astype(np.int64)
    y0 = np.clip(np.ceil(y.min(1) - 0.5), 0, height).astype(np.int64)
    y1 = np.clip(np.floor(y.max(1) - 0.5), -1, height - 1).astype(np.int64)
    keep = (x1 >= x0) & (y1 >= y0) & ((area < -1e-12) if cull else (np.abs(area) > 1e-12))
    span = np.maximum(x1 - x0, y1 - y0) + 1
    bucket = np.ceil(np.log2(np.maximum(span, 1))).astype(np.int64)
    dmin, dmax = d[keep].min(initial=0.0), d[keep].max(initial=1.0)
    dscale = (2**30) / max(dmax - dmin, 1e-12)
    zbuf = np.full(width * height, NO_HIT, np.int64)
    for b in np.unique(bucket[keep]):
        ids = np.flatnonzero(keep & (bucket == b))
        k = 1 << int(b)
        oy, ox = np.divmod(np.arange(k * k), k)
        px, py = x0[ids, None] + ox, y0[ids, None] + oy
        w = _barycentric(x[ids, None], y[ids, None], area[ids, None], px + 0.5, py + 0.5)
        inside = (w[0] >= 0) & (w[1] >= 0) & (w[2] >= 0) & (px <= x1[ids, None]) & (py <= y1[ids, None])
        z = w[0] * d[ids, 0, None] + w[1] * d[ids, 1, None] + w[2] * d[ids, 2, None]
        key = (np.clip((z - dmin) * dscale, 0, 2**30).astype(np.int64) << 32) | ids[:, None]
        np.minimum.at(zbuf, (py * width + px)[inside], key[inside])
    pix = np.flatnonzero(zbuf != NO_HIT)
    tri = (zbuf[pix] & 0xFFFFFFFF).astype(np.int64)
    py, px = np.divmod(pix, width)
    w = _barycentric(x[tri], y[tri], area[tri], px + 0.5, py + 0.5)
    return pix, tri, np.stack([np.clip(c, 0, 1) for c in w], -1)


def _barycentric(x, y, area, px, py):
    w0 = ((x[..., 1] - px) * (y[..., 2] - py) - (x[..., 2] - px) * (y[..., 1] - py)) / area
    w1 = ((x[..., 2] - px) * (y[..., 0] - py) - (x[..., 0] - px) * (y[..., 2] - py)) / area
    return w0, w1, 1.0 - w0 - w1


def xform(p, m):
    """``p @ m.T`` for (N, 3) points, spelled out: BLAS threads fighting over busy cores made the
    matmul ten times slower than these three multiply-adds."""
    return p[:, :1] * m[:, 0] + p[:, 1:2] * m[:, 1] + p[:, 2:3] * m[:, 2]


# ----------------------------------------------------------------------------- scene
def place_pieces(rng, radii) -> tuple[np.ndarray, np.ndarray]:
    """Lateral (x) and depth (z, + towards camera) positions of pieces in a row, left to right."""
    xs, zs = [], []
    for i, r in enumerate(radii):
        z = rng.uniform(-0.45, 0.45) * r * 2 if i and rng.random() < 0.35 else rng.uniform(-0.05, 0.05)
        x = xs[-1] + 0.55 * (radii[i - 1] + r) if i else 0.0
        # Slide right until clear of every earlier piece; staggered pieces may overlap on screen.
        while any(np.hypot(x - xj, z - zj) < rj + r + 0.02 for xj, zj, rj in zip(xs, zs, radii)):
            x += 0.02
        xs.append(x + rng.uniform(0.0, 0.08) * (i > 0))
        zs.append(z)
    xs = np.asarray(xs)
    return xs - (xs.min() + xs.max()) / 2, np.asarray(zs) - np.mean(zs)


def _pose(rng, mesh: Mesh, azimuth: float):
    """Per-piece (x/y/z scale, yaw rotation): Staunton designs vary a little in proportions."""
    sx, sy = rng.uniform(0.9, 1.12), rng.uniform(0.93, 1.07)
    yaw = rng.uniform(0, 2 * np.pi)
    if np.ptp(mesh.vertices[:, 0]) > 1.2 * np.ptp(mesh.vertices[:, 2]) and rng.random() < 0.7:
        # The knight is told apart by its profile, which is also how people photograph it.
        yaw = azimuth + rng.choice([0, np.pi]) + rng.normal(0, 0.5)
    rot = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    return np.array([sx, sy, sx]), rot


def build_scene(rng, meshes: list[Mesh]):
    """World-space triangles of all pieces, with per-vertex piece id and piece-local coordinates."""
    az = rng.uniform(0, 2 * np.pi)
    poses = [_pose(rng, m, az) for m in meshes]
    radii = np.array([m.radius * scale[0] for m, (scale, _) in zip(meshes, poses)])
    xs, zs = place_pieces(rng, radii)
    right, toward = np.array([np.cos(az), 0, -np.sin(az)]), np.array([np.sin(az), 0, np.cos(az)])
    verts, norms, faces, owner, local, offset = [], [], [], [], [], 0
    bases = xs[:, None] * right + zs[:, None] * toward
    for i, (m, (scale, rot)) in enumerate(zip(meshes, poses)):
        v = m.vertices * scale
        verts.append(xform(v, rot) + bases[i])
        n = xform((m.normals / scale).reshape(-1, 3), rot).reshape(-1, 3, 3)  # inverse-transpose
        norms.append(n / np.linalg.norm(n, axis=-1, keepdims=True))
        faces.append(m.faces + offset)
        owner.append(np.full(len(v), i))
        local.append(v)
        offset += len(v)
    heights = np.array([m.vertices[:, 1].max() * scale[1] for m, (scale, _) in zip(meshes, poses)])
    return dict(verts=np.concatenate(verts), normals=np.concatenate(norms), faces=np.concatenate(faces),
                owner=np.concatenate(owner), local=np.concatenate(local), bases=bases, radii=radii,
                heights=heights, azimuth=az)


class Camera:
    """Pinhole camera looking at ``target``; pixel = (cx + s*x/z, cy - s*y/z)."""

    def __init__(self, eye, target):
        f = target - eye
        f = f / np.linalg.norm(f)
        r = np.cross(f, [0.0, 1.0, 0.0])
        r /= np.linalg.norm(r)
        self.eye, self.rot = eye, np.stack([r, np.cross(r, f), f])
        self.s, self.cx, self.cy = 1.0, 0.0, 0.0

    def to_cam(self, p):
        return xform(p - self.eye, self.rot)

    def project(self, p):
        c = self.to_cam(p)
        return self.cx + self.s * c[:, 0] / c[:, 2], self.cy - self.s * c[:, 1] / c[:, 2], c[:, 2]

    def frame(self, rng, pts, res):
        """Scale and shift the image plane so the pieces fill most of the picture (a crop, in effect)."""
        self.s, self.cx, self.cy = 1.0, 0.0, 0.0
        u, v, _ = self.project(pts)  # v grows downwards, like pixel rows
        fill = rng.uniform(0.8, 0.95)
        self.s = fill * res / max(u.max() - u.min(), v.max() - v.min())
        slack = (1 - fill) * res / 2
        self.cx = res / 2 - self.s * (u.max() + u.min()) / 2 + rng.uniform(-0.6, 0.6) * slack
        self.cy = res / 2 - self.s * (v.max() + v.min()) / 2 + rng.uniform(-0.6, 0.6) * slack

    def rays(self, res, step=1):
        """World direction of the ray through every step-th pixel centre, with camera-space z = 1."""
        py, px = (np.mgrid[0 : res // step, 0 : res // step] + 0.5) * step
        d = np.stack([(px - self.cx) / self.s, -(py - self.cy) / self.s, np.ones_like(px)], -1)
        return xform(d.reshape(-1, 3), self.rot.T)


def make_camera(rng, scene, res):
    top = scene["heights"].max()
    extent = max(np.ptp(scene["bases"][:, 0]) + np.ptp(scene["bases"][:, 2]) + 2 * scene["radii"].max(), top)
    el, az = np.radians(rng.uniform(10, 45)), scene["azimuth"]
    target = np.array([0.0, top * rng.uniform(0.3, 0.5), 0.0])
    direction = np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)])
    cam = Camera(target + direction * extent * rng.uniform(1.6, 4.0), target)
    cam.frame(rng, scene["verts"], res)
    return cam


def left_to_right(cam, scene) -> list[int]:
    """Piece indices in the order a viewer reads them (by the screen x of each piece's axis)."""
    mids = scene["bases"] + np.outer(scene["heights"] / 2, [0, 1, 0])
    return list(np.argsort(cam.project(mids)[0], kind="stable"))


# ----------------------------------------------------------------------------- shadows
class ShadowMap:
    """Depth of the pieces seen from a directional key light; PCF lookups give soft shadows."""

    def __init__(self, light, scene):
        lz = -light
        lx = np.cross(lz, [0.0, 0.0, 1.0] if abs(lz[1]) > 0.9 else [0.0, 1.0, 0.0])
        lx /= np.linalg.norm(lx)
        self.basis = np.stack([lx, np.cross(lz, lx), lz])
        q = xform(scene["verts"], self.basis)
        self.lo = q[:, :2].min(0) - 0.05
        self.scale = (SHADOW_RES - 1) / (q[:, :2].max(0) + 0.05 - self.lo).max()
        a, b = (q[:, 0] - self.lo[0]) * self.scale, (q[:, 1] - self.lo[1]) * self.scale
        pix, tri, w = rasterize(a, b, q[:, 2], scene["faces"], SHADOW_RES, SHADOW_RES, cull=False)
        self.depth = np.full(SHADOW_RES * SHADOW_RES, np.inf)
        self.depth[pix] = np.einsum("ij,ij->i", w, q[:, 2][scene["faces"][tri]])

    def lit(self, pts, radius_px, bias=0.015, taps=12):
        q = xform(pts, self.basis)
        a, b = (q[:, 0] - self.lo[0]) * self.scale, (q[:, 1] - self.lo[1]) * self.scale
        angles = np.arange(taps) * 2.39996  # golden-angle spiral: an even disk of taps
        radii = radius_px * np.sqrt((np.arange(taps) + 0.5) / taps)
        lit = np.zeros(len(pts))
        for ang, rad in zip(angles, radii):
            ia = np.clip(np.round(a + rad * np.cos(ang)), 0, SHADOW_RES - 1).astype(np.int64)
            ib = np.clip(np.round(b + rad * np.sin(ang)), 0, SHADOW_RES - 1).astype(np.int64)
            lit += q[:, 2] - bias <= self.depth[ib * SHADOW_RES + ia]
        return lit / taps


# ----------------------------------------------------------------------------- shading
def sample_light(rng):
    el, az = np.radians(rng.uniform(25, 70)), rng.uniform(0, 2 * np.pi)
    warm = rng.uniform(-0.08, 0.12)
    return dict(dir=np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)]),
                key=rng.uniform(1.4, 3.2) * np.array([1 + warm, 1.0, 1 - warm]),  # sun to overcast
                ambient=rng.uniform(0.35, 0.8) * np.array([1 - warm, 1.0, 1 + warm * 1.5]),
                softness=rng.uniform(1.0, 3.5))


def shade_pieces(rng, scene, cam, light, shadows, pix, tri, w, colours, materials):
    """Linear RGB of covered pixels, plus their camera depth."""
    f = scene["faces"][tri]
    inv_z = 1.0 / cam.to_cam(scene["verts"][f.reshape(-1)])[:, 2].reshape(-1, 3)
    wp = w * inv_z
    wp /= wp.sum(1, keepdims=True)  # perspective-correct weights
    pos = np.einsum("ij,ijk->ik", wp, scene["verts"][f])
    nrm = np.einsum("ij,ijk->ik", wp, scene["normals"][tri])
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    piece = scene["owner"][f[:, 0]]
    local = np.einsum("ij,ijk->ik", wp, scene["local"][f])
    view = cam.eye - pos
    view /= np.linalg.norm(view, axis=1, keepdims=True)
    nrm = np.where((np.einsum("ij,ij->i", nrm, view) < 0)[:, None], -nrm, nrm)  # silhouette fringes
    albedo, ks, gloss = np.zeros((len(pix), 3)), np.zeros(len(pix)), np.zeros(len(pix))
    for i, colour in enumerate(colours):
        sel = piece == i
        mat = materials[colour]
        albedo[sel], ks[sel], gloss[sel] = piece_albedo(rng, mat, local[sel]), mat["ks"], mat["gloss"]
    lit = shadows.lit(pos + nrm * 0.01, light["softness"])
    ndl = np.clip((nrm * light["dir"]).sum(1), 0, 1) * lit
    half = light["dir"] + view
    half /= np.linalg.norm(half, axis=1, keepdims=True)
    spec = ks * np.clip(np.einsum("ij,ij->i", nrm, half), 0, 1) ** gloss * ndl * (gloss + 8) / 16
    # Occlusion near the base (light from the table is blocked) and a sky/room reflection.
    ao = 0.55 + 0.45 * np.clip(local[:, 1] / 0.12, 0, 1)
    sky = light["ambient"] * (0.6 + 0.4 * nrm[:, 1:2]) * ao[:, None]
    refl = 2 * np.einsum("ij,ij->i", nrm, view)[:, None] * nrm - view
    fresnel = 0.04 + 0.96 * (1 - np.clip(np.einsum("ij,ij->i", nrm, view), 0, 1)) ** 5
    env = (0.15 + 0.35 * np.clip(refl[:, 1], 0, 1)) * fresnel * (ks * 2)
    rgb = albedo * (ndl[:, None] * light["key"] + sky) + (spec[:, None] * light["key"]) + env[:, None]
    return rgb, cam.to_cam(pos)[:, 2]


def shade_ground(rng, scene, cam, light, shadows, res, palette=None):
    """Linear RGB and depth of the table (or a blurry wall above the horizon) for every pixel.

    Computed at half resolution and repeated: the surfaces are smooth and the final picture is
    half resolution anyway, so this costs nothing visible and saves three quarters of the work.
    """
    rays = cam.rays(res, step=2)
    hit = rays[:, 1] < -1e-6
    t = np.where(hit, -cam.eye[1] / np.where(hit, rays[:, 1], -1.0), 1e3)
    t = np.minimum(t, 1e3)
    pos = cam.eye + rays * t[:, None]
    albedo = table(rng, pos[:, 0], pos[:, 2], scene["azimuth"], palette or TRAIN_PALETTE)
    lit = np.ones(len(pos))
    near = hit & (t < 50)
    if shadows is not None:
        lit[near] = shadows.lit(pos[near], light["softness"] * 1.6, bias=0.02)
    ao = np.ones(len(pos))
    for base, r in zip(scene["bases"], scene["radii"]):
        d = np.hypot(pos[:, 0] - base[0], pos[:, 2] - base[2])
        ao *= 1 - 0.45 * np.exp(-np.clip(d - 0.8 * r, 0, None) / (0.12 * r))
    rgb = albedo * (light["key"] * light["dir"][1] * lit[:, None] + light["ambient"] * ao[:, None])
    wall = room(rng, rays)
    fade = np.clip((t - 8) / 30, 0, 1)[:, None]  # far table dissolves into the room, as if hazy
    rgb = np.where(hit[:, None], rgb * (1 - fade) + wall * fade, wall)
    up = lambda a: a.reshape(res // 2, 1, res // 2, 1, -1).repeat(2, 1).repeat(2, 3).reshape(res * res, -1)  # noqa: E731
    return up(rgb), up(t[:, None])[:, 0]


def table_view(rng, size):
    """An empty table photographed from above at an angle, for the glyph fallback: linear RGB
    and depth at twice ``size``, and the light that falls on it."""
    res, az, el = 2 * size, rng.uniform(0, 2 * np.pi), np.radians(rng.uniform(15, 50))
    dist = rng.uniform(4, 8)
    cam = Camera(dist * np.array([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)]), np.zeros(3))
    cam.s, cam.cx, cam.cy = res * dist / rng.uniform(2.5, 4.0), res / 2, res / 2
    light = sample_light(rng)
    scene = {"bases": [], "radii": [], "azimuth": az}
    rgb, depth = shade_ground(rng, scene, cam, light, None, res)
    return rgb.reshape(res, res, 3), depth.reshape(res, res), light


def render_scene(rng, meshes: list[Mesh], colours: list[str], size: int, palette=None):
    """(picture, left-to-right order of the given pieces) for one photo-like render; ``palette``:
    the sets' and tables' colours (TRAIN_PALETTE, or HELDOUT_PALETTE for the held-out domain)."""
    palette = palette or TRAIN_PALETTE
    res = 2 * size
    scene = build_scene(rng, meshes)
    cam = make_camera(rng, scene, res)
    light = sample_light(rng)
    shadows = ShadowMap(light["dir"], scene)
    rgb, depth = shade_ground(rng, scene, cam, light, shadows, res, palette)
    sx, sy, z = cam.project(scene["verts"])
    pix, tri, w = rasterize(sx, sy, -1.0 / z, scene["faces"], res, res, cull=True)
    materials = set_materials(rng, palette)
    rgb[pix], depth[pix] = shade_pieces(rng, scene, cam, light, shadows, pix, tri, w, colours, materials)
    subject = (depth[pix].min(), depth[pix].max())
    return finish(rng, rgb.reshape(res, res, 3), depth.reshape(res, res), subject), left_to_right(cam, scene)


# ----------------------------------------------------------------------------- surfaces
def srgb(*c):
    return np.asarray(c, float) ** 2.2


def noise(rng, x, y, octaves=3):
    """Fractal value noise in [0, 1] at arbitrary coordinates (smoothstep-bilinear lattice)."""
    table = rng.random((64, 64))
    total, amp, norm = 0.0, 1.0, 0.0
    for o in range(octaves):
        fx, fy = x * 2**o + o * 17.3, y * 2**o + o * 31.7
        ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        tx, ty = fx - ix, fy - iy
        tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
        ix, iy = ix & 63, iy & 63
        jx, jy = (ix + 1) & 63, (iy + 1) & 63
        top = table[iy, ix] * (1 - tx) + table[iy, jx] * tx
        bottom = table[jy, ix] * (1 - tx) + table[jy, jx] * tx
        total, norm, amp = total + amp * (top * (1 - ty) + bottom * ty), norm + amp, amp * 0.5
    return total / norm


def wood(rng, along, across, light, dark, rings):
    """Growth rings warped by noise plus fine fibres, blended between two wood colours."""
    warp = noise(rng, along * 0.35, across * 2.5)
    t = (0.5 + 0.5 * np.sin(2 * np.pi * (across * rings + 2.0 * warp))) ** 2
    fibre = noise(rng, along * 0.6, across * 60, octaves=2)
    t = np.clip(0.7 * t + 0.45 * fibre - 0.1, 0, 1)[..., None]
    return light * (1 - t) + dark * t


@dataclass(frozen=True)
class Palette:
    """The colours a render draws its chess set and table from (sRGB triples)."""

    wood_light: tuple
    wood_dark: tuple
    plastic_light: tuple
    plastic_dark: tuple
    table_woods: tuple
    boards: tuple  # (light square, dark square) pairs
    cloths: tuple


# oak, walnut, pine, mahogany, grey-washed, cherry tables
TRAIN_PALETTE = Palette(
    wood_light=((0.9, 0.76, 0.55), (0.85, 0.68, 0.45), (0.93, 0.84, 0.66)),
    wood_dark=((0.13, 0.08, 0.06), (0.3, 0.14, 0.08), (0.25, 0.15, 0.09)),
    plastic_light=((0.95, 0.91, 0.8), (0.93, 0.93, 0.91), (0.96, 0.88, 0.72)),
    plastic_dark=((0.06, 0.06, 0.065), (0.09, 0.07, 0.06), (0.05, 0.05, 0.08)),
    table_woods=((0.78, 0.6, 0.4), (0.45, 0.3, 0.2), (0.85, 0.7, 0.5), (0.55, 0.3, 0.2), (0.65, 0.6, 0.55), (0.7, 0.45, 0.3)),
    boards=(((0.9, 0.78, 0.58), (0.5, 0.3, 0.16)), ((0.93, 0.93, 0.86), (0.32, 0.5, 0.3)),
            ((0.85, 0.85, 0.82), (0.25, 0.25, 0.27)), ((0.94, 0.87, 0.7), (0.6, 0.4, 0.25))),
    cloths=((0.2, 0.38, 0.24), (0.16, 0.2, 0.33), (0.45, 0.45, 0.45), (0.74, 0.67, 0.55), (0.42, 0.16, 0.15),
            (0.11, 0.11, 0.11), (0.85, 0.85, 0.83), (0.55, 0.5, 0.42)),
)
# Colours no training render uses, for the held-out domain: boxwood and golden "white" wood,
# rosewood and sheesham "black"; cool-white and matte grey plastic; birch, wenge and padauk
# tables; blue and red boards; purple, orange and teal cloths.
HELDOUT_PALETTE = Palette(
    wood_light=((0.95, 0.82, 0.45), (0.88, 0.8, 0.62)),
    wood_dark=((0.4, 0.12, 0.08), (0.42, 0.24, 0.12)),
    plastic_light=((0.86, 0.88, 0.92),),
    plastic_dark=((0.16, 0.16, 0.17),),
    table_woods=((0.9, 0.82, 0.68), (0.22, 0.16, 0.12), (0.6, 0.25, 0.15)),
    boards=(((0.9, 0.9, 0.9), (0.25, 0.35, 0.55)), ((0.92, 0.85, 0.75), (0.6, 0.2, 0.15))),
    cloths=((0.35, 0.2, 0.4), (0.75, 0.45, 0.2), (0.15, 0.4, 0.42)),
)


def set_materials(rng, palette: Palette | None = None) -> dict:
    """One chess set per picture: both colours share a style (wood set, plastic set)."""
    palette = palette or TRAIN_PALETTE
    jitter = lambda: rng.uniform(0.92, 1.08, 3)  # noqa: E731 - tiny per-set hue variation
    if rng.random() < 0.6:
        light = srgb(*rng.choice(palette.wood_light)) * jitter()
        dark = srgb(*rng.choice(palette.wood_dark)) * jitter()
        ks, gloss, grain = rng.uniform(0.1, 0.45), rng.uniform(15, 60), True
    else:
        light = srgb(*rng.choice(palette.plastic_light)) * jitter()
        dark = srgb(*rng.choice(palette.plastic_dark)) * jitter()
        ks, gloss, grain = rng.uniform(0.3, 0.7), rng.uniform(30, 120), False
    mat = lambda c, d: dict(albedo=c, grain_dark=c * d, ks=ks, gloss=gloss, grain=grain)  # noqa: E731
    return {"white": mat(light, rng.uniform(0.6, 0.8)), "black": mat(dark, rng.uniform(0.55, 0.75))}


def piece_albedo(rng, mat, local):
    if not mat["grain"]:
        return np.broadcast_to(mat["albedo"], local.shape).copy()
    # Lathe-turned pieces: grain runs up the piece; rings come from an axis outside the piece.
    ox, oz = rng.uniform(-1.5, 1.5, 2)
    across = np.hypot(local[:, 0] - ox, local[:, 2] - oz)
    return wood(rng, local[:, 1] * 3, across, mat["albedo"], mat["grain_dark"], rng.uniform(6, 14))


def table(rng, x, z, azimuth, palette: Palette):
    """Albedo of the surface the pieces stand on, in world units (king height = 1)."""
    ang = azimuth + rng.uniform(-0.4, 0.4) + rng.choice([0, np.pi / 2])
    a, b = x * np.cos(ang) + z * np.sin(ang), -x * np.sin(ang) + z * np.cos(ang)
    kind = rng.choice(["wood", "board", "cloth", "plain"], p=[0.3, 0.35, 0.2, 0.15])
    if kind == "board":
        return board(rng, a, b, palette)
    return {"wood": wood_table, "cloth": cloth, "plain": plain}[kind](rng, a, b, palette)


def wood_table(rng, a, b, palette: Palette):
    width = rng.uniform(0.8, 2.5)
    plank = np.floor(b / width)
    light = srgb(*palette.table_woods[rng.integers(len(palette.table_woods))]) * rng.uniform(0.9, 1.1, 3)
    col = wood(rng, a + plank * 7.1, b, light, light * rng.uniform(0.5, 0.75), rng.uniform(1.5, 5))
    seam = np.abs(b / width - plank - 0.5) > 0.495
    return col * (1 + 0.12 * np.sin(plank * 12.9898) - 0.4 * seam)[:, None]


def board(rng, a, b, palette: Palette):
    """A real 8x8 board with a frame, somewhere under the pieces, lying on a table."""
    sq = rng.uniform(0.45, 0.7)
    a, b = a + rng.uniform(-2, 2) * sq, b + rng.uniform(-2, 2) * sq
    light, dark = (srgb(*c) for c in palette.boards[rng.integers(len(palette.boards))])
    odd = ((np.floor(a / sq) + np.floor(b / sq)) % 2)[:, None]
    col = (light * (1 - odd) + dark * odd) * (0.9 + 0.2 * noise(rng, a * 3, b * 0.3 + odd[:, 0] * 5))[:, None]
    edge = np.maximum(np.abs(a), np.abs(b)) / (4 * sq)
    frame = srgb(*rng.uniform([0.15, 0.08, 0.05], [0.45, 0.3, 0.2])) * (0.9 + 0.2 * noise(rng, a * 2, b * 2))[:, None]
    under = (wood_table if rng.random() < 0.6 else plain)(rng, a, b, palette)
    return np.where((edge < 1)[:, None], col, np.where((edge < 1.08)[:, None], frame, under))


def cloth(rng, a, b, palette: Palette):
    col = srgb(*palette.cloths[rng.integers(len(palette.cloths))]) * rng.uniform(0.85, 1.15, 3)
    fabric = 0.85 + 0.2 * noise(rng, a * 0.8, b * 0.8) + 0.1 * noise(rng, a * 25, b * 25, octaves=1)
    return col * fabric[:, None]


def plain(rng, a, b, palette: Palette):
    col = srgb(*(rng.uniform(0.55, 0.95) * rng.uniform(0.93, 1.05, 3)))
    return col * (0.9 + 0.15 * noise(rng, a * 0.2, b * 0.2))[:, None]


def room(rng, rays):
    """What lies beyond the table: a dim, out-of-focus wall with soft blotches."""
    h = np.arctan2(rays[:, 0], rays[:, 2]) * 3
    v = rays[:, 1] / np.linalg.norm(rays, axis=1) * 6
    base = srgb(*(rng.uniform(0.3, 0.8) * rng.uniform(0.9, 1.08, 3)))
    return base * (0.6 + 0.6 * noise(rng, h, v, octaves=2))[:, None]


# ----------------------------------------------------------------------------- camera effects
def finish(rng, rgb, depth, subject: tuple[float, float]) -> Image.Image:
    """Downsample 2x, tone-map, depth of field, white balance, vignette, sensor noise."""
    h = rgb.shape[0] // 2
    rgb = rgb.reshape(h, 2, h, 2, 3).mean((1, 3))
    depth = depth.reshape(h, 2, h, 2).min((1, 3))
    exposure = rng.uniform(0.8, 1.25)
    rgb = 1 - np.exp(-rgb * exposure * 1.1)  # soft shoulder instead of hard clipping
    temp = rng.uniform(-0.08, 0.08)
    rgb = rgb * np.array([1 + temp, 1 + rng.uniform(-0.02, 0.02), 1 - temp])
    yy, xx = (np.mgrid[0:h, 0:h] + 0.5) / h - 0.5
    rgb *= (1 - rng.uniform(0.1, 0.45) * (xx**2 + yy**2) * 2)[..., None]
    img = np.clip(rgb, 0, 1) ** (1 / 2.2) * 255
    img = _defocus(rng, img, depth, *subject)
    noise = rng.normal(0, rng.uniform(1.0, 4.0), (h, h, 1)) + rng.normal(0, 1.0, (h, h, 3))
    return Image.fromarray(np.clip(img + noise, 0, 255).astype(np.uint8))


def _defocus(rng, img, depth, near, far):
    """Blur by distance from the focus plane (circle of confusion ~ |1/z - 1/focus|).

    Focus sits in the middle of the pieces (near..far camera depth) and the aperture is capped so
    no part of a piece blurs much: the background goes soft, the piece types stay readable.
    """
    focus = 2 / (1 / near + 1 / far)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    radius = img.shape[0] / 224 * rng.uniform(1.0, 3.5)
    blurred = np.asarray(pil.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    spread = (1 / near - 1 / far) / 2 * focus
    aperture = min(rng.uniform(1.0, 3.0), 0.5 / max(spread, 1e-6))
    coc = np.clip(np.abs(1 / focus - 1 / np.maximum(depth, 1e-3)) * focus * aperture, 0, 1) ** 2
    out = img * (1 - coc[..., None]) + blurred * coc[..., None]
    if rng.random() < 0.3:  # slightly soft lens or camera shake over the whole frame
        out = np.asarray(Image.fromarray(out.astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6)), np.float32)
    return out
