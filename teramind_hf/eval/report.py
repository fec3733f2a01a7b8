"""`evaluation_report`: every metric of a generated volume against the truth, next to controls, as JSON + PNG.

Rows of the report (each compared with the same truth, by the same code, with the same parameters):

* ``model``: the generated volume and, with ``seeds > 1`` (the ``second_seed`` control gives 2), the same run
  re-generated with seeds ``seed + 1``, ... (mean and spread over seeds: the spread is the *noise floor*, what
  changes with nothing but the noise);
* ``shuffled_genes``: the same model, seed and region given the genes with whole bins shuffled across the region
  per section: what the model draws from tissue statistics alone, ignoring where the genes are;
* ``mean_image``: every pixel at the truth's own mean of its stain and section (the best constant image, and
  what PSNR/SSIM favour).

Controls that need the model are generated with the public API only (``generate_to_zarr``) from the generated
OME-Zarr's run record (model fingerprint, gene source, region, sections, steps, seed, halo).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..output_guard import check_can_create, check_output_location
from .accumulate import DEFAULT_BLOCK, accumulate_section, summarize, summarize_regions
from .inputs import EvalVolume, align, open_labels, open_volume
from .nuclei import MATCH_DISTANCE_UM, MIN_AREA_UM2, SMOOTHING_UM, SPLIT_DEPTH_UM
from .report_figure import save_report_figure

CONTROLS = ("shuffled_genes", "second_seed", "mean_image")
SHUFFLE_SEED = 0

# the printed table's columns: (key, label, ideal value or the key holding the truth's value, PNG bar title)
TABLE_COLUMNS = (
    ("nuclei_f1", "nuclei F1", 1.0, "nuclei F1 (1 = ideal)"),
    ("nuclei_count_error", "count err", 0.0, "nuclei count error"),
    ("nuclei_area_wasserstein_um2", "area W um2", 0.0, "nucleus area W (um²)"),
    ("nuclei_merged_rate", "merged", 0.0, None),
    ("dapi_hf_ratio", "DAPI HF", 1.0, "DAPI HF power ratio"),
    ("polyt_hf_ratio", "PolyT HF", 1.0, None),
    ("dapi_spectrum_distance", "DAPI spec", 0.0, "DAPI spectrum distance"),
    ("dapi_histogram_distance", "DAPI hist", 0.0, None),
    ("polyt_histogram_distance", "PolyT hist", 0.0, "PolyT histogram W"),
    ("dapi_psnr", "DAPI PSNR", None, "DAPI PSNR (dB; favours blur)"),
    ("dapi_ssim", "DAPI SSIM", None, "DAPI SSIM"),
    ("polyt_ms_ssim", "PolyT MSSSIM", None, None),
    ("border_64", "border 64", "border_64_truth", "worst-2-D-phase border, 64 px"),
    ("border_256", "border 256", "border_256_truth", None),
)


@dataclass
class EvalReport:
    """The report's content (``data``, as written to ``report.json``) and the files written."""

    data: dict[str, Any]
    json_path: Path | None = None
    png_path: Path | None = None
    rows: list[str] = field(default_factory=list)
    columns: tuple = TABLE_COLUMNS

    def row(self, name: str) -> dict[str, float]:
        """The overall metrics of a row (``model``: mean over seeds)."""
        return self.data["rows"][name]["all"]

    def table(self) -> str:
        """The main metrics of every row as an aligned text table (model: mean +- spread over seeds)."""
        columns = [c for c in TABLE_COLUMNS if c[0] in self.row("model")]
        lines = [f"{'':16s}" + "".join(f"{c[1]:>13s}" for c in columns)]
        for name in self.rows:
            row = self.data["rows"][name]
            cells = []
            for key, *_ in columns:
                value, spread = row["all"].get(key), (row.get("std") or {}).get(key)
                text = "-" if value is None else f"{value:.3f}"
                if spread is not None and row.get("num_seeds", 1) > 1:
                    text += f"±{spread:.3f}"
                cells.append(f"{text:>13s}")
            lines.append(f"{name:16s}" + "".join(cells))
        truth = self.row("model")
        refs = [(c[1], truth.get(c[2])) for c in columns if isinstance(c[2], str) and truth.get(c[2]) is not None]
        if refs:
            lines.append("truth's own border scores: " + ", ".join(f"{label} {value:.3f}" for label, value in refs))
        return "\n".join(lines)


