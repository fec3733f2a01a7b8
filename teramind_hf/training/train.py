"""Train or fine-tune a Tera-MIND pipeline with the official boundary-aware dual loss.

    accelerate launch -m teramind_hf.training.train --data tissue.zarr --output_dir runs/my-model ...
    accelerate launch --multi_gpu --num_processes 2 -m teramind_hf.training.train ... # DDP (CPU-only: gloo)
    teramind train --data tissue.zarr --pretrained org/teramind-mouse-brain --extend_panel ...

The loss, its per-sample draws and the data order depend only on (seed, global step, global sample index)
(`teramind_hf.training.losses`, `teramind_hf.training.data`), so runs with different process counts or
gradient-accumulation splits of the same global batch, and interrupted-then-resumed runs, give the same
numbers. Checkpoints are ``checkpoint-<step>`` folders of safetensors and JSON only (model, optimizer, LR scheduler,
EMA, RNG; `teramind_hf.training.checkpoint`: nothing is pickled, so a crafted checkpoint cannot run code on
resume) with a ``training_config.json`` that resuming checks against the current model.
The output folder is a complete `TeraMindPipeline` (safetensors) with a generated model card.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

from .checkpoint import check_checkpoint_config, resolve_checkpoint, save_checkpoint
from .options import add_training_arguments
from .run_setup import (
    finish_update,
    prepare_optimization,
    start_run,
    training_memory_format,
    truncate_log_after,
)

LOG_FILE = "train_log.jsonl"

logger = logging.getLogger("teramind_hf.training")


# ---------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="teramind_hf.training.train", description=__doc__.split("\n")[0])
    return add_training_arguments(parser).parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Reject inconsistent options before any work, naming the argument."""
    positive = ("train_batch_size", "gradient_accumulation_steps", "max_train_steps", "checkpointing_steps", "crop_size")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.extend_panel and not args.pretrained:
        raise ValueError("--extend_panel needs --pretrained (a model whose panel is extended)")
    if args.crop_size % 64:
        raise ValueError(f"--crop_size must be a multiple of the 64-px patch, got {args.crop_size}")
    if not math.isfinite(args.collage_edge_weight) or args.collage_edge_weight <= 0:
        raise ValueError(f"--collage_edge_weight must be a positive number (1 = the official loss), got {args.collage_edge_weight}")
    if not 0 <= args.ema_decay < 1:  # (a NaN fails this too)
        raise ValueError(f"--ema_decay must be in [0, 1) (the weight of the old average per step), got {args.ema_decay}")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be >= 1 (checkpoints kept), got {args.checkpoints_total_limit}")
    check_output_dir(args)


def check_output_dir(args: argparse.Namespace) -> None:
    """--output_dir is not, does not contain and does not lie inside what training reads (the data, the validation
    data, a local --pretrained folder), and can be written: checked before the model is built."""
    from ..output_guard import check_can_create, check_output_location

    pretrained = args.pretrained if args.pretrained is not None and Path(args.pretrained).exists() else None
    inputs = {"--data": args.data, "--validation_data": args.validation_data, "--pretrained": pretrained}
    check_output_location(args.output_dir, inputs, "--output_dir")
    check_can_create(args.output_dir, "--output_dir")


# ---------------------------------------------------------------------------------------------- model
def build_unet(args: argparse.Namespace, data_panel, log=logger.info):
    """(unet float32, model GenePanel, alignment, scheduler): from scratch on the data panel or from --pretrained."""
    from ..data.panel import GenePanel
    from ..models.unet_genemorph_3d import GeneMorphUNet3DModel
    from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler
    from .data import align_panel
    from .panel import extend_gene_panel

    if args.pretrained is None:
        torch.manual_seed(args.seed)
        unet = GeneMorphUNet3DModel(
            num_genes=len(data_panel),
            gene_names=list(data_panel.genes),
            block_out_channels=tuple(args.block_out_channels),
            gene_map_channels=tuple(args.gene_map_channels),
            time_embed_dim=args.time_embed_dim,
            layers_per_block=args.layers_per_block,
            dropout=args.dropout,
        )
        return unet, data_panel, None, BoundaryAwareScheduler(prediction_type=args.prediction_type or "epsilon")

    from ..pipelines.pipeline_teramind import TeraMindPipeline

    try:
        pipe = TeraMindPipeline.from_pretrained(args.pretrained)
    except (OSError, ValueError) as err:
        raise type(err)(f"--pretrained {args.pretrained}: cannot load a TeraMindPipeline ({err})") from err
    unet = pipe.unet.to(torch.float32)
    if args.prediction_type and args.prediction_type != pipe.scheduler.config.prediction_type:
        log(f"switching prediction_type {pipe.scheduler.config.prediction_type} -> {args.prediction_type}")
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type=args.prediction_type)
    names = unet.config.gene_names
    if not names:
        if len(data_panel) != unet.config.num_genes:
            raise ValueError(
                f"--pretrained {args.pretrained} has no gene_names and {unet.config.num_genes} genes; "
                f"--data has {len(data_panel)}: cannot align"
            )
        return unet, data_panel, None, pipe.scheduler
    model_panel = GenePanel(names)
    if args.extend_panel:
        new = [g for g in data_panel.genes if g not in model_panel]
        if new:
            log(f"extending the panel of {args.pretrained} with {len(new)} new genes: {new}")
            unet = extend_gene_panel(unet, new, seed=args.seed)
            model_panel = GenePanel(unet.config.gene_names)
    alignment = align_panel(model_panel, data_panel, min_overlap=args.min_gene_overlap, orthologues=args.orthologues)
    log(f"gene alignment: {alignment.summary()}")
    if alignment.missing:
        log(f"model genes missing from --data (zero-filled): {list(alignment.missing)}")
    if alignment.unused:
        log(f"--data genes unknown to the model (ignored; --extend_panel learns them): {list(alignment.unused)}")
    return unet, model_panel, alignment, pipe.scheduler


