"""GeneMorphUNet3DModel: the Tera-MIND gene-conditioned, boundary-aware 3D UNet.

The model works on *canvases* made of ``p1 x p2`` square patches of ``sample_size`` px. The encoder and
the per-patch decoder see each patch on its own (convolutions zero-pad at patch borders, exactly as the
official model). The *collage* decoder re-runs the decoder on features stitched from neighbouring
patches and cropped by half a patch, so it predicts the ``(p1-1) x (p2-1)`` patches offset by half a
patch: on a tile plus a half-patch halo it returns exactly the tile, seamlessly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

from .blocks import GeneGeneAttention, GeneMorphAttention, RMSNorm, ResBlock, upsample_hw
from .patch_reuse import PatchReuse

PATHS = ("collage", "patch", "both")


@dataclass
class GeneMorphUNet3DOutput(BaseOutput):
    """Output of :class:`GeneMorphUNet3DModel`.

    Args:
        sample: ``(B, stains, Z, H - P, W - P)`` collage prediction (``path="collage"``/``"both"``), or
            ``(B, stains, Z, H, W)`` per-patch prediction (``path="patch"``).
        patch_sample: per-patch prediction ``(B, stains, Z, H, W)`` when ``path="both"``.
    """

    sample: torch.Tensor
    patch_sample: torch.Tensor | None = None


def patchify(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, Z, p1*size, p2*size) -> (B*p1*p2, C, Z, size, size), patches in (b, p1, p2) order."""
    b, c, z, h, w = x.shape
    p1, p2 = h // size, w // size
    x = x.reshape(b, c, z, p1, size, p2, size).permute(0, 3, 5, 1, 2, 4, 6)
    return x.reshape(b * p1 * p2, c, z, size, size)


