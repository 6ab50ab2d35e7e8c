"""A real package index for tests: wheels made here, served over HTTP (and HTTPS with a self-signed cert) on
127.0.0.1 in PEP 503 'simple' layout. Nothing reaches the internet."""
from __future__ import annotations

import base64
import hashlib
import html
import os
import re
import ssl
import subprocess
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def make_wheel(out: Path, name: str, version: str, *, deps=(), code: str = "", scripts: dict | None = None) -> Path:
    mod = name.replace("-", "_")
    dist = f"{mod}-{version}"
    files = {
        f"{mod}/__init__.py": (code or f"VERSION = {version!r}\n").encode(),
        f"{dist}.dist-info/METADATA": ("Metadata-Version: 2.1\n" f"Name: {name}\n" f"Version: {version}\n"
                                       + "".join(f"Requires-Dist: {d}\n" for d in deps)).encode(),
        f"{dist}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: dsjobs-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    if scripts:
        files[f"{dist}.dist-info/entry_points.txt"] = (
            "[console_scripts]\n" + "".join(f"{k} = {v}\n" for k, v in scripts.items())).encode()
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}.dist-info/RECORD,,")
    files[f"{dist}.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    path = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, data in files.items():
            z.writestr(p, data)
    return path


class Index:
    """One index: ``add`` wheels, then ``url`` is its simple/ root."""

    def __init__(self, root: Path, tls: bool = False):
        self.root = root
        (root / "files").mkdir(parents=True, exist_ok=True)
        self.tls = tls
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
        if tls:
            cert, key = root / "cert.pem", root / "key.pem"
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                            "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)], check=True,
                           capture_output=True)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}/simple/"

    def add(self, name: str, version: str, **kw) -> None:
        whl = make_wheel(self.root / "files", name, version, **kw)
        page = self.root / "simple" / _norm(name)
        page.mkdir(parents=True, exist_ok=True)
        links = []
        for w in sorted((self.root / "files").glob(f"{name.replace('-', '_')}-*.whl")):
            sha = hashlib.sha256(w.read_bytes()).hexdigest()
            links.append(f'<a href="../../files/{html.escape(w.name)}#sha256={sha}">{html.escape(w.name)}</a><br>')
        (page / "index.html").write_text("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>")
        assert whl.exists()

    def add_file(self, wheel: Path) -> None:
        """Serve an existing wheel (linked, not copied: pyspark's is 318 MB; no hash in the link, for the same
        reason) beside the others of its project."""
        wheel = Path(wheel)
        dest = self.root / "files" / wheel.name
        if not dest.exists():
            try:
                os.link(wheel, dest)
            except OSError:
                os.symlink(wheel.resolve(), dest)
        project = _norm(wheel.name.split("-")[0])
        page = self.root / "simple" / project
        page.mkdir(parents=True, exist_ok=True)
        links = [f'<a href="../../files/{html.escape(w.name)}">{html.escape(w.name)}</a><br>'
                 for w in sorted((self.root / "files").iterdir()) if _norm(w.name.split("-")[0]) == project]
        (page / "index.html").write_text("<!DOCTYPE html><html><body>" + "".join(links) + "</body></html>")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass
