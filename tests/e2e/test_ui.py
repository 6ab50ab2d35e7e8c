"""The job pages over real HTTP: a real engine, its UI on a real uvicorn on loopback, requests as the client (an
in-process test client would hang on the endless streams). Access (the API's tokens, the login by URL and by form,
the session cookie), the checks of every request (Host, Origin, CSRF), the pages (lists, a job's parameters
without secret values, files), the event stream (ids are journal offsets, resume exactly, the end event carries
the final status), the log's pages, and the file endpoint's job link sending browsers to the page."""
from __future__ import annotations

import hashlib
import io
import re
import threading
import zipfile
from types import SimpleNamespace

import pytest
import requests

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import project_job_service_pb2 as spb
from engine.api.auth import Auth, local_user
from runners import journal
from tests.conftest import Server
from tests.helpers import blob, create, graceful, run, wait_for, wait_output, wait_status, work_dir
from tests.ui_helpers import events, stdout_lines

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("ui") / "data", max_concurrent_jobs=4)
    url = s.engine.start_ui(Auth({s.engine.token: local_user(), "t0ken-of-bob": "bob"}))
    port = int(url.rsplit(":", 1)[1])
    yield SimpleNamespace(server=s, client=s.client, url=url, port=port, token=s.engine.token,
                          cookie=f"dsjobs-ui-{port}", data_dir=s.data_dir)
    s.stop()


def login(ui, token=None) -> requests.Session:
    s = requests.Session()
    r = s.get(f"{ui.url}/?token={token or ui.token}", allow_redirects=False, timeout=10)
    assert r.status_code == 200, r.text
    return s


def page(ui, job_id: str, project: str = "p1") -> str:
    return f"{ui.url}/communities/local/projects/{project}/job/{job_id}"


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def gated(lines_before: int, lines_after: int, gate: str = "go") -> str:
    """A job that prints numbered lines, waits until the test puts ``gate`` in its working dir, prints more."""
    return (f"for i in $(seq 1 {lines_before}); do echo line $i; done; "
            f"while [ ! -e {gate} ]; do sleep 0.05; done; "
            f"for i in $(seq {lines_before + 1} {lines_before + lines_after}); do echo line $i; done")


def test_no_page_stream_or_action_without_the_token(ui):
    running = create(ui.client, jpb.JobParameters(cmd="sleep 60"))
    ui.client.execute(running)
    wait_status(ui.client, running, {jpb.EXECUTING})
    paths = ["/", "/communities/local/projects", "/communities/local/projects/p1", page(ui, running)[len(ui.url):],
             page(ui, running)[len(ui.url):] + "/log", f"/jobs/{running}", f"/api/jobs/{running}",
             f"/api/jobs/{running}/events", f"/api/jobs/{running}/log", f"/api/jobs/{running}/stats",
             page(ui, running)[len(ui.url):] + "/files/log/stdout.txt"]
    forged = {ui.cookie: "0" * 64, f"dsjobs-ui-{ui.port + 1}": "0" * 64}
    odd = requests.get(ui.url + paths[3], headers={"Cookie": f"{ui.cookie}=\u00e9t\u00e9".encode("latin-1")},
                       timeout=10)
    assert odd.status_code == 401  # a cookie no browser of ours set is no session, and no error either
    for path in paths:
        for cookies in ({}, forged):
            r = requests.get(ui.url + path, cookies=cookies, allow_redirects=False, timeout=10)
            assert r.status_code == 401, (path, r.status_code)
            assert "set-cookie" not in r.headers and "sleep 60" not in r.text and "EXECUTING" not in r.text, path
            if not path.startswith("/api/"):
                assert 'name="token"' in r.text  # the login form, which brings the visitor back here
    # A write is refused before anything else is looked at, CSRF token or not.
    r = requests.post(page(ui, running) + "/cancel", data={"csrf": "x", "confirm": "yes"}, timeout=10,
                      allow_redirects=False)
    assert r.status_code == 401
    bad = requests.get(page(ui, running) + "?token=guess", allow_redirects=False, timeout=10)
    assert bad.status_code == 403 and "set-cookie" not in bad.headers and "guess" not in bad.text
    assert ui.client.get(running).status == jpb.EXECUTING  # nothing above touched the job
    assert requests.get(ui.url + "/static/app.css", timeout=10).status_code == 200  # public: vendored and ours
    ui.client.cancel(running)


