"""Catalogue commands: tag a day, render a demo catalogue."""

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
