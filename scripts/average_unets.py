"""A weighted average of two students' UNet weights (same architecture), saved as a pipeline folder.

How ``teramind_hf/turbo_model`` was made (docs/distillation.md, "The second `turbo`"): 0.5 x the student trained on
the shifted grid + 0.5 x the 8-px-band seam student, under the sampler config (TCD, 3 steps, eta 1.0,
diagonal-last-shifted) of ``--config-from``:

    python scripts/average_unets.py --a stages/turbo_seam_band8w2_both_shifted --b stages/turbo_seam_band8w2 \
        --weight-a 0.5 --config-from teramind_hf/turbo_model --out /tmp/turbo

(the first ``turbo``, now ``stages/turbo_v1``, was 0.2 x ``stage11_fresh_mse`` + 0.8 x ``stage12_dsteps4`` under
the same TCD config on ``diagonal-last``.)

The average is taken in float32 and saved in the dtype of ``--a``'s weights. ``--out`` must not exist (nothing is
replaced).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

WEIGHTS = Path("unet") / "diffusion_pytorch_model.safetensors"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="pipeline folder of the first student")
    parser.add_argument("--b", required=True, help="pipeline folder of the second student")
    parser.add_argument("--weight-a", type=float, required=True, help="share of --a, in [0, 1] (--b gets the rest)")
    parser.add_argument("--config-from", required=True, help="pipeline folder whose model_index.json, scheduler and unet config the output takes")
    parser.add_argument("--out", required=True, help="the new pipeline folder (must not exist)")
    args = parser.parse_args(argv)
    if not 0 <= args.weight_a <= 1:
        parser.error(f"--weight-a must be in [0, 1], got {args.weight_a}")
    for name in ("a", "b", "config_from"):
        folder = Path(getattr(args, name))
        if not (folder / WEIGHTS).is_file():
            parser.error(f"--{name.replace('_', '-')} {folder}: no {WEIGHTS} (a pipeline folder expected)")
    out = Path(args.out)
    if out.exists():
        parser.error(f"--out {out}: exists; pick a new folder")

    from safetensors.torch import load_file, save_file

    first, second = load_file(str(Path(args.a) / WEIGHTS)), load_file(str(Path(args.b) / WEIGHTS))
    if first.keys() != second.keys() or any(first[k].shape != second[k].shape for k in first):
        parser.error("--a and --b: the UNets differ in their parameters (not the same architecture)")
    w = args.weight_a
    average = {k: (w * first[k].float() + (1 - w) * second[k].float()).to(first[k].dtype) for k in first}
    # a fresh folder beside --out (never an existing one, so nothing is deleted), renamed once complete
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent)) / "pipeline"
    shutil.copytree(args.config_from, staging, ignore=shutil.ignore_patterns("*.safetensors", "README.md"))
    save_file(average, str(staging / WEIGHTS), metadata={"format": "pt"})
    staging.rename(out)  # whole or not at all
    staging.parent.rmdir()  # the now empty folder this run made
    print(f"wrote {out}: {w:g} x {args.a} + {1 - w:g} x {args.b}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
