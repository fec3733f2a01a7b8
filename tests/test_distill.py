"""`teramind distill`: the student's training windows are the sampler's model inputs, its path is DDIM's, the CLI
distils a tiny teacher and the official fixture, resumes after SIGKILL exactly, and the student loads and samples
with its saved steps and grid.

On a tiny random teacher (tests/conftest.py) and a small phantom, one thread; one run is shared by the tests, and
only the run that is killed is a subprocess.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from .conftest import FAST_CONFIG, OFFICIAL_SMALL, kill_at_checkpoint, make_tiny_unet

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "TQDM_DISABLE": "1"}
FAST = ["--num_teacher_samples", "2", "--teacher_steps", "1", "--train_batch_size", "2", "--num_threads", "1",
        "--learning_rate", "1e-3", "--no_progress"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> Path:
    from teramind_hf.data import make_phantom
    from teramind_hf.data.datasets import write_training_store

    path = tmp_path_factory.mktemp("data") / "phantom.zarr"
    write_training_store(make_phantom(256, 256, num_slices=3, seed=0, um_per_px=1.0).to_volume(), path)
    return path


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, phantom) -> Path:
    """A tiny random x0-predicting teacher on the phantom's panel that ships the diagonal grid."""
    import zarr

    from teramind_hf import BoundaryAwareScheduler, TeraMindPipeline

    names = list(zarr.open_group(str(phantom), mode="r").attrs["gene_names"])
    pipe = TeraMindPipeline(unet=make_tiny_unet(names, **FAST_CONFIG), scheduler=BoundaryAwareScheduler(prediction_type="sample"),
                            grid="diagonal", num_inference_steps=3)
    path = tmp_path_factory.mktemp("teacher") / "teacher"
    pipe.save_pretrained(str(path))
    return path


def _args(teacher: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--teacher", str(teacher), "--data", str(data), "--output_dir", str(out), *FAST, *extra]


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "unet" / "diffusion_pytorch_model.safetensors"))


RUN = ["--max_train_steps", "4", "--checkpointing_steps", "2", "--use_ema", "--lr_scheduler", "cosine"]


@pytest.fixture(scope="module")
def distilled(teacher, phantom, tmp_path_factory, one_torch_thread) -> Path:
    """One uninterrupted `teramind distill` run (in this process)."""
    from teramind_hf.cli import main

    out = tmp_path_factory.mktemp("distill") / "full"
    assert main(["distill", *_args(teacher, phantom, out, *RUN)]) == 0
    return out


ADVERSARIAL = ["--adversarial_weight", "0.5", "--discriminator_lr", "1e-3"]


@pytest.fixture(scope="module")
def distilled_adversarial(distilled, teacher, phantom, tmp_path_factory, one_torch_thread) -> Path:
    """The same run as ``distilled`` (same records, windows, seeds) with the adversarial term."""
    return _rerun(distilled, teacher, phantom, tmp_path_factory.mktemp("distill") / "adversarial", ADVERSARIAL)


def _rerun(distilled: Path, teacher: Path, phantom: Path, out: Path, extra: list[str]) -> Path:
    """``distilled``'s run on its target store, with ``extra`` arguments, into ``out``."""
    from teramind_hf.cli import main

    assert main(["distill", *_args(teacher, phantom, out, *RUN, "--targets", str(distilled / "teacher_targets.zarr"), *extra)]) == 0
    return out


PER_STAIN = [*ADVERSARIAL, "--discriminator_per_stain", "--adversarial_stain_weights", "1.5", "0.3"]


@pytest.fixture(scope="module")
def distilled_per_stain(distilled, teacher, phantom, tmp_path_factory, one_torch_thread) -> Path:
    """The adversarial run with one discriminator per stain, weighted."""
    return _rerun(distilled, teacher, phantom, tmp_path_factory.mktemp("distill") / "per_stain", PER_STAIN)


PAIRED = [*ADVERSARIAL, "--discriminator_paired"]


@pytest.fixture(scope="module")
def distilled_paired(distilled, teacher, phantom, tmp_path_factory, one_torch_thread) -> Path:
    """The adversarial run with the paired (pix2pix-style) discriminator: the teacher's x0* is its real image."""
    return _rerun(distilled, teacher, phantom, tmp_path_factory.mktemp("distill") / "paired", PAIRED)


