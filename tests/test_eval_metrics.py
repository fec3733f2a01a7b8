"""Known answers of the realism metrics (teramind_hf.eval): constructed inputs whose right values are known."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import zarr
from scipy import ndimage as ndi

from teramind_hf.data.phantom import make_phantom
from teramind_hf.eval import (
    border_score,
    fidelity_metrics,
    high_frequency_ratio,
    intensity_histogram_distance,
    nuclei_metrics,
    power_spectrum_distance,
    radial_power_spectrum,
    realism_metrics,
    segment_nuclei,
    step_profile,
    worst_phase_border_score,
)
from teramind_hf.eval.nuclei import match_centroids, nucleus_table

UM_PER_PX = 0.5


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_torch_thread):
    """MS-SSIM runs in torch."""


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(192, 192, num_slices=2, seed=3, um_per_px=UM_PER_PX)


def disks(radius_px: float, shape=(240, 240), spacing=40, offset=20.3, keep=None):
    """uint8 image of bright disks on a dark background, their centres and digital areas (pixel counts)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 10, np.uint8)
    centres, areas = [], []
    for i, cy in enumerate(np.arange(offset, shape[0] - radius_px, spacing)):
        for j, cx in enumerate(np.arange(offset + 0.3, shape[1] - radius_px, spacing)):
            if keep is not None and not keep(i, j):
                continue
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius_px**2
            image[inside] = 200
            centres.append((cy, cx))
            areas.append(int(inside.sum()))
    return image, np.array(centres), np.array(areas)


# --- nuclei -------------------------------------------------------------------------------------------------


def test_disks_are_counted_and_measured_exactly():
    for um_per_px, radius_px in ((0.5, 8.0), (0.25, 16.0)):  # the same 8 um nuclei at two pixel sizes
        image, centres, areas = disks(radius_px, shape=(int(240 * 0.5 / um_per_px),) * 2, spacing=20 / um_per_px,
                                      offset=10.3 / um_per_px)
        table = nucleus_table(segment_nuclei(image, um_per_px), um_per_px)
        assert len(table["y"]) == len(centres) == 36
        found, expected = match_centroids(np.column_stack([table["y"], table["x"]]), centres, 0.5)
        assert len(found) == 36  # every centroid within half a pixel of the disk's centre
        # Areas: a boundary pixel is in or out depending on where the smoothed edge crosses Otsu's threshold, so
        # the digital disk's pixel count is met within a quarter of its ~2*pi*r boundary pixels (~1-2 %).
        area_px = table["area_um2"][found] / um_per_px**2
        assert np.all(np.abs(area_px - areas[expected]) <= 0.25 * 2 * np.pi * radius_px)
        assert np.median(table["area_um2"]) == pytest.approx(np.pi * 4.0**2, rel=0.03)  # an 8 um disk: 50.3 um^2
        assert np.all(table["eccentricity"] < 0.3)  # sqrt(1 - b^2/a^2): a 2.5 % axis gap from pixel steps is 0.22


def test_disk_detection_scores():
    image, _, _ = disks(8.0)
    half, _, _ = disks(8.0, keep=lambda i, j: (i + j) % 2 == 0)
    same = nuclei_metrics(image, image, UM_PER_PX)
    assert same["count_truth"] == same["count_generated"] == 36
    assert same["f1"] == same["precision"] == same["recall"] == 1.0
    assert same["count_error"] == 0.0 and same["area_wasserstein_um2"] == 0.0 and same["merged_rate"] == 0.0
    missing = nuclei_metrics(half, image, UM_PER_PX)  # half the true nuclei generated
    assert missing["precision"] == 1.0 and missing["recall"] == 0.5 and missing["count_error"] == -0.5
    assert missing["f1"] == pytest.approx(2 / 3)
    extra = nuclei_metrics(image, half, UM_PER_PX)  # twice as many generated as true
    assert extra["precision"] == 0.5 and extra["recall"] == 1.0 and extra["count_error"] == 1.0
    near = nuclei_metrics(np.roll(image, 6, axis=1), image, UM_PER_PX)  # moved by 3 um < 5 um: still found
    assert near["f1"] == 1.0
    far = nuclei_metrics(np.roll(image, 14, axis=1), image, UM_PER_PX)  # moved by 7 um > 5 um: all missed
    assert far["f1"] == 0.0 and far["count_error"] == 0.0
    assert nuclei_metrics(image, image, UM_PER_PX, match_distance_um=8.0)["f1"] == 1.0


