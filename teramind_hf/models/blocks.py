"""Building blocks of the gene-morphology 3D UNet.

Every feature map is 5-D, ``(n, channels, z, S, S)``: the 3-D convs use the stain/feature axis as
channels and the image slices as depth. Token tensors are ``(n, tokens, features)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMSNorm along one axis (``dim``), computed in float32, no mean subtraction, no bias.

    ``dim=-1`` normalises token features; ``dim=1`` normalises the channels of a 5-D map per voxel.
    """

    def __init__(self, num_features: int, eps: float = 1e-6, dim: int = -1):
        super().__init__()
        self.eps = eps
        self.dim = dim
        self.weight = nn.Parameter(torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(dim=self.dim, keepdim=True) + self.eps)
        weight = self.weight.float()
        if self.dim == 1:
            weight = weight.view(1, -1, *([1] * (x.ndim - 2)))
        return (x * weight).to(dtype)


class Mlp(nn.Module):
    """Linear -> GELU(tanh) -> Linear."""

    def __init__(self, in_features: int, hidden_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def upsample_hw(x: torch.Tensor) -> torch.Tensor:
    """Nearest x2 in h and w only; z (the slices) is never resampled."""
    return F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest")


def downsample_hw(x: torch.Tensor) -> torch.Tensor:
    """Average pool 2x2 in h and w only.

    Written as the sum of the four strided views rather than ``F.avg_pool3d``, which has no bfloat16/float16
    kernel on CPU. The sum is taken in float32 (at least), in avg_pool3d's order, so float32 results are
    bit-identical to ``avg_pool3d`` and low-precision ones are rounded once; works for any memory layout.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    total = x[..., 0::2, 0::2].to(acc) + x[..., 0::2, 1::2].to(acc)
    total = total + x[..., 1::2, 0::2].to(acc) + x[..., 1::2, 1::2].to(acc)
    return (total / 4).to(x.dtype)


class GeneGeneAttention(nn.Module):
    """3D gene-gene self-attention (paper Eq. 1): genes are tokens, a token is the gene's local counts.

    One head, the key is the (normalised) query itself, so the gene x gene logits are symmetric and can be
    read as interaction strengths. No residuals: the block maps raw counts to a gene embedding.
    """

    def __init__(self, token_dim: int, mlp_ratio: int = 4, eps: float = 1e-6):
        super().__init__()
        self.to_q = nn.Linear(token_dim, token_dim)
        self.to_v = nn.Linear(token_dim, token_dim)
        self.norm_q = RMSNorm(token_dim, eps)
        self.to_out = nn.Linear(token_dim, token_dim)
        self.norm_mlp = RMSNorm(token_dim, eps)
        self.mlp = Mlp(token_dim, mlp_ratio * token_dim)

    def attention_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Softmax-normalised gene-gene attention ``(n, genes, genes)`` (for interpretation)."""
        q = self.norm_q(self.to_q(tokens))
        return torch.softmax(q @ q.transpose(-1, -2) / q.shape[-1], dim=-1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        q = self.norm_q(self.to_q(tokens))
        v = self.to_v(tokens)
        # scale 1/D: the official code pre-scales q by D^-1/2 and the attention adds another D^-1/2.
        out = F.scaled_dot_product_attention(q, q, v, scale=1.0 / q.shape[-1])
        return self.mlp(self.norm_mlp(self.to_out(out)))


class ResBlock(nn.Module):
    """Residual block with timestep scale/shift (AdaLN on channels) and optional h,w resampling."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        time_embed_dim: int,
        dropout: float = 0.0,
        resample: str | None = None,
        eps: float = 1e-6,
    ):
        super().__init__()
        if resample not in (None, "down", "up"):
            raise ValueError(f"resample must be None, 'down' or 'up', got {resample!r}")
        self.resample = resample
        self.norm_in = RMSNorm(in_channels, eps, dim=1)
        self.conv_in = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_proj = nn.Linear(time_embed_dim, 2 * out_channels)
        self.norm_out = RMSNorm(out_channels, eps, dim=1)
        self.dropout = nn.Dropout(dropout)
        self.conv_out = nn.Conv3d(out_channels, out_channels, kernel_size=3, padding=1)
        # zero-initialised as in the official model: a fresh block starts as its skip path
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)
        self.skip = nn.Conv3d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return downsample_hw(x)
        if self.resample == "up":
            return upsample_hw(x)
        return x

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm_in(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv_in(h)
        scale, shift = self.time_proj(F.silu(temb)).chunk(2, dim=1)
        scale, shift = scale[:, :, None, None, None], shift[:, :, None, None, None]
        h = F.silu(self.norm_out(h) * (1 + scale) + shift)
        h = self.conv_out(self.dropout(h))
        return (x if self.skip is None else self.skip(x)) + h


def to_windows(x: torch.Tensor, windows: int) -> torch.Tensor:
    """(n, C, Z, S, S) -> (n * windows^2, Z * (S/windows)^2, C): spatial windows spanning all z."""
    n, c, z, h, w = x.shape
    x = x.reshape(n, c, z, windows, h // windows, windows, w // windows)
    x = x.permute(0, 3, 5, 2, 4, 6, 1)  # n, wi, wj, z, y, x, c
    return x.reshape(n * windows * windows, z * (h // windows) * (w // windows), c)


def from_windows(x: torch.Tensor, windows: int, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`to_windows` for a map of ``shape`` (n, C', Z, S, S) (C' from ``x``)."""
    n, _, z, h, w = shape
    c = x.shape[-1]
    x = x.reshape(n, windows, windows, z, h // windows, w // windows, c)
    x = x.permute(0, 6, 3, 1, 4, 2, 5)  # n, c, z, wi, y, wj, x
    return x.reshape(n, c, z, h, w)


class GeneMorphAttention(nn.Module):
    """Gene-conditioned attention block (paper Eq. 2).

    A per-voxel AdaLN from the gene map gives (shift, scale, gate) for the attention and the MLP, and a
    ``cross`` feature that is the only source of keys and values. Attention runs in 2x2 spatial windows
    that span both image slices. No time conditioning.
    """

    def __init__(
        self,
        channels: int,
        gene_channels: int,
        mlp_ratio: int = 4,
        windows: int = 2,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.windows = windows
        self.norm1 = RMSNorm(channels, eps)
        self.norm2 = RMSNorm(channels, eps)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.norm_q = RMSNorm(channels, eps)
        self.norm_k = RMSNorm(channels, eps)
        self.to_out = nn.Linear(channels, channels)
        self.mlp = Mlp(channels, mlp_ratio * channels)
        self.adaln = nn.Linear(gene_channels, 7 * channels)

    def forward(self, hidden: torch.Tensor, gene_map: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        x = to_windows(hidden, self.windows)
        cond = to_windows(gene_map, self.windows)
        shift_a, scale_a, gate_a, cross, shift_m, scale_m, gate_m = self.adaln(F.silu(cond)).chunk(7, dim=-1)

        q = self.norm_q(self.to_q(self.norm1(x) * (1 + scale_a) + shift_a))
        k = self.norm_k(self.to_k(cross))
        v = self.to_v(cross)
        attn = F.scaled_dot_product_attention(q, k, v, scale=1.0 / q.shape[-1])
        x = x + gate_a * self.to_out(attn)
        x = x + gate_m * self.mlp(self.norm2(x) * (1 + scale_m) + shift_m)
        return from_windows(x, self.windows, shape)
