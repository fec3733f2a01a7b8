"""Tera-MIND demo: gene expression in, DAPI + PolyT morphology out, for a small region, on CPU.

Run locally with ``python demo/app.py`` (or as a Hugging Face Space whose ``app_file`` is this file).
`build_demo()` returns the Blocks so tests and other apps can launch it themselves.

What the page does: pick a region of a bundled synthetic phantom tissue (generated deterministically at
start-up, with known ground truth) or upload a small transcript table (CSV/Parquet: x, y, z, gene
[, count]; x/y in image pixels, z = section index); choose sections, steps, seed and sampler; Generate
shows the generated DAPI and PolyT beside the ground truth, a heat map of one gene, the gene-gene
attention of one pair of genes, and optionally an in-silico knockout (same seed, one gene zeroed) with its
difference. Results download as .npy, TIFF and zipped OME-Zarr. The API endpoint ``/generate`` returns the
volume as a ``.npy`` file (uint8 ``(Z, 2, H, W)``, stain 0 DAPI, 1 PolyT) plus a JSON summary.

Requests are capped (tiles, steps, sections, upload bytes) so one visitor cannot hold a CPU Space for long.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

if __package__ in (None, ""):  # `python demo/app.py` from a source checkout without an install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr  # noqa: E402

from teramind_hf import DEFAULT_MODEL_UM_PER_PX, TeraMindPipeline  # noqa: E402
from teramind_hf.data import make_phantom  # noqa: E402
from teramind_hf.data.phantom import PLANTED_PAIRS, Phantom  # noqa: E402
from teramind_hf.data.readers.table import read_transcript_table  # noqa: E402
from teramind_hf.eval.attention import gene_expression_map, in_silico_knockout, pair_attention_map  # noqa: E402
from teramind_hf.pipelines.sampling_run import to_output_type  # noqa: E402
from teramind_hf.sampling import Preset  # noqa: E402

# ---------------------------------------------------------------------------------------------- limits
MAX_TILES = 4  # 256-px tiles per section (a 512 x 512 px region)
MAX_STEPS = 50
MAX_SECTIONS = 4
MAX_UPLOAD_BYTES = 16 * 2**20  # a 512 x 512 px x 2-section phantom table is ~9 MB of CSV
MAX_UPLOAD_SECTIONS = 8
# the binned grid of an upload (genes x sections x bins, while binning): far-away coordinates in a tiny file
# would otherwise allocate gigabytes before any region check
MAX_UPLOAD_GRID_BYTES = 128 * 2**20

# ---------------------------------------------------------------------------------------------- bundled tissue
PHANTOM_SIZE = 1024  # px per side: 4 x 4 tiles to choose a region from
PHANTOM_SECTIONS = 2
PHANTOM_SEED = 7

SOURCE_PHANTOM = "Bundled phantom"
SOURCE_UPLOAD = "Uploaded table"
MODEL_DEFAULT = "Model default"  # the model's own scheduler and grid (embedded model: DPM-Solver++ SDE, no patch grid)
FAST_PRESET = "Fast preset (5 steps)"  # teramind_hf.sampling.PRESETS["fast"]: its own solver and steps
SOLVER_NAMES = {"DDIM": "ddim", "DPM-Solver++": "dpm"}  # teramind_hf.sampling scheduler names, at the slider's steps
SAMPLERS = (MODEL_DEFAULT, *SOLVER_NAMES, FAST_PRESET)
NO_KNOCKOUT = "(none)"


class DemoError(ValueError):
    """A request the demo refuses, with a message meant for the page."""


@dataclass(frozen=True)
class Request:
    """One generation request: a square-or-rectangular region in px, sections [start, stop), sampling."""

    x0: int = 0
    y0: int = 0
    width: int = 256
    height: int = 256
    slice_start: int = 0
    slice_stop: int = 2
    steps: int = 8
    seed: int = 0
    sampler: str = MODEL_DEFAULT


@dataclass
class Source:
    """Gene counts ``(G, Z, Hb, Wb)`` on the model's gene grid, their names, and ground-truth images if known."""

    genes: np.ndarray
    names: list[str]
    images: np.ndarray | None  # (2, Z, H, W) uint8
    label: str


