"""Real local servers for the demo, tests and benchmarks: an HTTP file server with Range support and fault
injection (aiohttp, in a thread), and a STAC API (``rustac serve``, a subprocess). 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RangeServer:
    """Serves ``root`` over HTTP with ``Range`` support; counts requests and bytes per file.

    Fault injection: ``fail_next[name] = [429, 500]`` answers the next requests for ``name`` (a file
    name) with those statuses, in order; ``fail_always`` names always get 500.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.bytes_served: Counter[str] = Counter()
        self.requests: Counter[str] = Counter()
        self.ranges: defaultdict[str, list[tuple[int, int]]] = defaultdict(list)
        self.fail_next: dict[str, list[int]] = {}
        self.fail_always: set[str] = set()
        self.statuses: Counter[int] = Counter()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: Any) -> Any:
        from aiohttp import web

        rel = request.match_info["path"]
        path = (self.root / rel).resolve()
        name = path.name
        with self._lock:
            self.requests[rel] += 1
            queue = self.fail_next.get(name)
            status = queue.pop(0) if queue else (500 if name in self.fail_always else None)
        if status is not None:
            with self._lock:
                self.statuses[status] += 1
            return web.Response(status=status, text="injected fault")
        if not path.is_file() or self.root.resolve() not in path.parents:
            return web.Response(status=404)
        size = path.stat().st_size
        header = request.headers.get("Range")
        if request.method == "HEAD":
            return web.Response(headers={"Content-Length": str(size), "Accept-Ranges": "bytes"})
        if header and header.startswith("bytes="):
            spans = []
            for part in header[6:].split(","):
                first, _, last = part.strip().partition("-")
                start = int(first) if first else max(0, size - int(last))
                stop = min(int(last), size - 1) if (first and last) else size - 1
                spans.append((start, stop))
            start, stop = spans[0][0], max(s for _, s in spans)  # merged span for multi-range
            if start >= size:
                return web.Response(status=416, headers={"Content-Range": f"bytes */{size}"})
            with open(path, "rb") as fh:
                fh.seek(start)
                body = fh.read(stop - start + 1)
            with self._lock:
                self.bytes_served[rel] += len(body)
                self.ranges[rel].append((start, stop))
            return web.Response(status=206, body=body, headers={
                "Content-Range": f"bytes {start}-{start + len(body) - 1}/{size}", "Accept-Ranges": "bytes",
                "Content-Type": "image/tiff"})
        body = path.read_bytes()
        with self._lock:
            self.bytes_served[rel] += len(body)
        return web.Response(body=body, headers={"Accept-Ranges": "bytes", "Content-Type": "image/tiff"})

    def start(self) -> RangeServer:
        from aiohttp import web

        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_route("GET", "/{path:.*}", self._handle)
            app.router.add_route("HEAD", "/{path:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)

    def reset_counters(self) -> None:
        with self._lock:
            self.bytes_served.clear()
            self.requests.clear()
            self.ranges.clear()
            self.statuses.clear()


class RustacServer:
    """``rustac serve`` on a free port over a collection and an ndjson of items (no query/filter support)."""

    def __init__(self, collection: Path, items: Path) -> None:
        self.port = free_port()
        exe = shutil.which("rustac") or str(Path(sys.executable).with_name("rustac"))
        self.proc = subprocess.Popen([exe, "serve", "--addr", f"127.0.0.1:{self.port}", str(collection),
                                      str(items)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.url, timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("rustac serve exited") from None
                time.sleep(0.1)
        raise RuntimeError("rustac serve did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
