"""Tests for dermo.imageio.load_image (bad and odd inputs: see tests/badinputs.py)."""

from __future__ import annotations

import io
import pickle
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

import dermo.imageio as imageio
from dermo.imageio import MAX_SIDE, ImageError, load_image
from tests.badinputs import CASES, EXPECTED, LOADS_OK, REFUSED, gif_comment_bomb, jpeg_scan_bomb, make_bad_inputs

ROOT = Path(__file__).resolve().parents[1]
PIL_MAX_PIXELS = Image.MAX_IMAGE_PIXELS


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return make_bad_inputs(tmp_path_factory.mktemp("badinputs"))


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", **kw)
    return buf.getvalue()


def _png(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


# --------------------------------------------------------------------------- #
# the shared bad-input set
# --------------------------------------------------------------------------- #

def test_expectations_are_consistent(bad):
    assert LOADS_OK | REFUSED == set(CASES) == set(EXPECTED)
    assert not LOADS_OK & REFUSED
    assert set(bad) <= set(CASES)
    assert set(CASES) - set(bad) <= {"good_heic"}  # only HEIC may be missing
    assert not bad["missing"].exists()
    for name in REFUSED:
        assert EXPECTED[name] in imageio.ERROR_CODES


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_case(bad, name):
    if name not in bad:
        pytest.skip(f"{name} could not be written here (no HEIC encoder)")
    case = CASES[name]
    if case.outcome == "ok":
        im = load_image(bad[name])
        assert im.mode == "RGB"
        assert im.size == case.size
        if case.probe:
            (xy, rgb) = case.probe
            got = im.getpixel(xy)
            assert all(abs(g - e) <= case.tol for g, e in zip(got, rgb)), (got, rgb)
    else:
        with pytest.raises(ImageError) as ei:
            load_image(bad[name])
        err = ei.value
        assert err.code == case.outcome, str(err)
        msg = str(err)
        assert msg and msg[0].isupper() and msg.endswith("."), msg
        assert "Traceback" not in msg and "PIL" not in msg


@pytest.mark.parametrize("name", ["zero_byte", "text", "truncated", "bomb", "bomb_mid", "png16", "cmyk", "animated"])
def test_same_outcome_from_bytes_and_file_objects(bad, name):
    data = bad[name].read_bytes()
    outcomes = []
    for src in (data, bytearray(data), io.BytesIO(data), open(bad[name], "rb")):
        try:
            outcomes.append(("ok", load_image(src).tobytes()))
        except ImageError as err:
            outcomes.append((err.code, None))
        finally:
            if hasattr(src, "close"):
                src.close()
    assert all(o == outcomes[0] for o in outcomes)
    assert outcomes[0][0] == EXPECTED[name]


def test_zero_byte_message(bad):
    with pytest.raises(ImageError) as ei:
        load_image(bad["zero_byte"])
    assert str(ei.value) == "The file is empty (0 bytes). Upload a JPEG, PNG, WebP or HEIC photo."
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_text_file_mentions_text(bad):
    with pytest.raises(ImageError, match="text"):
        load_image(bad["text"])


def test_svg_is_called_a_drawing(tmp_path):
    """Phones' image pickers offer SVG files: they are named as drawings, not as renamed documents."""
    svg = tmp_path / "logo.svg"
    svg.write_text('<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"></svg>')
    for src in (svg, svg.read_bytes()):
        with pytest.raises(ImageError, match="SVG drawing, not a photo") as ei:
            load_image(src)
        assert ei.value.code == "not_image"


def test_png16_is_scaled_not_clipped(bad):
    a = np.asarray(load_image(bad["png16"]))
    assert a.shape == (16, 256, 3)
    np.testing.assert_array_equal(a[0, :, 0], np.arange(256))  # v*257 -> v, not min(v*257, 255)
    assert (a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()


def test_sixteen_bit_conversion_memory_is_bounded():
    """A 16-bit PNG of 64 MP can be a 0.5 MB file: converting it must not take int64 copies of the whole image."""
    import tracemalloc

    arr = np.full((4000, 4000), 40000, np.uint16)  # 32 MB
    tracemalloc.start()
    try:
        out = imageio._sixteen_to_u8(arr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and (out == round(40000 / 257)).all()
    assert peak < 40e6, peak  # the 16 MB result and a few MB of blocks (whole-image int64 copies took 400 MB)


def test_damaged_exif_is_dropped_not_fatal(bad):
    """A photo whose EXIF Pillow cannot parse loads, and nothing downstream (the predictor checks EXIF orientation
    again) trips over it: the result carries no EXIF."""
    with Image.open(bad["bad_exif"]) as raw:
        with pytest.raises(SyntaxError):
            raw.copy().getexif()  # the file really is damaged there
    im = load_image(bad["bad_exif"])
    assert dict(im.getexif()) == {} and "exif" not in im.info


def test_truncated_is_not_silently_grey(bad):
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(ImageError) as ei:
        load_image(bad["truncated"])
    assert ei.value.code == "truncated"
    assert "incomplete" in str(ei.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
@pytest.mark.parametrize("keep", [0.3, 0.9, -40])
def test_truncated_png_and_jpeg(fmt, keep):
    """Cut inside the pixel data -> error. (A PNG missing only IEND/checksums,
    i.e. with every pixel present, does load, and that is fine.)"""
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = _png(noise) if fmt == "PNG" else _jpeg(noise)
    cut = int(len(data) * keep) if keep > 0 else len(data) + keep
    with pytest.raises(ImageError) as ei:
        load_image(data[:cut])
    assert ei.value.code in ("truncated", "corrupt")
    if fmt == "JPEG":
        with pytest.raises(ImageError, match="incomplete"):
            load_image(data[:-2])  # only the EOI marker missing


def test_animated_gif_first_frame(bad):
    im = load_image(bad["animated"])
    assert im.getcolors() == [(64 * 48, (255, 0, 0))]


def test_exif_orientation_applied(bad):
    with Image.open(bad["exif_rotated"]) as raw:
        assert raw.size == (64, 32)
    im = load_image(bad["exif_rotated"])
    assert im.size == (32, 64)
    top, bottom = im.getpixel((16, 4)), im.getpixel((16, 60))
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_transparency_on_white(bad):
    im = load_image(bad["rgba"])
    assert im.getpixel((5, 5)) == (255, 255, 255)
    assert im.getpixel((60, 5)) == (0, 0, 255)
    im = load_image(bad["palette"])
    assert im.getpixel((5, 5)) == (255, 255, 255)
    assert im.getpixel((60, 5)) == (255, 0, 0)



@pytest.mark.parametrize("mode,key", [("L", 0), ("RGB", (0, 0, 0))])
def test_trns_colour_transparency_on_white(mode, key):
    """A PNG whose transparency is a tRNS colour (L or RGB mode, no alpha channel): transparent where it matches."""
    im = Image.new(mode, (64, 32), key)
    im.paste(200 if mode == "L" else (200, 10, 10), (32, 0, 64, 32))
    out = load_image(_png(im, transparency=key))
    assert out.getpixel((5, 5)) == (255, 255, 255)
    assert out.getpixel((60, 5)) == ((200, 200, 200) if mode == "L" else (200, 10, 10))


def _transparent_sources() -> dict[str, Image.Image]:
    """Small images with random pixels and alpha in each transparent mode ``load_image`` flattens."""
    rng = np.random.default_rng(7)
    rgba = Image.fromarray(rng.integers(0, 256, (37, 23, 4), dtype=np.uint8), "RGBA")
    pal = rgba.convert("RGB").quantize(32)
    pal_trns = pal.copy()
    pal_trns.info["transparency"] = bytes(rng.integers(0, 256, 32, dtype=np.uint8))  # an alpha per palette entry
    rgb_trns = rgba.convert("RGB")
    rgb_trns.info["transparency"] = rgb_trns.getpixel((3, 4))  # a tRNS colour
    return {"RGBA": rgba, "RGBa": rgba.convert("RGBa"), "LA": rgba.convert("LA"),
            "La": rgba.convert("LA").convert("La"), "PA": pal.convert("PA"), "P+trns": pal_trns, "RGB+trns": rgb_trns}


@pytest.mark.parametrize("name", list(_transparent_sources()))
@pytest.mark.parametrize("block", [1, 23 * 5, 10**9])  # one row per band; 5 rows (the last band 2); a single band
def test_banded_flattening_is_exact(name, block, monkeypatch):
    """Transparency is flattened in bands of rows (memory); the result is exactly the whole image composited at once
    (Image.alpha_composite over opaque white), and every band is used."""
    src = _transparent_sources()[name]
    rgba = (src.convert("LA") if src.mode == "La" else src).convert("RGBA")
    expected = Image.alpha_composite(Image.new("RGBA", src.size, imageio.BACKGROUND + (255,)), rgba).convert("RGB")
    crops = []
    real_crop = Image.Image.crop
    monkeypatch.setattr(Image.Image, "crop", lambda im, box=None: crops.append(box) or real_crop(im, box))
    monkeypatch.setattr(imageio, "_FLATTEN_BLOCK_PIXELS", block)
    out = load_image(src.copy())
    assert out.mode == "RGB" and out.size == src.size
    np.testing.assert_array_equal(np.asarray(out), np.asarray(expected))
    assert len(crops) == -(-37 // max(1, block // 23))  # bands of the 37 rows: 37, 8 or 1
    assert not (np.asarray(expected) == 255).all()  # (not a trivially white image)


def test_upright_images_are_not_copied_for_orientation(monkeypatch):
    """exif_transpose (which copies even an upright image: 256 MB at 64 MP RGBA) runs only for turned images."""
    calls = []
    real = imageio.ImageOps.exif_transpose
    monkeypatch.setattr(imageio.ImageOps, "exif_transpose", lambda im, **kw: calls.append(im) or real(im, **kw))
    im = Image.new("RGBA", (30, 20), (200, 10, 10, 128))
    assert load_image(_png(im)).getpixel((0, 0)) == (227, 132, 132)
    assert calls == []
    exif = Image.Exif()
    exif[0x0112] = 6  # turned: 30 x 20 stored, 20 x 30 shown
    assert load_image(_png(im, exif=exif)).size == (20, 30)
    assert len(calls) == 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied(orientation):
    """Each EXIF orientation (2-8: mirrored, 180 degrees, turned either way, transposed) gives the upright photo,
    pixel for pixel what ImageOps.exif_transpose shows; 1 is already upright. (Skipping exif_transpose for upright
    images must not skip a turned one: phones write 3, 6 and 8.)"""
    from PIL import ImageOps

    src = Image.fromarray(np.random.default_rng(orientation).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _png(src, exif=exif)
    with Image.open(io.BytesIO(data)) as raw:
        want = np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))
    out = load_image(data)
    np.testing.assert_array_equal(np.asarray(out), want)
    assert (orientation == 1) == np.array_equal(np.asarray(out), np.asarray(src))  # every other one changes it


# --------------------------------------------------------------------------- #
# size limits
# --------------------------------------------------------------------------- #

def test_bomb_memory_bounded(bad):
    """(That no pixel is decoded is test_pixel_check_happens_before_decoding; timings belong in benchmarks/.)"""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(3):
        with pytest.raises(ImageError) as ei:
            load_image(bad["bomb"])
        assert ei.value.code == "too_many_pixels"
        assert "too large" in str(ei.value)
    # decoding 30000x30000 would need >= 900 MB
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024


def test_pixel_check_happens_before_decoding(bad, monkeypatch):
    """bomb_mid (81 MP) is under Pillow's own limits: only our header check can refuse it."""
    assert 9000 * 9000 < Image.MAX_IMAGE_PIXELS

    def no_decoding(self, *a, **k):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as ei:
        load_image(bad["bomb_mid"])
    assert ei.value.code == "too_many_pixels"
    assert "9000 x 9000" in str(ei.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_image_file_never_decodes_and_agrees_with_load_image(bad, name, monkeypatch):
    """The app runs check_image_file on every new photo, outside the queue: no pixel data is decoded, whatever the
    file, and it refuses what load_image refuses, except damage inside the pixel data (found only by decoding)."""
    if name not in bad:
        pytest.skip(f"{name} could not be written here (no HEIC encoder)")
    try:
        load_image(bad[name])
        expected = "ok"
    except ImageError as err:
        expected = err.code

    def no_decoding(self, *a, **k):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    try:
        imageio.check_image_file(bad[name])
        got = "ok"
    except ImageError as err:
        got = err.code
    assert got == expected or (got == "ok" and expected in ("truncated", "corrupt")), (got, expected)


def test_pillow_limit_still_reported_cleanly_when_max_pixels_is_huge(bad):
    with pytest.raises(ImageError) as ei:
        load_image(bad["bomb"], max_pixels=10**12)
    assert ei.value.code == "too_many_pixels"


def test_bomb_warning_as_error_is_mapped(tmp_path):
    """Between 89.5 and 179 MP Pillow only warns; under -W error that warning is raised."""
    from tests.badinputs import write_png

    p = tmp_path / "b100.png"
    write_png(p, 10000, 10000, bit_depth=1, color_type=0)
    with pytest.warns(Image.DecompressionBombWarning):
        with pytest.raises(ImageError):
            load_image(p)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError) as ei:
            load_image(p)
    assert ei.value.code == "too_many_pixels"


def test_global_pil_state_untouched(bad):
    for p in bad.values():
        try:
            load_image(p)
        except ImageError:
            pass
    assert Image.MAX_IMAGE_PIXELS == PIL_MAX_PIXELS
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_huge_file_refused_without_reading(bad, monkeypatch):
    def no_open(*a, **k):
        raise AssertionError("file opened")

    monkeypatch.setattr(imageio, "open", no_open, raising=False)
    with pytest.raises(ImageError) as ei:
        load_image(bad["huge"])
    assert ei.value.code == "file_too_large"
    assert "27.3 MB" in str(ei.value) and "25.0 MB" in str(ei.value)  # 26 MiB in decimal MB, as phones show sizes


def test_huge_file_loads_with_higher_limit(bad):
    im = load_image(bad["huge"], max_bytes=30 * 2**20)  # trailing padding after EOI is harmless
    assert im.size == (64, 48)


def test_max_bytes_for_bytes_and_streams():
    data = _jpeg(Image.new("RGB", (32, 32), (10, 20, 30)))
    with pytest.raises(ImageError) as ei:
        load_image(data, max_bytes=len(data) - 1)
    assert ei.value.code == "file_too_large"
    assert load_image(data, max_bytes=len(data)).size == (32, 32)

    class OneWay:  # non-seekable stream that counts what is read
        def __init__(self, payload):
            self.buf, self.read_total = io.BytesIO(payload), 0

        def read(self, n=-1):
            chunk = self.buf.read(n)
            self.read_total += len(chunk)
            return chunk

        def seekable(self):
            return False

    s = OneWay(data + bytes(10_000))
    with pytest.raises(ImageError) as ei:
        load_image(s, max_bytes=len(data) + 100)
    assert ei.value.code == "file_too_large"
    assert s.read_total <= len(data) + 101
    assert load_image(OneWay(data)).size == (32, 32)


def test_max_side_downscale():
    im = load_image(_jpeg(Image.new("RGB", (9000, 1000), (120, 80, 60))))  # draft path (>= 2x)
    assert max(im.size) == MAX_SIDE == 4096
    assert abs(im.size[0] / im.size[1] - 9.0) < 0.05
    im = load_image(_png(Image.new("RGB", (5000, 1000), (120, 80, 60))))
    assert im.size == (4096, 819)
    assert load_image(_png(Image.new("RGB", (5000, 1000))), max_side=None).size == (5000, 1000)
    assert load_image(np.zeros((1000, 5000, 3), np.uint8)).size == (4096, 819)
    small = load_image(_png(Image.new("RGB", (4096, 100))))
    assert small.size == (4096, 100)



def test_phone_jpegs_labelled_mpo_are_drafted_too(monkeypatch):
    """Pillow calls many phone JPEGs MPO: they take libjpeg's reduced-size decoding as JPEGs do."""
    from PIL.JpegImagePlugin import JpegImageFile  # MPO's image class derives from it

    seen = []
    draft = JpegImageFile.draft
    monkeypatch.setattr(JpegImageFile, "draft", lambda self, mode, size: seen.append(self.format) or draft(self, mode,
                                                                                                        size))
    big = Image.new("RGB", (9000, 1000), (120, 80, 60))
    for fmt in ("JPEG", "MPO"):
        buf = io.BytesIO()
        big.save(buf, fmt, quality=80, **({"save_all": True, "append_images": [big]} if fmt == "MPO" else {}))
        buf.seek(0)
        with Image.open(io.BytesIO(buf.getvalue())) as probe:
            assert probe.format == fmt
        assert max(load_image(buf).size) == MAX_SIDE
    assert [f for f in seen if f] == ["JPEG", "MPO"]  # (Pillow's own thumbnail drafts again, format-less)


# --------------------------------------------------------------------------- #
# sources
# --------------------------------------------------------------------------- #

def test_missing_path_and_folder(tmp_path):
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path / "nope.jpg")
    assert ei.value.code == "not_found" and "not found" in str(ei.value)
    with pytest.raises(ImageError) as ei:
        load_image(str(tmp_path / "nope.jpg"))
    assert ei.value.code == "not_found"
    with pytest.raises(ImageError) as ei:
        load_image(tmp_path)
    assert ei.value.code == "not_a_file"


def test_none_and_wrong_types(tmp_path):
    with pytest.raises(ImageError) as ei:
        load_image(None)
    assert ei.value.code == "no_image"
    with pytest.raises(TypeError):
        load_image(42)
    p = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(p)
    with open(p) as text_mode, pytest.raises(TypeError, match="binary"):
        load_image(text_mode)


def test_numpy_arrays():
    assert load_image(np.full((4, 5), 7, np.uint8)).getpixel((0, 0)) == (7, 7, 7)
    assert load_image(np.full((4, 5, 1), 7, np.uint8)).size == (5, 4)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200
    assert load_image(rgb).getpixel((4, 3)) == (200, 0, 0)
    rgba = np.zeros((4, 5, 4), np.uint8)  # fully transparent -> white
    assert load_image(rgba).getpixel((0, 0)) == (255, 255, 255)
    u16 = np.array([[0, 257 * 100, 65535]], np.uint16)
    assert [load_image(u16).getpixel((x, 0))[0] for x in range(3)] == [0, 100, 255]
    u16rgb = np.full((2, 2, 3), 257 * 50, np.uint16)
    assert load_image(u16rgb).getpixel((0, 0)) == (50, 50, 50)
    assert load_image(np.asfortranarray(rgb)).getpixel((4, 3)) == (200, 0, 0)
    for bad_arr, code in [
        (np.zeros((4, 5), np.float32), "unsupported_array"),
        (np.zeros((4, 5, 2), np.uint8), "unsupported_array"),
        (np.zeros((4,), np.uint8), "unsupported_array"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
    ]:
        with pytest.raises(ImageError) as ei:
            load_image(bad_arr)
        assert ei.value.code == code
    with pytest.raises(ImageError) as ei:
        load_image(np.zeros((100, 100), np.uint8), max_pixels=9999)
    assert ei.value.code == "too_many_pixels"


@pytest.mark.parametrize(
    "mode,value,expected",
    [
        ("RGB", (1, 2, 3), (1, 2, 3)),
        ("L", 77, (77, 77, 77)),
        ("1", 1, (255, 255, 255)),
        ("LA", (77, 0), (255, 255, 255)),
        ("La", (77, 255), (77, 77, 77)),
        ("RGBA", (10, 20, 30, 255), (10, 20, 30)),
        ("RGBA", (10, 20, 30, 0), (255, 255, 255)),
        ("I;16", 257 * 9, (9, 9, 9)),
        ("I;16B", 65535, (255, 255, 255)),
        ("I", 32768, (128, 128, 128)),
        ("I", -5, (0, 0, 0)),
        ("F", 0.5, (128, 128, 128)),
        ("F", 1.0, (255, 255, 255)),  # 0..1 (max exactly 1) is scaled by 255
        ("F", 1.5, (2, 2, 2)),  # otherwise taken as 0..255
        ("CMYK", (0, 0, 0, 0), (255, 255, 255)),
    ],
)
def test_pil_modes(mode, value, expected):
    src = Image.new(mode, (6, 4), value)
    im = load_image(src)
    assert im.mode == "RGB" and im.size == (6, 4)
    assert im.getpixel((0, 0)) == expected


def test_pil_input_is_not_returned_or_mutated():
    src = Image.new("RGB", (10, 10), (1, 2, 3))
    out = load_image(src)
    assert out is not src
    out.putpixel((0, 0), (9, 9, 9))
    assert src.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(ImageError) as ei:
        load_image(src, max_pixels=99)
    assert ei.value.code == "too_many_pixels"


def test_lazily_opened_pil_image(bad):
    with Image.open(bad["animated"]) as src:
        src.seek(1)
        assert load_image(src).getpixel((0, 0)) == (255, 0, 0)
    with Image.open(bad["truncated"]) as src:
        with pytest.raises(ImageError) as ei:
            load_image(src)
        assert ei.value.code == "truncated"


def test_heic(bad):
    if "good_heic" not in bad:
        pytest.skip("pillow_heif cannot encode HEIC here")
    im = load_image(bad["good_heic"].read_bytes())
    assert im.mode == "RGB" and im.size == (64, 48)


def test_other_formats():
    im = Image.new("RGB", (20, 10), (50, 100, 150))
    for fmt in ("WEBP", "BMP", "TIFF", "GIF"):
        buf = io.BytesIO()
        im.save(buf, fmt)
        out = load_image(buf.getvalue())
        assert out.size == (20, 10) and out.mode == "RGB", fmt


def test_disallowed_format_refused():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PPM")  # Pillow can read it, we do not accept it
    with pytest.raises(ImageError) as ei:
        load_image(buf.getvalue())
    assert ei.value.code == "not_image"


def test_error_is_value_error_and_pickles():
    err = ImageError("The file is empty (0 bytes).", code="empty")
    assert isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))
    assert back.code == "empty" and str(back) == str(err)


def test_nothing_printed(bad, capsys):
    for p in bad.values():
        try:
            load_image(p)
        except ImageError:
            pass
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_library_does_not_import_gradio():
    code = "import sys, dermo.imageio, dermo.quality; assert 'gradio' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_binary_streams_whose_mode_says_r_load(tmp_path):
    """Zip members are binary streams with ``mode == "r"``: they load; a real text-mode file is refused."""
    import zipfile

    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 90)).save(png, format="PNG")
    z = tmp_path / "a.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("a.png", png.getvalue())
    with zipfile.ZipFile(z) as zf, zf.open("a.png") as member:
        assert member.mode == "r"
        assert load_image(member).size == (64, 48)
    (tmp_path / "t.txt").write_text("not an image")
    with open(tmp_path / "t.txt") as text, pytest.raises(TypeError, match="binary mode"):
        load_image(text)


