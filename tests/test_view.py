"""`teramind view`: the placement read from the OME-NGFF metadata, the local server's byte ranges and CORS (what
neuroglancer needs to read a sharded output), the neuroglancer state and napari's layer arguments, and the
command's serving, Ctrl-C and bad input. Small sharded outputs are written with the output's own NGFF writer."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr

from teramind_hf.cli import main
from teramind_hf.pipelines.ome_zarr import PhysicalScale, build_level, create_image, level_blocks
from teramind_hf.viewer import (
    make_range_server, napari_layer_arguments, neuroglancer_link, neuroglancer_state, parse_byte_range, read_ome_image,
)

UM_PER_PX, SPACING_UM = 0.5, 150.0
ORIGIN_PX = (3, 64, 32)  # first section, y0, x0 of the region: a non-zero NGFF translation


@pytest.fixture(scope="module")
def output(tmp_path_factory) -> Path:
    """A sharded (2 stains, 3 sections, 1024 x 768) OME-Zarr written like `teramind generate`'s, with a pyramid."""
    out = tmp_path_factory.mktemp("view") / "out.ome.zarr"
    group = zarr.open_group(str(out), mode="w")
    levels = create_image(group, (2, 3, 1024, 768), 256, PhysicalScale(UM_PER_PX, SPACING_UM, ORIGIN_PX), shard_tiles=2)
    levels[0][...] = np.random.default_rng(0).integers(0, 256, levels[0].shape, dtype=np.uint8)
    for finer, coarser in zip(levels, levels[1:]):
        build_level(finer, coarser, level_blocks(coarser))
    return out


@pytest.fixture(scope="module")
def served(output):
    """The output served on 127.0.0.1:<free port> in a thread; yields the base URL."""
    server = make_range_server(output)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


