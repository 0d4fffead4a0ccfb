"""Shared CLI plumbing: every RunConfig field becomes a flag of the same name (``--lr 1e-3``)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from typing import Any, Sequence

from dermo.config import RunConfig, flat_fields


def _parse_value(field: dataclasses.Field, text: str) -> Any:
    default = field.default if field.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"--{field.name} expects true/false, got {text!r}")
    if isinstance(default, tuple):
        return tuple(float(v) if isinstance(default[0], float) else v for v in text.split(","))
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        return float(text)
    return text


def build_parser(description: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description, allow_abbrev=False)
    ap.add_argument("--config", help="JSON file with a RunConfig (sections model/data/train/distill)")
    for name, (section, f) in flat_fields().items():
        default = f.default if f.default is not dataclasses.MISSING else None
        ap.add_argument(f"--{name}", dest=name, default=None, metavar=type(default).__name__.upper(),
                        help=f"{section}.{name} (default: {default})")
    return ap


def resolve(args: argparse.Namespace, base: RunConfig | None = None, **forced: Any) -> RunConfig:
    """Config file (if any) <- defaults in ``base`` <- CLI flags <- ``forced``."""
    cfg = RunConfig.load(args.config) if getattr(args, "config", None) else (base or RunConfig())
    fields = flat_fields()
    overrides = {k: _parse_value(fields[k][1], v) for k, v in vars(args).items()
                 if k in fields and v is not None}
    overrides.update(forced)
    return cfg.override(**overrides)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=1, default=str))


def main_with(description: str, argv: Sequence[str] | None = None, base: RunConfig | None = None, **forced):
    from dermo.training import run

    args = build_parser(description).parse_args(argv)
    setup_logging()
    cfg = resolve(args, base, **forced)
    result = run(cfg)
    print_json({k: v for k, v in result.items() if k != "config"})
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # on N processes: else gloo/NCCL threads may abort the exit
        dist.destroy_process_group()  # of a finished run ("terminate called without an active exception")
    return result
