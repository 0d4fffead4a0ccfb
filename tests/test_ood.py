"""dermo.ood: the "not a skin lesion" check, fitted and calibrated on real code paths (tiny model, tiny data)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermo.ood import (METHOD_CLASSWISE, METHOD_POOLED, ClassOODDetector, OODDetector, check_ood, fit_class_ood,
                       fit_for_model, fit_ood, load_ood, main)
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


BASIS = np.linalg.qr(np.random.default_rng(42).normal(size=(48, 48)))[0].T  # orthonormal rows


def two_classes(rng: np.random.Generator, n_big: int, n_small: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 48) points and labels: a big tight class and a small, more varied one in other directions (like naevi
    and the rarer, more heterogeneous malignant lesions)."""
    centre = 8.0 * BASIS[0]
    big = centre + 0.3 * rng.normal(size=(n_big, 6)) @ BASIS[1:7]
    small = centre + 1.5 * BASIS[7] + 0.8 * rng.normal(size=(n_small, 6)) @ BASIS[8:14]
    x = np.concatenate([big, small]) + 0.02 * rng.normal(size=(n_big + n_small, 48))
    return x, np.array(["big"] * n_big + ["small"] * n_small)


def test_classwise_check_does_not_reject_the_small_class_more():
    tr, tr_y = two_classes(np.random.default_rng(0), 3000, 300)
    va, va_y = two_classes(np.random.default_rng(1), 1500, 150)
    te, te_y = two_classes(np.random.default_rng(2), 3000, 300)  # held out from fitting and calibration

    pooled = fit_ood(tr, components=8)
    pooled.calibrate(va, 0.97)
    rej = {c: pooled.is_ood(te[te_y == c]).mean() for c in ("big", "small")}
    assert rej["small"] > 2 * rej["big"]  # the skew the class-wise check removes

    det = fit_class_ood(tr, tr_y, components=8)
    rates = det.calibrate(va, va_y, 0.97)
    assert det.classes == ["big", "small"] and det.threshold == 1.0
    assert rates["big"] >= 0.97 and rates["small"] >= 0.97 and rates["all"] >= 0.97
    ok = ~det.is_ood(va)
    assert ok[va_y == "small"].mean() == pytest.approx(rates["small"]) and ok.mean() == pytest.approx(rates["all"])
    rej = {c: det.is_ood(te[te_y == c]).mean() for c in ("big", "small")}
    assert rej["small"] <= rej["big"] + 0.03  # held-out draws: no class rejected much more than the other
    odd = np.zeros((3, 48))
    odd[:, 47] = [1.0, 5.0, 50.0]  # a direction neither class uses
    assert det.is_ood(odd).all()


def test_classwise_needs_every_class():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="class 'b'"):
        fit_class_ood(rng.normal(size=(20, 8)), ["a"] * 19 + ["b"])
    with pytest.raises(ValueError, match="labels"):
        fit_class_ood(rng.normal(size=(20, 8)), ["a"] * 10)
    det = fit_class_ood(rng.normal(size=(40, 8)), ["a", "b"] * 20)
    with pytest.raises(ValueError, match="no validation lesion of class 'b'"):
        det.calibrate(rng.normal(size=(10, 8)), ["a"] * 10)
    with pytest.raises(ValueError, match="pass_rate"):
        det.calibrate(rng.normal(size=(10, 8)), ["a", "b"] * 5, pass_rate=0.3)


