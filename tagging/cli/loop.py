"""Learning-loop commands: the label store (harvest, status) and live quality."""

from __future__ import annotations

from pathlib import Path

from tagging.catalogue.layout import image_root_for
from tagging.cli.render import (
    console,
    print_label_status,
    publications_table,
    quality_table,
)
from tagging.settings import Settings


def labels_harvest(args) -> int:
    from tagging.pipeline.learn import harvest_labels

    catalogue = args.catalogue or Settings.from_env().catalogue_root
    summary = harvest_labels(catalogue, args.date, harvest_days=args.days,
                             real_photos=args.real_photos,
                             image_root=image_root_for(catalogue),
                             encoder=args.encoder)
    for h in summary["harvested"]:
        console.print(f"harvested {h['source']}: {h['accepted']} of {h['verified_rows']} "
                      f"verified rows accepted; rejected {h['rejected'] or 'none'}")
    for source in summary["unchanged"]:
        console.print(f"{source}: unchanged since its last harvest")
    console.print(f"label store {summary['store']}: {summary['labels']} labels "
                  f"({summary['train']} train side, {summary['holdout']} held out)")
    return 0


def labels_status(args) -> int:
    from tagging.loop.labelstore import LabelStore

    status = LabelStore.of_catalogue(args.catalogue or Settings.from_env().catalogue_root
                                     ).status()
    print_label_status(status)
    return 0


def quality(args) -> int:
    from tagging.catalogue.publications import publication_history
    from tagging.loop.quality import plot_quality, quality_history

    catalogue = args.catalogue or Settings.from_env().catalogue_root
    if args.publications:
        publications = publication_history(catalogue)
        console.print(publications_table(publications, f"every publication in {catalogue}")
                      if publications else f"no publication recorded in {catalogue}")
        return 0
    history = quality_history(catalogue)
    if not history:
        console.print(f"no published partitions in {catalogue}")
        return 0
    console.print(quality_table(history, f"live quality of {catalogue}"))
    path = plot_quality(history, args.out or Path(catalogue) / "quality.png")
    console.print(f"plot: {path}")
    return 0
