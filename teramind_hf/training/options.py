"""Options of the trainer, shared by `python -m teramind_hf.training.train` and `teramind train` (argparse only, so
`teramind train --help` starts without importing torch)."""

from __future__ import annotations

import argparse


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """All options of the trainer (shared by `python -m teramind_hf.training.train` and `teramind train`)."""
    a = parser.add_argument
    a("--data", required=True, help="training store (zarr, see teramind_hf.data.datasets)")
    a("--output_dir", required=True, help="where checkpoints, logs, validation images and the pipeline go")
    a("--pretrained", default=None, help="pipeline folder or Hub repo id to fine-tune (default: train from scratch)")
    a("--extend_panel", action="store_true", help="add data genes unknown to --pretrained with zero input weights (their attention tokens still shift the output a little before training)")
    a("--orthologues", action="store_true", help="match genes across species by upper-case symbol (e.g. human data)")
    a("--min_gene_overlap", type=float, default=0.5, help="smallest fraction of model genes that the data must have")
    # model (from scratch)
    a("--block_out_channels", type=int, nargs="+", default=[64, 128, 256, 512])
    a("--gene_map_channels", type=int, nargs="+", default=[128, 64, 32])
    a("--time_embed_dim", type=int, default=512)
    a("--layers_per_block", type=int, default=2)
    a("--dropout", type=float, default=0.1)
    a("--prediction_type", choices=["epsilon", "sample", "v_prediction"], default=None,
      help="what the model predicts (default: epsilon, as official, or --pretrained's); x0 ('sample') learns "
           "much faster for small CPU models")
    a("--collage_edge_weight", type=float, default=1.0,
      help="weight of the collage patch's outermost pixel ring in the collage loss (1 = official); > 1 teaches a "
           "small model the patch edges it otherwise draws as a 64-px grid")
    # optimisation
    a("--seed", type=int, default=0)
    a("--train_batch_size", type=int, default=2, help="samples per process per micro-batch")
    a("--gradient_accumulation_steps", type=int, default=1)
    a("--max_train_steps", type=int, default=1000, help="optimizer steps")
    a("--learning_rate", type=float, default=2e-5, help="Adam lr (official 2e-5)")
    a("--adam_beta1", type=float, default=0.9)
    a("--adam_beta2", type=float, default=0.999)
    a("--adam_weight_decay", type=float, default=0.0)
    a("--adam_epsilon", type=float, default=1e-8)
    a("--max_grad_norm", type=float, default=1.0, help="gradient clipping (official 1.0)")
    a("--lr_scheduler", default="constant", help="diffusers.optimization.get_scheduler name (constant, cosine, ...)")
    a("--lr_warmup_steps", type=int, default=0)
    a("--lr_total_steps", type=int, default=None,
      help="length of the LR schedule (default --max_train_steps): a run may stop before its schedule ends")
    a("--mixed_precision", choices=["no", "fp16", "bf16"], default=None, help="default: accelerate config")
    a("--use_ema", action="store_true", help="keep an EMA of the weights; the saved pipeline uses it")
    a("--ema_decay", type=float, default=0.9999)
    a("--ema_power", type=float, default=0.75)
    a("--crop_size", type=int, default=256, help="training sample size in px (official 256)")
    a("--no_channels_last", action="store_true",
      help="keep the default memory layout (channels_last_3d makes the 3D convolutions' backward ~1.5x faster on CPU)")
    a("--dataloader_num_workers", type=int, default=0)
    # checkpoints / logging / validation
    a("--checkpointing_steps", type=int, default=500)
    a("--checkpoints_total_limit", type=int, default=None)
    a("--resume_from_checkpoint", default=None, help="a checkpoint folder or 'latest' (in --output_dir)")
    a("--validation_data", default=None, help="store with a held-out region (default: --data)")
    a("--validation_steps", type=int, default=0, help="validate every N steps (0: only at the end)")
    a("--validation_size", type=int, default=256)
    a("--validation_inference_steps", type=int, default=15)
    a("--no_validation", action="store_true")
    a("--report_to", default=None, help="accelerate tracker (tensorboard, wandb, ...); a JSONL log is always written")
    a("--save_dtype", choices=["fp32", "fp16"], default="fp32", help="dtype of the saved pipeline weights")
    a("--dataset_name", default=None, help="dataset id recorded in the model card")
    a("--num_threads", type=int, default=None, help="torch.set_num_threads per process")
    a("--no_progress", action="store_true")
    return parser