# --------------------------------------------------------------------------- #
# exact limits and messages, decoder errors, sniffing
# --------------------------------------------------------------------------- #

def test_max_bytes_boundary_for_paths(tmp_path):
    p = tmp_path / "a.png"
    p.write_bytes(_png(Image.new("RGB", (32, 32), (10, 20, 30))))
    n = p.stat().st_size
    assert load_image(p, max_bytes=n).size == (32, 32)
    assert imageio.check_image_file(p, max_bytes=n) == "PNG"
    for src in (p, str(p)):
        with pytest.raises(ImageError) as ei:
            load_image(src, max_bytes=n - 1)
        assert ei.value.code == "file_too_large"


def test_max_pixels_boundary_from_the_header():
    data = _png(Image.new("RGB", (100, 100), (10, 20, 30)))
    assert load_image(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageError) as ei:
        load_image(data, max_pixels=9_999)
    assert ei.value.code == "too_many_pixels"
    assert str(ei.value).startswith(
        "The image is too large (100 x 100 pixels, 0.01 megapixels); the limit is 0.01 megapixels. ")


def test_too_many_pixels_message_is_width_by_height(tmp_path, monkeypatch):
    from tests.badinputs import write_png

    p = tmp_path / "wide.png"
    write_png(p, 9000, 8000, bit_depth=1, color_type=0)  # 72 MP: under Pillow's limit, over ours

    def no_decoding(self, *a, **k):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with pytest.raises(ImageError) as ei:
        load_image(p)
    assert ei.value.code == "too_many_pixels"
    assert str(ei.value) == (
        "The image is too large (9000 x 8000 pixels, 72 megapixels); the limit is 64 megapixels. "
        "Resize it (for example to 4000 pixels on the longest side) and upload it again.")


