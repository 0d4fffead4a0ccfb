"""Tests for dermo.quality.check_quality."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from dermo import quality
from dermo.imageio import load_image
from dermo.quality import MESSAGES, QualityReport, check_quality, measure

try:
    from dermo.config import DEFAULT_DATA_DIR
except ImportError:  # pragma: no cover - config not present
    DEFAULT_DATA_DIR = Path("/work/shared/data/ham10000")
HAM = Path(DEFAULT_DATA_DIR) / "images"
needs_ham = pytest.mark.skipif(not HAM.is_dir(), reason=f"{HAM} not available")


def _ham(n: int) -> list[Image.Image]:
    files = sorted(HAM.glob("*.jpg"))
    files = files[:: max(1, len(files) // n)][:n]  # spread over the whole set
    return [load_image(p) for p in files]


def synthetic_lesion(w: int = 300, h: int = 225, seed: int = 0) -> Image.Image:
    """Skin-coloured, textured background with a darker textured ellipse."""
    rng = np.random.default_rng(seed)
    a = np.empty((h, w, 3), np.float32)
    a[:] = (205, 160, 140)
    a += rng.normal(0, 6, (h, w, 1))
    yy, xx = np.mgrid[:h, :w]
    inside = ((xx - w / 2) / (w * 0.22)) ** 2 + ((yy - h / 2) / (h * 0.25)) ** 2 < 1
    a[inside] = a[inside] * 0.45 + rng.normal(0, 10, (int(inside.sum()), 1))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


def heavy_blur(img: Image.Image) -> Image.Image:
    """The 'obviously blurred' case: resize to 600 px wide, Gaussian radius 8."""
    big = img.resize((600, round(600 * img.height / img.width)), Image.Resampling.BICUBIC)
    return big.filter(ImageFilter.GaussianBlur(8))


def test_synthetic_lesion_passes():
    r = check_quality(synthetic_lesion())
    assert r.ok, r.reasons
    assert r.reasons == [] and r.codes == []


@pytest.mark.parametrize("w, h, elongated", [(900, 300, False), (901, 300, True), (300, 1200, True),
                                              (640, 360, False), (4000, 80, True)])
def test_a_long_strip_is_asked_to_be_cropped(w, h, elongated):
    """The model sees every photo squeezed into a square: 4:3 and 16:9 pass, a strip over 3:1 is asked to be
    cropped (it otherwise got a verdict on a distorted image), with its size in the message."""
    r = check_quality(synthetic_lesion(w, h))
    assert ("elongated" in r.codes) == elongated, (r.codes, r.reasons)
    if elongated:
        assert f"{w} x {h}" in r.reasons[r.codes.index("elongated")] and "crop" in r.reasons[0]
        assert not r.ok


@pytest.mark.parametrize("fmt, w, h, orientation", [("PNG", 10000, 100, 1), ("JPEG", 10000, 100, 1),
                                                     ("JPEG", 100, 10000, 1), ("JPEG", 10000, 100, 6)])
def test_messages_quote_the_size_of_the_users_file(tmp_path, fmt, w, h, orientation):
    """load_image shrinks a photo over 4096 px (a 10000 x 100 strip to 4096 x 41): the gate judges and quotes the
    file's own (upright) size, so the strip is asked to be cropped, not called "too small (4096 x 41)"; a size that
    came with the file itself (a PNG text chunk of the same name) is never trusted."""
    from PIL import PngImagePlugin

    from dermo.imageio import ORIGINAL_SIZE

    path = tmp_path / f"strip.{fmt.lower()}"
    im = synthetic_lesion(w, h)
    exif = im.getexif()
    exif[0x0112] = orientation  # 6: turned 90 degrees, so the upright photo is h x w
    im.save(path, fmt, **({"exif": exif.tobytes()} if fmt == "JPEG" else {}))
    loaded = load_image(path)
    upright = (w, h) if orientation == 1 else (h, w)
    assert max(loaded.size) == 4096 and loaded.info[ORIGINAL_SIZE] == upright
    r = check_quality(loaded)
    assert r.codes[0] == "elongated" and "too_small" not in r.codes, (r.codes, r.reasons)
    assert f"{upright[0]} x {upright[1]} pixels" in r.reasons[0]
    info = PngImagePlugin.PngInfo()
    info.add_text(ORIGINAL_SIZE, "(10000, 100)")
    synthetic_lesion(300, 200).save(tmp_path / "spoof.png", pnginfo=info)
    spoof = load_image(tmp_path / "spoof.png")
    assert ORIGINAL_SIZE not in spoof.info and check_quality(spoof).ok
    assert check_quality(synthetic_lesion(4000, 41)).codes == ["too_small"]  # a small image without the record
    # a caller's crop or resize carries the record along in info (Pillow copies it): it no longer describes those
    # pixels, which are judged and quoted as they are
    crop = loaded.crop((0, 0, 60, 30))
    assert crop.info.get(ORIGINAL_SIZE) == upright and quality._file_size(crop) == (60, 30)
    assert check_quality(crop).codes == ["too_small"] and "60 x 30 pixels" in check_quality(crop).reasons[0]
    assert quality._file_size(loaded.resize((2048, loaded.height // 2))) == (2048, loaded.height // 2)


def test_all_black_is_too_dark():
    r = check_quality(Image.new("RGB", (200, 150), 0))
    assert not r.ok
    assert r.codes == ["too_dark"]  # not also "blurry"
    assert r.reasons == ["The photo is too dark: retake it in better light."]
    assert r.measures["brightness"] == 0


def test_all_white_is_too_bright():
    r = check_quality(Image.new("RGB", (200, 150), (255, 255, 255)))
    assert not r.ok
    assert r.codes == ["too_bright"]
    assert r.reasons == [MESSAGES["too_bright"]]
    assert "too bright" in r.reasons[0]


def test_dark_photo_of_lesion():
    dim = Image.eval(synthetic_lesion(), lambda v: v // 10)
    r = check_quality(dim)
    assert r.codes == ["too_dark"]


@pytest.mark.parametrize("size", [(1, 1), (48, 36), (63, 500), (500, 63)])
def test_tiny_is_too_small(size):
    r = check_quality(synthetic_lesion().resize(size))
    assert not r.ok
    assert r.codes == ["too_small"]
    assert f"{size[0]} x {size[1]} pixels" in r.reasons[0]
    assert (r.measures["width"], r.measures["height"]) == size


def test_min_side_boundary():
    assert check_quality(synthetic_lesion(64, 64)).ok
    r = check_quality(synthetic_lesion(64, 64), min_side=65)
    assert r.codes == ["too_small"] and "65 pixels" in r.reasons[0]


def test_one_pixel_from_badinputs(tmp_path):
    from tests.badinputs import make_bad_inputs

    img = load_image(make_bad_inputs(tmp_path)["one_pixel"])
    assert check_quality(img).codes == ["too_small"]


def test_blurred_synthetic_is_blurry():
    r = check_quality(heavy_blur(synthetic_lesion()))
    assert not r.ok
    assert r.codes == ["blurry"]
    assert r.reasons == [MESSAGES["blurry"]]
    assert r.measures["sharpness"] < quality.BLUR


def test_a_blank_image_is_not_a_photo_but_a_blurred_one_stays_blurry():
    """One flat colour (a grey card, a lens cap, a solid fill) has no sharpness either, but "hold the camera steady"
    would not help: it is "not a photo". A noisy flat grey is a (bad) photo, and a blurred lesion is blurry."""
    for colour in ((128, 128, 128), (200, 40, 40), (205, 160, 140)):
        assert check_quality(Image.new("RGB", (600, 450), colour)).codes == ["not_photo"], colour
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(np.clip(128 + rng.normal(0, 3, (450, 600, 1)), 0, 255).astype(np.uint8).repeat(3, 2))
    assert "not_photo" not in check_quality(noisy).codes
    assert check_quality(heavy_blur(synthetic_lesion())).codes == ["blurry"]
    assert measure(heavy_blur(synthetic_lesion()))["contrast"] > quality.BLANK_CONTRAST


def test_blank_needs_both_a_low_contrast_and_a_flat_colour():
    """A smooth colour gradient of under 1 luma level of contrast (a badly defocused photo of plain skin) has no
    flat colour: it is blurry, not "not a photo". The flat half of the rule is the caller's ``max_flat``."""
    x, y = np.linspace(0, 1, 600)[None, :, None], np.linspace(0, 1, 450)[:, None, None]
    ramp = np.concatenate([205 + 20 * x + 0 * y, 160 + 0 * x + 2 * y, 140 - 40 * x + 0 * y], axis=2)
    img = Image.fromarray(np.rint(ramp).astype(np.uint8))
    m = measure(img)
    assert m["contrast"] < quality.BLANK_CONTRAST and 0 < m["flat_fraction"] < quality.MAX_FLAT
    assert check_quality(img).codes == ["blurry"]
    assert check_quality(img, max_flat=m["flat_fraction"] / 2).codes == ["not_photo"]


