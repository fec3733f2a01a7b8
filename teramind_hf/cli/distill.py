"""`teramind distill ...`: the same options as `python -m teramind_hf.training.distill` (run under `accelerate launch`)."""

from __future__ import annotations

import argparse

from ..training.distill_options import add_distill_arguments


def run(args: argparse.Namespace) -> int:
    from ..training.distill import distill

    distill(args)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("distill", help="distil a pipeline into a few-step student of the same architecture")
    add_distill_arguments(parser)
    parser.set_defaults(func=run)
