"""The commands for reproducing cloud failures locally: `dsjobs fault` (inject the cloud's failures per project),
`dsjobs check` (preflight a config: what would fail or cost in the cloud, dsjobs/preflight.py) and `dsjobs replay`
(a cloud job run again here and compared, dsjobs/replay.py). Registered by dsjobs/cli.py's parser."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _data_dir(a) -> Path:
    from engine.config import default_data_dir
    return Path(a.data_dir) if a.data_dir else default_data_dir()


def cmd_fault(a) -> int:
    from engine.errors import EngineError
    from engine.faults import ProjectFaults
    faults = ProjectFaults(_data_dir(a))
    try:
        if a.fault_cmd == "set":
            spec = faults.set(a.project, a.spec)
            print(f"faults for project {a.project}: {spec.text} (every job of it from now on; "
                  f"`dsjobs fault clear {a.project}` to stop)", file=sys.stderr)
        elif a.fault_cmd == "clear":
            had = faults.clear(a.project)
            print(f"faults for project {a.project} cleared" if had else f"project {a.project} had no faults",
                  file=sys.stderr)
        else:
            for project, spec in faults.all().items():
                print(f"{project}\t{spec}")
    except EngineError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


def cmd_check(a) -> int:
    from dsjobs import preflight
    return preflight.main(a)


def cmd_replay(a) -> int:
    from dsjobs import replay
    return replay.main(a)


def add_commands(sub) -> None:
    f = sub.add_parser("fault", help="inject the cloud's failures into a project's jobs (also per job: the env var "
                                     "DSJOBS_FAULTS)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=FAULTS_HELP)
    fs = f.add_subparsers(dest="fault_cmd", required=True)
    x = fs.add_parser("set", help="every job of PROJECT gets these faults (SPEC: a comma-separated list)")
    x.add_argument("project")
    x.add_argument("spec")
    y = fs.add_parser("clear", help="no more faults for PROJECT")
    y.add_argument("project")
    z = fs.add_parser("list", help="projects with faults")
    for p in (x, y, z):
        p.add_argument("--data-dir", help="engine data dir (default: ~/.local/share/dsjobs)")
        p.set_defaults(func=cmd_fault)

    c = sub.add_parser("check", help="preflight a config: what would fail or cost in the cloud that a local run "
                                     "does not show (nothing is run)")
    c.add_argument("-c", "--config", required=True)
    c.add_argument("--format", choices=["text", "json"], default="text")
    c.add_argument("--python", help="the Python `python: auto` would be analysed in (default: the active venv's, "
                                    "else the `python` on PATH)")
    c.add_argument("--offline", action="store_true", help="resolve requirements from uv's cache only")
    c.add_argument("--data-dir", help="engine data dir, for the resource ids registered here")
    c.set_defaults(func=cmd_check)

    # allow_abbrev off: `--iam-token TOKEN` (a flag of earlier versions) is refused, not taken for --iam-token-file
    r = sub.add_parser("replay", help="fetch a job from the cloud (or another dsjobs), run it here with the same "
                                      "parameters, compare the two", allow_abbrev=False)
    r.add_argument("job_id")
    r.add_argument("--from", dest="source", default="datasphere.api.cloud.yandex.net:443",
                   help="the API endpoint the job ran on (default: the cloud's)")
    r.add_argument("--ca-file", help="trust this CA for --from (default: the system's roots)")
    r.add_argument("--insecure", action="store_true", help="plain-text gRPC to --from (a loopback dsjobs)")
    # Credentials never on the command line (every local user reads it: ps, /proc/PID/cmdline): from the
    # environment, as the official client takes them, or from a file.
    r.add_argument("--iam-token-file", metavar="FILE", help="a file holding an IAM token (default: $YC_IAM_TOKEN)")
    r.add_argument("--oauth-token-file", metavar="FILE",
                   help="a file holding an OAuth token to exchange for an IAM token (default: $YC_TOKEN or "
                        "$YC_OAUTH_TOKEN)")
    r.add_argument("--profile", help="the yc CLI profile to take credentials from (default: its current one)")
    r.add_argument("--token-file", dest="source_token_file",
                   help="a file holding the bearer token for --from (another dsjobs's token)")
    r.add_argument("--inputs", action="append", default=[], metavar="DIR",
                   help="also look for the job's inputs here (by sha256)")
    r.add_argument("--data-dir", help="the local engine's data dir (its blob store and secrets store are searched)")
    r.add_argument("--sandbox", choices=["bwrap", "none"], default="bwrap")
    r.add_argument("--format", choices=["text", "json"], default="text")
    r.add_argument("--keep", help="keep the downloaded files and the local outputs in this directory")
    r.add_argument("--timeout", type=float, default=0, help="seconds the local run may take (default: none)")
    r.set_defaults(func=cmd_replay)


FAULTS_HELP = """\
SPEC is a comma-separated list of:
  no-capacity[=TYPE]         no machine for TYPE (every type without =TYPE); the next type is tried, none left: ERROR
  preempt-after=DURATION     the machine is lost after DURATION: processes SIGKILLed, no outputs, ERROR
  drop-logs-after=DURATION   ReadLogs streams end with UNAVAILABLE after DURATION (clients resume)
  upload-url-expired         upload URLs are handed out already expired (PUT answers 403)
  disk-full-at=SIZE          the working dir refuses writes past SIZE with ENOSPC
  oom[=SIZE]                 a memory limit of the instance type's RAM (or SIZE): the job is killed past it
  slow-env-build=DURATION    the environment build takes DURATION longer
DURATION: 90s, 1m30s, 500ms or seconds; SIZE: bytes or 64MB, 20GB (binary units).
Per job: env var DSJOBS_FAULTS=SPEC (the official client passes env vars unchanged); from pytest:
@pytest.mark.dsjobs_faults(SPEC). Each fault that takes effect says "injected fault:" in the job's system log."""