def test_thresholds_are_parameters():
    img = synthetic_lesion()
    m = measure(img)
    assert check_quality(img, dark=m["brightness"] + 1).codes == ["too_dark"]
    assert check_quality(img, bright=m["brightness"] - 1).codes == ["too_bright"]
    assert check_quality(img, blur=m["sharpness"] + 1).codes == ["blurry"]
    assert check_quality(img, min_chroma=m["chroma"] + 1).codes == ["no_colour"]
    assert check_quality(img, max_flat=m["flat_fraction"] / 2).codes == ["not_photo"]


def test_text_graphic_is_not_a_photo():
    from PIL import ImageDraw

    im = Image.new("RGB", (400, 300), (235, 205, 190))  # skin-coloured background, dark text
    d = ImageDraw.Draw(im)
    for y in range(0, 300, 24):
        d.text((10, y), "Invoice 2024-117 total 42.00 EUR", fill=(40, 30, 30))
    r = check_quality(im)
    assert r.codes == ["not_photo"] and r.measures["flat_fraction"] > quality.MAX_FLAT


def test_measures_and_resolution_independence():
    img = synthetic_lesion(200, 150)
    m = measure(img)
    assert set(m) == {"brightness", "contrast", "sharpness", "chroma", "flat_fraction", "width", "height"}
    assert 0 <= m["brightness"] <= 255 and m["contrast"] > 0
    for f in (2, 4):
        m2 = measure(img.resize((200 * f, 150 * f), Image.Resampling.LANCZOS))
        assert m2["brightness"] == pytest.approx(m["brightness"], abs=1)
        assert m2["contrast"] == pytest.approx(m["contrast"], rel=0.05)
        assert m2["sharpness"] == pytest.approx(m["sharpness"], rel=0.15)
        assert (m2["width"], m2["height"]) == (200 * f, 150 * f)


