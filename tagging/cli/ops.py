"""Operations commands: the demos on Airflow (SQLite) and the native stack."""

from __future__ import annotations

from datetime import date as Date
from datetime import timedelta

from tagging.cli.render import console, print_demo_summary, print_loop_demo, print_stack_status
from tagging.cli.review import print_queue_hint


def demo(args) -> int:
    from tagging.catalogue.demo import generate_demo_catalogue
    from tagging.ops.demo import run_demo

    today = Date.today()
    dates = [(today - timedelta(days=d)).isoformat() for d in reversed(range(1, args.days + 1))]
    if args.real_photos:
        return demo_loop(args, dates)
    catalogue = args.workdir / "catalogue"
    generate_demo_catalogue(catalogue, dates, rows_per_day=args.rows_per_day,
                            data_dir=args.data_dir)
    run = run_demo(args.workdir, dates, data_dir=args.data_dir)
    print_demo_summary(run)
    print_queue_hint(catalogue)
    return 1 if run.failed else 0


def demo_loop(args, dates: list[str]) -> int:
    """`tagging demo --real-photos DIR`: the learning loop on the real DAG, day by day."""
    from tagging.ops.demo import run_loop_demo

    run = run_loop_demo(args.workdir, args.real_photos, dates, reveal=args.reveal,
                        params={"min_new_labels": args.min_new_labels}, data_dir=args.data_dir)
    print_loop_demo(run)
    print_queue_hint(run.catalogue)
    return 1 if run.failed else 0


def stack(args) -> int:
    from tagging.ops.stack import Stack

    stack = Stack(args.workdir, tagging_workers=args.tagging_workers, scheduled=args.scheduled)
    if args.action == "down":
        stack.down()
        console.print(f"stack in {stack.root} stopped")
        return 0
    status = stack.up() if args.action == "up" else stack.status()
    print_stack_status(status, stack)
    return 0 if status["up"] or args.action == "status" else 1
