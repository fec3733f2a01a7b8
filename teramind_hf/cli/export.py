"""`teramind export spatialdata OUT.ome.zarr --to SDATA.zarr [--like INPUT_SDATA]`."""

from __future__ import annotations

import argparse

from ._args import add_origin_arguments


def run_spatialdata(args: argparse.Namespace) -> int:
    from ..data.export import export_spatialdata
    from ._args import origin_arguments

    names = export_spatialdata(
        args.out, args.to, like=args.like, name=args.name, coordinate_system=args.coordinate_system,
        overwrite=args.overwrite, origin_um=origin_arguments(args), origin_unknown=args.origin_unknown,
    )
    print(f"wrote image element(s) {', '.join(names)} to {args.to}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export a generated OME-Zarr to other formats")
    formats = parser.add_subparsers(dest="export_format", required=True)
    p = formats.add_parser("spatialdata", help="generated DAPI/PolyT as SpatialData image elements (micron coordinates)")
    p.add_argument("out", help="OME-Zarr written by `teramind generate`")
    p.add_argument("--to", required=True, help="SpatialData store to add to (created if absent)")
    p.add_argument("--like", default=None, help="input SpatialData store whose elements a new --to store also gets")
    p.add_argument("--name", default="teramind", help="element name prefix (elements NAME_z<section>)")
    p.add_argument("--coordinate-system", default=None, help="default: the one the output's run record copied from its gene store (`teramind ingest` writes it), else global")
    p.add_argument("--overwrite", action="store_true", help="replace elements of the same name")
    add_origin_arguments(p, "default: the origin the output's run record holds")
    p.set_defaults(func=run_spatialdata)
