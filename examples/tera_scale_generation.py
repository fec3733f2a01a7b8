"""Tera-scale generation: stream a region into a resumable OME-Zarr image with `teramind generate`.

    python examples/tera_scale_generation.py                          # 1024 x 1024 px x 2 sections, 15 steps
    python examples/tera_scale_generation.py --size 512 --steps 2 --out /tmp/tera   # smoke run
    python examples/tera_scale_generation.py --processes 2            # tiles split over 2 processes (accelerate)
    python examples/tera_scale_generation.py --api                    # the Python API instead of the command

The command it runs is the one for a whole brain; only the input is small here:

    teramind generate --genes region.zarr --out brain.ome.zarr --steps 15 --seed 0
    accelerate launch --multi_gpu --num_processes N -m teramind_hf.cli generate ...   # multi-process (CPU: gloo)

Sampling is synchronous over the tile grid with two step buffers (memory does not grow with the region);
a killed run continues where it stopped when the same command is run again, and gives the same bytes.
Writes ``<out>/region.zarr`` (the gene store), ``<out>/brain.ome.zarr`` (NGFF 0.5, ``c, z, y, x`` uint8,
with a pyramid) and ``<out>/overview.png`` (section 0 at full resolution and at the coarsest level).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_MODEL_UM_PER_PX, save_panels, subprocess_env  # noqa: E402

from teramind_hf.data import make_phantom  # noqa: E402
from teramind_hf.data.datasets import write_training_store  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="pipeline folder or Hub repo id (default: embedded model)")
    parser.add_argument("--size", type=int, default=1024, help="region side in px (multiple of 256)")
    parser.add_argument("--sections", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15, help="denoising steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=4, help="tile canvases per model call")
    parser.add_argument("--processes", type=int, default=1, help=">1: `accelerate launch --multi_gpu --num_processes N`")
    parser.add_argument("--api", action="store_true", help="call teramind_hf.pipelines.streaming.generate_to_zarr")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:INDEX or mps (default: each process's GPU "
                        "under accelerate, else cuda if available, else mps, else cpu)")
    parser.add_argument("--out", default="tera_scale_out", help="output folder")
    return parser.parse_args(argv)


def write_gene_store(path: Path, size: int, sections: int) -> Path:
    """The input: a zarr group with ``genes`` (G, Z, H/16, W/16), ``gene_names`` and ``um_per_px``.

    Real data come from the readers (`teramind_hf.data.readers`: MERSCOPE runs, transcript tables,
    official tiles) and `teramind_hf.data.datasets.write_training_store`; here a phantom stands in.
    """
    if path.exists():
        shutil.rmtree(path)
    tissue = make_phantom(size, size, num_slices=sections, seed=5, um_per_px=DEFAULT_MODEL_UM_PER_PX)
    return write_training_store(tissue.to_volume(), path)


def free_port() -> int:
    """A free local TCP port for the process group (so concurrent runs do not collide on 29500)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def generate_command(args: argparse.Namespace, genes: Path, out: Path) -> list[str]:
    """`teramind generate ...` (as ``python -m teramind_hf.cli``), under accelerate for several processes."""
    options = [
        "generate", "--genes", str(genes), "--out", str(out), "--steps", str(args.steps), "--seed", str(args.seed),
        "--batch-size", str(args.batch_size), "--report-json", str(out.parent / "report.json"), "--quiet",
    ]
    if args.model:
        options += ["--model", args.model]
    if args.device:
        options += ["--device", args.device]
    if args.processes > 1:
        # `--multi_gpu` is accelerate's multi-process launcher; on a CPU-only machine the processes form a
        # gloo group (see teramind_hf.pipelines.streaming)
        launch = [
            sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(args.processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(free_port()),
        ]
        return [*launch, "-m", "teramind_hf.cli", *options, "--threads", "1"]
    return [sys.executable, "-m", "teramind_hf.cli", *options]


def run_api(args: argparse.Namespace, genes: Path, out: Path) -> None:
    """The same run through the Python API."""
    from teramind_hf.pipelines.device import resolve_device
    from teramind_hf.pipelines.streaming import generate_to_zarr, load_pipeline

    report = generate_to_zarr(
        load_pipeline(args.model, device=resolve_device(args.device)), genes, out, num_inference_steps=args.steps, generator=args.seed,
        batch_size=args.batch_size, progress_bar=False,
    )
    print(report.summary())
    (out.parent / "report.json").write_text(json.dumps({"summary": report.summary(), "voxels": report.voxels}))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    genes = write_gene_store(root / "region.zarr", args.size, args.sections)
    out = root / "brain.ome.zarr"
    if out.exists():
        shutil.rmtree(out)  # this example starts fresh; re-running the command on a partial output resumes it
    if args.api:
        run_api(args, genes, out)
    else:
        command = generate_command(args, genes, out)
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, env=subprocess_env())

    import zarr

    image = zarr.open_group(str(out), mode="r")
    datasets = image.attrs["ome"]["multiscales"][0]["datasets"]
    levels = [image[d["path"]] for d in datasets]
    print("OME-Zarr levels (c, z, y, x): " + ", ".join(str(tuple(level.shape)) for level in levels))
    full, coarse = np.asarray(levels[0][:, 0]), np.asarray(levels[-1][:, 0])
    png = save_panels(
        [(full[0], "DAPI, section 0"), (full[1], "PolyT, section 0"), (coarse[0], f"DAPI, level {len(levels) - 1}")],
        root / "overview.png", vmin=0, vmax=255,
    )
    print(f"wrote {out} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
