"""The output folder of ``teramind generate``: its run record (what determines the bytes, compared on resume),
whether it can be written, and the step store inside it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..output_guard import probe_writable
from .acceleration import is_compiled

if TYPE_CHECKING:
    from ..sampling.schedule import GridSchedule
    from .gene_source import GeneSource
    from .ome_zarr import PhysicalScale
    from .pipeline_teramind import TeraMindPipeline
    from .streaming import Region

RECORD_FORMAT = "teramind-generate/1"
STEP_STORE = "_teramind_steps"  # child of the output group holding step buffers and progress


def model_fingerprint(unet: torch.nn.Module) -> str:
    """sha256 of the weights (sorted names, raw bytes): a resumed run must use the very same model."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def run_record(
    pipe: TeraMindPipeline, scheduler, source: GeneSource, region: Region, seed: int, steps: int, halo: bool,
    scale: PhysicalScale, grid: GridSchedule, exact: bool = False,
) -> dict:
    """What determines the output bytes; stored in the output and compared on resume."""
    record = {
        "format": RECORD_FORMAT,
        "model_sha256": model_fingerprint(pipe.unet),
        "model_config": dict(pipe.unet.config),
        "model_dtype": str(pipe.unet.dtype).removeprefix("torch."),  # the bytes depend on it (and on compiling)
        "model_compiled": is_compiled(pipe.unet),
        "scheduler_class": type(scheduler).__name__,
        # an unset eta (the solver's own) is left out, so outputs recorded before the key existed still resume
        "scheduler_config": {k: v for k, v in dict(scheduler.config).items()
                             if not k.startswith("_") and not (k == "eta" and v is None)},
        "tile_size": pipe.config.tile_size,
        "halo_px": pipe.config.halo,
        "fill_value": pipe.config.fill_value,
        "grid_schedule": grid.to_dict(),
        "num_inference_steps": steps,
        "seed": seed,
        "region_yxhw": [region.y0, region.x0, region.height, region.width],
        "slices": [region.start, region.stop],
        "halo": halo,
        "exact": exact,
        "genes": {"location": source.location, "shape": list(source.shape), "gene_names": source.gene_names},
        "um_per_px": scale.um_per_px,
        "section_spacing_um": scale.section_spacing_um,
    }
    return json.loads(json.dumps(record, default=str))


# ---------------------------------------------------------------------------------------------- output folder
def _filesystem(out: str):
    import fsspec

    return fsspec.core.url_to_fs(out)


def _is_local_filesystem(fs) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def check_writable(out: str) -> None:
    """Fail early (PermissionError) if the output location cannot be written, before anything is touched."""
    fs, path = _filesystem(out)
    if not _is_local_filesystem(fs):
        return
    probe_dir = Path(path)
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise FileExistsError(f"{probe_dir} exists and is not a folder: cannot write {out}")
    probe_writable(probe_dir, f"cannot write {out}: output location")


def read_existing_record(out: str) -> tuple[bool, dict | None]:
    """(exists, teramind attributes or None if it is not one of our outputs)."""
    import zarr

    fs, path = _filesystem(out)
    if not fs.exists(path):
        return False, None
    try:
        group = zarr.open_group(out, mode="r")
    except Exception:
        return True, None
    state = group.attrs.get("teramind")
    if not isinstance(state, dict):
        return True, None
    levels = state.get("pyramid_levels_done", 0)
    if (
        not isinstance(state.get("run"), dict) or not isinstance(state.get("complete"), bool)
        or isinstance(levels, bool) or not isinstance(levels, int) or levels < 0
    ):
        raise ValueError(
            f"{out.rstrip('/')}/zarr.json: the 'teramind' run record is damaged (expected 'run' an object, 'complete' "
            f"true/false, 'pyramid_levels_done' a whole number >= 0); remove the output or write to another --out"
        )
    return True, dict(state)


def describe_difference(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    parts = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        if key == "genes" and isinstance(a, dict) and isinstance(b, dict):
            sub = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            parts.append(f"genes ({', '.join(sub)})")
        elif isinstance(a, (dict, list)) or isinstance(b, (dict, list)) or key == "model_sha256":
            parts.append(key)
        else:
            parts.append(f"{key} ({a!r} -> {b!r})")
    return ", ".join(parts)


def step_store_exists(out: str) -> bool:
    fs, path = _filesystem(out)
    return fs.exists(f"{path.rstrip('/')}/{STEP_STORE}/progress")


def remove_step_store(out: str) -> None:
    fs, path = _filesystem(out)
    target = f"{path.rstrip('/')}/{STEP_STORE}"
    if fs.exists(target):
        fs.rm(target, recursive=True)
