"""The job page's event stream against real `dsjobs serve` processes: a reader that reconnects with Last-Event-ID
after a kill -9 of the engine gets every line once; a 1 GiB log is followed live, and tailed and paged, in bounded
memory of the server process; what `dsjobs serve` prints carries no token."""
from __future__ import annotations

import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from engine.ui import logindex
from runners import journal
from tests.helpers import create, wait_status, work_dir
from tests.ui_helpers import UiServe, events, stdout_lines

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GATED = ("for i in $(seq 1 20); do echo line $i; done; while [ ! -e go ]; do sleep 0.05; done; "
         "for i in $(seq 21 40); do echo line $i; done")


def test_a_stream_resumes_after_kill_9_of_dsjobs_serve_with_every_line_once(tmp_path):
    srv = UiServe(tmp_path / "data").start()
    try:
        assert srv.token not in "".join(srv.lines)  # nothing printed carries it (the UI line included)
        client = srv.client()
        jid = create(client, jpb.JobParameters(cmd=GATED))
        client.execute(jid)
        s = srv.session()
        before = []
        try:
            for e in events(s, f"{srv.url}/api/jobs/{jid}/events?from=0"):
                before.append(e)
                if stdout_lines(before)[-1:] == ["line 20"]:
                    srv.kill9()  # mid-stream, mid-job: the connection drops with the engine
        except requests.RequestException:
            pass
        assert before[-1].name != "end" and stdout_lines(before)[-1] == "line 20"
        last = [e.id for e in before if e.id is not None][-1]
        client.close()
        srv.start()  # the same data dir and UI port, as a browser reconnects
        (work_dir(srv.data_dir, jid) / "go").touch()
        # The session cookie still holds (its key comes from the data dir), and the stream goes on from the id.
        after = list(events(s, f"{srv.url}/api/jobs/{jid}/events?from=0", last_id=last))
        assert after[-1].name == "end" and after[-1].json()["status"] == "SUCCESS"
        assert stdout_lines(before) + stdout_lines(after) == [f"line {i}" for i in range(1, 41)]
        client = srv.client()
        assert client.get(jid).status == jpb.SUCCESS
        client.close()
    finally:
        srv.stop()


LINE = 200  # bytes per line of the flood, newline included
LINES = (1 << 30) // LINE
FLOOD = f"yes \"$(printf 'y%.0s' $(seq 1 {LINE - 1}))\" | head -c {LINES * LINE}"


def test_a_1_gib_log_is_streamed_tailed_and_paged_in_bounded_memory(tmp_path):
    srv = UiServe(tmp_path / "data", "--log-limit", "2GB").start()
    try:
        client = srv.client()
        s = srv.session()
        jid = create(client, jpb.JobParameters(cmd=FLOOD))
        client.execute(jid)
        wait_status(client, jid, {jpb.SUCCESS}, timeout=240)
        path = str(srv.data_dir / "jobs" / jid / "journal")
        size = journal.size(path)
        assert size > 1 << 30
        srv.reset_peak_rss()
        base = srv.peak_rss_kib()
        # A page opened now starts at the tail; its log pages are read one at a time. The tail is the page start
        # with at least a page after it: at most two pages and one record (a page ends after the record that
        # crosses its 256 KiB, and the records' sizes are the pipe reads', which vary run to run).
        opened = list(events(s, f"{srv.url}/api/jobs/{jid}/events", timeout=60))
        at_most = 2 * logindex.PAGE + journal.HEADER.size + journal.MAX_RECORD
        assert size - at_most <= int(opened[0].json()["offset"]) and opened[-1].name == "end"
        api = f"{srv.url}/api/jobs/{jid}/log"
        tail = s.get(api, timeout=60).json()
        assert tail["end"] == size and tail["pages"] >= size // ((256 + 65) << 10)
        for n in (0, tail["pages"] // 2, tail["pages"] - 2):
            p = s.get(api + f"?page={n}", timeout=60).json()
            assert p["page"] == n and 0 < p["end"] - p["start"] <= (256 << 10) + (64 << 10)
            assert "".join(t for st, _, t in p["r"] if st == 1).strip("y\n") == ""
        paged = srv.peak_rss_kib() - base
        # And all of it, from its first byte, through one stream.
        text_bytes = newlines = 0
        last = None
        for e in events(s, f"{srv.url}/api/jobs/{jid}/events?from=0", timeout=300):
            if e.name == "log":
                for stream, _, text in e.json()["r"]:
                    if stream == 1:
                        assert not text.strip("y\n"), text[:100]
                        text_bytes += len(text)
                        newlines += text.count("\n")
            last = e
        assert last.name == "end" and last.json()["status"] == "SUCCESS" and int(last.id) == size
        assert (text_bytes, newlines) == (LINES * LINE, LINES)  # every byte once
        streamed = srv.peak_rss_kib() - base
        # The engine's peak while 1 GiB went through it (a few MiB a batch), never the log itself.
        assert paged < 64 * 1024 and streamed < 64 * 1024, (paged, streamed)
        client.close()
    finally:
        srv.stop()
