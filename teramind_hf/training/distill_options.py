"""Options of the distiller, shared by `python -m teramind_hf.training.distill` and `teramind distill` (argparse
only, so `teramind distill --help` starts without importing torch)."""

from __future__ import annotations

import argparse
import json

# the scheduler names the teacher may sample with: deterministic ones only, so that a noise draw has one endpoint
DETERMINISTIC_TEACHER_SCHEDULERS = ("dpm", "ddim", "unipc", "euler")


def grid_option(text: str):
    """A grid schedule's name, or a JSON object of a ``GridSchedule``'s fields (e.g. per-step ``shifts``)."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"a grid schedule name or a JSON object expected, got {text!r} ({err})") from err
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a grid schedule name or a JSON object expected, got {text!r}")
    return value


def add_distill_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """All options of the distiller."""
    a = parser.add_argument
    a("--teacher", required=True, help="pipeline folder or Hub repo id to distil (the student has its architecture)")
    a("--data", required=True, help="training store (zarr) whose genes condition the teacher's samples")
    a("--output_dir", required=True, help="where teacher targets, checkpoints, logs and the student pipeline go")
    a("--student_init", default=None,
      help="pipeline folder the student starts from (default: the teacher); a later stage passes the previous stage")
    a("--targets", default=None,
      help="teacher-target store (zarr; default OUTPUT_DIR/teacher_targets.zarr); stages may share one, growing it")
    a("--orthologues", action="store_true", help="match genes across species by upper-case symbol")
    a("--min_gene_overlap", type=float, default=0.5, help="smallest fraction of model genes that the data must have")
    # the teacher's samples
    a("--num_teacher_samples", type=int, default=16,
      help="teacher samples (regions) in the target store: records missing from it are generated first")
    a("--teacher_region_size", type=int, default=256, help="edge of each teacher sample in px (whole tiles)")
    a("--teacher_scheduler", choices=DETERMINISTIC_TEACHER_SCHEDULERS, default="dpm",
      help="deterministic solver of the teacher's ODE (dpm: DPM-Solver++ 2M)")
    a("--teacher_steps", type=int, default=None, help="teacher steps (default: the teacher pipeline's num_inference_steps)")
    a("--teacher_grid", default=None, type=grid_option,
      help="grid schedule of the teacher's samples (default: the student's --grid, so targets come from the grid it ships with)")
    # the student's sampler
    a("--student_steps", type=int, default=2, help="DDIM steps of the student (trailing spacing: 2 -> t 999, 499)")
    a("--grid", default=None, type=grid_option,
      help="grid schedule the student is trained for and ships with (default: the teacher's): a name, or a JSON object "
           "of GridSchedule fields, e.g. '{\"shifts\": [[32, 32], [0, 0], [0, 0]], \"blend_offsets\": [[0, 0], [16, 16]], "
           "\"blend_steps\": 1, \"blend_power\": 2}'")
    a("--prediction_type", choices=["epsilon", "sample", "v_prediction"], default=None,
      help="what the student predicts (default: the teacher's); 'sample' suits 1-2 steps of an epsilon teacher")
    # optimisation
    a("--seed", type=int, default=0, help="seeds the teacher regions and noise (part of the target store's identity)")
    a("--window_seed", type=int, default=None,
      help="seeds the training windows (default --seed); a later stage on the same target store changes it")
    a("--train_batch_size", type=int, default=8, help="128-px windows per process per micro-batch")
    a("--gradient_accumulation_steps", type=int, default=1)
    a("--max_train_steps", type=int, default=100, help="optimizer steps")
    a("--learning_rate", type=float, default=1e-4)
    a("--adam_beta1", type=float, default=0.9)
    a("--adam_beta2", type=float, default=0.999)
    a("--adam_weight_decay", type=float, default=0.0)
    a("--adam_epsilon", type=float, default=1e-8)
    a("--max_grad_norm", type=float, default=1.0)
    a("--lr_scheduler", default="constant", help="diffusers.optimization.get_scheduler name")
    a("--lr_warmup_steps", type=int, default=0)
    a("--lr_total_steps", type=int, default=None, help="length of the LR schedule (default --max_train_steps)")
    a("--highpass_weight", type=float, default=0.0,
      help="weight of an extra MSE between the 3x3 high-pass of the student's x0 and the teacher's (sharpness aid; "
           "0: plain MSE)")
    a("--window_patches", type=int, default=1,
      help="output patches per side of a training window: N x N neighbouring output patches of one grid offset, from "
           "(N + 1) x (N + 1) input patches (default 1; --seam_weight needs 2 or more)")
    a("--seam_weight", type=float, default=0.0,
      help="weight of an MSE on the jump of the student's error across the edges between a window's output patches "
           "(teaches neighbouring patches to agree where the sampler's grid joins them; needs --window_patches >= 2; "
           "0: off)")
    a("--seam_band", type=int, default=1,
      help="width in px of the bands whose mean errors --seam_weight compares across each edge, per band-px segment "
           "along it (1: a pixel and its neighbour; wider bands leave the texture to the MSE and weigh brightness steps)")
    a("--adversarial_weight", type=float, default=0.0,
      help="weight of an adversarial term: a conditional patch discriminator tells the true image of each window (read "
           "from --data) from the student's x0 (x0 students only; 0: off)")
    a("--discriminator_lr", type=float, default=1e-4, help="Adam learning rate of the discriminator (--adversarial_weight > 0)")
    a("--discriminator_steps", type=int, default=1,
      help="Adam steps of the discriminator on each training step's batch (--adversarial_weight > 0; default 1)")
    a("--adversarial_stains", type=int, nargs="+", default=None,
      help="stain indices (0: DAPI, 1: PolyT) the discriminator sees (default: all); the other stains get the MSE alone")
    a("--discriminator_per_stain", action="store_true",
      help="one discriminator per seen stain, their logits averaged (--adversarial_weight > 0), so that each stain "
           "gets texture of its own rather than the stain that is easier to tell apart taking the whole term")
    a("--adversarial_stain_weights", type=float, nargs="+", default=None,
      help="with --discriminator_per_stain: one weight >= 0 per seen stain, scaling that stain's share of the student's "
           "adversarial term (default: all 1)")
    a("--discriminator_paired", action="store_true",
      help="the discriminator judges (input, output) pairs: it also sees the student's input x_t, and the teacher's x0 "
           "for that input is real instead of the true image, so texture that does not follow the input is a tell "
           "(--adversarial_weight > 0)")
    a("--fresh_noise_fraction", type=float, default=0.0,
      help="fraction of the windows at the student's later steps whose input is the teacher's sample re-noised with "
           "fresh noise (what LCM sampling gives the student there) instead of the DDIM path; those windows are "
           "trained by the adversarial term alone (needs --adversarial_weight > 0), or also by the MSE with "
           "--fresh_noise_mse (0: off)")
    a("--fresh_noise_mse", action="store_true",
      help="give the --fresh_noise_fraction windows the MSE to the teacher's sample too: plain denoising of it, so the "
           "student learns to remove noise that the DDIM path does not give it (as LCM and TCD sampling do)")
    a("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="default: accelerate config")
    a("--use_ema", action="store_true", help="keep an EMA of the weights; the saved student uses it")
    a("--ema_decay", type=float, default=0.999)
    a("--ema_power", type=float, default=0.75)
    a("--no_channels_last", action="store_true", help="keep the default memory layout")
    a("--dataloader_num_workers", type=int, default=0)
    # checkpoints / logging
    a("--checkpointing_steps", type=int, default=50)
    a("--checkpoints_total_limit", type=int, default=None)
    a("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest' (in --output_dir)")
    a("--report_to", default=None, help="accelerate tracker; a JSONL log is always written")
    a("--save_dtype", choices=["fp32", "fp16"], default="fp32", help="dtype of the saved student weights")
    a("--dataset_name", default=None, help="dataset id recorded in the model card")
    a("--num_threads", type=int, default=None, help="torch.set_num_threads per process")
    a("--no_progress", action="store_true")
    return parser
