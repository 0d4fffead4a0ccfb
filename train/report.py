"""Training and model reports: reports/training.md + .json and reports/models.md + .json, from the trained runs.

    python -m train.report                         # runs/cpu/{teacher,baseline,magkd}/best + dermo/assets
    python -m train.report --runs runs/gpu --note "1x H200, 224 px, 30 epochs"

training.md (issue 3): teacher, baseline student and MAG-KD student on the TEST split, at threshold 0.5 and at the
operating point chosen on VALIDATION (highest threshold with validation sensitivity >= 0.90): AUROC with a 95%
bootstrap interval over lesions, sensitivity, specificity, precision, F1, accuracy (each with its interval), beside the
seed's published figures; train img/s and minutes from each run's metrics.json; the run's config. Probabilities here
are the models as trained (softmax, temperature 1).

models.md (issue 4 item 5): the same three models plus the shipped int8 ONNX (dermo/assets) on the test split in one
table, each at its calibration: the values in its config.json when it is calibrated (the shipped model carries the
MAG-KD student's, fitted by ``dermo.evaluate --calibrate``), otherwise fitted here on validation the same way. The
full evaluation of each (metrics.json, report.md, plots) goes to reports/evaluation/<model>-test/.

Every figure comes from ``dermo.evaluate`` / ``dermo.metrics``: the same code as ``python -m dermo.evaluate``.

The whole chain, in order (raw logits are cached in runs/cpu/logits_cache, so nothing is computed twice)::

    bash train/cpu_reduced.sh                                    # -> runs/cpu/{teacher,baseline,magkd}/best
    python -m dermo.evaluate --model runs/cpu/magkd/best --data ../shared/data/ham10000 --split validation \
        --calibrate --out reports/evaluation/magkd-validation --cache runs/cpu/logits_cache
    python -m train.export ...                                   # calibrated student -> dermo/assets (int8 ONNX)
    python -m dermo.evaluate --model dermo/assets --data ../shared/data/ham10000 --split test \
        --out reports/evaluation/shipped-test --cache runs/cpu/logits_cache
    python -m train.report --runs runs/cpu                       # reports/training.*, models.*, evaluation/*-test
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dermo import metrics as M
from dermo.config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST, ModelConfig
from dermo.evaluate import (CALIBRATION_KEYS, OPERATING_SENSITIVITY, cached_logits, evaluate_logits,
                            fit_calibration, load_labelled, open_predictor, write_outputs)
from dermo.inference import BUNDLED_MODEL_DIR

logger = logging.getLogger("train.report")

RUNS = (("teacher", "Teacher"), ("baseline", "Baseline student (no distillation)"),
        ("magkd", "MAG-KD student"))
PUBLISHED = {
    "source": "the seed DermoHelper's published figures",
    "student_auroc": 0.954,
    "teacher_accuracy": 0.8014,
    "always_benign_accuracy_on_their_test_set": 0.804,
    "caveat": "probably measured on a leaky image-level split (images of one lesion on both sides); its teacher's "
              "80.14% accuracy is below the 80.4% that always answering 'benign' scores on its own test set",
}
ISSUE3_TARGETS = {"magkd_auroc": 0.94, "magkd_sensitivity": 0.90, "magkd_specificity": 0.80,
                  "distillation_gain": 0.02}
DEFAULT_NOTE = ("runs of unrecorded origin (no --note was given: name the script, machine and budget that "
                "trained them)")


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_info(run_dir: Path) -> dict[str, Any]:
    """Config and training cost of one run folder (``best/`` + ``metrics.json`` + ``history.json``). The run's
    files are read from ``best/`` when the run folder lacks them: a committed weights folder (``models/``) holds all
    of them, so ``best`` may be a link to one."""
    rc = _read_json(run_dir / "best" / "run_config.json") or _read_json(run_dir / "run_config.json")
    met = _read_json(run_dir / "metrics.json") or _read_json(run_dir / "best" / "metrics.json")
    hist = _read_json(run_dir / "history.json") or _read_json(run_dir / "best" / "history.json") or []
    model, train, distill = rc.get("model", {}), rc.get("train", {}), rc.get("distill", {})
    img_s = met.get("train_img_per_s") or (float(np.mean([h["train_img_per_s"] for h in hist])) if hist else None)
    secs = met.get("train_seconds")
    if secs is None and hist:
        secs = float(sum(h.get("train_seconds", 0.0) for h in hist))
    return {"backbone": model.get("backbone"), "img_size": model.get("img_size"), "epochs": train.get("epochs"),
            "epochs_run": met.get("epochs_run", len(hist) or None), "best_epoch": met.get("best_epoch"),
            "pretrained": train.get("pretrained"), "batch_size": train.get("batch_size"), "lr": train.get("lr"),
            "seed": train.get("seed"), "tta": bool(train.get("tta", False)),
            "freeze_backbone": bool(train.get("freeze_backbone", False)),
            "teacher_cache": distill.get("teacher_cache") or None,
            "distill": ({**{k: distill[k] for k in ("teacher", "alpha", "beta", "gamma", "kd_temperature")},
                         "attention_teacher": distill.get("attention_teacher", "")}
                        if distill.get("teacher") else None),
            "train_img_per_s": img_s, "train_minutes": None if secs is None else secs / 60.0,
            "validation_auroc_in_training": (met.get("validation") or {}).get("auroc")}


def _groups(df) -> np.ndarray | None:
    same = (df["lesion_id"].astype(str) == df["image_id"].astype(str)).all()
    return None if same else df["lesion_id"].astype(str).to_numpy()


def training_entry(y_val, logits_val, y_test, logits_test, df_test, n_boot: int, seed: int = 0) -> dict[str, Any]:
    """Test metrics at 0.5 and at the validation-chosen point (sensitivity >= 0.90), temperature 1."""
    p_val = M.apply_temperature(logits_val, 1.0)
    thr = M.threshold_for_sensitivity(y_val, p_val, OPERATING_SENSITIVITY)
    val_conf = M.confusion_at(y_val, p_val, thr)
    s = M.summarize(y_test, M.apply_temperature(logits_test, 1.0), thr, groups=_groups(df_test), n_boot=n_boot,
                    seed=seed)
    keep = ("threshold", *M.CONFUSION_METRICS, *(f"{k}_ci" for k in M.CONFUSION_METRICS), "tp", "fp", "tn", "fn")
    return {"n": s["n"], "n_malignant": s["n_malignant"], "auroc": s["auroc"], "auroc_ci": s["auroc_ci"],
            "validation": {"auroc": M.auroc(y_val, p_val), "threshold": thr,
                           "sensitivity": val_conf["sensitivity"], "specificity": val_conf["specificity"]},
            "operating_point": {k: s[k] for k in keep}, "at_0.5": s["at_0.5"]}


def _pct(v, digits: int = 1) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.{digits}f}"


def _goal(v, target: str, digits: int = 1, scale: float = 100.0) -> str:
    """A value in a column with issue 4's ``target`` (dermo.evaluate.TARGETS): not rounded onto the other side of
    its goal (a High-band rate of 69.96% is not shown as 70.0)."""
    from dermo.evaluate import TARGET_OPS, TARGETS

    return M.format_vs_goal(v, TARGETS[target], TARGET_OPS[target], digits=digits, scale=scale)


def _num(v, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def _ci(v, ci, pct: bool = True) -> str:
    f = (lambda x: _pct(x)) if pct else (lambda x: "n/a" if x is None else f"{x:.3f}")
    return f(v) + (f" [{f(ci[0])}, {f(ci[1])}]" if ci else "")


def _init_label(backbone: str | None) -> str:
    from dermo.pretrained import PRETRAINED_SOURCES

    src = PRETRAINED_SOURCES.get(backbone or "")
    return src.label if src else "ImageNet"


def render_training(report: dict[str, Any]) -> str:
    models = report["models"]
    lines = ["# Training report", "",
             f"**Source: {report['note']}.** Every figure below is on the lesion-grouped **test** split of HAM10000 "
             f"({report['test']['n']} images, {report['test']['n_malignant']} malignant), written by "
             "`python -m train.report`. 95% intervals: percentile bootstrap over lesions "
             f"({report['n_boot']} resamples). Probabilities as trained (temperature 1). Sensitivity, specificity, "
             "precision, F1 and accuracy are in %.", ""]
    for key, title, rule in (("operating_point", "At the operating point chosen on validation",
                              "highest threshold with validation sensitivity >= 0.90"),
                             ("at_0.5", "At threshold 0.5", "p(malignant) >= 0.5")):
        lines += [f"## {title} ({rule})", "",
                  "| model | backbone @ px | epochs | TTA | test AUROC | threshold | sensitivity | specificity | "
                  "precision | F1 | accuracy |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in models.items():
            b, info = m[key], {k: ("n/a" if v is None else v) for k, v in m["run"].items()}
            epochs = (info["epochs_run"] if "members" in m["run"] else f"{info['epochs_run']}/{info['epochs']}")
            lines.append(f"| {m['title']} | {info['backbone']} @ {info['img_size']} | {epochs}"
                         f" | {'flips' if info['tta'] else 'no'} | "
                         f"{_ci(m['auroc'], m['auroc_ci'], False)}"
                         f" | {b['threshold']:.4f} | " + " | ".join(_ci(b[k], b[f'{k}_ci'])
                                                                    for k in M.CONFUSION_METRICS) + " |")
        lines.append("")
    lines += ["## Training cost and configuration", "",
              "| model | backbone | init | img size | epochs (best) | batch | lr | distillation | train img/s | "
              "train minutes | validation AUROC (in training) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, m in models.items():
        i = {k: ("n/a" if v is None else v) for k, v in m["run"].items()}
        i.update({k: m["run"][k] for k in ("train_img_per_s", "train_minutes", "validation_auroc_in_training",
                                            "distill")})
        teachers = " + ".join(Path(t.strip()).parent.name
                              for t in (i["distill"] or {}).get("teacher", "").split(","))
        dist = "-" if not i["distill"] else (f"from {teachers}: alpha/beta/gamma "
                                             f"{i['distill']['alpha']}/{i['distill']['beta']}/{i['distill']['gamma']},"
                                             f" T={i['distill']['kd_temperature']}")
        init = {True: " + ".join(_init_label(b) for b in str(m["run"]["backbone"]).split(" + ")),
                False: "scratch"}.get(m["run"]["pretrained"], "n/a")
        if m["run"].get("freeze_backbone"):
            init += ", frozen (head trained on cached features)"
        if i["distill"] and i["distill"].get("attention_teacher"):
            dist += f"; attention targets: {i['distill']['attention_teacher']} (dermo.saliency)"
        if m["run"].get("teacher_cache") and i["distill"]:
            dist += " (teacher outputs cached, maps warped with the augmentation)"
        lines.append(f"| {m['title']} | {i['backbone']} | {init} | "
                     f"{i['img_size']} | {i['epochs_run']} ({i['best_epoch']}) | {i['batch_size']} | {i['lr']} | "
                     f"{dist} | "
                     f"{_num(i['train_img_per_s'], 1)} | {_num(i['train_minutes'], 1)} | "
                     f"{_num(i['validation_auroc_in_training'], 3)} |")
    pub = report["published"]
    lines += ["", "## Beside the published DermoHelper figures", "",
              "| | published DermoHelper | this report (test split) |", "|---|---|---|",
              f"| student AUROC | {pub['student_auroc']:.3f} | "
              + (_ci(models['magkd']['auroc'], models['magkd']['auroc_ci'], False) if 'magkd' in models else 'n/a')
              + " (MAG-KD student) |",
              f"| teacher accuracy | {_pct(pub['teacher_accuracy'], 2)}% | "
              + (f"{_pct(models['teacher']['at_0.5']['accuracy'])}% at 0.5, "
                 f"{_pct(models['teacher']['operating_point']['accuracy'])}% at the operating point"
                 if 'teacher' in models else 'n/a') + " |",
              f"| accuracy of always answering 'benign' | {_pct(pub['always_benign_accuracy_on_their_test_set'])}% "
              f"| {_pct(report['test']['always_benign_accuracy'])}% |", "",
              f"The published figures are {pub['caveat']}. Accuracy is therefore not a useful headline here; AUROC "
              "and sensitivity/specificity at a validation-chosen operating point are. Our split is lesion-grouped "
              "(`dermo/splits/ham10000.csv`), so no lesion is on both sides.", ""]
    t = report["targets"]
    if t:
        lines += ["## Issue 3 targets", "", "| target | value | met |", "|---|---|---|"]
        for k, v in t.items():
            met = "n/a" if v["met"] is None else ("yes" if v["met"] else "**no**")
            lines.append(f"| {v['target']} | {v['value_text']} | {met} |")
        lines.append("")
    dp = report.get("distillation_paired")
    if dp:
        lines += ["## MAG-KD minus baseline, paired", "",
                  f"AUROC difference with a paired percentile bootstrap over lesions ({report['n_boot']} resamples; "
                  "both students scored on each resample). 'share' = fraction of resamples where MAG-KD is above.",
                  "", "| split | difference | 95% interval | share |", "|---|---|---|---|"]
        for split in ("validation", "test"):
            d = dp[split]
            ci = "n/a" if d["ci"] is None else f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
            lines.append(f"| {split} | {d['difference']:+.4f} | {ci} | {d['fraction_a_better']:.2f} |")
        lines.append("")
    lines += [f"Regenerate: `{report['command']}`.", ""]
    return "\n".join(lines)


def issue3_targets(models: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    mk = models.get("magkd")
    if mk:
        op = mk["operating_point"]
        out["magkd_auroc"] = {"target": "MAG-KD student test AUROC >= 0.94", "value": mk["auroc"],
                              "value_text": f"{mk['auroc']:.3f}", "met": mk["auroc"] >= ISSUE3_TARGETS["magkd_auroc"]}
        ok = ((op["sensitivity"] or 0) >= ISSUE3_TARGETS["magkd_sensitivity"]
              and (op["specificity"] or 0) >= ISSUE3_TARGETS["magkd_specificity"])
        out["magkd_operating_point"] = {"target": "sensitivity >= 0.90 with specificity >= 0.80 (validation-chosen)",
                                        "value": [op["sensitivity"], op["specificity"]],
                                        "value_text": f"{_pct(op['sensitivity'])}% / {_pct(op['specificity'])}%",
                                        "met": ok}
    if mk and "teacher" in models:
        d = models["teacher"]["auroc"] - mk["auroc"]
        out["teacher_above_student"] = {"target": "teacher AUROC above the MAG-KD student", "value": d,
                                        "value_text": f"{models['teacher']['auroc']:.3f} vs {mk['auroc']:.3f}",
                                        "met": d > 0}
    if mk and "baseline" in models:
        d = mk["auroc"] - models["baseline"]["auroc"]
        out["distillation_gain"] = {"target": "MAG-KD AUROC >= baseline + 0.02 (same budget and seed)", "value": d,
                                    "value_text": f"{d:+.3f} ({mk['auroc']:.3f} vs {models['baseline']['auroc']:.3f})",
                                    "met": d >= ISSUE3_TARGETS["distillation_gain"]}
    return out


def distillation_paired(magkd: tuple, baseline: tuple, y_val, y_test, df_val, df_test,
                        n_boot: int) -> dict[str, Any]:
    """AUROC(MAG-KD) - AUROC(baseline) on validation and on test, each with a paired lesion-grouped bootstrap
    interval (``dermo.metrics.paired_auroc_difference``): can the split that chooses models tell them apart?"""
    out = {}
    for i, (split, y, df) in enumerate((("validation", y_val, df_val), ("test", y_test, df_test))):
        out[split] = M.paired_auroc_difference(y, M.apply_temperature(magkd[i], 1.0),
                                               M.apply_temperature(baseline[i], 1.0), groups=_groups(df),
                                               n_boot=n_boot)
    return out


def render_models(rows: list[dict[str, Any]], note: str, n_boot: int, command: str) -> str:
    lines = ["# Models on the test split", "",
             f"**Source: {note}.** One row per model, each at its calibration (temperature, operating threshold and "
             "band edges fitted on the validation split; `fitted here` = the folder is not calibrated, so the same "
             "fit was done in memory). Lesion-grouped HAM10000 test split; 95% bootstrap intervals over lesions "
             f"({n_boot} resamples). Full evaluations (plots, subgroups) in `reports/evaluation/<model>-test/`.", "",
             "| model | format | size MiB | AUROC | threshold | sensitivity % | specificity % | ECE before -> after calibration (T, b) |"
             " Low: % of malignant / malignancy rate | High: malignancy rate | calibration |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]
        lo, hi = m["bands"]["low"], m["bands"]["high"]
        lines.append(f"| {r['title']} | {r['format']} | {r['size_mib']:.1f} | {_ci(m['auroc'], m['auroc_ci'], False)} | "
                     f"{m['threshold']:.4f} | {_ci(m['sensitivity'], m['sensitivity_ci'])} | "
                     f"{_ci(m['specificity'], m['specificity_ci'])} | {m['ece']['before']:.3f} -> "
                     f"{m['ece']['after']:.3f} (T={m['temperature']:.2f}, b={m.get('logit_bias', 0.0):.2f}) | "
                     f"{_goal(lo['share_of_malignant'], 'low_share_of_malignant')} / "
                     f"{_goal(lo['malignant_rate'], 'low_malignant_rate')} | "
                     f"{_goal(hi['malignant_rate'], 'high_malignant_rate')} | {r['calibration_source']} |")
    shipped = [r for r in rows if r["name"] == "shipped"]
    lines += ["", "Targets (issue 4, shipped model, test split): ECE after temperature scaling <= 0.03; the Low band "
              "holds <= 3% of malignant images and its malignancy rate is <= 2%; the High band's malignancy rate is "
              ">= 70%.", ""]
    for r in shipped:
        for k, t in r["metrics"]["targets"].items():
            v = t["value"]
            val = "n/a" if v is None else (_goal(v, k, 3, 1.0) if k == "ece_after" else f"{_goal(v, k)}%")
            lines.append(f"- {k}: {val} (goal {t['target']}): "
                         f"{'n/a' if t['met'] is None else ('met' if t['met'] else '**not met**')}"
                         + (f" ({t['reason']})" if t.get("reason") else ""))
    if not shipped:
        lines.append("- the shipped model (dermo/assets/model.onnx) is not exported yet: no row.")
    lines += ["", "DermoHelper is a triage aid, not a diagnosis.", "", f"Regenerate: `{command}`.", ""]
    return "\n".join(lines)


def _teacher_members(teacher: str | None, runs: Path) -> list[Path]:
    """The teacher's model folder(s): ``teacher`` as ``--teacher`` takes it in training (comma = ensemble), or
    ``<runs>/teacher/best``."""
    return [Path(p.strip()) for p in (teacher or "").split(",") if p.strip()] or [runs / "teacher" / "best"]


def _run_logits(best: Path, df_val, df_test, cache_dir, progress: bool):
    """(run info, predictor, validation logits, test logits) of one trained ``best/`` folder, with the TTA its run
    used."""
    info, pred = run_info(best.parent), open_predictor(best, backend="torch")
    logger.info("%s: logits on validation and test (tta=%s)", best, info["tta"])
    lv = cached_logits(pred, df_val["path"].tolist(), info["tta"], cache_dir, progress=progress)
    lt = cached_logits(pred, df_test["path"].tolist(), info["tta"], cache_dir, progress=progress)
    return info, pred, lv, lt


def _ensemble_logits(members: list[Path], df_val, df_test, cache_dir, progress: bool) -> dict[str, Any]:
    """An ensemble teacher as training distils from it: the mean of its members' raw logits (each member with the
    TTA it was trained to use), plus a description of its runs and a stand-in predictor for ``_model_row``."""
    import hashlib
    from types import SimpleNamespace

    infos, preds, lv, lt = map(list, zip(*(_run_logits(m, df_val, df_test, cache_dir, progress) for m in members)))
    first = preds[0].config
    cfg = ModelConfig(**{**{k: getattr(first, k) for k in first.__dataclass_fields__}, "calibrated": False,
                         "name": "ensemble", "backbone": " + ".join(i["backbone"] for i in infos)})
    sha = hashlib.sha256("".join(p.sha256 for p in preds).encode()).hexdigest()
    minutes = [i["train_minutes"] for i in infos]
    info = {"backbone": " + ".join(f"{i['backbone']}" for i in infos),
            "img_size": " + ".join(str(i["img_size"]) for i in infos),
            "epochs": " + ".join(str(i["epochs"]) for i in infos),
            "epochs_run": " + ".join(str(i["epochs_run"]) for i in infos),
            "best_epoch": " + ".join(str(i["best_epoch"]) for i in infos),
            "pretrained": all(i["pretrained"] for i in infos), "batch_size": infos[0]["batch_size"],
            "lr": infos[0]["lr"], "seed": infos[0]["seed"], "tta": any(i["tta"] for i in infos),
            "freeze_backbone": False, "teacher_cache": None, "distill": None, "train_img_per_s": None,
            "train_minutes": None if None in minutes else float(sum(minutes)),
            "validation_auroc_in_training": None, "members": [str(m) for m in members], "member_runs": infos}
    return {"val": np.mean(lv, 0), "test": np.mean(lt, 0), "info": info,
            "files": [m / "model.safetensors" for m in members],
            "pred": SimpleNamespace(config=cfg, backend="torch", extra={}, sha256=sha),
            "members": list(zip(members, preds, lv, lt, infos))}


def build_reports(runs: str | Path, data: str | Path, manifest: str | Path, out: str | Path,
                  shipped: str | Path | None = BUNDLED_MODEL_DIR, n_boot: int = 1000, note: str = DEFAULT_NOTE,
                  command: str = "python -m train.report", progress: bool = False,
                  cache_dir: str | Path | None = None, teacher: str | None = None) -> dict[str, Any]:
    runs, out = Path(runs), Path(out)
    df_val, df_test = load_labelled(data, "validation", manifest), load_labelled(data, "test", manifest)
    y_val, y_test = df_val["label"].to_numpy(), df_test["label"].to_numpy()
    models: dict[str, Any] = {}
    logits: dict[str, tuple] = {}  # run name -> (validation logits, test logits)
    rows: list[dict[str, Any]] = []
    members = _teacher_members(teacher, runs)
    for name, title in RUNS:
        if name == "teacher" and len(members) > 1:
            if not all((m / "config.json").is_file() for m in members):
                raise FileNotFoundError(f"teacher ensemble {teacher!r}: a member has no trained model")
            ens = _ensemble_logits(members, df_val, df_test, cache_dir, progress)
            entry = training_entry(y_val, ens["val"], y_test, ens["test"], df_test, n_boot)
            title = f"Teacher: ensemble of {len(members)} (mean logits)"
            models[name] = {"title": title, "model_dir": ",".join(map(str, members)), "sha256": ens["pred"].sha256,
                            "run": ens["info"], **entry}
            rows.append(_model_row(name, title, f"PyTorch fp32 (safetensors), {len(members)} models",
                                   ens["files"], ens["pred"], ens["val"], ens["test"], y_val, y_test, df_test,
                                   n_boot, out, ens["info"]["tta"], data, command=command))
            # members that are not reported as runs of their own get their own row (and evaluation folder), so
            # each published model has test figures of its own
            own = {(runs / n / "best").resolve() for n, _ in RUNS if n != "teacher"}
            for i, (m, p, lv_m, lt_m, info_m) in enumerate(ens["members"], 1):
                if m.resolve() not in own:
                    rows.append(_model_row(f"teacher-member{i}", f"Teacher member {i}: {info_m['backbone']}",
                                           "PyTorch fp32 (safetensors)", [m / "model.safetensors"], p, lv_m, lt_m,
                                           y_val, y_test, df_test, n_boot, out, info_m["tta"], data, command=command))
            continue
        best = members[0] if name == "teacher" else runs / name / "best"
        if not (best / "config.json").is_file():
            logger.warning("no trained model at %s: skipped", best)
            continue
        info, pred, lv, lt = _run_logits(best, df_val, df_test, cache_dir, progress)
        logits[name] = (lv, lt)
        entry = training_entry(y_val, lv, y_test, lt, df_test, n_boot)
        models[name] = {"title": title, "model_dir": str(best), "sha256": pred.sha256, "run": info, **entry}
        rows.append(_model_row(name, title, "PyTorch fp32 (safetensors)", [best / "model.safetensors"], pred, lv,
                               lt, y_val, y_test, df_test, n_boot, out, info["tta"], data, command=command))
    if shipped is not None and (Path(shipped) / "model.onnx").is_file():
        pred = open_predictor(shipped, backend="onnx")
        lt = cached_logits(pred, df_test["path"].tolist(), False, cache_dir, progress=progress)
        lv = (None if pred.config.calibrated
              else cached_logits(pred, df_val["path"].tolist(), False, cache_dir, progress=progress))
        variant = pred.extra.get("onnx_variant", "onnx")
        rows.append(_model_row("shipped", f"Shipped ({Path(shipped).name}/model.onnx)", f"ONNX {variant}",
                               [Path(shipped) / "model.onnx"], pred, lv, lt, y_val, y_test, df_test, n_boot, out, False,
                               data, command=command))
    if not rows:
        raise FileNotFoundError(f"no trained model under {runs} (expected {runs}/teacher/best, .../baseline/best, "
                                f".../magkd/best) and no exported model in {shipped}")
    report = {"note": note, "n_boot": n_boot, "command": command, "data": str(data), "manifest": str(manifest),
              "test": {"n": int(len(y_test)), "n_malignant": int(y_test.sum()),
                       "always_benign_accuracy": float(1 - y_test.mean())},
              "published": PUBLISHED, "models": models, "targets": issue3_targets(models)}
    if "magkd" in logits and "baseline" in logits:
        report["distillation_paired"] = distillation_paired(logits["magkd"], logits["baseline"], y_val, y_test,
                                                            df_val, df_test, n_boot)
    out.mkdir(parents=True, exist_ok=True)
    if models:
        (out / "training.json").write_text(json.dumps(report, indent=1) + "\n")
        (out / "training.md").write_text(render_training(report))
    models_json = {"note": note, "n_boot": n_boot, "command": command,
                   "models": [{k: v for k, v in r.items()} for r in rows]}
    (out / "models.json").write_text(json.dumps(models_json, indent=1) + "\n")
    (out / "models.md").write_text(render_models(rows, note, n_boot, command))
    return {"training": report, "models": models_json}


def _model_row(name, title, fmt, files, pred, lv, lt, y_val, y_test, df_test, n_boot, out, tta,
               data, *, command: str | None = None) -> dict[str, Any]:
    cfg = pred.config
    if cfg.calibrated:
        source = "config.json"
    else:
        c = fit_calibration(y_val, lv)
        cfg = ModelConfig(**{**{k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                             **{k: c[k] for k in CALIBRATION_KEYS}})
        source = "fitted here on validation"
    m = evaluate_logits(y_test, lt, cfg, df_test, n_boot=n_boot)
    m["source"] = {"model": ",".join(str(Path(f).parent) for f in files), "model_name": cfg.name,
                   "backbone": cfg.backbone,
                   "backend": pred.backend, "variant": pred.extra.get("onnx_variant", "fp32"), "sha256": pred.sha256,
                   "data": str(data), "split": "test", "tta": tta, "calibrated_here": False,
                   "calibration_source": source, "command": command}
    write_outputs(Path(out) / "evaluation" / f"{name}-test", y_test, lt, m, df_test)
    return {"name": name, "title": title, "format": fmt,
            "size_mib": sum(Path(f).stat().st_size for f in files) / 2**20,  # 2^20 bytes
            "calibration_source": source, "calibration": {k: getattr(cfg, k) for k in CALIBRATION_KEYS},
            "metrics": {k: v for k, v in m.items() if k not in ("reliability", "subgroups")}}


def rerender(folder: str | Path) -> list[Path]:
    """Rewrite a report folder's .md files from its committed .json (models.md, training.md, every
    evaluation/*/report.md): after a change of presentation only, no model is run and no figure recomputed."""
    from dermo.evaluate import render_report

    folder, written = Path(folder), []
    if (folder / "models.json").is_file():
        mj = json.loads((folder / "models.json").read_text())
        if all("size_mib" in r for r in mj["models"]):  # older reports (size_mb) keep their .md as written
            (folder / "models.md").write_text(render_models(mj["models"], mj["note"], mj["n_boot"], mj["command"]))
            written.append(folder / "models.md")
    if (folder / "training.json").is_file():
        (folder / "training.md").write_text(render_training(json.loads((folder / "training.json").read_text())))
        written.append(folder / "training.md")
    for mf in sorted(folder.glob("evaluation/*/metrics.json")):
        (mf.parent / "report.md").write_text(render_report(json.loads(mf.read_text())))
        written.append(mf.parent / "report.md")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rerender", nargs="+", metavar="FOLDER", default=None,
                    help="only rewrite these report folders' .md files from their .json (no model is run)")
    ap.add_argument("--runs", default="runs/cpu", help="folder with teacher/, baseline/, magkd/ (each with best/)")
    ap.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    ap.add_argument("--out", default="reports")
    ap.add_argument("--teacher", default=None, help="teacher folder(s) as training's --teacher takes them (comma = "
                    "ensemble, reported as the mean of its members' logits); default <runs>/teacher/best")
    ap.add_argument("--shipped", default=str(BUNDLED_MODEL_DIR), help="exported model folder ('' to skip)")
    ap.add_argument("--n_boot", type=int, default=1000)
    ap.add_argument("--note", default=DEFAULT_NOTE, help="where the runs come from (printed in the reports)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--cache", default=None, help="logits cache folder (default: <runs>/logits_cache; 'none' = off)")
    args = ap.parse_args(argv)
    if args.rerender:
        for folder in args.rerender:
            for f in rerender(folder):
                print(f"rewrote {f}")
        return 0
    cache = None if args.cache == "none" else (args.cache or str(Path(args.runs) / "logits_cache"))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    command = ("python -m train.report" + (f" --runs {args.runs}" if args.runs != "runs/cpu" else "")
               + (f" --teacher {args.teacher}" if args.teacher else "")
               + (f" --out {args.out}" if args.out != "reports" else "")
               + (" --shipped ''" if not args.shipped else "")
               + (f" --note {shlex.quote(args.note)}" if args.note != DEFAULT_NOTE else ""))
    try:
        res = build_reports(args.runs, args.data, args.manifest, args.out, args.shipped or None, args.n_boot,
                            args.note, command, args.progress, cache, args.teacher)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name, m in res["training"]["models"].items():
        op = m["operating_point"]
        print(f"{name:9s} test AUROC {m['auroc']:.4f} {m['auroc_ci']}  sens {op['sensitivity']:.3f} "
              f"spec {op['specificity']:.3f} at t={op['threshold']:.4f} (chosen on validation)")
    print(f"wrote {args.out}/training.md, training.json, models.md, models.json, evaluation/*-test/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
