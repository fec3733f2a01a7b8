"""`teramind eval seams OUT [--tile-size N]` (and the other `teramind eval` sub-commands)."""

from __future__ import annotations

import argparse

from ._args import eval_subparsers


def run_seams(args: argparse.Namespace) -> int:
    from ..eval.seams import seam_score

    result = seam_score(args.out, args.tile_size)
    print(
        f"seam score {result.score:.4f} (border |grad| {result.border_gradient:.3f} / interior |grad| "
        f"{result.interior_gradient:.3f}, tile {result.tile_size} px, {result.border_pairs:,} border pairs)"
    )
    print(
        f"border band ratio {result.band_ratio:.4f} (mean intensity within {result.band} px of inner tile borders / "
        "elsewhere; dark bands lower it: compare runs on the same genes)"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    group = eval_subparsers(subparsers)
    p = group.add_parser("seams", help="seam score of an OME-Zarr output (lower is more seamless)")
    p.add_argument("out", help="OME-Zarr folder written by `teramind generate`")
    p.add_argument("--tile-size", type=int, default=None, help="tile edge in px (default: from the run record, else 256)")
    p.set_defaults(func=run_seams)
