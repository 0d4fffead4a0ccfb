"""Hugging Face Hub: push models and data, pull models (with sha256 checks), and the app's ``DERMO_MODEL`` setting.

A model repository pushed by :func:`push_model` holds, in ONE commit::

    config.json, model.safetensors, run_config.json   the save_pretrained folder (PyTorchModelHubMixin layout)
    onnx/model.onnx (+ other .onnx), onnx/config.json  the served ONNX file(s) and their config (with sha256)
    onnx/SHA256SUMS                                    sha256 of every file under onnx/ (``sha256sum -c`` format)
    README.md                                          the model card, from reports/ (dermo.cards)
    LICENSE                                            CC BY-NC-SA 4.0 note (HAM10000 derivative)

:func:`pull_model` downloads it through ``huggingface_hub`` (reusing the local cache, offline included), checks the
sha256 and returns the folder to give :class:`dermo.inference.Predictor`. The token comes from ``HF_TOKEN`` or the
login cache (``huggingface-cli login``), never from a config file.

CLI::

    python -m dermo.hub push-model --model runs/cpu/magkd/best --onnx dermo/assets --repo OWNER/NAME [--dry-run DIR]
    python -m dermo.hub push-dataset --data ../shared/data/ham10000 --repo OWNER/ham10000 [--dry-run DIR]
    python -m dermo.hub pull OWNER/NAME[@REVISION]
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .config import DEFAULT_DATA_DIR, DEFAULT_MANIFEST
from .inference import BUNDLED_MODEL_DIR, CONFIG_NAME, ONNX_NAME, ModelIntegrityError, sha256_file

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
RUN_CONFIG_NAME = "run_config.json"
ONNX_SUBDIR = "onnx"
SUMS_NAME = "SHA256SUMS"
SPLIT_NAME = "ham10000_split.csv"  # the lesion-grouped split the model was trained and evaluated on (cards.SPLIT_FILE)
PUSHED_ROOT_FILES = {CONFIG_NAME, SAFETENSORS_NAME, RUN_CONFIG_NAME, SUMS_NAME, SPLIT_NAME, "README.md", "LICENSE"}
PULL_PATTERNS = [CONFIG_NAME, SAFETENSORS_NAME, RUN_CONFIG_NAME, SUMS_NAME, SPLIT_NAME, f"{ONNX_SUBDIR}/*", "README.md",
                 "LICENSE"]
# owner/name or owner/name@revision, as the Hub spells ids (letters, digits, - _ .)
HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


# ----------------------------------------------------------------------------------------------------------- pull
def parse_hub_id(setting: str) -> tuple[str, str | None] | None:
    """``owner/name@rev`` -> (``owner/name``, ``rev``); None when ``setting`` is not a Hub id."""
    m = HUB_ID.match(setting.strip())
    return (m.group("repo"), m.group("revision")) if m else None


def read_sums(path: Path) -> dict[str, str]:
    """``sha256sum`` format (``<hex>  <name>``) -> {name: hex}."""
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            out[name.lstrip("*").strip()] = digest
    return out


def verify_model_dir(model_dir: Path, source: str = "") -> None:
    """Check model.onnx against config.json's sha256 and every file listed in SHA256SUMS; raise ModelIntegrityError."""
    where = f" (from {source})" if source else ""
    hint = ("delete the cached copy (`huggingface-cli delete-cache`, or remove the folder) and pull again"
            if source else "export it again")
    cfg_path, onnx = model_dir / CONFIG_NAME, model_dir / ONNX_NAME
    checked: dict[str, str] = {}  # name -> sha256 already computed here (model.onnx is in both places)
    if onnx.is_file() and cfg_path.is_file():
        expected = json.loads(cfg_path.read_text()).get("sha256")
        if not expected:
            logger.warning("%s has no sha256 for %s%s; the file cannot be verified", cfg_path, ONNX_NAME, where)
        else:
            actual = checked[ONNX_NAME] = sha256_file(onnx)
            if actual != expected:
                raise ModelIntegrityError(
                    f"{onnx}{where} is corrupted or was replaced: its sha256 {actual[:12]}... does not match "
                    f"{expected[:12]}... recorded in {CONFIG_NAME}; {hint}")
    sums = model_dir / SUMS_NAME
    if sums.is_file():
        for name, expected in read_sums(sums).items():
            f = model_dir / name
            if not f.is_file():  # e.g. a cache that holds only what another loader fetched
                raise ModelIntegrityError(f"{f}{where} is listed in {SUMS_NAME} but missing: the copy is incomplete; "
                                          + ("connect to the Hub once to complete it, or " if source else "")
                                          + hint)
            if (checked.get(name) or sha256_file(f)) != expected:
                raise ModelIntegrityError(f"{f}{where} is corrupted or was replaced: its sha256 does not match the "
                                          f"one in {SUMS_NAME}; {hint}")


