import os
import random
import shutil
import stat
import zipfile

import pytest

from runners.safezip import UnsafeArchive, ZipLimits, extract, open_beneath


def make(tmp_path, entries, name="a.zip"):
    p = tmp_path / name
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
        for n, data in entries:
            if isinstance(n, zipfile.ZipInfo):
                z.writestr(n, data)
            else:
                z.writestr(n, data)
    return str(p)


@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/abs/x", "..\\x", "a/\\..\\b"])
def test_traversal_refused(tmp_path, bad):
    target = tmp_path / "t"
    with pytest.raises(UnsafeArchive) as e:
        extract(make(tmp_path, [("ok.txt", b"1"), (bad, b"2")]), str(target))
    assert bad in str(e.value) or repr(bad) in str(e.value)
    assert not (tmp_path / "x").exists()


def test_symlink_entry_refused(tmp_path):
    info = zipfile.ZipInfo("l")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(UnsafeArchive):
        extract(make(tmp_path, [(info, "/etc")]), str(tmp_path / "t"))


def test_existing_symlink_in_target_not_followed(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, target / "l")
    with pytest.raises(UnsafeArchive, match="l/passwd"):
        extract(make(tmp_path, [("l/passwd", b"x")]), str(target))
    assert list(outside.iterdir()) == []


def test_bomb_limits(tmp_path):
    bomb = make(tmp_path, [("zeros", b"\0" * (20 << 20))])
    with pytest.raises(UnsafeArchive, match="expands"):
        extract(bomb, str(tmp_path / "t"))
    many = make(tmp_path, [(f"f{i}", b"") for i in range(30)], "many.zip")
    with pytest.raises(UnsafeArchive, match="entries"):
        extract(many, str(tmp_path / "t2"), ZipLimits(max_entries=10))
    with pytest.raises(UnsafeArchive, match="limit"):
        extract(make(tmp_path, [("f", os.urandom(4096))], "big.zip"), str(tmp_path / "t3"), ZipLimits(max_bytes=1000))


def test_regular_extract_and_open_beneath(tmp_path):
    top = extract(make(tmp_path, [("d/a.txt", b"A"), ("d/e/b.txt", b"B")]), str(tmp_path / "t"))
    assert top == ["d"] and (tmp_path / "t/d/e/b.txt").read_bytes() == b"B"
    assert os.access(tmp_path / "t/d/a.txt", os.X_OK)
    os.symlink("/proc/self", tmp_path / "t" / "hop")
    with pytest.raises(ValueError):
        open_beneath(str(tmp_path / "t"), "hop/environ")


def test_many_small_entries_count_as_one_archive(tmp_path):
    # 200 x 1 MiB of zeros: each entry alone is at the per-entry floor, the archive expands ~1000x.
    bomb = make(tmp_path, [(f"z{i}", b"\0" * (1 << 20)) for i in range(200)], "many-zeros.zip")
    with pytest.raises(UnsafeArchive, match="expands more than 100x"):
        extract(bomb, str(tmp_path / "t"))
    # An ordinary compressible input (a time series CSV that zips ~12x) is not refused.
    r = random.Random(1)
    line = b"".join(b"2026-12-01T%02d:%02d:%02d,sensor-3,%d,OK\n" % (
        i // 3600 % 24, i // 60 % 60, i % 60, r.randrange(10) if i % 10 == 0 else 5) for i in range(400_000))
    csv = make(tmp_path, [("data.csv", line)], "csv.zip")
    assert os.path.getsize(csv) * 10 < len(line)
    extract(csv, str(tmp_path / "ok"))
    assert (tmp_path / "ok" / "data.csv").read_bytes() == line


def test_the_free_disk_bounds_an_extraction(tmp_path):
    blob = make(tmp_path, [("f", os.urandom(3 << 20))], "random.zip")
    free = shutil.disk_usage(tmp_path).free
    with pytest.raises(UnsafeArchive, match="free disk"):
        extract(blob, str(tmp_path / "t"), ZipLimits(reserve_bytes=free - (1 << 20)))


def test_corrupt_and_conflicting_archives_name_the_problem(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UnsafeArchive, match="corrupt"):
        extract(str(bad), str(tmp_path / "t"))
    target = tmp_path / "t2"
    extract(make(tmp_path, [("a", b"file")], "one.zip"), str(target))
    with pytest.raises(UnsafeArchive, match="a/x"):
        extract(make(tmp_path, [("a/x", b"under a")], "two.zip"), str(target))
    extract(make(tmp_path, [("d/y", b"dir")], "three.zip"), str(target))
    with pytest.raises(UnsafeArchive, match="'d'"):
        extract(make(tmp_path, [("d", b"over d")], "four.zip"), str(target))
