"""dermo.evaluate end to end: a tiny random model (save_pretrained) on a tiny real labelled folder."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermo import metrics as M
from dermo.config import ModelConfig
from dermo.evaluate import (CALIBRATION_KEYS, PLOTS, compute_logits, evaluate_logits, fit_calibration, main,
                            open_predictor, render_report, run_evaluation)
from dermo.models import create_model

from .conftest import make_tiny_folder

ISSUE_KEYS = ["n", "n_malignant", "auroc", "auroc_ci", "threshold", "at_0.5", "ece", "bands", "subgroups"]
RATES = ["sensitivity", "specificity", "precision", "f1", "accuracy"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone="test_efficientnet", img_size=64, name="tiny"))
    torch.nn.init.normal_(model.fc.weight, std=0.5)  # random but not constant scores
    d = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(d)
    return d


@pytest.fixture()
def model_copy(tiny_model, tmp_path) -> Path:
    d = tmp_path / "model"
    shutil.copytree(tiny_model, d)
    return d


def test_metrics_json_has_every_key(tiny_model, tiny_data, tmp_path):
    out = tmp_path / "eval"
    rc = main(["--model", str(tiny_model), "--data", str(tiny_data), "--out", str(out), "--n_boot", "50",
               "--no-progress"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    for k in ISSUE_KEYS + RATES + [f"{r}_ci" for r in RATES]:
        assert k in m, k
    for r in RATES:
        assert r in m["at_0.5"] and f"{r}_ci" in m["at_0.5"]
    assert set(m["ece"]) == {"before", "after"}
    assert set(m["bands"]) == {"low", "medium", "high"}
    assert all({"n", "malignant_rate"} <= set(b) for b in m["bands"].values())
    assert sum(b["n"] for b in m["bands"].values()) == m["n"]
    assert {"sex", "age_band", "localization", "dx"} <= set(m["subgroups"])
    assert m["bootstrap_unit"] == "lesion"
    meta = pd.read_csv(tiny_data / "metadata.csv")
    assert m["n"] == len(meta) and m["n_malignant"] == int(meta["label"].sum())
    assert m["n_groups"] == meta["lesion_id"].nunique()  # the bootstrap resampled lesions
    lo, hi = m["auroc_ci"]
    assert lo <= m["auroc"] <= hi
    for name in PLOTS + ("report.md", "predictions.csv"):
        assert (out / name).stat().st_size > 0, name
    assert "AUROC" in (out / "report.md").read_text()
    # the report says which command wrote it, so its figures can be regenerated
    cmd = f"python -m dermo.evaluate --model {tiny_model} --data {tiny_data} --out {out} --n_boot 50 --no-progress"
    assert m["source"]["command"] == cmd and f"- written by: `{cmd}`" in (out / "report.md").read_text()


def test_metrics_match_direct_computation(tiny_model, tiny_data):
    """The figures equal dermo.metrics applied to the predictor's own probabilities."""
    pred = open_predictor(tiny_model)
    df = pd.read_csv(tiny_data / "metadata.csv")
    paths = [str(tiny_data / f) for f in df["file_name"]]
    logits = compute_logits(pred, paths, batch_size=7)
    direct = np.array([pr.probability for pr in pred.predict_batch(paths, batch_size=16)])
    np.testing.assert_allclose(M.apply_temperature(logits, pred.config.temperature), direct, atol=1e-5)
    cfg = ModelConfig(backbone="test_efficientnet", img_size=64, temperature=2.0, threshold=0.4)
    m = evaluate_logits(df["label"], logits, cfg, df, n_boot=20)
    p = M.apply_temperature(logits, 2.0)
    assert m["auroc"] == pytest.approx(M.auroc(df["label"], p))
    # the intervals resample lesions (the tiny folder has lesions of 2 and 3 images), not images
    assert df["lesion_id"].nunique() < len(df)
    by_lesion = M.bootstrap_ci(M.auroc, df["label"], p, groups=df["lesion_id"], n_boot=20, seed=0)
    by_image = M.bootstrap_ci(M.auroc, df["label"], p, n_boot=20, seed=0)
    assert m["auroc_ci"] == pytest.approx(list(by_lesion)) and by_lesion != pytest.approx(by_image)
    assert m["sensitivity"] == pytest.approx(M.confusion_at(df["label"], p, 0.4)["sensitivity"])
    assert m["ece"]["after"] == pytest.approx(M.expected_calibration_error(df["label"], p))
    assert m["ece"]["before"] == pytest.approx(M.expected_calibration_error(df["label"], M.apply_temperature(logits)))


