"""Distil a Tera-MIND pipeline into a few-step student of the same architecture (trajectory distillation).

    accelerate launch -m teramind_hf.training.distill --teacher PIPELINE --data tissue.zarr --output_dir runs/student
    teramind distill --teacher PIPELINE --data tissue.zarr --output_dir runs/student --student_steps 2

1. Teacher targets (`teramind_hf.training.distill_targets`): noise draws z over regions of ``--data`` and the
   teacher's deterministic samples x0*(z) with ``--teacher_scheduler`` on the student's grid schedule, cached in a
   resumable zarr store (generated on the main process; records already there are kept).
2. The student (initialised from the teacher, or ``--student_init``) learns to map x on the DDIM path at its own
   ``--student_steps`` timesteps (trailing spacing: 999, 499 for 2) to what lands DDIM on x0*, one collage-path
   call at a time on the grid offsets it samples with (`teramind_hf.training.distill_windows`).
3. The output folder is a `TeraMindPipeline`: the student's UNet, a DDIM `BoundaryAwareScheduler` config, and
   ``num_inference_steps`` and ``grid`` in model_index.json, so ``from_pretrained`` samples as trained; with a card.

Accelerate, EMA, safetensors + JSON checkpoints and exact SIGKILL resume are the trainer's
(`teramind_hf.training.checkpoint`); every draw depends on (seed, global step, global sample index) only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import torch

from .checkpoint import check_checkpoint_config, resolve_checkpoint, save_checkpoint
from .distill_options import add_distill_arguments

LOG_FILE = "train_log.jsonl"
logger = logging.getLogger("teramind_hf.training.distill")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="teramind_hf.training.distill", description=__doc__.split("\n")[0])
    return add_distill_arguments(parser).parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Reject inconsistent options before any work, naming the argument."""
    from ..output_guard import check_can_create, check_output_location
    from ..sampling.schedule import resolve_grid

    positive = ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "checkpointing_steps",
                "num_teacher_samples", "student_steps", "teacher_region_size", "discriminator_steps", "window_patches",
                "seam_band")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.teacher_steps is not None and args.teacher_steps < 1:
        raise ValueError(f"--teacher_steps must be >= 1, got {args.teacher_steps}")
    if args.teacher_region_size % 256:
        raise ValueError(f"--teacher_region_size must be whole 256-px tiles, got {args.teacher_region_size}")
    if not 0 <= args.ema_decay < 1:
        raise ValueError(f"--ema_decay must be in [0, 1), got {args.ema_decay}")
    for name in ("highpass_weight", "adversarial_weight", "seam_weight"):
        if not getattr(args, name) >= 0:
            raise ValueError(f"--{name} must be >= 0, got {getattr(args, name)}")
    if args.seam_weight and args.window_patches < 2:
        raise ValueError(f"--seam_weight needs --window_patches >= 2 (a window with patch edges inside it), got "
                         f"--window_patches {args.window_patches}")
    if not args.discriminator_lr > 0:
        raise ValueError(f"--discriminator_lr must be > 0, got {args.discriminator_lr}")
    if not 0 <= args.fresh_noise_fraction <= 1:
        raise ValueError(f"--fresh_noise_fraction must be in [0, 1], got {args.fresh_noise_fraction}")
    if args.fresh_noise_fraction and not (args.adversarial_weight or args.fresh_noise_mse):
        raise ValueError("--fresh_noise_fraction needs --adversarial_weight > 0 or --fresh_noise_mse (without the MSE its "
                         "windows are trained by the adversarial term alone)")
    if args.fresh_noise_mse and not args.fresh_noise_fraction:
        raise ValueError("--fresh_noise_mse needs --fresh_noise_fraction > 0 (it sets the loss of those windows)")
    if args.discriminator_steps != 1 and not args.adversarial_weight:
        raise ValueError("--discriminator_steps needs --adversarial_weight > 0 (it sets how the discriminator learns)")
    if args.adversarial_stains is not None and not args.adversarial_weight:
        raise ValueError("--adversarial_stains needs --adversarial_weight > 0 (it picks what the discriminator sees)")
    if args.discriminator_per_stain and not args.adversarial_weight:
        raise ValueError("--discriminator_per_stain needs --adversarial_weight > 0 (it shapes the discriminator)")
    if args.discriminator_paired and not args.adversarial_weight:
        raise ValueError("--discriminator_paired needs --adversarial_weight > 0 (it picks what the discriminator judges)")
    if args.adversarial_stain_weights is not None and not args.discriminator_per_stain:
        raise ValueError("--adversarial_stain_weights needs --discriminator_per_stain (one discriminator per weighted stain)")
    if args.discriminator_per_stain and args.adversarial_stains is not None and len(args.adversarial_stains) < 2:
        raise ValueError(f"--discriminator_per_stain needs at least two stains seen, got --adversarial_stains "
                         f"{args.adversarial_stains} (one stain's discriminator is already its own)")
    for name in ("grid", "teacher_grid"):
        try:
            resolve_grid(getattr(args, name))
        except ValueError as err:
            raise ValueError(f"--{name}: {err}") from err
    local = {k: v for k, v in (("--teacher", args.teacher), ("--student_init", args.student_init)) if v and Path(v).exists()}
    check_output_location(args.output_dir, {"--data": args.data, **local}, "--output_dir")
    check_can_create(args.output_dir, "--output_dir")


