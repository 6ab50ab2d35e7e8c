// A terminal-like log view: stdout, stderr (marked) and the system log interleaved as the job wrote them, ANSI
// colours through ansi_up, a bare \r overwriting its line (progress bars), a bounded number of lines in the DOM.
import { AnsiUp } from "/static/vendor/ansi_up.js";

export const STDOUT = 1, STDERR = 2, SYSTEM = 3;

export class LogView {
  constructor(el, { maxLines = 5000, onTrim = null, follow = () => true } = {}) {
    this.el = el; this.max = maxLines; this.onTrim = onTrim; this.follow = follow;
    this.streams = {}; this.trimmed = 0; this.scrolling = false;
  }

  stream(s) {
    // One converter and one current line per stream: a colour or a \r of stderr must not leak into stdout.
    if (!this.streams[s]) {
      const au = new AnsiUp();
      au.url_allowlist = {};  // no links out of a job's output
      this.streams[s] = { au, cur: null, overwrite: false };
    }
    return this.streams[s];
  }

  clear() { this.el.replaceChildren(); this.streams = {}; this.trimmed = 0; }

  add(records) {
    records = records.filter(([s]) => s === STDOUT || s === STDERR || s === SYSTEM);
    // A batch with more lines than the view keeps (the tail of a big log): only its last lines are made at all.
    let lines = 0, from = 0;
    for (let i = records.length - 1; i >= 0; i--) {
      lines += (records[i][2].match(/\n/g) || []).length;
      if (lines > this.max) { from = i + 1; break; }
    }
    if (from > 0) {
      for (let i = 0; i < from; i++) this.trimmed += (records[i][2].match(/\n/g) || []).length;
      this.el.replaceChildren();
      this.streams = {};
      records = records.slice(from);
      if (this.onTrim) this.onTrim(this.trimmed);
    }
    const frag = document.createDocumentFragment();
    for (const [s, t, text] of records) this.write(frag, s, t, text);
    this.el.appendChild(frag);
    const extra = this.el.childElementCount - this.max;
    if (extra > 0) {
      for (let i = 0; i < extra; i++) this.el.firstElementChild.remove();
      this.trimmed += extra;
      if (this.onTrim) this.onTrim(this.trimmed);
    }
    if (this.follow() && !this.scrolling) {
      this.scrolling = true;
      requestAnimationFrame(() => { this.scrolling = false; this.el.scrollTop = this.el.scrollHeight; });
    }
  }

  write(frag, s, t, text) {
    const st = this.stream(s);
    for (const part of text.split(/(\r\n|\n|\r)/)) {
      if (part === "\n" || part === "\r\n") {
        if (!st.cur) this.line(frag, st, s, t);
        st.cur = null; st.overwrite = false;
      } else if (part === "\r") {
        st.overwrite = true;  // what follows replaces the line, as on a terminal
      } else if (part) {
        if (!st.cur) this.line(frag, st, s, t);
        const html = st.au.ansi_to_html(part);
        if (st.overwrite || st.cur.dataset.empty) {
          st.cur.innerHTML = html; delete st.cur.dataset.empty; st.overwrite = false;
        } else {
          st.cur.insertAdjacentHTML("beforeend", html);
        }
      }
    }
  }

  line(frag, st, s, t) {
    const d = document.createElement("div");
    d.className = "l s" + s;
    d.dataset.empty = "1";
    d.title = new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
    frag.appendChild(d);
    st.cur = d;
  }
}

export function streamToggles(root, logEl) {
  for (const box of root.querySelectorAll("input[data-stream]")) {
    const apply = () => logEl.classList.toggle("hide-s" + box.dataset.stream, !box.checked);
    box.addEventListener("change", apply);
    apply();
  }
}