def test_calibrate_writes_config_and_is_validation_only(model_copy, tiny_data, tiny_manifest, tmp_path):
    before = json.loads((model_copy / "config.json").read_text())
    with pytest.raises(ValueError, match="validation"):
        run_evaluation(model_copy, tiny_data, tmp_path / "x", split="test", manifest=tiny_manifest, calibrate=True)
    with pytest.raises(ValueError, match="validation"):
        run_evaluation(model_copy, tiny_data, tmp_path / "x", split=None, calibrate=True)
    with pytest.raises(ValueError, match="single-view"):  # the app serves no flip TTA: nor may its calibration
        run_evaluation(model_copy, tiny_data, tmp_path / "x", split="validation", manifest=tiny_manifest,
                       calibrate=True, tta=True)
    assert main(["--model", str(model_copy), "--data", str(tiny_data), "--split", "test", "--manifest",
                 str(tiny_manifest), "--out", str(tmp_path / "x"), "--calibrate"]) == 2
    assert json.loads((model_copy / "config.json").read_text()) == before

    m = run_evaluation(model_copy, tiny_data, tmp_path / "val", split="validation", manifest=tiny_manifest,
                       calibrate=True, n_boot=20, plots=False)
    after = json.loads((model_copy / "config.json").read_text())
    assert after["calibrated"] is True
    for k in before:  # every other key kept
        if k not in CALIBRATION_KEYS:
            assert after[k] == before[k], k
    c = m["calibration"]
    for k in CALIBRATION_KEYS:
        assert after[k] == c[k]
    assert after["band_low"] <= after["threshold"] and after["band_low"] <= after["band_high"]
    # the fitted values follow the rules on the validation data they were fitted on
    val = pd.read_csv(tmp_path / "val" / "predictions.csv")
    y, p = val["label"].to_numpy(), val["probability"].to_numpy()
    assert M.confusion_at(y, p, after["threshold"])["sensitivity"] >= 0.90
    assert M.confusion_at(y, p, after["band_low"])["sensitivity"] >= 0.97
    assert M.confusion_at(y, p, after["band_high"])["specificity"] >= 0.95 or after["band_high"] == 1.0
    T, b = M.fit_temperature_bias(val[["logit_benign", "logit_malignant"]].to_numpy(), y)
    assert after["temperature"] == pytest.approx(T, rel=1e-4) and after["logit_bias"] == pytest.approx(b, abs=1e-4)
    # the predictor now serves the calibrated values
    served = open_predictor(model_copy).config
    assert served.temperature == pytest.approx(T, rel=1e-4) and served.logit_bias == pytest.approx(b, abs=1e-4)
    assert m["temperature"] == pytest.approx(T, rel=1e-4) and m["source"]["calibrated_here"] is True


def test_fit_calibration_on_separable_scores():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(-1.5, 2.0, 2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros(2000), 3.0 * true_logit], 1)  # 3x overconfident margins
    c = fit_calibration(y, logits)
    assert c["temperature"] == pytest.approx(3.0, rel=0.15)  # overconfident logits are softened
    assert c["validation"]["ece_after"] <= c["validation"]["ece_before"] + 1e-9
    assert c["validation"]["sensitivity"] >= 0.90
    assert abs(c["logit_bias"]) < 0.2  # no offset in the data -> no bias learnt


def test_calibration_bias_removes_a_constant_offset():
    rng = np.random.default_rng(1)
    true_logit = rng.normal(-1.5, 2.0, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros(4000), 2.0 * (true_logit + 1.0)], 1)  # overconfident AND shifted towards malignant
    c = fit_calibration(y, logits)
    assert c["temperature"] == pytest.approx(2.0, rel=0.1) and c["logit_bias"] == pytest.approx(-1.0, abs=0.15)
    assert c["validation"]["ece_after"] < c["validation"]["ece_temperature_only"]


