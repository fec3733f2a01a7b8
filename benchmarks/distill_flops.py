"""FLOPs of `teramind distill` per teacher sample and per training step, counted on the meta device.

    python benchmarks/distill_flops.py --models paper,embedded

* teacher sample: one 256-px region (one tile, one z chunk) sampled by the teacher in ``--teacher_steps`` steps on
  the "diagonal" grid: at each step one collage-path call on the unshifted canvas (320 px) and one on the shifted
  canvas (384 px), as the tile sampler makes them;
* training step: forward + backward of the collage path on ``--batch`` 128-px windows (what
  `teramind_hf.training.distill_windows.distill_loss` runs), counted by ``torch.utils.flop_counter`` (counted conv
  FLOPs include the zero-padded z taps; see docs/performance.md, which counts a tile call the same way).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from perf_tile_call import MODELS  # noqa: E402


def call_flops(model, batch: int, size: int, *, backward: bool = False, timestep: int = 999) -> float:
    cfg = model.config
    canvas = torch.randn(batch, cfg.in_channels, cfg.num_slices, size, size, device="meta", requires_grad=False)
    bins = size // cfg.gene_bin
    genes = torch.rand(batch, cfg.num_genes, cfg.gene_slices, bins, bins, device="meta")
    t = torch.full((batch,), timestep, dtype=torch.long, device="meta")
    with FlopCounterMode(display=False) as counter:
        if backward:
            model(canvas, t, genes, path="collage").sample.float().square().mean().backward()
        else:
            with torch.no_grad():
                model(canvas, t, genes, path="collage")
    return float(counter.get_total_flops())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="paper,embedded")
    parser.add_argument("--teacher_steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8, help="windows per training step")
    args = parser.parse_args()
    for name in args.models.split(","):
        model = MODELS[name]("meta")
        if name == "paper":
            model.train()
        per_step = call_flops(model, 1, 320) + call_flops(model, 1, 384)
        teacher = args.teacher_steps * per_step
        train = call_flops(model.train(), args.batch, 128, backward=True)
        print(f"{name}: teacher sample (256 px, {args.teacher_steps} steps x 2 offsets) {teacher / 1e12:.3f} TFLOP; "
              f"training step ({args.batch} windows, fwd+bwd) {train / 1e12:.3f} TFLOP; "
              f"per window {train / args.batch / 1e9:.1f} GFLOP", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
