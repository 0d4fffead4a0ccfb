"""The one training loop: teacher, baseline student and MAG-KD student all go through ``run(cfg)``.

Data are decoded once into uint8 tensors (N, S, S, 3) that live on the accelerator; batches are index slices and
augmentation runs on the device (``dermo.data.augment_batch``), so a GPU is never input-bound. Accelerate handles
devices, bf16 autocast, multi-GPU (``accelerate launch``: each process takes its shard of every epoch's
permutation) and ``save_state``/``load_state`` for resume. The best checkpoint is chosen on validation AUROC.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import metrics as M
from .config import RunConfig
from .data import augment_batch, decode_images, load_split
from .losses import mag_kd_loss, resize_attention, warp_attention
from .models import create_model, load_model, predict_logits

logger = logging.getLogger(__name__)

STATE_FILE = "progress.json"


def load_arrays(cfg: RunConfig, split: str, size: int, limit: int = 0) -> tuple[torch.Tensor, np.ndarray, Any]:
    """(uint8 images (N, size, size, 3), labels (N,), metadata DataFrame) of one split."""
    df = load_split(cfg.data.data_dir, split, cfg.data.manifest, limit=limit)
    imgs = decode_images(df["path"], size, cfg.data.num_workers)
    return torch.from_numpy(imgs), df["label"].to_numpy(np.int64), df


@functools.lru_cache(maxsize=32)
def _channel_constant(values: tuple[float, ...], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, C, 1, 1) tensor of ``values`` on ``device``, made once: a tensor made from Python numbers on a GPU is a
    host-to-device copy, and that makes the host wait for the GPU (once per training step, before this cache)."""
    return torch.tensor(values, device=device, dtype=dtype).view(1, -1, 1, 1)


def _normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = _channel_constant(tuple(float(v) for v in mean), x.device, x.dtype)
    s = _channel_constant(tuple(float(v) for v in std), x.device, x.dtype)
    return (x - m) / s


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


