"""Teacher and student: a timm backbone with an attention-pooling head.

``forward_features`` gives the backbone's feature map (B, C, h, w); ``forward_head`` turns it into
``ModelOutput(logits, attention, embedding)`` where ``attention`` (B, h, w) is a spatial softmax (sums to 1 per image) that
also does the pooling: ``pooled = sum_hw attention * features``. The map is therefore exactly what the classifier
looked at, which is what the app shows and what MAG-KD aligns between teacher and student.
The attention conv starts at zero, i.e. plain average pooling, so pretrained backbones start where they were trained.
"""

import logging
from typing import NamedTuple

import torch
import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin

from .config import SOURCE_URL, ModelConfig

logger = logging.getLogger(__name__)


class ModelOutput(NamedTuple):
    logits: torch.Tensor  # (B, num_classes)
    attention: torch.Tensor  # (B, h, w), each map sums to 1
    embedding: torch.Tensor  # (B, C) attention-pooled features (out-of-distribution check in the app)


class LesionClassifier(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="dermohelper",
    license="cc-by-nc-sa-4.0",
    tags=["image-classification", "dermatology", "skin-lesion", "ham10000"],
    repo_url=SOURCE_URL,
):
    """Binary lesion classifier (benign / malignant) around any timm backbone named in ``config.backbone``."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        import timm

        self.config = config  # the same object the Hub mixin writes to config.json
        kwargs = {}
        if timm.models.is_model_in_modules(config.backbone, ["vision_transformer"]):
            kwargs["img_size"] = config.img_size  # position embedding sized for the grid we train and serve at
        self.backbone = timm.create_model(config.backbone, pretrained=False, num_classes=0, global_pool="", **kwargs)
        self.num_prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        c = self.backbone.num_features
        self.attn = nn.Conv2d(c, 1, kernel_size=1)
        nn.init.zeros_(self.attn.weight)
        nn.init.zeros_(self.attn.bias)
        self.drop = nn.Dropout(config.drop_rate)
        self.fc = nn.Linear(c, config.num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, C, h, w). Transformer tokens (B, N, C) are reshaped to their patch grid."""
        f = self.backbone.forward_features(x)
        if f.ndim == 3:  # ViT: drop class/register tokens, tokens -> grid
            f = f[:, self.num_prefix_tokens:]
            b, n, c = f.shape
            side = int(round(n ** 0.5))
            assert side * side == n, f"cannot reshape {n} tokens into a square grid"
            f = f.transpose(1, 2).reshape(b, c, side, side)
        return f

    def forward_head(self, f: torch.Tensor) -> ModelOutput:
        b, c, h, w = f.shape
        a = torch.softmax(self.attn(f).float().flatten(1), dim=1)  # (B, h*w), fp32 for a stable softmax
        pooled = torch.bmm(f.flatten(2).float(), a.unsqueeze(2)).squeeze(2).to(f.dtype)  # (B, C)
        logits = self.fc(self.drop(pooled))
        return ModelOutput(logits, a.view(b, h, w), pooled)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.forward_head(self.forward_features(x))


def create_model(config: ModelConfig, pretrained: bool = False) -> LesionClassifier:
    """Build a classifier; ``pretrained`` loads the backbone weights from the pip packages of ``dermo.pretrained``."""
    model = LesionClassifier(config)
    if pretrained:
        from .pretrained import load_pretrained

        load_pretrained(model.backbone, config.backbone)
        logger.info("loaded pretrained weights into %s", config.backbone)
    return model


def load_model(path: str, **kwargs) -> LesionClassifier:
    """Load a saved classifier (local folder or Hub id) strictly: every tensor must match."""
    return LesionClassifier.from_pretrained(path, strict=True, **kwargs)


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, config: ModelConfig, batch_size: int = 64,
                   tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and attention maps for uint8 images (N, S, S, 3) already resized to ``config.img_size``.

    Normalisation is the same as ``dermo.data.normalize``. With ``tta`` the logits are averaged over the identity,
    horizontal and vertical flips (the attention map is the identity view's). Runs on the model's device.
    """
    dev = next(model.parameters()).device
    mean = torch.tensor(config.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=dev).view(1, 3, 1, 1)
    logits, atts = [], []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size].to(dev, non_blocking=True).permute(0, 3, 1, 2).float().div_(255)
        x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
        out = model(x)
        lg = out.logits.float()
        if tta:
            lg = (lg + model(x.flip(3)).logits.float() + model(x.flip(2)).logits.float()) / 3
        logits.append(lg.cpu())
        atts.append(out.attention.float().cpu())
    return torch.cat(logits), torch.cat(atts)
