// The livelens web UI: camera list (live over SSE), grid and single view, add/edit/delete with
// the API's own validation messages, start/stop, snapshots, a stats overlay, and sign-in when a
// token is required. Plain ES module, no build step; players are <livelens-player> elements.
import "/player.js";
import * as analysis from "/analysis.js";
import * as recordings from "/recordings.js";
import * as system from "/system.js";
import { Webcam } from "/webcam.js";

const $ = (sel) => document.querySelector(sel);
// `rtsp`: the re-stream's base URL (rtsp://host:port), null while unknown or when it is off.
// `rtmp`: the RTMP publish server's base URL (rtmp://host:port), likewise.
// `replaying`: a recording plays in the single view's place (recordings.js), the live player is closed.
const state = { cameras: [], view: "grid", selected: null, tiles: new Map(), editing: null, rtsp: null, rtmp: null,
  replaying: false };

// ---- API --------------------------------------------------------------------------------------
async function api(method, path, body) {
  const headers = {};
  const token = sessionStorage.getItem("livelens-token");
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch { /* no body */ }
  if (r.status === 401) $("#signin").classList.add("visible");
  return { ok: r.ok, status: r.status, data };
}

function say(text) {
  $("#message").textContent = text || "";
}

// ---- camera list ------------------------------------------------------------------------------
function describe(c) {
  const v = c.video;
  const parts = [];
  if (v) parts.push(`${v.codec.toUpperCase()} ${v.width}×${v.height}${v.fps ? ` ${Math.round(v.fps)} fps` : ""}`);
  if (c.audio) parts.push(c.audio.codec.toUpperCase());
  parts.push(`${c.viewers} viewer${c.viewers === 1 ? "" : "s"}`);
  // What else reads the camera, apart from the people watching it.
  const sub = c.subscribers || {};
  const also = [];
  if (sub.recording) also.push("recorder");
  if (sub.analysis) also.push(sub.analysis === 1 ? "model" : `${sub.analysis} analysers`);
  if (sub.hls) also.push("LL-HLS");
  if (also.length) parts.push(`+ ${also.join(", ")}`);
  if (c.stats && c.state === "live") parts.push(`${Math.round(c.stats.bitrate_kbps)} kbit/s`);
  return parts.join(" · ");
}