def test_a_token_url_logs_in_and_the_token_goes_no_further(ui):
    jid, _ = run(ui.client, jpb.JobParameters(cmd="echo hi"))
    s = requests.Session()
    r = s.get(page(ui, jid) + f"?x=1&token={ui.token}", allow_redirects=False, timeout=10)
    assert r.status_code == 200  # not a redirect: see engine/ui/auth.py
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{ui.cookie}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert "Path=/" in cookie and ui.token not in cookie
    assert f'content="0;url=/communities/local/projects/p1/job/{jid}?x=1"' in r.text and ui.token not in r.text
    odd = requests.get(f"{ui.url}/jobs/%22%3E%3Cb%3Ex%3Fy?token={ui.token}", timeout=10)  # a path is sent as is
    assert 'url=/jobs/%22%3E%3Cb%3Ex%3Fy"' in odd.text and "<b>" not in odd.text
    assert r.headers["referrer-policy"] == "no-referrer" and r.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    shown = s.get(page(ui, jid), timeout=10)
    assert shown.status_code == 200 and jid in shown.text and ui.token not in shown.text
    assert f'<span class="who">{local_user()}</span>' in shown.text
    bob = login(ui, "t0ken-of-bob")  # a named token of the API opens the pages too, as bob
    assert '<span class="who">bob</span>' in bob.get(page(ui, jid), timeout=10).text

    # The login form: GET shows it, POST takes the token and goes where the visitor was going (never off-site).
    form = requests.get(f"{ui.url}/login?next=/jobs/{jid}", timeout=10)
    assert form.status_code == 200 and f'value="/jobs/{jid}"' in form.text
    f = requests.Session()
    r = f.post(f"{ui.url}/login", data={"token": ui.token, "next": f"/jobs/{jid}"}, allow_redirects=False,
               timeout=10)
    assert r.status_code == 200 and f'url=/jobs/{jid}"' in r.text and f.cookies.get(ui.cookie)
    assert f.get(page(ui, jid), timeout=10).status_code == 200
    for target in ("//evil.example/x", "/\\evil.example/x", "http://evil.example/x"):
        r = requests.post(f"{ui.url}/login", data={"token": ui.token, "next": target}, timeout=10,
                          allow_redirects=False)
        assert re.search(r'content="0;url=/(evil\.example/x)?"', r.text), (target, r.text)
    wrong = requests.post(f"{ui.url}/login", data={"token": "nope", "next": "/"}, timeout=10)
    assert wrong.status_code == 403 and "set-cookie" not in wrong.headers

    out = f.post(f"{ui.url}/logout", data={"csrf": csrf_of(f.get(page(ui, jid), timeout=10).text)},
                 allow_redirects=False, timeout=10)
    assert out.status_code == 303 and f"{ui.cookie}=" in out.headers["set-cookie"]
    assert f.get(page(ui, jid), allow_redirects=False, timeout=10).status_code == 401


