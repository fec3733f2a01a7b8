"""Checks on weights read from a file: every floating-point parameter must come from a finite floating-point tensor.

An integer tensor where a float is expected is refused rather than cast (a cast would hide a wrong or truncated
file), and a NaN / inf anywhere in the weights is refused naming the tensor, before the model is used.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

SAFETENSORS_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


class WeightsError(ValueError):
    """Weights that cannot be used: non-floating-point where floats are expected, or not finite."""


def _listed(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_float_tensors(tensors: Iterable[tuple[str, torch.Tensor]], source: str) -> None:
    """Refuse non-floating-point and non-finite tensors, naming them and ``source``."""
    not_float, not_finite = [], []
    for name, tensor in tensors:
        if not tensor.is_floating_point():
            not_float.append(f"{name} ({str(tensor.dtype).removeprefix('torch.')})")
        elif not bool(torch.isfinite(tensor).all()):
            not_finite.append(name)
    if not_float:
        raise WeightsError(f"{source}: expected floating-point weights, but these tensors are not: {_listed(not_float)}")
    if not_finite:
        raise WeightsError(f"{source}: weights hold NaN or inf in {_listed(not_finite)}")


def check_safetensors_dtypes(path: str | Path) -> None:
    """Refuse a safetensors file holding non-floating-point tensors (read from its header, no tensor loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        bad = [f"{k} ({handle.get_slice(k).get_dtype()})" for k in handle.keys()
               if handle.get_slice(k).get_dtype() not in SAFETENSORS_FLOAT_DTYPES]
    if bad:
        raise WeightsError(f"{path}: expected floating-point weights, but these tensors are not: {_listed(bad)}")


# torch's CPU allocator aligns every tensor it allocates to 64 bytes
CPU_ALIGNMENT_BYTES = 64


def align_cpu_tensors(module: torch.nn.Module) -> int:
    """Give each CPU parameter and buffer of ``module`` that is not 64-byte aligned its own aligned copy (same values).

    safetensors files place tensors at 8-byte offsets, and diffusers' loader keeps them where the file mapping puts
    them. torch's CPU kernels may take another code path for unaligned weights, summing in another order: a narrow
    model loaded from a folder sampled other bytes than the same model before it was saved (docs/architecture.md,
    "Loading"). Returns how many tensors were copied."""
    copied = 0
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.device.type == "cpu" and tensor.numel() and tensor.data_ptr() % CPU_ALIGNMENT_BYTES:
                tensor.data = tensor.data.clone(memory_format=torch.preserve_format)
                copied += 1
    return copied