function renderList() {
  const list = $("#list");
  const ids = new Set(state.cameras.map((c) => c.id));
  for (const el of [...list.children]) if (!ids.has(el.dataset.id)) el.remove();
  for (const c of state.cameras) {
    let el = list.querySelector(`[data-id="${CSS.escape(c.id)}"]`);
    if (!el) {
      el = document.createElement("article");
      el.className = "cam";
      el.dataset.id = c.id;
      el.innerHTML = `<div><span class="name"></span><span class="badge"></span></div>
        <div class="meta"></div><div class="reason"></div><div class="alerts"></div>
        <div class="actions">
          <button data-act="toggle"></button><button data-act="edit">Edit</button>
          <a data-act="snapshot" download><button type="button" tabindex="-1">Snapshot</button></a>
          <button data-act="delete">Delete</button>
        </div>
        <details class="links"><summary>Links for other players</summary>
          <label>LL-HLS <input readonly data-link="hls"></label>
          <label>MJPEG <input readonly data-link="mjpeg"></label>
          <label hidden>RTSP <input readonly data-link="rtsp"></label>
          <label hidden>Publish (RTMP) <input readonly data-link="rtmp"></label>
          <label hidden>Publish (WHIP) <input readonly data-link="whip"></label>
        </details>`;
      el.querySelector(".name").textContent = c.id;
      el.querySelector(".name").addEventListener("click", () => select(c.id, true));
      el.querySelector('[data-act="toggle"]').addEventListener("click", () => toggle(el.dataset.id));
      el.querySelector('[data-act="edit"]').addEventListener("click", () => openEditor(el.dataset.id));
      el.querySelector('[data-act="delete"]').addEventListener("click", () => remove(el.dataset.id));
      el.querySelector('[data-act="snapshot"]').href = `/api/cameras/${encodeURIComponent(c.id)}/snapshot.jpg`;
      el.querySelector('[data-act="snapshot"]').setAttribute("download", `${c.id}.jpg`);
      // URLs for VLC, Home Assistant, NVRs and <img>: click one to select it for copying.
      const base = `${location.origin}/api/cameras/${encodeURIComponent(c.id)}`;
      el.querySelector('[data-link="hls"]').value = `${base}/hls/index.m3u8`;
      el.querySelector('[data-link="mjpeg"]').value = `${base}/mjpeg`;
      for (const input of el.querySelectorAll("[data-link]")) input.addEventListener("focus", () => input.select());
      list.append(el);
    }
    const badge = el.querySelector(".badge");
    badge.textContent = c.state;
    badge.className = `badge ${c.state}`;
    el.querySelector(".meta").textContent = describe(c);
    const rtsp = el.querySelector('[data-link="rtsp"]');
    rtsp.closest("label").hidden = !state.rtsp;
    if (state.rtsp) rtsp.value = `${state.rtsp}/${c.id}`;
    // A publish: camera also shows where encoders (OBS, FFmpeg) send to it.
    const publishing = c.source === "publish:";
    const rtmp = el.querySelector('[data-link="rtmp"]');
    rtmp.closest("label").hidden = !(publishing && state.rtmp);
    if (publishing && state.rtmp) rtmp.value = `${state.rtmp}/live/${c.id}`;
    const whip = el.querySelector('[data-link="whip"]');
    whip.closest("label").hidden = !publishing;
    whip.value = `${location.origin}/api/cameras/${encodeURIComponent(c.id)}/whip`;
    el.querySelector(".reason").textContent = c.reason || "";
    const active = (c.analysis_status?.alerts || []).filter((r) => r.active).map((r) => r.name);
    el.querySelector(".alerts").textContent = active.length ? `alert: ${active.join(", ")}` : "";
    el.querySelector('[data-act="toggle"]').textContent = c.state === "stopped" || c.state === "failed" ? "Start" : "Stop";
    el.classList.toggle("selected", state.view === "single" && c.id === state.selected);
  }
}

async function toggle(id) {
  const c = state.cameras.find((x) => x.id === id);
  const action = c && (c.state === "stopped" || c.state === "failed") ? "start" : "stop";
  const r = await api("POST", `/api/cameras/${encodeURIComponent(id)}/${action}`);
  say(r.ok ? "" : r.data?.error);
  if (r.ok) upsert(r.data);
}

// Deleting takes the camera, its model settings and alert rules out of the config file: asked
// first, naming what goes and what stays.
function confirmDelete(id) {
  const c = state.cameras.find((x) => x.id === id);
  const rules = c?.analysis_status?.alerts?.length || 0;
  const lost = [`camera ${id}`, "its source and settings"];
  if (c?.analysis_status) lost.push("its model settings");
  if (rules) lost.push(`${rules} alert rule${rules === 1 ? "" : "s"}`);
  const dialog = $("#confirm-delete");
  $("#confirm-title").textContent = `Delete ${id}?`;
  $("#confirm-text").textContent = `This removes ${lost.join(", ")} from the config and ends everyone watching it. ` +
    "Its recordings and events stay on disk.";
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((done) => {
    const closed = () => {
      // A `close` is dispatched after the dialog closed: one from the previous showing can
      // arrive while this one is open (Cancel, then Delete again at once). Not ours.
      if (dialog.open) return;
      dialog.removeEventListener("close", closed);
      done(dialog.returnValue === "delete");
    };
    dialog.addEventListener("close", closed);
  });
}

async function remove(id) {
  if (!(await confirmDelete(id))) { say(`${id} was not deleted`); return; }
  const r = await api("DELETE", `/api/cameras/${encodeURIComponent(id)}`);
  say(r.ok ? saved(id, "Deleted") : r.data?.error);
  if (r.ok) {
    state.cameras = state.cameras.filter((c) => c.id !== id);
    render();
  }
}

function upsert(camera) {
  const i = state.cameras.findIndex((c) => c.id === camera.id);
  if (i >= 0) state.cameras[i] = camera; else state.cameras.push(camera);
  render();
}

