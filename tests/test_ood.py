"""dermo.ood: the "not a skin lesion" check, fitted and calibrated on real code paths (tiny model, tiny data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermo.ood import check_ood, fit_for_model, fit_ood, load_ood, main
from dermo.quality import QualityReport


def make_tiny_model(dest: Path) -> Path:
    """timm's tiny test network at 64 px, random weights, save_pretrained layout (config.json + safetensors)."""
    import torch

    from dermo.config import ModelConfig
    from dermo.models import create_model

    torch.manual_seed(0)
    create_model(ModelConfig(backbone="test_efficientnet", img_size=64, name="tiny-test", version="0.0.1")
                 ).eval().save_pretrained(dest)
    return dest


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"))


def test_scores_grow_with_distance_and_threshold_passes_the_requested_share():
    rng = np.random.default_rng(0)
    # in-distribution: a 5-dimensional blob around a fixed direction in 32 dims
    base = np.zeros(32)
    base[0] = 10
    basis = rng.normal(size=(5, 32))
    train = base + 0.2 * rng.normal(size=(2000, 5)) @ basis
    val = base + 0.2 * rng.normal(size=(1000, 5)) @ basis
    det = fit_ood(train, components=8)
    achieved = det.calibrate(val, pass_rate=0.95)
    assert 0.95 <= achieved <= 0.96
    assert (det.score(val) <= det.threshold).mean() == pytest.approx(achieved)
    # a direction the training data never used is far away, whatever its length
    odd = np.zeros((3, 32))
    odd[:, 31] = [1.0, 5.0, 50.0]
    assert det.is_ood(odd).all()
    assert det.score(base[None])[0] < np.median(det.score(val))


def test_fit_needs_data():
    with pytest.raises(ValueError, match="at least 2"):
        fit_ood(np.ones((1, 8)))
    det = fit_ood(np.random.default_rng(0).normal(size=(50, 8)))
    with pytest.raises(ValueError, match="pass_rate"):
        det.calibrate(np.ones((5, 8)), pass_rate=1.0)


def test_fit_save_load_and_gate_on_a_real_model(tiny_model, tiny_data, tiny_manifest):
    before = json.loads((tiny_model / "config.json").read_text())
    summary = fit_for_model(tiny_model, data_dir=tiny_data, manifest=tiny_manifest, limit_train=0, components=4)
    after = json.loads((tiny_model / "config.json").read_text())
    assert {k: v for k, v in after.items() if k != "ood"} == before  # other keys untouched
    assert after["ood"]["threshold"] == pytest.approx(summary["threshold"])
    assert after["ood"]["n_validation"] >= 1 and after["ood"]["validation_pass_rate"] >= 0.95
    assert (tiny_model / "ood.npz").is_file()

    from dermo.inference import Predictor
    from dermo.ood import embed_images, split_paths

    pred = Predictor(tiny_model)
    det = load_ood(tiny_model, pred.sha256)
    assert det is not None and det.threshold == pytest.approx(summary["threshold"])
    assert load_ood(tiny_model, "0" * 64) is None  # stats of other weights are refused

    val = embed_images(pred, split_paths(tiny_data, "validation", tiny_manifest))
    scores = det.score(val)
    ok_i = int(np.argmin(scores))
    rep = QualityReport()
    assert check_ood(det, val[ok_i], rep) == pytest.approx(scores[ok_i])
    assert rep.ok and rep.measures["ood_score"] == pytest.approx(scores[ok_i])

    far = -val[ok_i] + 1e3 * np.eye(val.shape[1])[0]  # nothing like a training embedding
    rep = QualityReport()
    check_ood(det, far, rep)
    assert not rep.ok and rep.codes == ["not_skin"] and "Retake" in rep.reasons[0]

    assert check_ood(None, val[0], QualityReport()) is None  # no stats: no check, no crash
    assert check_ood(det, None, QualityReport()) is None  # model without an embedding output


def test_cli_writes_into_out_folder(tiny_model, tiny_data, tiny_manifest, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(tiny_model, out)
    main(["--model", str(tiny_model), "--out", str(out), "--data-dir", str(tiny_data),
          "--manifest", str(tiny_manifest), "--limit-train", "0", "--components", "4"])
    printed = capsys.readouterr().out
    assert json.loads(printed[printed.index("{"):])["n_train"] > 0
    assert (out / "ood.npz").is_file() and "ood" in json.loads((out / "config.json").read_text())
    with pytest.raises(SystemExit, match="no config.json"):
        main(["--model", str(tiny_model), "--out", str(tmp_path / "empty")])


def test_overlay_and_report(tmp_path):
    from dermo.report_card import overlay_attention, render_report

    photo = Image.new("RGB", (200, 150), (180, 120, 100))
    att = np.zeros((5, 5), np.float32)
    att[0, 0] = 1.0
    ov = overlay_attention(photo, att)
    assert ov.size == photo.size and ov.mode == "RGB"
    a = np.asarray(ov, np.int32)
    # the attended corner is tinted more than the opposite one
    assert np.abs(a[5, 5] - (180, 120, 100)).sum() > np.abs(a[-5, -5] - (180, 120, 100)).sum()
    with pytest.raises(ValueError, match="attention"):
        overlay_attention(photo, np.zeros(3))
    result = {"probability": 0.42, "band": "medium", "band_edges": {"low": 0.2, "high": 0.6},
              "model": {"name": "tiny", "version": "0.0.1", "sha256": "ab" * 32}}
    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
        out = render_report(tmp_path / f"r{suffix}", photo, ov, result, "Medium risk: ...", "Not a diagnosis.")
        assert out.read_bytes()[:4] == magic
    with pytest.raises(ValueError, match="png or .pdf"):
        render_report(tmp_path / "r.txt", photo, ov, result, "", "")
