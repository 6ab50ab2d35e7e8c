// The whole log, one page (256 KiB of the journal) at a time: a log of any size is read a page at a time.
import { LogView, streamToggles } from "/static/logview.js";

const root = document.getElementById("logpage");
const el = document.getElementById("log");
const where = document.getElementById("where");
const view = new LogView(el, { maxLines: Infinity, follow: () => false });
streamToggles(document, el);
let page = -1, pages = 1;

async function show(n) {
  const r = await fetch(root.dataset.api + "?page=" + n, { cache: "no-store" });
  if (!r.ok) { where.textContent = (await r.text()) || ("error " + r.status); return; }
  const d = await r.json();
  page = d.page; pages = d.pages;
  view.clear();
  view.add(d.r);
  el.scrollTop = 0;
  where.textContent = `page ${page + 1} of ${pages} (bytes ${d.start}-${d.end} of ${d.size})`;
  history.replaceState(null, "", "?page=" + page);
  for (const b of document.querySelectorAll("button[data-go]")) {
    const back = b.dataset.go === "first" || b.dataset.go === "prev";
    b.disabled = back ? page === 0 : page === pages - 1;
  }
  document.body.dataset.loaded = String(page);
}

for (const b of document.querySelectorAll("button[data-go]")) {
  b.addEventListener("click", () => {
    const go = { first: 0, prev: page - 1, next: page + 1, last: -1 }[b.dataset.go];
    show(go);
  });
}
const asked = new URLSearchParams(location.search).get("page");
show(asked !== null && /^-?\d+$/.test(asked) ? +asked : -1);
