"""Hub cards: the model card of converted official weights, the Space card, and an offline card checker.

The cards live in ``hub_cards/`` of the repository (``default_model/``, ``official/``, ``space/``), each a
``README.md`` with YAML front matter, made with `huggingface_hub.ModelCard` / `SpaceCard` so the metadata is
what the Hub parses. ``ModelCard.validate()`` posts the metadata to the Hub, which needs network; these
machines have none, so `check_model_card` / `check_space_card` check the same metadata locally against the
fields and values this project promises (and the YAML must round-trip through `ModelCard.load`).

    python -m teramind_hf.hub_cards write hub_cards/      # (re)write official/ and space/ cards
    python -m teramind_hf.hub_cards check hub_cards/ teramind_hf/default_model/README.md

The default model's card is written by the training engineer's `benchmarks/default_model_quality.py`
(with measured numbers); this module only checks it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData, SpaceCard, SpaceCardData

LIBRARY_NAME = "diffusers"
LICENSE = "apache-2.0"
PIPELINE_TAG = "image-to-image"  # closest Hub task: gene-expression maps in, microscopy images out
REQUIRED_TAGS = ("teramind", "spatial-transcriptomics")
TAGS = ["diffusers", "teramind", "spatial-transcriptomics", "gene-to-image", "microscopy", "3d", "diffusion"]
OFFICIAL_DATASETS = ["<org>/tera-mind-mouse-brain"]  # placeholder: the Hub id of the data release
PAPER = "https://arxiv.org/abs/2503.01220"
MODEL_SECTIONS = ("Intended use", "Training data", "Limitations", "How to load")
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}

OFFICIAL_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

The official Tera-MIND checkpoint ([arXiv 2503.01220]({{ paper }})), converted 1:1 to the `teramind-hf`
layout (diffusers-style pipeline, safetensors): a gene-conditioned, boundary-aware 3D diffusion model that
turns spatial gene expression ({{ num_genes }}-gene MERFISH panel, transcript counts on 16-px bins) into
DAPI + PolyT morphology, tile by tile, up to whole-brain size.

## Intended use

- Research on the relation of gene expression and tissue morphology in the adult mouse brain: generating
  DAPI/PolyT morphology for MERFISH-like data that lack images, in-silico perturbations (gene knockouts),
  and reading the gene-gene attention maps.
- Not for clinical or diagnostic use. Generated images are samples from a model, not measurements.

## Training data

{{ training_data }}

## Limitations

- Trained on one data source (mouse brain MERFISH at ~0.108 um/px, sections 100-200 um apart): other
  species, tissues, panels, pixel sizes or imaging protocols are out of distribution; fine-tune first
  (`accelerate launch -m teramind_hf.training.train --pretrained {{ repo_id }} ...`).
- Genes of the panel missing from your data are filled with zeros (reported in `out.gene_alignment`);
  data sharing too few genes with the panel are refused.
- Morphology is generated per section; cells do not continue between sections (they are 100-200 um apart).
- Outputs depend on the seed; sampling is deterministic for a given seed, region and scheduler.

## How to load

```python
import torch
from teramind_hf import TeraMindPipeline

pipe = TeraMindPipeline.from_pretrained("{{ repo_id }}")
out = pipe(genes, gene_names=panel, num_inference_steps=15, generator=torch.Generator().manual_seed(0))
out.images  # (Z, 2, H, W): DAPI + PolyT, float in [-1, 1]
```

Load it with `TeraMindPipeline.from_pretrained` as above: `diffusers.DiffusionPipeline.from_pretrained` looks the
pipeline class up among diffusers' own pipelines only and does not find `TeraMindPipeline`.

Whole sections or brains, streamed to OME-Zarr: `teramind generate --model {{ repo_id }} --genes region.zarr --out brain.ome.zarr`.

## Conversion

Converted with `teramind convert-official {{ checkpoint }} <out> --gene-names panel_229.txt`; every key is
mapped and checked, and the converted model reproduces the official outputs on reference inputs.

## Citation

```bibtex
@article{teramind2025,
  title   = {Tera-MIND: Tera-scale mouse brain simulation via spatial mRNA-guided diffusion},
  journal = {arXiv preprint arXiv:2503.01220},
  year    = {2025}
}
```
"""

