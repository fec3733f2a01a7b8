"""`teramind view`'s neuroglancer state, rendered by neuroglancer itself in headless Chromium, offline: the
client bundled in the `neuroglancer` pip package (served by its own Python server) reads a sharded output from
our Range server. DAPI must be blue where it is bright, PolyT green, in the x-y view of the first section.

Needs the `neuroglancer` package (skipped without it) and /usr/bin/chromium (as the demo's browser tests:
TERAMIND_SKIP_BROWSER_TESTS=1 skips them on a machine without a browser on purpose).
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from teramind_hf.pipelines.ome_zarr import PhysicalScale, build_level, create_image, level_blocks
from teramind_hf.viewer import make_range_server, neuroglancer_state, read_ome_image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--enable-unsafe-swiftshader"]  # WebGL in software
SKIP_BROWSER = os.environ.get("TERAMIND_SKIP_BROWSER_TESTS") == "1"
RENDER_TIMEOUT_S = 90


def quadrant_output(out: Path) -> Path:
    """2 sections of 512 x 512 at a non-zero origin: section 0 has DAPI in its left half, section 1 in its right
    half; PolyT fills the top half of both."""
    group = zarr.open_group(str(out), mode="w")
    levels = create_image(group, (2, 2, 512, 512), 256, PhysicalScale(0.5, 150.0, (4, 640, 2464)), shard_tiles=2)
    data = np.zeros(levels[0].shape, np.uint8)
    data[0, 0, :, :256] = 255
    data[0, 1, :, 256:] = 255
    data[1, :, :256, :] = 255
    levels[0][...] = data
    for finer, coarser in zip(levels, levels[1:]):
        build_level(finer, coarser, level_blocks(coarser))
    return out


@pytest.mark.skipif(SKIP_BROWSER, reason="TERAMIND_SKIP_BROWSER_TESTS=1: no headless browser on this machine")
def test_neuroglancer_renders_both_stains_coloured_in_xy_at_the_first_section(tmp_path):
    neuroglancer = pytest.importorskip("neuroglancer", reason="the neuroglancer package bundles the client this test runs")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), f"headless browser tests need {CHROMIUM}, or TERAMIND_SKIP_BROWSER_TESTS=1 to skip them"
    image = read_ome_image(quadrant_output(tmp_path / "out.ome.zarr"))
    data_server = make_range_server(image.path)
    threading.Thread(target=data_server.serve_forever, daemon=True).start()
    neuroglancer.set_server_bind_address("127.0.0.1")
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(neuroglancer_state(image, f"http://127.0.0.1:{data_server.server_port}/")))
    # (x, y) fractions of the x-y panel -> expected RGB: DAPI left (blue), PolyT top (green), both: cyan
    expected = {(0.3, 0.3): (0, 255, 255), (0.7, 0.3): (0, 255, 0), (0.3, 0.7): (0, 0, 255), (0.7, 0.7): (0, 0, 0)}
    seen = None
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": 800, "height": 700})
                page.goto(viewer.get_viewer_url())
                panel = page.locator(".neuroglancer-rendered-data-panel").first
                deadline = time.monotonic() + RENDER_TIMEOUT_S
                while time.monotonic() < deadline:  # chunks arrive over a few frames
                    time.sleep(1)
                    if not panel.is_visible():
                        continue
                    shot = Image.open(io.BytesIO(panel.screenshot())).convert("RGB")
                    seen = {f: shot.getpixel((int(f[0] * shot.width), int(f[1] * shot.height))) for f in expected}
                    if seen == expected:
                        break
            finally:
                browser.close()
    finally:
        data_server.shutdown()
        data_server.server_close()
        neuroglancer.stop()
    assert seen == expected