def test_an_empty_band_fails_its_target_and_says_why():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200)
    logits = np.stack([np.zeros(200), rng.normal(0, 1, 200) + y], 1)
    # every probability is below 0.999: nobody lands in High, nobody below 1e-6 in Low
    config = ModelConfig(band_low=1e-6, band_high=0.999, threshold=0.5)
    m = evaluate_logits(y, logits, config, n_boot=0)
    assert m["bands"]["high"]["n"] == 0 and m["bands"]["low"]["n"] == 0
    for k in ("high_malignant_rate", "low_malignant_rate"):
        assert m["targets"][k]["met"] is False and m["targets"][k]["reason"] == "band empty"
    assert m["targets"]["low_share_of_malignant"]["met"] is True  # no malignant image reassured
    assert "reason" not in m["targets"]["ece_after"]
    md = render_report({**m, "source": {}})
    assert "| high_malignant_rate | n/a | >= 70.0% | **no** (band empty) |" in md


def test_folder_without_lesion_id(tiny_model, tmp_path):
    data = make_tiny_folder(tmp_path / "nolesion", n_benign=8, n_malignant=6, with_lesions=False)
    m = run_evaluation(tiny_model, data, tmp_path / "out", n_boot=20, plots=False)
    assert m["bootstrap_unit"] == "image" and m["n"] == len(pd.read_csv(data / "metadata.csv"))


def _minimal_folder(tmp_path, tiny_data) -> Path:
    d = tmp_path / "bad"
    shutil.copytree(tiny_data, d)
    return d


