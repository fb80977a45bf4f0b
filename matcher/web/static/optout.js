// The opt-out registry page: photos are hashed here (hasher.js codePairs), only codes are sent.
import { codePairs, decodeToWorking } from "./hasher.js";

const $ = (id) => document.getElementById(id);
const state = { recipe: null, info: null, faces: null, files: [] };

async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = data.error || {};
    const d = e.details && e.details[0];
    throw new Error((e.message || `HTTP ${r.status}`) + (d ? ` (${d.loc}: ${d.msg})` : ""));
  }
  return data;
}

function say(text) {
  $("status").textContent = text;
}

function show(name, text, cls) {
  const li = document.createElement("li");
  li.className = cls;
  li.dataset.name = name;
  li.textContent = `${name}: ${text}`;
  $("results").append(li);
}

async function pairs(file) {
  const dec = await decodeToWorking(file, state.recipe);
  const work = { w: dec.w, h: dec.h, data: dec.data };
  let faces = [];
  if (state.faces && state.recipe.faces && state.recipe.faces.enabled) {
    faces = (await state.faces.detectFaces(work, state.recipe.faces, state.faces.cascade)) || [];
  }
  return codePairs(work, state.recipe, state.info.confirm, faces);
}

async function each(action) {
  $("results").textContent = "";
  let n = 0;
  for (const file of state.files) {
    n += 1;
    say(`${action === "register" ? "Registering" : "Checking"} ${n} of ${state.files.length}…`);
    let codes;
    try {
      codes = await pairs(file);
    } catch (e) {
      show(file.name, `could not be read (${e.message})`, "error");
      continue;
    }
    try {
      if (action === "register") {
        const note = $("note").value.trim();
        const r = await api("/api/v1/optout/register", { codes, note: note || null });
        show(file.name, r.new ? `registered as ${r.id}` : `already registered as ${r.id}`, "registered");
      } else {
        const r = await api("/api/v1/optout/check", { photos: [{ id: file.name, hashes: codes }] });
        const m = r.photos[0].matches.filter((x) => x.confirmed);
        show(file.name, m.length ? `registered as ${m.map((x) => x.entry).join(", ")}` : "not registered",
          m.length ? "registered" : "absent");
      }
    } catch (e) {
      show(file.name, `refused: ${e.message}`, "error");
    }
  }
  say(`Done: ${state.files.length} photo${state.files.length === 1 ? "" : "s"}.`);
  document.body.dataset.done = String(Number(document.body.dataset.done || 0) + 1);
}

async function start() {
  try {
    [state.recipe, state.info] = await Promise.all([api("/api/v1/recipe"), api("/api/v1/optout/info")]);
  } catch (e) {
    $("registry-info").textContent = `The registry could not be loaded: ${e.message}`;
    return;
  }
  $("registry-info").textContent = `${state.info.entries} photos registered`
    + (state.info.accepts_registrations ? "; this server accepts registrations." : ".");
  $("register").hidden = !state.info.accepts_registrations;
  if (state.recipe.faces && state.recipe.faces.enabled) {
    try {
      const mod = await import("./faces.js");
      state.faces = { detectFaces: mod.detectFaces, cascade: await mod.loadCascade("/static/cascade.json") };
    } catch (e) {
      state.faces = null; // face crops are then left out, as on the search page
    }
  }
  $("pick-files").addEventListener("change", () => {
    state.files = Array.from($("pick-files").files);
    $("check").disabled = $("register").disabled = state.files.length === 0;
    say(`${state.files.length} photo${state.files.length === 1 ? "" : "s"} chosen.`);
  });
  $("check").addEventListener("click", () => each("check"));
  $("register").addEventListener("click", () => each("register"));
  document.body.dataset.ready = "1";
}

start();