// ---- players ----------------------------------------------------------------------------------
// Tiles off-screen don't stream: the observer gives a player its src only while visible.
const observer = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const player = e.target.querySelector("livelens-player");
    const id = e.target.dataset.id;
    if (e.isIntersecting) {
      if (player.getAttribute("src") !== id) player.setAttribute("src", id);
    } else if (player.hasAttribute("src")) {
      player.removeAttribute("src");
    }
  }
});

function makeTile(id) {
  const tile = document.createElement("div");
  tile.className = "tile";
  tile.dataset.id = id;
  tile.innerHTML = `<livelens-player></livelens-player><button class="label" type="button"></button><span class="marks"></span>
    <div class="status" role="status"><strong class="state"></strong> <span class="why"></span>
      <div class="publish" hidden></div></div><span class="stats"></span>
    <button class="fs" type="button">${FULLSCREEN_ICON}</button>`;
  // The name is the tile's control (a tile holding buttons cannot itself be one): Tab reaches
  // it, Enter opens the camera, f on it makes the tile fill the screen.
  const label = tile.querySelector(".label");
  label.textContent = id;
  label.setAttribute("aria-label", `Open camera ${id}`);
  // (tile.dataset.id: the single view's one tile changes camera)
  label.addEventListener("click", (e) => { e.stopPropagation(); select(tile.dataset.id, true); });
  tile.querySelector(".fs").setAttribute("aria-label", `Fullscreen: ${id}`);
  tile.querySelector(".fs").addEventListener("click", (e) => { e.stopPropagation(); fullscreen(tile); });
  tile.addEventListener("dblclick", () => select(tile.dataset.id, true));
  tile.addEventListener("click", (e) => {
    if (state.view === "grid" && !e.target.closest("button, a, input")) select(tile.dataset.id, true);
  });
  return tile;
}

// What a tile says about its camera, in the API's words, so a dead or frozen camera never
// passes for a live one: the state with its reason, the picture's age once it is over 2 s
// (dimmed), REC, motion, active alerts by name and a failing model.
const FROZEN_MS = 2000;
function paintTile(tile, c) {
  const age = c.stats?.last_frame_age_ms;
  const frozen = c.state === "live" && age != null && age > FROZEN_MS;
  const waiting = c.source === "publish:" && c.state === "idle";
  tile.dataset.state = frozen ? "frozen" : c.state;
  let words = waiting ? "waiting for a publisher" : c.state;
  if (frozen) words = `frozen: no picture for ${Math.round(age / 1000)} s`;
  tile.querySelector(".state").textContent = words;
  tile.querySelector(".why").textContent = c.state !== "live" && c.reason ? c.reason : "";
  const publish = tile.querySelector(".publish");
  publish.hidden = !waiting;
  // Keyed on the addresses too: /api/outputs may answer after the first paint.
  const publishKey = `${c.id} ${state.rtmp ?? ""} ${state.rtsp ?? ""}`;
  if (waiting && publish.dataset.for !== publishKey) {
    publish.dataset.for = publishKey;
    const urls = [`WHIP ${location.origin}/api/cameras/${encodeURIComponent(c.id)}/whip`];
    if (state.rtmp) urls.push(`RTMP ${state.rtmp}/live/${c.id}`);
    if (state.rtsp) urls.push(`RTSP ${state.rtsp}/${c.id}`);
    publish.replaceChildren(...urls.map((u) => Object.assign(document.createElement("div"), { textContent: u })));
    const use = Object.assign(document.createElement("button"), { type: "button", textContent: "Use my camera" });
    use.addEventListener("click", (e) => { e.stopPropagation(); state.selected = c.id; $("#webcam").click(); });
    publish.append(use);
  }
  const marks = [];
  if (c.recording?.state === "recording") marks.push(["rec", "REC", "recording"]);
  else if (c.recording?.state === "paused") marks.push(["rec-paused", "REC paused", c.recording.reason || "recording paused"]);
  const a = c.analysis_status || {};
  if (a.motion?.active) marks.push(["motion", "motion", "motion in the picture"]);
  for (const rule of a.alerts || []) if (rule.active) marks.push(["alert", rule.name, `alert ${rule.name} is active`]);
  for (const [what, m] of [["model", a.vlm], ["speech", a.asr], ...(a.alerts || []).map((r) => [`alert ${r.name}`, r])]) {
    if (m?.state === "error") marks.push(["model-error", `${what} failing`, `${what}: ${m.reason || "error"}`]);
  }
  const box = tile.querySelector(".marks");
  const key = JSON.stringify(marks);
  if (box.dataset.key !== key) {
    box.dataset.key = key;
    box.replaceChildren(...marks.map(([kind, text, title]) =>
      Object.assign(document.createElement("span"), { className: `mark ${kind}`, textContent: text, title })));
  }
}

