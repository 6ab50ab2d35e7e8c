"""The job page in a real browser: Debian's headless Chromium driven by Playwright (executable_path: no browser
download), against real `dsjobs serve` processes. The link the official CLI prints, logs arriving live with their
colours and progress bars, the progress bar moving, the charts, the status turning SUCCESS; a cancel from the
page; a page that survives a kill -9 of the engine with every line once; `dsjobs ui` logging the browser in.
Screenshots are kept in the test's tmp dir and in /tmp/dsjobs-ui-artifacts/.

The page's scripts run under a Content-Security-Policy without eval, so the tests wait on selectors (Playwright's
wait_for_function evaluates a string) and fail on any console error, which is where a CSP violation shows."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dsjobs_pb.yandex.cloud.datasphere.v2.jobs import jobs_pb2 as jpb
from tests.helpers import client_venv, create, graceful, wait_for, wait_status, work_dir
from tests.ui_helpers import UiServe, env_without_dsjobs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path("/tmp/dsjobs-ui-artifacts")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright
    assert os.path.exists(CHROMIUM), "Debian's chromium is missing: tools/test-deps.sh installs it"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--disable-gpu"])
        yield b
        b.close()


class Page:
    """A fresh browser context (its own cookies) and page, with the console watched."""

    def __init__(self, browser, tmp_path: Path):
        self.context = browser.new_context(viewport={"width": 1280, "height": 1000})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.tmp_path = tmp_path

    def shot(self, name: str, locator=None, full_page: bool = True) -> Path:
        path = self.tmp_path / name
        (locator.screenshot(path=str(path)) if locator is not None else
         self.page.screenshot(path=str(path), full_page=full_page))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(path, ARTIFACTS / name)
        return path

    def lines(self, stream: int = 1) -> list[str]:
        return self.page.eval_on_selector_all(f"#log .s{stream}", "els => els.map(e => e.textContent)")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser, tmp_path):
    p = Page(browser, tmp_path)
    yield p
    p.close()


LIVE_JOB = r"""set -e
for i in 1 2 3; do echo "step $i"; done
printf '\033[32mgreen text\033[0m and \033[1;31mbold red\033[0m\n'
printf 'bar  10%%\rbar  60%%\rbar 100%%\n'
echo "a warning on stderr" >&2
echo '{"progress": 30, "message": "warming up"}' >> "$JOB_PROGRESS_FILENAME"
while [ ! -e go1 ]; do sleep 0.05; done
echo "step 4"
echo '{"progress": 70, "message": "training"}' >> "$JOB_PROGRESS_FILENAME"
head -c 50000000 /dev/zero > scratch.bin
while [ ! -e go2 ]; do :; done
echo "step 5"
echo '{"progress": 100, "message": "done"}' >> "$JOB_PROGRESS_FILENAME"
echo finished > result.txt
"""


def test_the_link_the_official_cli_prints_is_the_live_page(tmp_path, tab):
    srv = UiServe(tmp_path / "data").start()
    py = client_venv(tmp_path / "venv", hooked=True)
    work = tmp_path / "work"
    work.mkdir()
    (work / "run.sh").write_text(LIVE_JOB)
    (work / "config.yaml").write_text("name: live\ncmd: bash run.sh\ninputs:\n  - run.sh\noutputs:\n  - result.txt\n")
    client = srv.client()
    cli = subprocess.Popen([str(Path(py).parent / "datasphere"), "project", "job", "execute", "-p", "live", "-c",
                            "config.yaml"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=dict(env_without_dsjobs(), DSJOBS_ENDPOINT=srv.endpoint))
    try:
        jid = wait_for(lambda: [j.id for j in client.list("live")], 60, "the job")[0]
        # The official client 0.10.0 prints the link when its wait ends; it is this page's address, opened here
        # while the job runs (and checked against what the CLI printed below).
        link = f"{srv.url}/communities/local/projects/live/job/{jid}"
        page = tab.page
        page.goto(link)
        assert page.locator("input[name=token]").is_visible()  # no page without the token: the login form
        page.fill("input[name=token]", srv.token)
        page.click("form.login button[type=submit]")
        page.wait_for_selector("#job")
        assert page.url == link and srv.token not in page.url
        tab.errors.clear()  # the 401 of the login form, as the console reports it
        page.wait_for_selector("#log .s1 >> text=step 3", timeout=60_000)
        assert page.text_content("#status") == "EXECUTING"  # the job waits for go1: these lines came live
        page.wait_for_selector("#progress[value='30']")
        assert page.text_content("#progress-message") == "warming up"
        colours = page.eval_on_selector_all("#log .s1 span", "els => els.map(e => [e.textContent, e.style.color])")
        assert ["green text", "rgb(0, 187, 0)"] in colours and any(t == "bold red" for t, _ in colours), colours
        assert "bar 100%" in tab.lines() and not any("10%" in line for line in tab.lines())  # \r overwrote it
        assert tab.lines(2) == ["a warning on stderr"]
        assert any("job queued" in line for line in tab.lines(3))  # the system log, marked as such

        (work_dir(srv.data_dir, jid) / "go1").touch()
        page.wait_for_selector("#log .s1 >> text=step 4")
        page.wait_for_selector("#progress[value='70']")  # the bar moved
        assert page.text_content("#status") == "EXECUTING"
        # Samples every 3 s while the job spins: wait for a few, then the chart is worth a look.
        wait_for(lambda: int(page.get_attribute("#charts", "data-samples") or 0) >= 3, 60, "three samples")
        page.wait_for_selector("#chart-cpu canvas")
        chart = tab.shot("job-page-cpu-chart.png", page.locator("#chart-cpu"))
        tab.shot("job-page-running.png")

        (work_dir(srv.data_dir, jid) / "go2").touch()
        page.wait_for_selector("#job[data-status=SUCCESS]", timeout=60_000)
        page.wait_for_selector("#files a.download >> text=result.txt")  # the files, once it ended
        assert page.get_attribute("#progress", "value") == "100" and "ended: SUCCESS" in page.text_content(
            "#stream-state")
        assert page.is_hidden("#cancel")
        assert [li.split()[0] for li in page.eval_on_selector_all("#timeline li", "els => els.map(e => "
                                                                  "e.textContent)")][-1] == "SUCCESS"
        tab.shot("job-page-success.png")
        assert tab.lines()[:5] == ["step 1", "step 2", "step 3", "green text and bold red", "bar 100%"]
        assert tab.lines()[-2:] == ["step 4", "step 5"]

        out, _ = cli.communicate(timeout=120)
        assert cli.returncode == 0, out
        printed = re.search(r"job link: (\S+)", re.sub(r"\x1b\[[0-9;]*m", "", out)).group(1)
        assert printed == link and srv.token not in out
        assert (work / "result.txt").read_text() == "finished\n"
        assert not tab.errors, tab.errors
        assert chart.stat().st_size > 5000
    finally:
        if cli.poll() is None:
            cli.kill()
        client.close()
        srv.stop()


def test_cancel_from_the_page_and_a_reconnect_after_kill_9_shows_every_line_once(tmp_path, tab):
    srv = UiServe(tmp_path / "data").start()
    client = srv.client()
    try:
        jid = create(client, jpb.JobParameters(
            cmd="trap 'echo caught TERM, saving; exit 0' TERM; for i in $(seq 1 10); do echo line $i; done; "
                "while [ ! -e go ]; do sleep 0.05; done; for i in $(seq 11 20); do echo line $i; done; "
                "while true; do sleep 0.1; done",
            graceful_shutdown_parameters=graceful(15, 30)), project="p1")
        client.execute(jid)
        page = tab.page
        page.goto(f"{srv.url}/jobs/{jid}?token={srv.token}")
        page.wait_for_selector("#log .s1 >> text=line 10", timeout=60_000)
        assert srv.token not in page.url
        srv.kill9()
        page.wait_for_selector("#job[data-stream=reconnecting]")  # the page knows it is cut off
        client.close()
        srv.start()  # same data dir and UI port: the browser reconnects by itself, with Last-Event-ID
        client = srv.client()
        (work_dir(srv.data_dir, jid) / "go").touch()
        page.wait_for_selector("#log .s1 >> text=line 20", timeout=60_000)
        assert tab.lines() == [f"line {i}" for i in range(1, 21)]  # every line once, in order
        assert all("ERR_INCOMPLETE_CHUNKED_ENCODING" in e or "ERR_CONNECTION_REFUSED" in e for e in tab.errors)
        tab.errors.clear()  # the stream the kill cut, and the reconnects while no engine was there
        assert page.text_content("#status") == "EXECUTING"

        page.once("dialog", lambda d: d.accept())  # "Cancel job ...?"
        assert page.is_checked("#cancel input[name=graceful]")
        page.click("#cancel button[type=submit]")
        page.wait_for_selector("#job[data-status=CANCELLED]", timeout=60_000)
        page.wait_for_selector("#log .s1 >> text=caught TERM, saving")  # graceful: the job's handler ran
        job = wait_status(client, jid, {jpb.CANCELLED})
        assert job.status_details == "cancelled from the job page"
        tab.shot("job-page-cancelled.png")
        assert not tab.errors, tab.errors

        # `dsjobs ui JOB` logs a browser in through a file only its user can read: here, a new browser profile.
        seen = tmp_path / "opened.txt"
        script = tmp_path / "browser.sh"
        script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" > {seen}\n")
        script.chmod(0o755)
        env = dict(env_without_dsjobs(), DSJOBS_ENDPOINT=srv.endpoint, BROWSER=str(script))
        r = subprocess.run([sys.executable, "-m", "dsjobs", "ui", jid], env=env, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0 and srv.token not in r.stdout + r.stderr + seen.read_text()
        fresh = tab.context.browser.new_context()
        try:
            other = fresh.new_page()
            other.goto(seen.read_text().strip())
            other.wait_for_selector("#job[data-status=CANCELLED]")
            assert other.url == f"{srv.url}/communities/local/projects/p1/job/{jid}"
        finally:
            fresh.close()
    finally:
        client.close()
        srv.stop()


def test_a_long_log_in_the_browser_is_tailed_and_paged_and_gpu_stats_are_charted(tmp_path, tab):
    srv = UiServe(tmp_path / "data").start()
    client = srv.client()
    try:
        jid = create(client, jpb.JobParameters(cmd="seq 1 200000 | sed 's/^/row /'; printf '\\033[35mlast\\033[0m\\n'"))
        client.execute(jid)
        wait_status(client, jid, {jpb.SUCCESS}, timeout=60)
        page = tab.page
        page.goto(f"{srv.url}/jobs/{jid}?token={srv.token}")
        page.wait_for_selector("#job[data-status=SUCCESS]")
        # The view's own rule, on a batch made to order: a record is what one read of the job's pipe got (up to
        # 64 KiB), and when the last stdout record alone held more lines than the view keeps, it was dropped whole,
        # the log's last line with it (this test's page then showed the engine's last line only, under load).
        got = page.evaluate("""async () => {
          const { LogView } = await import('/static/logview.js');
          const el = document.createElement('div');
          let trimmed = 0;
          const view = new LogView(el, { maxLines: 100, onTrim: n => { trimmed = n; } });
          view.add([[1, 0, 'old\\n']]);
          const rows = Array.from({ length: 250 }, (_, i) => `row ${i + 1}\\n`).join('');
          view.add([[1, 0, 'first\\n'], [1, 0, rows], [3, 0, 'job completed\\n']]);
          const links = document.createElement('div');
          new LogView(links).add([[1, 0, '\\x1b]8;;https://example.com/\\x07CLICK\\x1b]8;;\\x07 and ' +
                                         '\\x1b]8;;constructor\\x07PROTO\\x1b]8;;\\x07\\n']]);
          return { lines: [...el.children].map(e => e.textContent), trimmed,
                   links: [links.textContent, links.querySelectorAll('a').length] };
        }""")
        assert got["links"] == ["CLICK and PROTO", 0]  # OSC 8 hyperlinks: their text, never a link
        assert got["lines"][-2:] == ["row 250", "job completed"] and len(got["lines"]) == 100, got["lines"][-3:]
        assert got["lines"][0] == "row 152" and got["trimmed"] == 1 + 1 + 151, (got["lines"][0], got["trimmed"])
        try:  # twice timed out at the default 30 s in the parallel suite, never alone: what the page had is said
            page.wait_for_selector("#log .s1 >> text=last", timeout=90_000)
        except Exception as e:  # noqa: BLE001 - playwright's TimeoutError, with the page's state
            state = page.evaluate("() => ({stream: document.getElementById('job').dataset.stream, "
                                  "lines: document.querySelectorAll('#log .l').length, "
                                  "last: (document.querySelector('#log .l:last-child') || {}).textContent, "
                                  "note: document.getElementById('log-note').textContent})")
            raise AssertionError(f"the log's last line never showed: {state}") from e
        shown = tab.lines()
        assert shown[-1] == "last" and len(shown) <= 5000  # the tail, with the DOM kept small
        assert not page.is_hidden("#log-note") and "last pages" in page.text_content("#log-note")
        page.click("#browse")
        page.wait_for_selector("body[data-loaded]")
        assert page.text_content("#where").startswith("page ") and tab.lines()[-1] == "last"
        page.click("button[data-go=first]")
        page.wait_for_selector("body[data-loaded='0']")
        assert tab.lines()[:2] == ["row 1", "row 2"] and page.is_disabled("button[data-go=prev]")
        page.click("button[data-go=next]")
        page.wait_for_selector("body[data-loaded='1']")
        first_of_second = tab.lines()[0]
        assert re.fullmatch(r"row \d+", first_of_second)
        tab.shot("log-pages.png", full_page=False)

        # GPU stats, where a job has them (written by runners/gpus.py on a machine with NVML; here, in its layout,
        # two devices over four samples): charted by device.
        from runners import gpus
        stamp = lambda s: f"2026/12/01 08:00:{s:02d}.000"
        rows = [f"{stamp(s)}\t{i}\tGPU-{i}\tTest GPU\t{4 * s + 30 * i}\t5\t16384\t{1000 + 500 * s}\t0\t"
                f"50.00\t300.00\t40\n" for s in range(0, 20, 5) for i in (0, 1)]
        (work_dir(srv.data_dir, jid).parent / "gpu_stats.tsv").write_text(gpus.HEADER + "".join(rows))
        page.goto(f"{srv.url}/jobs/{jid}")
        page.wait_for_selector("#chart-gpu canvas")
        page.wait_for_selector("#chart-gpumem canvas")
        legend = page.eval_on_selector_all("#chart-gpu .u-series .u-label", "els => els.map(e => e.textContent)")
        assert legend[1:] == ["GPU 0", "GPU 1"], legend
        tab.shot("job-page-gpu-chart.png", page.locator("#chart-gpu"))
        assert not tab.errors, tab.errors
    finally:
        client.close()
        srv.stop()
