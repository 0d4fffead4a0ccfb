"""What distillation adds, over several seeds: one table from the ``train.report`` folders of repeated runs.

    python -m train.seeds reports/cpu_ensemble reports/cpu_seed1 reports/cpu_seed2 --out reports/seeds_cpu

Each folder is one seed of the same recipe: its ``training.json`` and its ``evaluation/<model>-test/predictions.csv``
for the two students compared (``--a magkd --b baseline``). Per seed: validation AUROC (what chooses), test AUROC
with its lesion-grouped 95% interval, and the test AUROC difference a - b with a *paired* lesion-grouped bootstrap
interval (both models scored on the same resamples, ``dermo.metrics.paired_auroc_difference``). Across seeds: mean
and sample standard deviation of each, so a single seed's edge can be read against seed-to-seed variation.
"""
from __future__ import annotations

import argparse
import json
import shlex
import statistics
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from dermo import metrics as M
from dermo.config import DEFAULT_MANIFEST, REPORT_FOOTER


def _predictions(folder: Path, model: str) -> pd.DataFrame:
    path = folder / "evaluation" / f"{model}-test" / "predictions.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `python -m train.report --runs ... --out {folder}` first")
    return pd.read_csv(path, dtype={"image_id": str})


def seed_row(folder: str | Path, a: str, b: str, lesions: pd.Series, n_boot: int = 1000) -> dict[str, Any]:
    """One seed: the two models' run seeds, validation and test AUROC, and the paired test difference a - b."""
    folder = Path(folder)
    models = json.loads((folder / "training.json").read_text())["models"]
    for m in (a, b):
        if m not in models:
            raise KeyError(f"{folder}/training.json has no model {m!r} (it has {sorted(models)})")
    pa, pb = _predictions(folder, a), _predictions(folder, b)
    both = pa.merge(pb, on="image_id", suffixes=("_a", "_b"), validate="one_to_one")
    if len(both) != len(pa) or len(both) != len(pb) or (both["label_a"] != both["label_b"]).any():
        raise ValueError(f"{folder}: {a} and {b} were not scored on the same test images")
    groups = both["image_id"].map(lesions)
    if groups.isna().any():
        raise ValueError(f"{folder}: {int(groups.isna().sum())} test images are not in the split manifest")
    diff = M.paired_auroc_difference(both["label_a"].to_numpy(), both["probability_a"].to_numpy(),
                                     both["probability_b"].to_numpy(), groups=groups.to_numpy(), n_boot=n_boot)
    seeds = {models[m]["run"]["seed"] for m in (a, b)}
    if len(seeds) != 1:
        raise ValueError(f"{folder}: {a} and {b} were trained with different seeds {sorted(seeds)}")
    row: dict[str, Any] = {"folder": str(folder), "seed": seeds.pop(), "n_test": len(both)}
    for key, m in (("a", a), ("b", b)):
        row[key] = {"model": m, "model_dir": models[m]["model_dir"], "validation_auroc": models[m]["validation"]["auroc"],
                    "test_auroc": models[m]["auroc"], "test_auroc_ci": models[m]["auroc_ci"],
                    "operating_point": {k: models[m]["operating_point"][k] for k in ("sensitivity", "specificity")}}
    row["validation_difference"] = row["a"]["validation_auroc"] - row["b"]["validation_auroc"]
    row["test_difference"] = diff
    return row


