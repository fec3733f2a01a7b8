"""Where a tile call's time goes: torch.profiler over one collage-path forward, CPU self time grouped by kind.

    python benchmarks/perf_profile.py --threads 1 --model paper        # 214 M parameters, random weights
    python benchmarks/perf_profile.py --threads 1 --model embedded --dtype bf16

Kinds: convolution, matmul / linear / attention, elementwise norm + activation + AdaLN arithmetic, concatenation
and copies (cat, layout changes, dtype casts), pooling / resampling, other. One warm-up call first (oneDNN
creates its kernels on the first call of each shape).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from _perf_common import machine_facts
from perf_tile_call import MODELS, TIMESTEP, inputs
from teramind_hf.pipelines.acceleration import cast_unet, resolve_dtype

KINDS = {
    "convolution": ("conv", "mkldnn_convolution"),
    "matmul / linear / attention": ("addmm", "mm", "bmm", "linear", "matmul", "scaled_dot_product", "_flash", "baddbmm"),
    "elementwise norm / activation / AdaLN": ("silu", "gelu", "mul", "add", "rsqrt", "pow", "mean", "sub", "div", "softmax", "tanh", "sum"),
    "concatenation / copies / casts": ("cat", "copy_", "clone", "contiguous", "_to_copy", "permute", "reshape", "to", "empty", "fill_"),
    "pooling / resampling": ("upsample", "interpolate", "pool", "pad", "constant_pad"),
}


def kind_of(name: str) -> str:
    op = name.removeprefix("aten::")
    for kind, keys in KINDS.items():
        if any(op == k or op.startswith(k + "_") or (len(k) > 4 and k in op) for k in keys):
            return kind
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="paper", choices=tuple(MODELS))
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=12, help="also list the N most expensive ops")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(machine_facts())
    model = cast_unet(MODELS[args.model](), resolve_dtype(args.dtype))
    canvas, genes = inputs(model.config, 1)
    with torch.inference_mode():
        model(canvas, TIMESTEP, genes)  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(canvas, TIMESTEP, genes)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    by_kind: dict[str, float] = defaultdict(float)
    for e in events:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    print(f"\n{args.model} model, {args.dtype}, one 320-px canvas, collage path: {total / 1e6:.2f} s of aten self time")
    print("| kind | share of the forward | seconds |\n|---|---|---|")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {t / total:.1%} | {t / 1e6:.2f} |")
    print(f"\ntop {args.top} ops by self time:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[: args.top]:
        print(f"  {e.key:40s} {e.self_cpu_time_total / total:6.1%}  calls {e.count}  -> {kind_of(e.key)}")


if __name__ == "__main__":
    main()
