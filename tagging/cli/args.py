"""Options several commands share, and the objects they name (registry, gate policy)."""

from __future__ import annotations

import argparse
from datetime import date as Date
from pathlib import Path

from tagging.settings import LoopPolicy
from tagging.storage import Root


def iso_date(value: str) -> str:
    try:
        return Date.fromisoformat(value).isoformat()
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {value!r}") from e


def add_registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Root, default=None,
                   help="model registry: a folder or s3://bucket/prefix (default: "
                   "$TAGGING_REGISTRY or var/registry)")


def add_catalogue_arg(p: argparse.ArgumentParser) -> None:
    from tagging.storage import Root

    p.add_argument("--catalogue", type=Root, default=None,
                   help="catalogue root, a folder or s3://bucket/prefix (default: "
                   "$TAGGING_CATALOGUE or var/catalogue)")


def add_data_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=None,
                   help="Fashion-MNIST folder (default: $TAGGING_FASHION_MNIST_DIR, "
                   "else downloaded to ~/.cache)")


def add_defaulted(p: argparse.ArgumentParser, owner: object, name: str, help: str) -> None:
    """--NAME, whose default (and type) is the field `name` of `owner`, the dataclass that
    owns that default (LoopPolicy, TaggingLimits, GatePolicy...)."""
    default = getattr(owner, name)
    p.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                   help=f"{help} (default {default})")


def add_gate_args(p: argparse.ArgumentParser) -> None:
    from model_registry import GatePolicy

    gate = GatePolicy()
    for name, help in (
            ("min_accuracy", "absolute accuracy floor"),
            ("min_class_recall", "per-class recall floor"),
            ("tolerance", "how far below the champion's accuracy a candidate may be"),
            ("real_photo_tolerance", "how far below the champion's held-out accuracy on the "
             "same real photos a candidate may be"),
            ("holdout_tolerance", "how far below the champion a candidate may be on the "
             "current holdout, beyond the confidence bound")):
        add_defaulted(p, gate, name, help)


def add_live_quality_args(p: argparse.ArgumentParser) -> None:
    loop = LoopPolicy()
    add_defaulted(p, loop, "live_accuracy_margin", "validation fails when accuracy on "
                  "verified rows is this far below the version's holdout accuracy")
    add_defaulted(p, loop, "review_rate_margin", "validation fails when the review rate is "
                  "this far above the version's expected rate")


def registry_of(args):
    from tagging.model.registry import open_registry

    return open_registry(args.registry)


def policy_of(args):
    from model_registry import GatePolicy

    return GatePolicy(args.min_accuracy, args.min_class_recall, args.tolerance,
                      args.real_photo_tolerance, args.holdout_tolerance)