def test_does_not_mutate_image():
    img = synthetic_lesion()
    before = img.tobytes()
    check_quality(img)
    assert img.tobytes() == before and img.mode == "RGB"


def test_non_rgb_input_is_accepted():
    # a grey photo is analysable but has no colour: it is asked to be retaken in colour
    assert check_quality(synthetic_lesion().convert("L")).codes == ["no_colour"]
    assert check_quality(synthetic_lesion().convert("L").convert("RGB")).codes == ["no_colour"]
    assert check_quality(synthetic_lesion().convert("RGBA")).ok


def test_extension_point_for_out_of_distribution_check():
    calls = []

    def fake_ood(img, report):
        calls.append(img.size)
        report.add_issue("not_skin", "This does not look like a photo of skin: photograph the lesion itself.",
                         ood_score=0.97)

    r = check_quality(synthetic_lesion(), extra_checks=[fake_ood])
    assert calls == [(300, 225)]
    assert not r.ok and r.codes == ["not_skin"] and r.measures["ood_score"] == 0.97
    r = QualityReport()
    assert r.ok and r.reasons == [] and r.measures == {}
    r.add_issue("not_skin", "x")
    assert not r.ok and r.reasons == ["x"]


@needs_ham
def test_real_dermoscopic_images_pass():
    images = _ham(20)
    assert len(images) == 20
    for img in images:
        r = check_quality(img)
        assert r.ok, (r.codes, r.measures)


@needs_ham
def test_real_dermoscopic_images_heavily_blurred_fail():
    for img in _ham(5):
        r = check_quality(heavy_blur(img))
        assert r.codes == ["blurry"], r.measures



# --------------------------------------------------------------------------- #
# exact boundaries of the thresholds, the analysis size, flat_fraction, logging
# --------------------------------------------------------------------------- #