function renderTiles() {
  const grid = $("#grid");
  grid.classList.toggle("single", state.view === "single");
  const wanted = state.view === "single" ? (state.selected ? [state.selected] : []) : state.cameras.map((c) => c.id);
  if (state.view === "single") {
    // One player for the single view, re-pointed on every switch: never two connections.
    let tile = grid.querySelector(".tile.single-tile");
    for (const t of [...grid.children]) if (t !== tile) { observer.unobserve(t); t.remove(); }
    state.tiles.clear();
    if (!wanted.length) { tile?.remove(); return; }
    if (!tile) {
      tile = makeTile(wanted[0]);
      tile.classList.add("single-tile");
      grid.append(tile);
    }
    tile.dataset.id = wanted[0];
    tile.querySelector(".label").textContent = wanted[0];
    tile.querySelector(".label").setAttribute("aria-label", `Camera ${wanted[0]}`);
    const player = tile.querySelector("livelens-player");
    // Hidden is not enough while a recording plays: the live stream would still download and sound.
    tile.hidden = state.replaying;
    if (state.replaying) player.removeAttribute("src");
    else if (player.getAttribute("src") !== wanted[0]) player.setAttribute("src", wanted[0]);
    state.tiles.set(wanted[0], tile);
    return;
  }
  grid.querySelector(".tile.single-tile")?.remove();
  for (const [id, tile] of state.tiles) {
    if (!wanted.includes(id)) { observer.unobserve(tile); tile.remove(); state.tiles.delete(id); }
  }
  for (const id of wanted) {
    if (!state.tiles.has(id)) {
      const tile = makeTile(id);
      grid.append(tile);
      state.tiles.set(id, tile);
      observer.observe(tile);
    }
  }
}

// ---- grid layout, fullscreen, the camera list -------------------------------------------------
const FULLSCREEN_ICON = `<svg width="16" height="16" viewBox="0 0 16 16" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2"><path d="M1 6V1h5M10 1h5v5M15 10v5h-5M6 15H1v-5"/></svg>`;
const LAYOUTS = { "1": [1, 1], "2x2": [2, 2], "3x3": [3, 3], "4x4": [4, 4], "1+5": [3, 3] };
state.layout = localStorage.getItem("livelens-layout") || "auto";

// Columns for `n` tiles in a `w`×`h` box that give each 16:9 picture the most area.
function autoColumns(n, w, h, gap) {
  let best = 1, bestArea = 0;
  for (let cols = 1; cols <= n; cols++) {
    const rows = Math.ceil(n / cols);
    const cw = (w - (cols - 1) * gap) / cols, ch = (h - (rows - 1) * gap) / rows;
    const pw = Math.min(cw, (ch * 16) / 9);
    if (pw * pw > bestArea) { bestArea = pw * pw; best = cols; }
  }
  return best;
}

