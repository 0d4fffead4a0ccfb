"""Losses: focal, knowledge distillation, attention alignment, and the weighted MAG-KD sum.

All are plain functions on tensors. Shapes: logits (B, K), targets (B,) int64, attention maps (B, h, w).
"""
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
               class_weights: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Class-weighted focal loss (Lin et al., 2017, arXiv:1708.02002).

    FL = sum_i w_{y_i} * (1 - p_{i,y_i})^gamma * (-log p_{i,y_i}) / sum_i w_{y_i}
    (weighted mean, as in ``F.cross_entropy(weight=...)``; gamma = 0 gives exactly weighted cross-entropy).
    """
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, targets.view(-1, 1)).squeeze(1)
    loss = -((1.0 - logp_t.exp()) ** gamma) * logp_t
    if class_weights is None:
        return loss.mean()
    w = torch.as_tensor(class_weights, dtype=loss.dtype, device=loss.device)[targets]
    return (w * loss).sum() / w.sum()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 5.0) -> torch.Tensor:
    """Hinton et al. (2015) distillation: KL(softmax(t/T) || softmax(s/T)) * T^2, batch mean.

    T^2 keeps the gradient scale comparable to the hard-label loss as T changes. 0 when student == teacher.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * (t * t)


def resize_attention(att: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resample attention maps (B, h, w) to ``size`` by area averaging (bilinear when upsampling), renormalised to
    sum to 1 per map."""
    if tuple(att.shape[-2:]) == tuple(size):
        return att
    x = att.unsqueeze(1).float()
    if x.shape[-1] >= size[1] and x.shape[-2] >= size[0]:
        x = F.adaptive_avg_pool2d(x, size)
    else:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    x = x.squeeze(1)
    return x / x.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def warp_attention(att: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Apply the augmentation's affine matrices (B, 2, 3) (``augment_batch(..., return_theta=True)``) to attention
    maps (B, h, w) of the un-augmented images: the same ``affine_grid`` / reflection ``grid_sample`` that moved the
    pixels, so a cached teacher map follows the rotated, flipped, scaled image. Renormalised to sum to 1."""
    x = att.unsqueeze(1).float()
    grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False).squeeze(1)
    return x / x.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def attention_loss(student_att: torch.Tensor, teacher_att: torch.Tensor) -> torch.Tensor:
    """MSE between the student's map (B, h, w) and the teacher's map resized to (h, w) (7x7 for a 224 px student).

    Both maps sum to 1; they are multiplied by h*w first so a uniform map is all ones and the loss does not shrink
    with the grid size. 0 when the maps are equal.
    """
    h, w = student_att.shape[-2:]
    t = resize_attention(teacher_att.detach(), (h, w))
    return F.mse_loss(student_att.float() * (h * w), t * (h * w))


class LossTerms(NamedTuple):
    loss: torch.Tensor  # the weighted sum that is back-propagated
    cls: torch.Tensor  # focal
    kd: torch.Tensor
    att: torch.Tensor


def mag_kd_loss(student_logits: torch.Tensor, student_att: torch.Tensor, targets: torch.Tensor,
                teacher_logits: torch.Tensor | None = None, teacher_att: torch.Tensor | None = None, *,
                alpha: float = 0.4, beta: float = 0.3, gamma: float = 0.3, temperature: float = 5.0,
                focal_gamma: float = 2.0,
                class_weights: Sequence[float] | torch.Tensor | None = (1.0, 4.0)) -> LossTerms:
    """MAG-KD = alpha * focal + beta * KD(T) + gamma * attention-MSE. Returns every term for logging.

    Without a teacher (baseline student, teacher training) the loss is the focal term alone (alpha is ignored),
    and kd/att are reported as 0.
    """
    cls = focal_loss(student_logits, targets, focal_gamma, class_weights)
    zero = cls.new_zeros(())
    if teacher_logits is None:
        return LossTerms(cls, cls, zero, zero)
    kd = kd_loss(student_logits, teacher_logits, temperature)
    att = attention_loss(student_att, teacher_att) if teacher_att is not None else zero
    return LossTerms(alpha * cls + beta * kd + gamma * att, cls, kd, att)
