"""The one `main` of supir's argparse entry points (train, restore, robust_encoder).

Each entry point builds its parser and a `run(args)`; this adds `--debug`, parses, runs, and turns a
project error (`SupirDataError`, plus any the entry point names) into one `error: ...` line and exit
status 2, with the traceback only under `--debug`. So every command fails the same way.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from schemas.errors import SupirDataError

USAGE_ERROR = 2


def cli_main(
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int | None],
    argv: list[str] | None = None,
    errors: tuple[type[BaseException], ...] = (),
) -> int:
    """Parse `argv`, call `run(args)`; returns its status (None = 0), or 2 after a project error."""
    parser.add_argument("--debug", action="store_true", help="show tracebacks of project errors")
    args = parser.parse_args(argv)
    try:
        status = run(args)
    except (SupirDataError, *errors) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    return 0 if status is None else status
