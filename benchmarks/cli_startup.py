"""Start-up time of the `teramind` command: `teramind --help` and `teramind SUB --help` for every sub-command,
against a bare `python -c pass`, run interleaved (A B C ... A B C ...) so machine load hits all alike; medians and
the ratio to bare Python are printed. The target (issue 14): every line under 1.5 s.

    python benchmarks/cli_startup.py               # 7 rounds
    python benchmarks/cli_startup.py --rounds 15
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_SECONDS = 1.5


def teramind_command() -> list[str]:
    """The console script next to this Python (what users run), else ``python -m teramind_hf.cli``."""
    script = Path(sys.executable).with_name("teramind")
    found = str(script) if script.exists() else shutil.which("teramind")
    return [found] if found else [sys.executable, "-m", "teramind_hf.cli"]


def sub_commands() -> list[list[str]]:
    """Every sub-command path the parser knows (e.g. ``eval seams``), read from the parser itself."""
    from teramind_hf.cli import build_parser

    def walk(parser, prefix):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [prefix]
        return [path for name, child in subs[0].choices.items() for path in walk(child, [*prefix, name])]

    return walk(build_parser(), [])


def run_once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    teramind = teramind_command()
    commands = {"python -c pass": [sys.executable, "-c", "pass"], "teramind --help": [*teramind, "--help"]}
    for path in sub_commands():
        commands[f"teramind {' '.join(path)} --help"] = [*teramind, *path, "--help"]
    times: dict[str, list[float]] = {name: [] for name in commands}
    for name, command in commands.items():  # warm-up: file-system caches, .pyc files
        run_once(command)
    for _ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(run_once(command))
    bare = statistics.median(times["python -c pass"])
    width = max(map(len, commands))
    print(f"{'command':<{width}}  median s  x bare python  (interleaved, {args.rounds} rounds, {' '.join(teramind)})")
    slowest = 0.0
    for name, samples in times.items():
        median = statistics.median(samples)
        slowest = max(slowest, median) if name != "python -c pass" else slowest
        print(f"{name:<{width}}  {median:8.3f}  {median / bare:13.1f}")
    print(f"slowest teramind command: {slowest:.3f} s (target < {TARGET_SECONDS} s): {'met' if slowest < TARGET_SECONDS else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
