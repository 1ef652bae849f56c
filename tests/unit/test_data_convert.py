"""``vlmtune data convert`` on the awkward files a phone or a folder holds, generated here."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from vlmtune.data import convert as convert_mod
from vlmtune.data.convert import CONVERTED, FAILED, NOT_IMAGE, UNCHANGED, ConvertOptions, convert_folder
from vlmtune.data.images import GPS_IFD, ORIENTATION, register_plugins, render_jpeg, to_rgb
from vlmtune.errors import VlmtuneError

RED, BLUE, WHITE, BLACK = (255, 0, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
NON_ASCII = "vacances 2024/Été à la plage 1.png"


def halves(left, right, size=(40, 20), mode="RGB") -> Image.Image:
    im = Image.new(mode, size, left)
    im.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return im


def png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def bomb_png(side: int) -> bytes:
    """A valid PNG header claiming side x side pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    )


def save(path: Path, im: Image.Image, fmt: str | None = None, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, fmt, **kw)


def make_awkward(src: Path) -> None:
    register_plugins()
    exif = Image.Exif()
    exif[ORIENTATION] = 6  # stored sideways: display needs a 90 degree clockwise turn
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(GPS_IFD)[1] = "N"
    save(src / "rotated.jpg", halves(RED, BLUE), quality=95, exif=exif)
    grey16 = np.zeros((16, 32), np.uint16)
    grey16[:, :16], grey16[:, 16:] = 4096, 49152
    save(src / "grey16.png", Image.fromarray(grey16))
    save(src / "alpha.png", halves((255, 0, 0, 255), (0, 0, 255, 0), mode="RGBA"))
    palette = halves(0, 1, mode="P")
    palette.putpalette([0, 255, 0, 0, 0, 255])
    save(src / "palette.png", palette, transparency=1)
    save(src / "bilevel.png", halves(0, 1, size=(32, 16), mode="1"))
    save(src / "cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), quality=95)
    save(src / "grey.jpg", Image.new("L", (16, 16), 100), quality=95)
    frames = [Image.new("RGB", (16, 16), c) for c in (RED, BLUE)]
    save(src / "pages.tif", frames[0], save_all=True, append_images=frames[1:])
    save(src / "anim.gif", frames[0], save_all=True, append_images=[frames[1], frames[0]], duration=100)
    save(src / "mpo.jpg", frames[0], "MPO", save_all=True, append_images=frames[1:])  # like a phone's gain map
    for fmt in ("webp", "avif", "heic"):
        save(src / f"photo.{fmt}", Image.new("RGB", (16, 16), BLUE), "HEIF" if fmt == "heic" else None)
    save(src / "big.png", Image.new("RGB", (300, 150), RED))
    save(src / NON_ASCII, Image.new("RGB", (16, 16), RED))
    (src / "bomb.png").write_bytes(bomb_png(20000))
    (src / "hugebomb.png").write_bytes(bomb_png(30000))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG", quality=90)
    (src / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 6 // 10])
    (src / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (src / "garbage.jpg").write_bytes(bytes(range(256)) * 4)
    (src / "empty.jpg").write_bytes(b"")
    save(src / "raw.dng", Image.new("RGB", (8, 8), RED), "TIFF")  # Pillow would take a RAW's preview
    (src / "notes.txt").write_text("not a picture")
    (src / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


OPTIONS = ConvertOptions(prefix="photo_", max_side=100)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert")
    src, dst = root / "src", root / "dst"
    make_awkward(src)
    before = snapshot(src)
    summary = convert_folder(src, dst, OPTIONS, workers=1, progress=False)
    return src, dst, before, summary, {o.source: o for o in summary.outcomes}


def rgb_at(path: Path, xy) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel(xy)


def close(actual, expected, tol=6) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected))


def test_every_file_has_the_expected_outcome(converted):
    _, _, _, summary, by = converted
    expected_failed = {"bomb.png", "hugebomb.png", "truncated.jpg", "corrupt.png", "garbage.jpg", "empty.jpg", "raw.dng"}
    assert {s for s, o in by.items() if o.status == FAILED} == expected_failed
    assert {s for s, o in by.items() if o.status == NOT_IMAGE} == {"notes.txt"}
    assert ".DS_Store" not in by
    assert summary.count(CONVERTED) == 15
    assert summary.line() == "converted 15, skipped 1 (0 already done, 1 not images), failed 7"


def test_unusable_files_get_one_line_reasons(converted):
    by = converted[4]
    assert by["empty.jpg"].reason == "empty file (0 bytes)"
    assert by["notes.txt"].reason == "not an image"
    assert by["raw.dng"].reason == "camera RAW is not supported: export it as JPEG first"
    assert by["corrupt.png"].reason == "unreadable image header (OSError: Truncated File Read)"
    assert by["garbage.jpg"].reason == "corrupt or unsupported image data (no decoder recognises it)"
    assert by["bomb.png"].reason == (
        "decompression bomb guard: 20000x20000 = 400,000,000 pixels exceeds the limit of 256,000,000 "
        "(raise --max-pixels if the picture is genuine)"
    )
    # Past twice the limit Pillow itself refuses at open; still one line, still ours.
    assert by["hugebomb.png"].reason.startswith("decompression bomb guard: Image size (900000000 pixels)")
    assert by["truncated.jpg"].reason.startswith("truncated or corrupt image data (OSError: image file is truncated")
    assert all("\n" not in o.reason for o in by.values())


def test_names_are_prefix_plus_stem(converted):
    _, dst, _, _, by = converted
    assert by[NON_ASCII].target == dst / "vacances 2024" / "photo_Été à la plage 1.jpg"
    assert by["rotated.jpg"].target == dst / "photo_rotated.jpg"
    assert by["photo.avif"].target.name == "photo_photo.jpg"  # first of the three 'photo' stems, sorted
    assert {by[f"photo.{s}"].target.name for s in ("avif", "heic", "webp")} == {
        "photo_photo.jpg",
        "photo_photo-2.jpg",
        "photo_photo-3.jpg",
    }


def test_exif_orientation_applied_and_dropped(converted):
    out = converted[4]["rotated.jpg"].target
    with Image.open(out) as im:
        assert im.size == (20, 40)
        exif = im.getexif()
        assert ORIENTATION not in exif
        assert exif[0x010F] == "PhoneMaker"
        assert GPS_IFD not in exif  # location is private unless --keep-gps
    # Left (red) half of the stored picture ends up on top after a clockwise turn.
    assert close(rgb_at(out, (10, 5)), RED)
    assert close(rgb_at(out, (10, 35)), BLUE)


def test_sixteen_bit_keeps_its_contrast(converted):
    out = converted[4]["grey16.png"].target
    # 4096/65535*255 = 15.9 -> 16 and 49152/65535*255 = 191.3 -> 191 (a naive convert gives 255, 255)
    assert close(rgb_at(out, (4, 8)), (16, 16, 16), tol=3)
    assert close(rgb_at(out, (28, 8)), (191, 191, 191), tol=3)


@pytest.mark.parametrize(
    "name, left, right",
    [
        ("alpha.png", RED, WHITE),  # transparent half composited on white
        ("palette.png", (0, 255, 0), WHITE),  # palette index 1 is transparent
        ("bilevel.png", BLACK, WHITE),
        ("cmyk.jpg", RED, RED),
        ("grey.jpg", (100, 100, 100), (100, 100, 100)),
        ("photo.webp", BLUE, BLUE),
        ("photo.avif", BLUE, BLUE),
        ("photo.heic", BLUE, BLUE),
        ("pages.tif", RED, RED),  # first page
        ("anim.gif", RED, RED),  # first frame
        ("mpo.jpg", RED, RED),
    ],
)
def test_colours_survive(converted, name, left, right):
    out = converted[4][name].target
    with Image.open(out) as im:
        assert im.mode == "RGB" and im.format == "JPEG"
        w, h = im.size
    assert close(rgb_at(out, (2, h // 2)), left, tol=8)
    assert close(rgb_at(out, (w - 3, h // 2)), right, tol=8)


def test_multi_frame_files_say_so(converted):
    by = converted[4]
    assert by["pages.tif"].notes == ("first of 2 frames used",)
    assert by["anim.gif"].notes == ("first of 3 frames used",)
    assert by["grey.jpg"].notes == ()
    assert by["mpo.jpg"].notes == ()  # the second MPO frame is not a picture the user took


def test_max_side_shrinks_large_pictures(converted):
    with Image.open(converted[4]["big.png"].target) as im:
        assert im.size == (100, 50)


def test_source_folder_is_byte_identical(converted):
    src, _, before, _, _ = converted
    assert snapshot(src) == before


def test_second_run_converts_nothing_and_decodes_nothing(converted, monkeypatch):
    src, dst, _, first, _ = converted
    outputs = snapshot(dst)
    calls = []
    real = convert_mod.render_jpeg
    monkeypatch.setattr(convert_mod, "render_jpeg", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    again = convert_folder(src, dst, OPTIONS, workers=1, progress=False)
    assert again.count(CONVERTED) == 0
    assert again.count(UNCHANGED) == first.count(CONVERTED)
    # Only the files that failed are tried again; the done ones are skipped from the manifest.
    assert sorted(p.name for p in calls) == sorted(
        ["bomb.png", "corrupt.png", "empty.jpg", "garbage.jpg", "hugebomb.png", "notes.txt", "raw.dng", "truncated.jpg"]
    )
    assert snapshot(dst) == outputs


def test_render_to_rgb_exact_values():
    grey16 = Image.fromarray(np.array([[0, 4096, 49152, 65535]], np.uint16))
    assert list(to_rgb(grey16).getdata()) == [(0, 0, 0), (16, 16, 16), (191, 191, 191), (255, 255, 255)]
    half_red = Image.new("RGBA", (1, 1), (255, 0, 0, 128))
    assert to_rgb(half_red).getpixel((0, 0)) == (255, 127, 127)  # 255*127/255 of white shows through


def make_small(src: Path) -> None:
    save(src / "a.jpg", Image.new("RGB", (16, 16), RED))
    save(src / "a.png", Image.new("RGB", (16, 16), BLUE))


def test_existing_different_file_is_refused_then_suffixed(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_small(src)
    dst.mkdir()
    (dst / "a.jpg").write_bytes(b"the user's own file")
    refused = {o.source: o for o in convert_folder(src, dst, ConvertOptions(), workers=1, progress=False).outcomes}
    assert refused["a.jpg"].status == FAILED
    assert refused["a.jpg"].reason == (
        "a.jpg already exists in the output with different content; delete it to reconvert, or pass --on-conflict suffix"
    )
    assert refused["a.png"].target == dst / "a-2.jpg"
    assert (dst / "a.jpg").read_bytes() == b"the user's own file"
    suffixed = convert_folder(src, dst, ConvertOptions(on_conflict="suffix"), workers=1, progress=False)
    assert {o.source: o.target.name for o in suffixed.outcomes} == {"a.jpg": "a-c1.jpg", "a.png": "a-2.jpg"}
    assert (dst / "a.jpg").read_bytes() == b"the user's own file"


def test_identical_output_without_manifest_is_skipped(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_small(src)
    convert_folder(src, dst, ConvertOptions(), workers=1, progress=False)
    (dst / convert_mod.MANIFEST).unlink()
    again = convert_folder(src, dst, ConvertOptions(), workers=1, progress=False)
    assert [(o.status, o.reason) for o in again.outcomes] == [(UNCHANGED, "identical output already exists")] * 2
    assert sorted(p.name for p in dst.iterdir()) == [convert_mod.MANIFEST, "a-2.jpg", "a.jpg"]


def test_two_workers_give_the_same_bytes(tmp_path):
    src = tmp_path / "src"
    make_small(src)
    one = convert_folder(src, tmp_path / "one", ConvertOptions(), workers=1, progress=False)
    two = convert_folder(src, tmp_path / "two", ConvertOptions(), workers=2, progress=False)
    assert [o.target.read_bytes() for o in one.outcomes] == [o.target.read_bytes() for o in two.outcomes]


def test_render_is_deterministic(tmp_path):
    save(tmp_path / "x.png", Image.new("RGB", (8, 8), RED))
    assert render_jpeg(tmp_path / "x.png", 90, None, 10**6) == render_jpeg(tmp_path / "x.png", 90, None, 10**6)


def test_output_inside_source_is_refused(tmp_path):
    make_small(tmp_path)
    with pytest.raises(VlmtuneError) as inside:
        convert_folder(tmp_path, tmp_path / "out", ConvertOptions(), workers=1, progress=False)
    assert str(inside.value) == (
        f"{tmp_path / 'out'}: choose an output folder outside {tmp_path} (and not containing it); SRC is only read"
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "src").mkdir()
    with pytest.raises(VlmtuneError, match="choose an output folder outside"):
        convert_folder(tmp_path / "src", tmp_path, ConvertOptions(), workers=1, progress=False)


def run_cli(*args):
    from vlmtune.cli import app

    return CliRunner().invoke(app, ["data", "convert", *map(str, args), "--no-progress", "--workers", "1"])


def test_cli_reports_and_exit_codes(tmp_path):
    src = tmp_path / "src"
    make_small(src)
    (src / "empty.jpg").write_bytes(b"")
    result = run_cli(src, tmp_path / "dst")
    assert result.exit_code == 0
    assert "failed  empty.jpg: empty file (0 bytes)" in result.output
    assert "converted 2, skipped 0 (0 already done, 0 not images), failed 1" in result.output
    assert run_cli(src, tmp_path / "dst", "--strict").exit_code == 1
    only_text = tmp_path / "text"
    only_text.mkdir()
    (only_text / "notes.txt").write_text("x")
    assert run_cli(only_text, tmp_path / "dst2").exit_code == 1


def test_a_picture_below_the_minimum_side_is_converted_with_a_warning(tmp_path):
    from vlmtune.data.check import DEFAULT_MIN_SIDE as SIDE  # what data check warns below

    src, dst = tmp_path / "src", tmp_path / "dst"
    save(src / "dot.png", Image.new("RGB", (1, 1), RED))
    save(src / "wide.png", Image.new("RGB", (400, SIDE - 1), RED))
    save(src / "fine.png", Image.new("RGB", (SIDE + 30, SIDE), RED))
    by = {o.source: o for o in convert_folder(src, dst, ConvertOptions(), workers=1, progress=False).outcomes}
    assert {s: o.status for s, o in by.items()} == {"dot.png": CONVERTED, "wide.png": CONVERTED, "fine.png": CONVERTED}
    assert by["dot.png"].warnings == (f"1x1 is smaller than {SIDE} px (--min-side); the model will upscale it",)
    assert by["wide.png"].warnings[0].startswith(f"400x{SIDE - 1} is smaller than {SIDE} px")
    assert by["fine.png"].warnings == ()
    assert ConvertOptions(min_side=2).key() == ConvertOptions().key()  # a warning never changes the output
    result = run_cli(src, tmp_path / "dst2", "--min-side", str(SIDE + 100))
    assert result.exit_code == 0
    assert f"warning fine.png: {SIDE + 30}x{SIDE} is smaller than {SIDE + 100} px (--min-side)" in result.output
