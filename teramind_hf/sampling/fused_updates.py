"""DPM-Solver++ x0 conversion and updates evaluated in place: the same products and sums as diffusers', in one or two
buffers instead of three or eight.

diffusers' ``DPMSolverMultistepScheduler`` writes each update as one expression over whole tensors (for the SDE
second-order midpoint update: ``c1 * x + c2 * D0 + c3 * D1 + c4 * noise`` with ``D1 = (1 / r0) * (m0 - m1)``), so
every product and every partial sum is a fresh tensor of the sample's size. On a batch of tiles those fresh
allocations (new pages each time, the kernel zeroing them) cost about as much as the arithmetic. The functions here
compute the scalar coefficients with diffusers' own expressions and apply them to the tensors in the same order,
into one output and one scratch tensor: ``a + b`` and ``a.add_(b)`` round identically, so the result is the same
bytes.

:func:`install` turns a scheduler into :class:`InPlaceDPMSolverMultistepScheduler`, a subclass overriding only
the epsilon-to-x0 conversion and these two updates; the rest of ``step`` (history, step index) stays diffusers'
code.
:class:`~.solver_state.TileSolver` installs them only after replaying every step both ways and finding identical
bytes (a diffusers release that changes the update is then simply not accelerated).
"""

from __future__ import annotations

import torch
from diffusers import DPMSolverMultistepScheduler

SUPPORTED_ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")


def _alpha_sigma_lambda(stepper, index: int):
    alpha, sigma = stepper._sigma_to_alpha_sigma_t(stepper.sigmas[index])
    return alpha, sigma, torch.log(alpha) - torch.log(sigma)


def _accumulate(out: torch.Tensor, scratch: torch.Tensor, sign: str) -> None:
    out.add_(scratch) if sign == "+" else out.sub_(scratch)


def first_order_update(self, model_output: torch.Tensor, *args, sample: torch.Tensor = None, noise: torch.Tensor = None, **kwargs):
    """DPM-Solver++ (and its SDE variant) first-order update, in place (diffusers' coefficients and order)."""
    alpha_t, sigma_t, lambda_t = _alpha_sigma_lambda(self, self.step_index + 1)
    _, sigma_s, lambda_s = _alpha_sigma_lambda(self, self.step_index)
    h = lambda_t - lambda_s
    sde = self.config.algorithm_type == "sde-dpmsolver++"
    if sde:
        c_sample, sign, c_output = sigma_t / sigma_s * torch.exp(-h), "+", alpha_t * (1 - torch.exp(-2.0 * h))
    else:
        c_sample, sign, c_output = sigma_t / sigma_s, "-", alpha_t * (torch.exp(-h) - 1.0)
    out = torch.mul(sample, c_sample)
    scratch = torch.mul(model_output, c_output)
    _accumulate(out, scratch, sign)
    if sde:
        torch.mul(noise, sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)), out=scratch)
        out.add_(scratch)
    return out


def second_order_update(self, model_output_list: list[torch.Tensor], *args, sample: torch.Tensor = None, noise: torch.Tensor = None, **kwargs):
    """DPM-Solver++ (and its SDE variant) second-order multistep midpoint update, in place."""
    alpha_t, sigma_t, lambda_t = _alpha_sigma_lambda(self, self.step_index + 1)
    _, sigma_s0, lambda_s0 = _alpha_sigma_lambda(self, self.step_index)
    _, _, lambda_s1 = _alpha_sigma_lambda(self, self.step_index - 1)
    m0, m1 = model_output_list[-1], model_output_list[-2]
    h, h_0 = lambda_t - lambda_s0, lambda_s0 - lambda_s1
    r0 = h_0 / h
    sde = self.config.algorithm_type == "sde-dpmsolver++"
    if sde:
        c_sample, sign = sigma_t / sigma_s0 * torch.exp(-h), "+"
        c_d0 = alpha_t * (1 - torch.exp(-2.0 * h))
        c_d1 = 0.5 * (alpha_t * (1 - torch.exp(-2.0 * h)))
    else:
        c_sample, sign = sigma_t / sigma_s0, "-"
        c_d0 = alpha_t * (torch.exp(-h) - 1.0)
        c_d1 = 0.5 * (alpha_t * (torch.exp(-h) - 1.0))
    out = torch.mul(sample, c_sample)
    scratch = torch.mul(m0, c_d0)  # D0 = m0
    _accumulate(out, scratch, sign)
    # D1 = (1 / r0) * (m0 - m1), times its coefficient: c * (s * d) and (d * s) * c round alike
    torch.sub(m0, m1, out=scratch)
    scratch.mul_(1.0 / r0).mul_(c_d1)
    _accumulate(out, scratch, sign)
    if sde:
        torch.mul(noise, sigma_t * torch.sqrt(1.0 - torch.exp(-2 * h)), out=scratch)
        out.add_(scratch)
    return out


def convert_model_output(self, model_output: torch.Tensor, *args, sample: torch.Tensor = None, **kwargs):
    """DPM-Solver++'s x0 from an epsilon output, ``(sample - sigma_t * eps) / alpha_t``, in one buffer; any other
    configuration (or a call without ``sample`` as a keyword) goes to diffusers' own conversion."""
    config = self._internal_dict  # not `config`, a new FrozenDict per access (this runs per batch)
    if (sample is None or args or kwargs or config["prediction_type"] != "epsilon" or config["thresholding"]
            or config["variance_type"] in ("learned", "learned_range")):
        return DPMSolverMultistepScheduler.convert_model_output(self, model_output, *args, sample=sample, **kwargs)
    alpha_t, sigma_t = self._sigma_to_alpha_sigma_t(self.sigmas[self.step_index])
    out = torch.mul(model_output, sigma_t)
    torch.sub(sample, out, out=out)
    return out.div_(alpha_t)


class InPlaceDPMSolverMultistepScheduler(DPMSolverMultistepScheduler):
    """diffusers' DPM-Solver++ multistep scheduler with its x0 conversion and its first- and second-order updates
    evaluated in place."""

    convert_model_output = convert_model_output
    dpm_solver_first_order_update = first_order_update
    multistep_dpm_solver_second_order_update = second_order_update


def supports(stepper) -> bool:
    """Whether ``stepper`` is a DPM-Solver++ multistep scheduler whose updates these functions cover."""
    config = stepper.config
    return (
        type(stepper) is DPMSolverMultistepScheduler
        and config.algorithm_type in SUPPORTED_ALGORITHMS
        and config.solver_type == "midpoint"
        and config.solver_order <= 2
    )


def install(stepper) -> None:
    """Make ``stepper`` (a :func:`supports` scheduler) evaluate its updates in place (copies of it do too)."""
    stepper.__class__ = InPlaceDPMSolverMultistepScheduler


def uninstall(stepper) -> None:
    stepper.__class__ = DPMSolverMultistepScheduler
