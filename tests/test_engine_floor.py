"""The engine's cheap paths keep its results: chunk files are zarr's chunks, pruned solver history and batched
solver noise step tiles exactly as the full history and one tile at a time do, DPM-Solver++ updates in place give
diffusers' bytes (and a wrong one is refused), the x0 clip in one buffer is its expression, write-behind raises its
errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import zarr

from teramind_hf import BoundaryAwareScheduler
from teramind_hf.schedulers.scheduling_boundary_aware import clip_model_output
from teramind_hf.sampling import fused_updates
from teramind_hf.sampling.chunk_files import ChunkFiles, ZarrChunks, chunk_io
from teramind_hf.sampling.presets import scheduler_from_name
from teramind_hf.sampling.solver_state import TileSolver
from teramind_hf.sampling.write_behind import WriteBehind

SHAPE, CHUNKS = (1, 2, 2, 40, 56), (1, 2, 2, 16, 16)  # edge chunks in both axes


def _array(path, **kwargs):
    group = zarr.open_group(str(path), mode="w")
    return group.create_array("x", shape=SHAPE, chunks=CHUNKS, dtype="float32", fill_value=0.5, **kwargs)


def test_chunk_files_are_zarr_chunks_both_ways(tmp_path):
    array = _array(tmp_path / "a.zarr", compressors=None)
    files = chunk_io(array)
    assert isinstance(files, ChunkFiles)
    rng = np.random.default_rng(0)
    assert np.all(files.read((0, 0, 0, 2, 3)) == 0.5)  # never written: the fill value
    expected = np.full(SHAPE, 0.5, dtype=np.float32)
    for coords, in_place in (((0, 0, 0, 0, 0), False), ((0, 0, 0, 2, 3), True), ((0, 0, 0, 1, 2), True)):
        block = rng.standard_normal(files.read(coords).shape).astype(np.float32)  # (2, 3) is an edge chunk
        files.write(coords, block, in_place=in_place)
        expected[tuple(slice(i * n, i * n + s) for i, n, s in zip(coords, CHUNKS, block.shape))] = block
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr" / "x"), mode="r")[...], expected)
    array[0, :, :, 16:32, 0:16] = 7.0  # written by zarr, read as a file
    np.testing.assert_array_equal(files.read((0, 0, 0, 1, 0)), np.full((1, 2, 2, 16, 16), 7.0, dtype=np.float32))
    assert not list((tmp_path / "a.zarr").rglob("*.partial"))
    for coords in ((0, 0, 0, 0, 0), (0, 0, 0, 1, 0), (0, 0, 0, 0, 1)):  # written in a file, by zarr, never written
        into = np.empty(CHUNKS, dtype=np.float32)
        files.read_into(coords, into)
        np.testing.assert_array_equal(into, files.read(coords))
    chunk_file = tmp_path / "a.zarr" / "x" / array.metadata.encode_chunk_key((0, 0, 0, 1, 0))
    chunk_file.write_bytes(chunk_file.read_bytes()[:-4])
    with pytest.raises(ValueError, match=str(chunk_file.name)):
        files.read_into((0, 0, 0, 1, 0), np.empty(CHUNKS, dtype=np.float32))


def test_arrays_chunk_files_cannot_read_go_through_zarr(tmp_path):
    compressed = _array(tmp_path / "c.zarr")  # zarr's default compressor
    in_memory = zarr.open_group(zarr.storage.MemoryStore(), mode="w").create_array(
        "x", shape=SHAPE, chunks=CHUNKS, dtype="float32", fill_value=0.5, compressors=None
    )
    big_endian = zarr.create_array(str(tmp_path / "b.zarr"), shape=SHAPE, chunks=CHUNKS, dtype="float32", fill_value=0.5,
                                   compressors=None, serializer=zarr.codecs.BytesCodec(endian="big"))
    for array in (compressed, in_memory, big_endian):
        chunks = chunk_io(array)
        assert type(chunks) is ZarrChunks
        chunks.write((0, 0, 0, 2, 3), np.ones((1, 2, 2, 8, 8), dtype=np.float32))
        assert array[0, 0, 0, 39, 55] == 1.0 and array[0, 0, 0, 31, 47] == 0.5


def _scheduler(name: str) -> BoundaryAwareScheduler:
    return BoundaryAwareScheduler.wrap(scheduler_from_name(name, BoundaryAwareScheduler()))


def _solver(name: str, steps: int) -> TileSolver:
    return TileSolver(_scheduler(name), steps, seed=3)


def _run(solver: TileSolver, x: torch.Tensor, outputs: list[torch.Tensor], keys, batch: int) -> torch.Tensor:
    """Step tiles through every step in batches of ``batch``, keeping each tile's history as the engine does."""
    histories = [dict() for _ in range(x.shape[0])]
    for step, output in enumerate(outputs):
        parts = []
        for b in range(0, x.shape[0], batch):
            tiles = range(b, min(b + batch, x.shape[0]))
            history = {s: torch.stack([histories[j][s] for j in tiles]) for s in solver.needed_at(step)}
            prev, after = solver.step(step, output[b : b + batch], x[b : b + batch], history, [keys[j] for j in tiles])
            for i, j in enumerate(tiles):
                histories[j] = {s: v[i] for s, v in after.items()}
            parts.append(prev)
        x = torch.cat(parts)
    return x