@torch.no_grad()
def teacher_outputs(teachers: list, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and attention of one teacher, or of an ensemble (logits averaged; attention maps resized to the first
    member's grid and averaged). ``x`` is the augmented batch in [0, 1]; each member gets its own size/mean/std."""
    logits, atts = [], []
    for t in teachers:
        c = t.config
        out = t(_normalize(_resize(x, c.img_size), c.mean, c.std).contiguous(memory_format=torch.channels_last))
        logits.append(out.logits.float())
        grid = atts[0].shape[-2:] if atts else out.attention.shape[-2:]
        atts.append(resize_attention(out.attention.float(), tuple(grid)))
    return torch.stack(logits).mean(0), torch.stack(atts).mean(0)


@torch.no_grad()
def precompute_teacher(teachers: list, images: torch.Tensor, batch_size: int = 64,
                       progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits (N, 2) and attention maps (N, h, w) of uint8 images (N, S, S, 3), un-augmented, in fp32."""
    from tqdm.auto import tqdm

    dev = next(teachers[0].parameters()).device
    logits, atts = [], []
    for i in tqdm(range(0, len(images), batch_size), desc="teacher outputs", disable=not progress):
        x = images[i:i + batch_size].to(dev).permute(0, 3, 1, 2).float().div_(255)
        lg, at = teacher_outputs(teachers, x)
        logits.append(lg.float())
        atts.append(at.float())
    return torch.cat(logits), torch.cat(atts)


def load_teachers(spec: str, device) -> list:
    """The teacher folder(s) of ``distill.teacher`` (comma-separated = ensemble), frozen, on ``device``."""
    return [load_model(p).eval().requires_grad_(False).to(device).to(memory_format=torch.channels_last)
            for p in (q.strip() for q in spec.split(",")) if p]


def save_teacher_outputs(path: str | Path, teacher: str, image_ids: list, logits: torch.Tensor,
                         attention: torch.Tensor, attention_teacher: str = "") -> None:
    """Write a ``distill.teacher_cache`` file: the outputs of ``teacher`` on the training images ``image_ids`` (the
    maps those of ``attention_teacher`` when one is named)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    key = {"teacher": teacher, "image_ids": image_ids, "weights": teacher_weights(teacher)}
    if attention_teacher:
        key["attention_teacher"] = attention_teacher
    # written whole, then renamed: on several processes each writes the same outputs, and no process (nor a later
    # run) can read a file another is half-way through writing
    tmp = Path(f"{path}.{os.getpid()}.tmp")
    torch.save({"key": key, "logits": logits.float().cpu(), "attention": attention.float().cpu()}, tmp)
    os.replace(tmp, path)


def teacher_weights(spec: str) -> list[str | None]:
    """sha256 of each teacher folder's weights (None where a folder has no model.safetensors): a cache is of these
    weights, not of whatever a folder holds later (a teacher retrained in place)."""
    from .inference import sha256_file

    out: list[str | None] = []
    for p in (q.strip() for q in spec.split(",")):
        if p:
            f = Path(p) / "model.safetensors"
            out.append(sha256_file(f) if f.is_file() else None)
    return out


def _same_teacher(a: str, b: str) -> bool:
    def norm(spec: str) -> list[str]:
        return [str(Path(p.strip()).resolve()) for p in spec.split(",") if p.strip()]

    return norm(a) == norm(b)


def cached_teacher(cfg: RunConfig, teachers: list, images: torch.Tensor | None, image_ids: list | None,
                   device) -> tuple[torch.Tensor, torch.Tensor]:
    """``cfg.distill.teacher_cache`` resolved: computed once ("memory"), or read from / written to a .pt file that
    records which teacher folders and training images it belongs to (a mismatch is an error, never silently reused).
    """
    path = cfg.distill.teacher_cache
    if path.endswith(".pt") and Path(path).is_file():
        blob = torch.load(path, map_location="cpu", weights_only=False)
        key = blob.get("key", {})
        if image_ids is None or key.get("image_ids") != image_ids:
            raise ValueError(f"teacher_cache {path} was written for other training images; delete it or pick "
                             "another path")
        if not _same_teacher(key.get("teacher", ""), cfg.distill.teacher):
            raise ValueError(f"teacher_cache {path} holds the outputs of {key.get('teacher')!r}, not of --teacher "
                             f"{cfg.distill.teacher!r}")
        if "weights" not in key:
            logger.warning("teacher_cache %s records no weights digest (written by an older version): it cannot be "
                           "checked against the teacher's current weights", path)
        elif any(now is not None and now != then  # an absent folder cannot be checked: its cache is what teaches
                 for then, now in zip(key["weights"], teacher_weights(cfg.distill.teacher))):
            raise ValueError(f"teacher_cache {path} holds the outputs of other weights than {cfg.distill.teacher} "
                             "holds now (retrained since?); delete it to compute them again")
        if key.get("attention_teacher", "") != cfg.distill.attention_teacher:
            raise ValueError(f"teacher_cache {path} holds the attention maps of "
                             f"{key.get('attention_teacher') or 'the teacher'!r}, not of --attention_teacher "
                             f"{cfg.distill.attention_teacher or 'the teacher'!r}")
        logger.info("teacher outputs from %s", path)
        return blob["logits"].to(device), blob["attention"].to(device)
    if not teachers:
        raise FileNotFoundError(f"teacher_cache {path} not found and no teacher to compute it")
    if path.endswith(".pt") and image_ids is None:
        raise ValueError("teacher_cache to a file needs the training image ids; use teacher_cache=memory")
    t0 = time.perf_counter()
    logits, att = precompute_teacher(teachers, images, progress=cfg.train.progress)
    logger.info("teacher outputs for %d images in %.0f s", len(images), time.perf_counter() - t0)
    if cfg.distill.attention_teacher:
        from .saliency import attention_targets

        t0 = time.perf_counter()
        att = attention_targets(cfg.distill.attention_teacher, images, progress=cfg.train.progress)
        logger.info("%s attention maps %s for %d images in %.0f s", cfg.distill.attention_teacher,
                    tuple(att.shape[1:]), len(images), time.perf_counter() - t0)
    if path.endswith(".pt"):
        save_teacher_outputs(path, cfg.distill.teacher, image_ids, logits, att, cfg.distill.attention_teacher)
    return logits.to(device), att.to(device)


def write_teacher_cache(cfg: RunConfig, device=None) -> Path:
    """Run ``cfg.distill.teacher`` once over the training images (decoded at its own size) and write
    ``cfg.distill.teacher_cache`` (a .pt path); kept as is when it already holds them. The search calls this once
    for all its trials, which then train on images at the student's size."""
    path = Path(cfg.distill.teacher_cache)
    if path.suffix != ".pt":
        raise ValueError(f"teacher_cache={cfg.distill.teacher_cache!r} is not a .pt file")
    if path.is_file():  # only checked against the training images' ids and the teacher: nothing to decode
        ids = load_split(cfg.data.data_dir, "train", cfg.data.manifest, limit=cfg.data.limit_train)["image_id"]
        cached_teacher(cfg, [], None, ids.tolist(), torch.device("cpu"))
        return path
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    teachers = load_teachers(cfg.distill.teacher, device)
    images, _, df = load_arrays(cfg, "train", max(t.config.img_size for t in teachers), cfg.data.limit_train)
    cached_teacher(cfg, teachers, images, df["image_id"].tolist(), device)
    return path


def train_one_epoch(model, teachers, optimizer, scheduler, accelerator, images: torch.Tensor, labels: torch.Tensor,
                    cfg: RunConfig, epoch: int, start_step: int = 0, on_step=None,
                    teacher_cache: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """One pass over this process's shard of the epoch permutation; returns mean loss terms and img/s.

    ``teacher_cache`` = (logits, attention) of every training image (un-augmented) replaces running ``teachers``.
    """
    tc, mc, dc = cfg.train, cfg.model, cfg.distill
    model.train()
    gen = torch.Generator().manual_seed(cfg.train.seed * 1000 + epoch)  # same order on every process and resume
    perm = torch.randperm(len(images), generator=gen)
    dev = images.device
    # What a step needs from the host goes to the device once, here: a copy of host memory to a GPU inside the loop
    # (the batch indices, the class weights; the normalisation constants are cached by _normalize) makes the host
    # wait for the GPU every step, so the GPU idles while the next step's kernels are launched. Loss terms are summed
    # on the device for the same reason (a float() per step would wait too).
    perm = perm[accelerator.process_index::accelerator.num_processes].to(dev)
    # drop the last partial batch (BatchNorm dislikes tiny batches); every process takes the same number of steps
    # (the shortest shard's), or one would wait forever in a gradient all-reduce the others never join
    steps = (len(images) // accelerator.num_processes) // tc.batch_size
    aug_gen = torch.Generator(device=dev).manual_seed(cfg.train.seed * 7919 + epoch)
    class_weights = torch.tensor(tc.class_weights, dtype=torch.float32, device=dev)
    sums = {k: torch.zeros((), device=dev) for k in ("loss", "cls", "kd", "att")}
    n_seen, n_steps, t0 = 0, 0, time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(range(start_step, steps), desc=f"epoch {epoch}", disable=not (tc.progress and
                                                                          accelerator.is_local_main_process))
    for step in bar:
        idx = perm[step * tc.batch_size:(step + 1) * tc.batch_size]
        x = images[idx].permute(0, 3, 1, 2).float().div_(255)
        y = labels[idx]
        theta = None
        if tc.augment:
            x, theta = augment_batch(x, aug_gen, return_theta=True)
        xs = _normalize(_resize(x, mc.img_size), mc.mean, mc.std).contiguous(memory_format=torch.channels_last)
        t_logits = t_att = None
        if teacher_cache is not None:  # warped in fp32, outside the autocast (its grid lookup is a bmm: bf16 there
            t_logits, t_att = teacher_cache[0][idx], teacher_cache[1][idx]  # moved the maps by ~1%)
            if theta is not None:
                t_att = warp_attention(t_att, theta)
        with accelerator.autocast():
            out = model(xs)
            if teacher_cache is None and teachers:
                t_logits, t_att = teacher_outputs(teachers, x)
            terms = mag_kd_loss(out.logits, out.attention, y, t_logits, t_att, alpha=dc.alpha, beta=dc.beta,
                                gamma=dc.gamma, temperature=dc.kd_temperature, focal_gamma=tc.focal_gamma,
                                class_weights=class_weights)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(terms.loss)
        accelerator.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        scheduler.step()
        for k, v in terms._asdict().items():
            sums[k] += v.detach().float()
        n_seen += len(idx)
        n_steps += 1
        if step % 10 == 0 and not bar.disable:
            bar.set_postfix(loss=f"{float(terms.loss.detach()):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
        if on_step is not None and on_step(epoch, step + 1):
            break
    n_steps = max(1, n_steps)
    out = {k: float(v) / n_steps for k, v in sums.items()}  # float() waits for the device, so dt covers its work
    dt = time.perf_counter() - t0
    out["img_per_s"] = n_seen * accelerator.num_processes / max(dt, 1e-9)
    out["seconds"] = dt
    return out


@torch.no_grad()
def evaluate(model, accelerator, images: torch.Tensor, labels: np.ndarray, cfg: RunConfig,
             tta: bool = False) -> dict[str, Any]:
    """Validation metrics (AUROC, and sensitivity/specificity at the sensitivity>=0.90 point and at 0.5)."""
    model.eval()
    idx, order = eval_shard(len(images), accelerator.process_index, accelerator.num_processes)
    # fp32, not under the training's bf16 autocast: the checkpoint and the search's trials are chosen on these
    # figures, and bf16 logits moved validation specificity by ~0.01 (and tied scores) against the fp32 evaluation
    # every report and the shipped model use
    net = accelerator.unwrap_model(model)
    with original_forward(net):
        logits, _ = predict_logits(net, images[idx], cfg.model, batch_size=max(64, cfg.train.batch_size), tta=tta)
    logits = accelerator.gather(logits.to(accelerator.device)).float().cpu()
    order = accelerator.gather(order.to(accelerator.device)).cpu().numpy()
    p = torch.softmax(logits, 1)[:, 1].numpy()
    p_full = np.empty(len(images), np.float64)
    p_full[order[order >= 0]] = p[order >= 0]
    return validation_metrics(labels, p_full)


@contextlib.contextmanager
def original_forward(module: torch.nn.Module):
    """Run ``module`` with its own ``forward`` for the duration: under mixed precision, ``accelerator.prepare``
    replaces the instance's forward by an autocast wrapper (the original kept as ``_original_forward``), which
    ``unwrap_model`` keeps, so without this an evaluation would still run in bf16. Training is not affected: it
    enters ``accelerator.autocast()`` itself."""
    original = module.__dict__.get("_original_forward")
    if original is None:
        yield module
        return
    wrapped = module.__dict__.get("forward")
    module.forward = original
    try:
        yield module
    finally:
        if wrapped is None:
            del module.forward
        else:
            module.forward = wrapped


def eval_shard(n: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Process ``rank``'s share of ``n`` evaluation images: ``(indices to run, their place in the full set or -1)``.

    Every process gets the same count (a gather needs equal sizes): shards one short are padded with a repeat of
    their first image, marked -1 so it is dropped after the gather.
    """
    shard = torch.arange(n)[rank::world]
    pad = -(-n // world) - len(shard)
    filler = shard[:1] if len(shard) else torch.zeros(1, dtype=torch.long)
    return torch.cat([shard, filler.repeat(pad)]), torch.cat([shard, torch.full((pad,), -1, dtype=torch.long)])


def validation_metrics(y: np.ndarray, p_full: np.ndarray) -> dict[str, Any]:
    """AUROC, and sensitivity/specificity/accuracy at the sensitivity>=0.90 point and at 0.5, plus the search score."""
    thr = M.threshold_for_sensitivity(y, p_full, 0.90)
    at_op = M.confusion_at(y, p_full, thr)
    at_05 = M.confusion_at(y, p_full, 0.5)
    return {"auroc": M.auroc(y, p_full), "threshold": thr, "sensitivity": at_op["sensitivity"],
            "specificity": at_op["specificity"], "accuracy": at_op["accuracy"],
            "sensitivity_at_0.5": at_05["sensitivity"], "specificity_at_0.5": at_05["specificity"],
            "accuracy_at_0.5": at_05["accuracy"], "score": M.selection_score(at_op["sensitivity"],
                                                                            at_op["accuracy"],
                                                                            at_op["specificity"])}


def _cosine_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    def f(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, f)


def schedule_steps(accelerator, warmup_steps: int, total_steps: int) -> tuple[int, int]:
    """Warmup and total steps for the scheduler that ``accelerator.prepare`` wraps: on N processes its ``step()``
    steps the schedule N times per optimizer step (Accelerate's convention for schedules written for one process),
    so a schedule counted in optimizer steps would end after 1/N of training. Counted in N-fold steps here."""
    n = accelerator.num_processes
    return warmup_steps * n, total_steps * n


def _accelerator(cfg: RunConfig):
    from accelerate import Accelerator

    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels once
    mp = cfg.train.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())


def run(cfg: RunConfig, data: dict[str, tuple] | None = None) -> dict[str, Any]:
    """Train one model as configured; returns the best validation metrics and where the model was saved.

    ``data`` may pass pre-decoded ``{"train": (images, labels), "validation": (images, labels)}`` uint8 tensors
    (the search decodes once for all trials), plus ``train_ids`` for a teacher cache file. Writes to ``cfg.train.output_dir``: ``best/`` (save_pretrained),
    ``checkpoints/last`` (save_state, for ``resume``), ``run_config.json``, ``history.json``, ``metrics.json``.
    """
    from accelerate.utils import set_seed

    tc = cfg.train
    if tc.pretrained:
        from .pretrained import PRETRAINED_SOURCES, pretrained_mean_std

        if cfg.model.backbone not in PRETRAINED_SOURCES:
            raise ValueError(f"pretrained=true but no obtainable ImageNet weights for {cfg.model.backbone!r}; "
                             f"use one of {sorted(PRETRAINED_SOURCES)} or --pretrained false")
        mean, std = pretrained_mean_std(cfg.model.backbone)
        cfg = cfg.override(mean=mean, std=std)  # preprocessing follows the weights
    if tc.freeze_backbone:
        from .probe import run_probe

        return run_probe(cfg)
    out_dir = Path(tc.output_dir)
    accelerator = _accelerator(cfg)
    set_seed(tc.seed)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "run_config.json")

    teachers = []
    size = cfg.model.img_size
    dc = cfg.distill
    cache_file_ready = dc.teacher_cache.endswith(".pt") and Path(dc.teacher_cache).is_file()
    if dc.teacher and not cache_file_ready:  # with its outputs on disk the teacher itself is not needed
        teachers = load_teachers(dc.teacher, accelerator.device)
        size = max([size] + [t.config.img_size for t in teachers])

    if data is None:
        tr_x, tr_y, tr_df = load_arrays(cfg, "train", size, cfg.data.limit_train)
        va_x, va_y, _ = load_arrays(cfg, "validation", cfg.model.img_size, cfg.data.limit_eval)
        train_ids = tr_df["image_id"].tolist()
    else:
        (tr_x, tr_y), (va_x, va_y) = data["train"], data["validation"]  # noqa: N806
        tr_y, va_y = np.asarray(tr_y), np.asarray(va_y)
        train_ids = data.get("train_ids")
    dev = accelerator.device
    tr_x, tr_y_t = tr_x.to(dev), torch.tensor(np.asarray(tr_y), dtype=torch.long, device=dev)
    va_x = va_x.to(dev)
    logger.info("train %d images, validation %d images, device %s", len(tr_x), len(va_x), dev)
    t_cache = None
    if dc.teacher and dc.teacher_cache:
        t_cache = cached_teacher(cfg, teachers, tr_x, train_ids, dev)
        teachers = []  # free the teacher: its outputs are all the loop needs
        if data is None and tr_x.shape[1] != cfg.model.img_size:
            # decoded at the teacher's size for its pass; the student trains on its own decode, exactly as a
            # student without a teacher does (no resize of a resize)
            tr_x = load_arrays(cfg, "train", cfg.model.img_size, cfg.data.limit_train)[0].to(dev)

    model = create_model(cfg.model, pretrained=tc.pretrained).to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for n, p_ in model.named_parameters():
        (no_decay if p_.ndim <= 1 else decay).append(p_)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    steps_per_epoch = max(1, len(tr_x) // accelerator.num_processes // tc.batch_size)
    total = steps_per_epoch * (tc.schedule_epochs or tc.epochs)
    if tc.max_steps:
        total = min(total, tc.max_steps)
    scheduler = _cosine_with_warmup(optimizer, *schedule_steps(accelerator, int(tc.warmup_epochs * steps_per_epoch),
                                                               total))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    progress = {"epoch": 0, "step": 0, "global_step": 0, "best_auroc": -1.0, "best_epoch": -1, "history": []}
    ckpt_dir = out_dir / "checkpoints" / "last"
    if tc.resume:
        resume_dir = ckpt_dir if tc.resume == "latest" else Path(tc.resume)
        if not (resume_dir / STATE_FILE).is_file():
            raise FileNotFoundError(f"resume={tc.resume!r}: no checkpoint at {resume_dir} (expected {STATE_FILE})")
        accelerator.load_state(str(resume_dir))
        progress = json.loads((resume_dir / STATE_FILE).read_text())
        logger.info("resumed from %s at epoch %d step %d", resume_dir, progress["epoch"], progress["step"])

    def save_checkpoint(epoch: int, step: int) -> None:
        accelerator.wait_for_everyone()
        accelerator.save_state(str(ckpt_dir))
        if accelerator.is_main_process:
            progress.update(epoch=epoch, step=step)
            (ckpt_dir / STATE_FILE).write_text(json.dumps(progress, indent=1))

    stop = {"flag": False}

    def on_step(epoch: int, step: int) -> bool:
        progress["global_step"] += 1
        if tc.save_every_steps and progress["global_step"] % tc.save_every_steps == 0:
            save_checkpoint(epoch, step)
        if tc.max_steps and progress["global_step"] >= tc.max_steps:
            stop.update(flag=True, at=(epoch, step))
            return True
        return False

    t_start = time.perf_counter()
    for epoch in range(progress["epoch"], tc.epochs):
        start_step = progress["step"] if epoch == progress["epoch"] else 0
        train_stats = train_one_epoch(model, teachers, optimizer, scheduler, accelerator, tr_x, tr_y_t, cfg, epoch,
                                      start_step, on_step, teacher_cache=t_cache)
        last = stop["flag"] or epoch == tc.epochs - 1
        if (epoch + 1) % tc.eval_every == 0 or last:
            val = evaluate(model, accelerator, va_x, va_y, cfg, tta=tc.tta)
            row = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()},
                   "lr_end": float(scheduler.get_last_lr()[0]), **{f"val_{k}": v for k, v in val.items()}}
            progress["history"].append(row)
            if accelerator.is_main_process:
                logger.info("epoch %d: %s", epoch, json.dumps({k: round(v, 4) for k, v in row.items()}))
            if val["auroc"] > progress["best_auroc"]:
                progress.update(best_auroc=val["auroc"], best_epoch=epoch, best=val)
                if accelerator.is_main_process:
                    accelerator.unwrap_model(model).save_pretrained(out_dir / "best")
                    cfg.save(out_dir / "best" / "run_config.json")
        if stop["flag"]:  # stopped mid-epoch by max_steps: resume continues from that step
            save_checkpoint(*stop["at"])
            break
        save_checkpoint(epoch + 1, 0)

    result = {"best_epoch": progress["best_epoch"], "validation": progress.get("best", {}),
              "epochs_run": len(progress["history"]), "global_step": progress["global_step"],
              "train_seconds": time.perf_counter() - t_start,
              "train_img_per_s": float(np.mean([h["train_img_per_s"] for h in progress["history"]]))
              if progress["history"] else 0.0,
              "model_dir": str(out_dir / "best"), "config": asdict(cfg)}
    if accelerator.is_main_process:
        (out_dir / "history.json").write_text(json.dumps(progress["history"], indent=1))
        (out_dir / "metrics.json").write_text(json.dumps(result, indent=1, default=str))
    return result
