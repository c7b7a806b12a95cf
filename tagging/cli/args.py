"""Options several commands share, and the objects they name (registry, gate policy)."""

from __future__ import annotations

import argparse
from datetime import date as Date
from pathlib import Path

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


def add_gate_args(p: argparse.ArgumentParser) -> None:
    from model_registry import GatePolicy

    d = GatePolicy()
    p.add_argument("--min-accuracy", type=float, default=d.min_accuracy,
                   help=f"absolute accuracy floor (default {d.min_accuracy})")
    p.add_argument("--min-class-recall", type=float, default=d.min_class_recall,
                   help=f"per-class recall floor (default {d.min_class_recall})")
    p.add_argument("--tolerance", type=float, default=d.tolerance,
                   help=f"how far below the champion's accuracy a candidate may be "
                   f"(default {d.tolerance})")
    p.add_argument("--real-photo-tolerance", type=float, default=d.real_photo_tolerance,
                   help="how far below the champion's held-out accuracy on the same real "
                   f"photos a candidate may be (default {d.real_photo_tolerance})")
    p.add_argument("--holdout-tolerance", type=float, default=d.holdout_tolerance,
                   help="how far below the champion a candidate may be on the current holdout, "
                   f"beyond the confidence bound (default {d.holdout_tolerance})")


def add_live_quality_args(p: argparse.ArgumentParser) -> None:
    from tagging.loop.quality import ACCURACY_MARGIN, REVIEW_MARGIN

    p.add_argument("--live-accuracy-margin", type=float, default=ACCURACY_MARGIN,
                   help="validation fails when accuracy on verified rows is this far below the "
                   f"version's holdout accuracy (default {ACCURACY_MARGIN})")
    p.add_argument("--review-rate-margin", type=float, default=REVIEW_MARGIN,
                   help="validation fails when the review rate is this far above the "
                   f"version's expected rate (default {REVIEW_MARGIN})")


def registry_of(args):
    from tagging.model.registry import open_registry

    return open_registry(args.registry)


def policy_of(args):
    from model_registry import GatePolicy

    return GatePolicy(args.min_accuracy, args.min_class_recall, args.tolerance,
                      args.real_photo_tolerance, args.holdout_tolerance)
