"""Model cards (huggingface_hub.ModelCard with YAML metadata) for pipelines written by `teramind train`."""

from __future__ import annotations

import argparse

from huggingface_hub import ModelCard, ModelCardData

TAGS = ["diffusers", "teramind", "spatial-transcriptomics", "gene-to-image", "microscopy", "3d", "diffusion"]


def card_data(datasets: list[str] | None = None, base_model: str | None = None) -> ModelCardData:
    """YAML front matter shared by every Tera-MIND pipeline card."""
    return ModelCardData(
        library_name="diffusers",
        license="apache-2.0",
        pipeline_tag="image-to-image",
        tags=list(TAGS),
        datasets=datasets or None,
        base_model=base_model,
    )


def training_model_card(args: argparse.Namespace, config, summary: dict) -> ModelCard:
    """A card saying what the pipeline was trained on, how, and what validation gave."""
    dataset = args.dataset_name or str(args.data)
    base = args.pretrained if args.pretrained and not str(args.pretrained).startswith((".", "/")) else None
    last = summary.get("last") or {}
    val = summary.get("validation") or {}
    lines = [
        "---",
        card_data(datasets=[dataset] if args.dataset_name else None, base_model=base).to_yaml(),
        "---",
        "",
        "# Tera-MIND pipeline (trained with `teramind train`)",
        "",
        "Gene-conditioned, boundary-aware 3D diffusion (Tera-MIND, arXiv 2503.01220): spatial gene expression "
        "(transcript counts on a 16-px grid) to DAPI + PolyT morphology.",
        "",
        "```python",
        "from teramind_hf import TeraMindPipeline",
        "pipe = TeraMindPipeline.from_pretrained('<this folder or repo>')",
        "images = pipe(genes, gene_names=panel, num_inference_steps=15, generator=0).images  # (Z, 2, H, W)",
        "```",
        "",
        "## Training",
        "",
        f"- data: `{dataset}`" + (f", fine-tuned from `{args.pretrained}`" if args.pretrained else ""),
        f"- panel: {config.num_genes} genes; UNet widths {list(config.block_out_channels)}",
        f"- steps: {summary.get('steps')} x global batch {summary.get('global_batch')} "
        f"({summary.get('world')} process(es)), {summary.get('seconds', 0):.0f} s",
        f"- Adam lr {args.learning_rate} ({args.lr_scheduler}, warmup {args.lr_warmup_steps}), grad clip "
        f"{args.max_grad_norm}, EMA: {'yes' if args.use_ema else 'no'}, seed {args.seed}",
        "- loss: official boundary-aware dual loss (collage + masked per-patch epsilon MSE)",
        f"- last training loss: {last.get('loss', float('nan')):.4f}",
    ]
    if val:
        lines.append(
            f"- validation (step {val.get('step')}, {args.validation_inference_steps} DDIM steps): "
            f"PSNR {val.get('psnr', float('nan')):.2f} dB, SSIM {val.get('ssim', float('nan')):.4f}"
        )
    return ModelCard("\n".join(lines) + "\n")
