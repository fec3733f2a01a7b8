"""The model card of a student written by `teramind distill`."""

from __future__ import annotations

import argparse

from huggingface_hub import ModelCard

from .card import card_data


def distill_model_card(args: argparse.Namespace, config, grid, summary: dict) -> ModelCard:
    """What the student was distilled from, how, and how it samples; its quality is measured separately."""
    base = args.teacher if not str(args.teacher).startswith((".", "/")) else None
    last = summary.get("last") or {}
    calls = grid.calls_per_tile(args.student_steps)
    lines = [
        "---",
        card_data(datasets=[args.dataset_name] if args.dataset_name else None, base_model=base).to_yaml(),
        "---",
        "",
        "# Tera-MIND few-step student (written by `teramind distill`)",
        "",
        f"A {args.student_steps}-step student of `{args.teacher}`, same architecture and gene panel "
        f"({config.num_genes} genes, UNet widths {list(config.block_out_channels)}). It samples with deterministic DDIM "
        f"at t = {summary.get('timesteps')} on the grid schedule saved in model_index.json "
        f"({grid.to_dict()}): {calls} model calls per tile.",
        "",
        "```python",
        "from teramind_hf import TeraMindPipeline",
        "pipe = TeraMindPipeline.from_pretrained('<this folder>')  # its steps and grid are the defaults",
        "images = pipe(genes, gene_names=panel, generator=0).images  # (Z, 2, H, W)",
        "```",
        "",
        "## Distillation",
        "",
        f"- teacher: `{args.teacher}`, sampled with `{args.teacher_scheduler}` (deterministic) in "
        f"{args.teacher_steps or 'its default'} steps; {summary.get('teacher_samples')} teacher samples of "
        f"{args.teacher_region_size} px from `{args.dataset_name or args.data}`",
        f"- student initialised from `{args.student_init or args.teacher}`, trained to land DDIM on the teacher's "
        "sample from the same noise at each of its timesteps, on its grid's offsets",
        f"- steps: {summary.get('steps')} x global batch {summary.get('global_batch')} windows "
        f"({summary.get('world')} process(es)), {summary.get('seconds', 0):.0f} s; Adam lr {args.learning_rate} "
        f"({args.lr_scheduler}), EMA: {'yes' if args.use_ema else 'no'}, high-pass weight {args.highpass_weight}, seed {args.seed}",
        *([(f"- adversarial term: a conditional patch discriminator on (input, output) pairs, the teacher's x0 real, hinge loss, "
            if args.discriminator_paired else
            f"- adversarial term: a conditional patch discriminator on the true images of `{args.data}`, hinge loss, ")
           + f"weight {args.adversarial_weight}, discriminator Adam lr {args.discriminator_lr}"
           + (f" ({args.discriminator_steps} steps per training step)" if args.discriminator_steps != 1 else "")
           + (f", stains {args.adversarial_stains} only" if args.adversarial_stains is not None else "")
           + (", one discriminator per stain" if args.discriminator_per_stain else "")
           + (f" (stain weights {args.adversarial_stain_weights})" if args.adversarial_stain_weights else "")
           + (f"; {args.fresh_noise_fraction:g} of the later steps' windows re-noised with fresh noise (LCM's input), "
              "adversarial term only" if args.fresh_noise_fraction and not args.fresh_noise_mse else "")]
          if args.adversarial_weight else []),
        *([f"- {args.fresh_noise_fraction:g} of the later steps' windows re-noised with fresh noise (the input LCM and TCD "
           "sampling give), trained by the MSE to the teacher's sample (denoising)"
           + (" and the adversarial term" if args.adversarial_weight else "")]
          if args.fresh_noise_fraction and args.fresh_noise_mse else []),
        *([f"- windows of {args.window_patches} x {args.window_patches} output patches"
           + (f"; seam term (MSE of the error's jump across their edges) weight {args.seam_weight} over {args.seam_band}-px bands" if args.seam_weight else "")]
          if args.window_patches != 1 else []),
        f"- last training loss: {last.get('loss', float('nan')):.5f}",
        "",
        "## Quality",
        "",
        "Not measured by `teramind distill`: realism and seam figures (held-out regions, several noise seeds) come "
        "from the evaluation (`teramind eval`) and belong here once measured. Until then, treat this student as "
        "unvalidated.",
    ]
    return ModelCard("\n".join(lines) + "\n")
