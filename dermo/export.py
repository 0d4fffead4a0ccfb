"""ONNX export, simplification, int8 quantization, parity checks and the shipped bundle.

One ONNX graph per model: input ``pixel_values`` (B, 3, S, S) float32, normalised by the model's mean/std; outputs
``logits`` (B, 2), ``attention`` (B, h, w) and ``embedding`` (B, C), batch axis dynamic. ``embedding`` is an addition
to the two outputs of issue 6: the app's out-of-distribution check needs the pooled features.

Pipeline (``export_bundle``, CLI ``python -m train.export``):

1. ``export_onnx``: ``torch.onnx.export`` (TorchScript exporter, opset 17: a plain graph of Conv/Clip/Softmax/MatMul/
   Gemm that every runtime and quantizer knows), then onnxslim, ``onnx.checker``, saved as ONE file (no
   ``.onnx.data``).
2. ``check_parity``: max |ORT - PyTorch| per output on real images.
3. ``quantize_dynamic_int8`` (the published DermoHelper's method, kept as the baseline) and ``quantize_static_int8``
   (QDQ, per-channel int8 weights, uint8 activations: the x86 VNNI fast path; int8 activations measured 4x slower
   here), calibrated on training images after ``quant_pre_process`` with percentile ranges (kept the fp32 band
   best on the MAG-KD student: 97.4 % of validation images vs 96.4 % minmax, 95.8 % entropy); the attention head
   (1x1 conv, softmax, pooling matmul, classifier) stays fp32 by default: it costs ~nothing and its outputs are what
   users see.
   ``store_weights_fp16`` is a size-only variant (``fp16w``): weights stored fp16, computed in fp32.
4. ``choose_variant``: validation AUROC first (a variant qualifies when it is within ``auroc_tolerance`` of fp32 and
   keeps the fp32 band on >= ``min_band_agreement`` of images), batch-1 latency second, file size third.
5. ``write_bundle``: ``model.onnx`` + ``config.json`` (every ``ModelConfig`` field, so calibration travels, plus
   ``sha256``, ``onnx_variant``, ``source_model``, ``parity``, ``variants``); the same config is stored in the ONNX
   ``metadata_props`` under ``dermohelper_config``. ``dermo.inference.Predictor`` loads the folder and checks the hash.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST, ModelConfig

logger = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("logits", "attention", "embedding")
VARIANTS = ("fp32", "fp16w", "dynamic", "static")  # fp16w: fp16-stored weights, fp32 compute
METADATA_KEY = "dermohelper_config"
# config.json keys written by the export itself (never carried over from the source folder)
RESERVED_KEYS = ("sha256", "onnx_variant", "source_model", "source_sha256", "source_version", "opset", "parity",
                 "variants", "selection", "quantization")
DEFAULT_OPSET = 17
HEAD_SCOPE = "/attn/"  # TorchScript exporter node names follow module paths: the attention conv is ".../attn/Conv"


# ------------------------------------------------------------------------------------------------------------ export
def export_onnx(model, path: str | Path, opset: int = DEFAULT_OPSET, simplify: bool = True) -> Path:
    """Export a ``LesionClassifier`` to one self-contained ONNX file; returns the path.

    The graph is traced at batch 2 with the batch axis marked dynamic, simplified with onnxslim (folds BatchNorm
    and constants) and validated with ``onnx.checker`` (full check, with shape inference).
    """
    import onnx
    import torch

    class _Outputs(torch.nn.Module):  # NamedTuple -> plain tuple, in OUTPUT_NAMES order
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            o = self.m(pixel_values)
            return o.logits, o.attention, o.embedding

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    size = model.config.img_size
    dummy = torch.randn(2, 3, size, size)
    wrapper = _Outputs(model).eval()
    with torch.no_grad():
        torch.onnx.export(wrapper, (dummy,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          dynamic_axes={n: {0: "batch"} for n in (INPUT_NAME, *OUTPUT_NAMES)},
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(path))
    if simplify:
        import onnxslim

        proto = onnxslim.slim(proto)
    proto.producer_name = "dermohelper"
    onnx.checker.check_model(proto, full_check=True)
    save_onnx(proto, path)
    logger.info("exported %s (%d nodes, %.1f MB)", path, len(proto.graph.node), path.stat().st_size / 1e6)
    return path


def save_onnx(proto, path: str | Path) -> Path:
    """Save as one file, weights inside (a model under 2 GB never needs ``.onnx.data``)."""
    import onnx

    path = Path(path)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    stray = path.with_name(path.name + ".data")
    if stray.exists():
        stray.unlink()
    return path


def head_nodes(onnx_path: str | Path) -> list[str]:
    """Names of the attention head's nodes: the ``attn`` 1x1 conv and everything computed from it (softmax,
    pooling matmul, classifier). Found through the graph, so it survives renaming by optimizers."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    head: list[str] = []
    tainted: set[str] = set()
    for n in graph.node:  # ONNX nodes are stored in topological order
        if HEAD_SCOPE in n.name or any(i in tainted for i in n.input):
            head.append(n.name)
            tainted.update(n.output)
    return head


