"""What runners/faults.py decides without a job: where a full disk can be a real filesystem, and what counts as an
OOM kill in a memory cgroup."""
from __future__ import annotations

import os

from runners import faults as rf


def test_a_cgroup_v1_that_hit_its_limit_without_an_oom_kill_is_no_oom(tmp_path):
    cg = tmp_path / "v1"
    cg.mkdir()
    (cg / "memory.failcnt").write_text("42\n")  # the limit was reached (pages reclaimed): not a kill
    (cg / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    assert rf.oom_kills(str(cg)) == 0
    (cg / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\n")  # an old kernel: no count
    assert rf.oom_kills(str(cg)) == 0
    (cg / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert rf.oom_kills(str(cg)) == 2


def test_a_cgroup_v2_counts_its_oom_kills(tmp_path):
    (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")
    assert rf.oom_kills(str(tmp_path)) == 1


def test_a_full_disk_bigger_than_half_the_available_memory_is_watched_not_a_tmpfs(tmp_path):
    work = tmp_path / "work"
    said = []
    try:
        assert not rf.mount_limited(str(work), 600 << 20, said.append, available=lambda: 1 << 30)
        assert not rf.is_mount(str(work)) and "watched instead" in said[-1] and "more than half" in said[-1]
        if os.geteuid() == 0:  # where a tmpfs can be made at all: a small one is
            assert rf.mount_limited(str(work), 1 << 20, said.append, available=lambda: 1 << 30) == \
                rf.is_mount(str(work))
    finally:
        rf.release(str(work))
    assert rf.mem_available() > 0