# ---------------------------------------------------------------------------------------------- model + data
@lru_cache(maxsize=1)
def load_pipeline() -> TeraMindPipeline:
    """The embedded default pipeline (or ``TERAMIND_DEMO_MODEL``: a folder or Hub repo id), loaded once, on
    ``TERAMIND_DEMO_DEVICE`` (cpu, cuda, cuda:INDEX, mps; default: cuda if available, else mps, else the CPU)."""
    from teramind_hf.pipelines.device import resolve_device

    device = resolve_device(os.environ.get("TERAMIND_DEMO_DEVICE") or None, option="TERAMIND_DEMO_DEVICE")
    pipe = TeraMindPipeline.from_pretrained(os.environ.get("TERAMIND_DEMO_MODEL") or None).to(device)
    pipe.set_progress_bar_config(disable=True)  # progress goes to the page instead
    return pipe


def sampler_preset(request: Request) -> Preset | str | None:
    """The pipeline ``preset=`` of a sampler choice: none for the model's own sampler, ``"fast"``, or a named solver
    at the slider's steps on the model's grid schedule; every choice runs the one loaded pipeline."""
    if request.sampler == MODEL_DEFAULT:
        return None
    if request.sampler == FAST_PRESET:
        return "fast"
    if request.sampler in SOLVER_NAMES:
        return Preset(SOLVER_NAMES[request.sampler], request.steps)
    raise DemoError(f"unknown sampler {request.sampler!r}; choose one of {', '.join(SAMPLERS)}")


def demo_um_per_px() -> float:
    """Pixel size of the bundled phantom: ``TERAMIND_DEMO_UM_PER_PX`` or the default model's scale."""
    return float(os.environ.get("TERAMIND_DEMO_UM_PER_PX") or DEFAULT_MODEL_UM_PER_PX)


@lru_cache(maxsize=1)
def bundled_phantom() -> Phantom:
    """The demo's tissue: the same arrays on every start (fixed seed), at the default model's gene bin."""
    gene_bin = load_pipeline().unet.config.gene_bin
    return make_phantom(
        PHANTOM_SIZE, PHANTOM_SIZE, num_slices=PHANTOM_SECTIONS, seed=PHANTOM_SEED, um_per_px=demo_um_per_px(), gene_bin=gene_bin
    )


def phantom_source() -> Source:
    phantom = bundled_phantom()
    return Source(phantom.genes, list(phantom.panel), phantom.images, f"bundled phantom (seed {PHANTOM_SEED})")


