"""The `teramind` command. Each sub-command lives beside the code it drives and registers itself here."""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> function `register(subparsers)` adding one or more sub-commands
_SUBCOMMAND_MODULES = (
    "teramind_hf.training.train",
    "teramind_hf.convert.official",
    "teramind_hf.data.phantom",
    "teramind_hf.pipelines.streaming",
    "teramind_hf.eval.seams",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teramind", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module_name in _SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:  # a sub-command whose module is not written yet
            if err.name == module_name:
                continue
            raise
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, PermissionError) as err:
        print(f"teramind {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