# ---------------------------------------------------------------------------------------------------------- running
def make_session(onnx_path: str | Path, num_threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session, x: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    """float32 (N, 3, S, S) -> {output name: array (N, ...)} in batches."""
    names = [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(x), batch_size):
        for n, v in zip(names, session.run(None, {INPUT_NAME: np.ascontiguousarray(x[i:i + batch_size],
                                                                                   np.float32)})):
            parts[n].append(v)
    return {n: np.concatenate(v) for n, v in parts.items()}


def run_torch(model, x: np.ndarray, batch_size: int = 32) -> dict[str, np.ndarray]:
    import torch

    model = model.eval()
    out: dict[str, list[np.ndarray]] = {n: [] for n in OUTPUT_NAMES}
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            o = model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], np.float32)))
            for n in OUTPUT_NAMES:
                out[n].append(getattr(o, n).float().numpy())
    return {n: np.concatenate(v) for n, v in out.items()}


def check_parity(model, onnx_path: str | Path, x: np.ndarray,
                 ref: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Max absolute difference ORT vs PyTorch for each output on images ``x`` (N, 3, S, S); ``ref`` = the PyTorch
    outputs on ``x`` when already computed (``run_torch``)."""
    ref = run_torch(model, x) if ref is None else ref
    got = run_onnx(make_session(onnx_path), x)
    out = {f"{n}_max_abs_diff": float(np.max(np.abs(ref[n] - got[n]))) for n in OUTPUT_NAMES}
    out["images"] = int(len(x))
    return out


# The exported fp32 graph against PyTorch (max |difference| over the parity images). Measured for the shipped student:
# 1.4e-6 on logits. A failure means a wrong export (an unsupported op, a changed model), not rounding.
FP32_PARITY_TOL = {"logits": 1e-3, "attention": 1e-4}


def check_fp32_parity(parity: dict[str, float]) -> None:
    """Refuse an fp32 ONNX graph that disagrees with PyTorch beyond ``FP32_PARITY_TOL``."""
    bad = {n: parity[f"{n}_max_abs_diff"] for n, tol in FP32_PARITY_TOL.items()
           if not parity[f"{n}_max_abs_diff"] <= tol}  # NaN fails too
    if bad:
        raise RuntimeError(f"the exported fp32 ONNX graph disagrees with the PyTorch model on {parity['images']} test "
                           f"images (max |difference| {bad}, tolerance {FP32_PARITY_TOL}); nothing was written")


def latency(session, x1: np.ndarray, runs: int = 30, warmup: int = 3) -> dict[str, float]:
    """Batch latency of ``session`` on input ``x1`` in milliseconds: median and p90 over ``runs``."""
    feed = {INPUT_NAME: np.ascontiguousarray(x1, np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))]}


# ------------------------------------------------------------------------------------------------------ quantization
def quantize_dynamic_int8(src: str | Path, dst: str | Path) -> Path:
    """Dynamic int8 (weights int8, activations quantized at run time): the published method, kept as baseline."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8)
    return Path(dst)


def store_weights_fp16(src: str | Path, dst: str | Path, min_elements: int = 256) -> Path:
    """Store float weights as float16 behind a ``Cast`` to float32: half the file, fp32 compute.

    ONNX Runtime folds ``Cast(initializer)`` when the session is created, so the graph it runs is the fp32 graph
    with weights rounded to fp16 (relative error <= 2**-11): a size-only variant with fp32 speed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(src))
    graph = proto.graph
    keep, casts = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size >= min_elements:
            keep.append(numpy_helper.from_array(arr.astype(np.float16), init.name + "_fp16"))
            casts.append(helper.make_node("Cast", [init.name + "_fp16"], [init.name], to=TensorProto.FLOAT,
                                          name=init.name + "_to_fp32"))
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return save_onnx(proto, dst)


class _ArrayReader:
    """``CalibrationDataReader`` over an in-memory float32 array, ``batch_size`` images per call."""

    def __init__(self, x: np.ndarray, batch_size: int = 16):
        self.batches = [np.ascontiguousarray(x[i:i + batch_size], np.float32) for i in range(0, len(x), batch_size)]
        self.i = 0

    def get_next(self):
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {INPUT_NAME: self.batches[self.i - 1]}

    def rewind(self):
        self.i = 0


def quantize_static_int8(src: str | Path, dst: str | Path, calib: np.ndarray, per_channel: bool = True,
                         keep_head_fp32: bool = True, exclude: Sequence[str] = (), method: str = "minmax",
                         activation: str = "uint8", only: Sequence[str] | None = None,
                         calibration_cache: str | Path | None = None) -> Path:
    """Static QDQ int8 calibrated on ``calib`` (N, 3, S, S) preprocessed training images.

    ``quant_pre_process`` (shape inference + ORT graph fusion) runs first. Weights are symmetric int8 (per output
    channel by default); activations are ``uint8`` (asymmetric; the u8s8 VNNI kernels of x86 CPUs) or ``int8``.
    ``keep_head_fp32`` leaves the attention head (``head_nodes``) unquantized; ``exclude`` adds node names; ``only``
    quantizes just these nodes (names of the pre-processed graph, ``quantizable_nodes``).
    ``method``: ``minmax``, ``percentile`` (99.999) or ``entropy``. ``calibration_cache``: a JSON file of the
    calibrated ranges, written by the first call and read by later ones (same ``src``, ``calib`` and ``method``), so
    a search over which nodes to quantize calibrates once.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, \
        quantize_static

    if len(calib) == 0:
        raise ValueError("static quantization needs calibration images; pass --calib-images N with N > 0")
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method {method!r}: use one of {sorted(methods)}")
    if activation not in ("uint8", "int8"):
        raise ValueError(f"activation {activation!r}: use uint8 or int8")
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        excluded = list(exclude) + (head_nodes(pre) if keep_head_fp32 else [])
        extra: dict[str, Any] = {"ActivationSymmetric": activation == "int8", "WeightSymmetric": True}
        if method == "percentile":
            extra["CalibPercentile"] = 99.999
        quantize_static(str(pre), str(dst), _ArrayReader(calib), quant_format=QuantFormat.QDQ,
                        per_channel=per_channel,
                        activation_type=QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded or None,
                        nodes_to_quantize=list(only) if only is not None else None,
                        calibrate_method=methods[method], extra_options=extra,
                        calibration_cache_path=str(calibration_cache) if calibration_cache else None)
    logger.info("static int8 %s: %d calibration images, %d nodes kept fp32", dst, len(calib), len(excluded))
    return dst


def quantizable_nodes(src: str | Path, keep_head_fp32: bool = True) -> list[str]:
    """Names of the nodes that ``quantize_static_int8`` may quantize in ``src`` (after the same
    ``quant_pre_process``), in graph order: those of the op types ONNX Runtime's static quantizer handles by default
    (Conv, Gemm, MatMul, Add, Clip, ...); the attention head's are left out when it stays fp32. Excluding all of
    them leaves the graph fp32."""
    import onnx
    from onnxruntime.quantization import quant_pre_process
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    ops = set(QDQRegistry) | set(QLinearOpsRegistry)
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        head = set(head_nodes(pre)) if keep_head_fp32 else set()
        graph = onnx.load(str(pre)).graph
    return [n.name for n in graph.node if n.op_type in ops and n.name not in head]


# ------------------------------------------------------------------------------------------------------------- data
def load_images(cfg: ModelConfig, split: str, limit: int = 0, seed: int | None = None,
                data_dir: str | Path = DEFAULT_DATA_DIR, manifest: str | Path = DEFAULT_MANIFEST,
                num_workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, 3, S, S), y int (N,)) of a split through the one preprocessing.

    ``limit`` > 0 keeps N images: the first N, or a random sample of N when ``seed`` is given (calibration).
    """
    from .data import decode_images, load_split, normalize

    df = load_split(data_dir, split, manifest)
    if limit and limit < len(df):
        df = df.sample(n=limit, random_state=seed).sort_index() if seed is not None else df.head(limit)
    arr = decode_images(df["path"], cfg.img_size, num_workers=num_workers)
    return normalize(arr, cfg.mean, cfg.std), df["label"].to_numpy().astype(int)


def probabilities(logits: np.ndarray, cfg: ModelConfig) -> np.ndarray:
    """Calibrated P(malignant), exactly as ``Predictor`` computes it."""
    from .metrics import apply_temperature

    return apply_temperature(logits, cfg.temperature, cfg.logit_bias)


def score_variant(logits: np.ndarray, ref_logits: np.ndarray, y: np.ndarray, cfg: ModelConfig) -> dict[str, Any]:
    """AUROC, band agreement with the reference (fp32) logits and the largest probability change."""
    from .metrics import assign_bands, auroc

    p, p_ref = probabilities(logits, cfg), probabilities(ref_logits, cfg)
    same = assign_bands(p, cfg.band_low, cfg.band_high) == assign_bands(p_ref, cfg.band_low, cfg.band_high)
    out: dict[str, Any] = {"band_agreement": float(same.mean()),
                           "max_prob_diff": float(np.max(np.abs(p - p_ref))),
                           "logits_max_abs_diff": float(np.max(np.abs(logits - ref_logits)))}
    out["auroc"] = float(auroc(y, p)) if len(set(y.tolist())) == 2 else None
    return out


def choose_variant(results: dict[str, dict[str, Any]], auroc_tolerance: float = 0.005,
                   min_band_agreement: float = 0.99, latency_slack: float = 0.10) -> str:
    """AUROC first, latency second, size third.

    A variant qualifies when its validation AUROC is within ``auroc_tolerance`` of fp32's and it keeps the fp32 band
    on at least ``min_band_agreement`` of the images (fp32 always qualifies). Among those, the variants within
    ``latency_slack`` of the fastest batch-1 median (timing noise on a shared CPU) go to the smallest file.
    """
    ref = results["fp32"].get("auroc")

    def ok(name: str) -> bool:
        r = results[name]
        if name == "fp32":
            return True
        if r.get("band_agreement", 0.0) < min_band_agreement:
            return False
        return ref is None or (r.get("auroc") is not None and r["auroc"] >= ref - auroc_tolerance)

    eligible = [n for n in results if ok(n)]
    fastest = min(results[n]["latency_b1"]["median_ms"] for n in eligible)
    near = [n for n in eligible if results[n]["latency_b1"]["median_ms"] <= fastest * (1 + latency_slack)]
    return min(near, key=lambda n: (results[n].get("size_mb", 0.0), results[n]["latency_b1"]["median_ms"]))


# ----------------------------------------------------------------------------------------------------------- bundle
def bundle_config(cfg: ModelConfig, **extra: Any) -> dict[str, Any]:
    d = asdict(cfg)
    d.update(extra)
    return json.loads(json.dumps(d))  # tuples -> lists, checks it is JSON


def write_bundle(onnx_src: str | Path, out_dir: str | Path, cfg: ModelConfig, **extra: Any) -> dict[str, Any]:
    """Copy ``onnx_src`` to ``out_dir/model.onnx`` with the config in its metadata, write ``config.json`` (config +
    ``extra`` + ``sha256`` of the final file). Returns the written config."""
    import onnx

    from .inference import CONFIG_NAME, ONNX_NAME, sha256_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conf = bundle_config(cfg, **extra)
    proto = onnx.load(str(onnx_src))
    del proto.metadata_props[:]
    meta = proto.metadata_props.add()
    meta.key, meta.value = METADATA_KEY, json.dumps(conf, sort_keys=True)
    dst = save_onnx(proto, out_dir / ONNX_NAME)
    conf["sha256"] = sha256_file(dst)
    (out_dir / CONFIG_NAME).write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    logger.info("wrote %s (%.2f MB, sha256 %s)", dst, dst.stat().st_size / 1e6, conf["sha256"][:12])
    return conf


def copy_side_files(extra: dict[str, Any], src_dir: Path, out_dir: str | Path) -> list[str]:
    """Copy files that carried config keys name (e.g. ``{"ood": {"file": "ood.npz"}}``) next to the bundle."""
    copied = []
    for value in extra.values():
        name = value.get("file") if isinstance(value, dict) else None
        if isinstance(name, str) and (src_dir / name).is_file() and Path(name).name == name:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            shutil.copy(src_dir / name, Path(out_dir) / name)
            copied.append(name)
    return copied


def read_metadata_config(onnx_path: str | Path) -> dict[str, Any]:
    """The config stored in an exported file's ``metadata_props`` (``{}`` if none)."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(onnx_path), load_external_data=False).metadata_props}
    return json.loads(props[METADATA_KEY]) if METADATA_KEY in props else {}


