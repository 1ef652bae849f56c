"""Synthetic chess pictures: captions vs labels, determinism, splits, re-runs, fallbacks, parsing.

The 3D path runs on small lathe-made stand-in meshes so the tests never download anything.
"""

import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from vlmtune.data.captions import read_captions
from vlmtune.data.synth import chess
from vlmtune.data.synth.chess_text import COLOURS, TYPES, caption_for, parse_label, parse_pieces, pieces_label
from vlmtune.data.synth.meshes import STAUNTON_HEIGHT, Mesh, corner_normals, read_dcm, read_obj, weld
from vlmtune.errors import VlmtuneError


def _lathe(height: float, width: float, stretch: float = 1.0, segments: int = 12) -> Mesh:
    """A closed, outward-facing solid of revolution: base, waist, head, like a crude piece."""
    profile = [(0.0, 0.0), (width, 0.0), (width, 0.1 * height), (0.4 * width, 0.5 * height),
               (0.7 * width, 0.85 * height), (0.0, height)]
    ang = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    verts = np.array([(r * np.cos(a) * stretch, y, -r * np.sin(a)) for r, y in profile for a in ang])
    faces = []
    for ring in range(len(profile) - 1):
        for k in range(segments):
            a, b = ring * segments + k, ring * segments + (k + 1) % segments
            faces += [(a, b, b + segments), (a, b + segments, a + segments)]
    v, f = weld(verts, np.array(faces))
    volume = np.einsum("ij,ij->", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]]))
    if volume < 0:
        f = f[:, ::-1]
    return Mesh(v.astype(np.float32), f.astype(np.int32), corner_normals(v, f).astype(np.float32))


@pytest.fixture
def meshes(monkeypatch):
    fake = {t: _lathe(h, 0.17, 1.4 if t == "knight" else 1.0) for t, h in STAUNTON_HEIGHT.items()}
    monkeypatch.setattr(chess, "load_meshes", lambda source="brutalchess": fake)
    return fake


def _files(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_captions_agree_with_pieces_column(meshes, tmp_path):
    out = chess.synth_chess(tmp_path / "set", n=9, size=40, workers=1)
    rows = read_captions(out / "captions.csv")
    assert [r["file_name"] for r in rows] == [f"images/chess_{i:05d}.jpg" for i in range(9)]
    for row in rows:
        assert parse_pieces(row["caption"]) == parse_label(row["pieces"]), row
        assert 1 <= sum(parse_label(row["pieces"]).values()) <= 3
        with Image.open(out / row["file_name"]) as img:
            assert img.size == (40, 40) and img.format == "JPEG"


def test_same_seed_same_bytes_whatever_the_workers(meshes, tmp_path):
    one = chess.synth_chess(tmp_path / "one", n=6, seed=5, size=40, workers=1)
    two = chess.synth_chess(tmp_path / "two", n=6, seed=5, size=40, workers=2)
    other = chess.synth_chess(tmp_path / "other", n=6, seed=6, size=40, workers=1)
    assert _files(one) == _files(two)
    assert _files(one)[chess.Path("images/chess_00000.jpg")] != _files(other)[chess.Path("images/chess_00000.jpg")]


def test_split_has_exactly_the_test_share(meshes, tmp_path):
    rows = read_captions(chess.synth_chess(tmp_path / "set", n=10, size=32, test_ratio=0.3, workers=1) / "captions.csv")
    assert Counter(r["split"] for r in rows) == {"test": 3, "train": 7}


def test_rerun_returns_early(meshes, tmp_path, monkeypatch):
    out = chess.synth_chess(tmp_path / "set", n=3, size=32, workers=1)
    before = _files(out)
    monkeypatch.setattr(chess, "_renderer", lambda: pytest.fail("re-run rendered again"))
    assert chess.synth_chess(out, n=3, size=32, workers=1) == out
    assert _files(out) == before


def test_refuses_a_foreign_or_different_folder(meshes, tmp_path):
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "cat.jpg").write_bytes(b"x")
    with pytest.raises(VlmtuneError, match="photos"):
        chess.synth_chess(foreign, n=3, size=32, workers=1)
    made = chess.synth_chess(tmp_path / "set", n=3, size=32, workers=1)
    with pytest.raises(VlmtuneError, match="not empty"):
        chess.synth_chess(made, n=4, size=32, workers=1)