def build_pipeline(unet, scheduler):
    from ..pipelines.pipeline_teramind import TeraMindPipeline

    pipe = TeraMindPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_validation(pipe, region, args, step: int, output_dir: Path) -> dict:
    from .validation import image_metrics, sample_region, save_comparison

    pred = sample_region(pipe, region, num_inference_steps=args.validation_inference_steps, seed=args.seed)
    metrics = image_metrics(pred, region.images)
    save_comparison(pred, region.images, output_dir / "validation" / f"step-{step:06d}.png")
    return metrics


def save_pipeline(unet, scheduler, args: argparse.Namespace, output_dir: Path, summary: dict) -> Path:
    """Save the complete pipeline (safetensors, --save_dtype), its model card and ``train_summary.json``
    (:func:`~.publish.publish_pipeline`: the folder becomes a pipeline only once all three are there)."""
    from .card import training_model_card
    from .publish import publish_pipeline

    # safetensors stores contiguous tensors only: save in the default layout, then hand the model back as it came
    to_save = unet.to(dtype=torch.float16 if args.save_dtype == "fp16" else torch.float32, memory_format=torch.contiguous_format)

    def write(folder: Path) -> None:
        build_pipeline(to_save, scheduler).save_pretrained(str(folder), safe_serialization=True)
        training_model_card(args, unet.config, summary).save(str(folder / "README.md"))
        (folder / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str))

    try:
        publish_pipeline(output_dir, write)
    finally:
        unet.to(dtype=torch.float32, memory_format=training_memory_format(args))
    return output_dir


