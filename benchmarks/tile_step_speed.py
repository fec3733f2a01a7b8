"""Tile-step cost: our inference call (collage decoder only) vs the official one (both decoder passes).

The official sampler runs the full forward for every tile and step (encoder + per-patch decoder + collage
decoder) and discards the per-patch output; ours runs only what is kept. Both are measured here side by
side, in one process, on the same weights and inputs, and the outputs are checked equal.

    python benchmarks/tile_step_speed.py                 # official small config (fixture model)
    python benchmarks/tile_step_speed.py --paper-size    # the 214 M-parameter paper model (random weights)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from teramind_hf import GeneMorphUNet3DModel
from teramind_hf.convert.official import convert_official_state_dict, load_state_dict

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "official_small" / "model.safetensors"


def time_call(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper-size", action="store_true", help="229 genes, 64..512 channels (random weights)")
    parser.add_argument("--tiles", type=int, default=1, help="canvases per call (batch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.paper_size:
        model = GeneMorphUNet3DModel(dropout=0.0).eval()
    else:
        model = convert_official_state_dict(load_state_dict(FIXTURE))
    g = model.config.num_genes
    generator = torch.Generator().manual_seed(0)
    canvas = torch.randn(args.tiles, 2, 2, 320, 320, generator=generator)
    genes = torch.poisson(torch.full((args.tiles, g, 4, 20, 20), 0.3), generator=generator)
    t = torch.tensor(938)

    with torch.inference_mode():
        ours = model(canvas, t, genes, path="collage").sample
        official = model(canvas, t, genes, path="both").sample
        assert torch.equal(ours, official), "collage-only output differs from the full forward"
        t_ours = time_call(lambda: model(canvas, t, genes, path="collage"), args.repeats)
        t_official = time_call(lambda: model(canvas, t, genes, path="both"), args.repeats)

    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params:,} parameters, {args.tiles} tile canvas(es) of 320 px, {args.threads} threads")
    print(f"official-style tile step (both decoder passes): {t_official:.3f} s")
    print(f"teramind-hf tile step (collage decoder only):  {t_ours:.3f} s")
    print(f"speed-up: {t_official / t_ours:.2f}x  (outputs identical)")


if __name__ == "__main__":
    main()
