"""Argument parsing helpers shared by the sub-commands."""

from __future__ import annotations

import argparse

DEVICE_HELP = ("where the model runs: auto (default: under accelerate launch cuda:LOCAL_RANK, else cuda if available, "
               "else mps, else cpu), cpu, cuda, cuda:INDEX or mps; an unavailable device is refused before anything "
               "is written")


def int_tuple(text: str, n: int, name: str) -> tuple[int, ...]:
    """``"a,b,c"`` -> ``(a, b, c)``: exactly ``n`` integers, else a ValueError naming ``--name``."""
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--{name} must be {n} comma-separated integers, got {text!r}") from err
    if len(values) != n:
        raise ValueError(f"--{name} must be {n} comma-separated integers, got {text!r}")
    return values


def add_origin_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``--origin-um Y,X`` and ``--origin-unknown``: where the gene source's pixel (0, 0) lies in micrometres."""
    parser.add_argument("--origin-um", default=None, metavar="Y,X",
                        help=f"micrometre position (y, x) of the gene source's pixel (0, 0) ({default})")
    parser.add_argument("--origin-unknown", action="store_true",
                        help="the source has no known micron origin: place the output in its pixel frame")


def origin_arguments(args: argparse.Namespace) -> tuple[float, float] | None:
    """``--origin-um`` as numbers (checked before anything is written); refused together with ``--origin-unknown``."""
    from ..data.store import parse_origin_um

    if args.origin_um is None:
        return None
    if args.origin_unknown:
        raise ValueError("--origin-um and --origin-unknown exclude each other")
    return parse_origin_um(args.origin_um)


def blend_steps_arg(text: str) -> int | str:
    """``--blend-steps``: a number of last steps (>= 0) or ``all``."""
    if text == "all":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of last steps (0, 1, 2, ...) or 'all', got {text!r}")
    return int(text)


def eval_subparsers(subparsers: argparse._SubParsersAction) -> argparse._SubParsersAction:
    """The `teramind eval` group's own sub-commands (created on first use)."""
    parser = subparsers.choices.get("eval")
    if parser is None:
        parser = subparsers.add_parser("eval", help="evaluate generated morphology")
        parser.add_subparsers(dest="eval_command", required=True)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def process_device(requested: str | None, command: str):
    """This process's model device (``--device``, else accelerate's process state and what is available), after
    warning on stderr when ``accelerate launch --num_processes N`` started one process (no ``--multi_gpu``)."""
    import os
    import sys

    from ..pipelines.device import resolve_device, single_worker_launch
    from ..pipelines.streaming import distributed_state

    state = distributed_state()
    warning = single_worker_launch(os.environ, state.num_processes)
    if warning and state.is_main_process:
        print(f"teramind {command}: warning: {warning}", file=sys.stderr, flush=True)
    return resolve_device(requested, process_state=state)


def local_model(model: str | None) -> str | None:
    """The model folder a command reads (the embedded one by default), or None for a Hub repo id: an input that
    no output may be, contain or lie inside."""
    from pathlib import Path

    from .. import default_model_path

    location = model if model is not None else str(default_model_path())
    return location if Path(location).exists() else None
