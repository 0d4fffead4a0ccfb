"""The README's headline figures are the committed reports' figures: regenerating a report (a new model shipped, a
benchmark rerun) without updating the README fails here, naming the figure and the report it should come from.

Each check formats the report's value the way the README prints it and looks for that text in the README's
paragraph or table row about it; the report files are the ones the README cites next to the figure.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
REPORTS = ROOT / "reports"


def report(name: str) -> dict:
    return json.loads((REPORTS / name).read_text())


def paragraph(start: str) -> str:
    """The README's paragraph (or table row) that begins with ``start``: up to the next blank line."""
    i = README.find(start)
    assert i >= 0, f"README has no paragraph starting {start!r}"
    end = README.find("\n\n", i)
    return " ".join(README[i:end if end >= 0 else None].split())


def table_row(first_cell: str) -> list[str]:
    """The cells of the README table row whose first cell starts with ``first_cell``."""
    rows = [line for line in README.splitlines() if line.startswith("| " + first_cell)]
    assert len(rows) == 1, f"README has {len(rows)} table rows starting {first_cell!r}"
    return [c.strip() for c in rows[0].strip("|").split("|")]


# README row (first cell) -> (report, model name in it): the main table of "The model we ship, and how good it is"
MODEL_ROWS = {
    "teacher: ensemble": ("models.json", "teacher"),
    "`tf_efficientnet_lite0` alone": ("models.json", "teacher-member1"),
    "student without distillation `mobilenetv2_100`": ("models.json", "baseline"),
    "MAG-KD student of the ensemble teacher": ("models.json", "magkd"),
    "**shipped**: that student": ("models.json", "shipped"),
    "the CPU model shipped before": ("cpu_ensemble/models.json", "magkd"),
}


@pytest.mark.parametrize("first_cell", sorted(MODEL_ROWS))
def test_model_table_matches_reports(first_cell):
    path, name = MODEL_ROWS[first_cell]
    row = next(r for r in report(path)["models"] if r["name"] == name)
    m = row["metrics"]
    cells = table_row(first_cell)
    lo, hi = m["auroc_ci"]
    assert cells[2] == f"{m['auroc']:.3f} [{lo:.3f}, {hi:.3f}]", (cells, path, name)
    assert cells[3] == f"{100 * m['sensitivity']:.1f}% / {100 * m['specificity']:.1f}%", (cells, path, name)
    assert cells[4] == f"{m['ece']['after']:.3f}", (cells, path, name)
    assert f"{row['size_mib']:.1f} MiB" in cells[1], (cells, path, name)


def test_band_table_matches_the_shipped_models_test_report():
    m = report("evaluation/shipped-test/metrics.json")
    low, high = m["band_edges"]["low"], m["band_edges"]["high"]
    for band in ("low", "medium", "high"):
        b = m["bands"][band]
        cells = table_row(band.capitalize() + " |")
        assert cells[2:] == [f"{100 * b['share_of_cases']:.1f}%", f"{100 * b['malignant_rate']:.1f}%",
                             f"{100 * b['share_of_malignant']:.1f}%"], (band, cells)
    assert table_row("Low |")[1] == f"< {low:.3}" and table_row("High |")[1] == f">= {high:.3f}"
    assert table_row("Medium |")[1] == f"{low:.3} - {high:.3f}"
    targets = paragraph("Against the evaluation targets:")
    assert f"ECE <= 0.03 is met ({m['ece']['after']:.3f})" in targets
    lowb, highb = m["bands"]["low"], m["bands"]["high"]
    assert (f"({100 * lowb['share_of_malignant']:.1f}%: {lowb['n_malignant']} of {m['n_malignant']} cancers, at "
            f"{100 * lowb['malignant_rate']:.1f}%)") in targets
    met = highb["malignant_rate"] >= 0.70
    assert f"High >= 70% malignant is {'met' if met else '**missed**'}: {100 * highb['malignant_rate']:.1f}%" in targets


def test_test_split_size_matches_the_reports():
    m = report("evaluation/shipped-test/metrics.json")
    text = paragraph("Test split of HAM10000")
    assert f"({m['n']:,} images of {m['n_groups']:,} lesions, {m['n_malignant']} malignant;" in text


def test_quick_start_timings_match_reports_quickstart():
    q = (REPORTS / "quickstart.md").read_text()
    commit = re.search(r"at commit (\w+)", q).group(1)
    app_s = re.search(r"\| 1: install \+ start the app [^|]*\| (\d+) \|", q).group(1)
    test_s = re.search(r"\| 2: install \+ run the tests \| (\d+) \|", q).group(1)
    passed, tests_s = re.search(r"(\d+) passed in ([\d.]+)s", q).groups()
    text = paragraph("`requirements.txt` is")
    assert f"(`reports/quickstart.md`, at commit {commit})" in text
    assert f"reaches a serving app in {app_s} s" in text
    assert f"installs and runs the suite in {test_s} s" in text
    assert f"{passed} tests passed, {round(float(tests_s))} s of it the tests" in text


def test_app_latency_matches_reports_app_benchmark():
    b = report("app_benchmark.json")
    one, eight = b["results"]["1_client"], b["results"]["8_clients"]
    text = paragraph("**App latency**")
    if "commit" in b:  # recorded by benchmarks/app.py since it was added there
        assert f"at commit {b['commit']}" in text
    assert f"single-client p50 {one['app']['p50_ms']:.1f} ms against {one['bare']['p50_ms']:.1f} ms" in text
    assert f"({b['single_client_p50_overhead_ms']:+.1f} ms" in text
    if "load_average_before" in b:
        assert f"load average over the minute before the run {b['load_average_before'][0]:.2f}" in text
    assert (f"8 clients: {eight['app']['errors']} errors in {eight['app']['requests']} requests, "
            f"{eight['app']['throughput_rps']:.2f} requests/s, {b['eight_client_throughput_ratio']:.2f}x") in text


def test_quality_gate_matches_reports_quality_gate():
    q = report("quality_gate.json")
    val, test = q["lesions"]["validation"], q["lesions"]["test"]
    non = q["non_skin"]["all"]
    text = paragraph("**Quality gate**")
    assert (f"{100 * val['pass_rate']:.1f}% of validation lesions and {100 * test['pass_rate']:.1f}% of test "
            "lesions pass") in text
    assert f"{100 * non['rejected_rate']:.1f}% of {non['n']} non-skin images are rejected" in text


def test_load_memory_matches_reports_load_memory():
    rep = json.loads((REPORTS / "load_memory.json").read_text())
    f = rep["files"]
    peaks = ", ".join(str(round(f[k]["peak_mb"])) for k in ("rgba_png", "rgb_png")) + f" and {round(f['jpeg']['peak_mb'])}"
    above = [f[k]["above_baseline_mb"] for k in ("rgba_png", "rgb_png", "jpeg")]
    text = paragraph("It returns JSON:")
    assert f"peaks at {peaks} MB in a" in " ".join(text.split()), peaks
    assert f"{round(min(above))}-{round(max(above))} MB above the interpreter's own" in " ".join(text.split())
