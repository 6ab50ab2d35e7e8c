"""Opening a data dir written by an older engine: once, when its format is older than this engine's.

Format 1 (before the trust boundary): files were created with the process umask (often 0644), a registry password
sent in the clear stayed in the job's record, process jobs' environment (project secrets included) stayed in
``jobs/<id>/spec``, and Docker jobs' secrets file in ``jobs/<id>/secrets``. Format 2 keeps secrets only in the
0600 secrets store and makes everything owner-only. Ids, records, logs and running jobs are kept as they are.
"""
from __future__ import annotations

import logging
import marshal
import os
from pathlib import Path

from engine.resources import Secrets, write_private
from engine.state import JobStatus
from engine.store import Store
from runners.fsops import private_tree, rmtree

log = logging.getLogger(__name__)
FORMAT = 2
FORMAT_FILE = "format"


def data_dir_format(data_dir: Path) -> int:
    try:
        return int((data_dir / FORMAT_FILE).read_text().strip())
    except (OSError, ValueError):
        return 1


def upgrade(data_dir: Path, store: Store) -> None:
    fmt = data_dir_format(data_dir)
    if fmt >= FORMAT:
        return
    log.info("data dir %s: upgrading from format %d to %d", data_dir, fmt, FORMAT)
    secrets = Secrets(data_dir)
    scrubbed = False
    for job in store.jobs_with_status(*JobStatus):
        spec = job.params.env.docker_image_spec
        if spec is not None and spec.password_plain_text:
            secrets.set_job_password(job.id, spec.password_plain_text)
            spec.password_plain_text, spec.password_stored = "", True
            store.update_job(job)
            scrubbed = True
    if scrubbed:
        store.compact()
    jobs = data_dir / "jobs"
    for run_dir in (jobs.iterdir() if jobs.is_dir() else []):
        rmtree(str(run_dir / "secrets"))
        spec_path = run_dir / "spec"
        try:
            spec = marshal.loads(spec_path.read_bytes())
        except (OSError, ValueError, EOFError, TypeError):
            continue
        if isinstance(spec, dict) and "env" in spec:
            spec.pop("env")  # a running job's supervisor has it already; nothing reads it again
            tmp = spec_path.with_name("spec.scrub")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(marshal.dumps(spec))
            os.replace(tmp, spec_path)
    private_tree(str(data_dir))
    write_private(data_dir / FORMAT_FILE, f"{FORMAT}\n")
