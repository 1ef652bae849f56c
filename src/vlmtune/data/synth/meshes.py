"""3D Staunton chess-piece meshes, fetched at run time (never shipped: the models are GPL).

Two Debian packages carry a set each: ``brutalchess`` six Max2Obj OBJ files (Y up, a few thousand
triangles each), what the pictures are trained on, and ``dreamchess-data`` a differently drawn
set in DreamChess's own text format (.dcm, Z up, triangle strips), kept for the held-out render
domain. We download the .deb into the user cache with ``apt-get download`` (no root needed),
unpack it with ``dpkg-deb -x``, normalise the meshes and keep only a ``.npz`` so later runs load
in milliseconds. Anything failing on the way returns ``None``; the caller then falls back to
glyph rendering (or, for the held-out domain, says it is unavailable).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmtune.paths import cache_root

CACHE_VERSION = 1
# Heights of a tournament Staunton set relative to the king (3.75" king, 2" pawn): the OBJ files
# disagree with real sets (their pawn is too tall), and relative size is a cue for the model.
STAUNTON_HEIGHT = {"king": 1.0, "queen": 0.87, "bishop": 0.75, "knight": 0.67, "rook": 0.6, "pawn": 0.53}
CREASE_COS = np.cos(np.radians(50))  # edges sharper than this stay sharp (rims, battlements)


@dataclass(frozen=True)
class Mesh:
    """Triangles with per-corner normals; the king is 1 unit tall, base centred on the origin."""

    vertices: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    normals: np.ndarray  # (F, 3, 3) float32, one normal per triangle corner

    @property
    def radius(self) -> float:
        """Horizontal extent around the vertical axis: used to space pieces apart."""
        return float(np.hypot(self.vertices[:, 0], self.vertices[:, 2]).max())


@dataclass(frozen=True)
class MeshSource:
    package: str  # Debian package
    models_dir: str  # inside the unpacked .deb
    suffix: str  # one file per piece type: king.obj, king.dcm...


SOURCES = {
    "brutalchess": MeshSource("brutalchess", "usr/share/games/brutalchess/models", ".obj"),
    "dreamchess": MeshSource("dreamchess-data", "usr/share/games/dreamchess/pieces/classic", ".dcm"),
}


def mesh_dir() -> Path:
    return cache_root() / "meshes"


def load_meshes(types: tuple[str, ...] = tuple(STAUNTON_HEIGHT), source: str = "brutalchess") -> dict[str, Mesh] | None:
    """The six piece meshes of ``source`` (a SOURCES key), downloading them once; None when they cannot be had."""
    cache = mesh_dir() / f"{source}-v{CACHE_VERSION}.npz"
    if not cache.is_file():
        try:
            _build_cache(cache, types, SOURCES[source])
        except (OSError, subprocess.SubprocessError, ValueError):
            return None
    try:
        with np.load(cache) as z:
            return {t: Mesh(z[f"{t}_v"], z[f"{t}_f"], z[f"{t}_n"]) for t in types}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        cache.unlink(missing_ok=True)  # damaged: the next run downloads afresh
        return None


def _build_cache(cache: Path, types: tuple[str, ...], source: MeshSource) -> None:
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache.parent) as tmp:
        models = _download(Path(tmp), source)
        arrays = {}
        for t in types:
            path = models / f"{t}{source.suffix}"
            v, f = read_obj(path) if source.suffix == ".obj" else read_dcm(path)
            v = normalise(v, STAUNTON_HEIGHT[t])
            v, f = weld(v, f)
            arrays.update({f"{t}_v": v.astype(np.float32), f"{t}_f": f.astype(np.int32),
                           f"{t}_n": corner_normals(v, f).astype(np.float32)})
        part = Path(tmp) / "meshes.npz"  # same file system: the rename below is atomic
        np.savez_compressed(part, **arrays)
        part.replace(cache)


def _download(tmp: Path, source: MeshSource) -> Path:
    """Fetch and unpack the .deb; raises OSError/SubprocessError when apt is missing or offline."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        raise OSError("apt-get/dpkg-deb not found")
    subprocess.run(["apt-get", "download", source.package], cwd=tmp, check=True, capture_output=True, timeout=120)
    debs = sorted(tmp.glob(f"{source.package}_*.deb"))
    if not debs:
        raise OSError(f"apt-get download {source.package} produced no .deb")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "x")], check=True, capture_output=True, timeout=120)
    return tmp / "x" / source.models_dir