DEFAULT_TRAINING_DATA = (
    "MERFISH spatial transcriptomics of the adult mouse brain with matched DAPI and PolyT images, as "
    "described in the Tera-MIND paper (a 229-gene panel, 256-px training tiles with gene counts on 16-px bins). "
    "See the paper for the exact sections, splits and preprocessing; this conversion adds no training."
)


# ---------------------------------------------------------------------------------------------- making cards
def official_card_data(repo_id: str | None = None, datasets: list[str] | None = None) -> ModelCardData:
    """YAML front matter of a converted official checkpoint."""
    return ModelCardData(
        library_name=LIBRARY_NAME,
        license=LICENSE,
        pipeline_tag=PIPELINE_TAG,
        tags=list(TAGS),
        datasets=list(datasets or OFFICIAL_DATASETS),
        model_name=repo_id.split("/")[-1] if repo_id else None,
    )


def official_model_card(
    repo_id: str = "<org>/teramind-mouse-brain",
    *,
    num_genes: int = 229,
    checkpoint: str = "last.ckpt",
    training_data: str = DEFAULT_TRAINING_DATA,
    datasets: list[str] | None = None,
) -> ModelCard:
    """The card for converted official weights (write it beside the converted pipeline as README.md)."""
    return ModelCard.from_template(
        official_card_data(repo_id, datasets),
        template_str=OFFICIAL_TEMPLATE,
        title=f"Tera-MIND mouse brain ({repo_id.split('/')[-1]})",
        repo_id=repo_id,
        num_genes=num_genes,
        checkpoint=checkpoint,
        training_data=training_data,
        paper=PAPER,
    )


def space_card(sdk_version: str | None = None, app_file: str = "demo/app.py") -> SpaceCard:
    """The Hugging Face Space card of the demo (gradio SDK, the installed gradio version by default)."""
    if sdk_version is None:
        import gradio

        sdk_version = gradio.__version__
    data = SpaceCardData(
        title="Tera-MIND: genes to brain morphology",
        sdk="gradio",
        sdk_version=sdk_version,
        app_file=app_file,
        license=LICENSE,
        python_version="3.11",
        emoji="🧠",
        colorFrom="indigo",
        colorTo="pink",
        pinned=False,
        short_description="Spatial gene expression to DAPI/PolyT brain morphology",
        tags=["teramind", "spatial-transcriptomics", "diffusion", "microscopy"],
    )
    body = f"""
# Tera-MIND demo

Gene-conditioned, boundary-aware 3D diffusion ([arXiv 2503.01220]({PAPER})) for a small region on CPU:
pick a region of a bundled synthetic phantom tissue (or upload a small CSV/Parquet transcript table with
columns x, y, z, gene), choose sections, steps, seed and sampler (the model default / DDIM / DPM-Solver++ / the fast preset), and compare the
generated DAPI and PolyT with the ground truth. The page also shows a gene heat map, the model's gene-gene
attention for a chosen pair, and an in-silico knockout (same seed, one gene zeroed) with its difference.

Runs the small default model embedded in `teramind-hf` (trained on synthetic phantom tissue only; see its
model card). Requests are capped (4 tiles of 256 px per section, 50 steps, 4 sections, 16 MB uploads).

API: `gradio_client.Client("<this space>").predict(None, x0, y0, width, height, start, stop, steps, seed,
"DDIM", api_name="/generate")` returns a `.npy` volume (uint8, sections x 2 stains x H x W) and a summary.

Run locally from a checkout: `pip install -e ".[demo]"` then `python demo/app.py`.
"""
    return SpaceCard(f"---\n{data.to_yaml()}\n---\n{body}")


