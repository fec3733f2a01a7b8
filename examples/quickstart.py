"""Quickstart: load the pipeline, generate DAPI + PolyT for a small region of phantom tissue, save a PNG.

    python examples/quickstart.py                         # embedded default model, 256 x 256 px, 15 steps
    python examples/quickstart.py --steps 2 --out /tmp/qs # fastest
    python examples/quickstart.py --model org/teramind-mouse-brain --size 512

Writes ``<out>/quickstart.png`` (generated vs ground truth, first section) and ``<out>/volume.npy``
(uint8, sections x 2 stains x H x W).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MODEL_UM_PER_PX, save_panels  # noqa: E402

from teramind_hf import TeraMindPipeline  # noqa: E402
from teramind_hf.pipelines.device import resolve_device  # noqa: E402
from teramind_hf.data import make_phantom  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: embedded model)")
    parser.add_argument("--size", type=int, default=256, help="region side in px (multiple of 256)")
    parser.add_argument("--sections", type=int, default=2, help="tissue sections to generate")
    parser.add_argument("--steps", type=int, default=15, help="denoising steps (15 official)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:INDEX or mps (default: cuda if available, else mps, else cpu)")
    parser.add_argument("--out", default="quickstart_out", help="output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    pipe = TeraMindPipeline.from_pretrained(args.model).to(resolve_device(args.device))  # the model on the accelerator
    tissue = make_phantom(args.size, args.size, num_slices=args.sections, seed=1, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    start = time.perf_counter()
    result = pipe(
        tissue.genes,  # (G, Z, H/16, W/16) transcript counts
        gene_names=list(tissue.panel),  # matched to the model's panel by name
        num_inference_steps=args.steps,
        generator=torch.Generator().manual_seed(args.seed),
        output_type="uint8",
    )
    images = result.images  # (Z, 2, H, W): DAPI, PolyT
    print(f"generated {images.shape} in {time.perf_counter() - start:.1f} s")
    if result.gene_alignment is not None and result.gene_alignment.missing:
        print(f"model genes missing from the data (zero-filled): {', '.join(result.gene_alignment.missing)}")

    np.save(out / "volume.npy", images)
    png = save_panels(
        [
            (images[0, 0], "generated DAPI"),
            (images[0, 1], "generated PolyT"),
            (tissue.images[0, 0], "true DAPI"),
            (tissue.images[1, 0], "true PolyT"),
        ],
        out / "quickstart.png",
        vmin=0,
        vmax=255,
    )
    print(f"wrote {png} and {out / 'volume.npy'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