def load_pipeline(location: str, argument: str):
    from ..pipelines.pipeline_teramind import TeraMindPipeline

    try:
        pipe = TeraMindPipeline.from_pretrained(location)
    except (OSError, ValueError) as err:
        raise type(err)(f"{argument} {location}: cannot load a TeraMindPipeline ({err})") from err
    pipe.set_progress_bar_config(disable=True)
    return pipe


def prepare_teacher(args, data_panel, log):
    """(teacher pipeline float32 with the deterministic solver, gene alignment, student grid, teacher grid, steps)."""
    from ..sampling.presets import scheduler_from_name
    from ..sampling.schedule import resolve_grid
    from .data import align_panel

    teacher = load_pipeline(args.teacher, "--teacher")
    teacher.unet.to(torch.float32).eval()
    names = teacher.unet.config.gene_names
    alignment = None
    if names:
        from ..data.panel import GenePanel

        alignment = align_panel(GenePanel(names), data_panel, min_overlap=args.min_gene_overlap, orthologues=args.orthologues)
        log(f"gene alignment: {alignment.summary()}")
    elif len(data_panel) != teacher.unet.config.num_genes:
        raise ValueError(f"--teacher {args.teacher} has no gene_names and {teacher.unet.config.num_genes} genes; "
                         f"--data has {len(data_panel)}: cannot align")
    grid = resolve_grid(args.grid if args.grid is not None else teacher.config.get("grid"))
    teacher_grid = resolve_grid(args.teacher_grid) if args.teacher_grid is not None else grid
    steps = args.teacher_steps or teacher.config.get("num_inference_steps", 15)
    teacher.scheduler = scheduler_from_name(args.teacher_scheduler, teacher.scheduler)
    return teacher, alignment, grid, teacher_grid, steps


