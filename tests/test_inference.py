"""The bundled model as every user gets it: loads offline, checks its sha256, and answers consistently."""
import json
import shutil

import numpy as np
import pytest

from dermo.inference import (BUNDLED_MODEL_DIR, ModelIntegrityError, Predictor, band_of, format_probability,
                             sha256_file)
from tests.conftest import require_shared


def test_format_probability_never_claims_certainty():
    assert format_probability(0.0) == "<0.1%" and format_probability(0.0004) == "<0.1%"
    assert format_probability(0.0876) == "8.8%" and format_probability(1.0) == ">99.9%"


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


def test_corrupted_bundle_is_refused(tmp_path):
    bad = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-100] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="corrupted or was replaced"):
        Predictor(bad)
