import os
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
    with pytest.raises(OSError):
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