def test_windows_are_the_samplers_model_inputs_and_the_path_is_ddim(distilled):
    import zarr

    from teramind_hf import TeraMindPipeline
    from teramind_hf.sampling.grid import TileGrid
    from teramind_hf.sampling.schedule import resolve_grid
    from teramind_hf.training.distill_targets import StudentPath
    from teramind_hf.training.distill_windows import DistillWindows, WindowGeometry

    student = TeraMindPipeline.from_pretrained(str(distilled))
    group = zarr.open_group(str(distilled / "teacher_targets.zarr"), mode="r")
    path = StudentPath.of(student.scheduler, 2)
    geometry = WindowGeometry(patch=64, gene_bin=16, fill_value=-1.0, region=256)
    windows = DistillWindows(group, 1, path, resolve_grid("diagonal"), geometry, seed=0, global_batch=8, length=400,
                             prediction_type="sample")
    noise, target, genes = (torch.from_numpy(group[name][0]) for name in ("noise", "target", "genes"))
    calls = []
    forward = student.unet.forward

    def recording(x, t, g, **kwargs):
        calls.append((int(torch.as_tensor(t).reshape(-1)[0]), x.clone(), g.clone()))
        return forward(x, t, g, **kwargs)

    student.unet.forward = recording
    student(genes, gene_names=student.unet.config.gene_names, slices=(1, 3), latents=noise[None], generator=0)
    assert [t for t, _, _ in calls] == [999, 999, 499, 499]  # 2 steps x 2 offsets: 4 calls for the one tile
    grid = TileGrid(height=256, width=256)
    canvases = {(t, x.shape[-1]): (x[0], g[0]) for t, x, g in calls}
    # a 2 x 2-patch window is the same canvas: 3 x 3 input patches around 2 x 2 neighbouring output patches
    wide = DistillWindows(group, 1, path, resolve_grid("diagonal"), WindowGeometry(64, 16, -1.0, 256, window=2), seed=0,
                          global_batch=8, length=400, prediction_type="sample")
    for patches, dataset in ((1, windows), (2, wide)):
        size, out = 64 * (patches + 1), 64 * patches
        checked = set()
        for index in range(400):
            _, k, offset, (y, x) = dataset.draws(index)
            if k:
                continue
            box = grid.canvas_box(0, 0, offset)
            canvas, gene_canvas = canvases[(999, box.width)]
            item = dataset[index]
            top, left = y - 32 - box.y0, x - 32 - box.x0
            assert torch.equal(item["x"], canvas[..., top : top + size, left : left + size]), (patches, offset, y, x)
            assert torch.equal(item["genes"], gene_canvas[..., top // 16 : (top + size) // 16, left // 16 : (left + size) // 16])
            inside = target[..., max(y, 0) : y + out, max(x, 0) : x + out]
            assert item["x0"].shape[-2:] == (out, out) and item["mask"].sum() == inside.shape[-2] * inside.shape[-1]
            assert torch.equal(item["x0"][..., max(-y, 0) :, max(-x, 0) :][..., : inside.shape[-2], : inside.shape[-1]], inside)
            checked.add((offset, y, x))
        assert {c[0] for c in checked} == {(0, 0), (16, 16)}
        # every output patch starts a window, as long as its neighbours are the grid's patches over the region too
        assert {c[1] for c in checked if c[0] == (0, 0)} == set(range(0, 256 - out + 1, 64))
    # step 1 is where deterministic DDIM goes from the noise when its x0 is the teacher's sample
    scheduler = student.scheduler
    scheduler.set_timesteps(2)
    ddim = scheduler.step(target, 999, noise).prev_sample
    assert torch.allclose(path.noisy(1, noise, target), ddim, atol=1e-5)
    assert not torch.allclose(path.noisy(1, noise, target), noise, atol=1e-2)


def test_fresh_noise_windows_are_the_teachers_sample_renoised_and_get_no_mse(distilled):
    """``fresh_noise_fraction``: some windows after the first student step take the teacher's sample re-noised with
    their own fresh noise (LCM sampling's input there) and carry no MSE; the others, and every window without the
    option, are the DDIM path's, unchanged."""
    import zarr

    from teramind_hf import TeraMindPipeline
    from teramind_hf.sampling.schedule import resolve_grid
    from teramind_hf.training.distill_targets import StudentPath
    from teramind_hf.training.distill_windows import DistillWindows, WindowGeometry, distill_loss

    student = TeraMindPipeline.from_pretrained(str(distilled))
    group = zarr.open_group(str(distilled / "teacher_targets.zarr"), mode="r")
    path = StudentPath.of(student.scheduler, 2)
    geometry = WindowGeometry(patch=64, gene_bin=16, fill_value=-1.0, region=256)
    common = dict(seed=0, global_batch=8, length=64, prediction_type="sample")
    plain = DistillWindows(group, 1, path, resolve_grid("diagonal"), geometry, **common)
    mixed = DistillWindows(group, 1, path, resolve_grid("diagonal"), geometry, fresh_noise_fraction=0.5, **common)
    denoising = DistillWindows(group, 1, path, resolve_grid("diagonal"), geometry, fresh_noise_fraction=0.5,
                               fresh_noise_mse=True, **common)
    noise, target, _ = plain.record(0)
    fresh_items, a = [], path.alphas_cumprod[1]
    for index in range(64):
        _, k, _, _ = plain.draws(index)
        assert mixed.draws(index) == plain.draws(index)  # the option draws from its own generator
        before, item = plain[index], mixed[index]
        assert before["mse_weight"] == 1
        x_t, fresh = mixed.input_at(index, k, noise, target)
        if not fresh:
            assert torch.equal(item["x"], before["x"]) and item["mse_weight"] == 1
            continue
        assert k == 1 and item["mse_weight"] == 0 and torch.equal(item["x0"], before["x0"])
        assert not torch.equal(item["x"], before["x"])
        assert torch.equal(mixed.input_at(index, k, noise, target)[0], x_t)  # a pure function of the item
        with_mse = denoising[index]  # fresh_noise_mse: the same window, with the MSE to x0* (denoising)
        assert torch.equal(with_mse["x"], item["x"]) and torch.equal(with_mse["x0"], item["x0"]) and with_mse["mse_weight"] == 1
        residual = (x_t - a**0.5 * target) / (1 - a) ** 0.5  # the fresh noise: not the DDIM path's, unit variance
        ddim = (path.noisy(1, noise, target) - a**0.5 * target) / (1 - a) ** 0.5
        assert abs(float(residual.std()) - 1) < 0.05 and float((residual - ddim).abs().mean()) > 0.5
        fresh_items.append(item)
    assert 0 < len(fresh_items) < sum(plain.draws(i)[1] == 1 for i in range(64))
    batch = {key: torch.stack([item[key] for item in fresh_items]) for key in fresh_items[0]}
    _, mse, _ = distill_loss(student.unet, batch, path, "sample")
    assert float(mse) == 0.0  # no MSE on fresh-noise windows: their x0* is not what their input determines
    batch["mse_weight"] = torch.stack([denoising[i]["mse_weight"] for i in range(64) if mixed.input_at(i, mixed.draws(i)[1], noise, target)[1]])
    assert float(distill_loss(student.unet, batch, path, "sample")[1]) > 0  # with fresh_noise_mse they have one


@pytest.mark.parametrize("uninterrupted, extra", [("distilled", []), ("distilled_adversarial", ADVERSARIAL),
                                                 ("distilled_per_stain", PER_STAIN), ("distilled_paired", PAIRED)],
                         ids=["mse", "adversarial", "per-stain", "paired"])
def test_kill_and_resume_equals_uninterrupted(uninterrupted, extra, distilled, teacher, phantom, tmp_path, request):
    from teramind_hf.cli import main

    full = request.getfixturevalue(uninterrupted)
    killed = tmp_path / "killed"
    shared = ["--targets", str(distilled / "teacher_targets.zarr"), *extra]  # the same records: no teacher sampling here
    cmd = [sys.executable, "-m", "teramind_hf.training.distill", *_args(teacher, phantom, killed, *RUN, *shared)]
    kill_at_checkpoint(cmd, killed, ENV)
    assert not (killed / "model_index.json").exists()
    assert main(["distill", *_args(teacher, phantom, killed, *RUN, *shared, "--resume_from_checkpoint", "latest")]) == 0
    assert (killed / "train_log.jsonl").read_text() == (full / "train_log.jsonl").read_text()
    full_w, resumed_w = _weights(full), _weights(killed)
    assert all(torch.equal(full_w[k], resumed_w[k]) for k in full_w)
    for name in ("discriminator.safetensors", "discriminator_optimizer.safetensors") if extra else ():
        full_d, resumed_d = (load_file(str(run / "checkpoint-4" / name)) for run in (full, killed))
        assert full_d.keys() == resumed_d.keys() and all(torch.equal(full_d[k], resumed_d[k]) for k in full_d), name
    teacher_w = load_file(str(teacher / "unet" / "diffusion_pytorch_model.safetensors"))
    assert any(not torch.equal(full_w[k], teacher_w[k]) for k in full_w)  # the student did train
    if "--discriminator_per_stain" in extra:  # one discriminator per stain in the checkpoint, named in the card
        assert {k.split(".")[1] for k in load_file(str(full / "checkpoint-4" / "discriminator.safetensors"))} == {"0", "1"}
        assert "one discriminator per stain (stain weights [1.5, 0.3])" in (full / "README.md").read_text()
    if "--discriminator_per_stain" in extra or "--discriminator_paired" in extra:  # the option changes the run
        adversarial_w = _weights(request.getfixturevalue("distilled_adversarial"))
        assert any(not torch.equal(full_w[k], adversarial_w[k]) for k in full_w)


def test_adversarial_stains_limit_what_the_discriminator_sees(one_torch_thread):
    """``--adversarial_stains 0``: the discriminator takes DAPI's sections alone, and its term sends no gradient to
    the other stain (which the MSE alone trains); with every stain, both get one."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from teramind_hf.training.distill_adversarial import Adversary

    cfg = SimpleNamespace(out_channels=2, num_slices=2, num_genes=3, gene_slices=4, sample_size=32, gene_bin=16)
    generator = torch.Generator().manual_seed(0)
    batch = {"real": torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1, "mask": torch.ones((1, 1, 32, 32)),
             "genes": torch.rand((2, 3, 4, 4, 4), generator=generator) * 5}
    grads = {}
    for stains in ((0,), None):
        adversary = Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, stains=stains)
        assert adversary.discriminator.image[0].in_channels == (1 if stains else 2) * cfg.num_slices
        out = (torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1).requires_grad_(True)
        adversary.generator_term(out, batch).backward()
        grads[stains] = out.grad.abs().flatten(2).sum(-1).sum(0)  # per stain
        assert torch.isfinite(adversary.update(out, batch))
    assert grads[(0,)][0] > 0 and grads[(0,)][1] == 0
    assert (grads[None] > 0).all()


def test_a_discriminator_per_stain_judges_each_stain_on_its_own(one_torch_thread):
    """``--discriminator_per_stain``: one discriminator per seen stain; stain s's logits depend on stain s's pixels
    alone, each part's first layer sees one stain's sections, and the student's term reaches every stain."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from teramind_hf.training.distill_adversarial import Adversary, StainwiseDiscriminator, patch_genes

    cfg = SimpleNamespace(out_channels=2, num_slices=2, num_genes=3, gene_slices=4, sample_size=32, gene_bin=16)
    generator = torch.Generator().manual_seed(0)
    batch = {"real": torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1, "mask": torch.ones((1, 1, 32, 32)),
             "genes": torch.rand((2, 3, 4, 4, 4), generator=generator) * 5}
    adversary = Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, per_stain=True)
    discriminator = adversary.accelerator.unwrap_model(adversary.discriminator)
    assert isinstance(discriminator, StainwiseDiscriminator) and len(discriminator.parts) == 2
    assert all(part.image[0].in_channels == cfg.num_slices for part in discriminator.parts)
    images = torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1
    genes = patch_genes(batch, 32, 16, 32)
    logits = discriminator(images, genes)
    assert logits.shape == (2, 2, 2, 2)  # (batch, stains, gene grid)
    for stain in (0, 1):
        changed = images.clone()
        changed[:, 1 - stain] = torch.rand((2, 2, 32, 32), generator=generator)  # the other stain only
        assert torch.equal(discriminator(changed, genes)[:, stain], logits[:, stain])
        assert not torch.equal(discriminator(changed, genes)[:, 1 - stain], logits[:, 1 - stain])
    out = images.clone().requires_grad_(True)
    adversary.generator_term(out, batch).backward()
    assert (out.grad.abs().flatten(2).sum(-1).sum(0) > 0).all()
    assert torch.isfinite(adversary.update(out, batch))
    # --adversarial_stain_weights: each stain's share of the student's term scaled by its weight; (1, 1) is the mean
    weighted = Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, per_stain=True, stain_weights=(1, 1))
    part = [(Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, per_stain=True, stain_weights=w)
             .generator_term(images, batch)) for w in ((1, 0), (0, 1), (2, 0.5))]
    plain = Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, per_stain=True).generator_term(images, batch)
    assert torch.allclose(weighted.generator_term(images, batch), plain)
    assert torch.allclose(part[0] + part[1], plain) and torch.allclose(part[2], 2 * part[0] + 0.5 * part[1])
    out = images.clone().requires_grad_(True)
    Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, per_stain=True,
              stain_weights=(1, 0)).generator_term(out, batch).backward()
    assert out.grad[:, 0].abs().sum() > 0 and out.grad[:, 1].abs().sum() == 0