@pytest.mark.parametrize("max_bytes, size, limit", [(1_000_000, "1.0 MB", "1.0 MB"), (999_999, "1.0 MB", "1000 KB"),
                                                    (1000, "1 KB", "1 KB"), (999, "1 KB", "999 bytes")])
def test_file_size_units_in_the_message(max_bytes, size, limit):
    with pytest.raises(ImageError) as ei:
        load_image(bytes(max_bytes + 1), max_bytes=max_bytes)
    assert ei.value.code == "file_too_large"
    assert str(ei.value).startswith(f"The file is too large ({size}); the limit is {limit}. "), str(ei.value)


@pytest.mark.parametrize("exc, code", [(EOFError(), "truncated"), (OSError("premature end of data"), "truncated"),
                                       (OSError("image file is truncated"), "truncated"),
                                       (OSError("broken data stream"), "corrupt"), (ValueError("bad"), "corrupt")])
def test_decoder_errors_are_mapped(monkeypatch, exc, code):
    data = _png(Image.new("RGB", (16, 16), (10, 20, 30)))
    calls = []

    def failing_load(self, *a, **k):
        calls.append(1)
        raise exc

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    with pytest.raises(ImageError) as ei:
        load_image(data)
    assert calls and ei.value.code == code, str(ei.value)
    if code == "truncated":
        assert "incomplete" in str(ei.value)


