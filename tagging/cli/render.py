"""What the commands print: tables and verdicts, on one rich Console."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from tagging.labels import CATEGORY_SLUGS

if TYPE_CHECKING:
    from tagging.ops.demo import DemoRun, LoopDemoRun

console = Console(width=None if sys.stdout.isatty() else 120)  # wide tables in logs too


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
    """Held-out figures on the labelled real photos (tagging.model.evaluate.PhotoCheck)."""
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


def print_demo_summary(run: DemoRun) -> None:
    """`tagging demo`: one row per day, then where each day was published."""
    table = Table(title="published partitions")
    for header in ("partition", "state", "rows", "tagged", "errors", "review", "model",
                   "accuracy", "seconds"):
        table.add_column(header, no_wrap=True)
    for day in run.days:
        table.add_row(day.partition, "success" if day.ok else "failed", str(day.rows),
                      str(day.tagged), str(day.errors), str(day.needs_review),
                      day.model_version or "", "" if day.accuracy is None else str(day.accuracy),
                      str(day.seconds))
    console.print(table)
    for day in run.days:
        where = day.published or f"failed: {day.error} (log: {day.log})"
        console.print(f"{day.partition}: {where}", soft_wrap=True)
    if run.champion_input is not None:
        what = ("the 28x28 pixels" if run.champion_input == "pixels"
                else f"the features of the pretrained {run.champion_input} encoder")
        console.print(f"champion {run.champion}: input {what}; accuracy "
                      f"{run.champion_accuracy:.4f} on the Fashion-MNIST test split",
                      soft_wrap=True)
    console.print(f"champion {run.champion} in {run.registry}", soft_wrap=True)
    console.print(f"Airflow home (SQLite): {run.airflow_home}", soft_wrap=True)
    if run.table_version is not None:
        print_table_readers(run.table, run.table_version,
                            [d.partition for d in run.days if d.published])


def print_table_readers(table: str, version: int, days: list[str]) -> None:
    """How to read the published Delta table (docs/search/reading.md)."""
    day = days[-1] if days else "YYYY-MM-DD"
    console.print(f"published: the Delta table {table} (table version {version}, one dt= "
                  "partition a day); read it as a Delta table, not by globbing its Parquet "
                  "files (a glob sees superseded files):", soft_wrap=True, markup=False)
    console.print(f"  python -c \"from deltalake import DeltaTable; print(DeltaTable('{table}')"
                  f".to_pandas(filters=[('dt', '=', '{day}')]))\"", soft_wrap=True, markup=False)
    console.print(f"  tagging catalogue --catalogue {table.removesuffix('/tagged')} history "
                  f"--date {day}", soft_wrap=True, markup=False)
    console.print("  DuckDB, Spark, the change feed: docs/search/reading.md",
                  soft_wrap=True, markup=False)


def share(value: float | None) -> str:
    """A share (0-1) with two decimals; "-" when unknown."""
    return "-" if value is None else f"{value:.2f}"


def summary_table(title: str, summary: dict) -> Table:
    """One row per key: `tagging tag`'s summary."""
    table = Table(title=title, show_header=False)
    for key, value in summary.items():
        table.add_row(key.replace("_", " "), str(value))
    return table


def print_label_status(status: dict) -> None:
    """`tagging labels status`: labels per class and side, sources, rejected rows."""
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


def quality_table(history: list[dict], title: str) -> Table:
    """`tagging quality`: one row per published day."""
    table = Table(title=title)
    for header in ("partition", "model", "rows", "verified, unseen", "accuracy", "precision",
                   "coverage", "review rate"):
        table.add_column(header, justify="left" if header in ("partition", "model") else "right")
    for h in history:
        table.add_row(h["partition"], h["model_version"], str(h["rows"]), str(h["verified"]),
                      share(h["accuracy"]), share(h["unflagged_precision"]), share(h["coverage"]),
                      share(h["review_rate"]))
    return table


def publications_table(publications: list[dict], title: str) -> Table:
    """`tagging quality --publications`: what search saw, one row per publication."""
    table = Table(title=title)
    for header in ("partition", "#", "table v.", "model", "published (UTC)", "rows",
                   "unseen", "accuracy", "precision", "coverage", "review"):
        table.add_column(header, no_wrap=True, justify="left" if header in (
            "partition", "model", "published (UTC)") else "right")
    for p in publications:
        q, counts = p.get("quality") or {}, p.get("counts") or {}
        note = f" (restore of {p['restored_from']})" if p.get("restored_from") is not None else ""
        table.add_row(p["partition"], str(p["publication"]), str(p["table_version"]),
                      p["model_version"] + note,
                      (p.get("published_at") or "-")[:16].replace("T", " "),
                      str(counts.get("rows", "-")), str(q.get("verified", "-")),
                      share(q.get("accuracy")), share(q.get("unflagged_precision")),
                      share(q.get("coverage")), share(q.get("review_rate")))
    return table


def print_loop_demo(run: LoopDemoRun) -> None:
    """`tagging demo --real-photos`: one line per day (fits 120 columns); the gate's reasons
    and the full live quality are in the JSON file it names."""
    table = Table(title="the learning loop, day by day")
    for header in ("day", "run", "trained", "gate", "champion", "hold acc", "live acc",
                   "live cov", "review", "re-tagged"):
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for day in run.days:
        gate = " ".join(f"{g.event} {g.version}" for g in day.gate) or "-"
        table.add_row(day.partition, "ok" if day.ok else "FAIL", " ".join(day.trained) or "-",
                      gate, day.champion or "-", share(day.holdout_accuracy),
                      share(day.quality.get("accuracy")), share(day.quality.get("coverage")),
                      share(day.quality.get("review_rate")), str(len(day.retagged) or "-"))
    console.print(table)
    for day in run.days:
        if not day.ok:
            console.print(f"{day.partition} failed: {day.error}", soft_wrap=True)
    console.print(f"details (gate reasons, holdout, live quality): {run.details}", soft_wrap=True)
    console.print(f"champion {run.champion} in {run.registry}; live quality: "
                  f"tagging quality --catalogue {run.catalogue}", soft_wrap=True)


def print_stack_status(status: dict, stack) -> None:
    """`tagging stack`: the services, and where to reach the stack."""
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
        console.print(f"catalogue {status['catalogue']}, registry {status['registry']}"
                      + (f" (S3 server {status['s3']}; AWS_* in {stack.env_file})"
                         if status.get("s3") else ""), soft_wrap=True)
        console.print(f"started in {status['startup_seconds']} s; for the airflow CLI: "
                      f"source {stack.env_file}", soft_wrap=True)
