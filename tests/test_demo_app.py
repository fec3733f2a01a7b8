"""The Gradio demo, driven for real: a headless Chromium clicks through the page, gradio_client calls /generate.

The app is launched once per module on 127.0.0.1 with a free port. Browser tests need /usr/bin/chromium (Debian's
`chromium`, which .ci/run installs): without it they fail, unless TERAMIND_SKIP_BROWSER_TESTS=1 says a machine
has no browser on purpose. The API test needs no browser.
"""

from __future__ import annotations

import importlib.util
import io
import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STEPS = 2  # smallest useful sampling: the tests check wiring, not image quality
TIMEOUT_MS = 180_000

SKIP_BROWSER = os.environ.get("TERAMIND_SKIP_BROWSER_TESTS") == "1"
needs_chromium = pytest.mark.skipif(SKIP_BROWSER, reason="TERAMIND_SKIP_BROWSER_TESTS=1: no headless browser on this machine")


def load_app():
    """Import demo/app.py as a module (demo/ is an app folder, not a package)."""
    if "teramind_demo_app" in sys.modules:
        return sys.modules["teramind_demo_app"]
    spec = importlib.util.spec_from_file_location("teramind_demo_app", ROOT / "demo" / "app.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["teramind_demo_app"] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def server(app):
    """The demo running on 127.0.0.1:<free port>; yields its URL."""
    demo = app.build_demo().queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **app.launch_options())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM.exists(), (
        f"headless browser tests need {CHROMIUM} (apt-get install chromium), or TERAMIND_SKIP_BROWSER_TESTS=1 to skip them"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1500, "height": 1900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#generate").wait_for(state="visible")
    try:
        yield page
    finally:
        context.close()


def set_number(page, elem_id: str, value: int) -> None:
    """Type into a gr.Number and leave it, so Gradio takes the value."""
    field = page.locator(f"#{elem_id} input")
    field.fill(str(value))
    field.press("Tab")


def upload_file(page, path: Path) -> None:
    """Give the #upload gr.File a file and wait until the server has it.

    The wait is on the upload request's response (the thing Generate needs), not on how a given Gradio version
    renders the file name; on failure the message carries what the component shows.
    """
    with page.expect_response(lambda r: "/upload" in r.url and r.request.method == "POST", timeout=60_000) as upload:
        page.locator("#upload input[type=file]").set_input_files(str(path))
    response = upload.value
    assert response.ok, f"upload of {path.name} failed: HTTP {response.status} {response.text()[:300]}"
    shown = page.locator("#upload")
    try:
        shown.get_by_text(path.stem).first.wait_for(state="visible", timeout=60_000)
    except Exception as err:  # noqa: BLE001 - re-raised with what the page shows
        raise AssertionError(f"#upload does not show {path.name} after upload; it shows: {shown.inner_text()!r}") from err


def image_pixels(page, elem_id: str) -> np.ndarray:
    """The rendered pixels of a gr.Image, read from a screenshot of its <img> element."""
    from PIL import Image

    png = page.locator(f"#{elem_id} img").first.screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float32)


@needs_chromium
def test_generate_in_browser_shows_non_blank_images(page, tmp_path):
    set_number(page, "steps", STEPS + 2)
    page.locator("#generate").click()
    page.get_by_text("sampling: step").first.wait_for(state="visible")  # gr.Progress fed by the pipeline callback
    for elem_id in ("gen_dapi", "gen_polyt", "true_dapi", "true_polyt", "heat", "attention"):
        page.locator(f"#{elem_id} img").first.wait_for(state="visible")
    page.locator("#status").get_by_text("Generated 2 section(s)").wait_for(state="visible")
    for elem_id in ("gen_dapi", "gen_polyt", "true_dapi", "heat", "attention"):
        pixels = image_pixels(page, elem_id)
        assert pixels.var() > 1.0, f"{elem_id} looks blank (pixel variance {pixels.var():.3f})"
    shot = tmp_path / "demo_generate.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000


@needs_chromium
def test_oversized_request_is_refused_in_page(page, tmp_path):
    set_number(page, "width", 1024)
    set_number(page, "height", 1024)
    page.locator("#generate").click()
    status = page.locator("#status")
    status.get_by_text("16 tiles per section").wait_for(state="visible")
    set_number(page, "width", 256)
    set_number(page, "height", 256)
    set_number(page, "steps", 500)
    page.locator("#generate").click()
    status.get_by_text("500 steps requested").wait_for(state="visible")
    assert "Refused" in status.inner_text()
    page.screenshot(path=str(tmp_path / "demo_refused.png"), full_page=True)


