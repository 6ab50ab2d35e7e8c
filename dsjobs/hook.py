"""Every user of the official `datasphere` package (0.10.0), pointed at a dsjobs engine: the CLI, the SDK in
scripts, notebooks and Airflow tasks, the VS Code toolkit (it runs the venv's CLI).

`dsjobs hook install` copies this file into that client's site-packages as ``dsjobs_datasphere_hook.py``, with
dsjobs/discovery.py beside it as ``dsjobs_datasphere_discovery.py`` and a one-line ``.pth`` (PTH_LINE) that imports
this module only when ``DSJOBS_ENDPOINT`` is set: without it nothing of dsjobs is even imported. `dsjobs
datasphere ...` loads the same two files by path and calls `install()`. Standard library only (it lives in the
official client's environment, which has no dsjobs), and cheap at start: no importlib.abc, nothing imported until a
datasphere module is.

What is replaced, each right after the module that defines it has run (so names other modules import from it are
already the replaced ones):

- ``datasphere.channel._get_channel`` (every channel of the client goes through it): a channel to the endpoint
  (insecure, or TLS checked against the CA the engine's descriptor names) with the client's own options (its
  retry policy) and without an HTTP proxy (gRPC would send even 127.0.0.1 through ``http_proxy``);
- ``datasphere.auth.create_iam_token``: the engine's token, found as dsjobs's own clients find it (no IAM, no
  metadata server, no ``yc``, and no "iam token from env var is not refreshable" warning at every call);
- ``datasphere.client.Client._get_job_link``: the local engine's job page, never with a token in it (the client
  writes the link into its log files);
- ``check_package_version`` (it asks pypi.org at every exit): nothing;
- ``SERVER_ENV`` is hidden while ``datasphere.api`` runs (its DEV mode is broken), and restored afterwards.
"""
import os
import sys

PTH_NAME = "dsjobs_datasphere_hook.pth"
MODULE_NAME = "dsjobs_datasphere_hook"
DISCOVERY_NAME = "dsjobs_datasphere_discovery"
PTH_LINE = 'import os; os.environ.get("DSJOBS_ENDPOINT") and __import__("dsjobs_datasphere_hook").install()\n'
CLIENT_VERSION = "0.10.0"
POLL_SECONDS = 1.0  # the client polls every 5 s, for the cloud; a local job should not wait that long to end

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_state = {}


def _discovery():
    mod = sys.modules.get(DISCOVERY_NAME)
    if mod is None:
        try:
            mod = __import__(DISCOVERY_NAME)
        except ImportError:  # run from dsjobs's own tree (its tests), not from a client's site-packages
            from dsjobs import discovery as mod
    return mod


def endpoint():
    return os.environ.get("DSJOBS_ENDPOINT", "").strip()


def token():
    """The engine's token (read once per process), or a placeholder for an engine that runs without one."""
    if "token" not in _state:
        found = None
        try:
            found = _discovery().find_token(endpoint(), os.environ.get("DSJOBS_TOKEN_FILE") or None)
        except OSError as e:
            _warn(f"{e}; calling without a token")
        _state["token"] = found or "dsjobs-no-token"
    return _state["token"]


def link_base():
    """Where the engine serves job pages: $DSJOBS_UI_URL, else what the engine recorded for its endpoint."""
    if "link" not in _state:
        base = os.environ.get("DSJOBS_UI_URL", "")
        if not base:
            try:
                desc = _discovery().find_descriptor(endpoint()) or {}
            except OSError:
                desc = {}
            base = desc.get("ui_url") or desc.get("files_url") or ""
        _state["link"] = base.rstrip("/")
    return _state["link"]


def job_link(project_id, job_id):
    base = link_base()
    return f"{base}/communities/local/projects/{project_id}/job/{job_id}" if base else None


def _warn(text):
    sys.stderr.write(f"dsjobs hook: {text}\n")


def _transport():
    """(TLS, the CA's PEM or None for the system's roots), as the engine's descriptor says (read once)."""
    if "transport" not in _state:
        try:
            _state["transport"] = _discovery().transport(endpoint())
        except OSError as e:
            _warn(f"the engine serves TLS and its CA cannot be read ({e}); checking against the system's roots")
            _state["transport"] = (True, None)
        except AttributeError:  # a discovery module of an older `dsjobs hook install`: plain gRPC, as it was
            _state["transport"] = (False, None)
    return _state["transport"]