class _ConstantVolume:
    """A lazy ``(2, Z, H, W)`` float image, constant per (stain, section): the mean-image control."""

    def __init__(self, values: np.ndarray, shape: tuple[int, int, int, int]):
        self.values, self.shape = values, shape  # values (2, Z) in [-1, 1]

    def __getitem__(self, key):
        _, z, ys, xs = key
        h, w = ys.stop - ys.start, xs.stop - xs.start
        return np.broadcast_to(self.values[:, z, None, None], (2, h, w)).astype(np.float32)


def truth_means(truth: EvalVolume, block: int) -> np.ndarray:
    """Per (stain, section) mean of the truth in [-1, 1], read block by block."""
    from ._image import as_unit_float
    from .accumulate import blocks

    _, z, h, w = truth.shape
    sums = np.zeros((2, z))
    for k in range(z):
        for y0, y1, x0, x1 in blocks(h, w, block):
            sums[:, k] += as_unit_float(truth.block(k, slice(y0, y1), slice(x0, x1))).sum(axis=(1, 2), dtype=np.float64)
    return (sums / (h * w)) * 2.0 - 1.0


# ---------------------------------------------------------------------------------------------- controls
def _control_pipeline(run: dict, model: str | None, device=None):
    import torch

    from ..pipelines.device import resolve_device
    from ..pipelines.run_record import model_fingerprint
    from ..pipelines.streaming import load_pipeline

    device = resolve_device(device)  # named error for an unavailable device, before anything is written
    # the same precision and compilation as the run (the bytes, and the weights fingerprint, depend on them)
    dtype = getattr(torch, str(run.get("model_dtype") or "float32"))
    pipe = load_pipeline(model, dtype=dtype, compile=bool(run.get("model_compiled")), device=device)
    pipe.set_progress_bar_config(disable=True)
    if run.get("scheduler_class") == "BoundaryAwareScheduler" and run.get("scheduler_config"):
        from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler

        # the run's own sampler (solver, options, spacing), not the model's default: the controls differ in one thing
        pipe.scheduler = BoundaryAwareScheduler.from_config(run["scheduler_config"])
    if model_fingerprint(pipe.unet) != run.get("model_sha256"):
        where = model or "the embedded default model"
        raise ValueError(
            f"--model {where} is not the model that generated this output (weights sha256 differs from the run "
            "record's model_sha256): pass the pipeline folder it was generated with"
        )
    return pipe


def _gene_location(run: dict, genes: str | None, generated_source: str) -> str:
    """``genes``, else the record's location: as written, or relative to the generated output's folder."""
    location = genes or (run.get("genes") or {}).get("location")
    if location and not genes and not Path(location).exists() and not Path(location).is_absolute():
        beside = Path(generated_source).parent / location
        location = str(beside) if beside.exists() else location
    if not location or location == "<array>" or not Path(location).exists():
        raise FileNotFoundError(
            f"the gene source of the generated run ({location!r}) is not available: pass --genes STORE to compute "
            "the controls, or --no-controls"
        )
    return location


def _generate(pipe, genes, out: Path, run: dict, seed: int, region=None, progress: bool = True) -> EvalVolume:
    from ..pipelines.streaming import generate_to_zarr

    y0, x0, h, w = run["region_yxhw"]
    generate_to_zarr(
        pipe, genes, out, region=region or (y0, x0, h, w), slices=tuple(run["slices"]),
        num_inference_steps=int(run["num_inference_steps"]), generator=int(seed), halo=bool(run.get("halo", True)),
        grid=run.get("grid_schedule"),
        um_per_px=run.get("um_per_px"), section_spacing_um=run.get("section_spacing_um"), progress_bar=progress,
        origin_um=run.get("origin_um"), origin_unknown=run.get("origin_um") is None,
    )
    volume = open_volume(str(out), "control")
    volume.origin = tuple(run["slices"][:1]) + (y0, x0)  # a shuffled-gene store starts at the region
    return volume


