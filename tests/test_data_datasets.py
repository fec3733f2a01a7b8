"""Training store, PatchDataset (shapes, windows, augmentation, determinism, memory), HF export."""

import json
import subprocess
import sys
import textwrap

import datasets
import numpy as np
import pytest
import torch

from teramind_hf.data.datasets import (
    PatchDataset,
    create_training_store,
    from_hf_dataset,
    read_training_store,
    save_hf_dataset,
    to_hf_dataset,
    write_training_store,
)
from teramind_hf.data.panel import GenePanel
from teramind_hf.data.phantom import make_phantom


@pytest.fixture(scope="module")
def volume():
    return make_phantom(128, 160, 3, seed=2, um_per_px=0.5).to_volume()


@pytest.fixture(scope="module")
def store(volume, tmp_path_factory):
    return write_training_store(volume, tmp_path_factory.mktemp("store") / "train.zarr", chunk=64)


def test_store_round_trip(volume, store):
    back = read_training_store(store)
    np.testing.assert_array_equal(back.genes, volume.genes)
    np.testing.assert_array_equal(back.images, volume.images)
    assert back.panel == volume.panel and back.gene_bin == 16


def test_sample_layout_matches_official_training(volume, store):
    ds = PatchDataset(store, crop_size=64, length=40, seed=0, augment=False)
    for i in range(len(ds)):
        s = ds[i]
        assert s["images"].shape == (2, 2, 64, 64) and s["images"].dtype == torch.float32
        assert s["genes"].shape == (len(volume.panel), 4, 4, 4) and s["genes"].dtype == torch.float32
        z, top, left = int(s["z"]), int(s["top"]), int(s["left"])
        img = volume.images[:, z : z + 2, top : top + 64, left : left + 64]
        np.testing.assert_array_equal(s["images"].numpy(), img.astype(np.float32) / 127.5 - 1)
        for k, gz in enumerate(range(z - 1, z + 3)):
            expected = (
                volume.genes[:, gz, top // 16 : top // 16 + 4, left // 16 : left // 16 + 4]
                if 0 <= gz < volume.num_slices
                else 0
            )
            np.testing.assert_array_equal(s["genes"][:, k].numpy(), expected)
    assert {int(ds[i]["z"]) for i in range(len(ds))} == {0, 1}  # both ends padded at some point


def test_augmentation_same_on_images_and_genes(store):
    plain = PatchDataset(store, crop_size=64, length=30, seed=4, augment=False)
    aug = PatchDataset(store, crop_size=64, length=30, seed=4, augment=True)
    changed = 0
    for i in range(30):
        a, p = aug[i], plain[i]
        assert (int(a["z"]), int(a["top"]), int(a["left"])) == (int(p["z"]), int(p["top"]), int(p["left"]))
        found = False
        for rot in range(4):
            for flip in (False, True):
                im, gn = torch.rot90(p["images"], rot, (-2, -1)), torch.rot90(p["genes"], rot, (-2, -1))
                if flip:
                    im, gn = im.flip(-1), gn.flip(-1)
                if torch.equal(im, a["images"]) and torch.equal(gn, a["genes"]):
                    found = True
                    changed += (rot, flip) != (0, False)
        assert found
    assert changed > 10


def test_deterministic_with_seed(store):
    a = [PatchDataset(store, crop_size=64, length=8, seed=9)[i] for i in range(8)]
    b = [PatchDataset(store, crop_size=64, length=8, seed=9)[i] for i in range(8)]
    assert all(torch.equal(x["images"], y["images"]) and torch.equal(x["genes"], y["genes"]) for x, y in zip(a, b))
    other = PatchDataset(store, crop_size=64, length=8, seed=9)
    other.set_epoch(1)
    assert not all(torch.equal(x["images"], other[i]["images"]) for i, x in enumerate(a))
    loader = torch.utils.data.DataLoader(PatchDataset(store, crop_size=64, length=8, seed=9), batch_size=4)
    batch = next(iter(loader))
    assert batch["images"].shape == (4, 2, 2, 64, 64)
    assert torch.equal(batch["images"][1], a[1]["images"])


def test_bad_dataset_arguments(store, tmp_path):
    with pytest.raises(ValueError, match="crop_size=40 must be a multiple of gene_bin=16"):
        PatchDataset(store, crop_size=40)
    with pytest.raises(ValueError, match="crop_size=256 exceeds"):
        PatchDataset(store, crop_size=256)
    with pytest.raises(FileNotFoundError, match="training store not found"):
        PatchDataset(tmp_path / "nope.zarr")


def test_hf_round_trip_bit_identical(volume, tmp_path):
    ds = to_hf_dataset(volume)
    assert len(ds) == volume.num_slices
    save_hf_dataset(volume, tmp_path / "hf", name="phantom-test")
    back = from_hf_dataset(datasets.load_from_disk(str(tmp_path / "hf")))
    assert back.genes.dtype == np.float32 and back.images.dtype == np.uint8
    assert back.genes.tobytes() == volume.genes.tobytes()
    assert back.images.tobytes() == volume.images.tobytes()
    assert back.panel == volume.panel and back.gene_bin == volume.gene_bin and back.um_per_px == volume.um_per_px
    card = (tmp_path / "hf" / "README.md").read_text()
    assert card.startswith("---\n") and "license: apache-2.0" in card and "# phantom-test" in card
    with pytest.raises(ValueError, match=r"missing column\(s\) \['genes'\]"):
        from_hf_dataset(ds.remove_columns("genes"))


_RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, psutil, torch
    from teramind_hf.data.datasets import PatchDataset
    proc = psutil.Process()
    ds = PatchDataset(sys.argv[1], crop_size=256, length=150, seed=0)
    ds[0]
    base = proc.memory_info().rss
    peak = base
    for i in range(1, len(ds)):
        s = ds[i]
        assert s["images"].shape == (2, 2, 256, 256)
        peak = max(peak, proc.memory_info().rss)
    print(json.dumps({"growth": peak - base}))
    """
)


def test_iterating_large_store_keeps_memory_flat(tmp_path):
    """A ~300 MB uncompressed store, written chunk by chunk; iterating must not load it."""
    panel = GenePanel([f"g{i}" for i in range(8)])
    z, side = 4, 6144
    group = create_training_store(tmp_path / "big.zarr", panel, z, side, side, compressors=None, chunk=256)
    rng = np.random.default_rng(0)
    block = rng.integers(0, 255, (256, side), dtype=np.uint8)
    for s in range(2):
        for k in range(z):
            for r in range(0, side, 256):
                group["images"][s, k, r : r + 256] = np.roll(block, r + k, axis=1)
    group["genes"][:] = 1.0
    store_bytes = sum(p.stat().st_size for p in (tmp_path / "big.zarr").rglob("*") if p.is_file())
    assert store_bytes > 290e6
    result = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(tmp_path / "big.zarr")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    growth = json.loads(result.stdout.strip().splitlines()[-1])["growth"]
    assert growth < store_bytes / 4, (growth, store_bytes)
