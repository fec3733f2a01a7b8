"""Fine-tune the embedded default model on a "new tissue" with a different gene panel; compare PSNR/SSIM.

    python benchmarks/finetune_new_tissue.py --work /tmp/ft --steps 60 [--model DIR --um_per_px 0.5]

The new tissue is a phantom (seed 3; held-out region seed 4) whose panel renames two genes
(Slc17a7 -> Vglut1, Gad2 -> Gad65) and lacks two (Pvalb, Mog). The default model aligned by name sees
zeros for the four genes it cannot find; fine-tuning with ``--extend_panel`` adds Vglut1/Gad65 with fresh
input weights and adapts the rest. The last printed line is JSON {"pretrained": {...}, "finetuned": {...}}.
For a human tissue the same command takes ``--orthologues`` (upper-case symbol match).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def new_tissue_store(path: Path, seed: int, size: int, slices: int, um_per_px: float) -> Path:
    from teramind_hf.data import make_phantom, with_panel_changes
    from teramind_hf.data.datasets import write_training_store

    if (path / "zarr.json").is_file():
        return path
    phantom = make_phantom(size, size, num_slices=slices, seed=seed, um_per_px=um_per_px)
    return write_training_store(with_panel_changes(phantom), path)


def main(argv: list[str] | None = None) -> int:
    import torch

    from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline, default_model_path
    from teramind_hf.training.train import parse_args, train
    from teramind_hf.training.validation import image_metrics, read_region, sample_region

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="pipeline folder to fine-tune (default: the embedded model)")
    parser.add_argument("--um_per_px", type=float, default=None,
                        help="tissue scale of that model (default: DEFAULT_MODEL_UM_PER_PX, the embedded model's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    model = args.model or str(default_model_path())
    um = args.um_per_px or DEFAULT_MODEL_UM_PER_PX
    # store names carry the scale: stores are reused by path, never across scales
    data = new_tissue_store(work / f"tissue_{um:g}um.zarr", seed=3, size=512, slices=4, um_per_px=um)
    held_out = new_tissue_store(work / f"heldout_{um:g}um.zarr", seed=4, size=256, slices=2, um_per_px=um)
    region = read_region(held_out, size=256, slices=2)

    pretrained = TeraMindPipeline.from_pretrained(model)
    pretrained.set_progress_bar_config(disable=True)
    before = image_metrics(sample_region(pretrained, region), region.images)
    out = work / "finetuned"
    train(parse_args([
        "--data", str(data), "--validation_data", str(held_out), "--output_dir", str(out),
        "--pretrained", model, "--extend_panel", "--max_train_steps", str(args.steps),
        "--train_batch_size", "4", "--learning_rate", "2e-4", "--lr_scheduler", "constant",
        "--checkpointing_steps", str(max(args.steps, 1)), "--num_threads", str(args.threads), "--no_progress",
        "--no_validation", "--seed", "0",
    ]))
    finetuned = TeraMindPipeline.from_pretrained(str(out))
    finetuned.set_progress_bar_config(disable=True)
    after = image_metrics(sample_region(finetuned, region), region.images)
    print(f"{'':12s} {'PSNR':>8s} {'SSIM':>8s}")
    for name, m in (("pretrained", before), ("finetuned", after)):
        print(f"{name:12s} {m['psnr']:8.2f} {m['ssim']:8.4f}")
    print(json.dumps({"pretrained": before, "finetuned": after, "steps": args.steps}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
