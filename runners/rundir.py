"""One attempt's run directory, the one definition of its paths.

The same names on the engine's machine (DATA_DIR/jobs/<job id>/) and on a Ray node (NODE_DIR/runs/<attempt>/);
engines of earlier releases wrote the same names, which is how a restarted engine adopts what they started:

    spec, supervisor, status, stop   the executor <-> supervisor channel (runners/executors/supervisor.py)
    container                        the id of a Docker job's container
    layout, instance                 what a restarted engine needs to collect outputs and to confirm a start
    journal                          every log line of the job, framed (runners/journal.py)
    stdout.txt, stderr.txt           the job's output, as the cloud's log files
    system.log, env_build.log        the engine's lines about the job; the python env build's output
    docker_stats.tsv                 resource samples (runners/executors/stats.py)
    progress/job_progress.jsonl      JOB_PROGRESS_FILENAME, in a directory of its own (bind-mounted in containers)
    work/                            the job's working directory
    venv/, home/, tmp/, bin/         the job's own env layer, and its sandbox's HOME, /tmp and PATH
    gpus                             the GPUs (uuids, shared) the run was given (runners/node.py held_gpus)
    gpu_stats.tsv                    `.gpu_stats.tsv` rows (runners/gpus.py)
    sa/token                         the service account's token (SA_TOKEN_FILENAME), removed when the run ends
    faults                           the run's injected faults and how this machine applies them (read back when
                                     a restarted engine re-adopts the run)
    s3_snapshots                     the S3 mount snapshots the run reads (released when it ends)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


PROGRESS = ("progress", "job_progress.jsonl")  # JOB_PROGRESS_FILENAME, under the run dir


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    def __str__(self) -> str:
        return str(self.path)

    def _(name: str):  # noqa: N805 - a property per file, named once; made once per RunDir (a job asks ~25 times)
        def get(self):
            made = self.__dict__.get(name)
            if made is None:
                made = self.__dict__[name] = self.path / name
            return made
        return property(get)

    work = _("work")
    journal = _("journal")
    stdout = _("stdout.txt")
    stderr = _("stderr.txt")
    system_log = _("system.log")
    env_build_log = _("env_build.log")
    docker_stats = _("docker_stats.tsv")
    progress_dir = _("progress")
    progress = property(lambda self: self.path.joinpath(*PROGRESS))
    layout = _("layout")
    instance = _("instance")
    spec = _("spec")
    supervisor = _("supervisor")
    status = _("status")
    container = _("container")
    venv = _("venv")
    gpus = _("gpus")
    gpu_stats = _("gpu_stats.tsv")
    sa = _("sa")
    faults = _("faults")
    s3_snapshots = _("s3_snapshots")
    del _

    def make(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.progress_dir.mkdir(exist_ok=True)
        return self

    def read(self, name: str) -> str:
        try:
            return (self.path / name).read_text().strip()
        except OSError:
            return ""