def model_folder(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.json").write_text(json.dumps({"name": "x", "labels": ["benign", "malignant"]}))
    return tmp_path


def test_old_pooled_file_still_loads_and_scores_as_before(tmp_path, caplog):
    rng = np.random.default_rng(0)
    train, val = rng.normal(size=(300, 16)), rng.normal(size=(100, 16))
    det = fit_ood(train, components=4)
    det.calibrate(val, 0.9)
    # exactly what the earlier release wrote (ood.npz keys and config.json "ood" key)
    for name, extra in (("old", {"method": "ppca-mahalanobis-l2"}), ("older", {})):
        d = model_folder(tmp_path / name)
        np.savez(d / "ood.npz", mean=det.mean.astype(np.float32), components=det.components.astype(np.float32),
                 variances=det.variances, noise_var=np.float64(det.noise_var))
        cfg = json.loads((d / "config.json").read_text())
        cfg["ood"] = {"file": "ood.npz", "threshold": det.threshold, "pass_rate": 0.9, "components": 4,
                      "model_sha256": "ab" * 32, **extra}
        (d / "config.json").write_text(json.dumps(cfg))
        old = load_ood(d, "ab" * 32)
        assert isinstance(old, OODDetector) and old.threshold == det.threshold and old.pass_rate == 0.9
        np.testing.assert_allclose(old.score(val), det.score(val), rtol=1e-5)
        assert (old.is_ood(val) == det.is_ood(val)).mean() > 0.98  # float32 storage may flip a tie
        assert load_ood(d, "cd" * 32) is None  # sha256 guard unchanged
    (tmp_path / "old" / "config.json").write_text(json.dumps(
        {"ood": {"file": "ood.npz", "method": "something-newer", "threshold": 1.0}}))
    with caplog.at_level("WARNING"):
        assert load_ood(tmp_path / "old") is None
    assert "something-newer" in caplog.text


def test_classwise_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    tr, tr_y = two_classes(rng, 400, 60)
    det = fit_class_ood(tr, tr_y, components=4)
    det.calibrate(tr, tr_y, 0.95)
    d = model_folder(tmp_path / "m")
    det.save(d, model_sha256="ab" * 32)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["name"] == "x" and cfg["ood"]["method"] == METHOD_CLASSWISE
    assert cfg["ood"]["classes"] == ["big", "small"] and cfg["ood"]["threshold"] == 1.0
    back = load_ood(d, "ab" * 32)
    assert isinstance(back, ClassOODDetector) and back.classes == det.classes
    np.testing.assert_allclose(back.scales, det.scales)
    np.testing.assert_allclose(back.score(tr), det.score(tr), rtol=1e-5)
    # the boundary lies between lesions, so float32 storage does not flip the calibration lesions
    assert (back.is_ood(tr) == det.is_ood(tr)).all()
    assert load_ood(d, "cd" * 32) is None
    with pytest.raises(FileNotFoundError, match="config.json"):
        det.save(tmp_path / "nothing")


def test_fit_needs_data():
    with pytest.raises(ValueError, match="at least 2"):
        fit_ood(np.ones((1, 8)))
    det = fit_ood(np.random.default_rng(0).normal(size=(50, 8)))
    with pytest.raises(ValueError, match="pass_rate"):
        det.calibrate(np.ones((5, 8)), pass_rate=1.0)


@pytest.mark.parametrize("method", [METHOD_CLASSWISE, METHOD_POOLED])
def test_fit_save_load_and_gate_on_a_real_model(method, tiny_model, tiny_data, tiny_manifest, tmp_path):
    import shutil

    from dermo.data import load_split

    tiny_model = Path(shutil.copytree(tiny_model, tmp_path / "model"))  # written into: each case its own copy
    train = load_split(tiny_data, "train", tiny_manifest)
    before = {k: v for k, v in json.loads((tiny_model / "config.json").read_text()).items() if k != "ood"}
    summary = fit_for_model(tiny_model, data_dir=tiny_data, manifest=tiny_manifest, components=4, method=method)
    after = json.loads((tiny_model / "config.json").read_text())
    assert {k: v for k, v in after.items() if k != "ood"} == before  # other keys untouched
    assert after["ood"]["method"] == method and after["ood"]["threshold"] == pytest.approx(summary["threshold"])
    assert after["ood"]["n_validation"] >= 1 and after["ood"]["validation_pass_rate"] >= 0.95
    assert after["ood"]["n_train"] == len(train)  # every training image by default
    if method == METHOD_CLASSWISE:
        assert after["ood"]["classes"] == ["benign", "malignant"]
        assert min(after["ood"]["validation_pass_rate_by_class"].values()) >= 0.97
        assert after["ood"]["n_train_by_class"] == {"benign": int((train["label"] == 0).sum()),
                                                    "malignant": int((train["label"] == 1).sum())}
    assert (tiny_model / "ood.npz").is_file()

    from dermo.inference import Predictor
    from dermo.ood import embed_images, split_paths

    pred = Predictor(tiny_model)
    det = load_ood(tiny_model, pred.sha256)
    assert isinstance(det, ClassOODDetector if method == METHOD_CLASSWISE else OODDetector)
    assert det.threshold == pytest.approx(summary["threshold"])
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
    assert (out / "ood.npz").is_file()
    assert json.loads((out / "config.json").read_text())["ood"]["method"] == METHOD_CLASSWISE
    with pytest.raises(ValueError, match="method"):
        fit_for_model(tiny_model, out, tiny_data, tiny_manifest, method="knn")
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
    # how strongly a map is drawn follows how far it rises above a uniform one: a flat map with rounding noise is a
    # flat tint (a min-max stretch drew it as a sharp spot), a peak at 1.27x the uniform share (the shipped model's
    # median) is faint, and twice the share or more is drawn in full
    flat = np.full((7, 7), 1 / 49, np.float32)
    base = np.asarray(overlay_attention(photo, flat), np.int32)

    def spot(att):  # how far the overlay at the peak cell's place is from that of a flat map
        return int(np.abs(np.asarray(overlay_attention(photo, att), np.int32)[5, 5] - base[5, 5]).sum())

    noisy = flat.copy()
    noisy[0, 0] = np.nextafter(noisy[0, 0], np.float32(1))
    assert spot(noisy) == 0 and spot(flat) == 0
    mild = flat.copy()
    mild[0, 0] *= 1.27
    strong = flat.copy()
    strong[0, 0] *= 3.0
    one_hot = np.zeros((7, 7), np.float32)
    one_hot[0, 0] = 1.0
    assert 0 < spot(mild) < spot(strong) / 2 and spot(strong) == spot(one_hot)
    result = {"probability": 0.42, "band": "medium", "band_edges": {"low": 0.2, "high": 0.6},
              "model": {"name": "tiny", "version": "0.0.1", "sha256": "ab" * 32}}
    for suffix, magic in ((".png", b"\x89PNG"), (".pdf", b"%PDF")):
        out = render_report(tmp_path / f"r{suffix}", photo, ov, result, "Medium risk: ...", "Not a diagnosis.")
        assert out.read_bytes()[:4] == magic
    # the card carries the heatmap's colour key: one row of it holds the colour map's two ends, darkest and yellowest
    from dermo.report_card import _lut

    card = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"), np.int32)
    near = lambda c: (np.abs(card - np.asarray(c, np.int32)).max(axis=2) <= 12).any(axis=1)  # noqa: E731
    assert (near(_lut()[0]) & near(_lut()[255])).any()
    with pytest.raises(ValueError, match="png or .pdf"):
        render_report(tmp_path / "r.txt", photo, ov, result, "", "")


# ------------------------------------------------------------------------------------- edges of the check and its fit
def test_check_ood_passes_a_score_on_the_threshold_and_refuses_one_it_cannot_compute():
    """``score <= threshold`` passes (the calibration counts the quantile lesion as passing); NaN never passes."""
    rng = np.random.default_rng(0)
    det = fit_ood(rng.normal(size=(200, 16)), components=4)
    e = rng.normal(size=16)
    det.threshold = float(det.score(e)[0])
    rep = QualityReport()
    assert check_ood(det, e, rep) == det.threshold
    assert rep.ok and rep.codes == [] and rep.measures["ood_score"] == det.threshold
    det.threshold = float(np.nextafter(det.threshold, -np.inf))  # one ulp below: out
    rep = QualityReport()
    check_ood(det, e, rep)
    assert rep.codes == ["not_skin"]
    det.threshold = float("inf")  # even a detector that passes everything does not pass an unscorable embedding
    bad = e.copy()
    bad[3] = np.nan
    rep = QualityReport()
    assert np.isnan(check_ood(det, bad, rep))
    assert not rep.ok and rep.codes == ["not_skin"]


def test_fit_adds_the_shrinkage_ridge_to_the_principal_variances():
    """variances = lam + shrinkage * mean(lam), lam the top-k variances of the L2-normalised, centred embeddings."""
    x = np.random.default_rng(3).normal(size=(60, 10)) + 2.0
    xl = x / np.linalg.norm(x, axis=1, keepdims=True)
    lam = np.linalg.svd(xl - xl.mean(0), compute_uv=False)[:4] ** 2 / (len(x) - 1)
    bare = fit_ood(x, components=4, shrinkage=0.0)
    np.testing.assert_allclose(bare.variances, lam, rtol=1e-10)
    det = fit_ood(x, components=4, shrinkage=0.05)
    np.testing.assert_allclose(det.variances, lam + 0.05 * lam.mean(), rtol=1e-10)
    assert det.noise_var == pytest.approx(bare.noise_var)


class _FixedScores:
    """A stand-in class detector: the score of 'embedding' i is ``scores[i]`` (calibrate only calls ``score``)."""

    def __init__(self, scores):
        self.scores = np.asarray(scores, np.float64)

    def score(self, embeddings):
        return self.scores[np.asarray(embeddings).astype(int).ravel()]


def test_calibrate_leaves_a_class_alone_when_another_already_passes_enough_of_it():
    """Class b's lesions are near class a's centre: a's detector alone passes 9 of 10 of them, as many as 0.9
    needs, so b's scale goes just below its nearest lesion (its own detector lets none through) instead of
    opening up to all of them. Every class then passes exactly the lesions it needs, no more."""
    a_by_a, a_by_b = np.arange(1.0, 11.0), np.full(10, 100.0)  # class a: far from b's detector
    b_by_a = np.array([0.5] * 9 + [50.0])  # 9 of b inside a's boundary
    b_by_b = np.arange(20.0, 30.0)
    det = ClassOODDetector(["a", "b"], [_FixedScores(np.r_[a_by_a, b_by_a]), _FixedScores(np.r_[a_by_b, b_by_b])],
                           np.ones(2))
    emb = np.arange(20.0)[:, None]
    labels = ["a"] * 10 + ["b"] * 10
    rates = det.calibrate(emb, labels, pass_rate=0.9)
    assert rates == pytest.approx({"a": 0.9, "b": 0.9, "all": 0.9})
    assert det.scales[1] < b_by_b.min()  # b's own detector passes none of b
    assert det.scales[0] == pytest.approx(np.sqrt(9 * 10))  # between a's 9th and 10th lesion
    assert (~det.is_ood(emb)).sum() == 18


def test_calibrate_refuses_labels_that_do_not_match_the_embeddings():
    rng = np.random.default_rng(0)
    det = fit_class_ood(rng.normal(size=(40, 8)), ["a", "b"] * 20)
    for n_labels in (12, 8):
        with pytest.raises(ValueError, match=f"10 validation embeddings but {n_labels} labels"):
            det.calibrate(rng.normal(size=(10, 8)), (["a", "b"] * 6)[:n_labels])


def test_load_refuses_stats_that_name_no_model_or_a_file_outside_the_folder(tmp_path, caplog):
    rng = np.random.default_rng(0)
    tr, tr_y = two_classes(rng, 200, 40)
    det = fit_class_ood(tr, tr_y, components=4)
    det.calibrate(tr, tr_y, 0.95)
    d = model_folder(tmp_path / "m")
    det.save(d, model_sha256="ab" * 32)
    cfg_path = d / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert isinstance(load_ood(d, "ab" * 32), ClassOODDetector)

    # stats that do not say which model file they were fitted on: refused when the caller knows its model's sha256
    del cfg["ood"]["model_sha256"]
    cfg_path.write_text(json.dumps(cfg))
    with caplog.at_level("WARNING", logger="dermo.ood"):
        assert load_ood(d, "ab" * 32) is None
    assert "do not say which model file" in caplog.text
    assert isinstance(load_ood(d), ClassOODDetector)  # no sha256 to compare against: loaded as before

    # a config pointing outside its folder is refused even when the file there is valid stats
    cfg["ood"]["model_sha256"] = "ab" * 32
    (tmp_path / "ood.npz").write_bytes((d / "ood.npz").read_bytes())
    for name in ("../ood.npz", str((tmp_path / "ood.npz").resolve())):
        cfg["ood"]["file"] = name
        cfg_path.write_text(json.dumps(cfg))
        caplog.clear()
        with caplog.at_level("WARNING", logger="dermo.ood"):
            assert load_ood(d, "ab" * 32) is None, name
        assert "outside the model folder" in caplog.text


def _contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio of two #rrggbb colours."""
    def lum(c):
        v = np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)]) / 255
        v = np.where(v <= 0.03928, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
        return 0.2126 * v[0] + 0.7152 * v[1] + 0.0722 * v[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_band_names_are_readable_as_text_in_both_themes_and_on_the_card(tmp_path):
    """Every band's text colour is WCAG AA (4.5:1) on white and, in its dark variant, on Gradio's dark greys
    (neutral-800/900/950, the block, panel and page backgrounds); the card's heading is drawn in it."""
    from dermo.report_card import BAND_COLORS, BAND_TEXT_COLORS, BAND_TEXT_COLORS_DARK, render_report

    assert set(BAND_TEXT_COLORS) == set(BAND_TEXT_COLORS_DARK) == set(BAND_COLORS) == {"low", "medium", "high"}
    for band in BAND_COLORS:
        assert _contrast(BAND_TEXT_COLORS[band], "#ffffff") >= 4.5, band
        for grey in ("#27272a", "#18181b", "#0f0f11"):
            assert _contrast(BAND_TEXT_COLORS_DARK[band], grey) >= 4.5, (band, grey)
    assert _contrast(BAND_COLORS["medium"], "#ffffff") < 4.5  # why the text has its own colours: the border orange
    photo = Image.new("RGB", (200, 150), (180, 120, 100))
    result = {"probability": 0.42, "band": "medium", "band_edges": {"low": 0.2, "high": 0.6},
              "model": {"name": "tiny", "version": "0.0.1", "sha256": "ab" * 32}}
    card = np.asarray(Image.open(render_report(tmp_path / "r.png", photo, photo, result, "Medium risk", "Not a "
                                               "diagnosis.")).convert("RGB"), np.int32)
    near = lambda c: int((np.abs(card - np.array([int(c[i:i + 2], 16) for i in (1, 3, 5)])).max(axis=2) <= 6).sum())  # noqa: E731
    assert near(BAND_TEXT_COLORS["medium"]) > 200 and near(BAND_COLORS["medium"]) < near(BAND_TEXT_COLORS["medium"])