def make_targets(args, teacher, alignment, teacher_grid, steps, output_dir: Path, accelerator, log):
    """The target store, opened read-only, with ``--num_teacher_samples`` complete records: the main process
    creates (or grows and checks) it, then every process generates its share of the missing records (record ``i``
    by process ``i mod N``; a record is the same bytes whichever process makes it), so N processes share the
    teacher's work."""
    import zarr

    from .distill_targets import (TargetSpec, check_target_store, completed_records, fill_targets, open_target_store,
                                  weights_fingerprint)

    cfg = teacher.unet.config
    path = Path(args.targets) if args.targets else output_dir / "teacher_targets.zarr"
    spec = TargetSpec(teacher=weights_fingerprint(teacher.unet), data=str(Path(args.data).resolve()), seed=args.seed, region_size=args.teacher_region_size,
                      teacher_scheduler=args.teacher_scheduler, teacher_steps=steps, teacher_grid=teacher_grid.to_dict(),
                      gene_names=list(cfg.gene_names) if cfg.gene_names else None, num_genes=cfg.num_genes)
    size, bins = args.teacher_region_size, args.teacher_region_size // cfg.gene_bin
    genes_store = zarr.open_group(str(args.data), mode="r")["genes"]
    if genes_store.shape[2] * cfg.gene_bin < size or genes_store.shape[3] * cfg.gene_bin < size:
        raise ValueError(f"--data {args.data}: smaller than --teacher_region_size {size} px")
    if genes_store.shape[1] < cfg.num_slices:
        raise ValueError(f"--data {args.data}: {genes_store.shape[1]} sections, the model needs {cfg.num_slices}")
    shapes = {"genes": (cfg.num_genes, cfg.gene_slices, bins, bins), "noise": (cfg.out_channels, cfg.num_slices, size, size),
              "target": (cfg.out_channels, cfg.num_slices, size, size)}
    # every process refuses a wrong store itself, before the main process writes: after a refusal on the main
    # process alone, the others fail at the barrier below with the process group's error instead of the reason
    check_target_store(path, spec, shapes)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        open_target_store(path, spec, args.num_teacher_samples, shapes)
    accelerator.wait_for_everyone()
    group = zarr.open_group(str(path), mode="r+")
    started = time.process_time()
    made = fill_targets(group, teacher, genes_store, alignment, spec, num_records=args.num_teacher_samples,
                        slices=cfg.num_slices, gene_slices=cfg.gene_slices, log=log,
                        rank=accelerator.process_index, world=accelerator.num_processes)
    world = accelerator.num_processes
    if made or world > 1:  # with several processes, every process says what it made
        who = f"process {accelerator.process_index} of {world}: " if world > 1 else ""
        logger.info(f"{who}generated {made} teacher targets in {time.process_time() - started:.0f} CPU s")
    accelerator.wait_for_everyone()
    group = zarr.open_group(str(path), mode="r")
    complete = completed_records(group)
    if complete < args.num_teacher_samples:
        raise RuntimeError(f"--targets {path}: {complete} of {args.num_teacher_samples} teacher targets complete after generation")
    return group


def save_student(unet, scheduler, teacher, grid, args, output_dir: Path, summary: dict) -> None:
    from ..pipelines.pipeline_teramind import TeraMindPipeline
    from ..sampling.schedule import GRID_SCHEDULES
    from .distill_card import distill_model_card
    from .publish import publish_pipeline

    to_save = unet.to(dtype=torch.float16 if args.save_dtype == "fp16" else torch.float32, memory_format=torch.contiguous_format)
    cfg = teacher.config
    grid_name = next((name for name, known in GRID_SCHEDULES.items() if known == grid), grid.to_dict())
    pipe = TeraMindPipeline(unet=to_save, scheduler=scheduler, tile_size=cfg.tile_size, halo=cfg.halo,
                            fill_value=cfg.fill_value, grid=grid_name, num_inference_steps=args.student_steps)

    def write(folder: Path) -> None:
        pipe.save_pretrained(str(folder), safe_serialization=True)
        distill_model_card(args, unet.config, grid, summary).save(str(folder / "README.md"))
        (folder / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str))

    publish_pipeline(output_dir, write)  # a pipeline folder only once weights, card and summary are all there


