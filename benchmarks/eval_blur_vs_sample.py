"""Why PSNR/SSIM cannot judge realism: a Gaussian-blurred truth against a model sample, on every metric.

    python benchmarks/eval_blur_vs_sample.py GENERATED.ome.zarr --truth STORE [--sigma 8]

GENERATED is a `teramind generate` output of a region of the truth store (held-out phantom, seed >= 2). The
blurred truth has no cells a biologist would count, yet wins PSNR/SSIM; the realism metrics say otherwise.
Prints one row per image (mean over sections); the numbers quoted in docs/evaluation.md come from here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ("dapi_psnr", "dapi_ssim", "dapi_ms_ssim", "polyt_psnr", "polyt_ssim", "nuclei_f1", "nuclei_count_error",
           "nuclei_area_wasserstein_um2", "dapi_hf_ratio", "polyt_hf_ratio", "dapi_spectrum_distance")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("generated")
    parser.add_argument("--truth", required=True)
    parser.add_argument("--sigma", type=float, default=8.0, help="Gaussian blur of the truth, px")
    args = parser.parse_args()
    import torch
    from scipy import ndimage as ndi

    from teramind_hf.eval.inputs import align, open_volume
    from teramind_hf.eval.metrics import realism_metrics

    torch.set_num_threads(1)
    generated = open_volume(args.generated, "generated")
    truth, _ = align(generated, open_volume(args.truth, "truth"))
    as_zchw = lambda v: np.stack([v.block(z, slice(0, v.shape[2]), slice(0, v.shape[3])) for z in range(v.shape[1])])  # noqa: E731
    truth_images, sample = as_zchw(truth), as_zchw(generated)
    blurred = ndi.gaussian_filter(truth_images.astype(np.float32), (0, 0, args.sigma, args.sigma))
    rows = {
        "model sample": sample,
        f"truth blurred sigma {args.sigma:g} px": blurred.round().clip(0, 255).astype(np.uint8),
    }
    um = generated.um_per_px or truth.um_per_px
    widths = [max(10, len(c) + 1) for c in COLUMNS]
    print(f"{'':28s}" + "".join(f"{c:>{w}s}" for c, w in zip(COLUMNS, widths)))
    for name, images in rows.items():
        mean = realism_metrics(images, truth_images, um)["mean"]
        print(f"{name:28s}" + "".join(f"{mean[c]:{w}.3f}" for c, w in zip(COLUMNS, widths)))


if __name__ == "__main__":
    main()