def test_merged_and_resized_nuclei():
    yy, xx = np.mgrid[:240, :240]
    truth = np.full((240, 240), 10, np.uint8)
    fused = truth.copy()
    for cy in (40.3, 120.3, 200.3):
        for cx in (30.6, 110.6, 190.6):  # pairs of 8 um nuclei, centres 10 um apart (a 2 um gap between them)
            for dx in (-10, 10):
                truth[(yy - cy) ** 2 + (xx - cx - dx) ** 2 <= 64] = 200
            # generated: one capsule holding both (every point within 4 um of the segment between the centres)
            along = np.clip(xx - cx, -10, 10)
            fused[(yy - cy) ** 2 + (xx - cx - along) ** 2 <= 64] = 200
    result = nuclei_metrics(fused, truth, UM_PER_PX)
    assert result["count_truth"] == 18 and result["count_generated"] == 9 and result["merged_rate"] == 1.0
    assert nuclei_metrics(truth, truth, UM_PER_PX)["merged_rate"] == 0.0
    big, _, _ = disks(10.0)  # 10 um instead of 8 um disks: areas differ by pi * (5^2 - 4^2) = 28.3 um^2
    small, _, _ = disks(8.0)
    assert nuclei_metrics(big, small, UM_PER_PX)["area_wasserstein_um2"] == pytest.approx(np.pi * 9, rel=0.05)


def test_phantom_nuclei_are_found(phantom):
    """The segmentation finds the phantom's own nuclei: ground truth cells are known."""
    for z in range(2):
        table = nucleus_table(segment_nuclei(phantom.images[0, z], UM_PER_PX), UM_PER_PX)
        cells = phantom.cells[phantom.cells.z == z]
        found, _ = match_centroids(np.column_stack([table["y"], table["x"]]), cells[["y", "x"]].to_numpy(), 10)
        assert len(found) >= 0.95 * len(cells) and len(table["y"]) <= 1.05 * len(cells)


def test_flat_and_float_images(phantom):
    assert segment_nuclei(np.zeros((64, 64), np.uint8), UM_PER_PX).max() == 0
    dapi = phantom.images[0, 0]
    as_float = dapi.astype(np.float32) / 127.5 - 1.0  # the model's [-1, 1] range gives the same nuclei
    assert np.array_equal(segment_nuclei(as_float, UM_PER_PX), segment_nuclei(dapi, UM_PER_PX))


def test_nuclei_input_errors(phantom):
    dapi = phantom.images[0, 0]
    with pytest.raises(ValueError, match="shape"):
        nuclei_metrics(dapi, dapi[:100], UM_PER_PX)
    with pytest.raises(ValueError, match="um_per_px"):
        segment_nuclei(dapi, 0)
    with pytest.raises(ValueError, match="unknown nuclei segmentation method"):
        segment_nuclei(dapi, UM_PER_PX, method="magic")
    with pytest.raises(ValueError, match="uint8"):
        segment_nuclei(dapi.astype(np.int64), UM_PER_PX)
    if importlib.util.find_spec("cellpose") is None:
        with pytest.raises(ValueError, match="pip install cellpose"):
            segment_nuclei(dapi, UM_PER_PX, method="cellpose")


# --- fidelity, spectra, histograms -----------------------------------------------------------------------------


