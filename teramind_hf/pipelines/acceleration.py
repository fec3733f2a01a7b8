"""Mixed precision and compilation of the denoiser: what `teramind generate --dtype/--compile` and
:meth:`TeraMindPipeline.enable_compile` use.

Only the model runs in the reduced dtype: the sampling state, the step buffers and the scheduler update stay
float32 (the pipeline and the streaming sampler cast the model's prediction back with ``.float()``), as in
diffusers' ``torch_dtype=`` pipelines and the official fp16 autocast inference.
"""

from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16"}


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """``"bf16"``/``"bfloat16"``/``torch.bfloat16`` -> ``torch.bfloat16`` (None: float32); anything else is refused."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
        return dtype
    key = _ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if key not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[key]


def cast_unet(unet: torch.nn.Module, dtype: str | torch.dtype | None) -> torch.nn.Module:
    """The model's parameters and buffers in ``dtype``, in place. ``nn.Module.to`` directly: diffusers'
    ``ModelMixin.to`` (0.42) warns about "modules that should be kept in float32: []" on every dtype cast."""
    return torch.nn.Module.to(unet, resolve_dtype(dtype))


def compile_unet(unet: torch.nn.Module, **compile_kwargs) -> torch.nn.Module:
    """Compile the model's forward in place (``nn.Module.compile``: same object, same state_dict keys, so
    saving, the model fingerprint and ``pipe.unet.config`` are unchanged). Inductor fuses the elementwise
    RMSNorm / AdaLN / SiLU / concatenation chains between the convolutions (~27 % of the paper-size forward in
    eager mode). One graph per canvas batch size; ``dynamic=False`` keeps the kernels specialised."""
    compile_kwargs.setdefault("dynamic", False)
    unet.compile(**compile_kwargs)
    return unet


def is_compiled(unet: torch.nn.Module) -> bool:
    return getattr(unet, "_compiled_call_impl", None) is not None