// Grid view wider than a phone: the tiles fill the viewport (or the screen in fullscreen).
function layout() {
  const grid = $("#grid");
  const n = grid.querySelectorAll(".tile").length;
  const fill = state.view === "grid" && n > 0 && (innerWidth > 700 || document.fullscreenElement === grid);
  grid.classList.toggle("fill", fill);
  grid.dataset.layout = state.layout;
  if (!fill) { grid.style.gridTemplateColumns = grid.style.gridAutoRows = ""; return; }
  const gap = parseFloat(getComputedStyle(grid).rowGap) || 0;
  const full = document.fullscreenElement === grid;
  const box = grid.getBoundingClientRect();
  const padding = full ? 2 * parseFloat(getComputedStyle(grid).paddingTop) : 0;
  const w = box.width - padding;
  // Down to the viewport's bottom, less main's padding.
  const h = full ? innerHeight - padding : innerHeight - box.top - parseFloat(getComputedStyle($("main")).paddingBottom);
  let [cols, rows] = LAYOUTS[state.layout] || [0, 0];
  if (!cols) { cols = autoColumns(n, w, h, gap); rows = Math.ceil(n / cols); }
  grid.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
  grid.style.gridAutoRows = `${Math.max(120, (h - (rows - 1) * gap) / rows)}px`;
}
addEventListener("resize", layout);
document.addEventListener("fullscreenchange", layout);

function fullscreen(element) {
  if (document.fullscreenElement) { document.exitFullscreen(); return; }
  element.requestFullscreen?.().catch((e) => say(`Fullscreen was refused: ${e.message}`));
}
$("#fullscreen").addEventListener("click", () => {
  fullscreen(state.view === "single" ? $("#grid .tile") || $("#grid") : $("#grid"));
});
$("#layout").value = state.layout;
$("#layout").addEventListener("change", (e) => {
  state.layout = e.target.value;
  localStorage.setItem("livelens-layout", state.layout);
  layout();
});
function showList(shown) {
  document.body.classList.toggle("list-hidden", !shown);
  $("#list-toggle").setAttribute("aria-expanded", String(shown));
  localStorage.setItem("livelens-list", shown ? "shown" : "hidden");
  layout();
}
$("#list-toggle").addEventListener("click", () => showList(document.body.classList.contains("list-hidden")));
showList(localStorage.getItem("livelens-list") !== "hidden");

function render() {
  document.body.classList.toggle("single", state.view === "single");
  renderList();
  renderTiles();
  layout();
  for (const c of state.cameras) {
    const tile = state.tiles.get(c.id);
    if (tile) paintTile(tile, c);
  }
  for (const c of state.cameras) analysis.noteCamera(c);
  analysis.searchCameras(state.cameras);
  analysis.paintCaptions();
  const single = state.view === "single" ? state.cameras.find((c) => c.id === state.selected) : null;
  analysis.showCamera(single || null, api);
  if (single) recordings.mount($("#recordings"), single.id, api, replay); else recordings.unmount();
}

function replay(on) {
  state.replaying = on;
  renderTiles();
}

function select(id, single) {
  state.selected = id;
  if (single) state.view = "single";
  $("#view-toggle").textContent = state.view === "single" ? "Grid view" : "Single view";
  render();
}

$("#view-toggle").addEventListener("click", () => {
  state.view = state.view === "single" ? "grid" : "single";
  if (!state.selected && state.cameras.length) state.selected = state.cameras[0].id;
  $("#view-toggle").textContent = state.view === "single" ? "Grid view" : "Single view";
  render();
});

document.addEventListener("keydown", (e) => {
  if (document.querySelector("dialog[open]") || e.target.closest?.("input, textarea, select")) return;
  // f: fullscreen for the focused tile, else the single view's camera, else the grid.
  if (e.key === "f" && !e.ctrlKey && !e.metaKey && !e.altKey) {
    const focused = e.target.closest?.(".tile");
    fullscreen(focused || (state.view === "single" ? $("#grid .tile") : null) || $("#grid"));
    e.preventDefault();
  }
});

document.addEventListener("keydown", (e) => {
  if (state.view !== "single" || $("#editor").open || !state.cameras.length) return;
  // Arrows inside a field or the recording video are theirs (date/time segments, seeking).
  if (e.target.closest?.("input, textarea, select, video")) return;
  if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
  const ids = state.cameras.map((c) => c.id);
  const i = Math.max(0, ids.indexOf(state.selected));
  const next = ids[(i + (e.key === "ArrowRight" ? 1 : ids.length - 1)) % ids.length];
  select(next, true);
  e.preventDefault();
});

