"""Where a student's seams come from: the step of its error across its output patches' edges against the same step
inside the patches, on the training windows of a teacher-target store.

    OMP_NUM_THREADS=1 python benchmarks/student_seam_steps.py --targets teacher_targets.zarr \
        --students turbo=teramind_hf/turbo_model other=stages/turbo_seam_band8w2

For each student: 96 windows of 2 x 2 output patches (`teramind_hf.training.distill_windows`, ``--window-seed``),
on the DDIM path of the store's teacher samples at the student's 3 timesteps, on the ``diagonal-last`` grid; the
error ``x0 - x0*`` of its collage output; and per student step the mean square of the error's step (`step_across`,
1 px and 8 px bands) across the edges between the patches (position 64 of the 128-px output) and across
lines inside them (positions 16, 32, 48, 80, 96, 112). Seamless outputs have edge ~ inside.
"""

from __future__ import annotations

import argparse
import sys

import torch

INNER = (16, 32, 48, 80, 96, 112)


def edge_and_inner_steps(unet, windows, count: int, band: int, batch: int = 8) -> dict[tuple[str, int], float]:
    """{(where, student step): mean square of the error's ``band``-px step} over ``count`` windows."""
    from torch.utils.data import default_collate

    from teramind_hf.training.distill_windows import step_across

    sums: dict[tuple[str, int], list[float]] = {}
    with torch.no_grad():
        for start in range(0, count, batch):
            b = default_collate([windows[i] for i in range(start, start + batch)])
            error = unet(b["x"], b["timestep"], b["genes"], path="collage").sample.float() - b["x0"]
            mask = b["mask"].expand_as(error)
            for position in (64, *INNER):
                for dim in (-2, -1):
                    step, inside = step_across(error, mask, dim, position, band)
                    for k in range(step.shape[0]):
                        entry = sums.setdefault(("edge" if position == 64 else "inside", int(b["step"][k])), [0.0, 0])
                        entry[0] += float((step[k].square() * inside[k]).sum())
                        entry[1] += int(inside[k].sum())
    return {key: total / max(n, 1) for key, (total, n) in sums.items()}


def main(argv: list[str] | None = None) -> int:
    import zarr

    from teramind_hf import TeraMindPipeline, default_model_path
    from teramind_hf.sampling.schedule import resolve_grid
    from teramind_hf.training.distill_targets import StudentPath, student_scheduler
    from teramind_hf.training.distill_windows import DistillWindows, WindowGeometry

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", required=True, help="a teacher-target store of `teramind distill` (256-px records)")
    parser.add_argument("--teacher", default=str(default_model_path()), help="the store's teacher (its scheduler and fill)")
    parser.add_argument("--students", nargs="+", required=True, help="LABEL=DIR pipeline folders")
    parser.add_argument("--windows", type=int, default=96)
    parser.add_argument("--window-seed", type=int, default=99)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    group = zarr.open_group(args.targets, mode="r")
    teacher = TeraMindPipeline.from_pretrained(args.teacher)
    path = StudentPath.of(student_scheduler(teacher.scheduler, "sample"), 3)
    geometry = WindowGeometry(teacher.unet.config.sample_size, teacher.unet.config.gene_bin, teacher.config.fill_value,
                              group["target"].shape[-1], window=2)
    windows = DistillWindows(group, group["target"].shape[0], path, resolve_grid("diagonal-last"), geometry,
                             seed=args.window_seed, global_batch=8, length=10**6, prediction_type="sample")
    print(f"student steps at t = {list(path.timesteps)}; mean square of the error's step, {args.windows} windows")
    print("| student | band px | step | at patch edges | inside patches | edge / inside |")
    print("|---|---|---|---|---|---|")
    for spec in args.students:
        label, folder = spec.split("=", 1)
        unet = TeraMindPipeline.from_pretrained(folder).unet.float().eval()
        for band in (1, 8):
            steps = edge_and_inner_steps(unet, windows, args.windows, band)
            for k in range(len(path.timesteps)):
                edge, inside = steps[("edge", k)], steps[("inside", k)]
                print(f"| {label} | {band} | {k} (t {path.timesteps[k]}) | {edge:.5f} | {inside:.5f} | {edge / inside:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
