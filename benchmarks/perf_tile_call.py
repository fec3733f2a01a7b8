"""Tile call cost, achieved FLOP/s and peak memory: ours (collage decoder only) vs the official-equivalent call.

The official sampler runs the whole forward for every tile and step (encoder + per-patch decoder + collage
decoder) and discards the per-patch output; ours runs only the part that is kept. Here both run side by side in
one process, interleaved (medians), on the same weights and the same 320-px canvas, and the kept outputs are
compared. Measured for the paper-size model (214 M parameters, random weights) and the embedded default model,
in each requested dtype:

* (a) CPU seconds (``time.process_time``) and wall seconds per tile-step, ours vs official-equivalent
  (``path="both"``: our own model running both decoders, not the official source), the ratio on CPU seconds, and
  max |difference| of the kept output between the two paths;
* (b) achieved FLOP/s per CPU second of our forward (FLOPs counted by ``torch.utils.flop_counter`` on the meta
  device) against the machine's matmul FLOP/s per CPU second in the same process and dtype. Conv FLOPs are
  counted with every kernel tap, including the zero-padding taps in z (the res-block convs are 3 deep over 2
  slices: 1/3 of their z taps multiply padding, and oneDNN skips them), so the fraction on "useful" FLOPs
  (padding taps in z excluded) is the one that means something; the "counted" one can exceed what the CPU does;
* (e) peak RSS during one call.

Calls are interleaved A B A B (one of each per round) and medians printed; wall time is printed for reference
only: under load it counts other jobs' share of the core, CPU seconds do not.

    python benchmarks/perf_tile_call.py --threads 1                       # paper-size + embedded, fp32
    python benchmarks/perf_tile_call.py --threads 1 --dtypes fp32,bf16    # also bf16 (model in bf16)
    python benchmarks/perf_tile_call.py --threads 1 --models embedded --repeats 5
    python benchmarks/perf_tile_call.py --threads 1 --models paper --repeats 0     # one call each (slow machine)
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from _perf_common import Stopwatch, Timing, interleaved_medians, machine_facts, matmul_flops_per_second, peak_rss
from teramind_hf import GeneMorphUNet3DModel, TeraMindPipeline
from teramind_hf.pipelines.acceleration import cast_unet, resolve_dtype

CANVAS = 320  # a 256-px tile + 32-px halo: 5 x 5 patches of 64 px
TIMESTEP = 938


def paper_model(device: str = "cpu") -> GeneMorphUNet3DModel:
    """The paper-size configuration (class defaults), random weights perturbed so no block is the identity."""
    with torch.device(device):
        torch.manual_seed(0)
        model = GeneMorphUNet3DModel(dropout=0.0)
    if device != "meta":
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def embedded_model(device: str = "cpu") -> GeneMorphUNet3DModel:
    model = TeraMindPipeline.from_pretrained().unet.eval()
    if device == "meta":
        with torch.device("meta"):
            return GeneMorphUNet3DModel.from_config(model.config).eval()
    return model


MODELS = {"paper": paper_model, "embedded": embedded_model}


def inputs(cfg, batch: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    canvas = torch.randn(batch, cfg.in_channels, cfg.num_slices, CANVAS, CANVAS, generator=generator)
    bins = CANVAS // cfg.gene_bin
    genes = torch.poisson(torch.full((batch, cfg.num_genes, cfg.gene_slices, bins, bins), 0.3), generator=generator)
    return canvas.to(device), genes.to(device)


def count_flops(name: str, batch: int, path: str = "collage") -> tuple[float, float]:
    """(counted FLOPs, FLOPs without the z zero-padding taps of the 3-deep convs) of one call."""
    model = MODELS[name]("meta")
    canvas, genes = inputs(model.config, batch, "meta")
    padding_taps = []

    def hook(module, args, output):  # a 3-deep conv zero-padded in z over a depth-2 input: 1 of 3 taps is padding
        if module.kernel_size[0] == 3 and module.padding[0] == 1 and args[0].shape[2] == 2:
            per_tap = 2 * output.numel() * module.in_channels * module.kernel_size[1] * module.kernel_size[2]
            padding_taps.append(per_tap)  # each output slice has exactly one padded z tap

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv3d)]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(canvas, TIMESTEP, genes, path=path)
    for h in handles:
        h.remove()
    total = counter.get_total_flops()
    return float(total), float(total - sum(padding_taps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="paper,embedded", help="comma list of: paper, embedded")
    parser.add_argument("--dtypes", default="fp32", help="comma list of: fp32, bf16, fp16 (model dtype)")
    parser.add_argument("--batch", type=int, default=1, help="canvases per call")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls per candidate after one warm-up call each (0: time the warm-up calls)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_facts())

    for dtype_name in args.dtypes.split(","):
        dtype = resolve_dtype(dtype_name)
        peak = matmul_flops_per_second(dtype)
        print(f"\n[{dtype_name}] matmul 2048^3 in this process: {peak / 1e9:.1f} GFLOP per CPU-s")
        for name in args.models.split(","):
            flops, useful = count_flops(name, args.batch)
            flops_both = count_flops(name, args.batch, "both")[0]
            model = cast_unet(MODELS[name](), dtype)
            canvas, genes = inputs(model.config, args.batch)
            params = sum(p.numel() for p in model.parameters())
            with torch.inference_mode():
                with peak_rss() as rss_ours, Stopwatch() as first_ours:
                    ours = model(canvas, TIMESTEP, genes, path="collage").sample
                with peak_rss() as rss_both, Stopwatch() as first_both:
                    official = model(canvas, TIMESTEP, genes, path="both").sample
                diff = float((ours.float() - official.float()).abs().max())
                # --repeats 0: the first calls (one each) are the measurement
                times = {
                    "ours": Timing(first_ours.wall, first_ours.cpu),
                    "official": Timing(first_both.wall, first_both.cpu),
                }
                if args.repeats > 0:
                    times = interleaved_medians(
                        {
                            "ours": lambda: model(canvas, TIMESTEP, genes, path="collage"),
                            "official": lambda: model(canvas, TIMESTEP, genes, path="both"),
                        },
                        args.repeats,
                        warmup=False,  # the two calls above were the warm-up
                    )
            ours_t, both_t = times["ours"], times["official"]
            rounds = f"median of {args.repeats} interleaved round(s)" if args.repeats > 0 else "one call each"
            print(
                f"{name} model ({params / 1e6:.1f} M parameters, {dtype_name}), "
                f"{args.batch} canvas(es) of {CANVAS} px, {rounds}:\n"
                f"  (a) both decoders (path=\"both\": the official computation, our code) {both_t}, "
                f"ours (collage only) {ours_t}: "
                f"ours {both_t.cpu / ours_t.cpu:.2f}x cheaper in CPU seconds ({both_t.wall / ours_t.wall:.2f}x wall); "
                f"max |kept output difference| both vs collage {diff:.2e}; "
                f"FLOP ratio official/ours {flops_both / flops:.3f}\n"
                f"  (b) {flops / 1e9:,.1f} GFLOP counted ({useful / 1e9:,.1f} useful: without z zero-padding taps): "
                f"{useful / ours_t.cpu / 1e9:.1f} useful GFLOP per CPU-s = {useful / ours_t.cpu / peak:.1%} of matmul "
                f"(counted: {flops / ours_t.cpu / 1e9:.1f} GFLOP per CPU-s = {flops / ours_t.cpu / peak:.1%}, "
                f"over-counts the skipped padding taps)\n"
                f"  (e) peak RSS during a call: ours {rss_ours['peak_mb']:.0f} MB (from {rss_ours['before_mb']:.0f}), "
                f"official-equivalent {rss_both['peak_mb']:.0f} MB"
            )
            del model
    print(f"\nload average after: {', '.join(f'{v:.2f}' for v in __import__('os').getloadavg())}")


if __name__ == "__main__":
    main()
