"""`benchmarks/gpu_check.py --device cpu --small`: the GPU check's code paths run on the CPU and print its tables."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_gpu_check_smoke_on_cpu():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--small", "--threads", "1"],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {}
    for line in result.stdout.splitlines():
        part, _, rest = line.partition(" | ")
        rows.setdefault(part, []).append(rest)

    # the same device twice: the same bytes (the initial noise is drawn on the CPU from the tile seeds)
    (agree,) = [r for r in rows["agreement"] if "vs cpu" in r]
    assert re.search(r"max \|diff\| 0 grey levels \| PSNR inf dB", agree), agree

    calls = {r.split(" | ")[0].strip(): r for r in rows["tile-call"] if " | " in r}
    for key in ("fp32 eager", "bf16 eager"):
        ms, cpu_ms = map(float, re.findall(r"([0-9.]+) (?:CPU )?ms per canvas", calls[key]))
        assert ms > 0 and cpu_ms > 0 and math.isfinite(ms)
    assert "skipped" in calls["fp32 compiled"] and "skipped" in calls["fp16 eager"]

    (floor,) = rows["engine-floor"]
    cpu_ms, wall_ms = (float(v) for v in re.findall(r"\| (-?[0-9.]+) (?:CPU|wall) ms per tile-step", floor))
    assert math.isfinite(cpu_ms) and cpu_ms > 0 and math.isfinite(wall_ms)

    # one row per preset with its real model calls per tile on the grid it runs (embedded model: diagonal grid)
    brain = {r.split(" | ")[0].strip(): r for r in rows["brain"][1:]}
    assert list(brain) == ["default", "official", "seamless", "fast", "fastest", "turbo", "student"]
    expected_calls = {"default": 16, "official": 15, "seamless": 16, "fast": 10, "fastest": 8, "turbo": 4, "student": 4}
    hours = {}
    for name, row in brain.items():
        assert f"{expected_calls[name]:2d} calls/tile" in row, row
        hours[name] = float(re.search(r"fp32 +([0-9.]+) h", row).group(1))
        assert math.isfinite(hours[name]) and hours[name] > 0
    # hours scale with the model calls per tile (same measured tile call)
    assert math.isclose(hours["official"] / hours["default"], 15 / 16, rel_tol=1e-3)
    assert math.isclose(hours["fastest"] / hours["fast"], 8 / 10, rel_tol=1e-3)
