"""Assemble the Hugging Face Space folder and, with a token, upload it.

    python space/build.py --out build/space                      # assemble only
    HF_TOKEN=... python space/build.py --out build/space --push owner/space-name

The folder holds: app.py, the dermo/ package with the bundled model (dermo/assets: model.onnx, config.json,
ood.npz), and from space/: README.md (the Space's front matter), requirements.txt (space/requirements.txt's packages and
all their dependencies, pinned at the lock's versions) and examples/.
``--model DIR`` bundles another model folder instead of dermo/assets. The push creates the Space if needed
(``sdk=gradio``) and uploads with ``huggingface_hub.upload_folder(repo_type="space")``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACE = ROOT / "space"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".DS_Store", "*.pyi")
MARKER = ".dermohelper-space"


def build_space(out: str | Path, model: str | Path | None = None) -> Path:
    """Copy everything the Space needs into ``out`` (emptied first); returns ``out``."""
    out = Path(out)
    model_dir = Path(model) if model else ROOT / "dermo" / "assets"
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model (config.json missing): export the student first "
                                "(python -m train.export) or pass --model DIR")
    sys.path.insert(0, str(ROOT))
    from dermo.hub import verify_model_dir

    verify_model_dir(model_dir)  # a Space must not start with a file that fails the app's own sha256 check
    # only a new or empty folder, or one this function built before (it has MARKER), is emptied
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise ValueError(f"--out {out} is a folder with other files; it would overwrite them: give a new folder "
                         "such as build/space")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / MARKER).write_text("built by space/build.py; emptied by the next build\n")
    shutil.copy2(ROOT / "app.py", out / "app.py")
    shutil.copytree(ROOT / "dermo", out / "dermo", ignore=shutil.ignore_patterns(
        "__pycache__", "*.pyc", "*.pyi", "assets"))
    shutil.copytree(model_dir, out / "dermo" / "assets", ignore=IGNORE)
    shutil.copy2(SPACE / "README.md", out / "README.md")
    (out / "requirements.txt").write_text(space_requirements())
    shutil.copytree(SPACE / "examples", out / "examples", ignore=IGNORE)
    for name in ("LICENSE", "LICENSE-MODELS"):  # code Apache-2.0; the weights and examples CC BY-NC-SA 4.0
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, out / name)
    return out


def _lock() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def space_requirements(top: str | Path = SPACE / "requirements.txt") -> str:
    """The Space's requirements.txt: ``top`` (space/requirements.txt, the packages the app imports) and everything
    they depend on, each pinned at the repository lock's version, so the Space installs exactly what the tests ran
    with (pinning only the top level let pip take the newest fastapi, protobuf, ... on the Space). The dependency
    tree is read from this environment's installed metadata (Linux, this Python; extras not followed), which must
    match the lock."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    lock = _lock()
    names = [Requirement(r).name for r in Path(top).read_text().splitlines() if r.strip() and not r.startswith("#")]
    seen: dict[str, str] = {}
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in lock:
            raise ValueError(f"the Space needs {name}, which requirements.txt (the lock) does not pin")
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise ValueError(f"{name} is not installed here: install the lock (pip install --no-deps -r "
                             "requirements.txt) before building the Space") from None
        if dist.version != lock[name]:
            raise ValueError(f"{name} {dist.version} is installed, the lock pins {lock[name]}: install the lock "
                             "before building the Space")
        seen[name] = lock[name]
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    head = ("# DermoHelper Space (CPU), written by space/build.py: the packages of space/requirements.txt and all "
            "they depend on,\n# pinned at the repository lock's versions. Gradio itself comes from sdk_version in "
            "README.md (the same pin).\n")
    return head + "".join(f"{n}=={v}\n" for n, v in sorted(seen.items()))


def push_space(folder: str | Path, repo_id: str, token: str | None = None, private: bool = False,
               endpoint: str | None = None) -> str:
    """Create (if needed) and upload the Space; returns its URL. Clear errors for no token / no network."""
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError
    from requests.exceptions import ConnectionError as RequestsConnectionError, Timeout

    token = token or get_token()  # HF_TOKEN or the `huggingface-cli login` cache
    if not token:
        raise PermissionError("no Hugging Face token: set HF_TOKEN (a write token from "
                              "https://huggingface.co/settings/tokens) or pass --token, then push again")
    if "/" not in repo_id:
        raise ValueError(f"--push {repo_id!r}: give owner/space-name")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space",
                          commit_message="Update DermoHelper Space", ignore_patterns=[MARKER])
    except HfHubHTTPError as e:  # first: it is also an OSError (through requests.RequestException)
        raise PermissionError(f"the Hub refused the push to {repo_id}: {e}; check that the token can write "
                              "to that owner") from e
    except (RequestsConnectionError, Timeout, OSError) as e:
        raise ConnectionError(f"cannot reach the Hugging Face Hub to push {repo_id} ({type(e).__name__}); "
                              "check the network (or HF_ENDPOINT) and push again; the folder "
                              f"{folder} is ready") from e
    return f"https://huggingface.co/spaces/{repo_id}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Assemble the DermoHelper Space folder; push it with --push.")
    p.add_argument("--out", required=True, help="folder to create (emptied first), e.g. build/space")
    p.add_argument("--model", default=None, help="model folder to bundle (default: dermo/assets)")
    p.add_argument("--push", default=None, metavar="OWNER/SPACE", help="upload to this Space (needs HF_TOKEN)")
    p.add_argument("--token", default=None, help="Hugging Face token (default: $HF_TOKEN)")
    p.add_argument("--private", action="store_true")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from dermo.inference import ModelIntegrityError

    try:
        out = build_space(a.out, a.model)
        print(f"Space folder ready: {out}")
        if a.push:
            print(f"pushed: {push_space(out, a.push, a.token, a.private)}")
    except (FileNotFoundError, ValueError, PermissionError, ConnectionError, ModelIntegrityError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