@pytest.mark.parametrize("name", ["dpm", "dpm-sde", "unipc"])
def test_pruned_history_and_batched_noise_step_like_the_whole_scheduler(name):
    steps, generator = 5, torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, 8, 8, generator=generator)
    outputs = [torch.randn(3, 2, 2, 8, 8, generator=generator) for _ in range(steps)]
    keys = [(0, 0, j) for j in range(3)]
    solver = _solver(name, steps)
    if name.startswith("dpm"):  # DPM-Solver++ 2M shifts its oldest model output out before it reads the list
        assert [[s.name for s in solver.needed_at(i)] for i in range(1, steps - 1)] == [["model_outputs.1"]] * (steps - 2)
    assert solver.batched_noise == (name == "dpm-sde")
    batched = _run(solver, x, outputs, keys, batch=3)
    assert torch.equal(batched, _run(solver, x, outputs, keys, batch=1))
    if name != "dpm-sde":  # the plain scheduler on the whole stack, its full history in place
        scheduler = _scheduler(name)
        scheduler.set_timesteps(steps)
        whole = x
        for step, output in enumerate(outputs):
            whole = scheduler.step(output, scheduler.timesteps[step], whole).prev_sample
        assert torch.equal(batched, whole)


@pytest.mark.parametrize("name", ["dpm", "dpm-sde"])
def test_in_place_dpm_updates_give_diffusers_bytes(name, monkeypatch):
    steps, generator = 6, torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, 2, 16, 16, generator=generator)
    outputs = [torch.randn(3, 2, 2, 16, 16, generator=generator) for _ in range(steps)]
    keys = [(0, 0, j) for j in range(3)]
    in_place = _solver(name, steps)
    monkeypatch.setattr(TileSolver, "allow_in_place_updates", False)
    plain = _solver(name, steps)
    assert in_place.in_place_updates and type(in_place._base) is fused_updates.InPlaceDPMSolverMultistepScheduler
    assert not plain.in_place_updates and type(plain._base).__name__ == "DPMSolverMultistepScheduler"
    assert torch.equal(_run(in_place, x, outputs, keys, batch=3), _run(plain, x, outputs, keys, batch=3))


def test_an_in_place_update_that_rounds_differently_is_not_used(monkeypatch):
    def off_by_rounding(self, model_output_list, *args, sample=None, noise=None, **kwargs):
        # the update plus 1e-7 of (m0 - m1): a change of the size a different order of operations makes
        out = fused_updates.second_order_update(self, model_output_list, sample=sample, noise=noise)
        return out + (model_output_list[-1] - model_output_list[-2]) * 1e-7

    monkeypatch.setattr(fused_updates.InPlaceDPMSolverMultistepScheduler, "multistep_dpm_solver_second_order_update", off_by_rounding)
    solver = _solver("dpm-sde", 6)
    assert not solver.in_place_updates and type(solver._base).__name__ == "DPMSolverMultistepScheduler"


def test_an_in_place_x0_conversion_that_rounds_differently_is_not_used(monkeypatch):
    def off_by_rounding(self, model_output, *args, sample=None, **kwargs):
        return fused_updates.convert_model_output(self, model_output, sample=sample) * (1 + 1e-7)

    monkeypatch.setattr(fused_updates.InPlaceDPMSolverMultistepScheduler, "convert_model_output", off_by_rounding)
    solver = _solver("dpm", 6)
    assert not solver.in_place_updates and type(solver._base).__name__ == "DPMSolverMultistepScheduler"


def test_the_x0_clip_in_one_buffer_is_the_expression():
    generator = torch.Generator().manual_seed(4)
    canvas = torch.randn(2, 2, 2, 24, 24, generator=generator) * 2
    sample = canvas[..., 4:20, 4:20]  # x_t is a view of the canvases in the engine
    eps = torch.randn(2, 2, 2, 16, 16, generator=generator) * 3
    kept = (canvas.clone(), eps.clone())
    stepper = _scheduler("dpm")._stepper
    for t in (999, 500, 20):
        abar = stepper.alphas_cumprod[t]
        a, s = abar.sqrt(), (1 - abar).sqrt()
        x0 = ((sample - s * eps) / a).clamp(-1.0, 1.0)
        clipped = clip_model_output(stepper, eps, sample, t, 1.0)
        assert torch.equal(clipped, (sample - a * x0) / s) and (x0.abs() == 1).any()
        assert torch.equal(canvas, kept[0]) and torch.equal(eps, kept[1])  # the inputs are not written


def test_a_step_that_multiplies_its_noise_by_zero_draws_none():
    steps, generator = 6, torch.Generator().manual_seed(2)
    x = torch.randn(3, 2, 2, 8, 8, generator=generator)
    outputs = [torch.randn(3, 2, 2, 8, 8, generator=generator) for _ in range(steps)]
    keys = [(0, 0, j) for j in range(3)]
    solver, drawn = _solver("dpm-sde", steps), _solver("dpm-sde", steps)
    assert [solver.uses_noise(i) for i in range(steps)] == [True] * (steps - 1) + [False]  # the last step to sigma 0
    assert not solver.batch_noise(steps - 1, (3, 2, 2, 8, 8), keys).any()
    drawn._noise_used = [True] * steps  # draw the noise at every step
    assert torch.equal(_run(solver, x, outputs, keys, batch=3), _run(drawn, x, outputs, keys, batch=3))


def test_write_behind_is_bounded_ordered_and_raises_errors():
    done, release = [], threading.Event()
    with WriteBehind(max_pending=2) as writer:
        writer.submit(lambda: (release.wait(5), done.append(0)))
        writer.submit(lambda: done.append(1))
        blocked = threading.Thread(target=writer.submit, args=(lambda: done.append(2),))
        blocked.start()
        blocked.join(0.2)
        assert blocked.is_alive() and done == []  # a third job waits for the first to finish
        release.set()
        blocked.join(5)
        writer.drain()
        assert done == [0, 1, 2]

    def fail():
        raise OSError("disk full")

    writer = WriteBehind()
    writer.submit(fail)
    writer.submit(lambda: done.append(3))
    with pytest.raises(OSError, match="disk full"):
        writer.drain()
    writer.close()
