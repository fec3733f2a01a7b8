"""BoundaryAwareScheduler: the official Tera-MIND timestep spacing and clip rule around any diffusers scheduler.

The official sampler is DDIM on linear betas 1e-4..0.02 over 1000 training steps, 15 steps, eta 0, with the
predicted x0 clipped to [-1, 1] and the noise re-derived from the clipped x0. Its 15 timesteps are not those of
any diffusers spacing: the official ``space_timesteps(T, "ddimN")`` takes the smallest integer stride giving
exactly N steps (0, 67, ..., 938 for 15) and *re-spaces* the schedule (an N-step schedule whose alpha-bars are
the training alpha-bars at the kept timesteps). This scheduler does exactly that around a solver -- DDIM by
default, or any diffusers scheduler (DPM-Solver++, UniPC, Euler, ...) -- and is otherwise a plain diffusers
scheduler (``set_timesteps``, ``scale_model_input``, ``step``, ``add_noise``).

Its config holds the training schedule at the top level (``num_train_timesteps``, ``beta_*``,
``prediction_type``, ...), so ``DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)`` works as for
any diffusers scheduler. Tile geometry is not a scheduler concern: it lives in
:class:`teramind_hf.sampling.TileGrid` and the pipeline config.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import warnings
from dataclasses import dataclass

import diffusers
import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput

# the training schedule: top-level config keys shared with the diffusers schedulers (official values)
SCHEDULE_DEFAULTS = {
    "num_train_timesteps": 1000,
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "beta_schedule": "linear",
    "trained_betas": None,
    "prediction_type": "epsilon",
    "clip_sample": True,
    "clip_sample_range": 1.0,
    "set_alpha_to_one": True,
    "steps_offset": 0,
}
# this wrapper's own keys: hidden from other schedulers' from_config (see `config`)
OWN_KEYS = ("inner_scheduler", "inner_config", "timestep_spacing_mode", "eta")


def _set_solver_timesteps(stepper: SchedulerMixin, num_inference_steps: int, device) -> None:
    """``stepper.set_timesteps``, without the NumPy-2 ``DeprecationWarning`` that diffusers' multistep solvers raise
    there (``np.array`` of a torch tensor: "__array__ implementation doesn't accept a copy keyword"): it is about
    diffusers' code, not the caller's, and would otherwise show on every default run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword", category=DeprecationWarning)
        stepper.set_timesteps(num_inference_steps, device=device)


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
    """A 63-bit seed from the run seed and an index (e.g. z chunk start, global tile row, global tile col).

    A hash (not a sum) so neighbouring tiles and runs never share noise streams.
    """
    digest = hashlib.sha256(":".join(str(int(i)) for i in (seed, *index)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def solver_class(name: str) -> type:
    """A diffusers scheduler class by name (named error listing the known ones)."""
    cls = getattr(diffusers, name, None)
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        known = sorted(n for n in dir(diffusers) if n.endswith("Scheduler") and n != "BoundaryAwareScheduler")
        raise ValueError(f"inner_scheduler {name!r} is not a diffusers scheduler class; known: {', '.join(known)}")
    return cls


class BoundaryAwareScheduler(SchedulerMixin, ConfigMixin):
    r"""Official timestep spacing and x0 clip around a diffusers solver.

    Parameters:
        num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, prediction_type, clip_sample,
            clip_sample_range, set_alpha_to_one, steps_offset: the training schedule and DDIM options
            (official defaults), passed to the solver.
        inner_scheduler: class name of the diffusers solver doing the update (``"DDIMScheduler"`` official).
        inner_config: solver-only options (e.g. ``{"algorithm_type": "dpmsolver++"}``).
        timestep_spacing_mode: ``"official"``: the official spacing by re-spacing the schedule (above);
            ``"inner"``: the solver's own ``set_timesteps`` on the 1000-step schedule.
        eta: the ``eta`` given to a solver whose ``step`` takes one (DDIM's, TCD's gamma, in [0, 1]); None: the
            solver's own default (DDIM's 0, the official sampler; TCD's 0.3). Other solvers ignore it.

    The clip rule: with ``clip_sample``, x0 is clipped to ``[-clip_sample_range, clip_sample_range]``. DDIM and
    DDPM do it themselves (DDIM then re-derives the noise from the clipped x0, as official). For other solvers
    the model output is converted to x0 (epsilon or sample prediction, on the solver's alpha-bar or sigma at
    that step), clipped, and converted back before the solver sees it; for v-prediction nothing is clipped.
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
        num_train_timesteps: int = 1000,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: list[float] | None = None,
        prediction_type: str = "epsilon",
        clip_sample: bool = True,
        clip_sample_range: float = 1.0,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        inner_scheduler: str = "DDIMScheduler",
        inner_config: dict | None = None,
        timestep_spacing_mode: str = "official",
        eta: float | None = None,
    ):
        check_eta(eta, "eta")
        if timestep_spacing_mode not in ("official", "inner"):
            raise ValueError(f"timestep_spacing_mode must be 'official' or 'inner', got {timestep_spacing_mode!r}")
        schedule_inside = sorted(set(inner_config or {}) & set(SCHEDULE_DEFAULTS))
        if schedule_inside:
            raise ValueError(
                f"inner_config holds training-schedule keys {schedule_inside}: give them at the top level of the "
                "scheduler config (they are shared with the solver and with other schedulers' from_config)"
            )
        self._solver_cls = solver_class(inner_scheduler)
        self.timesteps = torch.tensor([], dtype=torch.long)
        self.num_inference_steps = None
        self._stepper = self._solver_cls.from_config(self.solver_config())
        self._model_to_inner: dict[int, int] = {}

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> FrozenDict:
        # `_use_default_values` is how diffusers marks keys another class's from_config must skip: listing this
        # wrapper's own keys there lets `X.from_config(pipe.scheduler.config)` take the schedule without an
        # "ignored config attributes" warning (`extract_init_dict` below keeps them for this class itself)
        # (schedule keys are never listed there: they are what other schedulers must take)
        config = self._internal_dict
        skipped = sorted((set(config.get("_use_default_values", [])) - set(SCHEDULE_DEFAULTS)) | set(OWN_KEYS))
        return FrozenDict({**config, "_use_default_values": skipped})

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        used = [k for k in config_dict.get("_use_default_values", []) if k not in OWN_KEYS and k not in SCHEDULE_DEFAULTS]
        return super().extract_init_dict({**config_dict, "_use_default_values": used}, **kwargs)

    def solver_config(self) -> dict:
        """The config the solver is built from: the schedule plus its own options."""
        cfg = self._internal_dict
        schedule = {k: cfg[k] for k in SCHEDULE_DEFAULTS}
        return {**schedule, **dict(cfg.get("inner_config") or {})}

    @property
    def inner(self) -> SchedulerMixin:
        """The solver on the 1000-step training schedule (kept for old code; not needed by the package)."""
        return self._solver_cls.from_config(self.solver_config())

    @classmethod
    def wrap(cls, solver: SchedulerMixin, **kwargs) -> "BoundaryAwareScheduler":
        """Wrap a diffusers scheduler (e.g. ``DPMSolverMultistepScheduler.from_config(...)``); DDIM keeps the
        official spacing, others their own. A :class:`BoundaryAwareScheduler` is returned as is."""
        if isinstance(solver, BoundaryAwareScheduler):
            return solver
        config = {k: v for k, v in dict(solver.config).items() if not k.startswith("_")}
        schedule = {k: config.pop(k) for k in list(config) if k in SCHEDULE_DEFAULTS}
        if type(solver).__name__ != "DDIMScheduler":
            schedule.setdefault("clip_sample", True)  # the official clip rule applies to every solver
        spacing = kwargs.pop("timestep_spacing_mode", "official" if type(solver).__name__ == "DDIMScheduler" else "inner")
        return cls(**schedule, inner_scheduler=type(solver).__name__, inner_config=config or None,
                   timestep_spacing_mode=spacing, **kwargs)

    @property
    def init_noise_sigma(self) -> float:
        return float(self._stepper.init_noise_sigma)

    # ------------------------------------------------------------------ timesteps
    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """Set the model timesteps (descending, on the 0..T-1 training scale)."""
        self._stepper, self._model_to_inner, self.timesteps = self.new_stepper(num_inference_steps, device)
        self.num_inference_steps = num_inference_steps

    def new_stepper(self, num_inference_steps: int, device=None) -> tuple[SchedulerMixin, dict[int, int], torch.Tensor]:
        """A fresh solver set to ``num_inference_steps``: (solver, model -> solver timestep map, model timesteps).

        The tile sampler keeps one such solver as the template of every tile's step (see
        ``teramind_hf.sampling.solver_state``).
        """
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        solver_cfg = self.solver_config()
        if self.config.timestep_spacing_mode != "official":
            stepper = self._solver_cls.from_config(solver_cfg)
            _set_solver_timesteps(stepper, num_inference_steps, device)
            return stepper, {}, stepper.timesteps.clone()
        model_steps = official_timesteps(solver_cfg["num_train_timesteps"], num_inference_steps)
        # Re-space the schedule as the official SpacedDiffusion does: the solver runs on an N-step schedule whose
        # alpha-bars are the training alpha-bars at the kept timesteps.
        full = _training_alphas_cumprod(solver_cfg)
        kept = full[model_steps]
        betas = 1 - kept / np.concatenate([[1.0], kept[:-1]])
        spaced = {**solver_cfg, "num_train_timesteps": num_inference_steps, "trained_betas": betas.tolist()}
        if "timestep_spacing" in self._solver_cls._get_init_keys(self._solver_cls):
            # every one of the N re-spaced steps, N-1 .. 0: "trailing" gives that for every solver ("leading" does
            # for DDIM, but multistep solvers compute its step ratio as N // (N + 1) = 0: all-zero timesteps)
            spaced["timestep_spacing"] = "trailing"
        spaced["steps_offset"] = 0
        stepper = self._solver_cls.from_config(spaced)
        if hasattr(stepper, "alphas_cumprod"):
            # float64 alpha-bars cast once to float32, as official (not a float32 cumprod)
            stepper.alphas_cumprod = torch.from_numpy(kept).float()
        _set_solver_timesteps(stepper, num_inference_steps, device)
        mapping = {model_steps[i]: i for i in range(num_inference_steps)}
        timesteps = torch.tensor([model_steps[int(i)] for i in stepper.timesteps.tolist()], dtype=torch.long, device=device)
        return stepper, mapping, timesteps

    def inner_timestep(self, timestep: int | torch.Tensor):
        """The solver's timestep for a model timestep."""
        if not self._model_to_inner:
            return timestep
        return self._model_to_inner[int(timestep)]

    def scale_model_input(self, sample: torch.Tensor, timestep: int | torch.Tensor | None = None) -> torch.Tensor:
        return self._stepper.scale_model_input(sample, self.inner_timestep(timestep))

    # ------------------------------------------------------------------ update
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
        return_dict: bool = True,
    ) -> BoundaryAwareSchedulerOutput | tuple:
        """One solver update of ``sample`` with the official clip rule."""
        result = self.solver_step(self._stepper, model_output, timestep, sample, generator)
        return result if return_dict else (result.prev_sample,)

    def solver_step(self, stepper, model_output, timestep, sample, generator=None, variance_noise=None) -> BoundaryAwareSchedulerOutput:
        """``stepper.step`` at model timestep ``timestep`` with the clip rule (used for whole regions and tiles);
        ``variance_noise``: the noise of a stochastic solver given instead of drawn (solvers that take it)."""
        params = _step_params(stepper)
        config = self._internal_dict  # not `config`, which builds a FrozenDict per access (this runs per batch)
        kwargs = {"generator": generator} if generator is not None and "generator" in params else {}
        if variance_noise is not None:
            kwargs["variance_noise"] = variance_noise
        # `eta` of solvers whose step takes it (DDIM's, TCD's gamma): the config's, else the solver's own default
        # (0 for DDIM: the official sampler; 0.3 for TCD)
        if "eta" in params and config.get("eta") is not None:
            kwargs["eta"] = config["eta"]
        if "use_clipped_model_output" in params:
            # official DDIM re-derives the noise from the clipped x0 before stepping
            kwargs["use_clipped_model_output"] = True
        inner_t = self.inner_timestep(timestep)
        if config["clip_sample"] and "clip_sample" not in stepper.config:
            model_output = clip_model_output(stepper, model_output, sample, inner_t, config["clip_sample_range"])
        out = stepper.step(model_output, inner_t, sample, return_dict=True, **kwargs)
        return BoundaryAwareSchedulerOutput(out.prev_sample, getattr(out, "pred_original_sample", None))

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion on the 1000-step training schedule (for training and img2img-like use)."""
        return self.inner.add_noise(original, noise, timesteps)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


def clip_model_output(stepper, model_output: torch.Tensor, sample: torch.Tensor, timestep, bound: float) -> torch.Tensor:
    """Clip the x0 implied by ``model_output`` to ``[-bound, bound]`` and return the model output implying it.

    Variance-preserving solvers (``init_noise_sigma == 1``): ``x = sqrt(ab) x0 + sqrt(1 - ab) eps`` at the
    step's alpha-bar. Sigma-parameterised solvers (Euler, ...): ``x = x0 + sigma eps`` at the step's sigma.
    v-prediction (and anything else) is returned unchanged.
    """
    prediction = stepper.config.get("prediction_type", "epsilon")
    if prediction == "sample":
        return model_output.clamp(-bound, bound)
    if prediction != "epsilon":
        return model_output
    if float(stepper.init_noise_sigma) == 1.0 and hasattr(stepper, "alphas_cumprod"):
        abar = stepper.alphas_cumprod[int(timestep)].to(sample.dtype)
        a, s = abar.sqrt(), (1 - abar).sqrt()
        # the expression ((sample - s * eps) / a).clamp(...) and then (sample - a * x0) / s, evaluated in one
        # buffer: the same operations in the same order (so the same bytes) without six temporaries per batch
        out = torch.mul(model_output, s)
        torch.sub(sample, out, out=out)
        out.div_(a).clamp_(-bound, bound)
        out.mul_(a)
        torch.sub(sample, out, out=out)
        return out.div_(s)
    sigmas = getattr(stepper, "sigmas", None)
    index = getattr(stepper, "step_index", None)
    if sigmas is None:
        return model_output
    if index is None:
        stepper._init_step_index(timestep)
        index = stepper.step_index
    sigma = sigmas[index].to(sample.dtype)
    if float(sigma) == 0:
        return model_output
    x0 = (sample - sigma * model_output).clamp(-bound, bound)
    return (sample - x0) / sigma


def check_eta(eta, name: str) -> None:
    """``eta`` (the step's stochasticity, for solvers whose ``step`` takes it) is None or a number in [0, 1]."""
    if eta is not None and (isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta <= 1):
        raise ValueError(f"{name} must be None (the solver's own default) or a number in [0, 1], got {eta!r}")


def _step_params(scheduler: SchedulerMixin) -> set[str]:
    """The parameters of ``scheduler.step`` (per class, computed once: called at every solver step)."""
    return _class_step_params(type(scheduler))


@functools.lru_cache(maxsize=None)
def _class_step_params(kind: type) -> frozenset[str]:
    return frozenset(inspect.signature(kind.step).parameters) - {"self"}


def _training_alphas_cumprod(config) -> np.ndarray:
    """Float64 alpha-bar of the training schedule (the official code builds it in float64)."""
    config = dict(config)
    if config.get("trained_betas") is not None:
        betas = np.asarray(config["trained_betas"], dtype=np.float64)
    elif config["beta_schedule"] == "linear":
        betas = np.linspace(config["beta_start"], config["beta_end"], config["num_train_timesteps"], dtype=np.float64)
    elif config["beta_schedule"] == "scaled_linear":
        betas = np.linspace(config["beta_start"] ** 0.5, config["beta_end"] ** 0.5, config["num_train_timesteps"], dtype=np.float64) ** 2
    else:
        raise ValueError(
            f"timestep_spacing_mode='official' supports linear/scaled_linear betas, got {config['beta_schedule']!r}; "
            "use timestep_spacing_mode='inner'"
        )
    return np.cumprod(1.0 - betas)