def test_the_grid_options_take_a_name_or_a_json_schedule():
    """``--grid`` / ``--teacher_grid``: a schedule's name as given, a JSON object as its fields (per-step shifts
    have no name), anything else that starts like JSON refused by argparse."""
    from teramind_hf.sampling.schedule import resolve_grid
    from teramind_hf.training.distill import parse_args

    base = ["--teacher", "t", "--data", "d", "--output_dir", "o"]
    shifted = '{"shifts": [[32, 32], [0, 0], [0, 0]], "blend_offsets": [[0, 0], [16, 16]], "blend_steps": 1, "blend_power": 2}'
    args = parse_args([*base, "--grid", shifted, "--teacher_grid", "diagonal"])
    assert args.teacher_grid == "diagonal"
    grid = resolve_grid(args.grid)
    assert grid.offsets_at(0, 3) == ((32, 32),) and grid.offsets_at(1, 3) == ((0, 0),)
    assert grid.offsets_at(2, 3) == ((0, 0), (16, 16)) and grid.calls_per_tile(3) == 4
    for bad in ("{not json", "{}x", '{"shifts": 1'):
        with pytest.raises(SystemExit):
            parse_args([*base, "--grid", bad])


@pytest.mark.parametrize("per_stain", [False, True])
def test_a_paired_discriminator_judges_the_output_against_the_input(one_torch_thread, per_stain):
    """``--discriminator_paired``: the teacher's x0 of the window is real (not the true image), the discriminator
    sees the student's input x_t next to each output, and with one discriminator per stain, stain s's logits read
    stain s's output and input alone."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from teramind_hf.training.distill_adversarial import Adversary, patch_genes

    cfg = SimpleNamespace(out_channels=2, num_slices=2, num_genes=3, gene_slices=4, sample_size=32, gene_bin=16)
    generator = torch.Generator().manual_seed(0)

    def image():
        return torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1

    batch = {"real": image(), "x0": image(), "x_t": image(), "mask": torch.ones((1, 1, 32, 32)),
             "genes": torch.rand((2, 3, 4, 4, 4), generator=generator) * 5}

    def adversary():
        return Adversary(Accelerator(cpu=True), cfg, lr=1e-3, fill_value=-1.0, seed=0, per_stain=per_stain, paired=True)

    first = adversary()
    discriminator = first.accelerator.unwrap_model(first.discriminator)
    parts = discriminator.parts if per_stain else [discriminator]
    assert all(part.image[0].in_channels == 2 * cfg.num_slices * (1 if per_stain else 2) for part in parts)
    out = image()
    term = first.generator_term(out, batch)
    # real is the teacher's x0: the discriminator's loss moves with it and not with the true image
    loss = adversary().update(out, batch)
    assert torch.equal(adversary().update(out, {**batch, "real": image()}), loss)
    assert not torch.equal(adversary().update(out, {**batch, "x0": image()}), loss)
    # the input is part of what is judged
    assert not torch.equal(adversary().generator_term(out, {**batch, "x_t": image()}), term)
    if per_stain:
        genes = patch_genes(batch, 32, 16, 32)
        logits = discriminator(first._inputs(out, batch)[1], genes)
        for stain in (0, 1):
            x_t = batch["x_t"].clone()
            x_t[:, 1 - stain] = torch.rand((2, 2, 32, 32), generator=generator)  # the other stain's input only
            changed = discriminator(first._inputs(out, {**batch, "x_t": x_t})[1], genes)
            assert torch.equal(changed[:, stain], logits[:, stain])
            assert not torch.equal(changed[:, 1 - stain], logits[:, 1 - stain])


def test_discriminator_steps_are_that_many_adam_steps_on_the_batch(one_torch_thread):
    """``--discriminator_steps N``: N Adam steps of the discriminator on one training step's batch, the same as N
    one-step updates in a row; the loss returned is the first (what the student's step saw)."""
    from types import SimpleNamespace

    from accelerate import Accelerator

    from teramind_hf.training.distill_adversarial import Adversary

    cfg = SimpleNamespace(out_channels=2, num_slices=2, num_genes=3, gene_slices=4, sample_size=32, gene_bin=16)
    generator = torch.Generator().manual_seed(0)
    batch = {"real": torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1, "mask": torch.ones((1, 1, 32, 32)),
             "genes": torch.rand((2, 3, 4, 4, 4), generator=generator) * 5}
    out = torch.rand((2, 2, 2, 32, 32), generator=generator) * 2 - 1
    three = Adversary(Accelerator(cpu=True), cfg, lr=1e-2, fill_value=-1.0, seed=0, steps=3)
    one = Adversary(Accelerator(cpu=True), cfg, lr=1e-2, fill_value=-1.0, seed=0)
    first = three.update(out, batch)
    losses = [one.update(out, batch) for _ in range(3)]
    assert torch.equal(first, losses[0]) and losses[2] < losses[0]  # it learns on the batch
    for a, b in zip(three.discriminator.parameters(), one.discriminator.parameters()):
        assert torch.equal(a, b)
    fresh = Adversary(Accelerator(cpu=True), cfg, lr=1e-2, fill_value=-1.0, seed=0)
    fresh.update(out, batch)
    assert any(not torch.equal(a, b) for a, b in zip(three.discriminator.parameters(), fresh.discriminator.parameters()))


def test_the_adversarial_term_reaches_the_student_and_the_discriminator_learns(distilled, distilled_adversarial, phantom):
    import zarr

    from teramind_hf import TeraMindPipeline
    from teramind_hf.training.distill_adversarial import TruthRegions, build_discriminator
    from teramind_hf.training.losses import sample_seed

    # the same run without the term trains another student; the discriminator moved from its initial weights
    plain, adversarial = _weights(distilled), _weights(distilled_adversarial)
    assert any(not torch.equal(plain[k], adversarial[k]) for k in plain)
    records = [json.loads(line) for line in (distilled_adversarial / "train_log.jsonl").read_text().splitlines()]
    assert all(r["loss"] > r["mse"] - 1e-6 or r["adversarial"] < 0 for r in records)
    assert len({r["discriminator"] for r in records}) == len(records) and len({r["adversarial"] for r in records}) == len(records)
    student = TeraMindPipeline.from_pretrained(str(distilled_adversarial))
    trained = load_file(str(distilled_adversarial / "checkpoint-4" / "discriminator.safetensors"))
    initial = build_discriminator(student.unet.config, sample_seed(0, 0, 0, "discriminator-init")).state_dict()
    assert set(trained) == set(initial)
    assert any(not torch.equal(trained[k], initial[k]) for k in trained)  # its Adam stepped
    # the discriminator stays in the checkpoints: the student pipeline holds the UNet alone
    assert not [p for p in distilled_adversarial.rglob("*discriminator*") if not p.parent.name.startswith("checkpoint-")]
    # "real" is the region the record's genes come from: its genes are the store's genes there
    group = zarr.open_group(str(distilled / "teacher_targets.zarr"), mode="r")
    data = zarr.open_group(str(phantom), mode="r")
    truth = TruthRegions(phantom, seed=0, region=256, slices=2, gene_bin=16)
    margin = (student.unet.config.gene_slices - 2) // 2
    for record in range(2):
        start, top, left = truth.position(record)
        genes = data["genes"][:, start : start + 2, top // 16 : top // 16 + 16, left // 16 : left // 16 + 16]
        assert (group["genes"][record][:, margin : margin + 2] == genes).all()
        expected = data["images"][:, start : start + 2, top : top + 256, left : left + 256].astype("float32") / 127.5 - 1
        assert torch.equal(truth(record), torch.from_numpy(expected))


def test_processes_share_the_teacher_targets_and_make_the_same_records(distilled, teacher, phantom, tmp_path):
    """Under `accelerate launch` with 2 processes each process makes every other record (half of them);
    the store holds the bytes one process makes."""
    import subprocess

    import numpy as np
    import zarr

    out = tmp_path / "two"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "teramind_hf.training.distill"]
    done = subprocess.run([*launcher, *_args(teacher, phantom, out, "--max_train_steps", "1")], env=ENV, timeout=300,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):  # FAST asks for 2 records: one each
        assert f"process {rank} of 2: generated 1 teacher targets" in done.stderr, done.stderr[-3000:]
    assert json.loads((out / "train_summary.json").read_text())["world"] == 2
    one, two = (zarr.open_group(str(run / "teacher_targets.zarr"), mode="r") for run in (distilled, out))
    for name in ("genes", "noise", "target", "done"):
        np.testing.assert_array_equal(two[name][...], one[name][...])


def test_every_process_refuses_a_store_made_with_other_settings(distilled, teacher, phantom, tmp_path):
    """Under `accelerate launch` with 2 processes a wrong --targets store stops both processes with the named error
    (with the check on the main process alone, the other one died at the barrier with gloo's "Connection closed by
    peer" instead), and the store is untouched."""
    import subprocess

    store = distilled / "teacher_targets.zarr"
    before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "teramind_hf.training.distill"]
    argv = _args(teacher, phantom, tmp_path / "b", "--targets", str(store), "--seed", "5", "--max_train_steps", "1")
    done = subprocess.run([*launcher, *argv], env=ENV, timeout=240, capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.count("made with other settings (seed: store 0 vs this run 5)") >= 2, done.stderr[-3000:]
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before


def test_the_student_loads_and_samples_with_its_saved_steps_and_grid(distilled):
    from teramind_hf import TeraMindPipeline

    student = TeraMindPipeline.from_pretrained(str(distilled))
    assert (student.config.num_inference_steps, student.config.grid) == (2, "diagonal")
    from teramind_hf.hub_cards import check_model_card

    card = (distilled / "README.md").read_text()
    assert "not measured" in card.lower() and "4 model calls per tile" in card  # 2 steps x the diagonal pair
    assert check_model_card(distilled / "README.md") == []
    timesteps = []
    forward = student.unet.forward
    student.unet.forward = lambda x, t, g, **kw: (timesteps.append(int(torch.as_tensor(t).reshape(-1)[0])), forward(x, t, g, **kw))[1]
    genes = torch.poisson(torch.full((student.unet.config.num_genes, 2, 16, 16), 0.5), generator=torch.Generator().manual_seed(0))
    images = student(genes, gene_names=student.unet.config.gene_names, generator=0).images
    assert images.shape == (2, 2, 256, 256)
    assert timesteps == [999, 999, 499, 499]  # 2 steps x 2 offsets: 4 calls for the one tile


def test_distils_the_official_fixture_and_loads(phantom, tmp_path, one_torch_thread):
    """The recipe on the official architecture (converted small fixture, epsilon teacher, official DDIM grid)."""
    import zarr

    from teramind_hf import TeraMindPipeline
    from teramind_hf.cli import main
    from teramind_hf.convert.official import convert_official_checkpoint

    names = list(zarr.open_group(str(phantom), mode="r").attrs["gene_names"])
    config = json.loads((OFFICIAL_SMALL / "config.json").read_text())
    panel = (names + [f"Extra{i}" for i in range(config["rna_num"])])[: config["rna_num"]]
    official = tmp_path / "official"
    convert_official_checkpoint(OFFICIAL_SMALL / "model.safetensors", official, gene_names=panel)
    out = tmp_path / "student"
    assert main(["distill", *_args(official, phantom, out, "--max_train_steps", "2", "--student_steps", "1",
                                   "--prediction_type", "sample", "--num_teacher_samples", "1")]) == 0
    student = TeraMindPipeline.from_pretrained(str(out))
    assert student.config.num_inference_steps == 1 and student.config.grid == "official"
    assert student.scheduler.config.prediction_type == "sample"
    assert student.unet.config.block_out_channels == TeraMindPipeline.from_pretrained(str(official)).unet.config.block_out_channels
    genes = torch.zeros((len(panel), 2, 16, 16))
    assert student(genes, gene_names=panel, generator=0).images.shape == (2, student.unet.config.out_channels, 256, 256)


def test_the_seam_term_is_the_errors_step_across_patch_edges():
    """seam_jumps: a step between two output patches' errors is counted once per edge segment, an error that is the
    same on both sides of an edge costs nothing, and a jump reaching outside the region is left out."""
    from teramind_hf.training.distill_windows import seam_jumps

    offsets = torch.tensor([[0.0, 1.0], [3.0, 7.0]])  # per output patch (row, column) of a 2 x 2-patch window
    error = offsets.repeat_interleave(64, 0).repeat_interleave(64, 1).expand(1, 2, 2, 128, 128)
    mask = torch.ones_like(error)
    for band in (1, 8):
        jumps, valid = seam_jumps(error, mask, 64, band)
        per_edge = 2 * 2 * 128 // band  # stains x sections x segments along the edge
        assert jumps.shape == (1, 2 * per_edge) and bool(valid.all())
        # the y edge: row 1 minus row 0 (3 and 6 along the left and right halves); the x edge: 1 and 4
        assert sorted(set(jumps.flatten().tolist())) == [1.0, 3.0, 4.0, 6.0]
        assert float(jumps.square().mean()) == pytest.approx((9 + 36 + 1 + 16) / 4)
        # a ramp along x steps by 1 per pixel everywhere: no step across a y edge, and the band's width across the x
        # edge (the mean of the band after it minus the mean of the band before it)
        ramp = torch.arange(128.0).expand(1, 2, 2, 128, 128)
        jumps = seam_jumps(ramp, mask, 64, band)[0]
        assert torch.equal(jumps[:, :per_edge], torch.zeros(1, per_edge))
        assert torch.equal(jumps[:, per_edge:], torch.full((1, per_edge), float(band)))
    # one pixel, its neighbour across the x edge, and 8-px bands: only what lies wholly in the region counts
    jumps, valid = seam_jumps(error, mask * (torch.arange(128) < 66).float(), 64, 1)
    assert int(valid.sum()) == 2 * 2 * (128 + 66)  # the x edge (columns 63 | 64) whole, the y edge on columns 0..65
    jumps, valid = seam_jumps(error, mask * (torch.arange(128) < 66).float(), 64, 8)
    assert int(valid.sum()) == 2 * 2 * 8  # x edge: its right band (64..71) leaves the region; y edge: 8 segments


def test_a_seam_weight_trains_on_wide_windows_and_adds_the_term(distilled, teacher, phantom, tmp_path, one_torch_thread):
    from teramind_hf.cli import main

    out = tmp_path / "seam"
    shared = ["--targets", str(distilled / "teacher_targets.zarr")]
    assert main(["distill", *_args(teacher, phantom, out, *RUN, *shared, "--window_patches", "2", "--seam_weight", "1",
                                   "--seam_band", "8")]) == 0
    records = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(r["loss"] > r["mse"] * 1.001 for r in records)
    plain = [json.loads(line) for line in (distilled / "train_log.jsonl").read_text().splitlines()]
    assert all(a["mse"] != b["mse"] for a, b in zip(records, plain))  # other windows, not the 1-patch ones
    card = (out / "README.md").read_text()
    assert "windows of 2 x 2 output patches" in card and "weight 1.0 over 8-px bands" in card


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--student_steps", "0"], "--student_steps must be >= 1"),
        (["--grid", "nope"], "--grid: unknown grid schedule"),
        (["--teacher_region_size", "100"], "--teacher_region_size must be whole 256-px tiles"),
        (["--data", "missing.zarr"], "--data missing.zarr: no such file or directory"),
        (["--teacher", "./missing"], "--teacher ./missing: cannot load a TeraMindPipeline"),
        (["--adversarial_weight", "-1"], "--adversarial_weight must be >= 0"),
        (["--adversarial_weight", "1", "--prediction_type", "epsilon"], "--adversarial_weight needs a student predicting x0"),
        (["--adversarial_weight", "1", "--discriminator_lr", "0"], "--discriminator_lr must be > 0"),
        (["--adversarial_stains", "0"], "--adversarial_stains needs --adversarial_weight > 0"),
        (["--adversarial_weight", "1", "--adversarial_stains", "2"], "--adversarial_stains: distinct stain indices in 0..1"),
        (["--fresh_noise_fraction", "0.5"], "--fresh_noise_fraction needs --adversarial_weight > 0"),
        (["--adversarial_weight", "1", "--fresh_noise_fraction", "1.5"], "--fresh_noise_fraction must be in [0, 1]"),
        (["--fresh_noise_mse"], "--fresh_noise_mse needs --fresh_noise_fraction > 0"),
        (["--adversarial_weight", "1", "--discriminator_steps", "0"], "--discriminator_steps must be >= 1"),
        (["--discriminator_steps", "2"], "--discriminator_steps needs --adversarial_weight > 0"),
        (["--discriminator_per_stain"], "--discriminator_per_stain needs --adversarial_weight > 0"),
        (["--adversarial_weight", "1", "--discriminator_per_stain", "--adversarial_stains", "1"],
         "--discriminator_per_stain needs at least two stains seen"),
        (["--adversarial_weight", "1", "--adversarial_stain_weights", "1", "0.5"],
         "--adversarial_stain_weights needs --discriminator_per_stain"),
        (["--adversarial_weight", "1", "--discriminator_per_stain", "--adversarial_stain_weights", "1"],
         "--adversarial_stain_weights: one weight >= 0 per stain the discriminator sees (2)"),
        (["--discriminator_paired"], "--discriminator_paired needs --adversarial_weight > 0"),
        (["--grid", '{"shift": [[32, 32]]}'], "--grid: grid schedule: unknown fields ['shift']; known: ['shifts', 'blend_offsets', 'blend_steps', 'blend_period', 'blend_power']"),
        (["--grid", '{"shifts": [[32, 32]], "blend_steps": 1}'], "--grid: grid schedule: blending needs at least two blend_offsets"),
        (["--seam_weight", "1"], "--seam_weight needs --window_patches >= 2"),
        (["--window_patches", "0"], "--window_patches must be >= 1"),
        (["--window_patches", "5"], "--window_patches 5: a 256-px teacher region holds 4 patches of 64 px per side"),
        (["--window_patches", "2", "--seam_weight", "1", "--seam_band", "3"], "--seam_band 3: must divide the model's 64-px patch"),
    ],
)
def test_bad_options_exit_2_with_one_line(teacher, phantom, tmp_path, capsys, extra, message, monkeypatch):
    from teramind_hf.cli import main

    monkeypatch.chdir(tmp_path)
    argv = ["distill", "--teacher", str(teacher), "--data", str(phantom), "--output_dir", str(tmp_path / "out"), *extra]
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1] and lines[-1].startswith("teramind distill: error:"), lines
    assert not (tmp_path / "out").exists()


def test_a_target_store_made_with_other_settings_is_refused(distilled, teacher, phantom, tmp_path, capsys):
    from teramind_hf.cli import main

    store = distilled / "teacher_targets.zarr"
    before = sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*"))
    argv = ["distill", *_args(teacher, phantom, tmp_path / "b", "--targets", str(store), "--seed", "5")]
    assert main(argv) == 2
    assert "made with other settings (seed: store 0 vs this run 5)" in capsys.readouterr().err.strip().splitlines()[-1]
    assert sorted((p.relative_to(store), p.stat().st_mtime_ns) for p in store.rglob("*")) == before