def pull_model(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None,
               token: str | None = None) -> Path:
    """Download (or reuse the cached copy of) a model repository and return the folder to serve.

    Returns ``<snapshot>/onnx`` when the repository has ``onnx/model.onnx`` (the calibrated, checked ONNX file), else
    the snapshot root (``config.json`` + ``model.safetensors``, PyTorch). Works offline from the Hub cache
    (``HF_HUB_OFFLINE=1``). Raises ``ModelIntegrityError`` when a file does not match its recorded sha256, and
    huggingface_hub's ``LocalEntryNotFoundError`` when the Hub cannot be reached and nothing is cached.
    """
    from huggingface_hub import snapshot_download

    parsed = parse_hub_id(repo_id)
    if parsed is None:
        raise ValueError(f"{repo_id!r} is not a Hub model id; use owner/name or owner/name@revision")
    repo, rev = parsed
    if revision and rev and revision != rev:
        raise ValueError(f"{repo_id!r} pins revision {rev!r} but revision={revision!r} was given; give one")
    revision = revision or rev
    snap = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir, allow_patterns=PULL_PATTERNS,
                                  token=token))
    source = f"{repo}@{revision or 'main'}"
    if not (snap / SUMS_NAME).is_file():
        # every push writes it (the sha256 of each file of the repository): without it, this is a partial copy
        # (e.g. a cache that only PyTorchModelHubMixin.from_pretrained filled) or not a DermoHelper push
        raise ModelIntegrityError(f"{source}: the downloaded copy in {snap} has no {SUMS_NAME}, so it cannot be "
                                  "checked and may be incomplete; connect to the Hub once (or delete the cached copy "
                                  "and pull again), or push the model with `python -m dermo.hub push-model`")
    verify_model_dir(snap, source)  # every file of the repository, the weights included, against its sha256
    onnx_dir = snap / ONNX_SUBDIR
    if (onnx_dir / ONNX_NAME).is_file():
        if not (onnx_dir / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{source} has {ONNX_SUBDIR}/{ONNX_NAME} but no {ONNX_SUBDIR}/{CONFIG_NAME}; "
                                    "push the model again with `python -m dermo.hub push-model`")
        verify_model_dir(onnx_dir, source)
        logger.info("pulled %s -> %s (onnx)", source, onnx_dir)
        return onnx_dir
    if (snap / CONFIG_NAME).is_file() and (snap / SAFETENSORS_NAME).is_file():
        logger.info("pulled %s -> %s (safetensors)", source, snap)
        return snap
    raise FileNotFoundError(f"{source} holds neither {ONNX_SUBDIR}/{ONNX_NAME} nor {CONFIG_NAME} + "
                            f"{SAFETENSORS_NAME}; is it a DermoHelper model repository?")


def resolve_model(setting: str | None, cache_dir: str | Path | None = None) -> Path:
    """The app's ``DERMO_MODEL`` setting -> a model folder (or .onnx file) for ``Predictor``.

    None / empty: the bundled model (dermo/assets). An existing local path: that path. ``owner/name`` or
    ``owner/name@revision``: :func:`pull_model`; when the Hub cannot be reached and nothing is cached, one warning
    and the bundled model. A corrupted download is never papered over (ModelIntegrityError propagates).
    """
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
    from requests.exceptions import ConnectionError as RequestsConnectionError, Timeout

    if setting is None or not str(setting).strip():
        return BUNDLED_MODEL_DIR
    setting = str(setting).strip()
    if Path(setting).expanduser().exists():
        return Path(setting).expanduser()
    parsed = parse_hub_id(setting)
    if parsed is None:
        raise FileNotFoundError(f"DERMO_MODEL={setting!r} is neither an existing folder / .onnx file nor a Hub id "
                                "(owner/name or owner/name@revision); fix it or unset it to use the bundled model")
    try:
        return pull_model(parsed[0], revision=parsed[1], cache_dir=cache_dir)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, RequestsConnectionError, Timeout) as e:
        if not (BUNDLED_MODEL_DIR / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"cannot reach the Hub for {setting} ({type(e).__name__}) and no bundled model "
                                    f"is in {BUNDLED_MODEL_DIR}; connect once or give a local model folder") from e
        logger.warning("DERMO_MODEL=%s: the Hugging Face Hub cannot be reached and no cached copy exists (%s); "
                       "using the bundled model in %s", setting, type(e).__name__, BUNDLED_MODEL_DIR)
        return BUNDLED_MODEL_DIR


