"""Where the model runs: one function of the requested device, accelerate's process state and what is available.

Every command that samples (``teramind generate``, ``attention``, ``knockout``, the controls of ``eval report``),
the demo and the examples place the model with :func:`resolve_device`:

* under ``accelerate launch --multi_gpu`` with GPUs: ``cuda:LOCAL_RANK`` (what ``PartialState().device`` gives), so
  process 1 of 2 on a 2-GPU machine runs on ``cuda:1``;
* else ``cuda`` if a GPU is available, else ``mps``, else the CPU;
* ``--device`` (``requested``) overrides this; a device this machine does not have is refused with a
  ``ValueError`` naming ``--device`` and what is available, before anything is written.

Initial noise (and a stochastic solver's noise) is drawn on the CPU from each tile's seed, so every device starts
from the same latents. The step state (x_t, solver history) and the solver step stay float32: in host memory when
streaming (``generate_to_zarr``: :class:`teramind_hf.sampling.TileSampler` sends each canvas batch to the model's
device and brings the prediction back), on the model's device in the in-memory pipeline (its
``step_state_device``, default the model's device; ``"cpu"`` keeps it in host memory).

:func:`single_worker_launch` detects ``accelerate launch --num_processes N`` without ``--multi_gpu`` on a machine
with fewer than 2 GPUs: accelerate then starts one plain process (its "simple launcher") instead of N workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

DEVICE_TYPES = ("cpu", "cuda", "mps")
WORKING_LAUNCH = "accelerate launch --multi_gpu --num_processes N -m teramind_hf.cli generate ..."


@dataclass(frozen=True)
class ProcessPlacement:
    """What :func:`resolve_device` needs of accelerate's process state (``PartialState`` has these attributes)."""

    local_process_index: int = 0
    num_processes: int = 1
    distributed_type: str = "NO"  # accelerate's DistributedType: "NO", "MULTI_GPU", "MULTI_CPU", ...


def _probe_cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _probe_mps() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices(cuda_device_count: int, mps_available: bool) -> list[str]:
    """The devices a ``--device`` may name on a machine with these accelerators, e.g. ``["cpu", "cuda:0"]``."""
    return ["cpu", *(f"cuda:{i}" for i in range(cuda_device_count)), *(["mps"] if mps_available else [])]


def resolve_device(
    requested: Any = None,
    *,
    process_state: Any = None,
    cuda_device_count: int | None = None,
    mps_available: bool | None = None,
    option: str = "--device",
):
    """The ``torch.device`` the model of this process runs on (see module doc).

    Args:
        requested: ``None`` or ``"auto"`` (choose), or a device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``
            (a string or ``torch.device``). A bare ``"cuda"`` under several processes means this process's GPU.
        process_state: accelerate's ``PartialState`` or a :class:`ProcessPlacement` (default: one process).
        cuda_device_count, mps_available: what this machine has (default: asked of torch).
        option: the option (``--device``) or environment variable that set ``requested``, named in errors.
    Raises:
        ValueError: naming ``option`` and the available devices, for a device this machine does not have,
            an unknown device string, or more GPU processes than GPUs.
    """
    import torch

    if cuda_device_count is None:
        cuda_device_count = _probe_cuda_device_count()
    if mps_available is None:
        mps_available = _probe_mps()
    placement = process_state if process_state is not None else ProcessPlacement()
    local, processes = int(placement.local_process_index), int(placement.num_processes)
    available = available_devices(cuda_device_count, mps_available)

    def refuse(why: str) -> ValueError:
        spelled = f"{option} {requested}" if option.startswith("-") else f"{option}={requested}"  # option / env var
        return ValueError(f"{spelled}: {why} (available here: {', '.join(available)})")

    def this_process_gpu() -> torch.device:
        if local >= cuda_device_count:
            raise refuse(
                f"process {local} of {processes} on this machine has no GPU of its own ({cuda_device_count} GPU(s)); "
                "launch at most one process per GPU"
            )
        return torch.device("cuda", local)

    text = "auto" if requested is None else str(requested).strip().lower()
    if text == "auto":
        if cuda_device_count > 0:
            return this_process_gpu()
        if mps_available and processes == 1:
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise refuse(f"not a device; expected auto, {', '.join(DEVICE_TYPES)} or cuda:INDEX") from None
    if device.type not in DEVICE_TYPES:
        raise refuse(f"the model runs on {', '.join(DEVICE_TYPES)} only")
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type == "mps":
        if not mps_available:
            raise refuse("this machine has no Apple MPS device")
        return torch.device("mps")
    if cuda_device_count == 0:
        raise refuse("this machine has no CUDA GPU (or this torch build has no CUDA)")
    if device.index is None:
        return this_process_gpu()
    if device.index >= cuda_device_count:
        raise refuse(f"this machine has {cuda_device_count} CUDA GPU(s)")
    return device


def single_worker_launch(environ: Mapping[str, str], num_processes: int) -> str | None:
    """A warning if ``accelerate launch --num_processes N`` (N > 1) started one plain process, else None.

    Without ``--multi_gpu`` (and with fewer than 2 GPUs, where accelerate would turn it on itself) accelerate's
    simple launcher runs the script once: it sets ``MASTER_ADDR`` because N > 1 was asked for, but no torchrun
    variable (``WORLD_SIZE``), so ``PartialState().num_processes`` is 1. ``environ`` is ``os.environ``;
    ``num_processes`` is ``PartialState().num_processes``.
    """
    launched_by_accelerate = any(key in environ for key in ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_MIXED_PRECISION"))
    asked_for_several = "MASTER_ADDR" in environ and "WORLD_SIZE" not in environ
    if not (launched_by_accelerate and asked_for_several and num_processes == 1):
        return None
    return (
        "accelerate launch started 1 process, not the --num_processes asked for: without --multi_gpu (and with "
        f"fewer than 2 GPUs) accelerate runs the command once. Use: {WORKING_LAUNCH} (also on a CPU machine)"
    )


def check_step_state_fits(needed_bytes: int, device, free_bytes: int | None = None, option: str = "step_state_device") -> None:
    """Refuse (ValueError naming ``option``) a step state of ``needed_bytes`` on an accelerator with less free memory,
    before it is allocated: the alternative is a CUDA out-of-memory error in the middle of the run. ``free_bytes``
    defaults to what ``torch.cuda.mem_get_info`` reports for a CUDA device; nothing is checked on other devices."""
    import torch

    device = torch.device(device)
    if free_bytes is None:
        if device.type != "cuda":
            return
        free_bytes = torch.cuda.mem_get_info(device)[0]
    if needed_bytes > free_bytes:
        raise ValueError(
            f"{option}={device}: the region's step state (x_t and solver history, float32) needs about "
            f"{needed_bytes / 2**30:.3g} GiB, and {device} has {free_bytes / 2**30:.3g} GiB free; pass "
            f'{option}="cpu" (host memory; the model still runs on {device}), a smaller region, or stream it with '
            "generate_to_zarr"
        )
