"""The `teramind` command: every sub-command's options and handler live in this package, one module each.

Modules here only build argparse parsers at import time; a handler imports the library it drives when it runs,
so `teramind --help` and `teramind SUBCOMMAND --help` start without importing torch.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# modules of this package, each with `register(subparsers)` adding one or more sub-commands
SUBCOMMAND_MODULES = ("phantom", "ingest", "generate", "eval", "export", "convert", "train", "distill", "attention", "knockout",
                      "view")

# what a handler raises for bad input: printed as one line naming the problem, exit status 2, no traceback
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, NotADirectoryError, IsADirectoryError)

# operating-system errors about the user's files and disks (read-only target, full disk, quota, a bad device):
# named with their path, exit status 2. Other OSErrors (and every other exception) stay tracebacks: real bugs.
IO_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.ENOENT,
    errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.ENOTEMPTY, errno.ENAMETOOLONG, errno.ELOOP, errno.EXDEV,
}


# where a command writes, for an OSError that names no file (a failed write() or close() does not)
OUTPUT_ARGUMENTS = (("out", "--out"), ("output_dir", "--output_dir"), ("to", "--to"))


def describe_os_error(err: OSError, args: argparse.Namespace | None = None) -> str:
    """``[Errno 28] No space left on device: 'x'`` -> ``x: No space left on device (errno ENOSPC)``; without a
    file name, the command's output argument is named instead (as where it was writing)."""
    what = f"{err.strerror or err} (errno {errno.errorcode.get(err.errno, err.errno)})"
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    if paths:
        return f"{' -> '.join(str(p) for p in paths)}: {what}"
    for attribute, option in OUTPUT_ARGUMENTS:
        if getattr(args, attribute, None):
            return f"{what}, the system did not say for which file; this command was writing {option} {getattr(args, attribute)}"
    return f"{what}, the system did not say for which file"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="teramind", description=__doc__.split("\n")[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    """Option strings, in the parser and all its sub-parsers, that take one value."""
    found, stack = set(), [parser]
    while stack:
        current = stack.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                stack.extend(action.choices.values())
            elif action.option_strings and action.nargs in (None, "?", 1):
                found.update(action.option_strings)
    return found


def join_negative_values(argv: list[str], value_options: set[str]) -> list[str]:
    """``--region -256,0,512,512`` -> ``--region=-256,0,512,512``: argparse reads a value that starts with '-' and
    is not a plain number as an unknown option, so negative coordinate lists would otherwise need ``=``."""
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if token in value_options and nxt is not None and len(nxt) > 1 and nxt[0] == "-" and (nxt[1].isdigit() or nxt[1] == "."):
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(join_negative_values(argv, _value_options(parser)))
    try:
        result = args.func(args)
    except USER_ERRORS as err:
        raised_by_system = isinstance(err, OSError) and err.errno is not None and err.strerror
        print(f"teramind {args.command}: error: {describe_os_error(err, args) if raised_by_system else err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in IO_ERRNOS:
            raise
        print(f"teramind {args.command}: error: {describe_os_error(err, args)}", file=sys.stderr)
        return 2
    return int(result or 0)