# ----------------------------------------------------------------------------------------------------------- push
def _token(token: str | None) -> str:
    """The token from the argument, ``HF_TOKEN`` or the login cache; never read from a config file."""
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise ValueError("no Hugging Face token: run `huggingface-cli login` or set HF_TOKEN (or use --dry-run DIR "
                         "to write the folder without pushing)")
    return token


def _write_sums(folder: Path, recursive: bool = False, skip: tuple[str, ...] = ()) -> None:
    """``SHA256SUMS`` of the files in ``folder`` (``recursive``: in its subfolders too, as relative paths)."""
    files = sorted(p for p in (folder.rglob("*") if recursive else folder.iterdir())
                   if p.is_file() and p.name != SUMS_NAME and p.relative_to(folder).as_posix() not in skip)
    (folder / SUMS_NAME).write_text("".join(f"{sha256_file(p)}  {p.relative_to(folder).as_posix()}\n"
                                            for p in files))


def build_model_folder(model_dir: str | Path | None, out_dir: str | Path, repo_id: str,
                       onnx_dir: str | Path | None = None, reports_dir: str | Path = "reports",
                       dataset_id: str | None = None, evaluations: list[str] | None = None,
                       manifest: str | Path = DEFAULT_MANIFEST, teacher_of: str | Path | None = None,
                       member_repos: list[str] | None = None) -> Path:
    """Write exactly the files a model push uploads into ``out_dir`` (which must be empty or absent).

    ``teacher_of``: the MAG-KD student folder this model taught (alone or in an ensemble); the card says so.
    ``member_repos``: the Hub ids every member of that (ensemble) teacher is pushed to, in the student's order, so
    that the card points to the others.
    """
    from .cards import LICENSE_NOTE, ModelInfo, build_model_card, count_parameters, load_reports, teacher_membership

    if model_dir is None and onnx_dir is None:
        raise ValueError("give the save_pretrained folder (--model) and/or an ONNX folder (--onnx)")
    if teacher_of is not None and model_dir is None:
        raise ValueError("--teacher-of needs the teacher's --model folder")
    if member_repos and teacher_of is None:
        raise ValueError("--member-repos names the members of the teacher of --teacher-of; give --teacher-of too")
    membership = teacher_membership(model_dir, teacher_of, member_repos) if teacher_of is not None else None
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new folder for the files to upload")
    out.mkdir(parents=True, exist_ok=True)

    info: ModelInfo | None = None
    if model_dir is not None:
        model_dir = Path(model_dir)
        for name in (CONFIG_NAME, SAFETENSORS_NAME):
            if not (model_dir / name).is_file():
                raise FileNotFoundError(f"{model_dir / name} not found: --model takes a folder written by "
                                        "save_pretrained (config.json + model.safetensors)")
        for name in (CONFIG_NAME, SAFETENSORS_NAME, RUN_CONFIG_NAME):
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, out / name)
        run_cfg = json.loads((model_dir / RUN_CONFIG_NAME).read_text()) if (model_dir / RUN_CONFIG_NAME).is_file() \
            else None
        info = ModelInfo(config=json.loads((model_dir / CONFIG_NAME).read_text()), run_config=run_cfg,
                         safetensors_sha256=sha256_file(model_dir / SAFETENSORS_NAME),
                         n_parameters=count_parameters(model_dir / SAFETENSORS_NAME), paths={str(model_dir)})

    if onnx_dir is not None:
        onnx_dir = Path(onnx_dir)
        if not (onnx_dir / ONNX_NAME).is_file() or not (onnx_dir / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"--onnx {onnx_dir} needs {ONNX_NAME} and {CONFIG_NAME} (written by "
                                    "`python -m train.export`)")
        verify_model_dir(onnx_dir)  # never publish a file that does not match its config
        onnx_cfg = json.loads((onnx_dir / CONFIG_NAME).read_text())
        if info is not None:
            for key in ("backbone", "img_size"):
                if info.config.get(key) != onnx_cfg.get(key):
                    raise ValueError(f"{key} differs between {model_dir}/{CONFIG_NAME} ({info.config.get(key)}) "
                                     f"and {onnx_dir}/{CONFIG_NAME} ({onnx_cfg.get(key)}): they are not the same "
                                     "model; export the ONNX file from this checkpoint")
            if info.config.get("version") != onnx_cfg.get("version"):
                raise ValueError(f"{model_dir}/{CONFIG_NAME} says version {info.config.get('version')!r}, "
                                 f"{onnx_dir}/{CONFIG_NAME} {onnx_cfg.get('version')!r}: one repository serves one "
                                 "model under one version; give the weights' config the bundle's version "
                                 "(train/ship.sh with VERSION=... writes both)")
            source = onnx_cfg.get("source_sha256")
            if source and source != info.safetensors_sha256:  # train.export records the weights it exported
                raise ValueError(f"{onnx_dir}/{ONNX_NAME} was exported from other weights (sha256 {source[:12]}...) "
                                 f"than {model_dir}/{SAFETENSORS_NAME} ({info.safetensors_sha256[:12]}...): one "
                                 "repository would serve one model under another's card; export this checkpoint")
        dest = out / ONNX_SUBDIR
        dest.mkdir()
        for f in sorted(onnx_dir.glob("*.onnx")) + [onnx_dir / CONFIG_NAME]:
            shutil.copy2(f, dest / f.name)
        # side files the config names, e.g. ood.npz (the app's "not a lesion" check fitted on this very file)
        from .export import copy_side_files

        copy_side_files(onnx_cfg, onnx_dir, dest)
        _write_sums(dest)
        if info is None:
            info = ModelInfo(config=onnx_cfg, has_safetensors=False)
        info.onnx_config = onnx_cfg
        info.paths.add(str(onnx_dir))
        info.onnx_files = {f.name: f.stat().st_size for f in sorted(dest.glob("*.onnx"))}

    assert info is not None
    info.teacher_of = membership
    card = build_model_card(info, load_reports(reports_dir), repo_id, dataset_id=dataset_id,
                            evaluations=evaluations, manifest=manifest)
    (out / "README.md").write_text(str(card), encoding="utf-8")
    (out / "LICENSE").write_text(LICENSE_NOTE, encoding="utf-8")
    if Path(manifest).is_file():  # the split itself, so that a researcher can check which images were test images
        shutil.copyfile(manifest, out / SPLIT_NAME)
    _write_sums(out, recursive=True, skip=("README.md",))  # every file a pull checks; the card may be edited online
    logger.info("model folder for %s: %s", repo_id, sorted(str(p.relative_to(out)) for p in out.rglob("*")
                                                            if p.is_file()))
    return out


