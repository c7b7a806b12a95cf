"""What the commands print: tables and verdicts, on one rich Console."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from tagging.labels import CATEGORY_SLUGS

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
    if summary.get("table_version") is not None:
        print_table_readers(summary["table"], summary["table_version"],
                            [d["partition"] for d in summary["days"] if d.get("published")])


def print_table_readers(table: str, version: int, days: list[str]) -> None:
    """How to read the published Delta table (README: "Reading the published catalogue")."""
    day = days[-1] if days else "YYYY-MM-DD"
    console.print(f"published: the Delta table {table} (table version {version}, one dt= "
                  "partition a day); read it as a Delta table, not by globbing its Parquet "
                  "files (a glob sees superseded files):", soft_wrap=True, markup=False)
    console.print(f"  python -c \"from deltalake import DeltaTable; print(DeltaTable('{table}')"
                  f".to_pandas(filters=[('dt', '=', '{day}')]))\"", soft_wrap=True, markup=False)
    console.print(f"  tagging catalogue --catalogue {table.removesuffix('/tagged')} history "
                  f"--date {day}", soft_wrap=True, markup=False)
    console.print("  DuckDB, Spark, the change feed: README, \"Reading the published "
                  "catalogue\"", soft_wrap=True, markup=False)


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
    for header in ("partition", "model", "rows", "verified", "accuracy", "precision",
                   "coverage", "review rate"):
        table.add_column(header, justify="left" if header in ("partition", "model") else "right")
    for h in history:
        table.add_row(h["partition"], h["model_version"], str(h["rows"]), str(h["verified"]),
                      share(h["accuracy"]), share(h["unflagged_precision"]), share(h["coverage"]),
                      share(h["review_rate"]))
    return table


def print_loop_demo(summary: dict) -> None:
    """`tagging demo --real-photos`: the learning loop, day by day."""
    table = Table(title="the learning loop, day by day")
    for header in ("day", "state", "trained", "gate", "champion", "held out", "holdout acc",
                   "holdout cov", "live acc", "live cov", "review", "re-tagged"):
        table.add_column(header, overflow="fold")
    for day in summary["days"]:
        quality = day["quality"]
        gate = "; ".join(f"{g['version']} {g['event']}" for g in day["gate"]) or "-"
        table.add_row(day["partition"], day["state"], ", ".join(day["trained"]) or "reused",
                      gate, str(day["champion"]), str(day["holdout_photos"] or "-"),
                      share(day["holdout_accuracy"]), share(day["holdout_coverage"]),
                      share(quality.get("accuracy")), share(quality.get("coverage")),
                      share(quality.get("review_rate")), ", ".join(day["retagged"]) or "-")
    console.print(table)
    for day in summary["days"]:
        for g in day["gate"]:
            console.print(f"{day['partition']} gate {g['version']} {g['event']}: "
                          + "; ".join(g["reasons"]), soft_wrap=True)
        if day["state"] != "success":
            console.print(f"{day['partition']} failed: {day.get('error')}", soft_wrap=True)
    console.print(f"champion {summary['champion']} in {summary['registry']}; live quality: "
                  f"tagging quality --catalogue {summary['catalogue']}", soft_wrap=True)


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
