"""The `tagging` command line: train, evaluate, tag a catalogue, manage the registry."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import date as Date
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from tagging import settings
from tagging.errors import EXPECTED_ERRORS
from tagging.labels import CATEGORY_SLUGS
from tagging.settings import Settings, TaggingLimits

console = Console(width=None if sys.stdout.isatty() else 120)  # wide tables in logs too

DESCRIPTION = """\
Tag an online shop's product photos with Fashion-MNIST clothing categories.

Typical flow:
  tagging train                          train, register, and promote if at least as good
  tagging demo-catalogue --days 3        render a demo catalogue of product photos
  tagging tag --date 2026-11-28          tag one day's partition and publish it
  tagging registry list                  see model versions and the champion

Paths default to ./var (set TAGGING_HOME), or TAGGING_REGISTRY / TAGGING_CATALOGUE;
Fashion-MNIST is read from TAGGING_FASHION_MNIST_DIR, else downloaded to ~/.cache.
"""


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info chatter
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        return args.func(args) or 0
    except EXPECTED_ERRORS as e:  # expected failures: say what, not a trace
        if args.verbose:
            raise
        console.print(f"[bold red]error:[/] {e}")
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagging", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model, register it, promote it through the gate",
                       description="Train the dense classifier on Fashion-MNIST (plus labelled "
                       "real photos, with --real-photos), evaluate it on the test split, write a "
                       "report (metrics.json, learning curves, confusion matrix; held-out figures "
                       "and a contact sheet of the real photos), register it, and promote it to "
                       "champion if it passes the gate.")
    add_registry_arg(p)
    add_data_arg(p)
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping decides)")
    p.add_argument("--hidden-units", help="hidden layer sizes, e.g. 256,128")
    p.add_argument("--train-subset", type=int, help="train on the first N images only")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--real-photos", default=Settings.from_env().real_photos,
                   help="labelled real photos "
                   "(folder with manifest.csv and images/), split by a fixed hash of the file: "
                   "the train side is trained on, the holdout (~20 %%) calibrates and chooses "
                   "the needs_review threshold (default: "
                   f"${settings.REAL_PHOTOS_ENV}; without them, calibration uses the validation "
                   "split, which suits Fashion-MNIST-like photos only)")
    p.add_argument("--label-store", type=Path, help="a catalogue's label store "
                   "(<catalogue>/labels, see `tagging labels`): learn from its verified labels "
                   "the same way")
    p.add_argument("--real-photo-repeats", type=int, help="copies of each train-side photo in "
                   "the training set (default 60); 0: do not train on them, only calibrate")
    add_gate_args(p)
    p.add_argument("--no-promote", action="store_true", help="register only; do not promote")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a registered version on the test split",
                       description="Load VERSION (or 'champion') with Keras safe mode and "
                       "measure it, predicting as the tagger does (calibration, mirror "
                       "averaging), on the Fashion-MNIST test split.")
    p.add_argument("version", help="version id (v0003) or 'champion'")
    add_registry_arg(p)
    add_data_arg(p)
    p.add_argument("--out", type=Path, help="write metrics.json and confusion_matrix.png here")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tag", help="tag one day's catalogue partition and publish it",
                       description="Read catalogue/incoming/dt=DATE/*.parquet, predict a "
                       "category for every photo, and publish catalogue/tagged/dt=DATE "
                       "atomically with a _MANIFEST.json.")
    add_catalogue_arg(p)
    p.add_argument("--date", required=True, type=iso_date, help="partition date YYYY-MM-DD")
    add_registry_arg(p)
    p.add_argument("--model", default="champion", help="'champion' (default) or a version id")
    p.add_argument("--review-threshold", type=float,
                   help="override the model's confidence threshold for needs_review")
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    limits = TaggingLimits()
    p.add_argument("--rows-per-shard", type=int, default=limits.rows_per_shard,
                   help=f"rows per shard (default {limits.rows_per_shard})")
    p.add_argument("--max-error-rate", type=float, default=limits.max_error_rate,
                   help="validation fails above this share of untaggable rows "
                   f"(default {limits.max_error_rate})")
    p.add_argument("--max-review-rate", type=float, default=limits.max_review_rate,
                   help="validation fails above this share of needs_review rows "
                   f"(default {limits.max_review_rate}), unless the version has an expected "
                   "review rate from held-out real photos")
    add_live_quality_args(p)
    p.set_defaults(func=cmd_tag)

    p = sub.add_parser("demo-catalogue", help="render a demo catalogue of product photos",
                       description="Render Fashion-MNIST test images as 762x1000 product photos "
                       "(off-white background, tints, margins, JPEG/PNG/WebP, a few broken "
                       "rows) into catalogue/incoming/dt=DATE/, with a true_category column.")
    add_catalogue_arg(p)
    add_data_arg(p)
    p.add_argument("--days", type=int, default=3, help="number of daily partitions")
    p.add_argument("--end", type=iso_date, default=Date.today().isoformat(),
                   help="last partition date (default: today)")
    p.add_argument("--rows-per-day", type=int, default=200, help="photos per partition")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo_catalogue)

    p = sub.add_parser("evaluate-photos", help="measure the tagger on labelled real photos",
                       description="Accuracy per source and class, precision and coverage of "
                       "tags not flagged needs_review, calibration, a contact sheet and a "
                       "reliability diagram, for a folder of real photos with a manifest CSV "
                       "(columns file,label).")
    p.add_argument("--images", type=Path, required=True, help="folder of photos")
    p.add_argument("--manifest", type=Path, required=True, help="CSV with file and label")
    add_registry_arg(p)
    p.add_argument("--model", default="champion", help="'champion' (default) or a version id")
    p.add_argument("--out", type=Path, default=Path("var/photo-eval"), help="report folder")
    p.set_defaults(func=cmd_evaluate_photos)

    p = sub.add_parser("demo", help="end to end: demo catalogue + the Airflow DAG (SQLite)",
                       description="Render a demo catalogue for a few days, then run the real "
                       "Airflow DAG for each day with SQLite: retrain, gate, tag, publish, "
                       "validate. Prints what was published where.")
    p.add_argument("--workdir", type=Path, default=Path("var/demo"), help="all state goes here")
    add_data_arg(p)
    p.add_argument("--days", type=int, default=3, help="number of daily partitions")
    p.add_argument("--rows-per-day", type=int, default=500, help="photos per partition")
    p.add_argument("--real-photos", type=Path, help="run the learning loop instead: spread "
                   "this labelled photo folder (manifest.csv + images/) over the days, with "
                   "verified_category revealed for part of each day")
    p.add_argument("--reveal", type=float, default=0.8,
                   help="with --real-photos: share of each day's rows verified (default 0.8)")
    p.add_argument("--min-new-labels", type=int, default=40,
                   help="with --real-photos: the DAG's min_new_labels (default 40)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("stack", help="the distributed engine on this machine (no Docker)",
                       description="Start, inspect or stop the services of docker-compose.yml "
                       "as local processes on 127.0.0.1: PostgreSQL, Redis, the Airflow "
                       "api-server, scheduler, dag-processor, triggerer and Celery workers "
                       "(CeleryExecutor). `make system-deps` installs PostgreSQL and Redis.")
    p.add_argument("action", choices=["up", "status", "down"])
    p.add_argument("--workdir", type=Path, default=Path("var/stack"),
                   help="catalogue/, registry/ and stack/ (DB, logs, state) go here")
    p.add_argument("--tagging-workers", type=int, default=2,
                   help="Celery workers serving the tagging queue (default 2)")
    p.add_argument("--scheduled", action="store_true",
                   help="let the scheduler create runs by the clock (default: backfill/trigger)")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("labels", help="the label store: harvest verified rows, show its state",
                       description="The catalogue's labelled-photo store (<catalogue>/labels): "
                       "rows with verified_category, preprocessed as the tagger sees them, split "
                       "into a train side and a fixed holdout by a hash of product_id.")
    lab = p.add_subparsers(required=True, metavar="ACTION")
    q = lab.add_parser("harvest", help="harvest a day's verified rows (and the days before)")
    add_catalogue_arg(q)
    q.add_argument("--date", required=True, type=iso_date, help="last partition, YYYY-MM-DD")
    q.add_argument("--days", type=int, default=1,
                   help="harvest this many days up to --date (default 1; the DAG uses 30)")
    q.add_argument("--real-photos", type=Path, help="also add a labelled photo folder")
    q.set_defaults(func=cmd_labels_harvest)
    q = lab.add_parser("status", help="labels per side and class; rejected rows and why")
    add_catalogue_arg(q)
    q.set_defaults(func=cmd_labels_status)

    p = sub.add_parser("quality", help="live quality of the published tags, by day",
                       description="Per published partition: verified rows, accuracy of the "
                       "published tags on them, precision of unflagged tags, coverage, review "
                       "rate and the model version; draws a PNG of them by day.")
    add_catalogue_arg(p)
    p.add_argument("--out", type=Path, default=None,
                   help="the PNG (default: <catalogue>/quality.png)")
    p.set_defaults(func=cmd_quality)

    add_registry_commands(sub)
    return parser


def add_registry_commands(sub) -> None:
    p = sub.add_parser("registry", help="list, show, promote or roll back model versions",
                       description="The model registry: immutable versions and the champion.")
    add_registry_arg(p)
    reg = p.add_subparsers(required=True, metavar="ACTION")
    reg.add_parser("list", help="every version and the champion").set_defaults(func=cmd_list)
    q = reg.add_parser("show", help="one version's metrics and metadata")
    q.add_argument("version", help="version id or 'champion'")
    q.set_defaults(func=cmd_show)
    q = reg.add_parser("promote", help="make a version champion if it passes the gate")
    q.add_argument("version")
    add_gate_args(q)
    q.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    q.set_defaults(func=cmd_promote)
    q = reg.add_parser("rollback", help="move the champion back to the previous one")
    q.set_defaults(func=cmd_rollback)
    q = reg.add_parser("events", help="the registry's event log")
    q.set_defaults(func=cmd_events)


# ---------------------------------------------------------------- argument helpers


def iso_date(value: str) -> str:
    try:
        return Date.fromisoformat(value).isoformat()
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a YYYY-MM-DD date: {value!r}") from e


def add_registry_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=None,
                   help="model registry folder (default: $TAGGING_REGISTRY or var/registry)")


def add_catalogue_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalogue", type=Path, default=None,
                   help="catalogue root (default: $TAGGING_CATALOGUE or var/catalogue)")


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


def print_decision(decision) -> None:
    verdict = "[green]promoted[/]" if decision.passed or decision.forced else "[red]refused[/]"
    console.print(f"gate: {decision.candidate} {verdict}"
                  + (" (forced)" if decision.forced else ""))
    for reason in decision.reasons:
        console.print(f"  - {reason}")


def metrics_table(title: str, metrics: dict) -> Table:
    table = Table(title=title)
    for column in ("category", "precision", "recall", "f1"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for i, slug in enumerate(CATEGORY_SLUGS):
        table.add_row(slug, *(f"{metrics[f'per_class_{m}'][i]:.3f}"
                              for m in ("precision", "recall", "f1")))
    table.add_section()
    table.add_row("accuracy", "", f"{metrics['accuracy']:.4f}", f"loss {metrics['loss']:.4f}")
    return table


def photo_check_table(check: dict) -> Table:
    """Held-out figures on the labelled real photos (tagging.photos.evaluate.PhotoCheck)."""
    table = Table(title=f"held out: {check['photos']}", show_header=False)
    table.add_row("accuracy", f"{check['accuracy']:.3f}")
    for source, accuracy in check["accuracy_per_source"].items():
        table.add_row(f"  accuracy, {source}", f"{accuracy:.3f}")
    precision = check["published_precision"]
    table.add_row("not flagged for review: precision",
                  "n/a" if precision is None else f"{precision:.3f}")
    table.add_row("not flagged for review: coverage", f"{check['published_coverage']:.3f}")
    table.add_row("expected calibration error", f"{check['ece']:.3f}")
    return table


# ---------------------------------------------------------------- commands


def cmd_train(args) -> int:
    from tagging.model.train import TrainConfig, train_and_promote, train_candidate

    overrides = {k: v for k, v in {"epochs": args.epochs, "train_subset": args.train_subset,
                                   "seed": args.seed, "real_photos": args.real_photos,
                                   "label_store": args.label_store and str(args.label_store),
                                   "real_photo_repeats": args.real_photo_repeats,
                                   }.items() if v is not None}
    if args.hidden_units:
        overrides["hidden_units"] = [int(u) for u in args.hidden_units.split(",")]
    train_config = TrainConfig.from_dict(overrides)
    registry_root = registry_of(args).root
    common = dict(registry_root=registry_root, data_dir=args.data_dir,
                  created_by="cli:tagging train", progress=True)
    if args.no_promote:
        candidate, decision = train_candidate(train_config, reuse_if_unchanged=False,
                                              **common), None
    else:
        candidate, decision = train_and_promote(train_config, policy=policy_of(args), **common)
    info = registry_of(args).get(candidate.version)
    console.print(metrics_table(f"{candidate.version}: Fashion-MNIST test split",
                                info.metadata["metrics"]))
    m = info.metadata["metrics"]
    console.print(f"trained {m['epochs_run']} epochs in {m['train_wall_time_s']:.1f} s; "
                  f"report: {info.path / 'report'}")
    if "real_photos" in m:
        console.print(photo_check_table(m["real_photos"]))
    if decision is not None:
        print_decision(decision)
    console.print(f"champion: {registry_of(args).champion()}")
    return 0


def cmd_evaluate(args) -> int:
    import numpy as np

    from tagging.model.data import load_fashion_mnist
    from tagging.model.inference import Classifier
    from tagging.model.report import evaluate, plot_confusion

    registry = registry_of(args)
    info = registry.get(args.version)
    classifier = Classifier.from_keras(registry.load_keras_model(info.version),
                                       info.metadata.get("calibration"))
    data = load_fashion_mnist(args.data_dir)
    metrics = evaluate(classifier.predict_proba(data.x_test), data.y_test)
    console.print(metrics_table(f"{info.version}: Fashion-MNIST test split", metrics))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_confusion(np.array(metrics["confusion_matrix"]),
                       args.out / "confusion_matrix.png", f"{info.version}: test split")
        console.print(f"wrote {args.out}/metrics.json and confusion_matrix.png")
    return 0


def cmd_tag(args) -> int:
    from tagging.catalogue.job import tag_partition
    from tagging.catalogue.validate import truth_agreement, validate_partition
    from tagging.loop.quality import expected_of

    catalogue = args.catalogue or Settings.from_env().catalogue_root
    summary = tag_partition(catalogue, args.date, registry_root=registry_of(args).root,
                            model=args.model, review_threshold=args.review_threshold,
                            workers=args.workers, rows_per_shard=args.rows_per_shard,
                            progress=True)
    summary |= truth_agreement(catalogue, args.date)
    table = Table(title=f"tagged partition {args.date}", show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    console.print(table)
    report = validate_partition(catalogue, args.date, max_error_rate=args.max_error_rate,
                                max_review_rate=args.max_review_rate,
                                expected=expected_of(registry_of(args).root,
                                                     summary["model_version"]),
                                live_accuracy_margin=args.live_accuracy_margin,
                                review_rate_margin=args.review_rate_margin)
    console.print(f"[green]valid[/]: {report['rows']} rows, error rate {report['error_rate']}, "
                  f"needs-review rate {report['review_rate']}")
    return 0


def cmd_demo_catalogue(args) -> int:
    from tagging.catalogue.demo import generate_demo_catalogue

    end = Date.fromisoformat(args.end)
    dates = [(end - timedelta(days=d)).isoformat() for d in reversed(range(args.days))]
    files = generate_demo_catalogue(args.catalogue or Settings.from_env().catalogue_root, dates,
                                    rows_per_day=args.rows_per_day, data_dir=args.data_dir,
                                    seed=args.seed)
    for f in files:
        console.print(f"wrote {f}")
    return 0


def cmd_evaluate_photos(args) -> int:
    from tagging.model.inference import Classifier
    from tagging.photos.evaluate import evaluate_photos

    classifier = Classifier.from_registry(registry_of(args).root, args.model)
    report = evaluate_photos(args.images, args.manifest, classifier, args.out)
    console.print_json(json.dumps({k: v for k, v in report.items()
                                   if not isinstance(v, list | dict) or k == "per_source"}))
    console.print(f"report, contact sheet and reliability diagram in {args.out}")
    info = registry_of(args).get(args.model)
    trained_on = info.metadata["hyperparameters"].get("real_photos")
    if not trained_on:
        console.print(f"[yellow]note: {info.version} never saw labelled real photos (its "
                      "needs_review threshold comes from the validation split); for a real "
                      "catalogue train with --real-photos DIR[/yellow]")
    elif Path(trained_on).resolve() in Path(args.images).resolve().parents:
        console.print(f"[yellow]warning: {info.version} was trained or calibrated on {trained_on}: "
                      "these figures are in-sample; the held-out ones are in "
                      f"{info.path / 'report' / 'real-photos'}[/yellow]")
    return 0


def cmd_demo(args) -> int:
    from tagging.catalogue.demo import generate_demo_catalogue
    from tagging.ops.demo import run_demo

    today = Date.today()
    dates = [(today - timedelta(days=d)).isoformat() for d in reversed(range(1, args.days + 1))]
    if args.real_photos:
        return demo_loop(args, dates)
    catalogue = args.workdir / "catalogue"
    generate_demo_catalogue(catalogue, dates, rows_per_day=args.rows_per_day,
                            data_dir=args.data_dir)
    summary = run_demo(args.workdir, dates, data_dir=args.data_dir)
    print_demo_summary(summary)
    return 1 if summary["failed"] else 0


def demo_loop(args, dates: list[str]) -> int:
    """`tagging demo --real-photos DIR`: the learning loop on the real DAG, day by day."""
    from tagging.ops.demo import run_loop_demo

    summary = run_loop_demo(args.workdir, args.real_photos, dates, reveal=args.reveal,
                            params={"min_new_labels": args.min_new_labels},
                            data_dir=args.data_dir)
    table = Table(title="the learning loop, day by day")
    for header in ("day", "state", "trained", "gate", "champion", "held out", "holdout acc",
                   "holdout cov", "live acc", "live cov", "review", "re-tagged"):
        table.add_column(header, overflow="fold")
    for day in summary["days"]:
        quality = day["quality"]
        gate = "; ".join(f"{g['version']} {g['event']}" for g in day["gate"]) or "-"
        table.add_row(day["partition"], day["state"], ", ".join(day["trained"]) or "reused",
                      gate, str(day["champion"]), str(day["holdout_photos"] or "-"),
                      _fmt(day["holdout_accuracy"]), _fmt(day["holdout_coverage"]),
                      _fmt(quality.get("accuracy")), _fmt(quality.get("coverage")),
                      _fmt(quality.get("review_rate")), ", ".join(day["retagged"]) or "-")
    console.print(table)
    for day in summary["days"]:
        for g in day["gate"]:
            console.print(f"{day['partition']} gate {g['version']} {g['event']}: "
                          + "; ".join(g["reasons"]), soft_wrap=True)
        if day["state"] != "success":
            console.print(f"{day['partition']} failed: {day.get('error')}", soft_wrap=True)
    console.print(f"champion {summary['champion']} in {summary['registry']}; live quality: "
                  f"tagging quality --catalogue {summary['catalogue']}", soft_wrap=True)
    return 1 if summary["failed"] else 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def cmd_labels_harvest(args) -> int:
    from tagging.loop.steps import harvest_labels

    catalogue = args.catalogue or Settings.from_env().catalogue_root
    summary = harvest_labels(catalogue, args.date, harvest_days=args.days,
                             real_photos=args.real_photos,
                             image_root=Settings.from_env().image_root_for(catalogue))
    for h in summary["harvested"]:
        console.print(f"harvested {h['source']}: {h['accepted']} of {h['verified_rows']} "
                      f"verified rows accepted; rejected {h['rejected'] or 'none'}")
    for source in summary["unchanged"]:
        console.print(f"{source}: unchanged since its last harvest")
    console.print(f"label store {summary['store']}: {summary['labels']} labels "
                  f"({summary['train']} train side, {summary['holdout']} held out)")
    return 0


def cmd_labels_status(args) -> int:
    from tagging.loop.labelstore import LabelStore

    status = LabelStore.of_catalogue(args.catalogue or Settings.from_env().catalogue_root
                                     ).status()
    table = Table(title=f"label store {status['store']}: {status['labels']} labels")
    for header in ("class", "train", "holdout"):
        table.add_column(header, justify="left" if header == "class" else "right")
    for name, counts in status["per_class"].items():
        table.add_row(name, str(counts["train"]), str(counts["holdout"]))
    table.add_section()
    table.add_row("all", str(status["train"]), str(status["holdout"]))
    console.print(table)
    sources = Table(title="sources")
    for header in ("source", "verified rows", "accepted", "rejected", "harvested at"):
        sources.add_column(header)
    for name, s in status["sources"].items():
        rejected = ", ".join(f"{k} {v}" for k, v in s["rejected"].items()) or "-"
        sources.add_row(name, str(s["verified_rows"]), str(s["accepted"]), rejected,
                        s["harvested_at"])
    console.print(sources)
    for name, s in status["sources"].items():
        for e in s["rejected_examples"]:
            console.print(f"rejected in {name}: {e['product_id']!r}: {e['reason']}"
                          + (f" ({e['detail']})" if e.get("detail") else ""), soft_wrap=True)
    return 0


def cmd_quality(args) -> int:
    from tagging.loop.quality import plot_quality, quality_history

    catalogue = args.catalogue or Settings.from_env().catalogue_root
    history = quality_history(catalogue)
    if not history:
        console.print(f"no published partitions in {catalogue}")
        return 0
    table = Table(title=f"live quality of {catalogue}")
    for header in ("partition", "model", "rows", "verified", "accuracy", "precision",
                   "coverage", "review rate"):
        table.add_column(header, justify="left" if header in ("partition", "model") else "right")
    for h in history:
        table.add_row(h["partition"], h["model_version"], str(h["rows"]), str(h["verified"]),
                      _fmt(h["accuracy"]), _fmt(h["unflagged_precision"]), _fmt(h["coverage"]),
                      _fmt(h["review_rate"]))
    console.print(table)
    path = plot_quality(history, args.out or Path(catalogue) / "quality.png")
    console.print(f"plot: {path}")
    return 0


def print_demo_summary(summary: dict) -> None:
    table = Table(title="published partitions")
    columns = {"partition": "partition", "state": "state", "rows": "rows", "tagged": "tagged",
               "errors": "errors", "needs_review": "review", "model_version": "model",
               "accuracy_vs_true_category": "accuracy", "seconds": "seconds"}
    for header in columns.values():
        table.add_column(header, no_wrap=True)
    for day in summary["days"]:
        table.add_row(*(str(day.get(key, "")) for key in columns))
    console.print(table)
    for day in summary["days"]:
        where = day.get("published") or f"failed: {day.get('error')} (log: {day['log']})"
        console.print(f"{day['partition']}: {where}", soft_wrap=True)
    console.print(f"champion {summary['champion']} in {summary['registry']}", soft_wrap=True)
    console.print(f"Airflow home (SQLite): {summary['airflow_home']}", soft_wrap=True)


def cmd_stack(args) -> int:
    from tagging.ops.stack import Stack

    stack = Stack(args.workdir, tagging_workers=args.tagging_workers, scheduled=args.scheduled)
    if args.action == "down":
        stack.down()
        console.print(f"stack in {stack.root} stopped")
        return 0
    status = stack.up() if args.action == "up" else stack.status()
    table = Table(title=f"stack in {stack.root}")
    for header in ("service", "pid", "alive", "log"):
        table.add_column(header, no_wrap=header != "log")
    for service in status["services"]:
        table.add_row(service["name"], str(service["pid"]), str(service["alive"]),
                      service["log"])
    console.print(table)
    if status["services"]:
        console.print(f"Airflow UI and API: {status['api_url']} (users and passwords: "
                      f"{stack.home / 'simple_auth_manager_passwords.json.generated'})",
                      soft_wrap=True)
        console.print(f"started in {status['startup_seconds']} s; for the airflow CLI: "
                      f"source {stack.env_file}", soft_wrap=True)
    return 0 if status["up"] or args.action == "status" else 1


def cmd_list(args) -> int:
    from model_registry.render import render_version_list

    console.print(render_version_list(registry_of(args)), end="")
    return 0


def cmd_show(args) -> int:
    from model_registry.render import render_version

    console.print(render_version(registry_of(args), args.version), end="", markup=False)
    return 0


def cmd_promote(args) -> int:
    decision = registry_of(args).promote(args.version, policy=policy_of(args),
                                         actor="cli:tagging registry promote", force=args.force)
    print_decision(decision)
    return 0 if decision.passed or decision.forced else 2


def cmd_rollback(args) -> int:
    version = registry_of(args).rollback(actor="cli:tagging registry rollback")
    console.print(f"champion rolled back to {version}")
    return 0


def cmd_events(args) -> int:
    for event in registry_of(args).events():
        console.print(json.dumps(event), markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