def test_damaged_heic_with_a_decoder_is_not_called_unreadable_here():
    """With pillow_heif present, a damaged HEIC is a damaged file, not a format 'this server cannot read'."""
    pytest.importorskip("pillow_heif")
    data = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(range(256)) * 4
    with pytest.raises(ImageError) as ei:
        load_image(data)
    assert imageio._heif_available
    assert ei.value.code != "heic_unsupported" and "cannot read" not in str(ei.value), str(ei.value)


def test_heic_without_a_decoder_says_so(monkeypatch):
    monkeypatch.setattr(imageio, "_heif_available", False)
    err = imageio._not_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00")
    assert err.code == "heic_unsupported" and "this server cannot read" in str(err)


def test_text_with_a_multibyte_character_cut_at_the_sniffed_prefix():
    data = b"a" * 511 + "é".encode() + b" and more text\n" * 10  # the 512-byte prefix ends inside the "é"
    assert data[511:513] == "é".encode()
    with pytest.raises(ImageError, match="it contains text") as ei:
        load_image(data)
    assert ei.value.code == "not_image"
    with pytest.raises(ImageError) as ei:  # invalid UTF-8 early on is not text
        load_image(b"a" * 100 + b"\xff\xfe" + b"a" * 500)
    assert ei.value.code == "not_image" and "contains text" not in str(ei.value)