def _up(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def _down(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


def test_thresholds_are_strict_at_the_measured_value():
    """Each limit set to the image's own measure passes (strict comparisons); one step past it refuses."""
    img = synthetic_lesion()
    m = measure(img)
    assert check_quality(img).ok
    b, s, c, f = m["brightness"], m["sharpness"], m["chroma"], m["flat_fraction"]
    assert 0 < f < 1  # (there is room on both sides)
    for kw, passes, refused, code in [
        ("dark", b, _up(b), "too_dark"),
        ("dark", _down(b), _up(b), "too_dark"),
        ("bright", b, _down(b), "too_bright"),
        ("blur", s, _up(s), "blurry"),
        ("blur", _down(s), _up(s), "blurry"),
        ("min_chroma", c, _up(c), "no_colour"),
        ("max_flat", f, _down(f), "not_photo"),
        ("max_flat", _up(f), _down(f), "not_photo"),
    ]:
        r = check_quality(img, **{kw: passes})
        assert r.ok and r.codes == [], (kw, passes, r.codes)
        assert check_quality(img, **{kw: refused}).codes == [code], (kw, refused)


def test_analysis_grey_longest_side_is_analysis_side():
    for size, shape in [((400, 300), (192, 256)), ((300, 400), (256, 192)), ((64, 48), (192, 256)),
                        ((256, 192), (192, 256)), ((1000, 250), (64, 256))]:
        a = quality._analysis_grey(Image.new("RGB", size, (120, 90, 80)))
        assert a.shape == shape, (size, a.shape)
        assert max(a.shape) == quality.ANALYSIS_SIDE and a.dtype == np.float32


def test_measures_do_not_depend_on_orientation():
    img = synthetic_lesion(400, 300)
    m, r = measure(img), measure(img.transpose(Image.Transpose.ROTATE_90))
    assert (r["width"], r["height"]) == (300, 400)
    assert r["brightness"] == pytest.approx(m["brightness"], abs=0.01)
    assert r["contrast"] == pytest.approx(m["contrast"], rel=1e-3)
    assert r["sharpness"] == pytest.approx(m["sharpness"], rel=1e-3)
    assert r["chroma"] == pytest.approx(m["chroma"], rel=0.02)


def test_flat_fraction_is_the_share_of_the_most_common_colour():
    assert measure(Image.new("RGB", (200, 150), (10, 200, 30)))["flat_fraction"] == 1.0
    # at the thumbnail's own size (128 x 96) nothing is resampled, so the shares are exact
    for split, share in [(64, 0.5), (96, 0.75), (32, 0.75)]:
        im = Image.new("RGB", (128, 96), (240, 200, 180))
        im.paste((40, 30, 30), (0, 0, split, 96))
        assert measure(im)["flat_fraction"] == share, split
    im = Image.new("RGB", (256, 192), (240, 200, 180))  # resampled: only the seam column is blended
    im.paste((40, 30, 30), (0, 0, 128, 192))
    assert measure(im)["flat_fraction"] == pytest.approx(0.5, abs=1.5 / 128)


def test_refusals_are_not_logged_at_info(caplog):
    """The app logs at INFO and promises that nothing about an upload is logged: the gate logs failures at DEBUG."""
    dark = Image.new("RGB", (200, 150), 5)
    caplog.set_level(logging.INFO, logger="dermo.quality")
    assert check_quality(dark).codes == ["too_dark"]
    assert [r for r in caplog.records if r.name == "dermo.quality"] == []
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="dermo.quality")
    check_quality(dark)
    recs = [r for r in caplog.records if r.name == "dermo.quality"]
    assert recs and all(r.levelno == logging.DEBUG for r in recs)


def test_too_small_quotes_the_size_of_the_users_file(tmp_path):
    """A 10000 x 50 strip (4096 x 20 once loaded) is too small because of its 50 px side, and the message says
    10000 x 50, the size the user knows."""
    path = tmp_path / "strip.png"
    synthetic_lesion(10000, 50).save(path)
    r = check_quality(load_image(path))
    assert r.codes == ["too_small"] and "10000 x 50 pixels" in r.reasons[0], r.reasons


@pytest.mark.parametrize("record", [(50, 40), (0, 5000), (5000, -1), (5000.0, 200.0), [5000, 200], (5000, 200, 3),
                                    "(5000, 200)", None])
def test_a_size_record_that_cannot_be_the_files_is_ignored(record):
    """Only a record load_image could have written is trusted: a tuple of two positive ints at least as large as
    the image. Anything else (smaller than the image, zero or negative, floats, a list, three values, text) is
    ignored: the image's own size is judged and quoted."""
    from dermo.imageio import ORIGINAL_SIZE, RECORDED_FOR

    img = synthetic_lesion(300, 200)
    img.info[ORIGINAL_SIZE], img.info[RECORDED_FOR] = record, (300, 200)
    assert quality._file_size(img) == (300, 200)
    assert check_quality(img).ok
    img.info[ORIGINAL_SIZE], img.info[RECORDED_FOR] = (6000, 4000), (3000, 2000)  # a real one, of another image
    assert quality._file_size(img) == (300, 200)
    img.info[RECORDED_FOR] = (300, 200)  # a real record, of this image
    assert quality._file_size(img) == (6000, 4000)
