"""`teramind phantom OUT --size H[,W] --slices Z --seed S [--um-per-px X]`."""

from __future__ import annotations

import argparse

from ..constants import MERSCOPE_UM_PER_PX, PHANTOM_FORMATS


def _parse_size(text: str) -> tuple[int, int]:
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"--size: expected H or H,W as integers, got {text!r}") from None
    if len(parts) not in (1, 2):
        raise ValueError(f"--size: expected H or H,W, got {text!r}")
    return parts[0], parts[-1]


def run(args: argparse.Namespace) -> int:
    from ..data.phantom import make_phantom
    from ..data.phantom_io import write_phantom
    from ..pipelines.preflight import check_output_path

    check_output_path(args.out, "OUT", "a folder")
    height, width = _parse_size(args.size)
    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip())
    phantom = make_phantom(
        height, width, args.slices, args.seed, um_per_px=args.um_per_px, gene_bin=args.gene_bin,
        planted_interaction=args.planted_interaction,
    )
    out = write_phantom(phantom, args.out, formats)
    print(
        f"phantom {args.slices}x{height}x{width} px at {args.um_per_px} um/px, {len(phantom.cells)} cells, "
        f"{len(phantom.transcripts)} transcripts, {len(phantom.panel)} genes -> {out}"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("phantom", help="write a synthetic phantom tissue with ground truth")
    p.add_argument("out", help="output folder")
    p.add_argument("--size", default="512", help="section size in pixels: H or H,W (multiples of --gene-bin)")
    p.add_argument("--slices", type=int, default=4, help="number of sections (Z)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--um-per-px", type=float, default=MERSCOPE_UM_PER_PX, help="pixel size in microns")
    p.add_argument("--gene-bin", type=int, default=16, help="gene grid bin size in pixels")
    p.add_argument("--formats", default="table,official", help=f"comma list of {','.join(PHANTOM_FORMATS)}")
    p.add_argument("--planted-interaction", action="store_true",
                   help="add the Penk/Crym pair whose joint expression (only) enlarges nuclei (see data/phantom.py)")
    p.set_defaults(func=run)