def test_short_binary_files_are_not_called_text():
    """A JPEG or GIF cut after a few bytes is not "text" (a stray byte near the end used to count as a cut character,
    and "GIF89a" plus a few header bytes is valid UTF-8)."""
    jpeg = _jpeg(Image.new("RGB", (64, 48), (180, 120, 100)))
    buf = io.BytesIO()
    Image.new("RGB", (600, 450), (180, 120, 100)).save(buf, "GIF")  # header: b"GIF87aX\x02\xc2\x01..."
    for data in [jpeg[:k] for k in range(1, 6)] + [buf.getvalue()[:k] for k in range(8, 14)]:
        with pytest.raises(ImageError) as ei:
            load_image(data)
        assert ei.value.code in ("not_image", "corrupt", "truncated") and "contains text" not in str(ei.value), data
    for text in (b"hi", b"hello\r\n", "caf\u00e9\tnaive\f\n".encode()):  # short text is still text
        with pytest.raises(ImageError, match="it contains text"):
            load_image(text)


def test_float_conversion_memory_is_bounded_and_exact():
    """A float TIFF (mode F) of 64 MP can be a 0.4 MB file: converting it must not take float64 copies of the whole
    image (they took over 2 GB); the result is that of the whole-image rule, block by block."""
    import tracemalloc

    arr = np.full((4000, 4000), 0.5, np.float32)  # 64 MB
    tracemalloc.start()
    try:
        out = imageio._float_to_u8(arr)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.dtype == np.uint8 and (out == 128).all()
    assert peak < 40e6, peak  # the 16 MB result and a few MB of blocks (whole-image copies took over 500 MB)
    a = np.full((600, 900), 0.25, np.float32)  # more than one block
    a[-1, -1] = np.nan
    np.testing.assert_array_equal(imageio._float_to_u8(a)[0, :3], [64, 64, 64])  # all <= 1: scaled by 255
    assert imageio._float_to_u8(a)[-1, -1] == 0
    a[-1, -1] = np.inf  # +inf counts as 255, in the last block: nothing is scaled, also in the first block
    assert imageio._float_to_u8(a)[0, 0] == 0 and imageio._float_to_u8(a)[-1, -1] == 255
    a[-1, -1] = 300.0
    assert imageio._float_to_u8(a)[-1, -1] == 255


