"""The job page's parts that need no server: journal record starts (runners/journal.py boundaries, the page index
over them), what a page shows of a config, the status names it lists, and where a login may send a browser."""
from __future__ import annotations

import os

import yaml

from engine.state import JobStatus
from engine.ui import logindex, views
from engine.ui.app import STATUS_NAMES
from engine.ui.auth import local_path
from runners import journal


def _journal(path, payloads):
    fd = journal.open_for_append(str(path))
    try:
        for stream, data in payloads:
            journal.append(fd, stream, data, now=1.0)
    finally:
        os.close(fd)


def test_record_starts_are_found_from_headers_alone(tmp_path):
    path = tmp_path / "journal"
    sizes = [1, 70_000, 3, 0, 64 * 1024, 5]  # 70 000 is two records (64 KiB at most each)
    _journal(path, [(1, b"x" * n) for n in sizes])
    starts = [0]
    for r in journal.records(str(path)):
        starts.append(starts[-1] + journal.HEADER.size + len(r.content))
    assert list(journal.boundaries(str(path), 0, 1)) == starts[1:]
    assert list(journal.boundaries(str(path), 0, 10 ** 9)) == [starts[-1]]  # the end, always last
    assert list(journal.boundaries(str(path), starts[-1], 1)) == [starts[-1]]
    with open(path, "ab") as f:  # a record still being written is not a start yet
        f.write(journal.HEADER.pack(1, 1.0, 100) + b"half")
    assert list(journal.boundaries(str(path), 0, 10 ** 9)) == [starts[-1]]
    assert list(journal.boundaries(str(tmp_path / "none"), 0, 1)) == [0]


def test_the_page_index_tails_pages_and_checks_offsets(tmp_path):
    path = tmp_path / "journal"
    _journal(path, [(1, b"line %d\n" % i * 100) for i in range(3000)])  # ~2.6 MB of 900-byte records
    index = logindex.LogIndex(str(path))
    end = index.refresh()
    assert end == journal.size(str(path)) and index.pages() == len(index.points) > 8
    assert all(b - a >= logindex.PAGE for a, b in zip(index.points, index.points[1:]))
    assert end - logindex.PAGE * 2 <= index.tail() <= end - logindex.PAGE
    assert index.page_start(-1) == index.points[-1] and index.page_start(10 ** 6) == index.points[-1]
    starts = [0] + list(journal.boundaries(str(path), 0, 1))
    assert all(index.is_start(s) for s in starts[::97] + [end])
    assert not any(index.is_start(s + d) for s in starts[:50] for d in (1, 5, 13))
    assert not index.is_start(-1) and not index.is_start(end + 1)
    _journal(path, [(2, b"more\n")])  # grows: the index follows
    assert index.refresh() == end + journal.HEADER.size + 5
    path.unlink()  # its data cleared, then a new journal: the index starts over
    _journal(path, [(1, b"new\n")])
    assert index.refresh() == journal.HEADER.size + 4 and index.points == [0]


def test_a_line_longer_than_a_record_is_cut_between_characters(tmp_path):
    # Found by an attack: a 300 KB line of '中' was cut at every 64 KiB mid-character, and the job page showed
    # U+FFFD at each cut (its records are decoded one by one, as the official client decodes them).
    from runners.executors.supervisor import LogSink
    line = "中".encode() * 100_000 + b"\n"
    parts = list(journal.pieces(line))
    assert len(parts) > 3 and b"".join(parts) == line and all(p.decode() for p in parts)
    assert journal.char_boundary(b"ab", 2) == 2 and journal.char_boundary(b"\xff\xfe", 1) == 1  # not UTF-8: as asked
    sink = LogSink(str(tmp_path / "journal"), str(tmp_path / "out"), str(tmp_path / "err"))
    for i in range(0, len(line), 4095):  # pipe reads that end mid-character, the line longer than a record
        sink.feed(1, line[i:i + 4095])
    sink.flush_partial()
    sink.close()
    recs = [r.content for r in journal.records(str(tmp_path / "journal"))]
    assert len(recs) > 3 and b"".join(recs) == line and all(r.decode() for r in recs)
    assert (tmp_path / "out").read_bytes() == line


