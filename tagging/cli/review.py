"""Review-queue commands: serve the page, fill the queue, show its state, export answers."""

from __future__ import annotations

import ipaddress
from datetime import datetime

from rich.table import Table

from tagging.cli.render import console
from tagging.errors import ConfigError


def _service(args):
    from tagging.review.server import open_service

    return open_service(args.catalogue, args.db)


def serve(args) -> int:
    from tagging.review.server import serve as run_server

    if args.single_user and not _loopback(args.host):
        raise ConfigError("--single-user is for a laptop: serve on a loopback address "
                          "(127.0.0.1), or behind the sign-in proxy without it")
    service = _service(args)
    who = (f"every request is reviewer {args.single_user!r}" if args.single_user else
           f"reviewers named by the {service.settings.user_header} header (sign-in proxy)")
    console.print(f"review queue: http://{args.host}:{args.port}{args.root_path}/  ({who}); "
                  f"API docs: /docs; store {service.store.db.shown}")
    run_server(service, host=args.host, port=args.port, single_user=args.single_user,
               root_path=args.root_path)
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def fill(args) -> int:
    from tagging.review.queue import fill as fill_queue

    service = _service(args)
    reports = fill_queue(service.store, service.catalogue_root, settings=service.settings,
                         days=args.date and [args.date])
    table = Table(title=f"review queue {service.store.db.shown}")
    columns = ["partition", "rows", "needs_review", "audit", "already_verified", "no_photo",
               "photo_too_large", "added"]
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column == "partition"
                         else "right")
    for report in reports:
        table.add_row(*(str(getattr(report, c)) for c in columns))
    console.print(table if reports else f"no published days in {service.catalogue_root}")
    return 0


def status(args) -> int:
    service = _service(args)
    state = service.status()
    console.print(f"queue: {state['queue']} open ({state['open']['needs_review']} need review, "
                  f"{state['open']['audit']} audit), {state['claimed']} claimed now, "
                  f"{state['answered_items']} answered")
    console.print(f"answers in force: {state['answers']} about {state['products']} products "
                  f"({state['unusable']} unusable photos); today: {state['answers_today']}")
    if state["per_reviewer"]:
        table = Table(title="answers today per reviewer")
        table.add_column("reviewer")
        table.add_column("answers", justify="right")
        for name, count in state["per_reviewer"].items():
            table.add_row(name, str(count))
        console.print(table)
    if state["disagreements"]:
        table = Table(title=f"{len(state['disagreements'])} disagreements (the latest answer "
                            "wins)")
        for column in ("partition", "product", "answers", "wins"):
            table.add_column(column)
        for d in state["disagreements"]:
            table.add_row(d["partition"], d["product_id"],
                          ", ".join(f"{who}: {a}" for who, a in d["answers"].items()), d["wins"])
        console.print(table)
    else:
        console.print("no disagreements")
    return 0


def export(args) -> int:
    from tagging.review.export import export_answers

    service = _service(args)
    for day in export_answers(service.store, service.catalogue_root):
        verb = "written" if day["written"] else "unchanged"
        console.print(f"{day['partition']}: {day['answers']} answers ({day['unusable']} "
                      f"unusable) {verb}: {day['path']}")
    console.print(f"exported at {datetime.now().astimezone():%Y-%m-%d %H:%M}; the DAG's "
                  "export_answers task does the same before harvest_labels")
    return 0


def print_queue_hint(catalogue) -> None:
    """After a demo: fill the review queue from its catalogue and say how to open it."""
    from tagging.review.queue import fill as fill_queue
    from tagging.review.server import open_service

    service = open_service(catalogue)
    added = sum(r.added for r in fill_queue(service.store, service.catalogue_root,
                                            settings=service.settings))
    console.print(f"review queue: {service.status()['queue']} photos to review ({added} new; "
                  f"store {service.store.db.shown}). Start the page with\n"
                  f"  tagging review serve --catalogue {catalogue} --single-user $USER\n"
                  "and open http://127.0.0.1:8000/ (keys 1-3, letters, s, u, z; API: /docs)")
