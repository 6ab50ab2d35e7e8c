// A terminal-like log view: stdout, stderr (marked) and the system log interleaved as the job wrote them, ANSI
// colours through ansi_up, a bare \r overwriting its line (progress bars), a bounded number of lines in the DOM.
import { AnsiUp } from "/static/vendor/ansi_up.js";

export const STDOUT = 1, STDERR = 2, SYSTEM = 3;

// No links out of a job's output, but their text stays: ansi_up drops a link it refuses (an OSC 8 hyperlink, as
// `ls --hyperlink` and rich print) whole, text and all, and its allowlist is a plain object, so "constructor"
// passed it as a scheme.
class TextLinks extends AnsiUp {
  process_hyperlink(pkt) { return this.escape_txt_for_html(pkt.text); }
}

export class LogView {
  constructor(el, { maxLines = 5000, onTrim = null, follow = () => true } = {}) {
    this.el = el; this.max = maxLines; this.onTrim = onTrim; this.follow = follow;
    this.streams = {}; this.trimmed = 0; this.scrolling = false;
  }

  stream(s) {
    // One converter and one current line per stream: a colour or a \r of stderr must not leak into stdout.
    if (!this.streams[s]) {
      const au = new TextLinks();
      this.streams[s] = { au, cur: null, overwrite: false };
    }
    return this.streams[s];
  }

  clear() { this.el.replaceChildren(); this.streams = {}; this.trimmed = 0; }

  add(records) {
    records = records.filter(([s]) => s === STDOUT || s === STDERR || s === SYSTEM);
    // A batch with more lines than the view keeps (the tail of a big log): only its last lines are made at all.
    // A record holds whatever one read of the job's pipe got (up to 64 KiB: thousands of short lines), so the
    // record across the boundary keeps its own last lines: dropped whole, it took the log's tail with it.
    const count = text => (text.match(/\n/g) || []).length;
    let lines = 0;
    for (let i = records.length - 1; i >= 0; i--) {
      const n = count(records[i][2]);
      if (lines + n <= this.max) { lines += n; continue; }
      const text = records[i][2], drop = n - (this.max - lines);
      let at = 0;
      for (let k = 0; k < drop; k++) at = text.indexOf("\n", at) + 1;
      for (let k = 0; k < i; k++) this.trimmed += count(records[k][2]);
      this.trimmed += drop;
      const kept = [...records[i]];
      kept[2] = text.slice(at);
      records = [kept, ...records.slice(i + 1)];
      this.trimmed += this.el.childElementCount;
      this.el.replaceChildren();
      this.streams = {};
      if (this.onTrim) this.onTrim(this.trimmed);
      break;
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
