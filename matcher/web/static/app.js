// The web check's page: pick photos, hash them here (hasher.js), send only hashes, verify, show evidence.
import { hashPhoto, verifyCandidates } from "./hasher.js";

const $ = (id) => document.getElementById(id);
const IMAGE_EXT = /\.(jpe?g|jpe|jfif|png|apng|gif|webp|avif|avifs|heic|heif|hif|tiff?|bmp|dib)$/i;
const SEARCH_BATCH = 8; // photos per search request

const state = {
  recipe: null,
  words: null, // the server's evidence words and CSV layout (/api/v1/report-format): one table for every output
  faces: null, // {detectFaces, cascade} when the face detector loaded
  photos: [], // {n, name, file, url, status, matches, error, hash}
  filter: "",
  running: false,
  identity: null, // {label, items, total, truncated, available}: what /api/v1/lookup listed under an account
};
window.matcherState = state; // for tests and the curious: results only, never pixels

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, options);
  let body = null;
  try { body = await r.json(); } catch { body = null; }
  if (!r.ok) {
    const msg = body && body.error ? body.error.message : `HTTP ${r.status}`;
    const err = new Error(msg);
    err.status = r.status;
    err.retryAfter = Number(r.headers.get("retry-after") || 0);
    throw err;
  }
  return body;
}

async function apiRetry(path, options) {
  for (let attempt = 0; ; attempt++) {
    try { return await api(path, options); } catch (e) {
      if (e.status !== 429 || attempt >= 5) throw e;
      await new Promise((res) => setTimeout(res, 1000 * Math.max(1, e.retryAfter)));
    }
  }
}

async function init() {
  try {
    const [recipe, health, words] = await Promise.all([api("/api/v1/recipe"), api("/api/v1/health"),
      api("/api/v1/report-format")]);
    state.recipe = recipe;
    state.words = words;
    $("sure-explained").textContent = words.explained;
    $("index-info").textContent =
      `Checking against ${health.items.toLocaleString()} dataset images in ${health.datasets} dataset(s).`;
  } catch (e) {
    $("index-info").textContent = `The server is not answering: ${e.message}`;
    return;
  }
  if (state.recipe.faces && state.recipe.faces.enabled) {
    try {
      const mod = await import("./faces.js");
      state.faces = { detectFaces: mod.detectFaces, cascade: await mod.loadCascade("/static/cascade.json") };
    } catch (e) {
      state.faces = null; // face crops are then not searched from this page
    }
  }
  $("pick-files").addEventListener("change", (ev) => addFiles([...ev.target.files]));
  $("pick-folder").addEventListener("change", (ev) => addFiles([...ev.target.files]));
  const drop = $("drop");
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", async (ev) => {
    ev.preventDefault();
    drop.classList.remove("over");
    addFiles(await droppedFiles(ev.dataTransfer));
  });
  $("filter-dataset").addEventListener("change", (ev) => { state.filter = ev.target.value; render(); });
  $("export-csv").addEventListener("click", exportCsv);
  $("export-json").addEventListener("click", exportJson);
  $("prepare-letters").addEventListener("click", () => { $("letters").hidden = !$("letters").hidden; });
  $("make-letters").addEventListener("click", makeLetters);
  $("who-form").addEventListener("submit", (ev) => { ev.preventDefault(); lookupWho(); });
  document.body.dataset.ready = "1";
}

// Files dropped: folders are walked (webkitGetAsEntry), files taken as they are.
async function droppedFiles(dt) {
  const out = [];
  const entries = [...dt.items].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null));
  if (entries.every((e) => !e)) return [...dt.files];
  async function walk(entry, prefix) {
    if (!entry) return;
    if (entry.isFile) {
      const f = await new Promise((res, rej) => entry.file(res, rej));
      out.push(new File([f], prefix + f.name, { type: f.type, lastModified: f.lastModified }));
    } else if (entry.isDirectory) {
      const reader = entry.createReader();
      for (;;) {
        const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
        if (!batch.length) break;
        for (const e of batch) await walk(e, prefix + entry.name + "/");
      }
    }
  }
  for (const e of entries) await walk(e, "");
  return out;
}

// A photo is called by its file name, whether it was picked as a file, in a folder or dropped: the folder path
// (webkitRelativePath, or the path a dropped folder gives) is kept apart, shown small under the name.
function displayName(f) {
  return f.name.split("/").pop();
}

function folderOf(f) {
  const path = f.webkitRelativePath || (f.name.includes("/") ? f.name : "");
  return path ? path.slice(0, path.lastIndexOf("/")) : "";
}

