"""ONNX export, int8 quantization and the shipped bundle, on a tiny timm model and real images."""
from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from dermo.config import ModelConfig
from dermo.export import (INPUT_NAME, METADATA_KEY, OUTPUT_NAMES, choose_variant, export_onnx, head_nodes,
                          load_images, read_metadata_config, run_torch, store_weights_fp16)
from dermo.inference import ModelIntegrityError, Predictor, sha256_file
from dermo.models import create_model, load_model

CALIBRATION = dict(temperature=1.7, logit_bias=-0.3, threshold=0.35, band_low=0.1, band_high=0.45, calibrated=True)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model(ModelConfig(backbone="test_efficientnet", img_size=64, name="tiny", version="9.9.9",
                                     **CALIBRATION))
    with torch.no_grad():  # a non-uniform attention map, so the attention output is really tested
        model.attn.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("tiny_model")
    model.save_pretrained(out)
    # a key another tool (the OOD check) added to the model folder, with its side file
    conf = json.loads((out / "config.json").read_text())
    conf["ood"] = {"file": "ood.npz", "threshold": 3.0}
    (out / "config.json").write_text(json.dumps(conf))
    np.savez(out / "ood.npz", mean=np.zeros(4))
    return out


@pytest.fixture(scope="module")
def bundle(tiny_model_dir, tiny_data, tiny_manifest, tmp_path_factory) -> Path:
    from train.export import main

    out = tmp_path_factory.mktemp("bundle")
    main(["--model", str(tiny_model_dir), "--out", str(out), "--variant", "static", "--calib-images", "8",
          "--parity-images", "6", "--data", str(tiny_data), "--manifest", str(tiny_manifest)])
    return out


def test_onnx_parity_and_dynamic_batch(tiny_model_dir, tiny_data, tiny_manifest, tmp_path):
    from dermo.export import make_session, run_onnx
    from dermo.models import load_model

    model = load_model(str(tiny_model_dir)).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert not list(tmp_path.glob("*.data")), "weights must live inside the one .onnx file"
    assert head_nodes(path), "the attention head must be found (it is kept fp32 when quantizing)"
    x, _ = load_images(model.config, "train", 3, data_dir=tiny_data, manifest=tiny_manifest)
    sess = make_session(path)
    for xb in (x[:1], x[:3]):  # batch axis is dynamic
        got, ref = run_onnx(sess, xb), run_torch(model, xb)
        assert got["logits"].shape == (len(xb), 2)
        assert got["attention"].shape == ref["attention"].shape
        np.testing.assert_allclose(got["logits"], ref["logits"], atol=1e-4)
        np.testing.assert_allclose(got["attention"], ref["attention"], atol=1e-5)
        np.testing.assert_allclose(got["embedding"], ref["embedding"], atol=1e-4)
    assert float(np.ptp(ref["attention"][0])) > 0  # not a uniform map

    half = store_weights_fp16(path, tmp_path / "half.onnx")
    assert half.stat().st_size < 0.75 * path.stat().st_size
    np.testing.assert_allclose(run_onnx(make_session(half), x)["logits"], run_onnx(sess, x)["logits"], atol=1e-2)


def test_static_int8_bundle_loads_and_carries_calibration(bundle, tiny_model_dir, tiny_data):
    conf = json.loads((bundle / "config.json").read_text())
    assert conf["onnx_variant"] == "static"
    assert conf["sha256"] == sha256_file(bundle / "model.onnx")
    assert conf["source_model"] == str(tiny_model_dir)
    assert conf["parity"]["fp32"]["logits_max_abs_diff"] < 1e-4
    assert set(conf["variants"]) == {"fp32", "static"}
    for k, v in CALIBRATION.items():
        assert conf[k] == v
    assert conf["ood"]["threshold"] == 3.0 and (bundle / "ood.npz").is_file()
    source = json.loads((tiny_model_dir / "config.json").read_text())
    assert all(conf[f.name] == source[f.name] for f in fields(ModelConfig))
    meta = read_metadata_config(bundle / "model.onnx")
    assert {k: meta[k] for k in CALIBRATION} == CALIBRATION and meta["onnx_variant"] == "static"
    proto = onnx.load(str(bundle / "model.onnx"))
    assert any(p.key == METADATA_KEY for p in proto.metadata_props)
    onnx.checker.check_model(proto)
    assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node)
    assert not list(bundle.glob("*.data"))

    pred = Predictor(bundle)
    assert pred.backend == "onnx" and pred.info["variant"] == "static" and pred.info["calibrated"]
    images = sorted((Path(tiny_data) / "images").glob("*.jpg"))[:3]
    out = pred.predict_batch([str(p) for p in images])
    assert len(out) == 3
    for p in out:
        assert 0.0 <= p.probability <= 1.0 and p.band in ("low", "medium", "high")
        assert abs(float(p.attention.sum()) - 1.0) < 1e-3
        assert p.embedding is not None and p.embedding.ndim == 1