def test_foreign_host_or_origin_and_writes_without_csrf_are_refused(ui):
    s = login(ui)
    jid = create(ui.client, jpb.JobParameters(cmd="sleep 60"))
    ui.client.execute(jid)
    wait_status(ui.client, jid, {jpb.EXECUTING})
    html = s.get(page(ui, jid), timeout=10).text
    csrf = csrf_of(html)
    own = f"http://127.0.0.1:{ui.port}"
    # Another name for this address (DNS rebinding) or another port: refused whatever else the request has.
    for host in ("evil.example", f"evil.example:{ui.port}", f"127.0.0.1:{ui.port + 1}", f"localhost:{ui.port + 1}"):
        assert s.get(page(ui, jid), headers={"Host": host}, timeout=10).status_code == 400, host
        r = s.post(page(ui, jid) + "/cancel", headers={"Host": host, "Origin": own},
                   data={"csrf": csrf, "confirm": "yes"}, timeout=10)
        assert r.status_code == 400, host
    as_localhost = {"Host": f"localhost:{ui.port}", "Cookie": f"{ui.cookie}={s.cookies[ui.cookie]}"}
    assert requests.get(page(ui, jid), headers=as_localhost, timeout=10).status_code == 200
    for origin in ("http://localhost:3000", f"http://127.0.0.1:{ui.port + 1}", f"http://evil.example:{ui.port}",
                   "null"):
        assert s.get(page(ui, jid), headers={"Origin": origin}, timeout=10).status_code == 403, origin
        r = s.post(page(ui, jid) + "/cancel", headers={"Origin": origin}, data={"csrf": csrf, "confirm": "yes"},
                   timeout=10)
        assert r.status_code == 403, origin
    for data in ({"confirm": "yes"}, {"csrf": "0" * 64, "confirm": "yes"}, {"csrf": "", "confirm": "yes"},
                 {"csrf": "é" * 64, "confirm": "yes"}):
        r = s.post(page(ui, jid) + "/cancel", headers={"Origin": own}, data=data, timeout=10)
        assert r.status_code == 403 and "CSRF" in r.text, data
    bob = login(ui, "t0ken-of-bob")  # one session's CSRF token is no other's
    r = bob.post(page(ui, jid) + "/cancel", headers={"Origin": own}, data={"csrf": csrf, "confirm": "yes"}, timeout=10)
    assert r.status_code == 403
    r = s.post(page(ui, jid) + "/cancel", headers={"Origin": own}, data={"csrf": csrf, "x": "y" * (70 << 10)},
               timeout=10)
    assert r.status_code == 413
    assert ui.client.get(jid).status == jpb.EXECUTING  # none of that cancelled it

    # Without the confirmation, the page asks; with it, the job service cancels (the status is the lifecycle's).
    ask = s.post(page(ui, jid) + "/cancel", headers={"Origin": own}, data={"csrf": csrf}, timeout=10)
    assert ask.status_code == 200 and 'name="confirm" value="yes"' in ask.text
    assert ui.client.get(jid).status == jpb.EXECUTING
    done = s.post(page(ui, jid) + "/cancel", data={"csrf": csrf, "confirm": "yes"}, allow_redirects=False,
                  timeout=10)  # no Origin (a client that sends none): the CSRF token is what counts
    assert done.status_code == 303 and done.headers["location"] == page(ui, jid)[len(ui.url):]
    job = wait_status(ui.client, jid, {jpb.CANCELLED})
    assert job.status_details == "cancelled from the job page"
    again = s.post(page(ui, jid) + "/cancel", headers={"Origin": own}, data={"csrf": csrf, "confirm": "yes"},
                   timeout=10)
    assert again.status_code == 409 and "already finished" in again.text


