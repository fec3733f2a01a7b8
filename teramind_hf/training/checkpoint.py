"""Training checkpoints without pickle: tensors in safetensors, everything else in JSON.

``accelerator.save_state`` pickles the optimizer, LR scheduler, RNG states and every registered object (the EMA),
and ``load_state`` unpickles them, so a crafted checkpoint would run code on resume. A ``checkpoint-<step>``
folder here holds only:

    model.safetensors                   the unwrapped UNet's weights
    optimizer.safetensors / .json       optimizer state tensors / param groups and scalar state
    lr_scheduler.json                   the LR scheduler's state (numbers only)
    ema.safetensors / ema.json          EMA shadow weights / decay, step, warm-up (with --use_ema)
    grad_scaler.json                    fp16 loss scaler, when there is one
    rng-<rank>.safetensors / .json      torch / python / numpy RNG states of each process
    <extra>.safetensors                 weights of each extra trained module (e.g. the distiller's discriminator)
    <extra>_optimizer.safetensors/.json its optimizer's state
    training_config.json                model config, step, arguments: written last, marks the checkpoint complete

Resuming reads these with ``safetensors`` and ``json`` only, and refuses a folder holding any other file (for
example the ``*.pkl`` / ``*.bin`` pickles of ``accelerator.save_state``), naming it: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_PREFIX = "checkpoint-"
CONFIG_FILE = "training_config.json"
# a saved optimizer / scheduler / RNG state nests a few levels; far deeper JSON is not one of ours
MAX_STATE_DEPTH = 32
# config fields that must agree between a checkpoint and the model being trained
ARCH_FIELDS = (
    "num_genes", "gene_names", "block_out_channels", "layers_per_block", "time_embed_dim", "attention_levels",
    "gene_map_channels", "sample_size", "gene_bin", "num_slices", "gene_slices", "in_channels", "out_channels",
)
MODEL_FILE, EMA_FILE, OPTIMIZER_FILE = "model.safetensors", "ema", "optimizer"
SCHEDULER_FILE, SCALER_FILE = "lr_scheduler.json", "grad_scaler.json"


class CheckpointFileError(ValueError):
    """A checkpoint file that is missing, not what its name says, or does not fit the run being resumed."""


# ---------------------------------------------------------------------------------------------- folders
def checkpoint_step(path: Path) -> int:
    return int(path.name[len(CHECKPOINT_PREFIX) :])


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints (they hold training_config.json, written last), oldest first."""
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if p.is_dir() and p.name[len(CHECKPOINT_PREFIX) :].isdigit()]
    return sorted((p for p in found if (p / CONFIG_FILE).is_file()), key=checkpoint_step)


def resolve_checkpoint(value: str | None, output_dir: Path) -> Path | None:
    """The checkpoint to resume from: a path, 'latest' (None when there is none yet), or None."""
    if value is None:
        return None
    if value == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(value)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint {value}: no such checkpoint folder")
    if not (path / CONFIG_FILE).is_file() or not path.name.startswith(CHECKPOINT_PREFIX):
        raise ValueError(
            f"--resume_from_checkpoint {value}: not a checkpoint written by teramind train "
            f"(expected a '{CHECKPOINT_PREFIX}<step>' folder holding {CONFIG_FILE})"
        )
    return path


def arch_config(unet) -> dict:
    config = dict(unet.config)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items() if k in ARCH_FIELDS}


def check_checkpoint_config(path: Path, unet) -> None:
    """Refuse a checkpoint whose model config differs from the model being trained, naming the fields."""
    saved = read_checkpoint_config(path)["unet"]
    current = arch_config(unet)
    diff = {k: (saved.get(k), current.get(k)) for k in current if saved.get(k) != current.get(k)}
    if diff:
        lines = "; ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
        raise ValueError(
            f"--resume_from_checkpoint {path}: the checkpoint belongs to another model config ({lines}); "
            "expected a checkpoint of the same model (use another --output_dir or matching model options)"
        )