system.mount($("#system"), api);
$("#system-toggle").addEventListener("click", () => {
  const on = $("#system").hidden;
  system.show($("#system"), on);
  $("#system-toggle").setAttribute("aria-expanded", String(on));
  layout();
});

$("#stats-toggle").addEventListener("change", (e) => document.body.classList.toggle("show-stats", e.target.checked));
setInterval(() => {
  if (!document.body.classList.contains("show-stats")) return;
  for (const tile of $("#grid").querySelectorAll(".tile")) {
    const s = tile.querySelector("livelens-player").stats || {};
    tile.querySelector(".stats").textContent =
      `${s.mode || "-"} ${s.state || ""}\nfps ${s.fps ?? "-"}  latency ${s.latency != null ? s.latency.toFixed(2) + " s" : "-"}\n` +
      `buffered ${s.buffered ?? "-"} s  first frame ${s.firstFrameMs ?? "-"} ms`;
  }
}, 500);

// ---- add / edit -------------------------------------------------------------------------------
const form = $("#camera-form");

function clearErrors() {
  for (const el of form.querySelectorAll(".field-error")) el.textContent = "";
  $("#probe-result").textContent = "";
}

function showErrors(data) {
  clearErrors();
  const problems = data?.problems || [];
  for (const p of problems) {
    // The field's own place (analysis.vlm.model), else its section's (analysis), else the form's.
    const at = (f) => form.querySelector(`.field-error[data-field="${CSS.escape(f)}"]`);
    const el = at(p.field) || at(p.field.split(".")[0]) || at("");
    el.textContent = el.textContent ? `${el.textContent}; ${p.message}` : p.message;
  }
  if (!problems.length) form.querySelector('.field-error[data-field=""]').textContent = data?.error || "request failed";
}

// Whether a camera records: `record` is true or a table (`{keep = "30d"}`).
function records(c) {
  return !!c?.record && c.record !== false;
}

function openEditor(id) {
  clearErrors();
  form.reset();
  state.editing = id || null;
  $("#editor-title").textContent = id ? `Edit ${id}` : "Add camera";
  form.elements.id.readOnly = !!id;
  // The model is set here only when adding; an existing camera's model is edited in its
  // single view (one place for prompt and rules).
  $("#editor-model").hidden = !!id;
  $("#editor-model").open = false;
  if (id) {
    const c = state.cameras.find((x) => x.id === id);
    form.elements.id.value = id;
    form.elements.source.value = c?.source || "";
    form.elements.transport.value = c?.transport || "";
    form.elements.record.checked = records(c);
    form.elements.on_demand.checked = !!c?.on_demand;
  }
  $("#editor").showModal();
}

$("#add").addEventListener("click", () => openEditor(null));
$("#cancel").addEventListener("click", () => $("#editor").close());

$("#probe").addEventListener("click", async () => {
  clearErrors();
  $("#probe-result").textContent = "testing…";
  const body = { source: form.elements.source.value };
  if (form.elements.transport.value) body.transport = form.elements.transport.value;
  const r = await api("POST", "/api/probe", body);
  if (!r.ok) { $("#probe-result").textContent = ""; showErrors(r.data); return; }
  const lines = (r.data.tracks || []).map((t) =>
    `${t.media} ${t.encoding}${t.codec ? " " + t.codec : ""}${t.width ? ` ${t.width}×${t.height}` : ""}` +
    `${t.fps ? ` ${Math.round(t.fps)} fps` : ""}${t.sample_rate ? ` ${t.sample_rate} Hz` : ""}${t.ingested ? "" : " (not ingested)"}`);
  if (r.data.first_frame_ms != null) lines.push(`first frame after ${Math.round(r.data.first_frame_ms)} ms`);
  if (r.data.note) lines.push(r.data.note);
  $("#probe-result").textContent = lines.join("\n");
});

