"""`teramind convert-official CKPT OUT_DIR [--gene-names FILE]`."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..convert.official import convert_official_checkpoint, read_gene_names
    from ..output_guard import check_output_location

    check_output_location(args.output_dir, {"CHECKPOINT": args.checkpoint, "--gene-names": args.gene_names}, "OUT_DIR")
    names = read_gene_names(args.gene_names) if args.gene_names else None
    convert_official_checkpoint(
        args.checkpoint, args.output_dir, gene_names=names, push_to_hub=args.push_to_hub, overwrite=args.overwrite
    )
    print(f"wrote pipeline to {args.output_dir}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert-official",
        help="convert an official Tera-MIND checkpoint (.ckpt/.pt/.safetensors) to a pipeline folder",
    )
    parser.add_argument("checkpoint", help="Lightning .ckpt, PyTorch state dict, or .safetensors")
    parser.add_argument("output_dir", help="folder to write (model_index.json, unet/, scheduler/)")
    parser.add_argument("--gene-names", help="text file with the model's gene panel, one symbol per line")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also upload the converted pipeline")
    parser.add_argument("--overwrite", action="store_true", help="replace a pipeline folder written earlier (nothing else)")
    parser.set_defaults(func=run)