# ---------------------------------------------------------------------------------------------- files
def _read_json(path: Path, kind: type | None = None):
    """The JSON in ``path``; ``kind``: the type the top level must have (dict for every state file)."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointFileError(f"{path}: missing from the checkpoint") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointFileError(f"{path}: not a JSON file ({err})") from err
    except RecursionError:
        raise CheckpointFileError(f"{path}: JSON nested too deeply to be a checkpoint file") from None
    if kind is not None and not isinstance(value, kind):
        raise CheckpointFileError(f"{path}: expected a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def read_checkpoint_config(path: Path) -> dict:
    """A checkpoint's training_config.json: its ``unet`` config (an object) and ``seconds`` (a number >= 0)."""
    config = _read_json(path / CONFIG_FILE, dict)
    seconds = config.get("seconds", 0.0)
    if not isinstance(config.get("unet"), dict):
        raise CheckpointFileError(f"{path / CONFIG_FILE}: expected a 'unet' object (the model config)")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise CheckpointFileError(f"{path / CONFIG_FILE}: 'seconds' must be a number >= 0, got {seconds!r}")
    return config


def _write_json(path: Path, payload) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, allow_nan=True))
    tmp.replace(path)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointFileError(f"{path}: missing from the checkpoint")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own types for a file that is not safetensors
        raise CheckpointFileError(f"{path}: not a valid safetensors file; it is never unpickled ({err})") from err


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)