def test_a_projects_jobs_newest_first_paged_and_filtered(ui):
    s = login(ui)
    made = [create(ui.client, jpb.JobParameters(cmd="true"), project="listing", name=f"job-{i}") for i in range(51)]
    ok, _ = run(ui.client, jpb.JobParameters(cmd="true", cloud_instance_types=[jpb.CloudInstanceType(name="c1.8")]), project="listing",
                name="the-good")
    bad, _ = run(ui.client, jpb.JobParameters(cmd="exit 7"), project="listing", name="the-bad")
    base = f"{ui.url}/communities/local/projects/listing"
    first = s.get(base, timeout=10).text
    ids = re.findall(r'/job/(ds[0-9a-v]{18})">', first)
    assert ids == [bad, ok] + made[::-1][:48]  # newest first, 50 to a page
    assert 'href="?page=1" rel="next"' in first
    second = s.get(base + "?page=1", timeout=10).text
    assert re.findall(r'/job/(ds[0-9a-v]{18})">', second) == made[:3][::-1] and 'rel="next"' not in second
    good = s.get(base + "?status=SUCCESS", timeout=10).text
    assert re.findall(r'/job/(ds[0-9a-v]{18})">', good) == [ok]
    row = good.split(ok)[2]
    assert "the-good" in row and "SUCCESS" in row and "c1.8" in row and "UTC" in row
    both = s.get(base + "?status=SUCCESS&status=ERROR", timeout=10).text
    assert re.findall(r'/job/(ds[0-9a-v]{18})">', both) == [bad, ok]
    assert re.search(r"<td>7</td>", both.split(bad)[2])  # the return code
    assert s.get(base + "?status=RUNNING", timeout=10).status_code == 400
    assert s.get(base + "?page=-1", timeout=10).status_code == 400
    assert s.get(base + "?page=x", timeout=10).status_code == 400
    assert "No jobs" in s.get(f"{ui.url}/communities/local/projects/nothing-here", timeout=10).text
    assert s.get(f"{ui.url}/communities/local/projects/..%2Fx", timeout=10).status_code == 404
    assert s.get(f"{ui.url}/communities/other/projects/listing", timeout=10).status_code == 404
    assert 'href="/communities/local/projects/listing"' in s.get(f"{ui.url}/communities/local/projects",
                                                                 timeout=10).text


