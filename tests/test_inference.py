"""The bundled model as every user gets it: loads offline, checks its sha256, and answers consistently."""
import json
import shutil

import numpy as np
import pytest

from dermo.inference import (BUNDLED_MODEL_DIR, ModelIntegrityError, Predictor, band_of, format_banded,
                             format_probability, sha256_file)
from tests.conftest import require_shared

ROOT = BUNDLED_MODEL_DIR.parent.parent


def test_format_probability_never_claims_certainty():
    assert format_probability(0.0) == "<0.1%" and format_probability(0.0004) == "<0.1%"
    assert format_probability(0.0876) == "8.8%" and format_probability(1.0) == ">99.9%"
    assert format_probability(0.0004, 2) == "0.04%" and format_probability(0.999996, 3) == ">99.999%"


def test_shown_probability_and_band_edges_never_contradict_the_band():
    low, high = 0.036501947, 0.5096527  # the shipped model's edges: "3.7%" and "51.0%" at one decimal
    assert format_banded(0.038, low, high) == ("3.8%", "3.7%", "51.0%")  # was "3.8%, Low below 4%"
    rng = np.random.default_rng(0)
    ps = np.concatenate([rng.uniform(0, 1, 2000), low + rng.normal(0, 1e-4, 500), high + rng.normal(0, 1e-4, 500),
                         [low, high, 0.0, 1.0]]).clip(0, 1)
    for p in ps:
        shown, lo, hi = (float(v.strip("%<>")) for v in format_banded(float(p), low, high))
        band = band_of(float(p), low, high)
        if band == "low":
            assert shown < lo or format_probability(float(p)).startswith("<"), p
        elif band == "high":
            assert shown >= hi, p
        else:
            assert lo <= shown < hi, p


def test_bundled_model_predicts_real_images():
    shared = require_shared()
    pred = Predictor()
    cfg = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    assert pred.backend == "onnx" and pred.sha256 == cfg["sha256"] == sha256_file(BUNDLED_MODEL_DIR / "model.onnx")
    assert pred.config.calibrated and pred.info["band_edges"] == {"low": cfg["band_low"], "high": cfg["band_high"]}
    images = sorted((shared / "images").glob("*.jpg"))[:4]
    batch = pred.predict_batch(images)
    for img, p in zip(images, batch):
        single = pred.predict(img)
        assert single.probability == pytest.approx(p.probability, abs=1e-6)
        assert 0.0 <= p.probability <= 1.0 and p.band == band_of(p.probability, cfg["band_low"], cfg["band_high"])
        assert p.attention.ndim == 2 and p.attention.sum() == pytest.approx(1.0, abs=1e-3)
        assert p.embedding is not None and np.isfinite(p.embedding).all()
    # the served probability is the committed evaluation's (same model file, sha256 recorded there): the
    # temperature and logit bias in config.json are applied, p = sigmoid((l1 - l0) / T + b)
    import pandas as pd

    ev = ROOT / "reports" / "evaluation" / "shipped-test"
    assert json.loads((ev / "metrics.json").read_text())["source"]["sha256"] == cfg["sha256"]
    rows = pd.read_csv(ev / "predictions.csv", dtype={"image_id": str}).head(6)
    got = pred.predict_batch([shared / "images" / f"{i}.jpg" for i in rows["image_id"]])
    np.testing.assert_allclose([g.probability for g in got], rows["probability"], atol=1e-5)
    assert [g.band for g in got] == list(rows["band"])
    lg = np.array([g.logits for g in got])
    assert abs(cfg["logit_bias"]) > 0.1  # so that leaving the calibration out would fail the line above
    want = 1 / (1 + np.exp(-((lg[:, 1] - lg[:, 0]) / cfg["temperature"] + cfg["logit_bias"])))
    np.testing.assert_allclose([g.probability for g in got], want, atol=1e-6)


def test_a_pil_image_is_preprocessed_as_its_file_would_be(tmp_path):
    """predict(Image.open(f)) == predict(f): an EXIF orientation still to apply, or a tRNS transparency, is not
    skipped because the image is already RGB (an upright RGB image is used as it is)."""
    import io

    from PIL import Image

    from dermo.imageio import load_image

    pred = Predictor()
    photo = np.zeros((48, 64, 3), np.uint8)
    photo[:, :32] = (200, 60, 40)
    photo[:24, 32:] = (30, 30, 160)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(photo).save(tmp_path / "rot.jpg", quality=95, exif=exif)
    by_path = pred.predict(tmp_path / "rot.jpg").probability
    with Image.open(tmp_path / "rot.jpg") as raw:  # RGB, decoded by the caller, its orientation not yet applied
        raw.load()
        assert raw.mode == "RGB" and raw.getexif().get(0x0112) == 6
        assert pred.predict(raw).probability == pytest.approx(by_path, abs=1e-6)
    assert pred.predict(load_image(tmp_path / "rot.jpg")).probability == pytest.approx(by_path, abs=1e-6)
    # the orientation matters to this model, so the checks above can fail
    assert pred.predict(Image.fromarray(photo)).probability != pytest.approx(by_path, abs=1e-6)
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "PNG", transparency=(200, 60, 40))
    with Image.open(io.BytesIO(buf.getvalue())) as png:
        png.load()
        assert pred.predict(png).probability == pytest.approx(pred.predict(buf.getvalue()).probability, abs=1e-6)


def test_corrupted_bundle_is_refused(tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="corrupted or was replaced"):
        Predictor(bad)