def test_glyph_fallback_without_meshes(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(chess, "load_meshes", lambda source="brutalchess": None)
    out = chess.synth_chess(tmp_path / "set", n=4, size=48, workers=1)
    assert "glyphs" in capsys.readouterr().out
    assert '"renderer": "glyphs"' in (out / "synth.json").read_text()
    for row in read_captions(out / "captions.csv"):
        assert parse_pieces(row["caption"]) == parse_label(row["pieces"])
        with Image.open(out / row["file_name"]) as img:
            assert img.size == (48, 48) and np.asarray(img).std() > 5  # not a blank picture


def test_plans_are_balanced():
    plans = chess.plan_scenes(0, 300)
    assert Counter(len(p) for p in plans) == {1: 100, 2: 100, 3: 100}
    pieces = [piece for plan in plans for piece in plan]
    for counts in (Counter(t for _, t in pieces), Counter(c for c, _ in pieces)):
        assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize(
    "pieces, caption",
    [
        ([("white", "rook")], "a white rook"),
        ([("black", "knight"), ("white", "pawn")], "a black knight and a white pawn"),
        ([("black", "rook"), ("black", "bishop"), ("white", "bishop")], "a black rook, a black bishop and a white bishop"),
        ([("white", "pawn"), ("white", "pawn"), ("black", "king")], "two white pawns and a black king"),
        ([("black", "queen")] * 3, "three black queens"),
    ],
)
def test_caption_style(pieces, caption):
    assert caption_for(pieces) == caption


def test_caption_and_label_round_trip():
    rnd = random.Random(0)
    for _ in range(300):
        pieces = [(rnd.choice(COLOURS), rnd.choice(TYPES)) for _ in range(rnd.randint(1, 4))]
        assert parse_pieces(caption_for(pieces)) == Counter(pieces)
        assert parse_label(pieces_label(pieces)) == Counter(pieces)
    assert pieces_label([("white", "bishop"), ("black", "rook"), ("black", "bishop")]) == "black bishop;black rook;white bishop"


W, B = "white", "black"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a white knight and two black pawns.", {(W, "knight"): 1, (B, "pawn"): 2}),
        ("A White Rook", {(W, "rook"): 1}),
        ("An image of ONE black King on a table!", {(B, "king"): 1}),
        ("three white bishops, a black queen and a white queen", {(W, "bishop"): 3, (B, "queen"): 1, (W, "queen"): 1}),
        ("2 black knights & 1 white pawn", {(B, "knight"): 2, (W, "pawn"): 1}),
        ("white pawns", {(W, "pawn"): 2}),
        ("a pair of black rooks", {(B, "rook"): 2}),
        ("a white king and queen", {(W, "king"): 1, (W, "queen"): 1}),
        ("a shiny white wooden rook", {(W, "rook"): 1}),
        ("a white board with a black rook", {(B, "rook"): 1}),
        ("a rook and a pawn", {}),
        ("no black pawns, a white knight", {(W, "knight"): 1}),
        ("the chess pieces: black bishop; white king.", {(B, "bishop"): 1, (W, "king"): 1}),
        ("a white king. queen", {(W, "king"): 1}),
        ("", {}),
        ("lorem ipsum blackish whitewash kingdom", {}),
    ],
)
def test_parse_pieces(text, expected):
    assert parse_pieces(text) == Counter(expected)


def test_parse_label_ignores_empty():
    assert parse_label("") == Counter()
    assert parse_label("black rook;black rook;white pawn") == Counter({(B, "rook"): 2, (W, "pawn"): 1})


def test_read_obj_handles_negative_indices_and_quads(tmp_path):
    obj = tmp_path / "quad.obj"
    obj.write_text("# Max2Obj\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf -4/-4 -3/-3 -2/-2 -1/-1\ng\nf 1 2 3\n")
    v, f = read_obj(obj)
    assert v.shape == (4, 3)
    assert f.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2]]
    normals = corner_normals(v, f)
    assert np.allclose(normals, [0, 0, 1])


def test_heldout_domain_is_all_test_from_the_other_mesh_set(meshes, monkeypatch, tmp_path):
    asked = []
    monkeypatch.setattr(chess, "load_meshes", lambda source="brutalchess": asked.append(source) or meshes)
    out = chess.synth_chess(tmp_path / "held", n=6, size=40, workers=1, test_ratio=1.0, domain="heldout")
    assert asked == ["dreamchess"] and '"domain": "heldout"' in (out / "synth.json").read_text()
    assert {r["split"] for r in read_captions(out / "captions.csv")} == {"test"}
    train = chess.synth_chess(tmp_path / "train", n=6, size=40, workers=1, test_ratio=1.0)
    assert _files(out / "images") != _files(train / "images")  # same plans and poses, other colours


def test_heldout_domain_without_its_meshes_says_which_package(monkeypatch, tmp_path):
    monkeypatch.setattr(chess, "load_meshes", lambda source="brutalchess": None)
    with pytest.raises(VlmtuneError, match=r"heldout render domain needs the dreamchess meshes.*apt-get download dreamchess-data"):
        chess.synth_chess(tmp_path / "held", n=2, size=40, workers=1, domain="heldout")
    assert not (tmp_path / "held").exists()


def test_read_dcm_turns_strips_outward_and_z_up_to_y_up(tmp_path):
    # A unit square in the z=0 plane (file coordinates), normals +z; the strip 0 1 2 3 makes the
    # triangles (0,1,2) and (1,2,3): the second winds the other way and must be turned.
    verts = ["0 0 0", "1 0 0", "0 1 0", "1 1 0"]
    dcm = tmp_path / "square.dcm"
    dcm.write_text("DCM 0100\n4\n" + "\n".join(verts) + "\n" + "0 0 1\n" * 4 + "0 0\n" * 4 + "1\nSTRIP\n4\n0\n1\n2\n3\n")
    v, f = read_dcm(dcm)
    assert v.tolist() == [[0, 0, 0], [1, 0, 0], [0, 0, -1], [1, 0, -1]]  # (x, y, z) -> (x, z, -y)
    assert f.tolist() == [[0, 1, 2], [3, 2, 1]]
    cross = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    assert np.allclose(cross / np.linalg.norm(cross, axis=1, keepdims=True), [0, 1, 0])  # file's +z is now up


def test_read_dcm_refuses_other_files(tmp_path):
    bad = tmp_path / "x.dcm"
    bad.write_text("OBJ 1\n")
    with pytest.raises(ValueError, match="not a DCM 0100 mesh"):
        read_dcm(bad)