def unpatchify(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B*p1*p2, C, Z, S, S) -> (B, C, Z, p1*S, p2*S)."""
    p1, p2 = grid
    n, c, z, s, _ = x.shape
    x = x.reshape(n // (p1 * p2), p1, p2, c, z, s, s).permute(0, 3, 4, 1, 5, 2, 6)
    return x.reshape(n // (p1 * p2), c, z, p1 * s, p2 * s)


def collage(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Stitch each window's patches, crop half a patch on every side, cut into (p1-1) x (p2-1) patches.

    Collage patch (q1, q2) covers stitched rows ``[S/2 + q1*S, S/2 + (q1+1)*S)`` (same for columns).
    """
    s = x.shape[-1]
    stitched = unpatchify(x, grid)
    cropped = stitched[..., s // 2 : stitched.shape[-2] - s // 2, s // 2 : stitched.shape[-1] - s // 2]
    return patchify(cropped, s)


class UNetStage(nn.Module):
    """One UNet step: a ResBlock, then optionally gene-conditioned attention and/or an up-sampling ResBlock."""

    def __init__(self, res: ResBlock, attn: GeneMorphAttention | None = None, upsample: ResBlock | None = None):
        super().__init__()
        self.res = res
        self.attn = attn
        self.upsample = upsample

    def forward(self, h: torch.Tensor, temb: torch.Tensor, gene_map: torch.Tensor) -> torch.Tensor:
        h = self.res(h, temb)
        if self.attn is not None:
            h = self.attn(h, gene_map)
        if self.upsample is not None:
            h = self.upsample(h, temb)
        return h


class MidBlock(nn.Module):
    def __init__(self, channels: int, gene_channels: int, time_embed_dim: int, dropout: float, eps: float, **attn_kw):
        super().__init__()
        self.res_in = ResBlock(channels + gene_channels, channels, time_embed_dim, dropout, eps=eps)
        self.attn = GeneMorphAttention(channels, gene_channels, eps=eps, **attn_kw)
        self.res_out = ResBlock(channels, channels, time_embed_dim, dropout, eps=eps)

    def forward(self, h: torch.Tensor, temb: torch.Tensor, gene_map: torch.Tensor) -> torch.Tensor:
        h = self.res_in(torch.cat([h, gene_map], dim=1), temb)
        h = self.attn(h, gene_map)
        return self.res_out(h, temb)


class ConfigFieldError(ValueError):
    """A model config field with a value the model cannot be built from (named)."""


class GeneMorphUNet3DModel(ModelMixin, ConfigMixin):
    r"""Gene-conditioned 3D UNet with a gene-gene attention front-end and a boundary-aware collage decoder.

    Parameters:
        in_channels / out_channels: stains (DAPI, PolyT).
        sample_size: patch size in px (64 official).
        num_slices: image slices per chunk (2); ``gene_slices`` gene slices condition them (4).
        num_genes: gene panel size (229 official); ``gene_names`` the ordered panel, stored in the config.
        gene_bin: px per gene bin (16 official). Must equal ``2 ** len(block_out_channels)`` so that the
            deepest UNet level sits at twice the gene-bin grid, as in the official model.
        block_out_channels: UNet widths per level, finest first.
        layers_per_block: ResBlocks per encoder level (the decoder has one more).
        time_embed_dim: width of the timestep embedding.
        attention_levels: levels (0 = finest) that get gene-conditioned attention; the middle always does.
        gene_map_channels: widths of the multi-scale gene maps, coarse to fine, below the gene-token level.
        dropout: ResBlock dropout (0.1 official, training only).
        attention_windows: windows per side in the gene-conditioned attention (2 -> 2x2 quadrants).
        mlp_ratio: hidden/feature ratio of every MLP.
    """

    _supports_gradient_checkpointing = False

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' ``from_pretrained`` from safetensors only (nothing unpickled), refusing integer or non-finite
        weights (named) instead of casting them; the weights end up 64-byte aligned on the CPU, as in a model built
        in memory, so that a saved and reloaded model samples the same bytes (:func:`.weights.align_cpu_tensors`)."""
        from pathlib import Path

        from .weights import align_cpu_tensors, check_float_tensors, check_safetensors_dtypes

        if kwargs.get("use_safetensors") is False:
            raise ValueError("use_safetensors=False: pickled (.bin) weights are never loaded; convert them to safetensors")
        kwargs["use_safetensors"] = True
        folder = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
        for file in sorted(folder.glob("*.safetensors")) if folder.is_dir() else ():
            check_safetensors_dtypes(file)
        try:
            model = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        except ConfigFieldError as err:  # a config value this model refuses: name the file
            raise ConfigFieldError(f"{folder / 'config.json'}: {err}") from err
        check_float_tensors(model.state_dict().items(), source=str(folder))
        align_cpu_tensors(model)
        return model

    def to(self, *args, **kwargs):
        # diffusers' ModelMixin.to logs "modules ... should be kept in float32: []" on every dtype cast, even for a
        # model without such modules (it tests `[] is not None`); this model keeps none, so cast as torch does
        if self._keep_in_fp32_modules:
            return super().to(*args, **kwargs)
        return nn.Module.to(self, *args, **kwargs)

    @register_to_config
    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        sample_size: int = 64,
        num_slices: int = 2,
        gene_slices: int = 4,
        num_genes: int = 229,
        gene_names: list[str] | None = None,
        gene_bin: int = 16,
        block_out_channels: tuple[int, ...] = (64, 128, 256, 512),
        layers_per_block: int = 2,
        time_embed_dim: int = 512,
        attention_levels: tuple[int, ...] = (2,),
        gene_map_channels: tuple[int, ...] = (128, 64, 32),
        dropout: float = 0.1,
        norm_eps: float = 1e-6,
        attention_windows: int = 2,
        mlp_ratio: int = 4,
    ):
        super().__init__()
        levels = len(block_out_channels)
        for name, value in (("num_genes", num_genes), ("gene_bin", gene_bin), ("sample_size", sample_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigFieldError(f"model config field {name!r} must be a whole number >= 1, got {value!r} ({type(value).__name__})")
        if gene_names is not None and (not isinstance(gene_names, (list, tuple)) or not all(isinstance(n, str) for n in gene_names)):
            raise ConfigFieldError(f"model config field 'gene_names' must be a list of gene symbols (strings), got {str(gene_names)[:80]}")
        if gene_names is not None and len(gene_names) != num_genes:
            raise ConfigFieldError(f"model config: gene_names has {len(gene_names)} names but num_genes is {num_genes}")
        if gene_bin != 2**levels:
            raise ConfigFieldError(f"gene_bin must be 2 ** len(block_out_channels) = {2 ** levels}, got {gene_bin}")
        if sample_size % gene_bin:
            raise ConfigFieldError(f"sample_size {sample_size} must be a multiple of gene_bin {gene_bin}")
        if gene_slices != num_slices + 2:
            raise ConfigFieldError(f"gene_slices must be num_slices + 2 (a 3-deep z conv), got {gene_slices}, {num_slices}")
        if len(gene_map_channels) != levels - 1:
            raise ConfigFieldError(f"gene_map_channels needs {levels - 1} widths, got {len(gene_map_channels)}")

        base = block_out_channels[0]
        bins = sample_size // gene_bin
        attn_kw = dict(mlp_ratio=mlp_ratio, windows=attention_windows)
        # gene-map width per level, finest first: gene_map_channels fine..coarse, then the gene tokens
        self.level_gene_channels = [*reversed(gene_map_channels), num_genes]

        self.time_proj = Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(base, time_embed_dim)

        self.gene_attention = GeneGeneAttention(gene_slices * bins * bins, mlp_ratio, norm_eps)
        self.gene_conv_z = nn.Conv3d(num_genes, num_genes, kernel_size=3, padding=(0, 1, 1))
        widths = [num_genes, *gene_map_channels]
        self.gene_map_convs = nn.ModuleList(
            nn.Conv3d(widths[i], widths[i + 1], kernel_size=(1, 3, 3), padding=(0, 1, 1))
            for i in range(levels - 1)
        )

        self.conv_in = nn.Conv3d(in_channels, base, kernel_size=(1, 3, 3), padding=(0, 1, 1))

        def res(cin: int, cout: int, resample: str | None = None) -> ResBlock:
            return ResBlock(cin, cout, time_embed_dim, dropout, resample, norm_eps)

        # encoder: per level, layers_per_block gene-concat ResBlocks (+attention), then a down ResBlock
        self.encoder_blocks = nn.ModuleList()
        self.encoder_levels: list[int] = []
        self.encoder_uses_genes: list[bool] = []
        skip_channels = [base]
        ch = base
        for level, width in enumerate(block_out_channels):
            for _ in range(layers_per_block):
                attn = GeneMorphAttention(width, self.level_gene_channels[level], eps=norm_eps, **attn_kw)
                self.encoder_blocks.append(
                    UNetStage(res(ch + self.level_gene_channels[level], width), attn if level in attention_levels else None)
                )
                self.encoder_levels.append(level)
                self.encoder_uses_genes.append(True)
                ch = width
                skip_channels.append(ch)
            if level != levels - 1:
                self.encoder_blocks.append(UNetStage(res(ch, ch, "down")))
                self.encoder_levels.append(level)
                self.encoder_uses_genes.append(False)
                skip_channels.append(ch)

        self.mid_block = MidBlock(ch, num_genes, time_embed_dim, dropout, norm_eps, **attn_kw)

        # decoder: per level (coarse first), layers_per_block + 1 ResBlocks on cat(h, skip, genes)
        self.decoder_blocks = nn.ModuleList()
        self.decoder_levels: list[int] = []
        for level in reversed(range(levels)):
            width = block_out_channels[level]
            for i in range(layers_per_block + 1):
                cin = ch + skip_channels.pop() + self.level_gene_channels[level]
                attn = None
                if level in attention_levels:
                    attn = GeneMorphAttention(width, self.level_gene_channels[level], eps=norm_eps, **attn_kw)
                upsample = res(width, width, "up") if (level != 0 and i == layers_per_block) else None
                self.decoder_blocks.append(UNetStage(res(cin, width), attn, upsample))
                self.decoder_levels.append(level)
                ch = width

        self.norm_out = RMSNorm(base, norm_eps, dim=1)
        self.conv_out = nn.Conv3d(base, out_channels, kernel_size=(1, 3, 3), padding=(0, 1, 1))

    # ------------------------------------------------------------------ gene branch
    def gene_tokens(self, gene_patches: torch.Tensor) -> torch.Tensor:
        """(N, G, gene_slices, b, b) counts -> (N, G, gene_slices*b*b) tokens, features in (z, h, w) order."""
        return gene_patches.flatten(2)

    def encode_genes(self, gene_patches: torch.Tensor) -> list[torch.Tensor]:
        """Multi-scale gene maps, finest level first: ``[(N, ch_l, num_slices, S_l, S_l) for each level]``."""
        n, g, zg, b, _ = gene_patches.shape
        embedded = self.gene_attention(self.gene_tokens(gene_patches)).reshape(n, g, zg, b, b)
        gene_map = upsample_hw(self.gene_conv_z(embedded))
        maps = [gene_map]
        for conv in self.gene_map_convs:
            # the maps used downstream are taken before the SiLU that feeds the next conv
            gene_map = upsample_hw(conv(F.silu(gene_map)))
            maps.append(gene_map)
        return maps[::-1]

    def gene_attention_maps(self, genes: torch.Tensor) -> torch.Tensor:
        """Gene x gene attention per patch: genes ``(B, G, gene_slices, Hb, Wb)`` -> ``(B*p1*p2, G, G)``."""
        bins = self.config.sample_size // self.config.gene_bin
        tokens = self.gene_tokens(patchify(genes.to(self.dtype), bins))
        return self.gene_attention.attention_logits(tokens)

    # ------------------------------------------------------------------ UNet
    def _encode(
        self, x: torch.Tensor, gene_patches: torch.Tensor, temb_patch: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The patch-local part, each patch alone: (mid-block output, encoder skips, gene maps)."""
        gene_maps = self.encode_genes(gene_patches)
        h = self.conv_in(x)
        skips = [h]
        for stage, level, uses_genes in zip(self.encoder_blocks, self.encoder_levels, self.encoder_uses_genes):
            h = stage(torch.cat([h, gene_maps[level]], dim=1) if uses_genes else h, temb_patch, gene_maps[level])
            skips.append(h)
        return self.mid_block(h, temb_patch, gene_maps[-1]), skips, gene_maps

    def _decode(
        self,
        h: torch.Tensor,
        skips: list[torch.Tensor],
        gene_maps: list[torch.Tensor],
        temb: torch.Tensor,
    ) -> torch.Tensor:
        skips = list(skips)
        for stage, level in zip(self.decoder_blocks, self.decoder_levels):
            h = stage(torch.cat([h, skips.pop(), gene_maps[level]], dim=1), temb, gene_maps[level])
        return self.conv_out(F.silu(self.norm_out(h)))

    def _check_inputs(self, sample: torch.Tensor, genes: torch.Tensor, path: str) -> tuple[int, int]:
        cfg = self.config
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        if sample.ndim != 5 or sample.shape[1] != cfg.in_channels or sample.shape[2] != cfg.num_slices:
            raise ValueError(
                f"sample must be (B, {cfg.in_channels} stains, {cfg.num_slices} slices, H, W), got {tuple(sample.shape)}"
            )
        b, _, _, height, width = sample.shape
        if height % cfg.sample_size or width % cfg.sample_size:
            raise ValueError(f"sample H, W must be multiples of sample_size={cfg.sample_size}, got {height}x{width}")
        expected = (b, cfg.num_genes, cfg.gene_slices, height // cfg.gene_bin, width // cfg.gene_bin)
        if tuple(genes.shape) != expected:
            raise ValueError(f"genes must have shape {expected} (B, genes, gene slices, H/bin, W/bin), got {tuple(genes.shape)}")
        grid = (height // cfg.sample_size, width // cfg.sample_size)
        if path != "patch" and min(grid) < 2:
            raise ValueError(f"the collage path needs at least 2x2 patches, got a {grid[0]}x{grid[1]} canvas")
        return grid

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        genes: torch.Tensor,
        path: str = "collage",
        return_dict: bool = True,
        patch_ids: torch.Tensor | None = None,
    ) -> GeneMorphUNet3DOutput | tuple:
        r"""Predict the noise of a canvas.

        Args:
            sample: ``(B, stains, num_slices, p1*P, p2*P)`` noisy morphology, P = ``sample_size``.
            timestep: ``(B,)`` or a scalar, on the training scale (0..999).
            genes: ``(B, num_genes, gene_slices, p1*P/gene_bin, p2*P/gene_bin)`` raw counts.
            path: ``"collage"`` (inference: only the boundary-aware path, ``(B, stains, Z, H-P, W-P)``, the
                canvas minus half a patch on every side), ``"patch"`` (each patch alone, same size as the
                input) or ``"both"`` (training: collage in ``sample``, per-patch in ``patch_sample``).
            patch_ids: optional ``(B, p1, p2)`` integer id per patch (encoder reuse, :mod:`.patch_reuse`). Patches
                with the same id are encoded once (encoder, mid block, gene maps) and the result is shared: ids are
                only equal where sample, genes and timestep are (checked; a ValueError otherwise). The decoders
                still run on every canvas. None (default): every patch is encoded.
        """
        grid = self._check_inputs(sample, genes, path)
        cfg = self.config
        batch = sample.shape[0]
        timestep = torch.as_tensor(timestep, device=sample.device)
        if timestep.ndim == 0:
            # one embedding row for a shared timestep: a 1-row matmul is computed the same way whatever the
            # batch size, so results do not depend on how many canvases are batched together
            temb = self.time_embedding(self.time_proj(timestep[None]).to(self.dtype)).expand(batch, -1)
        else:
            if timestep.shape != (batch,):
                raise ValueError(f"timestep must be a scalar or have shape ({batch},), got {tuple(timestep.shape)}")
            temb = self.time_embedding(self.time_proj(timestep).to(self.dtype))

        x = patchify(sample.to(self.dtype), cfg.sample_size)
        gene_patches = patchify(genes.to(self.dtype), cfg.sample_size // cfg.gene_bin)
        patches_per_canvas = grid[0] * grid[1]
        temb_patch = temb.repeat_interleave(patches_per_canvas, dim=0)
        if patch_ids is None:
            h, skips, gene_maps = self._encode(x, gene_patches, temb_patch)
        else:
            reuse = PatchReuse(torch.as_tensor(patch_ids, device=sample.device), grid, batch)
            reuse.check_shared("noisy sample", x)
            reuse.check_shared("genes", gene_patches)
            if timestep.ndim:
                reuse.check_shared("timestep", timestep.repeat_interleave(patches_per_canvas))
            h, skips, gene_maps = self._encode(reuse.unique(x), reuse.unique(gene_patches), reuse.unique(temb_patch))
            h, skips, gene_maps = reuse.expand(h), [reuse.expand(s) for s in skips], [reuse.expand(g) for g in gene_maps]

        patch_out = collage_out = None
        if path in ("patch", "both"):
            patch_out = unpatchify(self._decode(h, skips, gene_maps, temb_patch), grid)
        if path in ("collage", "both"):
            collage_grid = (grid[0] - 1, grid[1] - 1)
            temb_collage = temb.repeat_interleave(collage_grid[0] * collage_grid[1], dim=0)
            out = self._decode(
                collage(h, grid),
                [collage(s, grid) for s in skips],
                [collage(g, grid) for g in gene_maps],
                temb_collage,
            )
            collage_out = unpatchify(out, collage_grid)

        main = collage_out if collage_out is not None else patch_out
        extra = patch_out if path == "both" else None
        if not return_dict:
            return (main,) if extra is None else (main, extra)
        return GeneMorphUNet3DOutput(sample=main, patch_sample=extra)