def test_progressive_jpeg_with_thousands_of_scans_is_refused_without_decoding(monkeypatch):
    """Each scan of a progressive JPEG is a pass over the whole image: 1000 empty scans in a 10 KB file took seconds
    (2000 at 64 MP: 7 s; 20000: 80 s per request). Real photos have 1 to about 20 (HAM10000: 1)."""
    bomb = jpeg_scan_bomb(4000, 4000, scans=1000)
    assert len(bomb) < 20_000

    def no_decoding(self, *a, **k):
        raise AssertionError("pixel data decoded")

    with monkeypatch.context() as m:
        m.setattr(ImageFile.ImageFile, "load", no_decoding)
        with pytest.raises(ImageError) as ei:
            load_image(bomb)
    assert ei.value.code == "corrupt" and "1000 scans" in str(ei.value)
    for mode, scans in (("RGB", 10), ("L", 6), ("CMYK", 18)):  # what libjpeg writes: loads
        data = _jpeg(Image.new(mode, (64, 48)), progressive=True)
        assert imageio._jpeg_scans(data) == scans
        assert load_image(data).size == (64, 48)
    assert load_image(jpeg_scan_bomb(64, 48, scans=imageio.MAX_JPEG_SCANS)).size == (64, 48)


def test_gif_with_a_huge_comment_is_refused_before_pillow_parses_it(tmp_path):
    """Pillow joins a GIF's comment sub-blocks in quadratic time, while opening it (so in check_image_file too, which
    the app runs on every new upload, outside the queue): 200000 one-byte blocks (0.4 MB) took about 0.5 s, 5 MB over
    a minute."""
    path = tmp_path / "comment.gif"
    path.write_bytes(gif_comment_bomb(200_000))
    for check in (load_image, imageio.check_image_file):
        with pytest.raises(ImageError) as ei:
            check(path)
        assert ei.value.code == "corrupt" and "comment" in str(ei.value)
    ok = gif_comment_bomb(1000)  # an ordinary (even long) comment loads
    assert load_image(ok).getpixel((5, 5)) == (180, 120, 100)
    with Image.open(io.BytesIO(ok)) as raw:
        assert raw.info["comment"] == b"c" * 1000


