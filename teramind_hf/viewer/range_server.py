"""A read-only local HTTP server for an OME-Zarr folder, as web viewers need it: byte ranges and CORS.

A sharded zarr v3 array keeps many chunks in one file; a client such as neuroglancer reads the shard's index with
a suffix range (``Range: bytes=-N``) and then one chunk with ``Range: bytes=a-b``. `python -m http.server`
ignores Range and returns the whole shard, which the client then rejects as a chunk of the wrong size. This
handler answers single ranges with 206 Partial Content and a Content-Range, an unsatisfiable range with 416, and
sends CORS headers on every answer (errors included: a client probing for an absent metadata file must see the
404, not a CORS failure), so a viewer page from another origin can read the data.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
UNSATISFIABLE = "unsatisfiable"
COPY_BLOCK = 1 << 16


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """The ``[start, stop)`` bytes a ``Range`` header asks of a file of ``size`` bytes; None to send the whole file
    (no header, several ranges, or an invalid one, which RFC 9110 says to ignore); UNSATISFIABLE for a valid
    range that starts past the end (or a zero-length suffix)."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.strip().replace(" ", ""))
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # suffix: the last N bytes
        count = int(last)
        if count == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - count), size
    start = int(first)
    if last != "" and int(last) < start:
        return None
    if start >= size:
        return UNSATISFIABLE
    stop = size if last == "" else min(int(last) + 1, size)
    return start, stop


class RangeRequestHandler(SimpleHTTPRequestHandler):
    """GET / HEAD of files under ``directory`` with single byte ranges; OPTIONS for CORS preflights."""

    protocol_version = "HTTP/1.1"  # keep-alive: a viewer sends many small range requests
    log_requests = False

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Range, Content-Length, Accept-Ranges, Last-Modified")
        super().end_headers()

    def do_OPTIONS(self) -> None:
        self.send_response(HTTPStatus.NO_CONTENT)
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", self.headers.get("Access-Control-Request-Headers") or "Range")
        self.send_header("Access-Control-Max-Age", "600")
        if self.headers.get("Access-Control-Request-Private-Network", "").lower() == "true":
            # Chromium asks this before a public page (the neuroglancer demo) may read from 127.0.0.1
            self.send_header("Access-Control-Allow-Private-Network", "true")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_head(self):
        self._range_remaining = None
        path = self.translate_path(self.path)
        if os.path.isdir(path):
            return super().send_head()  # the redirect to a trailing slash, or the listing
        try:
            source = open(path, "rb")
        except OSError:
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        try:
            status = os.fstat(source.fileno())
            requested = parse_byte_range(self.headers.get("Range"), status.st_size)
            if requested == UNSATISFIABLE:
                source.close()
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{status.st_size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            start, stop = requested or (0, status.st_size)
            if requested is None:
                self.send_response(HTTPStatus.OK)
            else:
                self.send_response(HTTPStatus.PARTIAL_CONTENT)
                self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{status.st_size}")
            self.send_header("Content-Type", self.guess_type(path))
            self.send_header("Content-Length", str(stop - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Last-Modified", formatdate(status.st_mtime, usegmt=True))
            self.end_headers()
            source.seek(start)
            self._range_remaining = stop - start
            return source
        except BaseException:
            source.close()
            raise

    def copyfile(self, source, outputfile) -> None:
        remaining = self._range_remaining
        if remaining is None:  # a directory listing
            shutil.copyfileobj(source, outputfile)
            return
        while remaining > 0:
            block = source.read(min(COPY_BLOCK, remaining))
            if not block:
                break
            outputfile.write(block)
            remaining -= len(block)

    def log_message(self, format: str, *args) -> None:
        if self.log_requests:
            super().log_message(format, *args)


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True  # a viewer's open keep-alive connection does not hold the process at exit

    def handle_error(self, request, client_address) -> None:
        # a viewer that closes a connection mid-answer (it moved on) is normal, not an error to print
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


def make_range_server(
    folder: str | Path, host: str = "127.0.0.1", port: int = 0, log_requests: bool = False
) -> ThreadingHTTPServer:
    """A bound (not yet serving) server of ``folder``; ``port`` 0 takes any free port (``server.server_port``).
    ValueError for a port in use, an unknown host or a port out of range."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder to serve")
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port}: expected 0 (any free port) to 65535")
    handler = type("Handler", (RangeRequestHandler,), {"log_requests": log_requests})
    server_class = QuietThreadingHTTPServer
    if ":" in host:  # an IPv6 address
        server_class = type("IPv6Server", (QuietThreadingHTTPServer,), {"address_family": socket.AF_INET6})
    try:
        return server_class((host, port), partial(handler, directory=str(folder)))
    except socket.gaierror as err:
        raise ValueError(f"host {host!r}: not a known address ({err.strerror})") from None
    except OSError as err:
        if err.errno == errno.EADDRINUSE:
            raise ValueError(f"port {port} on {host} is already in use; pick another port, or 0 for any free one") from None
        if err.errno == errno.EADDRNOTAVAIL:
            raise ValueError(f"host {host!r}: not an address of this machine") from None
        raise


def server_url(server: ThreadingHTTPServer) -> str:
    """``http://host:port/`` of a bound server; a wildcard address (all interfaces) is named by its loopback, which
    a browser on this machine can open."""
    host, port = server.server_address[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve_until_interrupted(server: ThreadingHTTPServer, on_ready=None) -> None:
    """Serve until Ctrl-C (SIGINT) or SIGTERM, then close the socket; ``on_ready()`` (e.g. printing the address) runs
    once either signal is sure to stop the server, right before serving.

    Ctrl-C works even where the process inherited SIGINT as ignored (a background job of a shell script, or a parent
    that ignores it): Python then keeps it ignored, and the server could only be killed. SIGTERM (``kill``, a job
    scheduler, ``docker stop``) stops it the same way, instead of ending the process before the socket is closed."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, signal.default_int_handler)
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, interrupt)
    try:
        if on_ready is not None:
            on_ready()
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
