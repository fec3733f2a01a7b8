"""The SDE noise of one tile: is there a cheaper Gaussian draw than torch's own, from libraries we already use?

The default sampler draws one tile's noise per tile-step (2 stains x 2 sections x 256 x 256 float32, from its own
seeded ``torch.Generator``), the largest single piece of the engine floor (`docs/performance.md`, "Engine floor").
torch's CPU generator is a Mersenne Twister filled one value at a time, then a vectorised Box-Muller. This script
times, in CPU ms per tile (``time.process_time``, 1 torch thread, rounds interleaved, medians):

* ``torch normal_``: what the engine does (a fresh generator seeded per tile, ``normal_`` into a buffer);
* ``torch uniform_``: the generator's uniform fill alone (what ``normal_`` spends before its transform);
* ``SFC64 raw bits``: numpy's fastest bit generator, the raw 64-bit words a tile needs, no transform;
* ``SFC64 + Box-Muller in torch``: those bits as floats in [1, 2) (exponent trick), then log / sqrt / cos / sin with
  torch's vectorised kernels, in place where possible: a complete replacement for ``normal_``;
* ``numpy ziggurat``: ``Generator(SFC64).standard_normal(dtype=float32)``.

A replacement would change every SDE sample (and every figure measured with the default sampler), so it is only
worth it if it is much cheaper. Ratios are printed against ``torch normal_``.

    python benchmarks/noise_generators.py              # 5 rounds of 100 draws each
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

TILE_VALUES = 2 * 2 * 256 * 256
ONE_EXPONENT = np.uint32(0x3F800000)  # float32 bits of 1.0: 23 random mantissa bits under it give [1, 2)
MANTISSA_SHIFT = np.uint32(9)


def candidates(seed: int = 123) -> dict:
    buffer = torch.empty(TILE_VALUES)
    half = TILE_VALUES // 2

    def torch_normal():
        buffer.normal_(generator=torch.Generator().manual_seed(seed))

    def torch_uniform():
        buffer.uniform_(generator=torch.Generator().manual_seed(seed))

    def sfc64_raw():
        np.random.SFC64(seed).random_raw(half)

    def sfc64_box_muller():
        bits = np.random.SFC64(seed).random_raw(half).view(np.uint32)
        uniform = torch.from_numpy(((bits >> MANTISSA_SHIFT) | ONE_EXPONENT).view(np.float32))
        radius = torch.rsub(uniform[:half], 2.0).log_().mul_(-2.0).sqrt_()  # 2 - u in (0, 1]: no log(0)
        angle = uniform[half:].sub_(1.0).mul_(2 * np.pi)
        torch.mul(radius, torch.cos(angle), out=buffer[:half])
        torch.mul(radius, angle.sin_(), out=buffer[half:])

    def numpy_ziggurat():
        np.random.Generator(np.random.SFC64(seed)).standard_normal(TILE_VALUES, dtype=np.float32)

    return {"torch normal_": torch_normal, "torch uniform_": torch_uniform, "SFC64 raw bits": sfc64_raw,
            "SFC64 + Box-Muller in torch": sfc64_box_muller, "numpy ziggurat": numpy_ziggurat}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--draws", type=int, default=100, help="draws per candidate per round")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    funcs = candidates()
    cpu = {name: [] for name in funcs}
    wall = {name: [] for name in funcs}
    for rnd in range(args.rounds):
        order = list(funcs) if rnd % 2 == 0 else list(reversed(funcs))  # A B ..., then ... B A
        for name in order:
            funcs[name]()  # warm
            c, w = time.process_time(), time.perf_counter()
            for _ in range(args.draws):
                funcs[name]()
            cpu[name].append((time.process_time() - c) * 1e3 / args.draws)
            wall[name].append((time.perf_counter() - w) * 1e3 / args.draws)
    base = statistics.median(cpu["torch normal_"])
    print(f"one tile's noise ({TILE_VALUES} float32), 1 torch thread, medians of {args.rounds} interleaved rounds "
          f"of {args.draws} draws")
    for name in funcs:
        c, w = statistics.median(cpu[name]), statistics.median(wall[name])
        print(f"  {name:28s} {c:6.3f} ms CPU ({c / base:4.2f}x torch normal_), {w:6.3f} ms wall")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
