"""An S3 mount backed by a real bucket: its objects copied before the job starts into a snapshot of their own, which
no later copy changes (a job reads the bucket as it was when it started, whatever jobs that start later fetch).

A snapshot is named by what it holds (the keys and their ETags): jobs that start while the bucket is unchanged
share one. A new snapshot takes the objects whose ETag did not change from the previous one (hard links, nothing
fetched again) and fetches the others. Each job that reads a snapshot is one of its users (a file under
``users/``) until its run ends; a snapshot with no user that is not the latest is removed.

Standard library only: a SigV4 signer (the same Authorization header as botocore's S3SigV4Auth), ListObjectsV2 and
GET, and PUT for code that writes back (a job may import this file as it is)."""
from __future__ import annotations

import datetime
import fcntl
import hashlib
import hmac
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from typing import Callable, Optional

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class S3Error(Exception):
    """``status``: the HTTP status S3 answered with (None: no answer: the endpoint cannot be reached); ``code``:
    S3's error code (AccessDenied, NoSuchBucket, ...) when its body says one."""

    def __init__(self, message: str, status: Optional[int] = None, code: str = ""):
        super().__init__(message)
        self.status, self.code = status, code


def error_code(body: str) -> str:
    """The <Code> of an S3 error body; "" when the body is not one (HTML, cut short, empty)."""
    if not body.startswith("<"):
        return ""
    try:
        return ET.fromstring(body).findtext("Code") or ""
    except ET.ParseError:
        return ""


def _quote(s: str, safe: str = "-_.~") -> str:
    return urllib.parse.quote(s, safe=safe)


def signed_headers(method: str, url: str, region: str, access_key: str, secret_key: str, payload: bytes = b"",
                   now: Optional[datetime.datetime] = None) -> dict[str, str]:
    """AWS Signature V4 headers for an S3 request (path-style URL)."""
    u = urllib.parse.urlsplit(url)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload_hash = hashlib.sha256(payload).hexdigest()
    query = sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    canonical_query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in query)
    path = _quote(urllib.parse.unquote(u.path or "/"), safe="/-_.~")
    headers = {"host": u.netloc, "x-amz-content-sha256": payload_hash, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canonical = "\n".join([method, path, canonical_query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                           signed, payload_hash])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, "
                                f"Signature={signature}")
    del headers["host"]
    return headers


