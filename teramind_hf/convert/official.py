"""Convert the official Tera-MIND checkpoint (CTPLab/Tera-MIND, ``BeatGANsUNetModel``) to this package.

Official key names are mapped 1:1 onto :class:`GeneMorphUNet3DModel`; the only value change is the shape
of channel-RMSNorm weights, stored ``(1, C, 1, 1)`` officially and ``(C,)`` here. Anything that does not map
(unknown keys, missing keys, shape mismatches) is refused with the full list.

Also here: converters between the official tensor layouts and ours, used by parity tests and by people who
feed official data tiles straight to the model.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import torch

from ..models.unet_genemorph_3d import GeneMorphUNet3DModel, unpatchify
from ..models.weights import check_float_tensors

OFFICIAL_GENE_SLOTS = 500  # gene slots per gene slice in the official `rna` layout


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not match the model."""


# ---------------------------------------------------------------------------------------- key mapping
_RESBLOCK_RENAMES = {
    "in_layers.0.": "norm_in.",
    "in_layers.2.": "conv_in.",
    "emb_layers.1.": "time_proj.",
    "out_layers.0.": "norm_out.",
    "out_layers.3.": "conv_out.",
    "skip_connection.": "skip.",
}
_ATTN_RENAMES = {
    "norm1.": "norm1.",
    "norm2.": "norm2.",
    "attn.q.": "to_q.",
    "attn.k.": "to_k.",
    "attn.v.": "to_v.",
    "attn.proj.": "to_out.",
    "attn.q_norm.": "norm_q.",
    "attn.k_norm.": "norm_k.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
    "adaLN_modulation.1.": "adaln.",
}
_GENE_ATTN_RENAMES = {
    "attn.q.": "to_q.",
    "attn.v.": "to_v.",
    "attn.q_norm.": "norm_q.",
    "attn.proj.": "to_out.",
    "norm2.": "norm_mlp.",
    "mlp.fc1.": "mlp.fc1.",
    "mlp.fc2.": "mlp.fc2.",
}


def _rename(rest: str, renames: dict[str, str]) -> str | None:
    for old, new in renames.items():
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def _block_part(prefix: str, rest: str, kind: str) -> str | None:
    renames = _RESBLOCK_RENAMES if kind == "res" else _ATTN_RENAMES
    mapped = _rename(rest, renames)
    return None if mapped is None else prefix + mapped


def official_key_to_ours(key: str, model: GeneMorphUNet3DModel) -> str | None:
    """Our parameter name for an official key, or ``None`` when the key has no counterpart."""
    simple = {
        "time_embed.time_embed.0.": "time_embedding.linear_1.",
        "time_embed.time_embed.2.": "time_embedding.linear_2.",
        "rna_blocks.0.0.down_z.": "gene_conv_z.",
        "input_blocks.0.0.": "conv_in.",
        "out.0.": "norm_out.",
        "out.2.": "conv_out.",
    }
    for old, new in simple.items():
        if key.startswith(old):
            return new + key[len(old) :]
    if key.startswith("rna_blocks.0.0."):
        mapped = _rename(key[len("rna_blocks.0.0.") :], _GENE_ATTN_RENAMES)
        return None if mapped is None else "gene_attention." + mapped
    if m := re.fullmatch(r"rna_blocks\.(\d+)\.1\.(.+)", key):
        return f"gene_map_convs.{int(m[1]) - 1}.{m[2]}"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.(\d)\.(.+)", key):
        index, part, rest = int(m[1]) - 1, int(m[2]), m[3]
        if not 0 <= index < len(model.encoder_blocks):
            return None
        return _block_part(f"encoder_blocks.{index}.{'res' if part == 0 else 'attn'}.", rest, "res" if part == 0 else "attn")
    if m := re.fullmatch(r"middle_block\.(\d)\.(.+)", key):
        part, rest = int(m[1]), m[2]
        name = {0: "res_in", 1: "attn", 2: "res_out"}.get(part)
        return None if name is None else _block_part(f"mid_block.{name}.", rest, "attn" if part == 1 else "res")
    if m := re.fullmatch(r"output_blocks\.(\d+)\.(\d)\.(.+)", key):
        index, part, rest = int(m[1]), int(m[2]), m[3]
        if not 0 <= index < len(model.decoder_blocks):
            return None
        stage = model.decoder_blocks[index]
        # official sub-index: 0 ResBlock, then the attention if the level has one, then the up-sampler
        names = ["res"] + (["attn"] if stage.attn is not None else []) + (["upsample"] if stage.upsample is not None else [])
        if part >= len(names):
            return None
        name = names[part]
        return _block_part(f"decoder_blocks.{index}.{name}.", rest, "attn" if name == "attn" else "res")
    return None


