"""`teramind train ...`: the same options as `python -m teramind_hf.training.train` (run under `accelerate launch`)."""

from __future__ import annotations

import argparse

from ..training.options import add_training_arguments


def run(args: argparse.Namespace) -> int:
    from ..training.train import train

    train(args)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train or fine-tune a pipeline (run under `accelerate launch` for DDP)")
    add_training_arguments(parser)
    parser.set_defaults(func=run)