function looksLikeImage(f) {
  return IMAGE_EXT.test(f.name) || (f.type || "").startsWith("image/");
}

function addFiles(files) {
  const images = files.filter(looksLikeImage);
  const skipped = files.length - images.length;
  images.sort((a, b) => (folderOf(a) + "/" + displayName(a)).localeCompare(folderOf(b) + "/" + displayName(b)));
  for (const f of images) {
    state.photos.push({ n: state.photos.length, name: displayName(f), folder: folderOf(f), file: f, url: null,
      status: "queued", matches: [], error: null });
  }
  state.skipped = (state.skipped || 0) + skipped;
  if (!images.length && !skipped) return;
  $("results").hidden = false;
  render();
  if (images.length && !state.running) run();
}

// The items a dataset lists under the person's Flickr account: found by identity, joined with the content
// matches by item id (a match listed there too was found by both).
async function lookupWho() {
  const who = $("who").value.trim();
  const status = $("who-status");
  if (!who) { state.identity = null; status.textContent = ""; render(); return; }
  status.textContent = "Looking up…";
  try {
    const res = await apiRetry("/api/v1/lookup", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ flickr_user: who }),
    });
    state.identity = res;
    status.textContent = !res.available ? "This index records no Flickr accounts."
      : `${res.total} dataset image${res.total === 1 ? "" : "s"} listed under ${res.label}.`;
  } catch (e) {
    state.identity = null;
    status.textContent = e.message;
  }
  document.body.dataset.lookup = String((Number(document.body.dataset.lookup) || 0) + 1);
  $("results").hidden = false;
  render();
}

function sureWords(m) {
  const w = state.words;
  if (m.sure) return m.sure; // the server said it (an uploaded photo's matches)
  if (m.score === null || m.score === undefined) return w.unconfirmed;
  for (const [low, words] of w.sure_bands) if (low === null || m.score >= low) return words;
  return "";
}

function listedIds() {
  return new Set(state.identity ? state.identity.items.map((it) => it.id) : []);
}

function foundBy(m, listed) {
  return listed.has(m.id) ? "both" : "content";
}

function setProgress(done, total, text) {
  $("progress-box").hidden = false;
  $("progress").max = Math.max(1, total);
  $("progress").value = done;
  $("progress-text").textContent = text;
}

async function run() {
  state.running = true;
  try {
    for (;;) {
      const queued = state.photos.filter((p) => p.status === "queued");
      if (!queued.length) break;
      const batch = [];
      for (const p of queued.slice(0, SEARCH_BATCH)) {
        p.status = "hashing";
        const total = state.photos.length;
        const done = state.photos.filter((q) => !["queued", "hashing"].includes(q.status)).length;
        setProgress(done, total, `Hashing in your browser: ${done} of ${total} photos (${p.name})`);
        try {
          const detect = state.faces ? (work, opts) => state.faces.detectFaces(work, opts, state.faces.cascade) : null;
          const h = await hashPhoto(p.file, state.recipe, { detectFaces: detect });
          p.hashed = h;
          p.hash = h.hashes[0].hash;
          batch.push(p);
        } catch (e) {
          p.status = "undecodable";
          p.error = String(e && e.message ? e.message : e);
          p.image = await sniffImage(p.file);
        }
      }
      if (batch.length) await searchBatch(batch);
      render();
    }
    const total = state.photos.length;
    setProgress(total, total, `Done: ${total} photo${total === 1 ? "" : "s"}.`);
  } finally {
    state.running = false;
    document.body.dataset.done = String(state.photos.length);
  }
}

// Does the file start as an image the server can decode? (JPEG, PNG, GIF, WebP, HEIC/HEIF/AVIF, TIFF, BMP)
async function sniffImage(file) {
  let b;
  try { b = new Uint8Array(await file.slice(0, 16).arrayBuffer()); } catch { return false; }
  const ascii = (i, n) => String.fromCharCode(...b.slice(i, i + n));
  return (b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) || ascii(1, 3) === "PNG" || ascii(0, 4) === "GIF8"
    || (ascii(0, 4) === "RIFF" && ascii(8, 4) === "WEBP")
    || (ascii(4, 4) === "ftyp" && ["heic", "heix", "mif1", "msf1", "avif", "avis", "hevc"].includes(ascii(8, 4)))
    || ascii(0, 4) === "II*\0" || ascii(0, 4) === "MM\0*" || ascii(0, 2) === "BM";
}

