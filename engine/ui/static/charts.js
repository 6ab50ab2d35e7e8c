// The job's resource use over time from its stats (.docker_stats.tsv, and .gpu_stats.tsv where there is one): the
// samples so far from /stats, the next ones from the page's stream, drawn with uPlot (vendor/uPlot.iife.min.js).
const MiB = 1 << 20;

function parseTime(text, utc) {
  // docker_stats: 2026-12-01T08:00:05 in UTC; gpu_stats, as nvidia-smi writes it: 2026/12/01 08:00:05.123 in the
  // engine's local time (the browser's, on one machine)
  const t = Date.parse(text.trim().replace(/\//g, "-").replace(" ", "T") + (utc ? "Z" : ""));
  return Number.isNaN(t) ? null : t / 1000;
}

function fmtBytes(v) {
  if (v == null) return "";
  const a = Math.abs(v);
  return a >= 1 << 30 ? (v / (1 << 30)).toFixed(1) + " GiB" : a >= MiB ? (v / MiB).toFixed(1) + " MiB"
       : a >= 1024 ? (v / 1024).toFixed(0) + " KiB" : v.toFixed(0) + " B";
}

class Table {
  // One TSV: its header and its rows (time first), in time order, each sample once.
  constructor(utc) { this.utc = utc; this.cols = null; this.rows = []; this.seen = new Set(); }
  add(text) {
    let changed = false, unordered = false;
    for (const line of text.split("\n")) {
      if (!line.trim()) continue;
      const cells = line.split("\t");
      const t = parseTime(cells[0], this.utc);
      if (t === null) { if (!this.cols) this.cols = cells.map(c => c.trim()); continue; }  // the header
      // Before the header, or a row both the file and the stream brought (a GPU row per device shares its time)
      if (!this.cols || this.seen.has(line)) continue;
      this.seen.add(line);
      const row = [t, ...cells.slice(1).map(c => (c.trim() === "" ? null : Number(c)))];
      unordered = unordered || (this.rows.length > 0 && t < this.rows[this.rows.length - 1][0]);
      this.rows.push(row);
      changed = true;
    }
    if (unordered) this.rows.sort((a, b) => a[0] - b[0]);
    return changed;
  }
  col(name) { const i = this.cols ? this.cols.indexOf(name) : -1; return i < 0 ? null : this.rows.map(r => r[i]); }
  has(name) { return !!this.cols && this.cols.includes(name); }
}

function rate(ts, vs) {
  // Counters of a process tree drop when a process exits: no negative rates, a gap instead.
  return vs.map((v, i) => {
    if (i === 0 || v == null || vs[i - 1] == null) return null;
    const dt = ts[i] - ts[i - 1];
    const d = (v - vs[i - 1]) / dt;
    return dt > 0 && d >= 0 ? d : null;
  });
}

export class Charts {
  constructor(el, note) {
    this.el = el; this.note = note; this.docker = new Table(true); this.gpu = new Table(false); this.plots = {};
    this.pending = false;
    window.addEventListener("resize", () => this.resize());
  }

  load(stats) {
    const a = this.docker.add(stats.docker || ""), b = this.gpu.add(stats.gpu || "");
    if (a || b) this.draw();
  }

  addRecords(records) {
    let changed = false;
    for (const [s, , text] of records) {
      if (s === 5) changed = this.docker.add(text) || changed;
      else if (s === 7) changed = this.gpu.add(text) || changed;
    }
    if (changed && !this.pending) {
      this.pending = true;
      requestAnimationFrame(() => { this.pending = false; this.draw(); });
    }
  }

  specs() {
    const d = this.docker, out = [];
    if (d.rows.length) {
      const ts = d.rows.map(r => r[0]);
      out.push({ key: "cpu", title: "CPU", unit: "%", data: [ts, d.col("cpu_percent")], series: ["CPU %"] });
      out.push({ key: "memory", title: "Memory", unit: "bytes", data: [ts, d.col("memory_bytes")], series: ["RSS"] });
      out.push({ key: "disk", title: "Disk I/O", unit: "bytes/s",
                 data: [ts, rate(ts, d.col("block_read_bytes")), rate(ts, d.col("block_write_bytes"))],
                 series: ["read", "write"] });
      if ((d.col("net_rx_bytes") || []).some(v => v != null)) {
        out.push({ key: "network", title: "Network", unit: "bytes/s",
                   data: [ts, rate(ts, d.col("net_rx_bytes")), rate(ts, d.col("net_tx_bytes"))],
                   series: ["received", "sent"] });
      } else {
        out.push({ key: "network", title: "Network", note: "No network figures of the job's own: a process job " +
                   "shares the host's network (a container job's are in its stats)." });
      }
    }
    const g = this.gpu;
    if (g.rows.length && g.cols) {
      // One series per GPU (the index column), for utilisation and memory used.
      const idx = g.cols.indexOf("index");
      const ids = [...new Set(g.rows.map(r => (idx < 0 ? 0 : r[idx])))];
      const times = [...new Set(g.rows.map(r => r[0]))];
      for (const [key, col, unit] of [["gpu", "utilization.gpu [%]", "%"], ["gpumem", "memory.used [MiB]", "MiB"]]) {
        const ci = g.cols.indexOf(col);
        if (ci < 0) continue;
        const series = ids.map(id => times.map(t => {
          const row = g.rows.find(r => r[0] === t && (idx < 0 || r[idx] === id));
          return row ? row[ci] : null;
        }));
        out.push({ key, title: key === "gpu" ? "GPU utilisation" : "GPU memory", unit: unit === "MiB" ? "MiB" : "%",
                   data: [times, ...series], series: ids.map(id => "GPU " + id) });
      }
    }
    return out;
  }

  draw() {
    const specs = this.specs();
    if (!specs.length) return;
    if (this.note) this.note.hidden = true;
    const colors = ["#2f6fde", "#e8710a", "#1a7f37", "#9334e6", "#c62828", "#00838f"];
    for (const spec of specs) {
      let box = this.plots[spec.key];
      if (!box) {
        const div = document.createElement("div");
        div.className = "chart"; div.id = "chart-" + spec.key; div.dataset.key = spec.key;
        this.el.appendChild(div);
        box = this.plots[spec.key] = { div, plot: null };
      }
      if (spec.note) {
        if (!box.div.textContent) {
          const h = document.createElement("div"); h.className = "note";
          h.textContent = spec.title + ": " + spec.note; box.div.appendChild(h);
        }
        continue;
      }
      if (box.plot) { box.plot.setData(spec.data); continue; }
      const fmt = spec.unit === "%" ? v => (v == null ? "" : v.toFixed(0) + "%")
                : spec.unit === "MiB" ? v => (v == null ? "" : v.toFixed(0) + " MiB")
                : spec.unit === "bytes/s" ? v => (v == null ? "" : fmtBytes(v) + "/s") : fmtBytes;
      const opts = {
        title: spec.title, width: this.width(box.div), height: 190,
        // From 0, and never so small a range that ticks fall between whole units (bytes: at least 1 KiB)
        scales: { x: { time: true }, y: spec.unit === "%" ? { range: (u, min, max) => [0, Math.max(100, max)] }
                                                         : { range: (u, min, max) => [0, Math.max(max * 1.1,
                                                             spec.unit === "MiB" ? 1 : 1024)] } },
        series: [{}, ...spec.series.map((label, i) => ({ label, stroke: colors[i % colors.length], width: 1.5,
                                                           value: (u, v) => fmt(v), spanGaps: false }))],
        axes: [{}, { size: 84, values: (u, vals) => vals.map(fmt) }],
        cursor: { sync: { key: "job-resources" } },
        legend: { live: true },
      };
      box.plot = new uPlot(opts, spec.data, box.div);
    }
    this.el.dataset.samples = String(this.docker.rows.length + this.gpu.rows.length);
  }

  width(div) { return Math.max(300, (div.clientWidth || 420) - 10); }

  resize() {
    for (const box of Object.values(this.plots)) {
      if (box.plot) box.plot.setSize({ width: this.width(box.div), height: 190 });
    }
  }
}