def export_bundle(model_dir: str | Path, out_dir: str | Path, variant: str = "auto", calib_images: int = 256,
                  val_images: int = 0, parity_images: int = 64, data_dir: str | Path = DEFAULT_DATA_DIR,
                  manifest: str | Path = DEFAULT_MANIFEST, keep_head_fp32: bool = True, per_channel: bool = True,
                  calib_method: str = "percentile", auroc_tolerance: float = 0.005, min_band_agreement: float = 0.99,
                  latency_runs: int = 30, num_threads: int = 1, seed: int = 0,
                  keep_variants: str | Path | None = None, version: str | None = None) -> dict[str, Any]:
    """Export ``model_dir`` (``save_pretrained`` layout) into ``out_dir`` (model.onnx + config.json).

    ``variant``: ``fp32``, ``fp16w``, ``dynamic``, ``static`` or ``auto`` (build all, score them on ``val_images``
    validation images (0 = all), pick with ``choose_variant``). Returns the written config, whose ``variants``
    key holds every candidate's validation AUROC, band agreement, size and batch-1 latency.
    ``keep_variants``: a folder to keep every candidate ``.onnx`` in (benchmarks reuse them).
    ``version``: the bundle's version (default: the trained model's; the bundle keeps that as ``source_version``).
    Replacing a bundle in ``out_dir`` by one from other weights under the same name and version is refused: the
    app, the API and the result card tell models apart by name and version.
    """
    from .models import load_model

    if variant not in (*VARIANTS, "auto"):
        raise ValueError(f"variant {variant!r}: use auto, fp32, fp16w, dynamic or static")
    if variant in ("static", "auto") and calib_images <= 0:
        raise ValueError("static quantization needs --calib-images N with N > 0")
    from .inference import read_config, sha256_file

    model_dir = Path(model_dir)
    model = load_model(str(model_dir)).eval()
    # config.json is the source of truth: calibration (and e.g. the OOD check's ``ood`` key) were written there
    cfg, source_extra = read_config(model_dir)
    source_version = cfg.version
    if version:
        cfg = dataclasses.replace(cfg, version=str(version))
    check_new_version(out_dir, cfg, sha256_file(model_dir / "model.safetensors"))
    carried = {k: v for k, v in source_extra.items() if k not in RESERVED_KEYS}
    build = list(VARIANTS) if variant == "auto" else sorted({"fp32", variant}, key=VARIANTS.index)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = {"fp32": export_onnx(model, tmp / "fp32.onnx")}
        x_test, _ = load_images(cfg, "test", parity_images, data_dir=data_dir, manifest=manifest)
        ref_test = run_torch(model, x_test)  # the PyTorch reference, once for every variant checked against it
        parity = check_parity(model, files["fp32"], x_test, ref_test)
        parity["split"] = "test"
        logger.info("parity fp32 vs torch on %d test images: %s", len(x_test), parity)
        check_fp32_parity(parity)  # every variant is scored against this graph: it must be the PyTorch model
        if "fp16w" in build:
            files["fp16w"] = store_weights_fp16(files["fp32"], tmp / "fp16w.onnx")
        if "dynamic" in build:
            files["dynamic"] = quantize_dynamic_int8(files["fp32"], tmp / "dynamic.onnx")
        if "static" in build:
            x_cal, _ = load_images(cfg, "train", calib_images, seed=seed, data_dir=data_dir, manifest=manifest)
            files["static"] = quantize_static_int8(files["fp32"], tmp / "static.onnx", x_cal,
                                                   per_channel=per_channel, keep_head_fp32=keep_head_fp32,
                                                   method=calib_method)
        x_val, y_val = load_images(cfg, "validation", val_images, data_dir=data_dir, manifest=manifest)
        results: dict[str, dict[str, Any]] = {}
        outs = {}
        sessions = {name: make_session(files[name], num_threads) for name in build}
        for name in build:
            outs[name] = run_onnx(sessions[name], x_val)
            results[name] = score_variant(outs[name]["logits"], outs["fp32"]["logits"], y_val, cfg)
            results[name]["size_mb"] = files[name].stat().st_size / 1e6
            if name != "fp32":
                results[name]["attention_max_abs_diff"] = float(np.max(np.abs(outs[name]["attention"]
                                                                              - outs["fp32"]["attention"])))
        # interleaved rounds, so load from other processes slows every variant alike
        times: dict[str, list[float]] = {name: [] for name in build}
        rounds = 3
        for _ in range(rounds):
            for name in build:
                times[name].append(latency(sessions[name], x_val[:1], runs=max(1, latency_runs // rounds))
                                   ["median_ms"])
        for name in build:
            results[name]["latency_b1"] = {"median_ms": statistics.median(times[name]), "threads": num_threads}
            logger.info("%s: %s", name, results[name])
        chosen = choose_variant(results, auroc_tolerance, min_band_agreement) if variant == "auto" else variant
        if keep_variants:
            Path(keep_variants).mkdir(parents=True, exist_ok=True)
            for name, f in files.items():
                shutil.copy(f, Path(keep_variants) / f"{name}.onnx")
        shipped_parity = dict(parity)
        if chosen != "fp32":
            shipped_parity = check_parity(model, files[chosen], x_test, ref_test)
            shipped_parity["split"] = "test"
        selection = {"split": "validation", "images": int(len(y_val)), "auroc_tolerance": auroc_tolerance,
                     "min_band_agreement": min_band_agreement, "latency_threads": num_threads,
                     "rule": "variants within auroc_tolerance of fp32 validation AUROC and with >= min_band_agreement "
                             "of validation images in the fp32 band qualify; of those within 10% of the fastest "
                             "batch-1 median, the smallest file ships"}
        quant = {"calib_images": calib_images if "static" in build else 0, "calib_split": "train",
                 "per_channel": per_channel, "keep_head_fp32": keep_head_fp32, "calib_method": calib_method,
                 "seed": seed, "format": "QDQ", "activations": "uint8", "weights": "int8"}
        copy_side_files(carried, model_dir, out_dir)
        return write_bundle(files[chosen], out_dir, cfg, **carried, onnx_variant=chosen, source_model=str(model_dir),
                            source_sha256=sha256_file(model_dir / "model.safetensors"),
                            source_version=source_version,
                            opset=DEFAULT_OPSET, parity={"fp32": parity, chosen: shipped_parity},
                            variants=results, selection=selection, quantization=quant)


def check_new_version(out_dir: str | Path, cfg: ModelConfig, source_sha256: str) -> None:
    """Refuse to replace the bundle in ``out_dir`` with other weights under its own name and version."""
    path = Path(out_dir) / "config.json"
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    same_id = old.get("name") == cfg.name and str(old.get("version")) == str(cfg.version)
    if same_id and old.get("source_sha256") and old["source_sha256"] != source_sha256:
        raise ValueError(f"{out_dir} holds {cfg.name} {cfg.version} exported from other weights "
                         f"(source sha256 {old['source_sha256'][:12]}...): give the new model its own version "
                         f"(train.export --version, ship.sh VERSION=), e.g. one above {cfg.version}")


def image_batches(x: np.ndarray, sizes: Iterable[int]) -> dict[int, np.ndarray]:
    """Inputs of each batch size cut from (and tiled over) ``x``."""
    out = {}
    for b in sizes:
        reps = -(-b // len(x))
        out[b] = np.ascontiguousarray(np.concatenate([x] * reps)[:b], np.float32)
    return out
