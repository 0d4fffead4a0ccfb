"""Frozen-backbone training (dermo.probe) end to end on the tiny real folder with timm's tiny ViT."""
import json

import numpy as np
import pytest
import torch

from dermo import probe
from dermo.config import RunConfig
from dermo.data import decode_images, load_split
from dermo.models import load_model
from dermo.training import run


def _cfg(tiny_data, tiny_manifest, out, **kw) -> RunConfig:
    base = dict(backbone="test_vit", img_size=64, data_dir=str(tiny_data), manifest=str(tiny_manifest),
                output_dir=str(out), epochs=4, batch_size=8, lr=1e-2, pretrained=False, progress=False,
                freeze_backbone=True)
    base.update(kw)
    return RunConfig().override(**base)


def test_probe_trains_head_only_and_saves_a_normal_model(tiny_data, tiny_manifest, tmp_path):
    cfg = _cfg(tiny_data, tiny_manifest, tmp_path / "p")
    res = run(cfg)
    assert res["epochs_run"] == 4 and res["method"].startswith("frozen backbone")
    hist = json.loads((tmp_path / "p" / "history.json").read_text())
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]  # the head learns on the cached features
    model = load_model(res["model_dir"]).eval()
    assert (tmp_path / "p" / "features" / "train.pt").is_file()

    # the saved model, run on images end to end, gives the validation metrics that picked it
    df = load_split(str(tiny_data), "validation", str(tiny_manifest))
    imgs = torch.from_numpy(decode_images(df["path"], 64))
    from dermo.models import predict_logits
    from dermo.training import validation_metrics

    logits, _ = predict_logits(model, imgs, model.config)
    p = torch.softmax(logits, 1)[:, 1].numpy().astype(np.float64)
    assert validation_metrics(df["label"].to_numpy(), p)["auroc"] == pytest.approx(res["validation"]["auroc"],
                                                                                  abs=1e-6)
    # the backbone is frozen: identical to a fresh one built from the same seed
    torch.manual_seed(cfg.train.seed)
    from dermo.models import create_model

    fresh = create_model(cfg.model)
    for k, v in fresh.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k


def test_probe_reuses_cache_only_when_it_matches(tiny_data, tiny_manifest, tmp_path, monkeypatch):
    cache = tmp_path / "feats"
    run(_cfg(tiny_data, tiny_manifest, tmp_path / "a", feature_cache=str(cache), epochs=1))
    calls = {"n": 0}
    orig = probe.extract_features

    def counting(*a, **k):
        calls["n"] += 1
        return orig(*a, **k)

    monkeypatch.setattr(probe, "extract_features", counting)
    run(_cfg(tiny_data, tiny_manifest, tmp_path / "b", feature_cache=str(cache), epochs=1))
    assert calls["n"] == 0  # same backbone, size and images: read from disk
    # its training-set outputs teach a student through distill.teacher_cache, without running the ViT again
    student = run(_cfg(tiny_data, tiny_manifest, tmp_path / "s", backbone="test_efficientnet", img_size=48,
                       freeze_backbone=False, epochs=1, teacher=str(tmp_path / "b" / "best"),
                       teacher_cache=str(tmp_path / "b" / "teacher_outputs.pt")))
    hist = json.loads((tmp_path / "s" / "history.json").read_text())
    assert hist[0]["train_kd"] > 0 and hist[0]["train_att"] > 0 and student["epochs_run"] == 1
    run(_cfg(tiny_data, tiny_manifest, tmp_path / "c", feature_cache=str(cache), epochs=1, img_size=48))
    assert calls["n"] == 2  # another image size: both splits re-encoded
    run(_cfg(tiny_data, tiny_manifest, tmp_path / "e", feature_cache=str(cache), epochs=1, img_size=48, seed=1))
    assert calls["n"] == 4  # other backbone weights (another seed's random init; or pretrained vs not): re-encoded
    with pytest.raises(ValueError, match="distillation does not apply"):
        run(_cfg(tiny_data, tiny_manifest, tmp_path / "d", teacher=str(tmp_path / "a" / "best")))