def _gif_with(extensions: bytes) -> bytes:
    """A valid 64x48 GIF with ``extensions`` (raw extension blocks) before its image."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (180, 120, 100)).save(buf, "GIF")
    g = buf.getvalue()
    start = 13 + (3 << ((g[10] & 7) + 1) if g[10] & 0x80 else 0)  # after the header and global colour table
    return g[:start] + extensions + g[start:]


def test_gif_comment_limit_counts_each_extension_and_sub_block():
    """The GIF limit counts a comment's extension and each of its sub-blocks, whatever their length: a comment of
    MAX_GIF_COMMENT_BLOCKS - 1 sub-blocks (MAX counted) loads, one more is refused; sub-blocks of 255 bytes count one
    each; empty comment extensions (Pillow joins those in quadratic time too) count one each."""
    limit = imageio.MAX_GIF_COMMENT_BLOCKS
    assert imageio._gif_comment_blocks(gif_comment_bomb(10), limit) == 11
    long_blocks = b"\x21\xfe" + (b"\xff" + b"c" * 255) * 20 + b"\x00"
    assert imageio._gif_comment_blocks(_gif_with(long_blocks), limit) == 21
    assert imageio._gif_comment_blocks(_gif_with(b"\x21\xfe\x00" * 7), limit) == 7
    assert load_image(gif_comment_bomb(limit - 1)).size == (64, 48)
    for data in (gif_comment_bomb(limit), _gif_with(b"\x21\xfe\x00" * (limit + 1))):
        with pytest.raises(ImageError) as ei:
            load_image(data)
        assert ei.value.code == "corrupt" and "comment" in str(ei.value)


def test_other_gif_extensions_do_not_count_as_comments():
    """Only comments are limited: an application extension (XMP, say) of thousands of sub-blocks before the image
    loads, and the comment after it is counted from where it starts."""
    app = b"\x21\xff\x0bXMP DataXMP" + b"\x01a" * (2 * imageio.MAX_GIF_COMMENT_BLOCKS) + b"\x00"
    data = _gif_with(app + b"\x21\xfe" + b"\x01c" * 10 + b"\x00")
    assert imageio._gif_comment_blocks(data, imageio.MAX_GIF_COMMENT_BLOCKS) == 11
    assert load_image(data).getpixel((5, 5)) == (180, 120, 100)


@pytest.mark.parametrize("byte", list(range(1, 32)) + [127])
def test_text_sniffing_by_control_character(byte):
    """Short text may hold tab, newlines, form feed and escape (ANSI colours); any other control character (or
    DEL) makes a file binary, so it is not answered with "it contains text"."""
    data = b"hello " + bytes([byte]) + b" world, this is a note"
    with pytest.raises(ImageError) as ei:
        load_image(data)
    is_text = byte in (0x09, 0x0A, 0x0C, 0x0D, 0x1B)
    assert ("contains text" in str(ei.value)) is is_text, (byte, str(ei.value))


def test_float_minus_infinity_is_black():
    """-inf is 0 (like NaN), not 255, and does not change the scaling of the other values."""
    a = np.array([[-np.inf, 0.5], [np.nan, 1.0]], np.float32)
    np.testing.assert_array_equal(imageio._float_to_u8(a), [[0, 128], [0, 255]])
    np.testing.assert_array_equal(imageio._float_to_u8(np.array([[-np.inf, 200.0]], np.float32)), [[0, 200]])


def test_a_jpeg_damaged_inside_still_decodes_a_known_limitation():
    """README, Limitations: a JPEG whose middle bytes were overwritten (not cut off) decodes without an error, since
    Pillow does not report libjpeg's "corrupt data" warnings; its picture is visibly wrong. Should this start to fail
    (Pillow reports them, or the loader learns to detect it), refuse such a file and update the README."""
    from dermo.config import DEFAULT_DATA_DIR

    photos = sorted((Path(DEFAULT_DATA_DIR) / "images").glob("*.jpg"))
    if not photos:
        pytest.skip("HAM10000 not available")
    data = bytearray(photos[0].read_bytes())
    mid = len(data) // 2
    data[mid:mid + 200] = bytes(200)
    intact, damaged = np.asarray(load_image(photos[0]), np.float64), np.asarray(load_image(bytes(data)), np.float64)
    assert damaged.shape == intact.shape
    assert np.abs(damaged - intact).mean() > 10  # visibly wrong, yet no ImageError


def test_a_comment_bomb_behind_a_long_extension_is_refused_all_the_same():
    """The walk over a GIF's extensions stops after 16 x MAX_GIF_COMMENT_BLOCKS sub-blocks of any kind; a file that
    long before its first image is refused, so a comment bomb behind an application extension of that many one-byte
    sub-blocks (a 3 MB file took 30 s to open) cannot pass uncounted."""
    limit = imageio.MAX_GIF_COMMENT_BLOCKS
    padding = b"\x21\xff\x0bXMP DataXMP" + b"\x01a" * (16 * limit + 2) + b"\x00"
    data = _gif_with(padding + b"\x21\xfe" + b"\x01c" * 20_000 + b"\x00")
    assert imageio._gif_comment_blocks(data, limit) == limit + 1
    with pytest.raises(ImageError) as ei:
        load_image(data)
    assert ei.value.code == "corrupt" and "extension" in str(ei.value)