async function searchBatch(batch) {
  const req = {
    photos: batch.map((p) => ({ id: String(p.n), hashes: p.hashed.hashes })),
    thumbnails: true,
  };
  let res;
  try {
    res = await apiRetry("/api/v1/search", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(req),
    });
  } catch (e) {
    for (const p of batch) { p.status = "error"; p.error = `search failed: ${e.message}`; p.hashed = null; }
    return;
  }
  for (const r of res.results) {
    const p = state.photos[Number(r.id)];
    try {
      const found = await verifyCandidates(p.hashed.work, p.hashed.faces, r.candidates, state.recipe);
      p.matches = found.map((m) => ({
        ...m.item, distance: m.distance, score: m.score, variant: m.variant, entry: m.entry, how: m.how,
      }));
      p.status = "done";
    } catch (e) {
      p.status = "error";
      p.error = `verification failed: ${e.message}`;
    }
    p.hashed = null; // drop the pixels
  }
}

async function uploadOne(p) {
  p.status = "uploading";
  render();
  try {
    const res = await apiRetry(`/api/v1/search-upload?name=${encodeURIComponent(p.name)}`, {
      method: "POST", headers: { "content-type": "application/octet-stream" }, body: p.file,
    });
    p.preview = res.preview;
    p.hash = res.hash;
    p.matches = res.matches.map((m) => ({
      id: m.id, dataset: m.dataset, key: m.key, url: m.url, page_url: m.page_url, owner: m.owner,
      license: m.license, title: m.title, width: m.width, height: m.height, hash: m.hash,
      distance: m.distance, score: m.evidence ? (m.evidence.score ?? null) : null,
      variant: m.evidence ? m.evidence.variant : null, entry: m.evidence ? m.evidence.entry : null,
      how: m.how, sure: m.sure,
    }));
    p.status = "done";
    p.uploaded = true;
    p.error = null;
  } catch (e) {
    p.status = "error";
    p.error = `upload check failed: ${e.message}`;
  }
  render();
}

function visibleMatches(p) {
  return state.filter ? p.matches.filter((m) => m.dataset === state.filter) : p.matches;
}

