"""The `tagging` command line: train, evaluate, tag a catalogue, manage the registry.

parser     every command and its options          args     shared options
model      train, evaluate, evaluate-photos, registry
catalogue  tag, demo-catalogue                     loop     labels harvest|status, quality
ops        demo (Airflow on SQLite), stack          render   tables and verdicts
"""

from __future__ import annotations

import logging
import os

from rich.logging import RichHandler
from rich.markup import escape

from tagging.cli.render import console
from tagging.errors import EXPECTED_ERRORS


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info chatter
    from tagging.cli.parser import build_parser

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=console, show_path=False)])
    try:
        return args.func(args) or 0
    except EXPECTED_ERRORS as e:  # expected failures: say what, not a trace
        if args.verbose:
            raise
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)  # one line
        return 1