def _patch_channel(m):
    grpc = m.grpc

    def _get_channel(_cloud_endpoint, user_agent):
        options = list(m.CHANNEL_OPTIONS) + [("grpc.enable_http_proxy", 0)]
        if user_agent:
            options.append(("grpc.primary_user_agent", user_agent))
        tls, ca = _transport()
        if tls:  # `dsjobs serve --tls-cert`: checked against the CA the engine names (--tls-ca), else the system's
            return grpc.secure_channel(endpoint(), grpc.ssl_channel_credentials(root_certificates=ca),
                                       options=options)
        return grpc.insecure_channel(endpoint(), options=options)
    m._get_channel = _get_channel


def _patch_auth(m):
    def create_iam_token(oauth_token=None, yc_profile=None):
        # expires_after_seconds: the client keeps the token until then, so it is looked up once per process
        return m.IssuedIamToken(value=token(), expires_after_seconds=10 ** 9)
    m.create_iam_token = create_iam_token


def _patch_client(m):
    def _get_job_link(self, job):
        return job_link(job.project_id, job.id)
    m.Client._get_job_link = _get_job_link
    m.operation_check_interval_seconds = min(m.operation_check_interval_seconds, POLL_SECONDS)
    m.log_read_interval_seconds = min(m.log_read_interval_seconds, POLL_SECONDS)


def _no_version_check():
    return None


def _patch_version_check(m):
    m.check_package_version = _no_version_check


def _patch_version(m):
    if getattr(m, "version", CLIENT_VERSION) != CLIENT_VERSION:
        _warn(f"written for datasphere {CLIENT_VERSION}, this is {m.version}; parts may not be redirected")


_PATCHES = {
    "datasphere.version": _patch_version,
    "datasphere.channel": _patch_channel,
    "datasphere.auth": _patch_auth,
    "datasphere.client": _patch_client,
    "datasphere.utils": _patch_version_check,
    "datasphere.main": _patch_version_check,
}
_WATCHED = frozenset(_PATCHES) | {"datasphere.api"}


def _apply(name, module):
    try:
        _PATCHES[name](module)
    except AttributeError as e:  # another client version: say so rather than half-work in silence
        _warn(f"cannot redirect {name} ({e}); is this datasphere {CLIENT_VERSION}?")


class _Loader:
    """The real loader, with our patch run right after the module's body (a plain class: importlib.abc costs
    ~30 ms at every start of the interpreter)."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):  # get_code, get_resource_reader...: runpy (python -m datasphere.main) asks
        return getattr(self._inner, name)

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        name = module.__name__
        hidden = os.environ.pop("SERVER_ENV", None) if name == "datasphere.api" else None
        try:
            self._inner.exec_module(module)
        finally:
            if hidden is not None:
                os.environ["SERVER_ENV"] = hidden
            module.__loader__ = self._inner
            if getattr(module, "__spec__", None) is not None:
                module.__spec__.loader = self._inner
        if name in _PATCHES:
            _apply(name, module)


class _Finder:
    """Answers only for the modules above; the real lookup is the other finders' (editable installs keep
    working)."""

    def find_spec(self, name, path=None, target=None):
        if name not in _WATCHED:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None

    def invalidate_caches(self):
        pass


def installed():
    return any(type(f).__name__ == "_Finder" and type(f).__module__ in (MODULE_NAME, __name__)
               for f in sys.meta_path)


def install():
    """Redirect the datasphere package in this interpreter to $DSJOBS_ENDPOINT (nothing without it)."""
    if not endpoint() or installed():
        return
    if any(h in endpoint() for h in _LOOPBACK):
        # the client's file transfers (requests) would go through a proxy too, for the engine's loopback URLs
        for var in ("NO_PROXY", "no_proxy"):
            current = os.environ.get(var, "")
            if "127.0.0.1" not in current.split(","):
                os.environ[var] = ",".join(x for x in (current, "127.0.0.1,localhost,::1") if x)
    for name in _PATCHES:  # imported before the hook was installed
        if name in sys.modules:
            _apply(name, sys.modules[name])
    sys.meta_path.insert(0, _Finder())