@needs_chromium
def test_malformed_upload_shows_readable_error(page, tmp_path):
    bad = tmp_path / "broken.csv"
    bad.write_text("a,b,c\n1,2,3\nnot,a,table\n")
    page.get_by_label("Uploaded table").check()
    upload_file(page, bad)
    set_number(page, "steps", STEPS)
    page.locator("#generate").click()
    status = page.locator("#status")
    status.get_by_text("Could not read broken.csv").wait_for(state="visible")
    assert "missing column" in status.inner_text()
    assert "Traceback" not in page.content()
    page.screenshot(path=str(tmp_path / "demo_bad_upload.png"), full_page=True)


def test_api_volume_equals_direct_pipeline_call(app, server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    x0, y0, size, seed = 256, 512, 256, 11
    path, info = client.predict(None, x0, y0, size, size, 0, 2, STEPS, seed, app.MODEL_DEFAULT, api_name="/generate")
    volume = np.load(path)
    assert info["shape"] == list(volume.shape) and volume.dtype == np.uint8

    pipe, phantom = app.load_pipeline(), app.bundled_phantom()
    b = pipe.unet.config.gene_bin
    genes = phantom.genes[:, :, y0 // b : (y0 + size) // b, x0 // b : (x0 + size) // b]
    expected = pipe(genes, gene_names=list(phantom.panel), num_inference_steps=STEPS, generator=seed, output_type="uint8").images
    assert np.array_equal(volume, expected)


def test_api_refuses_oversized_and_malformed_requests(server, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server, verbose=False)
    with pytest.raises(AppError, match="tiles per section"):
        client.predict(None, 0, 0, 1024, 512, 0, 2, STEPS, 0, "DDIM", api_name="/generate")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z,gene\n1,2,zero,Th\n")
    with pytest.raises(AppError, match="Could not read bad.csv"):
        client.predict(handle_file(str(bad)), 0, 0, 256, 256, 0, 1, STEPS, 0, "DDIM", api_name="/generate")


def test_upload_round_trip_and_downloads(app, tmp_path):
    """A valid table of the phantom's transcripts goes through; the TIFF and OME-Zarr downloads hold the volume."""
    import tifffile
    import zipfile
    import zarr

    phantom = app.bundled_phantom()
    table = tmp_path / "transcripts.csv"
    t = phantom.transcripts
    t[(t["y"] < 250) & (t["x"] < 500)].to_csv(table, index=False)
    source = app.read_upload(table)
    assert source.genes.shape[-2:] == (16, 32) and source.images is None  # padded up to whole tiles
    request = app.Request(x0=0, y0=0, width=256, height=256, slice_start=0, slice_stop=1, steps=1, seed=0)
    app.check_request(request, source)
    genes, _ = app.crop(source, request)
    volume = app.to_uint8(app.sample(request, genes, source.names))
    paths = app.save_outputs(volume, request, tmp_path / "out", 0.5)
    assert np.array_equal(tifffile.imread(paths["tiff"]), volume)
    with zipfile.ZipFile(paths["zarr"]) as archive:
        archive.extractall(tmp_path / "unzipped")
    group = zarr.open_group(str(next((tmp_path / "unzipped").iterdir())), mode="r")
    assert np.array_equal(group["0"][:], volume.transpose(1, 0, 2, 3))
    assert group.attrs["ome"]["multiscales"][0]["axes"][0]["name"] == "c"


def test_knockout_with_dpm_solver_and_refusals(app):
    """The Generate handler itself: DPM-Solver++, a knockout (difference image), and messages, not exceptions."""
    names = list(app.load_pipeline().unet.config.gene_names)
    gene = app._default_pair(names)[1]
    no_progress = lambda *args, **kwargs: None  # noqa: E731
    args = [app.SOURCE_PHANTOM, None, 0, 0, 256, 256, 0, 2, 1, 3, "DPM-Solver++", gene, *app._default_pair(names)]
    out = app.ui_generate(*args, gene, progress=no_progress)
    dapi, polyt, true_dapi, _, heat, attention, difference, npy, tiff, zarr_zip, status = out
    assert dapi.shape == (256, 256, 3) and true_dapi.shape == (256, 256, 3)
    assert difference is not None and difference.ndim == 3 and "Knockout of" in status and "DPM-Solver++" in status
    assert np.load(npy).shape == (2, 2, 256, 256) and Path(tiff).is_file() and Path(zarr_zip).is_file()

    refused = app.ui_generate(*args[:8], 60, *args[9:], app.NO_KNOCKOUT, progress=no_progress)
    assert "60 steps requested" in refused[-1]
    missing = next((g for g in names if g.lower() not in {n.lower() for n in app.bundled_phantom().panel}), None)
    if missing is not None:  # a model gene the phantom lacks: knocking it out would change nothing
        message = app.ui_generate(*args, missing, progress=no_progress)[-1]
        assert "not in the data" in message


def test_far_away_point_in_a_tiny_upload_is_refused_before_binning(app, tmp_path):
    """A 41-byte CSV with one transcript at 10^5 px would need a ~0.5 GB grid: refused, with memory kept small."""
    import tracemalloc

    gene = app.load_pipeline().unet.config.gene_names[0]
    table = tmp_path / "far.csv"
    table.write_text(f"x,y,z,gene\n100000,100000,0,{gene}\n")
    assert len(table.read_bytes()) < 50
    tracemalloc.start()
    try:
        with pytest.raises(app.DemoError, match=r"far\.csv.*needs a dense .* array of .*more than the limit"):
            app.read_upload(table)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < app.MAX_UPLOAD_GRID_BYTES / 4, peak


def test_gradio_refuses_uploads_over_the_size_limit(app, server):
    """Gradio's own max_file_size is set: an upload over it is refused by the server (413), not read by the app."""
    import httpx

    assert app.launch_options()["max_file_size"] == app.MAX_UPLOAD_BYTES
    big = b"x,y,z,gene\n" + b"0,0,0,Gad2\n" * (app.MAX_UPLOAD_BYTES // 11 + 1)
    response = httpx.post(f"{server}gradio_api/upload", files={"files": ("big.csv", big, "text/csv")}, timeout=60)
    assert response.status_code == 413, (response.status_code, response.text[:200])
    small = httpx.post(f"{server}gradio_api/upload", files={"files": ("small.csv", b"x,y,z,gene\n0,0,0,Gad2\n", "text/csv")}, timeout=60)
    assert small.status_code == 200, small.text[:200]


def test_fast_preset_in_the_demo_is_the_pipeline_preset(app):
    """The demo's fast preset samples exactly as `pipe(..., preset="fast")`, with the preset's steps."""
    from teramind_hf.sampling import PRESETS

    request = app._request_from_inputs(0, 0, 256, 256, 0, 2, 15, 3, app.FAST_PRESET)
    assert request.steps == PRESETS["fast"].num_inference_steps
    source = app.resolve_source(None, app.SOURCE_PHANTOM)
    app.check_request(request, source)
    genes, _ = app.crop(source, request)
    volume = app.sample(request, genes, source.names)
    expected = app.load_pipeline()(genes, gene_names=source.names, preset="fast", generator=3, slices=(0, 2), output_type="np").images
    np.testing.assert_array_equal(volume, expected)


def test_ddim_in_the_demo_is_ddim_on_the_model_grid(app):
    """The demo's DDIM choice is DDIM (official spacing and clip) at the slider's steps on the model's grid schedule,
    not the model's own scheduler (the embedded model's default is DPM-Solver++ SDE)."""
    from teramind_hf.sampling import Preset

    request = app._request_from_inputs(0, 0, 256, 256, 0, 2, 2, 3, "DDIM")
    source = app.resolve_source(None, app.SOURCE_PHANTOM)
    genes, _ = app.crop(source, request)
    volume = app.sample(request, genes, source.names)
    pipe = app.load_pipeline()
    expected = pipe(genes, gene_names=source.names, preset=Preset("ddim", 2), generator=3, slices=(0, 2), output_type="np").images
    np.testing.assert_array_equal(volume, expected)
    assert not np.array_equal(volume, pipe(genes, gene_names=source.names, num_inference_steps=2, generator=3, slices=(0, 2), output_type="np").images)
