"""A one-region smoke check of a distilled student (not the held-out measurement of issue 21, which needs >= 6
regions and several noise seeds): calls per tile, PSNR/SSIM and the realism metrics against the truth, and the
PSNR/SSIM against the teacher's ODE sample from the same noise, next to reference samplers of the embedded model.
``psnr`` / ``ssim`` are the training validation's (on [-1, 1]); ``dapi_ssim``, ``polyt_ssim`` and their mean
``criterion_ssim`` are the held-out criterion's (``benchmarks/heldout_presets.py``, on [0, 1]), which can rank two
samplers the other way: judge SSIM on those.

    OMP_NUM_THREADS=1 python scripts/student_quick_check.py --student DIR --which teacher_ode,default,official,undistilled,student

Samplers (``--which``): ``student`` (the folder's own steps, grid and scheduler), ``default`` (the embedded model's
default: DPM-Solver++ 2M SDE, 8 steps, diagonal grid), ``official`` (DDIM-15, official grid), ``teacher_ode``
(DPM-Solver++ 2M deterministic, 8 steps, diagonal: what `scripts/train_student.py` distils), ``undistilled`` (the
embedded weights with the student's DDIM sampler); ``teacher_odeN`` runs the teacher's ODE in N steps instead,
``teacher_ddimN`` the teacher's deterministic DDIM in N steps on the same diagonal grid (a candidate target), and
``student_lcmT`` the student's weights with diffusers' ``LCMScheduler`` at timesteps (999, T) (2 steps; fresh noise
at the second; ``student_lcmT1-T2``: 3 steps at (999, T1, T2)); ``teacher_restartT`` (``teacher_restartT_sde``) re-noises the
``teacher_ode`` sample to timestep T with fresh noise and runs the teacher's DPM-Solver++ ODE (SDE) from there in 4
steps: what a perfect consistency student sampled with LCM at (999, T) would at best give; ``student_tcdE`` the
student's weights with diffusers' ``TCDScheduler`` on the student's steps at ``eta`` E (its gamma, e.g.
``student_tcd0.6``). Reference samples are cached in ``--cache``; a PNG per sampler
(section 0: DAPI and PolyT rows, generated | truth) goes there too, and ``--panel`` writes one picture of
all of them beside the truth. The region is a phantom of ``--seed`` (held out:
never 0 or 1) at the embedded model's 0.5 um/px; noise seed 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def main() -> int:
    from PIL import Image

    from teramind_hf import TeraMindPipeline
    from teramind_hf.data import make_phantom
    from teramind_hf.eval.metrics import realism_metrics
    from teramind_hf.sampling.presets import scheduler_from_name
    from teramind_hf.sampling.schedule import GridSchedule
    from teramind_hf.training.distill_targets import student_scheduler
    from teramind_hf.training.validation import image_metrics

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--student", default=None, help="student pipeline folder (for --which student)")
    parser.add_argument("--seed", type=int, default=3, help="phantom seed of the held-out region (not 0 or 1)")
    parser.add_argument("--size", type=int, default=512, help="region edge in px (whole 256-px tiles)")
    parser.add_argument("--which", default="student")
    parser.add_argument("--cache", default="runs/student_check")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--student_grid", default=None,
                        help="grid for the student* samplers instead of the folder's: a name of GRID_SCHEDULES, or "
                             "'diagonal-last' (the diagonal pair blended at the last step only, one offset before)")
    parser.add_argument("--panel", default=None,
                        help="also write one PNG: section 0's top-left --crop px, rows DAPI and PolyT, a column per sampler and the truth")
    parser.add_argument("--crop", type=int, default=256)
    args = parser.parse_args()
    if args.seed in (0, 1):
        parser.error("--seed 0 and 1 are the training and validation phantoms; pick a held-out seed")
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    volume = make_phantom(args.size, args.size, num_slices=2, seed=args.seed, um_per_px=0.5).to_volume()
    genes, names = torch.from_numpy(np.asarray(volume.genes, dtype=np.float32)), list(volume.panel.genes)
    truth = np.asarray(volume.images, dtype=np.float32).transpose(1, 0, 2, 3) / 127.5 - 1.0

    def sample(name: str) -> tuple[np.ndarray, dict]:
        stem = cache / f"{name}{'_' + args.student_grid if args.student_grid and name.startswith('student') else ''}_seed{args.seed}_{args.size}"
        if not name.startswith(("student", "undistilled")) and stem.with_suffix(".npy").is_file():
            return np.load(stem.with_suffix(".npy")), json.loads(stem.with_suffix(".json").read_text())
        pipe = TeraMindPipeline.from_pretrained(args.student if name.startswith("student") else None).to(torch.float32)
        options = {}
        if name == "official":
            options = dict(preset="official")
        elif name.startswith("teacher_ode"):
            pipe.scheduler = scheduler_from_name("dpm", pipe.scheduler)
            options = dict(num_inference_steps=int(name.removeprefix("teacher_ode") or 8))
        elif name.startswith("teacher_ddim"):
            pipe.scheduler = scheduler_from_name("ddim", pipe.scheduler)
            options = dict(num_inference_steps=int(name.removeprefix("teacher_ddim")), grid="diagonal")
        elif name.startswith("student_lcm"):
            pipe.scheduler = scheduler_from_name("LCMScheduler", pipe.scheduler)
            later = name.removeprefix("student_lcm") or "499"
            lcm_timesteps = (999, *(int(t) for t in later.split("-")))
            options = dict(num_inference_steps=len(lcm_timesteps))
        elif name.startswith("student_tcd"):
            # TCD on the student's own steps (original_inference_steps = its steps: t = 998, 665, 332 for 3)
            pipe.scheduler = scheduler_from_name("TCDScheduler", pipe.scheduler,
                                                 original_inference_steps=pipe.config.num_inference_steps)
            options = dict(eta=float(name.removeprefix("student_tcd")))
        elif name.startswith("teacher_restart"):
            restart_t = int(name.removeprefix("teacher_restart").removesuffix("_sde"))
            start, _ = sample("teacher_ode")
            pipe.scheduler = scheduler_from_name("dpm-sde" if name.endswith("_sde") else "dpm", pipe.scheduler)
            abar = float(pipe.scheduler.alphas_cumprod[restart_t])
            fresh = torch.randn((1, *start.shape[1::-1], *start.shape[2:]), generator=torch.Generator().manual_seed(1234))
            latents = abar**0.5 * torch.from_numpy(start).permute(1, 0, 2, 3)[None] + (1 - abar) ** 0.5 * fresh
            restart_steps = [round(restart_t - i * restart_t / 4) for i in range(4)]
            options = dict(num_inference_steps=4, latents=latents)
        elif name == "undistilled":
            pipe.scheduler = student_scheduler(pipe.scheduler, "sample")
            options = dict(num_inference_steps=2)
        if name.startswith("student") and args.student_grid:
            options["grid"] = (GridSchedule(blend_offsets=((0, 0), (16, 16)), blend_steps=1, blend_power=2.0)
                               if args.student_grid == "diagonal-last" else args.student_grid)
        pipe.set_progress_bar_config(disable=True)
        canvases = []
        forward = pipe.unet.forward
        pipe.unet.forward = lambda x, t, g, **kw: (canvases.append(x.shape[0]), forward(x, t, g, **kw))[1]
        wall, cpu = time.time(), time.process_time()
        if name.startswith(("student_lcm", "teacher_restart")):  # timesteps the solver would not pick: its `timesteps`
            solver = type(pipe.scheduler)
            chosen = list(lcm_timesteps) if name.startswith("student_lcm") else restart_steps
            set_timesteps = solver.set_timesteps
            solver.set_timesteps = lambda self, *a, device=None, **kw: set_timesteps(self, device=device, timesteps=chosen)
            try:
                images = pipe(genes, gene_names=names, generator=0, batch_size=1, **options).images
            finally:
                solver.set_timesteps = set_timesteps
        else:
            images = pipe(genes, gene_names=names, generator=0, batch_size=1, **options).images
        info = {"calls_per_tile": sum(canvases) / (args.size // 256) ** 2, "wall_s": round(time.time() - wall, 1),
                "cpu_s": round(time.process_time() - cpu, 1)}
        np.save(stem.with_suffix(".npy"), images)
        stem.with_suffix(".json").write_text(json.dumps(info))
        return images, info

    columns = []
    for name in args.which.split(","):
        images, info = sample(name)
        columns.append((f"{name} ({info['calls_per_tile']:g} calls)", images[0, :, : args.crop, : args.crop]))
        realism = realism_metrics(images, truth, um_per_px=0.5)["mean"]
        row = {**info, **{k: round(v, 4) for k, v in image_metrics(images, truth).items()}}
        row.update({k: round(float(v), 4) for k, v in realism.items() if any(s in k for s in ("f1", "wasserstein", "hf", "border"))})
        # the held-out criterion's PSNR / SSIM (benchmarks/heldout_presets.py: per stain on [0, 1], then averaged);
        # image_metrics' SSIM above (on [-1, 1]) ranks samplers differently, so judge SSIM on these
        row.update({f"{stain}_{m}": round(float(realism[f"{stain}_{m}"]), 4) for stain in ("dapi", "polyt") for m in ("psnr", "ssim")})
        row["criterion_ssim"] = round(float(realism["dapi_ssim"] + realism["polyt_ssim"]) / 2, 4)
        reference = cache / f"teacher_ode_seed{args.seed}_{args.size}.npy"
        if name != "teacher_ode" and reference.is_file():
            row["vs_teacher_ode"] = {k: round(v, 3) for k, v in image_metrics(images, np.load(reference)).items()}
        print(name, json.dumps(row), flush=True)
        grid = np.concatenate([np.concatenate([images[0, s], truth[0, s]], axis=1) for s in range(images.shape[1])], axis=0)
        Image.fromarray(((grid.clip(-1, 1) + 1) * 127.5).round().astype(np.uint8)).save(cache / f"{name}_seed{args.seed}.png")
    if args.panel:
        write_panel(args.panel, [*columns, ("truth", truth[0, :, : args.crop, : args.crop])])
    return 0


def write_panel(path: str, columns: list[tuple[str, np.ndarray]], label_height: int = 14) -> None:
    """One PNG: a labelled column per ``(label, (stains, H, W) image in [-1, 1])``, stains as rows, 4-px gaps."""
    from PIL import Image, ImageDraw

    stains, h, w = columns[0][1].shape
    gap = 4
    canvas = Image.new("L", (len(columns) * (w + gap) - gap, label_height + stains * (h + gap) - gap), 255)
    draw = ImageDraw.Draw(canvas)
    for i, (label, image) in enumerate(columns):
        x = i * (w + gap)
        draw.text((x + 2, 1), label, fill=0)
        for s in range(stains):
            pixels = ((image[s].clip(-1, 1) + 1) * 127.5).round().astype(np.uint8)
            canvas.paste(Image.fromarray(pixels), (x, label_height + s * (h + gap)))
    canvas.save(path)


if __name__ == "__main__":
    raise SystemExit(main())
