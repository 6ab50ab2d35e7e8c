"""Could the job pages and the file endpoint share one server? Uploads and downloads of one blob through the real
file endpoint (engine/files.py: the stdlib ThreadingHTTPServer, signed URLs, BlobStore.write hashing and checking
the body) against the same routes as an ASGI app on uvicorn as the UI runs it (h11, its own thread), doing the
same work: the signature checked, the body hashed, written and fsynced by BlobStore.write in a worker thread, the
download a FileResponse (Starlette's default 64 KiB reads, and 1 MiB).

Each server is a process of its own, the client (a raw socket: sendfile up, recv_into down) is this one; the store
is on tmpfs, so that the disk's writeback does not decide; runs alternate between the servers.

    python bench/bench_ui_files.py [--size-mib 256] [--runs 5]
"""
from __future__ import annotations

import argparse
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEY = b"k" * 32


def serve(kind: str, root: Path) -> None:
    from engine.cas import BlobStore
    from engine.files import FileServer, Signer
    blobs = BlobStore(root / "blobs")
    if kind == "stdlib":
        srv = FileServer(("127.0.0.1", 0), blobs, lambda base: Signer(KEY, base))
        print(srv.server_address[1], flush=True)
        srv.serve_forever()
        return
    import asyncio
    import threading
    from urllib.parse import parse_qs

    from starlette.applications import Starlette
    from starlette.responses import FileResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from engine.ui.server import UiServer
    signer = Signer(KEY, "http://127.0.0.1")

    async def batched(stream, size=1 << 20):
        buf = bytearray()
        async for chunk in stream:
            buf += chunk
            if len(buf) >= size:
                yield bytes(buf)
                buf.clear()
        if buf:
            yield bytes(buf)

    async def put(request):
        sha = request.path_params["sha"]
        try:
            size = signer.verify("PUT", sha, parse_qs(request.url.query))
        except PermissionError as e:
            return PlainTextResponse(str(e), 403)
        loop = asyncio.get_running_loop()
        body = batched(request.stream())

        async def next_chunk():
            return await body.__anext__()

        def chunks():  # BlobStore.write, in a worker thread, pulls the body from the event loop
            while True:
                try:
                    yield asyncio.run_coroutine_threadsafe(next_chunk(), loop).result()
                except StopAsyncIteration:
                    return
        await asyncio.to_thread(blobs.write, chunks(), expect_sha=sha, expect_size=size)
        return Response(status_code=201)

    async def get(request):
        sha = request.path_params["sha"]
        try:
            signer.verify("GET", sha, parse_qs(request.url.query))
        except PermissionError as e:
            return PlainTextResponse(str(e), 403)
        r = FileResponse(blobs.path(sha), media_type="application/octet-stream")
        if request.query_params.get("chunk") == "big":
            r.chunk_size = 1 << 20
        return r

    app = Starlette(routes=[Route("/blobs/{sha}", put, methods=["PUT"]), Route("/blobs/{sha}", get)])
    ui = UiServer(lambda port: app, "127.0.0.1", 0, threading.Event()).start()
    print(ui.port, flush=True)
    threading.Event().wait()


def request(port: int, method: str, path: str, src: Path | None = None) -> float:
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = time.perf_counter()
    if method == "PUT":
        size = src.stat().st_size
        s.sendall(f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
                  "Connection: close\r\n\r\n".encode())
        with open(src, "rb") as f:
            s.sendfile(f)
        resp = b""
        while chunk := s.recv(65536):
            resp += chunk
        assert resp.split(b" ", 2)[1] == b"201", resp[:200]
        n = size
    else:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        buf = memoryview(bytearray(1 << 20))
        n = 0
        while k := s.recv_into(buf):
            n += k
    dt = time.perf_counter() - t
    s.close()
    return n / dt / (1 << 20)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(sys.argv[2], Path(sys.argv[3]))
        return 0
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    from engine.files import Signer
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        tmp = Path(tmp)
        src = tmp / "blob"
        h = hashlib.sha256()
        with open(src, "wb") as f:
            for _ in range(a.size_mib):
                chunk = os.urandom(1 << 20)
                h.update(chunk)
                f.write(chunk)
        sha, size = h.hexdigest(), src.stat().st_size
        signer = Signer(KEY, "")
        procs, ports = {}, {}
        for kind in ("stdlib", "asgi"):
            (tmp / kind).mkdir()
            procs[kind] = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(tmp / kind)],
                                           stdout=subprocess.PIPE, text=True)
            ports[kind] = int(procs[kind].stdout.readline())
        try:
            cases = [("stdlib", "PUT", ""), ("asgi", "PUT", ""), ("stdlib", "GET", ""), ("asgi", "GET", ""),
                     ("asgi", "GET", "&chunk=big")]
            results: dict = {c: [] for c in cases}
            for _ in range(a.runs):
                for c in cases:
                    kind, method, extra = c
                    url = signer.url(method, sha, size)
                    path = url[url.index("/blobs/"):] + extra
                    results[c].append(request(ports[kind], method, path, src if method == "PUT" else None))
            names = {("stdlib", "PUT", ""): "file endpoint (stdlib), PUT with sha256 check",
                     ("asgi", "PUT", ""): "Starlette on uvicorn h11, PUT with sha256 check",
                     ("stdlib", "GET", ""): "file endpoint (stdlib), GET",
                     ("asgi", "GET", ""): "Starlette FileResponse (64 KiB reads), GET",
                     ("asgi", "GET", "&chunk=big"): "Starlette FileResponse, 1 MiB reads, GET"}
            print(f"{a.size_mib} MiB blob, {a.runs} runs each, alternated; MiB/s")
            print(f"{'':52} {'median':>7}  runs")
            for c in cases:
                rs = results[c]
                print(f"{names[c]:52} {statistics.median(rs):7.0f}  {' '.join(f'{r:.0f}' for r in rs)}")
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