function link(url, text) {
  if (!url || !/^https?:\/\//i.test(url)) return document.createTextNode(url || "—");
  return el("a", { href: url, rel: "noopener noreferrer", target: "_blank", text: text || url });
}

function photoImg(p) {
  if (p.preview) return el("img", { src: p.preview, alt: p.name, class: "mine" });
  if (!p.url) p.url = URL.createObjectURL(p.file);
  return el("img", { src: p.url, alt: p.name, class: "mine" });
}

function matchCard(m, listed) {
  const both = foundBy(m, listed) === "both";
  const score = m.score === null || m.score === undefined ? "" : `, score ${m.score.toFixed(3)}`;
  const info = el("div", { class: "what" },
    el("p", {}, el("strong", { class: "how", text: m.how || "" }), " · ", el("span", { class: "sure", text: sureWords(m) }),
      both ? " · found by your photo and your Flickr account" : ""),
    el("p", {}, el("strong", { text: m.dataset }), " ", el("code", { text: m.key }),
      ...[m.owner && ` · owner ${m.owner}`, m.license && ` · ${m.license}`].filter(Boolean)),
    el("p", {}, link(m.url), m.page_url ? " · " : "", m.page_url ? link(m.page_url, "photo page") : ""),
    el("p", { class: "tech", text: `distance ${m.distance}${score} · ${m.variant || "—"} → ${m.entry || "—"}` }));
  return el("div", { class: "match", "data-key": m.key, "data-dataset": m.dataset },
    el("img", { src: `/api/v1/items/${m.id}/image`, alt: `dataset copy ${m.key}`, class: "theirs" }), info);
}

function identityCard(it, byContent) {
  const rows = [
    ["dataset", it.dataset], ["key", it.key], ["url", link(it.url)], ["page", link(it.page_url)],
    ["owner", it.owner || "—"], ["licence", it.license || "—"],
    ["status", it.status === "ok" ? "in the index" : `not hashed: ${it.error || "failed"} (the listing is still evidence)`],
    ["found by", byContent.length ? `your Flickr account and your photo ${byContent.join(", ")}`
      : "your Flickr account only (not among the photos checked here)"],
  ];
  const dl = el("dl");
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", {}, v));
  const img = it.status === "ok"
    ? el("img", { src: `/api/v1/items/${it.id}/image`, alt: `dataset copy ${it.key}`, class: "theirs" })
    : el("div", { class: "theirs missing", text: "no image" });
  return el("div", { class: "match listed", "data-key": it.key, "data-dataset": it.dataset,
    "data-found-by": byContent.length ? "both" : "identity" }, img, dl);
}

function renderIdentity(datasets) {
  const box = $("identity");
  const list = $("identity-list");
  list.replaceChildren();
  if (!state.identity) { box.hidden = true; return; }
  box.hidden = false;
  const photosOf = new Map();
  for (const p of state.photos) {
    for (const m of p.matches) {
      if (!photosOf.has(m.id)) photosOf.set(m.id, []);
      photosOf.get(m.id).push(p.name);
    }
  }
  const items = state.identity.items.filter((it) => !state.filter || it.dataset === state.filter);
  for (const it of items) {
    datasets.add(it.dataset);
    list.append(identityCard(it, photosOf.get(it.id) || []));
  }
  const more = state.identity.truncated ? ` (the first ${state.identity.items.length} of ${state.identity.total})` : "";
  $("identity-summary").textContent =
    `${items.length} dataset image${items.length === 1 ? "" : "s"} listed under ${state.identity.label}${more}`;
}

function photoLabel(p) {
  return el("p", { class: "name" }, p.name, p.folder ? el("span", { class: "folder", text: ` in ${p.folder}` }) : "");
}

function problemItem(p) {
  const li = el("li", { "data-photo": p.name }, `${p.name}: ${p.error}`);
  if (p.status === "undecodable" && p.image) { // offered only for a file whose first bytes are an image's
    const b = el("button", { type: "button", class: "upload", text: "Upload to check (hashed in server memory, not stored)" });
    b.addEventListener("click", () => uploadOne(p));
    li.append(" ", b);
  }
  return li;
}

function render() {
  const list = $("photo-list");
  const listed = listedIds();
  list.replaceChildren();
  const unmatched = $("unmatched");
  unmatched.replaceChildren();
  const problems = $("problems");
  problems.replaceChildren();
  const datasets = new Set();
  let nMatched = 0, nMatches = 0, nUnmatched = 0, nProblems = 0, nWaiting = 0;
  for (const p of state.photos) {
    for (const m of p.matches) datasets.add(m.dataset);
    const ms = p.status === "done" ? visibleMatches(p) : [];
    if (ms.length) {
      nMatched++;
      nMatches += ms.length;
      list.append(el("article", { class: "photo", "data-photo": p.name },
        el("div", { class: "mine-box" }, photoImg(p), photoLabel(p),
          el("p", { class: "hash", text: `hash ${p.hash}${p.uploaded ? " (checked by upload)" : ""}` })),
        el("div", { class: "matches" }, ...ms.map((m) => matchCard(m, listed)))));
    } else if (p.status === "done") { // no match (in the dataset chosen, when one is)
      nUnmatched++;
      unmatched.append(el("li", { text: p.name + (p.folder ? ` in ${p.folder}` : "") }));
    } else if (p.status === "undecodable" || p.status === "error") {
      nProblems++;
      problems.append(problemItem(p));
    } else {
      nWaiting++;
      if (p.status === "uploading") problems.append(el("li", { text: `${p.name}: checking…` }));
    }
  }
  renderIdentity(datasets);
  const sel = $("filter-dataset");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const d of [...datasets].sort()) if (!have.has(d)) sel.append(el("option", { value: d, text: d }));
  const total = state.photos.length;
  const where = state.filter || "the datasets";
  const parts = [`${nMatched} of ${total} photo${total === 1 ? "" : "s"} found in ${where} ` +
    `(${nMatches} cop${nMatches === 1 ? "y" : "ies"})`, `${nUnmatched} not found`];
  if (nProblems) parts.push(`${nProblems} could not be checked here`);
  if (nWaiting) parts.push(`${nWaiting} still being checked`);
  if (state.skipped) parts.push(`${state.skipped} file${state.skipped === 1 ? "" : "s"} skipped: not photos`);
  $("summary").textContent = parts.join(" · ");
  $("summary").dataset.counts = JSON.stringify({ total, found: nMatched, copies: nMatches, notFound: nUnmatched,
    problems: nProblems, waiting: nWaiting, skipped: state.skipped || 0 });
  $("unmatched-summary").textContent = `Not found in ${where} (${nUnmatched})`;
  $("problem-summary").textContent = `Could not be checked here (${nProblems})`;
  $("problem-box").open = nProblems > 0;
}