def test_no_page_starts_at_the_journals_end(tmp_path):
    # Found by an attack: when the last record crossed a page's mark, the journal's end became a page start, and
    # the log page (which opens on the last page) showed a page with no line on it while the job ran.
    path = tmp_path / "journal"
    n = logindex.PAGE // (journal.HEADER.size + 1000) + 1  # the last of them crosses the mark
    _journal(path, [(1, b"x" * 999 + b"\n")] * n)
    index = logindex.LogIndex(str(path))
    end = index.refresh()
    assert end >= logindex.PAGE and index.points == [0] and index.page_start(-1) == 0
    _journal(path, [(1, b"next\n")])  # a record after it: now a page starts there
    index.refresh()
    assert index.points == [0, end] and journal.read(str(path), index.page_start(-1), 100)[0][0].content == b"next\n"


def test_records_are_whole_lines_so_every_page_starts_a_line(tmp_path):
    # A job's output read 64 KiB+ at a time under load (the pipe full) was cut at MAX_RECORD mid-line, so a page
    # of the job page could start with the tail of a line ("059" of "row 1059"). Cuts are after a newline now.
    path = tmp_path / "journal"
    text = b"".join(b"row %d\n" % i for i in range(1, 60000))  # ~470 KB in one write
    long_line = b"y" * (journal.MAX_RECORD * 2 + 10) + b"\n"  # a line longer than a record: cut where it must be
    _journal(path, [(1, text), (1, long_line), (2, b"")])
    recs = list(journal.records(str(path)))
    assert b"".join(r.content for r in recs if r.stream == 1) == text + long_line
    assert all(len(r.content) <= journal.MAX_RECORD for r in recs)
    lines = [r for r in recs if r.stream == 1 and r.content[:1] == b"r"]
    assert len(lines) > 5 and all(r.content.endswith(b"\n") for r in lines)
    assert [len(r.content) for r in recs if r.content[:1] == b"y"] == [journal.MAX_RECORD] * 2 + [11]
    assert recs[-1].stream == 2 and recs[-1].content == b""  # an empty payload is still one record
    index = logindex.LogIndex(str(path))
    index.refresh()
    for start in index.points:
        first = journal.read(str(path), start, 100)[0][0].content
        assert first.startswith(b"row ") or first.startswith(b"y"), first[:20]


def test_a_config_is_shown_without_env_values_or_passwords():
    text = ("name: n\ncmd: python a.py\nenv:\n  vars:\n    - TOKEN_A: abc\n    - NAME_ONLY\n  docker:\n"
            "    image: img\n    password: hunter2\n  other:\n    password:\n      secret-id: REG\n"
            "inputs:\n  - data.csv: DATA\n")
    shown = views.shown_config(text)
    assert "abc" not in shown and "hunter2" not in shown
    data = yaml.safe_load(shown)
    assert data["env"]["vars"] == [{"TOKEN_A": views.HIDDEN}, "NAME_ONLY"]
    assert data["env"]["docker"] == {"image": "img", "password": views.HIDDEN}
    assert data["env"]["other"]["password"] == {"secret-id": "REG"}  # a secret's name, not its value
    assert data["inputs"] == [{"data.csv": "DATA"}] and data["cmd"] == "python a.py"
    assert yaml.safe_load(views.shown_config("env:\n  vars:\n    A: 1\n    B: two\n"))["env"]["vars"] == {
        "A": views.HIDDEN, "B": views.HIDDEN}
    assert views.shown_config("env: {vars: [unclosed") is None and views.shown_config("") == ""


def test_the_status_filter_lists_every_status_once():
    assert sorted(STATUS_NAMES) == sorted(s.name for s in JobStatus)


def test_a_login_sends_the_browser_only_to_a_path_of_this_site():
    for target, expected in (("/jobs/x?a=1", "/jobs/x?a=1"), ("//evil.example/x", "/evil.example/x"),
                             ("/\\evil.example", "/evil.example"), ("\\\\evil", "/"), ("https://evil", "/"),
                             ("", "/"), ("javascript:alert(1)", "/"),
                             # what a browser drops before it parses: "/\t/host" is "//host" to it
                             ("/\t/evil.example/x", "/evil.example/x"), ("/\n/evil", "/evil"), ("\t//evil", "/evil"),
                             ("/\r\n\\evil", "/evil"), ("/jobs/\tx", "/jobs/x"), ("/\x00/evil", "/"),
                             ("/a\x1b", "/")):
        assert local_path(target) == expected, target