def _mean_sd(values: list[float]) -> dict[str, Any]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of every AUROC and difference."""
    return {
        "a_validation_auroc": _mean_sd([r["a"]["validation_auroc"] for r in rows]),
        "b_validation_auroc": _mean_sd([r["b"]["validation_auroc"] for r in rows]),
        "a_test_auroc": _mean_sd([r["a"]["test_auroc"] for r in rows]),
        "b_test_auroc": _mean_sd([r["b"]["test_auroc"] for r in rows]),
        "validation_difference": _mean_sd([r["validation_difference"] for r in rows]),
        "test_difference": _mean_sd([r["test_difference"]["difference"] for r in rows]),
        "seeds_a_better_on_validation": sum(r["validation_difference"] > 0 for r in rows),
        "seeds_a_better_on_test": sum(r["test_difference"]["difference"] > 0 for r in rows),
    }


def _ms(s: dict[str, Any], signed: bool = False) -> str:
    fmt = "{:+.4f}" if signed else "{:.4f}"
    return fmt.format(s["mean"]) + ("" if s["sd"] is None else f" ± {s['sd']:.4f}")


def render(result: dict[str, Any]) -> str:
    a, b, rows, s = result["a"], result["b"], result["seeds"], result["summary"]
    title = result.get("title") or f"{a} vs {b} over {len(rows)} seeds"
    out = [f"# {title}", "", f"Command: `{result['command']}`", ""]
    if result.get("note"):
        out += [result["note"], ""]
    out += ["Per seed: validation AUROC (the split that chooses models), test AUROC [95% lesion-grouped bootstrap "
            f"interval], and the test AUROC difference {a} - {b} with a **paired** lesion-grouped bootstrap interval "
            f"({result['n_boot']} resamples; both models scored on each resample). 'share' = fraction of resamples "
            f"where {a} is above {b}.", "",
            f"| seed | report | {a} val | {b} val | val diff | {a} test | {b} test | test diff [95% CI] | share |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = r["test_difference"]
        ci = "n/a" if d["ci"] is None else f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        out.append(f"| {r['seed']} | `{r['folder']}` | {r['a']['validation_auroc']:.4f} | "
                   f"{r['b']['validation_auroc']:.4f} | {r['validation_difference']:+.4f} | "
                   f"{r['a']['test_auroc']:.4f} [{r['a']['test_auroc_ci'][0]:.3f}, {r['a']['test_auroc_ci'][1]:.3f}] | "
                   f"{r['b']['test_auroc']:.4f} [{r['b']['test_auroc_ci'][0]:.3f}, {r['b']['test_auroc_ci'][1]:.3f}] | "
                   f"{d['difference']:+.4f} {ci} | {d['fraction_a_better']:.2f} |")
    out += ["", f"Over the seeds (mean ± sample standard deviation, n = {len(rows)}):", "",
            "| | validation AUROC | test AUROC |", "|---|---|---|",
            f"| {a} | {_ms(s['a_validation_auroc'])} | {_ms(s['a_test_auroc'])} |",
            f"| {b} | {_ms(s['b_validation_auroc'])} | {_ms(s['b_test_auroc'])} |",
            f"| {a} - {b} | {_ms(s['validation_difference'], True)} | {_ms(s['test_difference'], True)} |", "",
            f"{a} is above {b} on validation in {s['seeds_a_better_on_validation']} of {len(rows)} seeds and on test "
            f"in {s['seeds_a_better_on_test']} of {len(rows)}.", "", REPORT_FOOTER, ""]
    return "\n".join(out)


def command(args: argparse.Namespace) -> str:
    """The command line that writes this report again: every option that changes it (defaults left out)."""
    parts = ["python -m train.seeds", *args.reports, f"--a {args.a}", f"--b {args.b}"]
    if args.manifest != str(DEFAULT_MANIFEST):
        parts.append(f"--manifest {shlex.quote(args.manifest)}")
    if args.n_boot != 1000:
        parts.append(f"--n_boot {args.n_boot}")
    parts += [f"--{k} {shlex.quote(getattr(args, k))}" for k in ("note", "title") if getattr(args, k)]
    return " ".join(parts + [f"--out {args.out}"])


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.seeds", description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", help="train.report output folders, one per seed")
    ap.add_argument("--a", default="magkd", help="the model whose gain is measured (default magkd)")
    ap.add_argument("--b", default="baseline", help="the model it is compared with (default baseline)")
    ap.add_argument("--manifest", default=str(DEFAULT_MANIFEST), help="split manifest with lesion_id per image")
    ap.add_argument("--n_boot", type=int, default=1000)
    ap.add_argument("--note", default="", help="a line under the title: what the runs are")
    ap.add_argument("--title", default="", help="the report's title (default: '<a> vs <b> over N seeds')")
    ap.add_argument("--out", required=True, help="writes OUT.md and OUT.json")
    args = ap.parse_args(argv)
    man = pd.read_csv(args.manifest, dtype={"image_id": str, "lesion_id": str})
    lesions = man.set_index("image_id")["lesion_id"]
    rows = [seed_row(f, args.a, args.b, lesions, args.n_boot) for f in args.reports]
    if len({r["seed"] for r in rows}) != len(rows):
        raise SystemExit(f"the folders repeat a seed: {[r['seed'] for r in rows]}")
    result = {"a": args.a, "b": args.b, "n_boot": args.n_boot, "note": args.note, "title": args.title,
              "command": command(args),
              "seeds": rows, "summary": summarize(rows)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(result))
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