# ---------------------------------------------------------------------------------------- reading
def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official checkpoint: Lightning ``.ckpt`` (``state_dict`` with ``model.`` prefix), a bare
    PyTorch state dict, or safetensors. Nothing in the file is ever imported or called: a ``torch.save`` zip is read
    by :func:`teramind_hf.convert.torch_zip.read_torch_zip`, whose unpickler rebuilds tensors and containers and
    turns every other object (Lightning hyper-parameters, callbacks, numpy scalars, paths, ...) into an inert
    placeholder; only the state dict is taken."""
    from .torch_zip import Inert, read_torch_zip

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own error types
            kind = "a pickle/zip (torch.save) file" if zipfile.is_zipfile(path) else "not a valid safetensors file"
            raise CheckpointError(f"{path}: expected a safetensors file, but it is {kind} ({err})") from err
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: could not be read as a PyTorch checkpoint: not a torch.save zip file (a Lightning .ckpt or .pt state dict is expected; files in torch's "
            "legacy pre-1.6 format are not read, since only the zip format can be read without unpickling code)"
        )
    try:
        obj, _ = read_torch_zip(path)
    except Exception as err:  # a damaged or crafted zip: never a traceback from deep inside pickle
        raise CheckpointError(f"{path}: could not be read as a PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if isinstance(obj, Inert) and obj.items:  # a checkpoint pickled as a dict subclass of some package
        obj = obj.items
    if isinstance(obj, dict) and "state_dict" in obj:
        obj = obj["state_dict"]
        if isinstance(obj, Inert) and obj.items:
            obj = obj.items
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors (or a Lightning 'state_dict')")
    state = {}
    for key, value in obj.items():
        if "ema_model" in key:  # Lightning keeps an EMA copy; the official test script drops it
            continue
        state[key[len("model.") :] if key.startswith("model.") else key] = value
    return state


def infer_official_config(state: dict[str, torch.Tensor]) -> dict:
    """Model config of an official state dict (widths read off the tensors; the layout is the official one)."""
    required = ["rna_blocks.0.0.down_z.weight", "input_blocks.0.0.weight", "time_embed.time_embed.0.weight"]
    absent = [k for k in required if k not in state]
    if absent:
        raise CheckpointError(f"not an official Tera-MIND UNet state dict: missing {absent}")
    base = state["input_blocks.0.0.weight"].shape[0]
    gene_maps = tuple(state[f"rna_blocks.{i}.1.weight"].shape[0] for i in (1, 2, 3) if f"rna_blocks.{i}.1.weight" in state)
    return dict(
        num_genes=state["rna_blocks.0.0.down_z.weight"].shape[0],
        block_out_channels=tuple(base * m for m in (1, 2, 4, 8)),
        time_embed_dim=state["time_embed.time_embed.0.weight"].shape[0],
        gene_map_channels=gene_maps,
    )


def convert_official_state_dict(
    state: dict[str, torch.Tensor],
    gene_names: list[str] | None = None,
    **config_overrides,
) -> GeneMorphUNet3DModel:
    """Build a :class:`GeneMorphUNet3DModel` holding an official state dict, refusing any mismatch."""
    config = {**infer_official_config(state), **config_overrides}
    if gene_names is not None:
        if len(gene_names) != config["num_genes"]:
            raise CheckpointError(
                f"gene_names lists {len(gene_names)} genes but the checkpoint has {config['num_genes']}"
            )
        config["gene_names"] = list(gene_names)
    model = GeneMorphUNet3DModel(**config)
    ours = model.state_dict()
    converted, unmapped, mismatched = {}, [], []
    for key, value in state.items():
        name = official_key_to_ours(key, model)
        if name is None or name not in ours:
            unmapped.append(key)
            continue
        if value.ndim == 4 and ours[name].ndim == 1:  # channel RMSNorm weight (1, C, 1, 1) -> (C,)
            value = value.reshape(-1)
        if tuple(value.shape) != tuple(ours[name].shape):
            mismatched.append(f"{key} {tuple(value.shape)} -> {name} {tuple(ours[name].shape)}")
            continue
        converted[name] = value
    check_float_tensors(((k, state[k]) for k in state if official_key_to_ours(k, model) in converted), "official checkpoint")
    converted = {name: value.float() for name, value in converted.items()}
    missing = sorted(set(ours) - set(converted))
    if unmapped or missing or mismatched:
        raise CheckpointError(
            "official checkpoint does not match GeneMorphUNet3DModel:\n"
            f"  unmapped/unexpected keys ({len(unmapped)}): {unmapped}\n"
            f"  missing parameters ({len(missing)}): {missing}\n"
            f"  shape mismatches ({len(mismatched)}): {mismatched}"
        )
    model.load_state_dict(converted, strict=True)
    return model.eval()


def read_gene_names(path: str | Path) -> list[str]:
    """One gene symbol per line (blank lines and ``#`` comments ignored)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"gene names file not found: {path}")
    names = [line.strip() for line in path.read_text().splitlines()]
    return [n for n in names if n and not n.startswith("#")]


def convert_official_checkpoint(
    checkpoint: str | Path,
    output_dir: str | Path,
    gene_names: list[str] | None = None,
    push_to_hub: str | None = None,
    overwrite: bool = False,
):
    """Convert an official checkpoint and write a complete pipeline folder (safetensors only)."""
    from ..hub_cards import official_model_card
    from ..pipelines.pipeline_teramind import TeraMindPipeline
    from ..schedulers.scheduling_boundary_aware import BoundaryAwareScheduler

    from ..output_guard import check_output_location, check_replaceable, remove_output
    from ..pipelines.preflight import check_output_path

    output_dir = Path(output_dir)
    check_output_location(output_dir, {"CHECKPOINT": checkpoint}, "OUT_DIR")
    check_output_path(output_dir, "OUT_DIR", "a pipeline folder")
    if output_dir.exists() and any(output_dir.iterdir()):
        if not overwrite:
            raise FileExistsError(f"output folder {output_dir} exists and is not empty (pass overwrite=True / --overwrite)")
        check_replaceable(output_dir, ["pipeline"], "OUT_DIR")  # only a pipeline folder is replaced
    unet = convert_official_state_dict(load_state_dict(checkpoint), gene_names=gene_names)
    pipe = TeraMindPipeline(unet=unet, scheduler=BoundaryAwareScheduler())
    # write beside the target, then swap it in: a failed write never leaves a half pipeline folder
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        pipe.save_pretrained(str(staging), safe_serialization=True)
        card = official_model_card(
            push_to_hub or f"<org>/{output_dir.name}", num_genes=unet.config.num_genes, checkpoint=Path(checkpoint).name
        )
        card.save(str(staging / "README.md"))
        remove_output(output_dir, ["pipeline"], "OUT_DIR")
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if push_to_hub:
        pipe.push_to_hub(push_to_hub)
    return pipe


# ---------------------------------------------------------------------------------------- layouts
def official_rna_to_genes(
    rna: torch.Tensor | tuple,
    num_genes: int,
    gene_slices: int = 4,
) -> torch.Tensor:
    """Official per-patch ``rna`` (N, hb, wb, gene_slices*500) -> ours (N, num_genes, gene_slices, hb, wb).

    ``rna`` may be dense or a ``(values, indices, shape)`` COO triplet (duplicates sum). Gene slots
    ``>= num_genes`` of every slice are dropped, as the official model does.
    """
    if isinstance(rna, (tuple, list)):
        values, indices, shape = rna
        rna = torch.sparse_coo_tensor(indices, values, tuple(int(s) for s in shape)).to_dense()
    n, hb, wb, channels = rna.shape
    slots = channels // gene_slices
    per_slice = rna.reshape(n, hb, wb, gene_slices, slots)[..., :num_genes]
    return per_slice.permute(0, 4, 3, 1, 2).contiguous()


def official_patches_to_canvas(x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Official patches (B*p1*p2, 2*stains, P, P), channel = 2*stain + z -> canvas (B, stains, 2, p1*P, p2*P)."""
    n, c, p, _ = x.shape
    return unpatchify(x.reshape(n, c // 2, 2, p, p), grid)


def canvas_to_official_patches(canvas: torch.Tensor, patch: int) -> torch.Tensor:
    """Inverse of :func:`official_patches_to_canvas`."""
    from ..models.unet_genemorph_3d import patchify

    x = patchify(canvas, patch)
    return x.reshape(x.shape[0], -1, patch, patch)


def official_genes_to_canvas(genes: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Per-patch genes (B*p1*p2, G, Zg, hb, wb) -> canvas genes (B, G, Zg, p1*hb, p2*wb)."""
    return unpatchify(genes, grid)