# ---------------------------------------------------------------------------------------------- training
def train(args: argparse.Namespace) -> dict:
    """Run the training loop; returns a summary (last losses, validation metrics, steps, time)."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .data import AlignedSamples, StepSampler, open_training_store, step_and_sample
    from .losses import boundary_aware_loss, draw_windows, sample_seed, training_alphas_cumprod
    from .validation import read_region

    check_args(args)
    output_dir, accelerator, log = start_run(args, logger)

    world, rank = accelerator.num_processes, accelerator.process_index
    global_batch = args.train_batch_size * world * args.gradient_accumulation_steps
    dataset = open_training_store(args.data, crop_size=args.crop_size, length=args.max_train_steps * global_batch, seed=args.seed)
    unet, model_panel, alignment, scheduler = build_unet(args, dataset.panel, log)
    if alignment is None and len(dataset.panel) != unet.config.num_genes:
        raise ValueError(f"--data {args.data}: {len(dataset.panel)} genes but the model has {unet.config.num_genes}")
    samples = AlignedSamples(dataset, alignment)

    resume = resolve_checkpoint(args.resume_from_checkpoint, output_dir)
    if resume is not None:
        check_checkpoint_config(resume, unet)

    unet, optimizer, lr_scheduler, ema, start_step, prior_seconds = prepare_optimization(accelerator, unet, args, resume, log)
    if resume is None and args.resume_from_checkpoint == "latest":
        log(f"no checkpoint in {output_dir} yet: starting from step 0")

    sampler = StepSampler(start_step=start_step, max_steps=args.max_train_steps, batch_size=args.train_batch_size,
                          accumulation=args.gradient_accumulation_steps, rank=rank, world=world)
    loader = DataLoader(samples, batch_size=args.train_batch_size, sampler=sampler, num_workers=args.dataloader_num_workers)
    abar = training_alphas_cumprod(scheduler)
    prediction_type = scheduler.config.prediction_type
    cfg = accelerator.unwrap_model(unet).config

    region = None
    if not args.no_validation and accelerator.is_main_process:
        region = read_region(args.validation_data or args.data, size=args.validation_size)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if args.report_to:
            accelerator.init_trackers("teramind-train", config={k: str(v) for k, v in vars(args).items()})
    log_path = output_dir / LOG_FILE
    if accelerator.is_main_process and resume is not None:
        truncate_log_after(log_path, start_step)
    log(f"training {sum(p.numel() for p in unet.parameters()):,} parameters, {world} process(es), global batch "
        f"{global_batch}, steps {start_step}..{args.max_train_steps}")

    progress = tqdm(range(start_step, args.max_train_steps), initial=start_step, total=args.max_train_steps,
                    disable=args.no_progress or not accelerator.is_local_main_process, desc="steps")
    step, started = start_step, time.time()
    running = torch.zeros(3)
    skipped = 0
    summary: dict = {"validation": {}}
    for batch in loader:
        indices = batch["index"].tolist()
        this_step, _ = step_and_sample(indices[0], global_batch)
        seeds = [sample_seed(args.seed, *step_and_sample(i, global_batch)) for i in indices]
        torch.manual_seed(sample_seed(args.seed, this_step, rank, "dropout"))
        windows = draw_windows(batch["images"], batch["genes"], seeds, patch_size=cfg.sample_size, gene_bin=cfg.gene_bin)
        for name in ("x0", "noise", "mask", "genes", "timesteps"):
            setattr(windows, name, getattr(windows, name).to(accelerator.device))
        with accelerator.accumulate(unet):
            with accelerator.autocast():
                out = boundary_aware_loss(unet, windows, abar, patch_size=cfg.sample_size, prediction_type=prediction_type,
                                          collage_edge_weight=args.collage_edge_weight)
            accelerator.backward(out.loss)
            finite = True
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                norm = accelerator.clip_grad_norm_(unet.parameters(), args.max_grad_norm)
                finite = bool(torch.isfinite(torch.as_tensor(norm)))
            if finite:
                optimizer.step()
                lr_scheduler.step()
            else:  # an overflow (possible in fp16/bf16): skip this update, as a GradScaler would
                skipped += 1
                log(f"step {step + 1}: non-finite gradient norm, update skipped ({skipped} so far)")
            optimizer.zero_grad(set_to_none=True)
        running += torch.stack([out.loss.detach().float().cpu(), out.collage.float().cpu(), out.patch.float().cpu()])
        if not accelerator.sync_gradients:
            continue

        step += 1
        losses = finish_update(accelerator, running, ema, unet, args.gradient_accumulation_steps)
        record = {"step": step, "loss": float(losses[0]), "collage_loss": float(losses[1]),
                  "patch_loss": float(losses[2]), "lr": lr_scheduler.get_last_lr()[0]}
        progress.update(1)
        progress.set_postfix(loss=f"{record['loss']:.4f}")
        if accelerator.is_main_process:
            with log_path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            if args.report_to:
                accelerator.log(record, step=step)
        summary["last"] = record

        if step % args.checkpointing_steps == 0 or step == args.max_train_steps:
            elapsed = prior_seconds + time.time() - started
            save_checkpoint(accelerator, output_dir, step, unet, optimizer, lr_scheduler, ema, args, elapsed)
        validate_now = args.validation_steps and step % args.validation_steps == 0
        if region is not None and (validate_now or step == args.max_train_steps):
            summary["validation"] = _validate(accelerator, unet, ema, scheduler, region, args, step, output_dir, log)
    progress.close()
    accelerator.wait_for_everyone()

    summary.update(steps=step, seconds=prior_seconds + time.time() - started, world=world, global_batch=global_batch, skipped_updates=skipped)
    if region is not None and not summary["validation"]:
        summary["validation"] = _validate(accelerator, unet, ema, scheduler, region, args, step, output_dir, log)
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(final.parameters())
            ema.copy_to(final.parameters())
        save_pipeline(final, scheduler, args, output_dir, summary)
        if ema is not None:
            ema.restore(final.parameters())
        log(f"saved the pipeline to {output_dir}")
    accelerator.end_training()
    return summary


def _validate(accelerator, unet, ema, scheduler, region, args, step: int, output_dir: Path, log) -> dict:
    """Sample the validation region with the current (EMA) weights on the main process; log PSNR/SSIM."""
    if not accelerator.is_main_process:
        return {}
    model = accelerator.unwrap_model(unet)
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    metrics = run_validation(build_pipeline(model, scheduler), region, args, step, output_dir)
    if ema is not None:
        ema.restore(model.parameters())
    model.train()
    record = {"step": step, "val_psnr": metrics["psnr"], "val_ssim": metrics["ssim"]}
    with (output_dir / LOG_FILE).open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    if args.report_to:
        accelerator.log(record, step=step)
    log(f"step {step}: validation PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}")
    return {"step": step, **metrics}


# ---------------------------------------------------------------------------------------------- entry points
def main(argv: list[str] | None = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