class Bucket:
    def __init__(self, endpoint: str, bucket: str, region: str, access_key: str, secret_key: str,
                 timeout: float = 60.0):
        self.endpoint, self.bucket, self.region = endpoint.rstrip("/"), bucket, region
        self.access_key, self.secret_key, self.timeout = access_key, secret_key, timeout

    def _url(self, key: str = "", query: str = "") -> str:
        return f"{self.endpoint}/{_quote(self.bucket)}" + (f"/{_quote(key, safe='/-_.~')}" if key else "") + \
            (f"?{query}" if query else "")

    def _request(self, method: str, url: str, body: bytes = b""):
        headers = signed_headers(method, url, self.region, self.access_key, self.secret_key, body)
        if method == "PUT":  # not urllib's form type, which a server may parse the body as
            headers["Content-Type"] = "application/octet-stream"
        req = urllib.request.Request(url, data=body if method == "PUT" else None, method=method, headers=headers)
        try:
            return urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            try:
                text = e.read()[:500].decode(errors="replace")
            except OSError:  # the body cut off by the connection
                text = ""
            code = error_code(text)
            raise S3Error(f"{method} {url}: HTTP {e.code} {code or text}".strip(), e.code, code) from None
        except (urllib.error.URLError, OSError) as e:
            raise S3Error(f"{method} {url}: {getattr(e, 'reason', e)}") from None

    def list(self, prefix: str = ""):
        """(key, etag, size) of every object under ``prefix``."""
        token = ""
        while True:
            q = [("list-type", "2"), ("prefix", prefix)] + ([("continuation-token", token)] if token else [])
            url = self._url(query=urllib.parse.urlencode(q, quote_via=urllib.parse.quote))
            with self._request("GET", url) as r:
                try:
                    root = ET.fromstring(r.read())
                except (ET.ParseError, OSError) as e:
                    raise S3Error(f"GET {url}: not an S3 object listing ({e})", 502) from None
            for c in root.iter(f"{NS}Contents"):
                yield c.findtext(f"{NS}Key"), c.findtext(f"{NS}ETag"), int(c.findtext(f"{NS}Size") or 0)
            if root.findtext(f"{NS}IsTruncated") != "true":
                return
            token = root.findtext(f"{NS}NextContinuationToken") or ""

    def get(self, key: str, dest: str) -> None:
        tmp = dest + ".dsjobs-part"
        with self._request("GET", self._url(key)) as r, open(tmp, "wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.chmod(tmp, 0o644)  # a mount is for every job to read (a root engine's jobs run as nobody)
        os.replace(tmp, dest)

    def put(self, key: str, body: bytes) -> str:
        with self._request("PUT", self._url(key), body) as r:
            return r.headers.get("ETag", "")


def snapshots_of(mount_dir: str) -> str:
    """Where the snapshots of the mount at ``mount_dir`` are kept (beside it)."""
    mount_dir = mount_dir.rstrip("/")
    return os.path.join(os.path.dirname(mount_dir), f".{os.path.basename(mount_dir)}.snapshots")


def _listing(bucket: Bucket, prefix: str, note: Callable[[str], None]) -> dict[str, tuple[str, str]]:
    """rel path -> (key, etag) of the objects under ``prefix`` that can be copied."""
    out = {}
    for key, etag, _size in bucket.list(prefix):
        rel = key[len(prefix):].lstrip("/")
        if not rel or rel.endswith("/"):
            continue  # the prefix itself, or a "directory" marker
        parts = rel.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\x00" in rel:
            note(f"s3: object {key!r} is not copied: its key is not a safe relative path")
            continue
        out[rel] = (key, etag or "")
    return out


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def snapshot(bucket: Bucket, prefix: str, store: str, user: str, note: Callable[[str], None]
             ) -> tuple[str, int, int]:
    """The objects under ``prefix`` as a snapshot in ``store`` that ``user`` (a job id) reads until
    ``release``; (its directory, objects fetched, objects taken unchanged from the previous snapshot)."""
    os.makedirs(store, mode=0o755, exist_ok=True)
    os.chmod(store, 0o755)
    snaps, users = os.path.join(store, "snap"), os.path.join(store, "users")
    os.makedirs(snaps, mode=0o755, exist_ok=True)
    os.chmod(snaps, 0o755)
    with open(os.path.join(store, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two jobs with the same mount: one copies, the other finds it current
        objects = _listing(bucket, prefix, note)
        name = hashlib.sha256(json.dumps(sorted((r, e) for r, (_, e) in objects.items())).encode()).hexdigest()[:32]
        dest = os.path.join(snaps, name)
        state = _read_json(os.path.join(store, "latest.json"))  # {"name": ..., "etags": {rel: etag}}
        prev = os.path.join(snaps, str(state.get("name") or "")) if state.get("name") else ""
        etags = state.get("etags") or {}
        fetched = unchanged = 0
        if os.path.isdir(dest):
            unchanged = len(objects)
        else:
            tmp = dest + ".part"
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp, mode=0o755)
            os.chmod(tmp, 0o755)
            for rel, (key, etag) in sorted(objects.items()):
                parts = rel.split("/")
                for i in range(1, len(parts)):
                    d = os.path.join(tmp, *parts[:i])
                    if not os.path.isdir(d):
                        os.mkdir(d, 0o755)
                        os.chmod(d, 0o755)
                local, old = os.path.join(tmp, *parts), os.path.join(prev, *parts) if prev else ""
                if old and etags.get(rel) == etag and os.path.isfile(old) and not os.path.islink(old):
                    try:
                        os.link(old, local)  # snapshots are never written to: one copy for both
                    except OSError:
                        shutil.copyfile(old, local)
                        os.chmod(local, 0o644)
                    unchanged += 1
                    continue
                bucket.get(key, local)
                fetched += 1
            os.rename(tmp, dest)
        _write_json(os.path.join(store, "latest.json"),
                    {"name": name, "etags": {r: e for r, (_, e) in objects.items()}})
        mine = os.path.join(users, name)
        os.makedirs(mine, mode=0o700, exist_ok=True)
        open(os.path.join(mine, user), "w").close()
        _collect_garbage(store, keep=name)
    return dest, fetched, unchanged


def release(store: str, name: str, user: str) -> None:
    """``user`` no longer reads the snapshot ``name``; a snapshot no job reads is removed unless it is the latest."""
    with open(os.path.join(store, "lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            os.unlink(os.path.join(store, "users", name, user))
        except FileNotFoundError:
            pass
        _collect_garbage(store, keep=str(_read_json(os.path.join(store, "latest.json")).get("name") or ""))


def _collect_garbage(store: str, keep: str) -> None:
    """Every snapshot but ``keep`` that no job reads (and what a copy cut short left), removed; under the lock."""
    snaps, users = os.path.join(store, "snap"), os.path.join(store, "users")
    for name in os.listdir(snaps):
        if name == keep:
            continue
        base = name[:-len(".part")] if name.endswith(".part") else name
        try:
            readers = os.listdir(os.path.join(users, base))
        except FileNotFoundError:
            readers = []
        if readers and not name.endswith(".part"):
            continue
        shutil.rmtree(os.path.join(snaps, name), ignore_errors=True)
        if not readers:
            try:
                os.rmdir(os.path.join(users, base))
            except OSError:
                pass