def fetch(url: str, method: str = "GET", headers: dict | None = None):
    """(status, headers, body) of one request, error statuses included."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.headers, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_an_inner_chunk_of_a_shard_is_served_by_byte_range_as_neuroglancer_reads_it(output, served):
    """Read the shard index with a suffix range, then one inner chunk with its range: the bytes are the file's
    slice and decode to that chunk of the array."""
    shard = output / "0" / "c" / "0" / "0" / "0" / "0"  # stains, sections 0-1, y 0-511, x 0-511
    content = shard.read_bytes()
    chunks_per_shard = 2 * 2 * 2 * 2  # (2, 2, 512, 512) shards of (1, 1, 256, 256) chunks
    index_bytes = chunks_per_shard * 16 + 4  # (offset, length) uint64 pairs + crc32c, at the end of the shard
    status, headers, index = fetch(served + "0/c/0/0/0/0", headers={"Range": f"bytes=-{index_bytes}"})
    assert status == 206 and index == content[-index_bytes:]
    assert headers["Content-Range"] == f"bytes {len(content) - index_bytes}-{len(content) - 1}/{len(content)}"
    pairs = struct.unpack(f"<{2 * chunks_per_shard}Q", index[:-4])
    k = 13  # chunk (c=1, z=1, y=0, x=1) of the shard, in C order: neither first nor last in the file
    offset, length = pairs[2 * k], pairs[2 * k + 1]
    assert 0 < offset and offset + length < len(content) - index_bytes
    status, headers, chunk = fetch(served + "0/c/0/0/0/0", headers={"Range": f"bytes={offset}-{offset + length - 1}"})
    assert status == 206 and headers["Content-Length"] == str(length)
    assert headers["Content-Range"] == f"bytes {offset}-{offset + length - 1}/{len(content)}"
    assert chunk == content[offset : offset + length]
    pixels = np.frombuffer(numcodecs.Zstd().decode(chunk), dtype=np.uint8).reshape(256, 256)
    np.testing.assert_array_equal(pixels, zarr.open_array(str(output / "0"), mode="r")[1, 1, :256, 256:512])
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert {"Content-Range", "Content-Length"} <= {h.strip() for h in headers["Access-Control-Expose-Headers"].split(",")}


def test_whole_files_unsatisfiable_ranges_preflight_and_missing_files(output, served):
    status, headers, body = fetch(served + "zarr.json")  # no Range: the whole file, ranges announced
    assert status == 200 and body == (output / "zarr.json").read_bytes() and headers["Accept-Ranges"] == "bytes"
    size = (output / "0" / "zarr.json").stat().st_size
    status, headers, body = fetch(served + "0/zarr.json", headers={"Range": f"bytes={size}-"})
    assert status == 416 and headers["Content-Range"] == f"bytes */{size}" and body == b""
    assert headers["Access-Control-Allow-Origin"] == "*"
    status, headers, body = fetch(served + "0/zarr.json", headers={"Range": "bytes=5-9"}, method="HEAD")
    assert status == 206 and headers["Content-Length"] == "5" and body == b""
    status, headers, _ = fetch(served + "0/zarr.json", method="OPTIONS", headers={
        "Origin": "https://neuroglancer-demo.appspot.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "range", "Access-Control-Request-Private-Network": "true"})
    assert status == 204 and headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in headers["Access-Control-Allow-Methods"] and headers["Access-Control-Allow-Headers"] == "range"
    assert headers["Access-Control-Allow-Private-Network"] == "true"
    status, headers, _ = fetch(served + ".zattrs")  # a client probing for zarr v2 metadata sees a 404, with CORS
    assert status == 404 and headers["Access-Control-Allow-Origin"] == "*"
    assert fetch(served + "%2e%2e/%2e%2e/etc/passwd")[0] == 404


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-0", (0, 1)), ("bytes=10-", (10, 100)), ("bytes=90-200", (90, 100)), ("bytes=-30", (70, 100)),
    ("bytes=-300", (0, 100)), ("bytes=100-", "unsatisfiable"), ("bytes=-0", "unsatisfiable"), ("bytes=5-2", None),
    ("bytes=0-1,5-6", None), ("items=0-5", None), ("bytes=-", None),
])
def test_parse_byte_range(header, expected):
    assert parse_byte_range(header, 100) == expected


def decoded_state(link: str) -> dict:
    client, fragment = link.split("#!", 1)
    assert client == "https://neuroglancer-demo.appspot.com/"
    return json.loads(urllib.parse.unquote(fragment))


def test_neuroglancer_state_shows_both_stains_in_xy_in_micrometres(output):
    image = read_ome_image(output)
    assert image.sharded and image.zarr_format == 3 and image.axes == ("c", "z", "y", "x")
    state = decoded_state(neuroglancer_link(neuroglancer_state(image, "http://127.0.0.1:8123/")))
    assert state["layout"] == "xy" and state["displayDimensions"] == ["x", "y", "z"]
    assert state["dimensions"] == {"x": [UM_PER_PX * 1e-6, "m"], "y": [UM_PER_PX * 1e-6, "m"], "z": [SPACING_UM * 1e-6, "m"]}
    assert [layer["name"] for layer in state["layers"]] == ["DAPI", "PolyT"]
    for k, layer in enumerate(state["layers"]):
        assert layer["type"] == "image" and layer["source"] == "zarr3://http://127.0.0.1:8123/"
        assert layer["localDimensions"] == {"c'": [1, ""]} and layer["localPosition"] == [k]
        assert layer["blend"] == "additive"
    assert '"#0000ff"' in state["layers"][0]["shader"] and '"#00ff00"' in state["layers"][1]["shader"]
    assert "range=[0, 255]" in state["layers"][0]["shader"]
    # the middle of the region in x, y, the centre of the first section in z (voxel centres at the translation)
    z0, y0, x0 = ORIGIN_PX
    assert state["position"] == [x0 + 767 / 2, y0 + 1023 / 2, z0]


def with_translation(output: Path, tmp_path: Path, translation: list, outer: list | None = None) -> Path:
    """A copy of the output's metadata (levels as links) with a hand-made level-0 translation and, optionally, a
    multiscale-level transformation list."""
    copy = tmp_path / "moved.ome.zarr"
    copy.mkdir()
    for level in ("0", "1", "2"):
        (copy / level).symlink_to(output / level)
    meta = json.loads((output / "zarr.json").read_text())
    multiscale = meta["attributes"]["ome"]["multiscales"][0]
    multiscale["datasets"][0]["coordinateTransformations"][1]["translation"] = translation
    if outer is not None:
        multiscale["coordinateTransformations"] = outer
    (copy / "zarr.json").write_text(json.dumps(meta))
    return copy


def test_napari_layers_and_neuroglancer_follow_the_translation_in_the_metadata(output, tmp_path):
    moved = with_translation(output, tmp_path, [0.0, 450.0, 1232.25, 320.5])
    arguments = napari_layer_arguments(read_ome_image(moved))
    assert arguments["channel_axis"] == 0 and arguments["name"] == ["DAPI", "PolyT"]
    assert arguments["colormap"] == ["blue", "green"] and arguments["contrast_limits"] == [(0.0, 255.0)] * 2
    assert arguments["scale"] == (SPACING_UM, UM_PER_PX, UM_PER_PX) and arguments["translate"] == (450.0, 1232.25, 320.5)
    assert arguments["multiscale"] and arguments["units"] == ("micrometer",) * 3
    assert arguments["axis_labels"] == ("z", "y", "x")
    state = neuroglancer_state(read_ome_image(moved), "http://127.0.0.1:1/")
    assert state["position"] == [320.5 / UM_PER_PX + 383.5, 1232.25 / UM_PER_PX + 511.5, 3]


def test_multiscale_transformations_apply_after_the_datasets_and_units_convert_to_micrometres(output, tmp_path):
    outer = [{"type": "scale", "scale": [1, 1, 2, 1]}, {"type": "translation", "translation": [0, 0, 1, 0]}]
    moved = with_translation(output, tmp_path, [0.0, 450.0, 1232.25, 320.5], outer)
    meta = json.loads((moved / "zarr.json").read_text())
    meta["attributes"]["ome"]["multiscales"][0]["axes"][2]["unit"] = "millimeter"  # y in mm, x still in um
    (moved / "zarr.json").write_text(json.dumps(meta))
    image = read_ome_image(moved)
    assert image.level_scales_um[0][2:] == pytest.approx((UM_PER_PX * 2 * 1000, UM_PER_PX))
    assert image.level_translations_um[0][2:] == pytest.approx(((1232.25 * 2 + 1) * 1000, 320.5))
    assert image.level_scales_um[1][2:] == pytest.approx((2 * UM_PER_PX * 2 * 1000, 2 * UM_PER_PX))


def run_view(*args: str, cwd: Path | None = None, preexec_fn=None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("DISPLAY", None)
    return subprocess.Popen([sys.executable, "-m", "teramind_hf.cli", "view", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, preexec_fn=preexec_fn)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_view_stops_on_ctrl_c_or_sigterm_even_when_sigint_was_inherited_ignored(output, stop):
    """A parent that ignores SIGINT (a script's background job) passes that on; `teramind view` still stops on it,
    and on SIGTERM (a scheduler, ``kill``) it closes its socket and exits 0 too, rather than dying on the signal."""
    process = run_view(str(output), "--no-browser", preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert process.stdout.readline().startswith(f"serving {output} at http://127.0.0.1:")
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out.strip().endswith("stopped") and "Traceback" not in err, (process.returncode, err)


def test_view_serves_prints_the_link_stops_on_ctrl_c_and_writes_nothing(output):
    before = snapshot(output)
    process = run_view(str(output), "--neuroglancer", "--no-browser")
    try:
        serving = process.stdout.readline()
        link = process.stdout.readline()
        assert serving.startswith(f"serving {output} at http://127.0.0.1:"), serving
        base = serving.split(" at ")[1].split(" ")[0]
        state = decoded_state(link.removeprefix("neuroglancer: ").strip())
        assert [layer["source"] for layer in state["layers"]] == [f"zarr3://{base}"] * 2
        status, _, body = fetch(base + "0/zarr.json", headers={"Range": "bytes=0-9"})
        assert status == 206 and body == (output / "0" / "zarr.json").read_bytes()[:10]
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0 and out.strip() == "stopped" and "Traceback" not in err, err
    assert snapshot(output) == before


def test_view_bad_input_is_one_line_and_exit_2(output, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    zarr.open_group(str(tmp_path / "group.zarr"), mode="w").attrs["note"] = "no multiscales"
    (tmp_path / "file.ome.zarr").write_text("not a folder")
    cases = {
        str(tmp_path / "missing.ome.zarr"): "no such file or folder",
        str(plain): "not an OME-Zarr image",
        str(tmp_path / "group.zarr"): "no OME-NGFF 'multiscales' metadata",
        str(tmp_path / "file.ome.zarr"): "not a folder",
    }
    for path, message in cases.items():
        assert main(["view", path, "--neuroglancer", "--no-browser"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"teramind view: error: {path}") and message in err and err.count("\n") == 1, err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(output), "--neuroglancer", "--no-browser", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err and err.count("\n") == 1, err


def test_napari_takes_the_layer_arguments(output):
    """With napari installed (the `viewer` extra), a window-less ViewerModel gets one multiscale layer per stain."""
    pytest.importorskip("napari", reason="napari is the optional `viewer` extra")
    from napari.components import ViewerModel

    from teramind_hf.viewer import add_to_napari

    layers = add_to_napari(ViewerModel(), read_ome_image(output))
    assert [layer.name for layer in layers] == ["DAPI", "PolyT"]
    assert [layer.colormap.name for layer in layers] == ["blue", "green"]
    z0, y0, x0 = ORIGIN_PX
    for layer in layers:
        assert layer.multiscale and len(layer.data) == 3 and layer.blending == "additive"
        np.testing.assert_allclose(layer.scale, (SPACING_UM, UM_PER_PX, UM_PER_PX))
        np.testing.assert_allclose(layer.translate, (z0 * SPACING_UM, y0 * UM_PER_PX, x0 * UM_PER_PX))
