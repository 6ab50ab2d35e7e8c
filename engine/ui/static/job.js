// The job page, live: one EventSource for its log, status and progress (the event id is the journal offset, so
// a reconnect, the browser's own or ours after an HTTP error, resumes exactly where the page was), resource
// charts, the files once it ends, and the cancel button's confirmation.
import { LogView, streamToggles } from "/static/logview.js";
import { Charts } from "/static/charts.js";

const root = document.getElementById("job");
const D = root.dataset;
const $ = id => document.getElementById(id);
const follow = $("follow");
const logNote = $("log-note");
let startNote = "";

function noteTrimmed(n) {
  logNote.hidden = false;
  logNote.textContent = (startNote ? startNote + " " : "") +
    `${n} earlier line(s) left this view to keep it fast: the whole log is one link away.`;
}
const view = new LogView($("log"), { onTrim: noteTrimmed, follow: () => follow.checked });
streamToggles(document, $("log"));
const charts = new Charts($("charts"), $("charts-note"));
fetch(D.stats, { cache: "no-store" }).then(r => (r.ok ? r.json() : null)).then(s => s && charts.load(s));

function text(id, value) { const el = $(id); if (el) el.textContent = value; }

function showStatus(s) {
  const badge = $("status");
  badge.textContent = s.status;
  badge.className = "badge s-" + s.status;
  document.title = `dsjobs: ${document.querySelector("h1").firstChild.textContent.trim()} (${s.status})`;
  text("details", s.details || "");
  const err = $("error");
  err.hidden = !s.error || s.status === "SUCCESS" || s.error === s.details;
  err.textContent = s.error || "";
  if (s.progress !== null && s.progress !== undefined) {
    $("progress-row").hidden = false;
    $("progress").value = s.progress;
    text("progress-text", s.progress + "%");
    text("progress-message", s.message || "");
  }
  text("started", s.started || "not yet");
  text("finished", s.finished || "not yet");
  text("duration", s.duration || (s.started ? "running" : ""));
  text("instance", s.instance || "");
  text("rc", s.return_code === null || s.return_code === undefined ? "" : String(s.return_code));
  if (s.timeline) {
    $("timeline").replaceChildren(...s.timeline.map(([name, t]) => {
      const li = document.createElement("li"), b = document.createElement("span");
      b.className = "badge s-" + name; b.textContent = name;
      li.append(b, " " + t);
      return li;
    }));
  }
  if (s.terminal) $("cancel").hidden = true;
  root.dataset.status = s.status;
}

async function refreshFiles() {
  const r = await fetch(D.files, { cache: "no-store" });
  if (r.ok) {
    const tpl = document.createElement("template");
    tpl.innerHTML = await r.text();
    $("files").replaceWith(tpl.content.firstElementChild);
  }
}

let last = null, ended = false, failures = 0;
function setState(s) { text("stream-state", s); root.dataset.stream = s; }

function open() {
  const es = new EventSource(last === null ? D.events : D.events + "?from=" + encodeURIComponent(last));
  es.addEventListener("open", () => setState("live"));
  es.addEventListener("start", e => {
    const offset = Number(JSON.parse(e.data).offset);
    if (last === null && offset > 0) {
      startNote = `The view starts at the log's last pages (byte ${offset}).`;
      logNote.hidden = false;
      logNote.textContent = startNote + " Earlier lines: the whole log, page by page.";
    }
    last = e.lastEventId;
  });
  es.addEventListener("log", e => {
    last = e.lastEventId;
    failures = 0;
    const d = JSON.parse(e.data);
    view.add(d.r);
    charts.addRecords(d.r);
  });
  es.addEventListener("status", e => showStatus(JSON.parse(e.data)));
  es.addEventListener("end", e => {
    ended = true;
    es.close();
    const s = JSON.parse(e.data);
    showStatus(s);
    setState("ended: " + s.status);
    if (s.status !== "DELETED") refreshFiles();
  });
  es.onerror = () => {
    if (ended) return;
    setState("reconnecting");
    // The browser reconnects by itself (with Last-Event-ID) after a dropped connection; after an HTTP error it
    // gives up, and the page asks why before it tries again from the last offset it got.
    if (es.readyState === EventSource.CLOSED) {
      failures++;
      setTimeout(check, Math.min(10000, 1000 * failures));
    }
  };
}

async function check() {
  try {
    const r = await fetch(D.api, { cache: "no-store" });
    if (r.status === 401) { setState("logged out: reload the page to log in"); return; }
    if (r.status === 404) { setState("the job is gone"); return; }
  } catch (e) { /* the engine is not back yet: try again */ }
  open();
}

const cancel = $("cancel");
cancel.addEventListener("submit", e => {
  const graceful = cancel.querySelector("input[name=graceful]");
  const how = graceful && graceful.checked ? "gracefully (its shutdown signal first)" : "at once (SIGKILL)";
  if (!confirm(`Cancel job ${D.job} ${how}? The outputs it has written by then are kept.`)) {
    e.preventDefault();
    return;
  }
  cancel.querySelector("input[name=confirm]").value = "yes";
});

open();
