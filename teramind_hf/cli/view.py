"""`teramind view OUT.ome.zarr [--neuroglancer] [--host H] [--port P] [--no-browser]`."""

from __future__ import annotations

import argparse
import sys


def run(args: argparse.Namespace) -> int:
    from ..viewer import (
        make_range_server, napari_available, neuroglancer_link, neuroglancer_state, open_in_napari, read_ome_image,
        serve_until_interrupted, server_url,
    )

    image = read_ome_image(args.out)
    if not args.neuroglancer:
        why_not = napari_available()
        if why_not is None:
            open_in_napari(image)
            return 0
        print(f"teramind view: {why_not}; serving for neuroglancer instead", file=sys.stderr)
    server = make_range_server(image.path, host=args.host, port=args.port)
    base_url = server_url(server)
    link = neuroglancer_link(neuroglancer_state(image, base_url), args.client)

    def announce() -> None:  # once Ctrl-C stops the server
        print(f"serving {image.path} at {base_url} (byte ranges, CORS); Ctrl-C stops", flush=True)
        print(f"neuroglancer: {link}", flush=True)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(link)

    serve_until_interrupted(server, on_ready=announce)
    print("stopped", flush=True)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view", help="open an OME-Zarr output in napari, or serve it for neuroglancer (x-y view, stains coloured, um)")
    p.add_argument("out", help="OME-Zarr written by `teramind generate` (read only; nothing is written into it)")
    p.add_argument("--neuroglancer", action="store_true",
                   help="serve for neuroglancer even when napari is installed (default without napari or a display)")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=0, help="port to serve on (default 0: any free port)")
    p.add_argument("--no-browser", action="store_true", help="print the neuroglancer link without opening a browser")
    p.add_argument("--client", default="https://neuroglancer-demo.appspot.com/",
                   help="neuroglancer client the link opens (default: the public demo)")
    p.set_defaults(func=run)