def test_identical_shifted_blurred_noise(phantom):
    truth = phantom.images[0, 0]
    shifted = np.roll(truth, 2, axis=1)
    blurred = ndi.gaussian_filter(truth.astype(np.float32), 8).round().astype(np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, truth.shape, dtype=np.uint8)

    same = fidelity_metrics(truth, truth)
    assert same["psnr"] == np.inf and same["ssim"] == 1.0 and same["ms_ssim"] == pytest.approx(1.0)
    assert same["psnr_pool4"] == np.inf and same["ssim_pool4"] == 1.0
    assert power_spectrum_distance(truth, truth) == 0.0
    assert high_frequency_ratio(truth, truth) == 1.0
    assert intensity_histogram_distance(truth, truth) == 0.0

    # shifted by 2 px: the pixels disagree, the texture and the intensities do not
    moved = fidelity_metrics(shifted, truth)
    assert 10 < moved["psnr"] < 40 and moved["ssim"] < 0.9
    assert moved["psnr_pool4"] > moved["psnr"]  # pooling forgives part of the shift
    assert power_spectrum_distance(shifted, truth) < 0.1
    assert high_frequency_ratio(shifted, truth) == pytest.approx(1.0, abs=0.1)
    assert intensity_histogram_distance(shifted, truth) == 0.0  # a circular shift keeps every value

    # blurred: little high-frequency power, a far spectrum; yet PSNR prefers it to another real section
    assert high_frequency_ratio(blurred, truth) < 0.05
    assert power_spectrum_distance(blurred, truth) > 0.5
    other_section = phantom.images[0, 1]
    assert fidelity_metrics(blurred, truth)["psnr"] > fidelity_metrics(other_section, truth)["psnr"]
    assert 0.5 < high_frequency_ratio(other_section, truth) < 2  # another real section: the same kind of texture

    # pure noise: far too much high-frequency power, no structure, no nuclei worth the name
    assert high_frequency_ratio(noise, truth) > 10
    assert abs(fidelity_metrics(noise, truth)["ssim"]) < 0.1
    assert intensity_histogram_distance(noise, truth) > 50
    # noise blobs match true nuclei only by chance: ~30 % of this tissue lies within 5 um of a nucleus centre
    assert nuclei_metrics(noise, truth, UM_PER_PX)["f1"] < 0.45


def test_sinusoid_spectrum_peaks_at_its_frequency():
    yy, xx = np.mgrid[:128, :128]
    for fy, fx in ((0, 8 / 128), (3 / 128, 4 / 128), (0, 20 / 128)):
        wave = np.sin(2 * np.pi * (fy * yy + fx * xx)).astype(np.float32) * 0.8  # float in [-1, 1]
        freq, power = radial_power_spectrum(wave)
        assert freq[np.argmax(power)] == pytest.approx(np.hypot(fy, fx), abs=0.5 / 128)
        assert freq[0] == pytest.approx(1 / 128) and freq[-1] == pytest.approx(0.5)
    low = 0.5 * np.sin(2 * np.pi * xx / 32).astype(np.float32)  # 1/32 cycle/px: below the 1/8 cutoff
    high = np.sin(2 * np.pi * xx / 4).astype(np.float32)  # 1/4 cycle/px: above it (sums stay inside [-1, 1])
    assert high_frequency_ratio(low + 0.1 * high, low + 0.2 * high) == pytest.approx(0.25, rel=0.02)  # power ~ amp^2


# --- grid-line border scores ---------------------------------------------------------------------------------


def smooth_field(shape, seed=0, sigma=4.0):
    noise = np.random.default_rng(seed).normal(size=shape)
    field = ndi.gaussian_filter(noise, (0,) * (len(shape) - 2) + (sigma, sigma))
    return (field / np.abs(field).max()).astype(np.float32)


