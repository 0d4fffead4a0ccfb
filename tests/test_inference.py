"""The bundled model as every user gets it: loads offline, checks its sha256, and answers consistently."""
import json
import shutil

import numpy as np
import pytest

from dermo.inference import (BUNDLED_MODEL_DIR, ModelIntegrityError, Prediction, Predictor, band_of, bands_text,
                             format_banded, format_probability, reported, sha256_file)
from tests.conftest import require_shared

ROOT = BUNDLED_MODEL_DIR.parent.parent


def test_format_probability_never_claims_certainty():
    assert format_probability(0.0) == "<0.1%" and format_probability(0.0004) == "<0.1%"
    assert format_probability(0.0876) == "8.8%" and format_probability(1.0) == ">99.9%"
    assert format_probability(0.0004, 2) == "0.04%" and format_probability(0.999996, 3) == ">99.999%"
    # the floor itself can be told from zero (and 1 - floor from one): only values beyond it get "<" / ">"
    assert format_probability(0.001) == "0.1%" and format_probability(0.999) == "99.9%"
    assert format_probability(0.0001, 2) == "0.01%" and format_probability(0.9999, 2) == "99.99%"


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


def test_a_high_edge_above_one_means_no_high_band():
    """A model whose validation scores leave no High edge (high > 1) shows no "High from 150.0%" edge."""
    assert format_banded(0.5, 0.1, 1.5) == ("50.0%", "10.0%", None)
    assert format_banded(0.5, 0.1, 1.0)[2] == "100.0%"  # an edge of exactly 1 is still an edge
    assert bands_text("10.0%", None) == "Low below 10.0%; this model calls no probability High"
    assert bands_text("3.7%", "51.0%") == "Low below 3.7%, High from 51.0%"


def test_reported_probability_has_six_decimals_and_its_own_band():
    assert reported(0.1234567, 0.1, 0.6) == (0.123457, "medium")
    assert reported(0.1234567, 0.1, 0.6, digits=3) == (0.123, "medium")
    # banded after rounding: 0.59999996 reports as 0.6, which is High at an edge of 0.6
    assert reported(0.59999996, 0.1, 0.6) == (0.6, "high")
    with pytest.raises(ValueError):
        reported(float("nan"), 0.1, 0.6)


def test_prediction_to_dict_is_the_json_contract():
    pred = Prediction(0.25, "medium", np.ones((2, 2)) / 4, [0.5, -0.5], np.zeros(3))
    d = pred.to_dict()
    assert d == {"probability": 0.25, "band": "medium", "logits": [0.5, -0.5]}
    json.dumps(d, allow_nan=False)  # no arrays in it


def test_batched_predictions_equal_single_ones():
    """Each image of a batch gets its own probability, logits, attention and embedding, across batch borders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8)) for i in range(3)]
    images[1] = Image.fromarray(np.full((48, 48, 3), (200, 90, 60), np.uint8))
    pred = Predictor()
    batch = pred.predict_batch(images, batch_size=2)
    assert len(batch) == 3
    for img, b in zip(images, batch):
        s = pred.predict(img)
        assert b.probability == pytest.approx(s.probability, abs=1e-6) and b.band == s.band
        np.testing.assert_allclose(b.logits, s.logits, atol=1e-5)
        np.testing.assert_allclose(b.attention, s.attention, atol=1e-6)
        np.testing.assert_allclose(b.embedding, s.embedding, atol=1e-5)
    # the images differ, so the checks above can tell one image's outputs from another's
    assert not np.allclose(batch[0].attention, batch[1].attention, atol=1e-4)
    assert not np.allclose(batch[0].embedding, batch[1].embedding, atol=1e-4)


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
