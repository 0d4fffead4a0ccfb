"""Link the committed weights (``models/``) into the ``runs/`` layout the reports were written from, so a clone can
rerun any report's ``Regenerate:`` command (``python -m train.report --runs runs/gpu_ens ...``) and the card
commands without training anything.

    python -m train.link_runs [--models models] [--runs runs]

Every ``models/<group>/<run>/`` that holds weights becomes ``runs/<group>/<run>/best`` (a link). The run folders
that the run scripts linked to other groups' runs are linked the same way: ``runs/gpu_ens/{baseline,magkd}``
(``train/gpu_full.sh``: ``gpu/baseline`` and ``gpu/magkd_ensemble``), ``runs/cpu_ensemble/baseline`` and
``runs/cpu_dino/{teacher,baseline}`` (the ``cpu_long`` runs). Existing paths are left as they are.
Runs kept without weights (``models/cpu_seed1`` and others) cannot be regenerated and are listed as such.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# run folders the run scripts made as links to another group's run: (link, target), both under runs/
RUN_LINKS = [("gpu_ens/baseline", "gpu/baseline"), ("gpu_ens/magkd", "gpu/magkd_ensemble"),
             ("cpu_ensemble/baseline", "cpu_long/baseline"),
             ("cpu_dino/teacher", "cpu_long/teacher"), ("cpu_dino/baseline", "cpu_long/baseline")]


def _link(link: Path, target: Path) -> bool:
    """``link`` -> ``target`` as a relative symlink; False when ``link`` already exists."""
    if link.exists() or link.is_symlink():
        return False
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
    return True


def link_runs(models: str | Path = "models", runs: str | Path = "runs") -> dict[str, list[str]]:
    """Make the links; returns ``{"linked": [...], "kept": [...], "no_weights": [...]}`` (paths under ``runs``)."""
    models, runs = Path(models), Path(runs)
    out: dict[str, list[str]] = {"linked": [], "kept": [], "no_weights": []}
    for folder in sorted(p for p in models.glob("*/*") if p.is_dir()):
        best = runs / folder.relative_to(models) / "best"
        if not (folder / "model.safetensors").is_file():
            out["no_weights"].append(str(best.parent))
            continue
        out["linked" if _link(best, folder) else "kept"].append(str(best))
    for link, target in RUN_LINKS:
        if (runs / target / "best").exists():
            out["linked" if _link(runs / link, runs / target) else "kept"].append(str(runs / link))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m train.link_runs", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--runs", default="runs")
    args = ap.parse_args(argv)
    res = link_runs(args.models, args.runs)
    for key, label in (("linked", "linked"), ("kept", "already there"), ("no_weights", "no weights committed")):
        if res[key]:
            print(f"{label} ({len(res[key])}): " + ", ".join(res[key]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