def _shuffled_gene_store(location: str, run: dict, out: Path) -> Path:
    """The region's genes (all sections) with whole bins shuffled per section, as a .npz gene source."""
    from ..pipelines.gene_source import open_gene_source
    from ..training.validation import shuffle_gene_bins

    source = open_gene_source(location)
    bin_px = int(run["model_config"]["gene_bin"])
    y0, x0, h, w = run["region_yxhw"]
    genes = np.asarray(source.genes[:, :, y0 // bin_px : (y0 + h) // bin_px, x0 // bin_px : (x0 + w) // bin_px])
    shuffled = shuffle_gene_bins(genes.astype(np.float32), SHUFFLE_SEED)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, genes=shuffled, gene_names=np.array(source.gene_names or run["genes"]["gene_names"]))
    return out


# ---------------------------------------------------------------------------------------------- the report
def evaluation_report(
    generated, truth, *, labels=None, um_per_px: float | None = None, controls=CONTROLS, seeds: int | None = None,
    out_dir: str | Path | None = None, model: str | None = None, genes: str | None = None,
    block: int = DEFAULT_BLOCK, match_distance_um: float = MATCH_DISTANCE_UM, progress: bool = True,
    device=None,
) -> EvalReport:
    """Evaluate ``generated`` against ``truth`` with controls; write ``report.json`` and ``report.png`` to
    ``out_dir`` (when given).

    Args:
        generated: OME-Zarr output of ``teramind generate`` (path), image store, TIFF or ``(Z, 2, H, W)`` array.
        truth: the same kinds; a generated OME-Zarr is located in a larger truth by its run record.
        labels: region label image ``(Z, H, W)`` in the truth's pixels (e.g. ``ground_truth/regions.tif``).
        um_per_px: pixel size (default: the run record, else the truth store's attribute).
        controls: names among ``"shuffled_genes"``, ``"second_seed"``, ``"mean_image"`` (empty for none).
        seeds: model samples (default 2 with the ``second_seed`` control, else 1): the generated volume plus
            ``seeds - 1`` re-generated with the next seeds; their spread is the noise floor.
        model, genes: the pipeline folder (default: the embedded model, checked against the record's
            fingerprint) and the gene source (default: the record's) for the generated controls.
        block: block side in px for reading (memory is bounded by a few blocks).
        device: where the controls' model runs (``teramind_hf.pipelines.device.resolve_device``: None = cuda if
            available, else mps, else the CPU).
    """
    controls = tuple(controls or ())
    unknown = [c for c in controls if c not in CONTROLS]
    if unknown:
        raise ValueError(f"unknown control(s) {unknown}; expected some of {list(CONTROLS)}")
    seeds = (2 if "second_seed" in controls else 1) if seeds is None else int(seeds)
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if block < 64:
        raise ValueError(f"block must be >= 64 px, got {block}")
    for name, value in (("match_distance_um", match_distance_um), ("um_per_px", um_per_px)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} (--{name.replace('_', '-')}) must be a finite number > 0, got {value!r}")
    inputs = {"GENERATED": generated, "--truth": truth, "--labels": labels, "--model": model, "--genes": genes}
    inputs = {k: v for k, v in inputs.items() if isinstance(v, (str, Path))}  # arrays are not paths
    check_output_location(out_dir, inputs, "--out")
    if out_dir is not None:
        check_can_create(out_dir, "--out")  # before the (long) scoring, not after
    gen = open_volume(generated, "generated")
    truth_full = open_volume(truth, "truth")
    truth_vol, origin = align(gen, truth_full)
    um = um_per_px or gen.um_per_px or truth_full.um_per_px
    if not um or um <= 0:
        raise ValueError("the pixel size is unknown: pass um_per_px (--um-per-px); nuclei sizes are physical")
    region_labels = open_labels(labels, truth_vol.shape, origin) if labels is not None else None
    needs_model = seeds > 1 or "shuffled_genes" in controls
    if needs_model and gen.run is None:
        raise ValueError(
            f"generated {gen.source} has no teramind run record, so seeds > 1 and the shuffled-genes control cannot "
            "be generated: pass an OME-Zarr written by `teramind generate`, or --no-controls / --seeds 1"
        )
    if needs_model:  # checked before anything is written
        pipe = _control_pipeline(gen.run, model, device)
        location = _gene_location(gen.run, genes, gen.source)
        check_output_location(out_dir, {"the run's gene source": location if isinstance(location, (str, Path)) else None}, "--out")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.TemporaryDirectory(prefix="teramind-eval-") if out is None and needs_model else None
    work = out if out is not None else (Path(scratch.name) if scratch else None)
    try:
        samples = {"model": [gen]}
        if needs_model:
            base_seed = int(gen.run["seed"])
            for extra in range(1, seeds):
                samples["model"].append(
                    _generate(pipe, location, work / "controls" / f"seed_{base_seed + extra}.ome.zarr", gen.run,
                              base_seed + extra, progress=progress)
                )
            if "shuffled_genes" in controls:
                store = _shuffled_gene_store(location, gen.run, work / "controls" / "shuffled_genes.npz")
                _, _, h, w = gen.run["region_yxhw"]
                samples["shuffled_genes"] = [
                    _generate(pipe, str(store), work / "controls" / "shuffled_genes.ome.zarr", gen.run, base_seed,
                              region=(0, 0, h, w), progress=progress)
                ]
        if "mean_image" in controls:
            samples["mean_image"] = [EvalVolume(_ConstantVolume(truth_means(truth_vol, block), gen.shape), "mean image")]
        rows = _evaluate_rows(samples, truth_vol, um, region_labels, block, match_distance_um, progress)
    finally:
        if scratch is not None:
            scratch.cleanup()
    data = {
        "inputs": {
            "generated": gen.source,
            "truth": truth_full.source,
            "labels": region_labels.source if region_labels else None,
            "shape_czyx": list(gen.shape),
            "origin_zyx": list(origin),
            "um_per_px": um,
            "run": _run_summary(gen.run),
        },
        "settings": {
            "block_px": block,
            "match_distance_um": match_distance_um,
            "nuclei": {"method": "watershed", "smoothing_um": SMOOTHING_UM, "min_area_um2": MIN_AREA_UM2,
                       "split_depth_um": SPLIT_DEPTH_UM,
                       "threshold": "Otsu per section and image (from block histograms when it spans blocks)"},
            "controls": list(controls),
            "seeds": seeds,
        },
        "rows": rows,
    }
    report = EvalReport(json_safe(data), rows=list(rows))
    if out is not None:
        report.json_path = out / "report.json"
        write_json(report.json_path, report.data)
        report.png_path = save_report_figure(report, samples, truth_vol, out / "report.png")
    return report


def _evaluate_rows(samples, truth, um, labels, block, match_distance_um, progress) -> dict[str, dict]:
    from tqdm.auto import tqdm

    _, num_sections, _, _ = truth.shape
    units = sum(len(v) for v in samples.values()) * num_sections
    bar = tqdm(total=units, desc="evaluating", unit="section", disable=not progress)
    rows = {}
    for name, volumes in samples.items():
        per_sample = []
        for volume in volumes:
            stats = []
            for z in range(num_sections):
                stats.append(accumulate_section(volume, truth, z, um, labels=labels, block=block,
                                                match_distance_um=match_distance_um))
                bar.update(1)
            entry = {
                "source": volume.source,
                "seed": (volume.run or {}).get("seed"),
                "all": summarize(stats),
                "sections": [summarize([s]) for s in stats],
            }
            if labels is not None:
                entry["regions"] = summarize_regions(stats, labels.names, labels.values)
            per_sample.append(entry)
        rows[name] = _combine_samples(per_sample)
    bar.close()
    return rows


def _combine_samples(per_sample: list[dict]) -> dict:
    """One sample: as is. Several seeds: ``all`` = mean over seeds, ``std`` = their spread, each seed kept."""
    if len(per_sample) == 1:
        return {**per_sample[0], "num_seeds": 1}
    keys = per_sample[0]["all"].keys()
    values = {k: np.array([s["all"][k] for s in per_sample], dtype=np.float64) for k in keys}
    return {
        "all": {k: float(np.mean(v)) for k, v in values.items()},
        "std": {k: float(np.std(v, ddof=1)) for k, v in values.items()},
        "num_seeds": len(per_sample),
        "seeds": per_sample,
    }


def _run_summary(run: dict | None) -> dict | None:
    if run is None:
        return None
    keep = ("model_sha256", "seed", "num_inference_steps", "region_yxhw", "slices", "halo", "um_per_px")
    return {k: run.get(k) for k in keep} | {"genes": (run.get("genes") or {}).get("location")}


def json_safe(value):
    """JSON-safe copy: non-finite floats (PSNR of identical images, undefined ratios) become null, numpy scalars and
    arrays plain numbers and lists."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):  # a 0-d tensor
        return json_safe(value.item())
    return value


def write_json(path: Path, data) -> None:
    """The one JSON writer of reports (report.json, knockout.json, attention.json): non-finite floats as null,
    and strict JSON (``allow_nan=False``), never a bare NaN."""
    Path(path).write_text(json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")