def test_grid_lines_score_high_at_their_period_and_phase():
    field = smooth_field((2, 256, 256))
    yy, xx = np.mgrid[:256, :256]
    offsets = np.random.default_rng(1).normal(0, 0.3, (5, 5))
    gridded = field + offsets[(yy - 10) // 64 + 1, (xx - 10) // 64 + 1]  # constant jumps at lines 10 + 64k
    assert border_score(gridded, 64, phase=10) > 3
    assert border_score(gridded, 64, phase=42) < 1  # off the lines: the grid's jumps now count as "elsewhere"
    score, phases = worst_phase_border_score(gridded, 64)
    assert phases == (10, 10) and score == pytest.approx(border_score(gridded, 64, 10))
    assert worst_phase_border_score(step_profile(gridded), 64) == (score, phases)  # a (pooled) profile scores alike
    # a smooth random field shows no grid at any phase
    assert worst_phase_border_score(field, 64)[0] == pytest.approx(1.0, abs=0.15)
    assert worst_phase_border_score(field, 32)[0] == pytest.approx(1.0, abs=0.15)
    with pytest.raises(ValueError, match="period"):
        border_score(field, 1)


def test_2d_phases_pooling_and_the_shuffled_null():
    field = smooth_field((2, 256, 256))
    yy, xx = np.mgrid[:256, :256]
    rng = np.random.default_rng(2)
    # jumps on rows 20 + 64k and on columns 40 + 64k: one phase per axis, which a single shared phase misses
    moved = field + rng.normal(0, 0.3, (5, 1))[(yy - 20) // 64 + 1, 0] + rng.normal(0, 0.3, (1, 5))[0, (xx - 40) // 64 + 1]
    profile = step_profile(moved)
    score, phases = profile.worst_phase_2d(64)
    assert phases == (20, 40) and score > max(profile.score(64, p) for p in range(64)) and score > 2
    assert worst_phase_border_score(moved, 64) == (score, phases)
    pooled = profile + step_profile(field)  # two regions of one geometry: sums add, the grid is diluted
    assert 1 < pooled.worst_phase_2d(64)[0] < score and pooled.worst_phase_2d(64)[1] == (20, 40)
    with pytest.raises(ValueError, match="shapes"):
        profile + step_profile(field[..., :128])
    # the null: the same lines shuffled carry no period; the grid scores far above it, the plain field inside it
    assert score > np.percentile(profile.shuffled_null(64, draws=10), 95)
    plain = step_profile(field)
    null = plain.shuffled_null(64, draws=10)
    assert null.min() - 0.1 < plain.worst_phase_2d(64)[0] < null.max() + 0.1


def test_step_profile_blocks_and_zarr_agree(phantom, tmp_path):
    volume = phantom.images  # (2, Z, H, W) uint8
    store = zarr.open_array(str(tmp_path / "v.zarr"), mode="w", shape=volume.shape, chunks=(1, 1, 64, 64), dtype="u1")
    store[:] = volume
    whole = step_profile(volume)
    blocked = step_profile(store, block=50)  # blocks that do not divide 192, read from zarr
    assert np.array_equal(whole.y_sum, blocked.y_sum) and np.array_equal(whole.x_sum, blocked.x_sum)
    assert np.array_equal(whole.x_sum, np.abs(np.diff(volume.astype(np.int16), axis=-1)).sum(axis=(0, 1, 2)))
    assert np.array_equal(whole.y_sum, np.abs(np.diff(volume.astype(np.int16), axis=-2)).sum(axis=(0, 1, 3)))
    assert 0.9 < worst_phase_border_score(volume, 64)[0] < 1.3  # the phantom's own images: no grid


# --- all metrics of a volume ---------------------------------------------------------------------------------


def test_realism_metrics_of_a_volume(phantom):
    truth = np.ascontiguousarray(phantom.images.transpose(1, 0, 2, 3))  # (Z, 2, H, W)
    blurred = ndi.gaussian_filter(truth.astype(np.float32), (0, 0, 8, 8)).round().astype(np.uint8)
    same = realism_metrics(truth, truth, UM_PER_PX)
    assert len(same["sections"]) == 2
    mean = same["mean"]
    assert mean["nuclei_f1"] == 1.0 and mean["dapi_psnr"] == np.inf and mean["polyt_ssim"] == 1.0
    assert mean["dapi_hf_ratio"] == 1.0 and mean["polyt_spectrum_distance"] == 0.0
    assert mean["border_64"] == mean["border_64_truth"] and "border_256" not in mean  # 256 px does not fit
    blur = realism_metrics(blurred, truth, UM_PER_PX)["mean"]
    assert blur["dapi_hf_ratio"] < 0.1 and blur["polyt_hf_ratio"] < 0.1
    with pytest.raises(ValueError, match=r"\(Z, 2, H, W\)"):
        realism_metrics(truth[:, :1], truth[:, :1], UM_PER_PX)
    with pytest.raises(ValueError, match="shape"):
        realism_metrics(truth, truth[:1], UM_PER_PX)