def push_model(model_dir: str | Path | None, repo_id: str, onnx_dir: str | Path | None = None,
               reports_dir: str | Path = "reports", private: bool = False, revision: str | None = None,
               token: str | None = None, dry_run_dir: str | Path | None = None, dataset_id: str | None = None,
               evaluations: list[str] | None = None, commit_message: str | None = None,
               teacher_of: str | Path | None = None, member_repos: list[str] | None = None) -> Any:
    """Push weights, ONNX file(s), model card and license to ``repo_id`` in ONE commit.

    With ``dry_run_dir`` the folder is written there and nothing touches the network; returns the folder.
    Otherwise returns huggingface_hub's ``CommitInfo``.
    """
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise ValueError(f"--repo {repo_id!r}: give owner/name (the revision goes in --revision)")
    if dry_run_dir is not None:
        return build_model_folder(model_dir, dry_run_dir, repo_id, onnx_dir, reports_dir, dataset_id, evaluations,
                                  teacher_of=teacher_of, member_repos=member_repos)
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=_token(token))
    with tempfile.TemporaryDirectory(prefix="dermo_push_") as tmp:
        folder = build_model_folder(model_dir, Path(tmp) / "repo", repo_id, onnx_dir, reports_dir, dataset_id,
                                    evaluations, teacher_of=teacher_of, member_repos=member_repos)
        ops: list[Any] = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
                          for p in sorted(folder.rglob("*")) if p.is_file()]
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, repo_type="model", exist_ok=True)
        # the push replaces the repository's files: an earlier push's onnx/ (which a pull would prefer) or variants
        # must not outlive it; files it does not manage (.gitattributes, and so on) stay
        new = {op.path_in_repo for op in ops}
        stale = sorted(f for f in api.list_repo_files(repo_id, repo_type="model", revision=revision)
                       if f not in new and (f in PUSHED_ROOT_FILES or f.startswith(f"{ONNX_SUBDIR}/")))
        ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
        if stale:
            logger.info("removing %d file(s) of the earlier push from %s: %s", len(stale), repo_id, stale)
        info = api.create_commit(repo_id, operations=ops, repo_type="model", revision=revision,
                                 commit_message=commit_message or f"DermoHelper model: {len(ops)} files")
    logger.info("pushed %d files to %s: %s", len(ops), repo_id, getattr(info, "commit_url", info))
    return info


