"""Frozen-backbone training: the backbone's feature maps are computed once and cached, only the head is trained.

This is how a large pretrained encoder (the DINOv2 ViT-S/14 of ``dermo.pretrained``) becomes a teacher on a machine
where fine-tuning it is out of reach (2 CPU cores: about 11 img/s forward at 224 px, so one pass over the data is
15 minutes, and a fine-tuning epoch would be an hour). The head is the same attention-pooling head as every other
model (a 1x1 conv softmax over the grid, then a linear layer), so the result is an ordinary ``LesionClassifier``
(``save_pretrained`` layout, loads with ``load_model``) and the rest of the pipeline (evaluation, calibration,
distillation, export) does not know it was trained this way.

Augmentation does not apply: the head is a 1x1 conv plus pooling, which is invariant to any rearrangement of the
grid, and re-encoding augmented images is exactly the cost this avoids. ``run(cfg)`` dispatches here when
``train.freeze_backbone`` is true.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import RunConfig
from .losses import focal_loss
from .models import LesionClassifier, create_model

logger = logging.getLogger(__name__)


@torch.no_grad()
def extract_features(model: LesionClassifier, images: torch.Tensor, batch_size: int = 32,
                     progress: bool = False) -> torch.Tensor:
    """fp16 feature maps (N, C, h, w) of uint8 images (N, S, S, 3) already at ``model.config.img_size``."""
    from tqdm.auto import tqdm

    from .training import _normalize

    c = model.config
    model.eval()
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc="features", disable=not progress):
        x = images[i:i + batch_size].permute(0, 3, 1, 2).float().div_(255)
        out.append(model.forward_features(_normalize(x, c.mean, c.std)).half())
    return torch.cat(out)


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, bytes): features cached for other weights (e.g.
    ``--pretrained false``) never stand in for these."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cached_features(model: LesionClassifier, cfg: RunConfig, split: str, cache_dir: Path | None,
                    limit: int = 0) -> tuple[torch.Tensor, np.ndarray, list]:
    """Features, labels and image ids of one split, from ``cache_dir/<split>.pt`` when it was made by the same backbone
    weights, image size and image list; otherwise computed (and written there)."""
    from .data import decode_images, load_split

    df = load_split(cfg.data.data_dir, split, cfg.data.manifest, limit=limit)
    ids = df["image_id"].tolist()
    labels = df["label"].to_numpy(np.int64)
    key = {"backbone": cfg.model.backbone, "weights": weights_digest(model.backbone), "img_size": cfg.model.img_size,
           "mean": list(cfg.model.mean), "std": list(cfg.model.std), "image_ids": ids}
    path = cache_dir / f"{split}.pt" if cache_dir else None
    if path is not None and path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        if blob.get("key") == key:
            logger.info("features of %s from %s", split, path)
            return blob["features"], labels, ids
        logger.info("feature cache %s was made for other data or settings: recomputing", path)
    imgs = torch.from_numpy(decode_images(df["path"], cfg.model.img_size, cfg.data.num_workers))
    t0 = time.perf_counter()
    feats = extract_features(model, imgs, progress=cfg.train.progress)
    logger.info("encoded %d %s images in %.0f s", len(imgs), split, time.perf_counter() - t0)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"key": key, "features": feats}, path)
    return feats, labels, ids


@torch.no_grad()
def _head_outputs(model: LesionClassifier, feats: torch.Tensor, batch_size: int = 512) -> tuple[torch.Tensor,
                                                                                                 torch.Tensor]:
    """(logits, attention) of the head on cached feature maps, in fp32."""
    model.eval()
    outs = [model.forward_head(feats[i:i + batch_size].float()) for i in range(0, len(feats), batch_size)]
    return torch.cat([o.logits for o in outs]).float(), torch.cat([o.attention for o in outs]).float()


def run_probe(cfg: RunConfig) -> dict[str, Any]:
    """Train the head of ``cfg.model.backbone`` on cached features; same outputs and result keys as
    ``dermo.training.run`` (``best/``, ``run_config.json``, ``history.json``, ``metrics.json``)."""
    from .training import save_teacher_outputs, validation_metrics

    tc = cfg.train
    if cfg.distill.teacher:
        raise ValueError("freeze_backbone trains a head on fixed features: distillation does not apply")
    torch.manual_seed(tc.seed)
    out_dir = Path(tc.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(out_dir / "run_config.json")
    model = create_model(cfg.model, pretrained=tc.pretrained)
    model.backbone.requires_grad_(False)
    cache_dir = Path(tc.feature_cache) if tc.feature_cache else out_dir / "features"
    tr_f, tr_y, tr_ids = cached_features(model, cfg, "train", cache_dir, cfg.data.limit_train)
    va_f, va_y, _ = cached_features(model, cfg, "validation", cache_dir, cfg.data.limit_eval)
    tr_yt = torch.tensor(tr_y)

    head = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    opt = torch.optim.AdamW(head, lr=tc.lr, weight_decay=tc.weight_decay)
    steps_per_epoch = max(1, len(tr_f) // tc.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tc.lr, total_steps=steps_per_epoch * tc.epochs,
                                                pct_start=min(0.3, tc.warmup_epochs / max(1, tc.epochs)))
    gen = torch.Generator().manual_seed(tc.seed)
    history, best, best_state = [], None, None
    t_start = time.perf_counter()
    for epoch in range(tc.epochs):
        model.train()
        model.backbone.eval()
        perm = torch.randperm(len(tr_f), generator=gen)
        t0, total = time.perf_counter(), 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * tc.batch_size:(s + 1) * tc.batch_size]
            logits = model.forward_head(tr_f[idx].float()).logits
            loss = focal_loss(logits, tr_yt[idx], gamma=tc.focal_gamma, class_weights=tc.class_weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
        dt = time.perf_counter() - t0
        p = torch.softmax(_head_outputs(model, va_f)[0], 1)[:, 1].numpy().astype(np.float64)
        val = validation_metrics(va_y, p)
        row = {"epoch": epoch, "train_loss": total / steps_per_epoch, "train_cls": total / steps_per_epoch,
               "train_img_per_s": steps_per_epoch * tc.batch_size / max(dt, 1e-9), "train_seconds": dt,
               **{f"val_{k}": v for k, v in val.items()}}
        history.append(row)
        if best is None or val["auroc"] > best[1]["auroc"]:
            best = (epoch, val)
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    model.load_state_dict({**model.state_dict(), **best_state})
    model.save_pretrained(out_dir / "best")
    cfg.save(out_dir / "best" / "run_config.json")
    logger.info("best epoch %d: validation AUROC %.4f", best[0], best[1]["auroc"])
    result = {"best_epoch": best[0], "validation": best[1], "epochs_run": len(history),
              "global_step": steps_per_epoch * len(history), "train_seconds": time.perf_counter() - t_start,
              "train_img_per_s": float(np.mean([h["train_img_per_s"] for h in history])),
              "model_dir": str(out_dir / "best"), "method": "frozen backbone, head trained on cached features",
              "config": asdict(cfg)}
    # Its outputs on every training image, in the format of distill.teacher_cache: a student distils from this
    # teacher without re-encoding the training set (--teacher <out>/best --teacher_cache <out>/teacher_outputs.pt).
    save_teacher_outputs(out_dir / "teacher_outputs.pt", str(out_dir / "best"), tr_ids, *_head_outputs(model, tr_f))
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=str))
    return result