def test_bad_folders_give_clear_errors(tiny_model, tiny_data, tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        run_evaluation(tiny_model, tmp_path, tmp_path / "o")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_evaluation(tiny_model, tmp_path / "nowhere", tmp_path / "o")

    missing = _minimal_folder(tmp_path / "m", tiny_data)
    first = pd.read_csv(missing / "metadata.csv")["file_name"].iloc[0]
    (missing / first).unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        run_evaluation(tiny_model, missing, tmp_path / "o")

    labels = _minimal_folder(tmp_path / "l", tiny_data)
    meta = pd.read_csv(labels / "metadata.csv")
    meta.loc[0, "label"] = 2
    meta.to_csv(labels / "metadata.csv", index=False)
    with pytest.raises(ValueError, match="0 \\(benign\\) or 1"):
        run_evaluation(tiny_model, labels, tmp_path / "o")
    assert main(["--model", str(tiny_model), "--data", str(labels), "--out", str(tmp_path / "o")]) == 2
    assert "error:" in capsys.readouterr().err

    broken = _minimal_folder(tmp_path / "b", tiny_data)
    (broken / first).write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        run_evaluation(tiny_model, broken, tmp_path / "o")

    with pytest.raises(FileNotFoundError, match="model"):
        open_predictor(tmp_path / "no_model_here")


def test_split_needs_manifest_covering_folder(tiny_model, tiny_data, tmp_path):
    other = pd.DataFrame({"image_id": ["x"], "lesion_id": ["x"], "label": [0], "split": ["test"]})
    other.to_csv(tmp_path / "man.csv", index=False)
    with pytest.raises(ValueError, match="not in the manifest"):
        run_evaluation(tiny_model, tiny_data, tmp_path / "o", split="test", manifest=tmp_path / "man.csv")


def test_tta_averages_flips(tiny_model, tiny_data):
    pred = open_predictor(tiny_model)
    paths = [str(p) for p in sorted((tiny_data / "images").iterdir())[:4]]
    plain = compute_logits(pred, paths)
    tta = compute_logits(pred, paths, tta=True)
    assert tta.shape == plain.shape and not np.allclose(tta, plain)
    # by hand: the mean of the logits of the image, its mirror image and its upside-down image (NCHW)
    x = pred.preprocess(paths)
    want = sum(pred.forward(np.ascontiguousarray(v))[0] for v in (x, x[..., ::-1], x[..., ::-1, :])) / 3
    np.testing.assert_allclose(plain, pred.forward(x)[0], atol=1e-5)
    np.testing.assert_allclose(tta, want, atol=1e-5)


def test_training_and_models_report(tiny_model, tiny_data, tiny_manifest, tmp_path):
    """train.report on a tiny runs folder (three tiny models, one calibrated) writes every report."""
    from dermo.config import RunConfig
    from train.report import main as report_main

    runs = tmp_path / "runs"
    for i, name in enumerate(("teacher", "baseline", "magkd")):
        best = runs / name / "best"
        shutil.copytree(tiny_model, best)
        RunConfig().override(backbone="test_efficientnet", img_size=64, epochs=1, tta=name == "teacher",
                             teacher=str(runs / "teacher" / "best") if name == "magkd" else "").save(
            best / "run_config.json")
        # magkd's as a committed weights folder holds it (models/<run>/: metrics.json beside the weights, in best/)
        metrics = runs / name / ("best/metrics.json" if name == "magkd" else "metrics.json")
        metrics.write_text(json.dumps({"train_seconds": 60.0 * (i + 1), "train_img_per_s": 10.0, "best_epoch": 0,
                                       "epochs_run": 1, "validation": {"auroc": 0.5}}))
    run_evaluation(runs / "magkd" / "best", tiny_data, tmp_path / "cal", split="validation", manifest=tiny_manifest,
                   calibrate=True, n_boot=10, plots=False)
    from dermo.export import export_onnx
    from dermo.models import load_model

    shipped = tmp_path / "assets"  # the calibrated student exported to ONNX, as train.export does
    export_onnx(load_model(str(runs / "magkd" / "best")), shipped / "model.onnx", simplify=False)
    shutil.copy(runs / "magkd" / "best" / "config.json", shipped / "config.json")
    out = tmp_path / "reports"
    assert report_main(["--runs", str(runs), "--data", str(tiny_data), "--manifest", str(tiny_manifest), "--out",
                        str(out), "--n_boot", "20", "--shipped", str(shipped), "--no-progress", "--cache",
                        str(tmp_path / "cache")]) == 0
    tr = json.loads((out / "training.json").read_text())
    assert set(tr["models"]) == {"teacher", "baseline", "magkd"}
    for m in tr["models"].values():
        assert m["n"] == tr["test"]["n"] and m["auroc_ci"] is not None
        for blk in (m["operating_point"], m["at_0.5"]):
            assert all(k in blk and f"{k}_ci" in blk for k in RATES)
        assert m["at_0.5"]["threshold"] == 0.5
    assert tr["models"]["magkd"]["run"]["train_minutes"] == pytest.approx(3.0)
    assert tr["models"]["teacher"]["run"]["tta"] is True
    md = (out / "training.md").read_text()
    assert "0.954" in md and "80.14" in md and "80.4" in md and "leaky" in md and "unrecorded origin" in md
    # baseline and magkd hold the same weights here (calibration changes no logit): the paired difference is 0 on
    # both splits, on every resample
    dp = tr["distillation_paired"]
    for split in ("validation", "test"):
        assert dp[split]["difference"] == pytest.approx(0.0, abs=1e-12)
        assert dp[split]["ci"] is None or dp[split]["ci"] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert "## MAG-KD minus baseline, paired" in md and "| validation | +0.0000 |" in md
    models = json.loads((out / "models.json").read_text())["models"]
    src = {r["name"]: r["calibration_source"] for r in models}
    assert src == {"teacher": "fitted here on validation", "baseline": "fitted here on validation",
                   "magkd": "config.json", "shipped": "config.json"}
    base = next(r for r in models if r["name"] == "baseline")  # sizes in MiB (2^20 bytes), as the key says
    weights = Path(base["metrics"]["source"]["model"]) / "model.safetensors"
    assert base["size_mib"] == pytest.approx(weights.stat().st_size / 2**20) and "size_mb" not in base
    command = json.loads((out / "models.json").read_text())["command"]
    for r in models:  # each evaluation folder names the train.report call that wrote it
        ev = out / "evaluation" / f"{r['name']}-test"
        assert json.loads((ev / "metrics.json").read_text())["source"]["command"] == command
        assert f"- written by: `{command}`" in (ev / "report.md").read_text()
    by = {r["name"]: r for r in models}
    assert by["shipped"]["calibration"] == by["magkd"]["calibration"]
    assert by["shipped"]["metrics"]["auroc"] == pytest.approx(by["magkd"]["metrics"]["auroc"], abs=1e-3)
    text = (out / "models.md").read_text()
    assert "ece_after" in text and "not exported yet" not in text
    # --rerender rewrites the .md files from the .json alone, as the full run wrote them
    mds = sorted(out.rglob("*.md"))
    before = {f: f.read_text() for f in mds}
    for f in mds:
        f.write_text("stale")
    assert report_main(["--rerender", str(out)]) == 0
    assert {f: f.read_text() for f in mds} == before


def test_logits_cache(tiny_model, tiny_data, tmp_path):
    from dermo.evaluate import cached_logits

    pred = open_predictor(tiny_model)
    paths = [str(p) for p in sorted((tiny_data / "images").iterdir())[:6]]
    a = cached_logits(pred, paths, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    np.testing.assert_array_equal(cached_logits(pred, paths, cache_dir=tmp_path), a)
    cached_logits(pred, paths[:3], cache_dir=tmp_path)  # other files: another entry
    cached_logits(pred, paths, tta=True, cache_dir=tmp_path)  # other preprocessing: another entry
    assert len(list(tmp_path.glob("*.npy"))) == 3
    np.testing.assert_allclose(compute_logits(pred, paths), a)


def test_onnx_model_gives_the_torch_figures(tiny_model, tiny_data, tmp_path):
    """--model <file.onnx> (ONNX Runtime) evaluates like the PyTorch folder it was exported from."""
    from dermo.export import export_onnx
    from dermo.models import load_model

    onnx_dir = tmp_path / "onnx"
    export_onnx(load_model(str(tiny_model)), onnx_dir / "model.onnx", simplify=False)
    shutil.copy(tiny_model / "config.json", onnx_dir / "config.json")
    pred = open_predictor(onnx_dir / "model.onnx")
    assert pred.backend == "onnx"
    paths = [str(p) for p in sorted((tiny_data / "images").iterdir())[:8]]
    np.testing.assert_allclose(compute_logits(pred, paths, batch_size=3),
                               compute_logits(open_predictor(tiny_model), paths), atol=1e-4)
    m = run_evaluation(onnx_dir / "model.onnx", tiny_data, tmp_path / "out", n_boot=10, plots=False)
    assert m["source"]["backend"] == "onnx" and m["n"] > 0


def test_hub_id_goes_to_the_hub_and_fails_clearly_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub"):
        open_predictor("dermohelper/not-cached-model")


def test_report_ensemble_teacher(tiny_model, tiny_data, tiny_manifest, tmp_path):
    """--teacher a,b (as training takes an ensemble): the teacher row is the mean of the members' logits, each with
    the TTA its run used, and its cost/config columns name both members."""
    from dermo.config import RunConfig
    from dermo.evaluate import cached_logits, load_labelled
    from dermo.metrics import auroc
    from dermo.models import load_model
    from train.report import main as report_main

    runs = tmp_path / "runs"
    for i, name in enumerate(("teacher", "baseline", "magkd")):
        best = runs / name / "best"
        shutil.copytree(tiny_model, best)
        if name == "baseline":  # a member with other weights, so the mean differs from either member
            m = load_model(str(best))
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            m.save_pretrained(str(best))
        RunConfig().override(backbone="test_efficientnet", img_size=64, epochs=1, tta=name == "teacher",
                             teacher=f"{runs / 'teacher' / 'best'},{runs / 'baseline' / 'best'}"
                             if name == "magkd" else "").save(best / "run_config.json")
        # magkd's as a committed weights folder holds it (models/<run>/: metrics.json beside the weights, in best/)
        metrics = runs / name / ("best/metrics.json" if name == "magkd" else "metrics.json")
        metrics.write_text(json.dumps({"train_seconds": 60.0 * (i + 1), "train_img_per_s": 10.0, "best_epoch": 0,
                                       "epochs_run": 1, "validation": {"auroc": 0.5}}))
    spec = f"{runs / 'teacher' / 'best'},{runs / 'baseline' / 'best'}"
    out, cache = tmp_path / "reports", tmp_path / "cache"
    assert report_main(["--runs", str(runs), "--teacher", spec, "--data", str(tiny_data), "--manifest",
                        str(tiny_manifest), "--out", str(out), "--n_boot", "20", "--shipped", "", "--no-progress",
                        "--cache", str(cache)]) == 0
    tr = json.loads((out / "training.json").read_text())
    t = tr["models"]["teacher"]
    assert "ensemble of 2" in t["title"] and t["run"]["members"] == spec.split(",")
    assert t["run"]["train_minutes"] == pytest.approx(3.0) and t["run"]["tta"] is True
    df = load_labelled(tiny_data, "test", tiny_manifest)
    lg = [cached_logits(open_predictor(runs / n / "best"), df["path"].tolist(), n == "teacher")
          for n in ("teacher", "baseline")]
    y = df["label"].to_numpy()
    mean = np.mean(lg, 0)
    assert t["auroc"] == pytest.approx(auroc(y, mean[:, 1] - mean[:, 0]))
    assert not np.allclose(lg[0], lg[1])
    md = (out / "training.md").read_text()
    assert "test_efficientnet + test_efficientnet @ 64 + 64" in md and "from teacher + baseline" in md
    rows = {r["name"]: r for r in json.loads((out / "models.json").read_text())["models"]}
    row = rows["teacher"]
    assert row["calibration_source"] == "fitted here on validation" and "2 models" in row["format"]
    # the member that is not a run of its own gets its own row and evaluation; the baseline member does not
    assert set(rows) == {"teacher", "teacher-member1", "baseline", "magkd"}
    member = json.loads((out / "evaluation" / "teacher-member1-test" / "metrics.json").read_text())
    assert member["auroc"] == pytest.approx(auroc(y, lg[0][:, 1] - lg[0][:, 0]))
    assert member["source"]["sha256"] == open_predictor(runs / "teacher" / "best").sha256


def test_high_edge_stays_above_one_when_benign_scores_saturate(tmp_path):
    """An overconfident model: 10% of benign validation scores come out exactly 1.0. No edge <= 1 keeps High at 95%
    specificity, so the edge stays just above 1 and nothing is High (clipped to 1.0, those benign scores were High)."""
    from dermo.cards import bands_table, high_edge
    from dermo.config import NO_HIGH_EDGE
    from dermo.evaluate import write_calibration
    from dermo.inference import band_of, bands_text, format_banded

    rng = np.random.default_rng(0)
    z0, z1 = rng.normal(-3, 1, 900), rng.normal(2, 1, 100)
    z0[:90], z1[:80] = 1e4, 1e4
    y = np.r_[np.zeros(900), np.ones(100)].astype(int)
    logits = np.stack([np.zeros(1000), np.r_[z0, z1]], 1)
    c = fit_calibration(y, logits)
    p = M.apply_temperature(logits, c["temperature"], c["logit_bias"])
    assert (p[y == 0] == 1.0).mean() == pytest.approx(0.1)  # the degenerate case is really reached
    assert c["band_high"] == NO_HIGH_EDGE and c["validation"]["bands"]["high"]["n"] == 0
    assert 1.0 - (M.assign_bands(p[y == 0], c["band_low"], c["band_high"]) == "high").mean() >= 0.95
    (tmp_path / "config.json").write_text(json.dumps({"backbone": "test_efficientnet"}))
    write_calibration(tmp_path, c)  # validated through ModelConfig, which takes the edge
    assert ModelConfig(**json.loads((tmp_path / "config.json").read_text())).band_high == NO_HIGH_EDGE
    # what the app, the saved result and the card say of it
    assert band_of(1.0, c["band_low"], c["band_high"]) == "medium"
    shown, low, high = format_banded(1.0, c["band_low"], c["band_high"])
    assert (shown, high) == (">99.9%", None) and "calls no probability High" in bands_text(low, high)
    assert high_edge(c["band_high"]).startswith("none") and high_edge(0.51) == "0.5100"
    assert "none (edge above 1)" in bands_table(c["validation"], c["band_low"], c["band_high"])
    with pytest.raises(ValueError, match="band_high"):
        ModelConfig(band_high=1.01)