def write_cards(out_dir: str | Path) -> list[Path]:
    """Write ``official/README.md`` (template with placeholders) and ``space/README.md`` under ``out_dir``."""
    out_dir = Path(out_dir)
    written = []
    for sub, card in (("official", official_model_card()), ("space", space_card())):
        path = out_dir / sub / "README.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        card.save(str(path))
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------- checking
def check_model_card(path: str | Path, *, sections: tuple[str, ...] = ()) -> list[str]:
    """Problems with a model card's metadata (empty list: fine). Checks what `validate()` would, offline.

    The card must load with `ModelCard.load`, and declare ``library_name: diffusers``, the project's
    license, ``pipeline_tag: image-to-image`` and the project's tags; ``sections`` are headings it must have.
    """
    card = ModelCard.load(str(path))
    meta = card.data.to_dict()
    problems = []
    expected = {"library_name": LIBRARY_NAME, "license": LICENSE, "pipeline_tag": PIPELINE_TAG}
    for key, value in expected.items():
        if meta.get(key) != value:
            problems.append(f"{key} is {meta.get(key)!r}, expected {value!r}")
    tags = meta.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        problems.append(f"tags must be a list of strings, got {tags!r}")
    else:
        problems += [f"tag {t!r} missing" for t in REQUIRED_TAGS if t not in tags]
    datasets = meta.get("datasets")
    if datasets is not None and (not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets)):
        problems.append(f"datasets must be a list of strings, got {datasets!r}")
    problems += _missing_sections(card.text, sections)
    if len(card.text.strip()) < 200:
        problems.append("the card body is nearly empty")
    return problems


def check_space_card(path: str | Path) -> list[str]:
    """Problems with a Space card's metadata (the fields the Hub needs to build a gradio Space)."""
    card = SpaceCard.load(str(path), repo_type="space")
    meta = card.data.to_dict()
    problems = []
    if meta.get("sdk") != "gradio":
        problems.append(f"sdk is {meta.get('sdk')!r}, expected 'gradio'")
    for key in ("title", "emoji", "colorFrom", "colorTo", "sdk_version", "app_file", "license"):
        if not meta.get(key):
            problems.append(f"{key} missing")
    for key in ("colorFrom", "colorTo"):
        if meta.get(key) and meta[key] not in SPACE_COLORS:
            problems.append(f"{key} {meta[key]!r} is not one of {sorted(SPACE_COLORS)}")
    if not isinstance(meta.get("pinned"), bool):
        problems.append("pinned must be true or false")
    version = str(meta.get("sdk_version", ""))
    if version and not all(part.isdigit() for part in version.split(".")):
        problems.append(f"sdk_version {version!r} is not a release number")
    if meta.get("license") and meta["license"] != LICENSE:
        problems.append(f"license is {meta['license']!r}, expected {LICENSE!r}")
    return problems


def _missing_sections(text: str, sections: tuple[str, ...]) -> list[str]:
    headings = {line.lstrip("#").strip().lower() for line in text.splitlines() if line.startswith("#")}
    return [f"section {s!r} missing" for s in sections if s.lower() not in headings]


def check_cards(root: str | Path, default_model_card: str | Path | None = None) -> dict[str, list[str]]:
    """Check every card under ``root`` (``hub_cards/``) and the embedded default model's card."""
    root = Path(root)
    results = {}
    official = root / "official" / "README.md"
    if official.is_file():
        results[str(official)] = check_model_card(official, sections=MODEL_SECTIONS)
    default_card = root / "default_model" / "README.md"
    for path in {default_card, Path(default_model_card)} if default_model_card else {default_card}:
        if path.is_file():
            results[str(path)] = check_model_card(path)
    space = root / "space" / "README.md"
    if space.is_file():
        results[str(space)] = check_space_card(space)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m teramind_hf.hub_cards", description="write or check the Hub cards")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write", help="write hub_cards/official and hub_cards/space")
    write.add_argument("out_dir", nargs="?", default="hub_cards")
    check = sub.add_parser("check", help="check the cards' metadata offline")
    check.add_argument("root", nargs="?", default="hub_cards")
    check.add_argument("default_model_card", nargs="?", default=None)
    args = parser.parse_args(argv)
    if args.command == "write":
        for path in write_cards(args.out_dir):
            print(f"wrote {path}")
        return 0
    results = check_cards(args.root, args.default_model_card)
    for path, problems in results.items():
        print(f"{path}: {'ok' if not problems else '; '.join(problems)}")
    return 1 if any(results.values()) or not results else 0


if __name__ == "__main__":
    sys.exit(main())