def read_upload(path: str | os.PathLike) -> Source:
    """Bin an uploaded transcript table on the model's gene grid; any problem becomes a readable `DemoError`."""
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise DemoError(
            f"Refused: the uploaded table is {size / 2**20:.1f} MB; this demo accepts up to "
            f"{MAX_UPLOAD_BYTES / 2**20:.0f} MB. Use `teramind generate` for large data."
        )
    if path.suffix.lower() not in (".csv", ".tsv", ".txt", ".parquet"):
        raise DemoError(f"Could not read {path.name}: upload a .csv, .tsv or .parquet table with columns x, y, z, gene")
    try:
        volume = read_transcript_table(path, gene_bin=load_pipeline().unet.config.gene_bin, max_bytes=MAX_UPLOAD_GRID_BYTES)
    except Exception as err:  # pandas/pyarrow parse errors, bad columns, bad values: all shown, none raised
        message = str(err).replace(str(path), path.name) or type(err).__name__
        raise DemoError(
            f"Could not read {path.name}: {message}. Expected a CSV or Parquet table with columns "
            "x, y (image pixels), z (section index), gene and optional count."
        ) from None
    if volume.num_slices > MAX_UPLOAD_SECTIONS:
        raise DemoError(f"Refused: the table has {volume.num_slices} sections; this demo accepts up to {MAX_UPLOAD_SECTIONS}.")
    tile = load_pipeline().config.tile_size
    genes = _pad_to_tiles(volume.genes, tile // volume.gene_bin)
    return Source(genes, list(volume.panel), None, f"uploaded table {path.name}")


def _pad_to_tiles(genes: np.ndarray, tile_bins: int) -> np.ndarray:
    """Zero-pad the gene grid up to whole tiles (the pipeline samples whole 256-px tiles)."""
    hb, wb = genes.shape[-2:]
    pad_h, pad_w = -hb % tile_bins, -wb % tile_bins
    return np.pad(genes, ((0, 0), (0, 0), (0, pad_h), (0, pad_w))) if pad_h or pad_w else genes


def resolve_source(upload: str | None, source_choice: str = SOURCE_PHANTOM) -> Source:
    """The phantom, or the uploaded table when that source is chosen (an upload is required then)."""
    if source_choice == SOURCE_UPLOAD:
        if not upload:
            raise DemoError("Choose a transcript table to upload (CSV or Parquet with x, y, z, gene), or use the phantom.")
        return read_upload(upload)
    return phantom_source()


# ---------------------------------------------------------------------------------------------- requests
def check_request(request: Request, source: Source) -> None:
    """Refuse requests beyond the caps or outside the data, with a message that says what to change."""
    tile = load_pipeline().config.tile_size
    gene_bin = load_pipeline().unet.config.gene_bin
    sections, hb, wb = source.genes.shape[1:]
    height, width = hb * gene_bin, wb * gene_bin
    if request.sampler not in SAMPLERS:
        raise DemoError(f"Unknown sampler {request.sampler!r}; choose one of {', '.join(SAMPLERS)}.")
    if not 1 <= request.steps <= MAX_STEPS:
        raise DemoError(f"Refused: {request.steps} steps requested; this demo allows 1 to {MAX_STEPS} steps.")
    for name, value in (("width", request.width), ("height", request.height), ("x0", request.x0), ("y0", request.y0)):
        if value % tile or value < 0 or (name in ("width", "height") and value == 0):
            raise DemoError(f"The region {name} ({value} px) must be a non-negative multiple of the {tile}-px tile.")
    tiles = (request.width // tile) * (request.height // tile)
    if tiles > MAX_TILES:
        raise DemoError(
            f"Refused: a {request.width} x {request.height} px region is {tiles} tiles per section; this demo "
            f"allows up to {MAX_TILES} tiles ({tile}-px). Use `teramind generate` for large regions."
        )
    if request.x0 + request.width > width or request.y0 + request.height > height:
        raise DemoError(
            f"The region x {request.x0}-{request.x0 + request.width}, y {request.y0}-{request.y0 + request.height} "
            f"lies outside the {width} x {height} px data."
        )
    count = request.slice_stop - request.slice_start
    if count > MAX_SECTIONS:
        raise DemoError(f"Refused: {count} sections requested; this demo allows up to {MAX_SECTIONS}.")
    if not 0 <= request.slice_start < request.slice_stop <= sections:
        raise DemoError(f"Sections must satisfy 0 <= start < stop <= {sections} (the data has {sections} sections).")


def crop(source: Source, request: Request) -> tuple[np.ndarray, np.ndarray | None]:
    """Genes ``(G, Z, h, w)`` of the region (all sections, so each chunk keeps its z context) and its images."""
    gene_bin = load_pipeline().unet.config.gene_bin
    rows = slice(request.y0 // gene_bin, (request.y0 + request.height) // gene_bin)
    cols = slice(request.x0 // gene_bin, (request.x0 + request.width) // gene_bin)
    genes = np.ascontiguousarray(source.genes[:, :, rows, cols])
    images = None
    if source.images is not None:
        images = source.images[:, :, request.y0 : request.y0 + request.height, request.x0 : request.x0 + request.width]
    return genes, images


def to_uint8(volume: np.ndarray) -> np.ndarray:
    """[-1, 1] floats to uint8 exactly as `TeraMindPipeline(output_type="uint8")` does."""
    return to_output_type(torch.from_numpy(volume), "uint8")


_SAMPLING_LOCK = threading.Lock()  # one sampling run at a time: the CPU is the bottleneck


def sample(
    request: Request, genes: np.ndarray, names: list[str], on_step: Callable[[int], None] | None = None,
    knockout: str | None = None, baseline: np.ndarray | None = None,
) -> Any:
    """Float ``(Z, 2, H, W)`` morphology of the region (or a `KnockoutResult` when ``knockout`` is a gene)."""
    pipe = load_pipeline()

    def callback(_pipe, i, _t, tensors):
        if on_step is not None:
            on_step(i)
        return tensors

    kwargs = dict(num_inference_steps=request.steps, slices=(request.slice_start, request.slice_stop), preset=sampler_preset(request))
    with _SAMPLING_LOCK:
        if knockout:
            return in_silico_knockout(
                pipe, genes, names, knockout, seed=request.seed, baseline=baseline, callback_on_step_end=callback, **kwargs
            )
        return pipe(genes, gene_names=names, generator=request.seed, output_type="np", callback_on_step_end=callback, **kwargs).images


# ---------------------------------------------------------------------------------------------- rendering
def gray_rgb(image: np.ndarray) -> np.ndarray:
    """A uint8 (H, W) image as RGB (browsers and gr.Image agree on 3 channels)."""
    return np.repeat(image[..., None], 3, axis=-1)


def render_map(
    panels: list[tuple[np.ndarray, str]], cmap: str, vmin: float | None = None, vmax: float | None = None,
    colorbar_label: str = "",
) -> np.ndarray:
    """Side-by-side heat maps with titles and a shared colour bar, as an RGB array (no pyplot: thread-safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3.4 * len(panels) + 0.8, 3.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    image = None
    for ax, (array, title) in zip(axes, panels):
        image = ax.imshow(array, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=list(axes), shrink=0.85, label=colorbar_label)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def expression_figure(genes: np.ndarray, names: list[str], gene: str, section: int) -> tuple[np.ndarray, str]:
    """Heat map of one gene's counts in a section, and a note if the data lack that gene."""
    if gene.lower() not in [n.lower() for n in names]:
        blank = np.zeros(genes.shape[-2:], dtype=np.float32)
        return render_map([(blank, f"{gene}: not in the data")], "magma", 0, 1, "transcripts / bin"), f"{gene} is not in the data (zeros)."
    counts = gene_expression_map(genes, names, gene)[section]
    note = f"{gene}: {int(counts.sum())} transcripts in section {section}."
    return render_map([(counts, f"{gene} counts, section {section}")], "magma", 0, max(float(counts.max()), 1.0), "transcripts / bin"), note


def attention_figure(genes: np.ndarray, names: list[str], gene_a: str, gene_b: str, section: int) -> tuple[np.ndarray, str]:
    """Map of the model's gene-gene attention between two genes, one value per 64-px patch."""
    pipe = load_pipeline()
    model_names = list(pipe.unet.config.gene_names)
    attention = pipe.gene_attention(genes, names)
    pair = pair_attention_map(attention, model_names, gene_a, gene_b)[section // pipe.unet.config.num_slices]
    uniform = 1.0 / len(model_names)
    note = f"attention {gene_a}-{gene_b}: mean {pair.mean():.3f} (uniform would be {uniform:.3f})."
    return render_map([(pair, f"attention {gene_a} - {gene_b}")], "viridis", 0, max(float(pair.max()), 2 * uniform), "attention weight"), note


def knockout_figure(difference: np.ndarray, gene: str, section: int) -> np.ndarray:
    """Knocked-out minus baseline for DAPI and PolyT of one section, on a symmetric colour scale."""
    limit = max(float(np.abs(difference[section]).max()), 1e-3)
    panels = [(difference[section, 0], "DAPI change"), (difference[section, 1], "PolyT change")]
    return render_map(panels, "RdBu_r", -limit, limit, f"{gene} knocked out - baseline")


# ---------------------------------------------------------------------------------------------- files
def save_outputs(volume: np.ndarray, request: Request, out_dir: Path, um_per_px: float | None) -> dict[str, Path]:
    """Write the uint8 volume as .npy, TIFF (ZCYX) and a zipped OME-Zarr; returns the paths by kind."""
    import tifffile

    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"teramind_x{request.x0}_y{request.y0}_z{request.slice_start}-{request.slice_stop}_seed{request.seed}"
    paths = {"npy": out_dir / f"{stem}.npy", "tiff": out_dir / f"{stem}.tif", "zarr": out_dir / f"{stem}.ome.zarr.zip"}
    np.save(paths["npy"], volume)
    tifffile.imwrite(paths["tiff"], volume, photometric="minisblack", metadata={"axes": "ZCYX"})
    write_ome_zarr_zip(volume, paths["zarr"], request, um_per_px)
    return paths


def write_ome_zarr_zip(volume: np.ndarray, path: Path, request: Request, um_per_px: float | None) -> Path:
    """An NGFF 0.5 image (``c, z, y, x``, with a pyramid) zipped into one downloadable file."""
    import zarr

    from teramind_hf.pipelines.ome_zarr import PhysicalScale, build_level, create_image, level_blocks

    tile = load_pipeline().config.tile_size
    folder = path.with_suffix("")  # *.ome.zarr
    if folder.exists():
        shutil.rmtree(folder)
    group = zarr.open_group(str(folder), mode="w", zarr_format=3)
    scale = PhysicalScale(um_per_px=um_per_px or DEFAULT_MODEL_UM_PER_PX, origin_px=(request.slice_start, request.y0, request.x0))
    levels = create_image(group, (volume.shape[1], volume.shape[0], volume.shape[2], volume.shape[3]), tile, scale)
    levels[0][:] = volume.transpose(1, 0, 2, 3)
    for finer, coarser in zip(levels, levels[1:]):
        build_level(finer, coarser, level_blocks(coarser))
    archive = shutil.make_archive(str(folder), "zip", root_dir=folder.parent, base_dir=folder.name)
    shutil.rmtree(folder)
    return Path(shutil.move(archive, path))


# ---------------------------------------------------------------------------------------------- handlers
def _request_from_inputs(x0, y0, width, height, slice_start, slice_stop, steps, seed, sampler) -> Request:
    def as_int(value, name):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise DemoError(f"{name} must be a number, got {value!r}") from None
        if number != int(number):
            raise DemoError(f"{name} must be a whole number, got {value}")
        return int(number)

    steps = as_int(steps, "steps")
    if sampler == FAST_PRESET:
        from teramind_hf.sampling import PRESETS

        steps = PRESETS["fast"].num_inference_steps  # the preset's steps, whatever the slider says
    return Request(
        as_int(x0, "x0"), as_int(y0, "y0"), as_int(width, "width"), as_int(height, "height"),
        as_int(slice_start, "first section"), as_int(slice_stop, "section stop"), steps,
        as_int(seed, "seed"), str(sampler),
    )


def api_generate(
    table: str | None, x0: float, y0: float, width: float, height: float, slice_start: float, slice_stop: float,
    steps: float, seed: float, sampler: str, progress: gr.Progress = gr.Progress(),
) -> tuple[str, dict]:
    """API: the generated volume as a .npy file (uint8 (Z, 2, H, W)) and a JSON summary; no upload = phantom."""
    try:
        request = _request_from_inputs(x0, y0, width, height, slice_start, slice_stop, steps, seed, sampler)
        source = resolve_source(table, SOURCE_UPLOAD if table else SOURCE_PHANTOM)
        check_request(request, source)
        genes, _ = crop(source, request)
        volume = to_uint8(sample(request, genes, source.names, _progress_callback(progress, request.steps, "sampling")))
    except ValueError as err:  # DemoError, or the pipeline refusing the data (e.g. too few panel genes)
        raise gr.Error(str(err), print_exception=False) from None
    out_dir = Path(tempfile.mkdtemp(prefix="teramind-api-"))
    path = out_dir / "volume.npy"
    np.save(path, volume)
    return str(path), {"request": asdict(request), "source": source.label, "shape": list(volume.shape), "dtype": "uint8"}


def _progress_callback(progress: gr.Progress, steps: int, label: str, offset: int = 0, total: int | None = None):
    total = total or steps

    def on_step(i: int) -> None:
        progress((offset + i + 1) / total, desc=f"{label}: step {i + 1}/{steps}")

    return on_step


def ui_generate(
    source_choice: str, table: str | None, x0, y0, width, height, slice_start, slice_stop, steps, seed, sampler,
    gene: str, gene_a: str, gene_b: str, knockout: str, progress: gr.Progress = gr.Progress(),
):
    """The Generate button: images, ground truth, heat map, attention, knockout, files and a status line.

    A refused or unreadable request only changes the status line (a readable message, never a traceback).
    """
    try:
        request = _request_from_inputs(x0, y0, width, height, slice_start, slice_stop, steps, seed, sampler)
        progress(0, desc="reading the data")
        source = resolve_source(table, source_choice)
        check_request(request, source)
        genes, images = crop(source, request)
        knocked = knockout if knockout and knockout != NO_KNOCKOUT else None
        if knocked and knocked.lower() not in [n.lower() for n in source.names]:
            raise DemoError(f"{knocked} is not in the data (its counts are zero already): knocking it out changes nothing.")
        runs = 2 if knocked else 1
        volume = sample(request, genes, source.names, _progress_callback(progress, request.steps, "sampling", 0, runs * request.steps))
        difference_image, knock_note = None, ""
        if knocked:
            result = sample(
                request, genes, source.names,
                _progress_callback(progress, request.steps, f"knockout of {knocked}", request.steps, runs * request.steps),
                knockout=knocked, baseline=volume,
            )
            difference_image = knockout_figure(result.difference, knocked, 0)
            dapi, polyt = result.mean_abs_change
            knock_note = f" Knockout of **{knocked}**: mean |change| DAPI {dapi:.4f}, PolyT {polyt:.4f} (in [-1, 1] units)."
        section = request.slice_start
        heat, heat_note = expression_figure(genes, source.names, gene, section)
        attention, attention_note = attention_figure(genes, source.names, gene_a, gene_b, section)
    except ValueError as err:  # DemoError, or the pipeline refusing the data (e.g. too few panel genes)
        return (*[gr.skip()] * 10, f"**Not generated.** {err}")
    progress(1.0, desc="saving")
    out = to_uint8(volume)
    paths = save_outputs(out, request, Path(tempfile.mkdtemp(prefix="teramind-demo-")), demo_um_per_px() if source.images is not None else None)
    truth = (None, None)
    if images is not None:
        truth = (gray_rgb(images[0, section]), gray_rgb(images[1, section]))
    status = (
        f"Generated {out.shape[0]} section(s) of {request.width} x {request.height} px from the {source.label} "
        f"with {request.sampler}, {request.steps} steps, seed {request.seed}; showing section {section}. "
        f"{heat_note} {attention_note}{knock_note}"
    )
    return (
        gray_rgb(out[0, 0]), gray_rgb(out[0, 1]), *truth, heat, attention, difference_image,
        str(paths["npy"]), str(paths["tiff"]), str(paths["zarr"]), status,
    )


# ---------------------------------------------------------------------------------------------- layout
def _default_pair(names: list[str]) -> tuple[str, str]:
    lowered = {n.lower(): n for n in names}
    for a, b in PLANTED_PAIRS:
        if a.lower() in lowered and b.lower() in lowered:
            return lowered[a.lower()], lowered[b.lower()]
    return names[0], names[min(1, len(names) - 1)]


def build_demo() -> gr.Blocks:
    """The Gradio Blocks of the demo (not launched)."""
    pipe = load_pipeline()
    bundled_phantom()  # build the tissue at start-up, not on the first click
    names = list(pipe.unet.config.gene_names)
    tile = pipe.config.tile_size
    gene_a, gene_b = _default_pair(names)
    with gr.Blocks(title="Tera-MIND: genes to brain morphology", analytics_enabled=False) as demo:
        gr.Markdown(
            "# Tera-MIND: spatial gene expression to 3D brain morphology\n"
            "Gene-conditioned, boundary-aware diffusion ([arXiv 2503.01220](https://arxiv.org/abs/2503.01220)) "
            "generates DAPI (nuclei) and PolyT (cytoplasm) for a region, tile by tile. The bundled tissue is a "
            f"synthetic phantom ({PHANTOM_SIZE} x {PHANTOM_SIZE} px, {PHANTOM_SECTIONS} sections) with known ground "
            f"truth; the model is the package's small default model ({len(names)} genes). Limits: {MAX_TILES} tiles "
            f"of {tile} px per section, {MAX_STEPS} steps, {MAX_SECTIONS} sections, {MAX_UPLOAD_BYTES // 2**20} MB uploads."
        )
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                source = gr.Radio([SOURCE_PHANTOM, SOURCE_UPLOAD], value=SOURCE_PHANTOM, label="Gene data")
                table = gr.File(
                    label="Transcript table (CSV/Parquet: x, y in px, z = section, gene [, count])",
                    file_types=[".csv", ".tsv", ".parquet"], type="filepath", elem_id="upload",
                )
                with gr.Row():
                    x0 = gr.Number(value=256, label="x0 (px)", precision=0, elem_id="x0")
                    y0 = gr.Number(value=256, label="y0 (px)", precision=0, elem_id="y0")
                with gr.Row():
                    width = gr.Number(value=tile, label="width (px)", precision=0, elem_id="width")
                    height = gr.Number(value=tile, label="height (px)", precision=0, elem_id="height")
                with gr.Row():
                    slice_start = gr.Number(value=0, label="first section", precision=0, elem_id="slice_start")
                    slice_stop = gr.Number(value=PHANTOM_SECTIONS, label="stop section", precision=0, elem_id="slice_stop")
                with gr.Row():
                    steps = gr.Number(value=Request().steps, label="steps", precision=0, elem_id="steps")
                    seed = gr.Number(value=0, label="seed", precision=0, elem_id="seed")
                sampler = gr.Radio(list(SAMPLERS), value=SAMPLERS[0], label="Sampler")
                gene = gr.Dropdown(names, value=gene_a, label="Gene heat map")
                with gr.Row():
                    pair_a = gr.Dropdown(names, value=gene_a, label="Attention: gene A")
                    pair_b = gr.Dropdown(names, value=gene_b, label="Attention: gene B")
                knockout = gr.Dropdown([NO_KNOCKOUT, *names], value=NO_KNOCKOUT, label="Knock out gene (regenerates)")
                run = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column(scale=3):
                status = gr.Markdown("Choose a region and press **Generate**.", elem_id="status")
                with gr.Row():
                    gen_dapi = gr.Image(label="Generated DAPI", elem_id="gen_dapi", format="png")
                    gen_polyt = gr.Image(label="Generated PolyT", elem_id="gen_polyt", format="png")
                with gr.Row():
                    true_dapi = gr.Image(label="Ground truth DAPI", elem_id="true_dapi", format="png")
                    true_polyt = gr.Image(label="Ground truth PolyT", elem_id="true_polyt", format="png")
                with gr.Row():
                    heat = gr.Image(label="Gene expression", elem_id="heat", format="png", show_label=False)  # title drawn in the figure
                    attention = gr.Image(label="Gene-gene attention", elem_id="attention", format="png", show_label=False)  # title drawn in the figure
                difference = gr.Image(label="Knockout difference", elem_id="difference", format="png", show_label=False)  # title drawn in the figure
                with gr.Row():
                    npy_file = gr.File(label="Volume (.npy, uint8 Z x 2 x H x W)", elem_id="npy_file")
                    tiff_file = gr.File(label="TIFF (ZCYX)", elem_id="tiff_file")
                    zarr_file = gr.File(label="OME-Zarr (zip)", elem_id="zarr_file")
        run.click(
            ui_generate,
            inputs=[source, table, x0, y0, width, height, slice_start, slice_stop, steps, seed, sampler, gene, pair_a, pair_b, knockout],
            outputs=[gen_dapi, gen_polyt, true_dapi, true_polyt, heat, attention, difference, npy_file, tiff_file, zarr_file, status],
            api_visibility="undocumented",
        )
        # the clean API: a hidden button whose event is `/generate`
        api_volume = gr.File(visible=False)
        api_info = gr.JSON(visible=False)
        gr.Button(visible=False).click(
            api_generate,
            inputs=[table, x0, y0, width, height, slice_start, slice_stop, steps, seed, sampler],
            outputs=[api_volume, api_info],
            api_name="generate",
        )
    return demo


def launch_options() -> dict[str, Any]:
    """`launch()` keywords: a theme with local fonts only (the page must not wait on a font CDN)."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])
    # Gradio refuses larger uploads itself, before they reach the app or the disk
    return {"theme": theme, "ssr_mode": False, "max_file_size": MAX_UPLOAD_BYTES}


def main() -> None:
    """Launch the demo (host/port from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, as on Spaces)."""
    build_demo().queue(default_concurrency_limit=1).launch(**launch_options())


if __name__ == "__main__":
    main()