def _split_state(state: dict, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """A nested state dict -> (its tensors by dotted path, the rest as JSON with ``{"$tensor": path}`` stubs)."""
    tensors = {}

    def walk(value, path: str):
        if isinstance(value, torch.Tensor):
            tensors[path] = value
            return {"$tensor": path}
        if isinstance(value, dict):
            return {"$dict": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")] for i, (k, v) in enumerate(value.items())]}
        if isinstance(value, (list, tuple)):
            return {"$list" if isinstance(value, list) else "$tuple": [walk(v, f"{path}.{i}") for i, v in enumerate(value)]}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return value.item()
        raise TypeError(f"cannot store {type(value).__name__} at {path or 'top level'} in a checkpoint without pickle")

    return tensors, walk(state, prefix)


def _join_state(stub, tensors: dict[str, torch.Tensor], source: Path, depth: int = 0):
    """Inverse of :func:`_split_state` (only JSON types and tensors come out)."""
    if depth > MAX_STATE_DEPTH:
        raise CheckpointFileError(f"{source}: nested deeper than {MAX_STATE_DEPTH} levels; not a training state")
    depth += 1
    if isinstance(stub, dict):
        if set(stub) == {"$tensor"}:
            if stub["$tensor"] not in tensors:
                raise CheckpointFileError(f"{source}: tensor {stub['$tensor']!r} missing from its safetensors file")
            return tensors[stub["$tensor"]]
        if set(stub) == {"$dict"}:
            pairs = stub["$dict"]
            if not isinstance(pairs, list) or not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise CheckpointFileError(f"{source}: '$dict' must hold [key, value] pairs")
            joined = {}
            for k, v in pairs:
                key = _join_state(k, tensors, source, depth)
                if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                    raise CheckpointFileError(f"{source}: a '$dict' key must be a number or string, got {type(key).__name__}")
                joined[key] = _join_state(v, tensors, source, depth)
            return joined
        if set(stub) in ({"$list"}, {"$tuple"}):
            items = next(iter(stub.values()))
            if not isinstance(items, list):
                raise CheckpointFileError(f"{source}: '{next(iter(stub))}' must hold a list")
            joined = [_join_state(v, tensors, source, depth) for v in items]
            return joined if "$list" in stub else tuple(joined)
        raise CheckpointFileError(f"{source}: unexpected entry {sorted(stub)}")
    if isinstance(stub, list):
        raise CheckpointFileError(f"{source}: unexpected bare list")
    return stub


def _save_state(folder: Path, name: str, state: dict) -> None:
    tensors, stub = _split_state(state)
    _write_tensors(folder / f"{name}.safetensors", tensors)
    _write_json(folder / f"{name}.json", stub)


def _load_state(folder: Path, name: str) -> dict:
    state = _join_state(_read_json(folder / f"{name}.json", dict), _read_tensors(folder / f"{name}.safetensors"), folder / f"{name}.json")
    if not isinstance(state, dict):
        raise CheckpointFileError(f"{folder / name}.json: expected a state object, got {type(state).__name__}")
    return state


def _rng_state() -> dict:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((str(kind), keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])


def _known_files(folder: Path, extras=()) -> set[str]:
    """Names a checkpoint may hold (EMA and scaler files are ignored by a run that does not use them; the files of
    extra modules only when the run trains them)."""
    names = {MODEL_FILE, SCHEDULER_FILE, SCALER_FILE, CONFIG_FILE, *(f"{name}.safetensors" for name in extras)}
    stems = (OPTIMIZER_FILE, EMA_FILE, *(f"{name}_{OPTIMIZER_FILE}" for name in extras))
    names |= {f"{stem}.{ext}" for stem in stems for ext in ("safetensors", "json")}
    # RNG states of every process that saved (a run may resume with another number of processes)
    return names | {p.name for p in folder.iterdir() if re.fullmatch(r"rng-\d+\.(safetensors|json)", p.name)}


def _like(reference: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``value`` in the memory layout of ``reference`` (e.g. channels_last_3d), so a resumed run computes in the
    same layout as an uninterrupted one."""
    return torch.empty_like(reference, dtype=value.dtype).copy_(value) if value.shape == reference.shape else value


# ---------------------------------------------------------------------------------------------- save / load
def save_training_state(accelerator, folder: Path, unet, optimizer, lr_scheduler, ema=None, extras=None) -> None:
    """Write model, optimizer, LR scheduler, EMA, scaler and RNG state of every process into ``folder``;
    ``extras``: ``{name: (module, optimizer)}`` of further trained modules, saved as ``name`` and ``name_optimizer``."""
    folder.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _write_tensors(folder / MODEL_FILE, accelerator.unwrap_model(unet).state_dict())
        _save_state(folder, OPTIMIZER_FILE, optimizer.state_dict())
        tensors, scheduler_state = _split_state(lr_scheduler.state_dict())
        if tensors:
            raise TypeError(f"the LR scheduler's state holds tensors ({sorted(tensors)}): not storable as {SCHEDULER_FILE}")
        _write_json(folder / SCHEDULER_FILE, scheduler_state)
        if ema is not None:
            _save_state(folder, EMA_FILE, ema.state_dict())
        if accelerator.scaler is not None:
            _write_json(folder / SCALER_FILE, accelerator.scaler.state_dict())
        for name, (module, module_optimizer) in (extras or {}).items():
            _write_tensors(folder / f"{name}.safetensors", accelerator.unwrap_model(module).state_dict())
            _save_state(folder, f"{name}_{OPTIMIZER_FILE}", module_optimizer.state_dict())
    _save_state(folder, f"rng-{accelerator.process_index}", _rng_state())
    accelerator.wait_for_everyone()


def load_training_state(accelerator, folder: Path, unet, optimizer, lr_scheduler, ema=None, extras=None) -> None:
    """Restore what :func:`save_training_state` wrote, with safetensors and json only (named errors)."""
    extras = extras or {}
    present = {p.name for p in folder.iterdir()}
    unexpected = sorted(present - _known_files(folder, extras))
    if unexpected:
        raise CheckpointFileError(
            f"{folder / unexpected[0]}: unexpected file in a teramind checkpoint ({', '.join(unexpected)}); checkpoints "
            "hold safetensors and JSON only, and other files (such as the pickles of accelerator.save_state) are "
            "never read or unpickled: remove them or resume from another checkpoint"
        )
    model = accelerator.unwrap_model(unet)
    weights = _read_tensors(folder / MODEL_FILE)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointFileError(f"{folder / MODEL_FILE}: does not fit the model ({err})") from err

    params = list(model.parameters())
    opt_state = _load_state(folder, OPTIMIZER_FILE)
    try:
        optimizer.load_state_dict(opt_state)
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointFileError(f"{folder / (OPTIMIZER_FILE + '.json')}: does not fit the optimizer ({err})") from err
    inner = getattr(optimizer, "optimizer", optimizer)
    for param in params:
        if param in inner.state:
            inner.state[param] = {k: _like(param, v) if isinstance(v, torch.Tensor) else v for k, v in inner.state[param].items()}
    scheduler_state = _join_state(_read_json(folder / SCHEDULER_FILE, dict), {}, folder / SCHEDULER_FILE)
    try:
        lr_scheduler.load_state_dict(scheduler_state)
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointFileError(f"{folder / SCHEDULER_FILE}: does not fit the LR scheduler ({err})") from err
    if ema is not None:
        ema_state = _load_state(folder, EMA_FILE)
        shadow = ema_state.get("shadow_params")
        if not isinstance(shadow, list) or len(shadow) != len(params) or any(
            not isinstance(s, torch.Tensor) or s.shape != p.shape for s, p in zip(shadow, params)
        ):
            raise CheckpointFileError(f"{folder / (EMA_FILE + '.safetensors')}: EMA weights do not fit the model")
        try:
            ema.load_state_dict({**ema_state, "shadow_params": [_like(p, s) for p, s in zip(params, shadow)]})
        except (ValueError, TypeError) as err:
            raise CheckpointFileError(f"{folder / (EMA_FILE + '.json')}: not an EMA state ({err})") from err
    if accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(_read_json(folder / SCALER_FILE, dict))
    for name, (module, module_optimizer) in extras.items():
        _load_extra(folder, name, accelerator.unwrap_model(module), module_optimizer)
    rng = folder / f"rng-{accelerator.process_index}.json"
    if rng.is_file():
        rng_state = _load_state(folder, f"rng-{accelerator.process_index}")
        try:
            _set_rng_state(rng_state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as err:
            raise CheckpointFileError(f"{rng}: not a random-number-generator state ({type(err).__name__}: {err})") from err


def _load_extra(folder: Path, name: str, module, module_optimizer) -> None:
    """Weights and optimizer state of one extra module (``name.safetensors``, ``name_optimizer.*``)."""
    path = folder / f"{name}.safetensors"
    try:
        module.load_state_dict(_read_tensors(path), strict=True)
    except RuntimeError as err:
        raise CheckpointFileError(f"{path}: does not fit the {name} ({err})") from err
    stem = f"{name}_{OPTIMIZER_FILE}"
    try:
        module_optimizer.load_state_dict(_load_state(folder, stem))
    except (ValueError, KeyError, TypeError, RuntimeError) as err:
        raise CheckpointFileError(f"{folder / (stem + '.json')}: does not fit the {name}'s optimizer ({err})") from err


def save_checkpoint(accelerator, output_dir: Path, step: int, unet, optimizer, lr_scheduler, ema, args, seconds: float = 0.0,
                    extras=None) -> Path:
    """The training state + training_config.json (written last, marks the checkpoint complete); prune old ones."""
    from ..output_guard import remove_output

    path = output_dir / f"{CHECKPOINT_PREFIX}{step}"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and args.checkpoints_total_limit is not None:
        old = list_checkpoints(output_dir)
        for stale in old[: max(len(old) - args.checkpoints_total_limit + 1, 0)]:
            remove_output(stale, ["checkpoint"], "--checkpoints_total_limit")
    save_training_state(accelerator, path, unet, optimizer, lr_scheduler, ema, extras)
    if accelerator.is_main_process:
        payload = {"unet": arch_config(accelerator.unwrap_model(unet)), "step": step, "seconds": seconds, "args": vars(args)}
        _write_json(path / CONFIG_FILE, json.loads(json.dumps(payload, default=str)))
    accelerator.wait_for_everyone()
    return path
