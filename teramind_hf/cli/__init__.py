"""The `teramind` command: every sub-command's options and handler live in this package, one module each.

Modules here only build argparse parsers at import time; a handler imports the library it drives when it runs,
so `teramind --help` and `teramind SUBCOMMAND --help` start without importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# modules of this package, each with `register(subparsers)` adding one or more sub-commands
SUBCOMMAND_MODULES = ("phantom", "ingest", "generate", "eval", "export", "convert", "train", "attention", "knockout")

# what a handler raises for bad input: printed as one line naming the problem, exit status 2, no traceback
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teramind", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except USER_ERRORS as err:
        print(f"teramind {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)