function matchedRows() {
  const rows = [];
  for (const p of state.photos) for (const m of visibleMatches(p)) rows.push([p, m]);
  return rows;
}

// Items listed under the account that no photo matched: rows with no photo, found by identity.
function identityOnlyRows() {
  if (!state.identity) return [];
  const matched = new Set(state.photos.flatMap((p) => p.matches.map((m) => m.id)));
  return state.identity.items.filter((it) => !matched.has(it.id) && (!state.filter || it.dataset === state.filter));
}

function download(name, type, text) {
  const a = el("a", { href: URL.createObjectURL(new Blob([text], { type })), download: name });
  document.body.append(a);
  a.click();
  setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
}

function csvCell(v) {
  let s = v === null || v === undefined ? "" : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = "'" + s; // no formulas when opened in a spreadsheet
  return /[",\n\r]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

// The CSV of `matcher search --csv`: the columns, their order and their names come from the server.
function exportCsv() {
  const cols = state.words.csv_columns;
  const lines = [cols.join(",")];
  const listed = listedIds();
  for (const [p, m] of matchedRows()) {
    const row = { query: p.folder ? `${p.folder}/${p.name}` : p.name, query_hash: p.hash, dataset: m.dataset, key: m.key,
      how: m.how, sure: sureWords(m), distance: m.distance,
      score: m.score === null || m.score === undefined ? "" : m.score.toFixed(4), found_by: foundBy(m, listed),
      url: m.url, page_url: m.page_url, owner: m.owner, license: m.license, title: m.title, width: m.width,
      height: m.height, item_hash: m.hash, variant: m.variant, entry: m.entry };
    lines.push(cols.map((c) => csvCell(row[c])).join(","));
  }
  for (const it of identityOnlyRows()) {
    const row = { query: "(identity)", dataset: it.dataset, key: it.key, how: state.words.identity_only,
      sure: state.words.listed, found_by: "identity", url: it.url, page_url: it.page_url, owner: it.owner,
      license: it.license, title: it.title, width: it.width, height: it.height, item_hash: it.hash,
      error: it.status === "ok" ? "" : it.error };
    lines.push(cols.map((c) => csvCell(row[c])).join(","));
  }
  download("matcher-results.csv", "text/csv", lines.join("\r\n") + "\r\n");
}

function exportJson() {
  const listed = listedIds();
  const photos = state.photos.filter((p) => p.status === "done").map((p) => ({
    photo: p.folder ? `${p.folder}/${p.name}` : p.name, hash: p.hash,
    matches: visibleMatches(p).map((m) => ({ ...m, sure: sureWords(m), found_by: foundBy(m, listed) })),
  }));
  const out = !state.identity ? photos : {
    photos,
    identity: { account: state.identity.label, items_listed: state.identity.total,
      not_found_by_content: identityOnlyRows().map((it) => ({ ...it, found_by: "identity" })) },
  };
  download("matcher-results.json", "application/json", JSON.stringify(out, null, 2));
}

async function makeLetters() {
  const ids = [...new Set([...matchedRows().map(([, m]) => m.id), ...identityOnlyRows().map((it) => it.id)])];
  const box = $("letter-list");
  box.replaceChildren();
  if (!ids.length) { box.append(el("p", { text: "No matches to write about." })); return; }
  const requester = {};
  if ($("letter-name").value.trim()) requester.name = $("letter-name").value.trim();
  if ($("letter-email").value.trim()) requester.email = $("letter-email").value.trim();
  let res;
  try {
    res = await apiRetry("/api/v1/letters", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ items: ids, template: $("letter-template").value, requester }),
    });
  } catch (e) {
    box.append(el("p", { class: "error", text: `Could not write the letters: ${e.message}` }));
    return;
  }
  for (const l of res.letters) {
    const ta = el("textarea", { readonly: "", rows: "16", class: "letter-text", "data-dataset": l.dataset });
    ta.value = l.text;
    const copy = el("button", { type: "button", text: "Copy" });
    copy.addEventListener("click", async () => {
      try { await navigator.clipboard.writeText(l.text); copy.textContent = "Copied"; } catch { ta.select(); }
    });
    const dl = el("button", { type: "button", text: "Download" });
    dl.addEventListener("click", () => download(l.filename, "text/plain", l.text));
    box.append(el("div", { class: "letter" }, el("h4", { text: `${l.dataset}: ${l.filename}` }), ta,
      el("div", {}, copy, " ", dl)));
  }
}

init();
