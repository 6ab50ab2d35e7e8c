"""Job and operation records in SQLite (WAL, synchronous=FULL, busy timeout, BEGIN IMMEDIATE for writes).

Records are stored as JSON of the domain dataclasses, with the columns that queries need kept beside them.
Status writes are compare-and-set on the old status, so a late writer never overwrites a newer state.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

from engine.errors import NotFound, Unavailable
from engine.model import Attempt, Job, Operation, from_dict, to_dict
from engine.state import JobStatus

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs(project_id, created_at DESC, seq DESC);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs(status);
CREATE TABLE IF NOT EXISTS operations (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS operations_by_job ON operations(job_id);
CREATE TABLE IF NOT EXISTS blob_refs (
    job_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, sha256)
);
CREATE INDEX IF NOT EXISTS blob_refs_by_sha ON blob_refs(sha256);
CREATE TABLE IF NOT EXISTS attempts (
    id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS attempts_by_job ON attempts(job_id);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL
);
"""


class StaleWrite(Exception):
    """The record changed status since it was read (compare-and-set failed)."""


class Store:
    def __init__(self, path: Path | str):
        self.path = str(path)
        self._lock = threading.RLock()
        self._closed = False
        # job id -> how many writes of its record (or its operations) this store made: what an answer built from
        # them is checked against (engine/api/servicers.py caches polled operations by it)
        self._gen: dict[str, int] = {}
        self._changes = threading.Lock()  # guards _gen and _waits: a write wakes the waits on its own job only
        self._waits: dict[str, list] = {}  # job id -> [its Condition (on _changes), how many wait on it]
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.execute("PRAGMA journal_size_limit=67108864")
        self._db.executescript(SCHEMA)
        for suffix in ("", "-wal", "-shm"):  # the records are the owner's alone (SQLite copies the mode to -wal)
            try:
                os.chmod(self.path + suffix, 0o600)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._closed = True
        self.wake_waits()  # nothing waits on a closed store

    def wake_waits(self) -> None:
        """Every wait_change looks again at once (its ``ended`` too)."""
        with self._changes:
            for cond, _ in self._waits.values():
                cond.notify_all()

    def _open(self) -> sqlite3.Connection:
        """The connection (under the lock); once the engine closed the store, a clear error for what still asks
        (a job's thread whose supervisor ended after the engine stopped: the next engine collects that run)."""
        if self._closed:
            raise Unavailable("the engine is stopping: its store is closed")
        return self._db

    def compact(self) -> None:
        """Rewrite the database without free pages and empty the WAL, so that nothing overwritten (a secret an
        older engine stored, say) survives in old page versions."""
        with self._lock:
            self._open().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.execute("VACUUM")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. If its COMMIT fails (a full disk), it is rolled back: the connection is never left
        inside a transaction, so the next write works once space is back."""
        with self._lock:
            self._open()
            if self._db.in_transaction:
                self._rollback()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _q(self, sql: str, args=()) -> list:
        with self._lock:
            return self._open().execute(sql, args).fetchall()

    # --- jobs ------------------------------------------------------------------------------------------------

    def generation(self, job_id: str) -> int:
        """Changes (after the commit) with every write of the job's record or operations; a reader that took it
        before reading them knows that what it read is at least that new."""
        return self._gen.get(job_id, 0)

    def _wrote(self, job_id: str) -> None:
        with self._changes:
            self._gen[job_id] = self._gen.get(job_id, 0) + 1
            waits = self._waits.get(job_id)
            if waits is not None:
                waits[0].notify_all()

    def wait_change(self, job_id: str, generation: int, timeout: float,
                    ended: Callable[[], bool] = lambda: False) -> bool:
        """Until the job's generation is past ``generation`` (True), or ``timeout`` seconds pass, the store closes
        or ``ended()`` (False; looked at after each wake_waits). A write wakes the waits on its job only."""
        end = time.monotonic() + timeout
        with self._changes:
            waits = self._waits.get(job_id)
            if waits is None:
                waits = self._waits[job_id] = [threading.Condition(self._changes), 0]
            waits[1] += 1
            try:
                while self._gen.get(job_id, 0) == generation:
                    left = end - time.monotonic()
                    if left <= 0 or self._closed or ended():
                        return False
                    waits[0].wait(left)
                return True
            finally:
                waits[1] -= 1
                if not waits[1]:
                    del self._waits[job_id]

    @staticmethod
    def _job_row(job: Job):
        return (job.project_id, job.status.name, job.created_at, json.dumps(to_dict(job)))

    def insert_job(self, job: Job, op: Optional[Operation] = None) -> None:
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO projects(id, created_at) VALUES (?, ?)", (job.project_id, job.created_at))
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            project_id, status, created_at, data = self._job_row(job)
            db.execute("INSERT INTO jobs(id, project_id, status, created_at, seq, data) VALUES (?,?,?,?,?,?)",
                       (job.id, project_id, status, created_at, seq, data))
            db.executemany("INSERT OR IGNORE INTO blob_refs(job_id, sha256) VALUES (?, ?)",
                           [(job.id, f.sha256) for f in job.params.all_uploads()])
            if op is not None:
                self._put_op(db, op)
        self._wrote(job.id)

    def get_job(self, job_id: str) -> Job:
        rows = self._q("SELECT data FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"job {job_id!r} not found")
        return from_dict(Job, json.loads(rows[0][0]))

    def update_job(self, job: Job, *, expect: Optional[JobStatus] = None, op: Optional[Operation] = None) -> None:
        """Write the job; with ``expect``, only if its stored status is still that one (else StaleWrite)."""
        with self.tx() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if row is None:
                raise NotFound(f"job {job.id!r} not found")
            if expect is not None and row[0] != expect.name:
                raise StaleWrite(f"job {job.id} is {row[0]}, expected {expect.name}")
            _, status, _, data = self._job_row(job)
            db.execute("UPDATE jobs SET status = ?, data = ? WHERE id = ?", (status, data, job.id))
            refs = [f.sha256 for f in job.output_files + job.log_files + job.diagnostic_files]
            db.executemany("INSERT OR IGNORE INTO blob_refs(job_id, sha256) VALUES (?, ?)",
                           [(job.id, s) for s in refs])
            if op is not None:
                self._put_op(db, op)
        self._wrote(job.id)

    def list_jobs(self, project_id: str, statuses: Optional[set[str]], offset: int, limit: int) -> list[Job]:
        sql = "SELECT data FROM jobs WHERE project_id = ?"
        args: list = [project_id]
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += sorted(statuses)
        sql += " ORDER BY created_at DESC, seq DESC LIMIT ? OFFSET ?"
        args += [limit, offset]
        return [from_dict(Job, json.loads(r[0])) for r in self._q(sql, args)]

    def jobs_with_status(self, *statuses: JobStatus) -> list[Job]:
        rows = self._q(f"SELECT data FROM jobs WHERE status IN ({','.join('?' * len(statuses))}) ORDER BY seq",
                       [s.name for s in statuses])
        return [from_dict(Job, json.loads(r[0])) for r in rows]

    # Queued: PREPARING and not yet claimed by a backend (attempt 0). Read from the record's JSON in SQL, so the
    # dispatcher lists the queue without parsing a record per queued job.
    _QUEUED = "FROM jobs WHERE status = 'PREPARING' AND json_extract(data, '$.attempt') = 0"

    def queued(self) -> list[tuple[str, str]]:
        """(job id, project id) of every queued job, oldest first."""
        return [(r[0], r[1]) for r in self._q(f"SELECT id, project_id {self._QUEUED} ORDER BY seq")]

    def claimed_active(self) -> list[Job]:
        """Every active job a backend was handed (the queued ones left out, unparsed)."""
        rows = self._q("SELECT data FROM jobs WHERE status IN ('PREPARING', 'EXECUTING', 'UPLOADING_OUTPUT', "
                       "'CANCELLING') AND NOT (status = 'PREPARING' AND json_extract(data, '$.attempt') = 0) "
                       "ORDER BY seq")
        return [from_dict(Job, json.loads(r[0])) for r in rows]

    def has_queued(self) -> bool:
        return bool(self._q(f"SELECT 1 {self._QUEUED} LIMIT 1"))

    def projects_created(self) -> dict[str, float]:
        """Project id -> when it was first used, for every project the store has a row of (rows outlive jobs,
        and older engines made one for any id ProjectService.Get was asked about)."""
        return {r[0]: r[1] for r in self._q("SELECT id, created_at FROM projects")}

    def project_ids_with_jobs(self) -> set[str]:
        return {r[0] for r in self._q("SELECT DISTINCT project_id FROM jobs")}

    def note_project(self, project_id: str, created_at: float) -> float:
        """The project's first use, recorded once (``created_at`` when there is none yet)."""
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO projects(id, created_at) VALUES (?, ?)", (project_id, created_at))
            return db.execute("SELECT created_at FROM projects WHERE id = ?", (project_id,)).fetchone()[0]

    def has_job(self, job_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM jobs WHERE id = ?", (job_id,)))

    def has_project(self, project_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM projects WHERE id = ?", (project_id,)))

    def project_job_ids(self, project_id: str) -> list[str]:
        return [r[0] for r in self._q("SELECT id FROM jobs WHERE project_id = ?", (project_id,))]

    def delete_job(self, job_id: str) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
            db.execute("DELETE FROM operations WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM blob_refs WHERE job_id = ?", (job_id,))
        self._wrote(job_id)

    def add_blob_ref(self, job_id: str, sha: str) -> None:
        """A job holds this object (engine/cas.py: recorded before the object is looked for or published)."""
        with self.tx() as db:
            db.execute("INSERT OR IGNORE INTO blob_refs(job_id, sha256) VALUES (?, ?)", (job_id, sha))

    def blob_referenced(self, sha: str) -> bool:
        return bool(self._q("SELECT 1 FROM blob_refs WHERE sha256 = ? LIMIT 1", (sha,)))

    def drop_blob_refs(self, job_id: str) -> list[str]:
        """Forget the job's references; returns the digests that no job references any more."""
        with self.tx() as db:
            shas = [r[0] for r in db.execute("SELECT sha256 FROM blob_refs WHERE job_id = ?", (job_id,))]
            db.execute("DELETE FROM blob_refs WHERE job_id = ?", (job_id,))
            return [s for s in shas
                    if db.execute("SELECT 1 FROM blob_refs WHERE sha256 = ? LIMIT 1", (s,)).fetchone() is None]

    # --- operations ------------------------------------------------------------------------------------------

    @staticmethod
    def _put_op(db, op: Operation) -> None:
        db.execute("INSERT OR REPLACE INTO operations(id, job_id, data) VALUES (?, ?, ?)",
                   (op.id, op.job_id, json.dumps(to_dict(op))))

    def put_op(self, op: Operation) -> None:
        with self.tx() as db:
            self._put_op(db, op)
        self._wrote(op.job_id)

    def get_op(self, op_id: str) -> Operation:
        rows = self._q("SELECT data FROM operations WHERE id = ?", (op_id,))
        if not rows:
            raise NotFound(f"operation {op_id!r} not found")
        return from_dict(Operation, json.loads(rows[0][0]))

    # --- remote attempts -------------------------------------------------------------------------------------

    def put_attempt(self, a: Attempt, *, expect: Optional[str] = None) -> None:
        """Insert or write an attempt; with ``expect``, only if its stored state is still that one."""
        with self.tx() as db:
            if expect is not None:
                row = db.execute("SELECT state FROM attempts WHERE id = ?", (a.id,)).fetchone()
                if row is None or row[0] != expect:
                    raise StaleWrite(f"attempt {a.id} is {row[0] if row else 'absent'}, expected {expect}")
            db.execute("INSERT OR REPLACE INTO attempts(id, job_id, state, data) VALUES (?, ?, ?, ?)",
                       (a.id, a.job_id, a.state, json.dumps(to_dict(a))))

    def get_attempt(self, attempt_id: str) -> Optional[Attempt]:
        rows = self._q("SELECT data FROM attempts WHERE id = ?", (attempt_id,))
        return from_dict(Attempt, json.loads(rows[0][0])) if rows else None

    def attempts(self, *, job_id: str = "", states: tuple = (), ray_undeleted: bool = False) -> list[Attempt]:
        sql, args = "SELECT data FROM attempts WHERE 1=1", []
        if job_id:
            sql, args = sql + " AND job_id = ?", args + [job_id]
        if states:
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += list(states)
        out = [from_dict(Attempt, json.loads(r[0])) for r in self._q(sql + " ORDER BY rowid", args)]
        return [a for a in out if not a.ray_deleted] if ray_undeleted else out