def read_dcm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (turned Y up) and outward-wound triangles of a DreamChess .dcm mesh.

    The format is whitespace-separated text: ``DCM 0100``, the vertex count n, n xyz positions,
    n normals, n uv pairs, then a count of groups, each ``STRIP k`` or ``TRIANGLES k`` and k
    vertex indices. Strips alternate their winding, and the file's own normals say which side is
    out, so every triangle is turned to face the way its corners' normals point (the renderer
    culls back faces).
    """
    tokens = path.read_text(errors="replace").split()
    if tokens[:2] != ["DCM", "0100"]:
        raise ValueError(f"{path}: not a DCM 0100 mesh")
    n = int(tokens[2])
    numbers = np.asarray(tokens[3 : 3 + 6 * n], float)
    verts, normals = numbers[: 3 * n].reshape(n, 3), numbers[3 * n :].reshape(n, 3)
    at, faces = 3 + 8 * n, []
    for _ in range(int(tokens[at])):
        kind, k = tokens[at + 1], int(tokens[at + 2])
        idx = [int(t) for t in tokens[at + 3 : at + 3 + k]]
        at += 2 + k
        if kind == "STRIP":
            faces += [idx[j : j + 3] for j in range(k - 2)]
        elif kind == "TRIANGLES":
            faces += [idx[j : j + 3] for j in range(0, k - 2, 3)]
        else:
            raise ValueError(f"{path}: unknown primitive {kind!r}")
    f = np.asarray(faces, np.int64)
    if not len(f) or f.max() >= n:
        raise ValueError(f"{path}: no geometry or an index past the {n} vertices")
    cross = np.cross(verts[f[:, 1]] - verts[f[:, 0]], verts[f[:, 2]] - verts[f[:, 0]])
    inward = np.einsum("ij,ij->i", cross, normals[f].sum(1)) < 0
    f[inward] = f[inward][:, ::-1]
    # Z up -> Y up: a rotation (x, y, z) -> (x, z, -y), so the winding stays outward.
    return np.stack([verts[:, 0], verts[:, 2], -verts[:, 1]], 1), f


def read_obj(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices and triangles of an OBJ file (negative indices, v/vt/vn corners, polygons fanned)."""
    verts, faces = [], []
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "v":
            verts.append([float(x) for x in parts[1:4]])
        elif parts[0] == "f":
            # OBJ indices are 1-based, or relative to the vertices read so far when negative.
            idx = [int(c.split("/")[0]) for c in parts[1:]]
            idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
            faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
    if not verts or not faces:
        raise ValueError(f"{path}: no geometry")
    return np.asarray(verts, float), np.asarray(faces, np.int64)


def normalise(v: np.ndarray, height: float) -> np.ndarray:
    """Base on y=0, centred on the base's middle (not the bbox: the knight's head overhangs)."""
    v = v - [0.0, v[:, 1].min(), 0.0]
    base = v[v[:, 1] < 0.05 * v[:, 1].max()]
    centre = (base.min(0) + base.max(0)) / 2
    v = v - [centre[0], 0.0, centre[2]]
    return v * (height / v[:, 1].max())


def weld(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge coincident vertices (exporters split them at texture seams) and drop degenerate faces."""
    key = np.round(v / 1e-5).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    f = inverse.reshape(-1)[f]
    ok = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return v[first], f[ok]


def corner_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Smooth normals that keep creases: each corner averages only faces meeting it at a shallow angle."""
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 * area
    unit = cross / np.maximum(np.linalg.norm(cross, axis=1, keepdims=True), 1e-12)
    corner_vertex = f.reshape(-1)
    corner_face = np.repeat(np.arange(len(f)), 3)
    order = np.argsort(corner_vertex, kind="stable")
    starts = np.searchsorted(corner_vertex[order], np.arange(len(v) + 1))
    degree = np.diff(starts)[corner_vertex]
    # All (corner, neighbour face) pairs around the same vertex, built without a Python loop.
    pair_corner = np.repeat(np.arange(len(corner_vertex)), degree)
    offset = np.arange(len(pair_corner)) - np.repeat(np.cumsum(degree) - degree, degree)
    pair_face = corner_face[order[starts[corner_vertex[pair_corner]] + offset]]
    own = unit[corner_face[pair_corner]]
    keep = np.einsum("ij,ij->i", own, unit[pair_face]) > CREASE_COS
    summed = np.zeros((len(corner_vertex), 3))
    np.add.at(summed, pair_corner[keep], cross[pair_face[keep]])
    summed /= np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)
    return summed.reshape(-1, 3, 3)
