"""BoundaryAwareScheduler: tile-grid, halo-aware sampling around any diffusers scheduler.

Tera-MIND generates a region tile by tile. Every denoising step is synchronous over the tile grid: a tile's
input canvas is the tile plus a halo (half a patch) taken from its 8 neighbours *at the same step*, the model
predicts the noise of the tile alone (its collage path), and the inner scheduler updates the tile. Outside
the region the canvas holds ``fill_value`` (-1, empty background), as the official inference does.

The noise update itself is delegated to an inner diffusers scheduler (DDIM by default, as official: linear
betas 1e-4..0.02 over 1000 steps, epsilon prediction, 15 steps, eta 0, x0 clipped to [-1, 1]). Any other
diffusers scheduler (DPMSolverMultistep, Euler, ...) can be swapped in.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

DEFAULT_INNER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "prediction_type": "epsilon",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
}


@dataclass
class BoundaryAwareSchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor | None = None


def official_timesteps(num_train_timesteps: int, num_inference_steps: int) -> list[int]:
    """The official ``space_timesteps(T, 'ddimN')``: the smallest integer stride giving exactly N steps.

    The official code has no answer for some N (e.g. 1); those fall back to evenly spaced steps ending at
    T-1 ("trailing" spacing), ascending like the official list.
    """
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(f"num_inference_steps must be in [1, {num_train_timesteps}], got {num_inference_steps}")
    for stride in range(1, num_train_timesteps):
        if len(range(0, num_train_timesteps, stride)) == num_inference_steps:
            return list(range(0, num_train_timesteps, stride))
    trailing = np.round(np.linspace(num_train_timesteps, 0, num_inference_steps, endpoint=False)) - 1
    return sorted(int(t) for t in trailing)


def tile_seed(seed: int, *index: int) -> int:
    """A 63-bit seed for one tile's initial noise, from the run seed and the tile index (z chunk, row, col).

    A hash (not a sum) so neighbouring tiles and runs never share noise streams.
    """
    digest = hashlib.sha256(":".join(str(int(i)) for i in (seed, *index)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _inner_class(name: str) -> type:
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and n != "BoundaryAwareScheduler")
        raise ValueError(f"inner_scheduler {name!r} is not a diffusers scheduler class; known: {', '.join(known)}")
    return cls


class BoundaryAwareScheduler(SchedulerMixin, ConfigMixin):
    r"""Synchronous tile-grid sampling with halos, wrapping an inner diffusers scheduler.

    Parameters:
        inner_scheduler: class name of the diffusers scheduler doing the noise update.
        inner_config: its config (betas, prediction type, ...); defaults to the official DDIM settings.
        timestep_spacing_mode: ``"official"`` uses the official DDIM spacing (stride ``s`` with exactly N
            steps: 0, 67, ..., 938 for 15) by re-spacing the schedule as the official sampler does;
            ``"inner"`` uses the inner scheduler's own ``set_timesteps``.
        tile_size: kept tile edge in px (256 official).
        halo: canvas margin taken from neighbours, half a patch (32 official).
        patch_size: model patch edge (64 official); ``tile_size + 2*halo`` must be a multiple of it.
        fill_value: canvas value outside the region (-1, empty background, as official).
    """

    order = 1
    _compatibles = [
        "DDIMScheduler",
        "DDPMScheduler",
        "DPMSolverMultistepScheduler",
        "EulerDiscreteScheduler",
        "PNDMScheduler",
        "UniPCMultistepScheduler",
    ]

    @register_to_config
    def __init__(
        self,
        inner_scheduler: str = "DDIMScheduler",
        inner_config: dict | None = None,
        timestep_spacing_mode: str = "official",
        tile_size: int = 256,
        halo: int = 32,
        patch_size: int = 64,
        fill_value: float = -1.0,
    ):
        if timestep_spacing_mode not in ("official", "inner"):
            raise ValueError(f"timestep_spacing_mode must be 'official' or 'inner', got {timestep_spacing_mode!r}")
        if (tile_size + 2 * halo) % patch_size or tile_size % patch_size:
            raise ValueError(
                f"tile_size ({tile_size}) and tile_size + 2*halo ({tile_size + 2 * halo}) must be multiples of patch_size ({patch_size})"
            )
        if 2 * halo != patch_size:
            raise ValueError(f"halo must be half a patch ({patch_size // 2}) for the collage path, got {halo}")
        self._inner_cls = _inner_class(inner_scheduler)
        self.inner = self._inner_cls.from_config({**DEFAULT_INNER_CONFIG, **(inner_config or {})})
        self.timesteps = torch.tensor([], dtype=torch.long)
        self.num_inference_steps = None
        self._stepper = self.inner
        self._model_to_inner: dict[int, int] = {}

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def wrap(cls, inner: SchedulerMixin, **kwargs) -> "BoundaryAwareScheduler":
        """Wrap an existing diffusers scheduler (e.g. ``DPMSolverMultistepScheduler.from_config(...)``)."""
        if isinstance(inner, BoundaryAwareScheduler):
            return inner
        config = {k: v for k, v in dict(inner.config).items() if not k.startswith("_")}
        spacing = kwargs.pop("timestep_spacing_mode", "official" if type(inner).__name__ == "DDIMScheduler" else "inner")
        return cls(inner_scheduler=type(inner).__name__, inner_config=config, timestep_spacing_mode=spacing, **kwargs)

    @property
    def canvas_size(self) -> int:
        return self.config.tile_size + 2 * self.config.halo

    @property
    def init_noise_sigma(self) -> float:
        return float(self._stepper.init_noise_sigma)

    # ------------------------------------------------------------------ timesteps
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set the model timesteps (descending, on the 0..T-1 training scale)."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.num_inference_steps = num_inference_steps
        inner_cfg = self.inner.config
        if self.config.timestep_spacing_mode == "official":
            model_steps = official_timesteps(inner_cfg.num_train_timesteps, num_inference_steps)
            # Re-space the schedule as the official SpacedDiffusion does: the inner scheduler runs on an
            # N-step schedule whose alpha-bars are the training alpha-bars at the kept timesteps.
            full = _training_alphas_cumprod(inner_cfg)
            kept = full[model_steps]
            betas = 1 - kept / np.concatenate([[1.0], kept[:-1]])
            spaced_cfg = {**dict(inner_cfg), "num_train_timesteps": num_inference_steps, "trained_betas": betas.tolist()}
            spaced_cfg = {k: v for k, v in spaced_cfg.items() if not k.startswith("_")}
            if "timestep_spacing" in spaced_cfg:
                spaced_cfg["timestep_spacing"] = "leading"
            if "steps_offset" in spaced_cfg:
                spaced_cfg["steps_offset"] = 0
            stepper = self._inner_cls.from_config(spaced_cfg)
            if hasattr(stepper, "alphas_cumprod"):
                # float64 alpha-bars cast once to float32, as official (not a float32 cumprod)
                stepper.alphas_cumprod = torch.from_numpy(kept).float()
            stepper.set_timesteps(num_inference_steps, device=device)
            self._stepper = stepper
            self._model_to_inner = {model_steps[i]: i for i in range(num_inference_steps)}
            inner_ts = stepper.timesteps.tolist()
            self.timesteps = torch.tensor([model_steps[int(i)] for i in inner_ts], dtype=torch.long, device=device)
        else:
            self.inner.set_timesteps(num_inference_steps, device=device)
            self._stepper = self.inner
            self._model_to_inner = {}
            self.timesteps = self.inner.timesteps.clone()

    def inner_timestep(self, timestep: int | torch.Tensor):
        """The inner scheduler's timestep for a model timestep."""
        if not self._model_to_inner:
            return timestep
        return self._model_to_inner[int(timestep)]

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        return self._stepper.scale_model_input(sample, self.inner_timestep(timestep))

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> BoundaryAwareSchedulerOutput | tuple:
        """One inner-scheduler update of a whole region (elementwise, so tile order never matters)."""
        kwargs = {"generator": generator} if generator is not None else {}
        params = _step_params(self._stepper)
        if "eta" in params:
            kwargs["eta"] = 0.0
        if "use_clipped_model_output" in params:
            # official DDIM re-derives the noise from the clipped x0 before stepping
            kwargs["use_clipped_model_output"] = True
        out = self._stepper.step(model_output, self.inner_timestep(timestep), sample, return_dict=True, **kwargs)
        result = BoundaryAwareSchedulerOutput(out.prev_sample, getattr(out, "pred_original_sample", None))
        return result if return_dict else (result.prev_sample,)

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion on the 1000-step training schedule (for training and img2img-like use)."""
        return self.inner.add_noise(original, noise, timesteps)

    # ------------------------------------------------------------------ tile geometry
    def tile_grid(self, height: int, width: int) -> tuple[int, int]:
        """Rows and columns of tiles of a region; the region must be a whole number of tiles."""
        tile = self.config.tile_size
        if height % tile or width % tile or height <= 0 or width <= 0:
            raise ValueError(
                f"region {height}x{width} px is not a whole number of {tile}-px tiles "
                f"(gene grid {height}/{width} px must be multiples of tile_size={tile})"
            )
        return height // tile, width // tile

    def pad_region(self, region: torch.Tensor) -> torch.Tensor:
        """Pad a region ``(..., H, W)`` by the halo with ``fill_value`` so every tile's canvas is a plain slice."""
        halo = self.config.halo
        return F.pad(region, (halo, halo, halo, halo), value=self.config.fill_value)

    def tile_canvas(self, padded_region: torch.Tensor, row: int, col: int) -> torch.Tensor:
        """Canvas of tile (row, col): the tile plus the halo from its 8 neighbours, from a padded region."""
        tile, size = self.config.tile_size, self.canvas_size
        return padded_region[..., row * tile : row * tile + size, col * tile : col * tile + size]

    def initial_noise(
        self, seed: int, index: tuple[int, ...], shape: tuple[int, ...], dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Initial noise of one tile, from a generator seeded by ``(seed, *index)`` alone."""
        generator = torch.Generator(device="cpu").manual_seed(tile_seed(seed, *index))
        return torch.randn(shape, generator=generator, dtype=dtype) * self.init_noise_sigma

    def __len__(self) -> int:
        return self.inner.config.num_train_timesteps


def _step_params(scheduler: SchedulerMixin) -> set[str]:
    import inspect

    return set(inspect.signature(scheduler.step).parameters)


def _training_alphas_cumprod(config) -> np.ndarray:
    """Float64 alpha-bar of the training schedule (the official code builds it in float64)."""
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    elif config.beta_schedule == "linear":
        betas = np.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=np.float64)
    elif config.beta_schedule == "scaled_linear":
        betas = np.linspace(config.beta_start**0.5, config.beta_end**0.5, config.num_train_timesteps, dtype=np.float64) ** 2
    else:
        raise ValueError(
            f"timestep_spacing_mode='official' supports linear/scaled_linear betas, got {config.beta_schedule!r}; "
            "use timestep_spacing_mode='inner'"
        )
    return np.cumprod(1.0 - betas)