form.addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = form.elements;
  const body = { source: f.source.value, on_demand: f.on_demand.checked, record: f.record.checked };
  if (f.transport.value) body.transport = f.transport.value;
  let r;
  if (state.editing) {
    if (!f.transport.value) body.transport = null;
    // Only what was changed: `record = {keep = "30d"}` stays as it is while the box stays ticked.
    const c = state.cameras.find((x) => x.id === state.editing);
    if (f.record.checked === records(c)) delete body.record;
    if (f.on_demand.checked === !!c?.on_demand) delete body.on_demand;
    r = await api("PATCH", `/api/cameras/${encodeURIComponent(state.editing)}`, body);
  } else {
    body.id = f.id.value;
    // A model when any of its fields is filled (the API names what is missing).
    const vlm = { endpoint: f.vlm_endpoint.value.trim(), model: f.vlm_model.value.trim(), prompt: f.vlm_prompt.value.trim() };
    if (vlm.endpoint || vlm.model || vlm.prompt) {
      if (!vlm.prompt) delete vlm.prompt;
      body.analysis = { vlm };
    }
    r = await api("POST", "/api/cameras", body);
  }
  if (!r.ok) { showErrors(r.data); return; }
  $("#editor").close();
  say(saved(r.data.id));
  upsert(r.data);
});

$("#signin").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem("livelens-token", $("#token").value);
  $("#signin").classList.remove("visible");
  say("Token saved for this tab");
});

// ---- this browser's camera -----------------------------------------------------------------------
// Published over WHIP to the selected camera when its source is publish:, else to a camera
// "webcam", made for it on first use. The model's answers and transcript show beside it as for
// any camera (single view).
const webcam = new Webcam();
$("#webcam").addEventListener("click", async () => {
  const button = $("#webcam");
  if (webcam.live) {
    await webcam.stop();
    button.textContent = "Use my camera";
    say("This browser's camera is no longer published");
    return;
  }
  let id = state.cameras.find((c) => c.id === state.selected && c.source === "publish:")?.id;
  if (!id) {
    id = "webcam";
    if (!state.cameras.some((c) => c.id === id)) {
      const r = await api("POST", "/api/cameras", { id, source: "publish:" });
      if (!r.ok) { say(`Could not make camera ${id}: ${r.data?.error || r.status}`); return; }
      upsert(r.data);
    }
  }
  try {
    await webcam.start(id, sessionStorage.getItem("livelens-token"));
  } catch (e) {
    say(`Could not publish this browser's camera: ${e.message || e}`);
    return;
  }
  button.textContent = "Stop my camera";
  say(`This browser's camera is published to ${id}`);
  select(id, true);
});
window.livelensWebcam = webcam;

// ---- live updates -----------------------------------------------------------------------------
const events = new EventSource("/api/cameras/stream");
events.addEventListener("cameras", (e) => {
  state.cameras = JSON.parse(e.data);
  if (state.selected && !state.cameras.some((c) => c.id === state.selected)) state.selected = state.cameras[0]?.id || null;
  render();
});
analysis.start(api, () => state.cameras, upsert);
// A search result opens its camera the way a click on its name does.
analysis.startSearch(api, (id) => select(id, true));

// Where a change went: the config file (the default one when livelens runs without --config).
function saved(id, what = "Saved") {
  return state.configFile ? `${what} ${id} in ${state.configFile}` : `${what} ${id} (not kept after a restart: no config file)`;
}

// A config file that could not be applied (hot reload) is shown until it is fixed.
async function configStatus() {
  const r = await api("GET", "/api/config/status");
  if (r.ok) state.configFile = r.data.file;
  if (r.ok && !r.data.ok) {
    say(`The config file was not applied: ${r.data.problems.map((p) => (p.place ? `${p.place}: ` : "") + p.message).join("; ")}`);
  }
}
configStatus();

// Where the RTSP re-stream listens (not under this HTTP server): the cards offer its URLs.
async function outputs() {
  const r = await api("GET", "/api/outputs");
  const base = (scheme, server) => {
    const host = server.host ?? location.hostname;
    return `${scheme}://${host.includes(":") ? `[${host}]` : host}:${server.port}`;
  };
  if (r.data?.rtsp) state.rtsp = base("rtsp", r.data.rtsp);
  if (r.data?.rtmp) state.rtmp = base("rtmp", r.data.rtmp);
  renderList();
}
outputs();
setInterval(configStatus, 10000);
window.livelensUi = state;
