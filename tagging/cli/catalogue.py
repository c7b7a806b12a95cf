"""Catalogue commands: tag a day, render a demo catalogue; the published table's history,
restore of a day, changes since a version."""

from __future__ import annotations

from datetime import date as Date
from datetime import timedelta

from tagging.cli.args import registry_of
from tagging.cli.render import console, summary_table
from tagging.settings import Settings


def tag(args) -> int:
    from tagging.catalogue.validate import truth_agreement, validate_partition
    from tagging.loop.quality import expected_of
    from tagging.pipeline.tag import tag_partition

    catalogue = args.catalogue or Settings.from_env().catalogue_root
    summary = tag_partition(catalogue, args.date, registry_root=registry_of(args).root,
                            model=args.model, review_threshold=args.review_threshold,
                            workers=args.workers, rows_per_shard=args.rows_per_shard,
                            progress=True)
    summary |= truth_agreement(catalogue, args.date)
    console.print(summary_table(f"tagged partition {args.date}", summary))
    report = validate_partition(catalogue, args.date, max_error_rate=args.max_error_rate,
                                max_review_rate=args.max_review_rate,
                                expected=expected_of(registry_of(args).root,
                                                     summary["model_version"]),
                                live_accuracy_margin=args.live_accuracy_margin,
                                review_rate_margin=args.review_rate_margin)
    console.print(f"[green]valid[/]: {report['rows']} rows, error rate {report['error_rate']}, "
                  f"needs-review rate {report['review_rate']}")
    return 0


def demo_catalogue(args) -> int:
    from tagging.catalogue.demo import generate_demo_catalogue

    end = Date.fromisoformat(args.end)
    dates = [(end - timedelta(days=d)).isoformat() for d in reversed(range(args.days))]
    files = generate_demo_catalogue(args.catalogue or Settings.from_env().catalogue_root, dates,
                                    rows_per_day=args.rows_per_day, data_dir=args.data_dir,
                                    seed=args.seed)
    for f in files:
        console.print(f"wrote {f}")
    return 0


def _catalogue(args):
    return args.catalogue or Settings.from_env().catalogue_root


def history(args) -> int:
    from rich.table import Table

    from tagging.catalogue.table import history as table_history

    entries = table_history(_catalogue(args), args.date)
    table = Table(title=f"tagged table history{' of ' + args.date if args.date else ''}")
    for column in ("version", "time", "operation", "day", "model", "rows", "restored from"):
        table.add_column(column)
    for e in entries:
        table.add_row(str(e["version"]), e["time"][:19], e["operation"], e["partition"] or "-",
                      e["model_version"] or "-", str((e["counts"] or {}).get("rows", "-")),
                      "-" if e["restored_from"] is None else str(e["restored_from"]))
    console.print(table)
    return 0


def restore(args) -> int:
    from tagging.catalogue.table import restore_day

    version = restore_day(_catalogue(args), args.date, args.version)
    console.print(f"restored {args.date} as of table version {args.version}: "
                  + (f"new table version {version}" if version is not None else "no change"))
    return 0


def changes(args) -> int:
    import json

    from tagging.catalogue.table import changes as table_changes

    feed = table_changes(_catalogue(args), args.since)
    if args.json:
        print(json.dumps(feed))
        return 0
    console.print(f"table version {feed['latest']}; changes after version {feed['since']}:")
    for day, change in feed["days"].items():
        console.print(f"  {day}: {change['insert']} rows in, {change['delete']} rows out "
                      f"(versions {', '.join(map(str, change['versions']))})")
    if not feed["days"]:
        console.print("  nothing")
    return 0