def test_a_jobs_page_shows_its_parameters_and_never_secret_values(ui):
    s = login(ui)
    data = b"weights " * 100
    f, _ = blob(data, "model/weights.bin", var="WEIGHTS")
    config = ("name: shown\ncmd: python train.py --epochs ${EPOCHS}\nenv:\n  vars:\n    - API_KEY: s3cr3t-value\n"
              "    - PLAIN\n  docker:\n    image: registry.example/img:1\n    username: me\n"
              "    password: plain-pass\n")
    params = jpb.JobParameters(cmd="cat ${WEIGHTS} > /dev/null; echo ran", arguments=[
        jpb.Argument(name="EPOCHS", value="3")], env=jpb.Environment(vars={"API_KEY": "s3cr3t-value", "PLAIN": "x"}),
        output_files=[jpb.FileDesc(path="out.txt", var="OUT")], graceful_shutdown_parameters=graceful(15, 5))
    jid, _ = run(ui.client, params, [(f, data)], config=config, name="shown", desc="a description")
    html = s.get(page(ui, jid), timeout=10).text
    for shown in ("model/weights.bin", "WEIGHTS", hashlib.sha256(data).hexdigest(), "800 B", "EPOCHS", ">3<",
                  "API_KEY, PLAIN", "out.txt", "a description", "registry.example/img:1", "username: me",
                  "signal 15", "CREATING", "PREPARING", "EXECUTING", "UPLOADING_OUTPUT", "SUCCESS",
                  "Files not collected", "<code>out.txt</code>"):
        assert shown in html, shown
    assert "s3cr3t-value" not in html and "plain-pass" not in html and ui.token not in html
    assert "API_KEY: •••" in html and "password: •••" in html
    # A fork links to the job it was forked from.
    op = ui.client.jobs.Clone(spb.CloneProjectJobRequest(source_job_id=jid))
    clone = spb.CloneProjectJobResponse()
    op.response.Unpack(clone)
    forked = s.get(page(ui, clone.job_id), timeout=10).text
    assert f'href="/communities/local/projects/p1/job/{jid}">{jid}</a>' in forked
    # Any wrong part of a job's path is the same 404; /jobs/ID finds the job's page.
    for wrong in (page(ui, jid, "p2"), page(ui, jid).replace("/local/", "/other/"), page(ui, "ds" + "0" * 18),
                  page(ui, jid.upper()), page(ui, jid) + "/nope", f"{ui.url}/api/jobs/{jid[:-1]}"):
        assert s.get(wrong, timeout=10).status_code == 404, wrong
    r = s.get(f"{ui.url}/jobs/{jid}", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == page(ui, jid)[len(ui.url):]
    unparsable = create(ui.client, jpb.JobParameters(cmd="true"), config="env: [unclosed: s3cr3t-value")
    text = s.get(page(ui, unparsable), timeout=10).text
    assert "s3cr3t-value" not in text and "could not be read as YAML" in text


def test_outputs_logs_and_diagnostics_download_from_the_page(ui):
    s = login(ui)
    jid, _ = run(ui.client, jpb.JobParameters(
        cmd="printf result > out.txt; mkdir -p d/e; printf deep > d/e/f.txt; echo to-stdout; echo to-stderr >&2",
        output_files=[jpb.FileDesc(path="out.txt"), jpb.FileDesc(path="d")]))
    files = s.get(page(ui, jid) + "?part=files", timeout=10).text
    links = re.findall(r'class="download" href="([^"]+)"', files)
    assert len(links) == 5, files  # two outputs, three logs
    got = s.get(ui.url + links[0], timeout=10)
    assert got.content == b"result" and got.headers["content-disposition"] == 'attachment; filename="out.txt"'
    z = s.get(ui.url + links[1], timeout=10)
    assert z.headers["content-disposition"] == 'attachment; filename="d.zip"'
    assert zipfile.ZipFile(io.BytesIO(z.content)).read("d/e/f.txt") == b"deep"
    logs = {link.rsplit("/", 1)[1]: s.get(ui.url + link, timeout=10).content for link in links[2:]}
    assert logs["stdout.txt"] == b"to-stdout\n" and logs["stderr.txt"] == b"to-stderr\n"
    assert b"job completed successfully" in logs["system.log"]
    for wrong in ("/files/output/nope.txt", "/files/secret/out.txt", "/files/log/../../../token"):
        assert s.get(page(ui, jid) + wrong, timeout=10).status_code == 404, wrong
    running = create(ui.client, jpb.JobParameters(cmd="sleep 60"))
    ui.client.execute(running)
    assert "once the job has finished" in s.get(page(ui, running) + "?part=files", timeout=10).text
    ui.client.cancel(running)


def test_the_file_endpoints_job_link_sends_browsers_to_the_page(ui):
    files = ui.server.engine.files_url
    for job_id in ("ds" + "0" * 18, create(ui.client, jpb.JobParameters(cmd="true"))):
        link = f"/communities/local/projects/p1/job/{job_id}"
        for method in ("GET", "HEAD"):
            r = requests.request(method, files + link, allow_redirects=False, timeout=10)
            assert r.status_code == 307 and r.headers["location"] == ui.url + link, (method, r.status_code)
        # The same answer for a job that exists and one that does not: the token is asked for on the page.
        assert "CREATING" not in requests.get(files + link, allow_redirects=False, timeout=10).text
    for wrong in ("/communities/other/projects/p1/job/ds" + "0" * 18, "/communities/local/projects/p1/job/x"):
        assert requests.get(files + wrong, allow_redirects=False, timeout=10).status_code == 404
    assert requests.post(files + "/communities/local/projects/p1/job/ds" + "0" * 18, timeout=10).status_code == 405


def test_event_ids_are_journal_offsets_and_a_stream_resumes_exactly(ui):
    s = login(ui)
    jid = create(ui.client, jpb.JobParameters(cmd=gated(30, 30)))
    ui.client.execute(jid)
    wait_output(ui.client, jid, b"line 30\n")
    url = f"{ui.url}/api/jobs/{jid}/events"
    first, path = [], ui.server.engine.jobs.journal(jid)
    for e in events(s, url + "?from=0"):
        first.append(e)
        if "line 30" in "".join(stdout_lines(first)[-1:]):
            break  # the client goes away mid-job
    assert first[0].name == "start" and first[0].id == "0"
    prev = 0
    for e in first[1:]:
        if e.name == "log":
            # Its id is the offset just past the records it carries: the journal read from the previous id up to
            # this one ends exactly there and holds exactly these records.
            records, end = journal.read(path, prev, int(e.id) - prev)
            assert end == int(e.id) > prev
            assert [[r.stream, r.content.decode()] for r in records if r.stream in (1, 2, 3, 5, 7)] == \
                [[st, text] for st, _, text in e.json()["r"]]
            prev = end
    last = [e.id for e in first if e.id is not None][-1]
    (work_dir(ui.data_dir, jid) / "go").touch()
    rest = list(events(s, url, last_id=last))  # as the browser reconnects: Last-Event-ID
    assert rest[-1].name == "end" and rest[-1].json()["status"] == "SUCCESS"
    assert stdout_lines(first) + stdout_lines(rest) == [f"line {i}" for i in range(1, 61)]
    assert stdout_lines(list(events(s, url + f"?from={last}"))) == stdout_lines(rest)  # as the page reopens
    # Last-Event-ID wins over a ?from= the URL still has (the browser resends the URL it opened)
    assert stdout_lines(list(events(s, url + "?from=0", last_id=last))) == stdout_lines(rest)
    size = journal.size(path)
    for bad in ("abc", "-1", str(size + 1), str(int(last) + 1), "1e3", ""):
        with pytest.raises(requests.HTTPError) as err:
            list(events(s, url + f"?from={bad}"))
        assert err.value.response.status_code == 400, bad
    assert stdout_lines(list(events(s, url + f"?from={size}"))) == []  # the end is a start too


def test_the_end_event_carries_the_final_status(ui):
    s = login(ui)
    failing, _ = run(ui.client, jpb.JobParameters(cmd="echo about to fail; exit 3"))
    evs = list(events(s, f"{ui.url}/api/jobs/{failing}/events?from=0"))
    end = evs[-1].json()
    assert evs[-1].name == "end" and end["status"] == "ERROR" and end["return_code"] == 3 and end["terminal"]
    assert [e.name for e in evs].count("end") == 1 and stdout_lines(evs) == ["about to fail"]
    cancelled = create(ui.client, jpb.JobParameters(cmd="sleep 60"))
    ui.client.execute(cancelled)
    wait_status(ui.client, cancelled, {jpb.EXECUTING})
    got = []

    def follow():
        got.extend(events(s, f"{ui.url}/api/jobs/{cancelled}/events"))
    t = threading.Thread(target=follow)
    t.start()
    wait_for(lambda: any(e.name == "status" for e in got), 30, "the first status event")
    ui.client.cancel(cancelled)
    t.join(60)
    assert got[-1].name == "end" and got[-1].json()["status"] == "CANCELLED"
    statuses = [e.json()["status"] for e in got if e.name == "status"]
    assert statuses[0] == "EXECUTING" and statuses[-1] == "CANCELLED"
    changes = [e.data for e in got if e.name == "status"]
    assert all(a != b for a, b in zip(changes, changes[1:]))  # sent when something changed, not as a heartbeat


def test_a_long_log_is_tailed_and_paged(ui):
    s = login(ui)
    jid, _ = run(ui.client, jpb.JobParameters(cmd="seq 1 300000 | sed 's/^/number /'"), timeout=120)
    path = ui.server.engine.jobs.journal(jid)
    size = journal.size(path)
    api = f"{ui.url}/api/jobs/{jid}/log"
    last = s.get(api, timeout=10).json()  # no page: the last one
    pages = last["pages"]
    assert pages > 4 and last["page"] == pages - 1 and last["end"] == last["size"] == size
    seen, start = [], 0
    for n in range(pages):
        p = s.get(api + f"?page={n}", timeout=10).json()
        assert p["start"] == start and p["end"] - p["start"] <= (256 << 10) + (64 << 10)
        seen += [t for st, _, t in p["r"] if st == 1]
        start = p["end"]
    assert start == size
    assert "".join(seen).splitlines() == [f"number {i}" for i in range(1, 300001)]  # every line, once
    assert s.get(api + f"?page={-pages}", timeout=10).json()["page"] == 0
    for bad in (str(pages), str(-pages - 1), "x", "1.5"):
        assert s.get(api + f"?page={bad}", timeout=10).status_code == 400, bad
    # A page that opens the stream without an offset starts at the log's last pages, never at its first byte.
    evs = list(events(s, f"{ui.url}/api/jobs/{jid}/events"))
    start = int(evs[0].json()["offset"])
    # (page starts are 256 KiB apart plus at most one record: 64 KiB when the job's output came in full reads)
    assert size - (512 << 10) - journal.MAX_RECORD - journal.HEADER.size <= start < size - (256 << 10) + 1
    assert stdout_lines(evs)[-1] == "number 300000" and evs[-1].name == "end"
    assert "page by page" in s.get(page(ui, jid), timeout=10).text


def test_stopping_the_ui_ends_its_streams_without_an_end_event(tmp_path):
    srv = Server(tmp_path / "data")
    try:
        url = srv.engine.start_ui(Auth({srv.engine.token: local_user()}))
        s = requests.Session()
        s.get(f"{url}/?token={srv.engine.token}", timeout=10)
        jid = create(srv.client, jpb.JobParameters(cmd="echo started; sleep 60"))
        srv.client.execute(jid)
        got = []

        def follow():
            got.extend(events(s, f"{url}/api/jobs/{jid}/events?from=0"))
        t = threading.Thread(target=follow)
        t.start()
        wait_for(lambda: "started" in stdout_lines(got), 30, "the first line")
        files = srv.engine.files_url + f"/communities/local/projects/p1/job/{jid}"
        assert requests.get(files, allow_redirects=False, timeout=10).status_code == 307
        srv.engine.stop_ui()
        t.join(30)
        assert not t.is_alive() and got[-1].name != "end"  # the page reconnects, to the next engine
        plain = requests.get(files, allow_redirects=False, timeout=10)
        assert plain.status_code == 200 and plain.text == f"job {jid} (project p1): EXECUTING\n"
        srv.client.cancel(jid)
    finally:
        srv.stop()


def test_without_auth_the_pages_are_open_but_writes_still_need_csrf_and_the_own_address(tmp_path):
    srv = Server(tmp_path / "data")
    try:
        url = srv.engine.start_ui(Auth(required=False))  # `dsjobs serve --no-auth`, on loopback only
        port = url.rsplit(":", 1)[1]
        jid = create(srv.client, jpb.JobParameters(cmd="sleep 60"))
        srv.client.execute(jid)
        wait_status(srv.client, jid, {jpb.EXECUTING})
        link = f"{url}/communities/local/projects/p1/job/{jid}"
        html = requests.get(link, timeout=10).text  # no token needed, as for the API
        assert jid in html and "set-cookie" not in requests.get(link, timeout=10).headers
        assert requests.get(link, headers={"Host": f"evil.example:{port}"}, timeout=10).status_code == 400
        r = requests.post(link + "/cancel", data={"confirm": "yes"}, timeout=10)
        assert r.status_code == 403 and srv.client.get(jid).status == jpb.EXECUTING
        r = requests.post(link + "/cancel", data={"csrf": csrf_of(html), "confirm": "yes"},
                          headers={"Origin": "http://localhost:3000"}, timeout=10)
        assert r.status_code == 403 and srv.client.get(jid).status == jpb.EXECUTING
        r = requests.post(link + "/cancel", data={"csrf": csrf_of(html), "confirm": "yes"},
                          headers={"Origin": url}, allow_redirects=False, timeout=10)
        assert r.status_code == 303
        wait_status(srv.client, jid, {jpb.CANCELLED})
    finally:
        srv.stop()
