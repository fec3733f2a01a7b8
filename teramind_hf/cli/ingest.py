"""`teramind ingest {merscope,table,spatialdata,anndata} ... --out STORE.zarr`: real data -> gene store."""

from __future__ import annotations

import argparse

from ..constants import DEFAULT_SECTION_SPACING_UM


def _columns(pairs: list[str] | None) -> dict[str, str]:
    mapping = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise ValueError(f"--column must be NAME=SOURCE_COLUMN (e.g. x=global_x), got {pair!r}")
        mapping[key] = value
    return mapping


def _common(args: argparse.Namespace) -> dict:
    from ..data.ingest.engine import sizes_for_memory
    from ..data.panel import GenePanel

    batch_rows, buffer_bins = sizes_for_memory(int(args.memory_mb * 2**20))

    return {
        "gene_bin": args.gene_bin,
        "panel": GenePanel.from_file(args.panel) if args.panel else None,
        "drop_unknown": args.drop_unknown,
        "section_spacing_um": args.section_spacing_um,
        "buffer_bins": args.buffer_bins or buffer_bins,
        "max_store_bytes": int(args.max_store_gib * 2**30),
        "overwrite": args.overwrite,
        "progress_bar": not args.quiet,
        "batch_rows": args.batch_rows or batch_rows,
        "pad_to": args.pad_to,
    }


def run(args: argparse.Namespace) -> int:
    from ..data import ingest
    from ..output_guard import check_output_location

    inputs = {
        "INPUT": args.inputs if args.source == "merscope" else args.input,
        "--panel": args.panel,
        "--images": getattr(args, "images", None),
    }
    check_output_location(args.out, inputs, "--out")
    common = _common(args)
    if args.source == "merscope":
        report = ingest.ingest_merscope(
            [run for location in args.inputs for run in ingest.merscope_runs(location)], args.out,
            plane=args.plane, rescale=args.rescale, drop_blanks=not args.keep_blanks, um_per_px=args.um_per_px,
            **common,
        )
    elif args.source == "table":
        report = ingest.ingest_table(
            args.input, args.out, um_per_px=args.um_per_px, units=args.units, columns=_columns(args.column),
            images=args.images, origin=args.origin, **common,
        )
    elif args.source == "spatialdata":
        report = ingest.ingest_spatialdata(
            args.input, args.out, um_per_px=args.um_per_px, points=args.points, coordinate_system=args.coordinate_system,
            columns=_columns(args.column), origin=args.origin, **common,
        )
    else:
        report = ingest.ingest_anndata(
            args.input, args.out, um_per_px=args.um_per_px, spatial_key=args.spatial_key, section_key=args.section_key,
            units=args.units, origin=args.origin, **common,
        )
    print(report.summary())
    return 0


def _add_common(p: argparse.ArgumentParser, um_required: bool) -> None:
    p.add_argument("--out", required=True, help="gene store to write (a zarr folder, e.g. genes.zarr)")
    if um_required:
        p.add_argument("--um-per-px", type=float, required=True, help="image pixel size in microns (the model's scale)")
    p.add_argument("--gene-bin", type=int, default=16, help="gene bin edge in pixels (the model's gene grid)")
    p.add_argument("--panel", default=None, help="text file of genes (one per line) fixing the gene axis")
    p.add_argument("--drop-unknown", action="store_true", help="ignore transcripts of genes not in --panel")
    p.add_argument("--section-spacing-um", type=float, default=DEFAULT_SECTION_SPACING_UM, help="distance between sections")
    p.add_argument("--memory-mb", type=float, default=1024, help="peak memory to stay under (sets the two below)")
    p.add_argument("--batch-rows", type=int, default=None, help="rows read per batch (default: from --memory-mb)")
    p.add_argument("--buffer-bins", type=int, default=None, help="(bin, count) pairs held before a flush (default: from --memory-mb)")
    p.add_argument("--max-store-gib", type=float, default=1024.0, help="refuse a dense gene grid larger than this")
    p.add_argument("--pad-to", type=int, default=256, help="pad the canvas to a multiple of this (the model's tile size)")
    p.add_argument("--overwrite", action="store_true", help="replace a gene store an earlier `teramind ingest` wrote (nothing else)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ingest", help="turn MERSCOPE runs, transcript tables, SpatialData or .h5ad into a gene store")
    sources = parser.add_subparsers(dest="source", required=True)

    p = sources.add_parser("merscope", help="MERSCOPE run folders, one per section, in order (or a folder of runs)")
    p.add_argument("inputs", nargs="+", help="run folders (detected_transcripts.csv + images/)")
    _add_common(p, um_required=False)
    p.add_argument("--um-per-px", type=float, default=None, help="pixel size (default: from the micron-to-mosaic transform)")
    p.add_argument("--plane", type=int, default=None, help="use this z-plane of the mosaics (default: max projection)")
    p.add_argument("--rescale", default="full", choices=("full", "percentile"), help="uint16 -> uint8 mapping")
    p.add_argument("--keep-blanks", action="store_true", help="keep Blank-* control barcodes")

    p = sources.add_parser("table", help="CSV or Parquet transcripts: x, y, z (section), gene [, count]")
    p.add_argument("input", help="transcripts table (.csv, .tsv, .parquet)")
    _add_common(p, um_required=True)
    p.add_argument("--units", default="px", choices=("px", "um"), help="units of x and y")
    p.add_argument("--column", action="append", metavar="NAME=COLUMN", help="map x/y/z/gene/count to a column (repeatable)")
    p.add_argument("--images", default=None, help="(2, Z, H, W) uint8 DAPI/PolyT .tif or .npy (stored as truth)")
    p.add_argument("--origin", default="zero", choices=("zero", "extent"), help="canvas at coordinate 0 or at the data's extent")

    p = sources.add_parser("spatialdata", help="a points element of a SpatialData store (needs the spatialdata extra)")
    p.add_argument("input", help="SpatialData .zarr store")
    _add_common(p, um_required=True)
    p.add_argument("--points", default=None, help="points element (default: the only one)")
    p.add_argument("--coordinate-system", default="global", help="coordinate system (microns) to place points in")
    p.add_argument("--column", action="append", metavar="NAME=COLUMN", help="map x/y/z/gene/count (gene defaults to feature_name)")
    p.add_argument("--origin", default="extent", choices=("zero", "extent"), help="canvas at coordinate 0 or at the data's extent")

    p = sources.add_parser("anndata", help="binned counts with spatial coordinates in an .h5ad (needs anndata)")
    p.add_argument("input", help=".h5ad file: obs = bins, var = genes, obsm[spatial] = (x, y)")
    _add_common(p, um_required=True)
    p.add_argument("--spatial-key", default="spatial", help="obsm key of the (x, y) coordinates")
    p.add_argument("--section-key", default=None, help="obs column of the section index (default: all in section 0)")
    p.add_argument("--units", default="um", choices=("px", "um"), help="units of the coordinates")
    p.add_argument("--origin", default="extent", choices=("zero", "extent"), help="canvas at coordinate 0 or at the data's extent")
