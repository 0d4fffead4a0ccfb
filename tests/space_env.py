"""Run code as the Space would: only the packages that ``space/requirements.txt`` installs (with everything they
depend on) can be imported, whatever else this machine has.

``closure(names)`` walks the installed distributions' ``Requires-Dist`` (markers evaluated here, no extras);
``write_blocker(folder, allowed, bundled)`` writes a ``sitecustomize.py`` that refuses to import any top-level module of
a distribution outside ``allowed``, except the modules in ``bundled``, which the Space ships as its own files (its
``dermo/`` copy, even where ``pip install -e .`` made ``dermo`` a module of the ``dermohelper`` distribution here).
Put ``folder`` on ``PYTHONPATH`` of a subprocess.
"""
from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(names: list[str]) -> set[str]:
    """The distributions that installing ``names`` pulls in (those installed here; extras not followed)."""
    seen: set[str] = set()
    todo = [canonical(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonical(req.name))
    return seen


def requirement_names(path: Path) -> list[str]:
    return [Requirement(line).name for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


BLOCKER = '''
import importlib.abc, sys
ALLOWED = set(%(allowed)s)  # distributions the Space installs
OWNERS = %(owners)s  # top-level module -> distributions that provide it (this machine)

class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        owners = OWNERS.get(top)
        if owners and not ALLOWED.intersection(owners):
            raise ModuleNotFoundError(
                "No module named %%r: the Space does not install %%s (space/requirements.txt)" %% (name, owners[0]),
                name=name)
        return None

sys.meta_path.insert(0, _Blocker())
'''


def bundled_modules(folder: Path) -> set[str]:
    """The top-level modules that ``folder`` holds as files: ``x.py`` and packages ``x/__init__.py``."""
    return {p.stem for p in folder.iterdir() if (p.suffix == ".py" and p.is_file()) or (p / "__init__.py").is_file()}


def write_blocker(folder: Path, allowed: set[str], bundled: set[str] = frozenset()) -> Path:
    owners = {m: sorted(canonical(d) for d in ds) for m, ds in metadata.packages_distributions().items()
              if m not in bundled}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sitecustomize.py"
    path.write_text(BLOCKER % {"allowed": json.dumps(sorted(allowed)), "owners": json.dumps(owners)})
    return path