# ---------------------------------------------------------------------------------------------------- dataset
def build_dataset_dict(data_dir: str | Path = DEFAULT_DATA_DIR, manifest: str | Path = DEFAULT_MANIFEST):
    """The labelled folder as a ``DatasetDict`` (train / validation / test) with a ClassLabel ``label``."""
    import datasets

    from .data import SPLITS, load_hf_dataset

    ds = load_hf_dataset(data_dir, manifest=manifest)
    if "split" not in ds.column_names:
        raise FileNotFoundError(f"split manifest {manifest} not found; build it with `python -m dermo.data --write`")
    unassigned = sum(1 for s in ds["split"] if s not in SPLITS)
    if unassigned:
        raise ValueError(f"{unassigned} images of {data_dir} are not in the manifest {manifest}")
    ds = ds.cast_column("label", datasets.ClassLabel(names=["benign", "malignant"]))
    return datasets.DatasetDict({s: ds.filter(lambda x, s=s: x == s, input_columns="split").remove_columns("split")
                                 for s in SPLITS})


MAX_SHARD_ROWS = 4000  # ~14 MB of embedded 200x150 JPEGs per parquet file


def num_shards(dsd, max_shard_rows: int = MAX_SHARD_ROWS) -> dict[str, int]:
    """Parquet files per split: the same for the dry run and for push_to_hub (``num_shards=``)."""
    return {split: max(1, -(-len(ds) // max_shard_rows)) for split, ds in dsd.items()}


def write_dataset_folder(dsd, out_dir: str | Path, repo_id: str, manifest: str | Path = DEFAULT_MANIFEST,
                         max_shard_rows: int = MAX_SHARD_ROWS) -> Path:
    """Write the repo layout ``push_to_hub`` produces: data/<split>-XXXXX-of-YYYYY.parquet (images embedded) +
    README.md."""
    from datasets.table import embed_table_storage

    from .cards import LICENSE_NOTE, build_dataset_card

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; give a new folder")
    (out / "data").mkdir(parents=True)
    shards = num_shards(dsd, max_shard_rows)
    for split, ds in dsd.items():
        n_shards = shards[split]
        for i in range(n_shards):
            shard = ds.shard(num_shards=n_shards, index=i, contiguous=True).with_format("arrow")
            shard = shard.map(embed_table_storage, batched=True, keep_in_memory=True)
            shard.with_format(None).to_parquet(str(out / "data" / f"{split}-{i:05d}-of-{n_shards:05d}.parquet"))
    (out / "README.md").write_text(str(build_dataset_card(dsd, repo_id, manifest)), encoding="utf-8")
    (out / "LICENSE").write_text(LICENSE_NOTE, encoding="utf-8")
    return out


def push_dataset(data_dir: str | Path, repo_id: str, manifest: str | Path = DEFAULT_MANIFEST,
                 dry_run_dir: str | Path | None = None, private: bool = False, token: str | None = None) -> Any:
    """Push the labelled folder with its split as parquet (images embedded) via ``datasets``' push_to_hub.

    The dataset card is committed first, so push_to_hub keeps it and adds ``dataset_info`` to its front matter.
    With ``dry_run_dir`` the same layout is written there and nothing touches the network.
    """
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise ValueError(f"--repo {repo_id!r}: give owner/name")
    dsd = build_dataset_dict(data_dir, manifest)
    if dry_run_dir is not None:
        return write_dataset_folder(dsd, dry_run_dir, repo_id, manifest)
    from huggingface_hub import HfApi

    from .cards import LICENSE_NOTE, build_dataset_card

    tok = _token(token)
    api = HfApi(token=tok)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    card = build_dataset_card(dsd, repo_id, manifest)
    with tempfile.TemporaryDirectory(prefix="dermo_ds_") as tmp:
        (Path(tmp) / "README.md").write_text(str(card), encoding="utf-8")
        (Path(tmp) / "LICENSE").write_text(LICENSE_NOTE, encoding="utf-8")
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=tmp,
                          commit_message="Dataset card and license")
    info = dsd.push_to_hub(repo_id, private=private, token=tok, num_shards=num_shards(dsd),
                           commit_message="HAM10000 with lesion-grouped split")
    logger.info("pushed dataset %s", repo_id)
    return info


# -------------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:  # pragma: no cover - thin CLI, functions are tested
    import argparse

    ap = argparse.ArgumentParser(prog="python -m dermo.hub", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pm = sub.add_parser("push-model", help="push a model (weights, ONNX, card, license) in one commit")
    pm.add_argument("--model", help="save_pretrained folder (config.json + model.safetensors)")
    pm.add_argument("--onnx", help="folder with model.onnx + config.json (e.g. dermo/assets)")
    pm.add_argument("--repo", required=True, help="owner/name")
    pm.add_argument("--reports", default="reports")
    pm.add_argument("--evaluation", action="append",
                    help="reports/evaluation/<NAME> folder(s) of this model (default: matched by sha256)")
    pm.add_argument("--dataset-repo", help="Hub dataset id for the card (default: <owner>/ham10000)")
    pm.add_argument("--teacher-of", metavar="STUDENT",
                    help="the MAG-KD student folder this teacher taught (alone or as one member of an ensemble)")
    pm.add_argument("--member-repos", metavar="REPO,REPO",
                    help="with --teacher-of an ensemble: the Hub ids of all its members, in the student's order")
    pm.add_argument("--revision", help="branch to push to (created if missing)")
    pm.add_argument("--private", action="store_true")
    pm.add_argument("--dry-run", metavar="DIR", help="write the folder a push would upload; no network")
    pd_ = sub.add_parser("push-dataset", help="push HAM10000 with its split as parquet")
    pd_.add_argument("--data", default=str(DEFAULT_DATA_DIR))
    pd_.add_argument("--manifest", default=str(DEFAULT_MANIFEST))
    pd_.add_argument("--repo", required=True)
    pd_.add_argument("--private", action="store_true")
    pd_.add_argument("--dry-run", metavar="DIR")
    pl = sub.add_parser("pull", help="download a model (or reuse the cache) and print its folder")
    pl.add_argument("repo", help="owner/name or owner/name@revision")
    pl.add_argument("--revision")
    pl.add_argument("--cache-dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        if args.cmd == "push-model":
            out = push_model(args.model, args.repo, onnx_dir=args.onnx, reports_dir=args.reports,
                             private=args.private, revision=args.revision, dry_run_dir=args.dry_run,
                             dataset_id=args.dataset_repo, evaluations=args.evaluation,
                             teacher_of=args.teacher_of,
                             member_repos=args.member_repos.split(",") if args.member_repos else None)
        elif args.cmd == "push-dataset":
            out = push_dataset(args.data, args.repo, manifest=args.manifest, dry_run_dir=args.dry_run,
                               private=args.private)
        else:
            out = pull_model(args.repo, revision=args.revision, cache_dir=args.cache_dir)
    except (ValueError, FileNotFoundError, FileExistsError, ModelIntegrityError, LocalEntryNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    print(out)


if __name__ == "__main__":
    main()