def distill(args: argparse.Namespace) -> dict:
    """Generate the teacher targets, train the student, save it; returns a summary."""
    from torch.utils.data import DataLoader

    from ..models.unet_genemorph_3d import GeneMorphUNet3DModel
    from .data import StepSampler, open_training_store
    from .distill_targets import StudentPath, student_scheduler
    from .distill_windows import DistillWindows, WindowGeometry, distill_loss
    from .losses import sample_seed
    from .run_setup import finish_update, prepare_optimization, start_run, truncate_log_after

    check_args(args)
    output_dir, accelerator, log = start_run(args, logger)
    data = open_training_store(args.data, crop_size=args.teacher_region_size, length=1, seed=args.seed)
    teacher, alignment, grid, teacher_grid, teacher_steps = prepare_teacher(args, data.panel, log)
    patches_per_region = args.teacher_region_size // teacher.unet.config.sample_size
    if teacher.unet.config.sample_size % args.seam_band:
        raise ValueError(f"--seam_band {args.seam_band}: must divide the model's {teacher.unet.config.sample_size}-px patch")
    if args.window_patches > patches_per_region:
        raise ValueError(f"--window_patches {args.window_patches}: a {args.teacher_region_size}-px teacher region holds "
                         f"{patches_per_region} patches of {teacher.unet.config.sample_size} px per side")
    student_pipe = load_pipeline(args.student_init, "--student_init") if args.student_init else teacher
    unet = GeneMorphUNet3DModel.from_config(teacher.unet.config)
    arch = {k: v for k, v in dict(student_pipe.unet.config).items() if not k.startswith("_")}
    if arch != {k: v for k, v in dict(teacher.unet.config).items() if not k.startswith("_")}:
        raise ValueError(f"--student_init {args.student_init}: not the teacher's architecture and panel (config differs)")
    unet.load_state_dict({k: v.float() for k, v in student_pipe.unet.state_dict().items()})
    prediction_type = args.prediction_type or student_pipe.scheduler.config.prediction_type
    for name in ("highpass_weight", "adversarial_weight"):
        if getattr(args, name) and prediction_type != "sample":
            raise ValueError(f"--{name} needs a student predicting x0 (--prediction_type sample), not {prediction_type!r}")
    if args.adversarial_weight:
        from .distill_adversarial import check_stain_weights, check_stains

        stains = check_stains(args.adversarial_stains, teacher.unet.config)  # before anything is written
        check_stain_weights(args.adversarial_stain_weights, stains, args.discriminator_per_stain)
    scheduler = student_scheduler(teacher.scheduler, prediction_type)
    path = StudentPath.of(scheduler, args.student_steps)
    log(f"student: {args.student_steps} DDIM steps at t = {list(path.timesteps)}, predicting {prediction_type}, grid {grid.to_dict()}")

    resume = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if resume is not None:
        check_checkpoint_config(resume, unet)
    group = make_targets(args, teacher, alignment, teacher_grid, teacher_steps, output_dir, accelerator, log)
    num_records = args.num_teacher_samples  # make_targets saw them complete

    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = args.train_batch_size * world * args.gradient_accumulation_steps
    cfg = teacher.unet.config
    geometry = WindowGeometry(patch=cfg.sample_size, gene_bin=cfg.gene_bin, fill_value=teacher.config.fill_value,
                              region=args.teacher_region_size, window=args.window_patches)
    window_seed = args.seed if args.window_seed is None else args.window_seed
    adversary, truth = None, None
    if args.adversarial_weight:
        from .distill_adversarial import Adversary, TruthRegions

        if not args.discriminator_paired:  # a paired discriminator's real is the teacher's x0, not the true image
            truth = TruthRegions(args.data, seed=args.seed, region=args.teacher_region_size, slices=cfg.num_slices,
                                 gene_bin=cfg.gene_bin)
        adversary = Adversary(accelerator, cfg, lr=args.discriminator_lr, fill_value=teacher.config.fill_value, seed=window_seed,
                              stains=args.adversarial_stains, steps=args.discriminator_steps,
                              per_stain=args.discriminator_per_stain, stain_weights=args.adversarial_stain_weights,
                              paired=args.discriminator_paired)
    windows = DistillWindows(group, num_records, path, grid, geometry, seed=window_seed, global_batch=global_batch,
                             length=args.max_train_steps * global_batch, prediction_type=prediction_type, truth=truth,
                             fresh_noise_fraction=args.fresh_noise_fraction, fresh_noise_mse=args.fresh_noise_mse)
    extras = adversary.extras() if adversary else None
    unet, optimizer, lr_scheduler, ema, start_step, prior_seconds = prepare_optimization(accelerator, unet, args, resume, log, extras)

    sampler = StepSampler(start_step=start_step, max_steps=args.max_train_steps, batch_size=args.train_batch_size,
                          accumulation=args.gradient_accumulation_steps, rank=rank, world=world)
    loader = DataLoader(windows, batch_size=args.train_batch_size, sampler=sampler, num_workers=args.dataloader_num_workers)
    log_path = output_dir / LOG_FILE
    if accelerator.is_main_process and resume is not None:
        truncate_log_after(log_path, start_step)
    log(f"distilling on {num_records} teacher samples, global batch {global_batch}, steps {start_step}..{args.max_train_steps}")

    step, started, cpu_started = start_step, time.time(), time.process_time()
    running = torch.zeros(4 if adversary else 2)  # loss, mse (, the student's adversarial term, the discriminator's loss)
    summary: dict = {"teacher_samples": num_records, "timesteps": list(path.timesteps)}
    micro = 0
    for batch in loader:
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        # dropout draws from (seed, step, micro-batch, rank) alone, so a resumed run draws what the whole run did
        torch.manual_seed(sample_seed(window_seed, step, micro * world + rank, "dropout"))
        micro = (micro + 1) % args.gradient_accumulation_steps
        with accelerator.accumulate(unet):
            with accelerator.autocast():
                loss, mse, out = distill_loss(unet, batch, path, prediction_type, args.highpass_weight, args.seam_weight,
                                              args.seam_band)
                if adversary:
                    adversarial = adversary.generator_term(out, batch)
                    loss = loss + args.adversarial_weight * adversarial
            accelerator.backward(loss)
            finite = True
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                finite = bool(torch.isfinite(torch.as_tensor(accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm))))
            if finite:
                optimizer.step()
                lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            parts = [loss.detach().float().cpu(), mse.float().cpu()]
            if adversary:
                parts += [adversarial.detach().float().cpu(), adversary.update(out, batch).float().cpu()]
        running += torch.stack(parts)
        if not accelerator.sync_gradients:
            continue
        step += 1
        losses = finish_update(accelerator, running, ema, unet, args.gradient_accumulation_steps)
        record = {"step": step, "loss": float(losses[0]), "mse": float(losses[1]), "lr": lr_scheduler.get_last_lr()[0]}
        if adversary:
            record.update(adversarial=float(losses[2]), discriminator=float(losses[3]))
        if accelerator.is_main_process:
            with log_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            if args.report_to:
                accelerator.log(record, step=step)
            if not args.no_progress and (step % 10 == 0 or step == args.max_train_steps):
                log(f"step {step}/{args.max_train_steps} loss {record['loss']:.5f} ({(time.process_time() - cpu_started) / max(step - start_step, 1):.2f} CPU s/step)")
        summary["last"] = record
        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            save_checkpoint(accelerator, output_dir, step, unet, optimizer, lr_scheduler, ema, args,
                            prior_seconds + time.time() - started, extras)
    accelerator.wait_for_everyone()
    summary.update(steps=step, seconds=prior_seconds + time.time() - started, world=world, global_batch=global_batch)
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(final.parameters())
            ema.copy_to(final.parameters())
        save_student(final, scheduler, teacher, grid, args, output_dir, summary)
        log(f"saved the student pipeline to {output_dir}")
    accelerator.end_training()
    return summary


def main(argv: list[str] | None = None) -> int:
    distill(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