def test_sha256_mismatch_raises(bundle, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    with open(broken / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelIntegrityError):
        Predictor(broken)


def test_choose_variant_puts_auroc_before_latency():
    def r(auroc, ms, agree=1.0, mb=9.0):
        return {"auroc": auroc, "band_agreement": agree, "latency_b1": {"median_ms": ms}, "size_mb": mb}

    assert choose_variant({"fp32": r(0.90, 5.0), "dynamic": r(0.90, 30.0), "static": r(0.897, 2.0)}) == "static"
    assert choose_variant({"fp32": r(0.90, 5.0), "static": r(0.89, 2.0)}) == "fp32"  # loses 0.01 AUROC
    assert choose_variant({"fp32": r(0.90, 5.0), "static": r(0.91, 2.0, agree=0.9)}) == "fp32"  # changes bands
    assert choose_variant({"fp32": r(0.90, 5.0), "static": r(0.90, 6.0)}) == "fp32"  # slower
    assert choose_variant({"fp32": r(0.90, 5.0), "fp16w": r(0.90, 5.2, mb=4.5)}) == "fp16w"  # as fast, smaller


def test_bad_arguments(tiny_model_dir, tmp_path):
    from dermo.export import export_bundle

    with pytest.raises(ValueError, match="variant"):
        export_bundle(tiny_model_dir, tmp_path, variant="int4")
    with pytest.raises(ValueError, match="calib-images"):
        export_bundle(tiny_model_dir, tmp_path, variant="static", calib_images=0)


def test_int8_islands_benchmark(tiny_model_dir, tiny_data, tiny_manifest, tmp_path):
    """benchmarks/int8_islands.py on the tiny model and real images: one ranking row per quantizable node, one row
    per k, and with every node kept fp32 the graph is fp32 again (no logit moves, every band kept)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "int8_islands.py"
    spec = importlib.util.spec_from_file_location("int8_islands", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--model", str(tiny_model_dir), "--data", str(tiny_data), "--manifest", str(tiny_manifest),
                      "--calib-images", "6", "--rank-images", "6", "--ks", "0,1,all", "--runs", "3",
                      "--json", str(tmp_path / "r.json"), "--md", str(tmp_path / "r.md")])
    n = res["quantizable_nodes"]
    assert n > 1 and len(res["ranking"]) == n
    changes = [r["rms_logit_change"] for r in res["ranking"]]
    assert changes == sorted(changes, reverse=True) and all(c >= 0 for c in changes)
    rows = {v["fp32_nodes"]: v for v in res["variants"]}
    assert set(rows) == {0, 1, n}
    assert rows[1]["fp32_nodes_names"] == [res["ranking"][0]["node"]]
    assert rows[n]["rms_logit_change"] < 1e-5 and rows[n]["band_agreement"] == 1.0
    assert rows[0]["size_mb"] < rows[n]["size_mb"]  # int8 weights are smaller
    md = (tmp_path / "r.md").read_text()
    assert f"| {n} | 100.0% |" in md and "| fp32 (reference) |" in md
    assert json.loads((tmp_path / "r.json").read_text())["sha256"] == sha256_file(tiny_model_dir / "model.safetensors")


def test_other_weights_need_their_own_version(bundle, tiny_model_dir, tiny_data, tiny_manifest, tmp_path):
    """Two different models must never ship under one name and version: the app, the API and the result card tell
    them apart by it. Re-exporting the same weights is fine; other weights need --version."""
    import torch

    from train.export import main

    out = tmp_path / "assets"
    shutil.copytree(bundle, out)
    args = ["--out", str(out), "--variant", "fp32", "--parity-images", "4", "--data", str(tiny_data),
            "--manifest", str(tiny_manifest)]
    main(["--model", str(tiny_model_dir), *args])  # the same weights again
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    model = load_model(str(other))
    with torch.no_grad():
        model.attn.weight.add_(0.1)
    model.save_pretrained(other)
    with pytest.raises(ValueError, match="its own version"):
        main(["--model", str(other), *args])
    assert json.loads((out / "config.json").read_text())["source_sha256"] == sha256_file(
        tiny_model_dir / "model.safetensors")  # the refused export left the shipped bundle alone
    conf = main(["--model", str(other), *args, "--version", "9.10.0"])
    on_disk = json.loads((out / "config.json").read_text())
    assert on_disk["version"] == read_metadata_config(out / "model.onnx")["version"] == "9.10.0"
    assert on_disk["source_version"] == "9.9.9" and conf["sha256"] == sha256_file(out / "model.onnx")
    assert Predictor(out).info["version"] == "9.10.0"


def test_an_export_that_disagrees_with_pytorch_is_refused(tiny_model_dir, tiny_data, tiny_manifest, tmp_path,
                                                          monkeypatch):
    """The fp32 graph is what every variant is scored against: if it does not reproduce the PyTorch model (here the
    reference outputs are shifted, as a wrong export would be), nothing is written."""
    import dermo.export as E

    real = E.run_torch

    def shifted(model, x):
        out = real(model, x)
        return {**out, "logits": out["logits"] + 0.01}

    monkeypatch.setattr(E, "run_torch", shifted)
    out = tmp_path / "assets"
    with pytest.raises(RuntimeError, match="disagrees with the PyTorch model"):
        E.export_bundle(tiny_model_dir, out, variant="fp32", parity_images=4, val_images=4, data_dir=tiny_data,
                        manifest=tiny_manifest, latency_runs=1)
    assert not (out / "model.onnx").exists()


def test_the_shipped_onnx_reproduces_its_committed_weights():
    """dermo/assets/model.onnx (the variant users get) against the PyTorch weights it was exported from, committed
    under models/: on real test images its logits, attention and embedding stay within what its config records
    for 64 test images (the export's own parity check), and every image keeps its band."""
    from tests.conftest import require_shared

    from dermo.data import load_split, preprocess
    from dermo.inference import BUNDLED_MODEL_DIR, band_of

    root = Path(__file__).resolve().parent.parent
    cfg = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    source = [d for d in (root / "models").glob("*/*") if (d / "model.safetensors").is_file()
              and sha256_file(d / "model.safetensors") == cfg["source_sha256"]]
    assert source, "the shipped model's source weights are not committed under models/"
    shared = require_shared()
    rows = load_split(shared, "test").head(16)
    model = load_model(str(source[0]))
    x = np.stack([preprocess(shared / "images" / f"{i}.jpg", model.config) for i in rows["image_id"]])
    from dermo.export import run_torch

    ref = run_torch(model, x)
    pred = Predictor()
    logits, att, emb = pred.forward(x)
    parity = cfg["parity"][cfg["onnx_variant"]]
    # recorded over 64 images; these 16 are among them (the first of the test split), so the bound holds
    assert np.abs(logits - ref["logits"]).max() <= parity["logits_max_abs_diff"] + 1e-6
    assert np.abs(att - ref["attention"]).max() <= parity["attention_max_abs_diff"] + 1e-6
    assert np.abs(emb - ref["embedding"]).max() <= parity["embedding_max_abs_diff"] + 1e-6
    c = pred.config
    ref_p = pred.probabilities(ref["logits"])
    assert [band_of(float(p), c.band_low, c.band_high) for p in ref_p] == [
        band_of(float(p), c.band_low, c.band_high) for p in pred.probabilities(logits)]
