// Analysis in the UI: the latest model answer over each player, a timeline of the selected
// camera's events with thumbnails, and a prompt editor that applies at once (the camera keeps
// streaming: analysis settings never restart it). Events arrive live over /api/events/stream.
import { asMp4, playClip } from "/recordings.js";

const $ = (sel) => document.querySelector(sel);
const captions = new Map(); // camera id → latest model answer
let selected = null;

function escapeText(el, text) { el.textContent = text; return el; }

function time(ms) { return new Date(ms).toLocaleTimeString(); }

function describe(e) {
  if (e.kind === "vlm") return e.data.text;
  if (e.kind === "motion") return e.data.state === "start" ? `motion (${Math.round(e.data.area * 100)} % of the picture)` : "motion ended";
  if (e.kind === "transcript") return `“${e.data.text}”`;
  return e.kind;
}

function timelineItem(e) {
  const li = document.createElement("li");
  li.dataset.kind = e.kind;
  if (e.has_snapshot) {
    const img = document.createElement("img");
    img.loading = "lazy";
    img.alt = `${e.kind} at ${time(e.time_ms)}`;
    img.src = `/api/events/${e.id}/snapshot.jpg`;
    li.append(img);
  }
  const text = document.createElement("div");
  text.append(escapeText(document.createElement("time"), time(e.time_ms)), " ",
    escapeText(document.createElement("b"), e.kind), " ", describe(e));
  if (e.clip) {
    const a = Object.assign(document.createElement("a"),
      { className: "clip", href: asMp4(e.clip), target: "_blank", textContent: "▶ clip" });
    // In the recordings panel's player when it is shown; else the browser opens the MP4.
    a.addEventListener("click", (ev) => { if (playClip(e.clip)) ev.preventDefault(); });
    text.append(" ", a);
  }
  li.append(text);
  return li;
}

// Puts the latest answer over every tile of its camera.
export function paintCaptions() {
  for (const tile of document.querySelectorAll("#grid .tile")) {
    let cap = tile.querySelector(".caption");
    if (!cap) { cap = document.createElement("span"); cap.className = "caption"; tile.append(cap); }
    const text = captions.get(tile.dataset.id) || "";
    if (cap.textContent !== text) cap.textContent = text;
    cap.hidden = !text;
  }
}

// Shows the panel for `camera` (single view) or hides it (null).
export async function showCamera(camera, api) {
  const panel = $("#analysis");
  if (!camera) { panel.hidden = true; selected = null; return; }
  panel.hidden = false;
  if (selected !== camera.id) {
    selected = camera.id;
    $("#timeline").replaceChildren();
    const r = await api("GET", `/api/events?camera=${encodeURIComponent(camera.id)}&limit=30`);
    if (r.ok && selected === camera.id) $("#timeline").replaceChildren(...r.data.map(timelineItem));
    const vlm = camera.analysis?.vlm;
    $("#prompt").value = vlm?.prompt || "";
    $("#prompt-form").dataset.camera = camera.id;
    $("#prompt-status").textContent = vlm ? "" : "no model set for this camera: applying adds none";
  }
}

export function noteCamera(camera) {
  const text = camera.analysis_status?.vlm?.text;
  if (text && !captions.has(camera.id)) captions.set(camera.id, text);
  if (selected === camera.id) {
    const s = camera.analysis_status?.vlm;
    if (s && s.state === "error") $("#prompt-status").textContent = `model error: ${s.reason}`;
  }
}

export function start(api, cameras) {
  const stream = new EventSource("/api/events/stream");
  const onEvent = (e) => {
    const event = JSON.parse(e.data);
    if (event.kind === "vlm") { captions.set(event.camera, event.data.text); paintCaptions(); }
    // Speech shows as a live caption under the picture, like subtitles.
    if (event.kind === "transcript") { captions.set(event.camera, `“${event.data.text}”`); paintCaptions(); }
    if (event.camera === selected) {
      const list = $("#timeline");
      list.prepend(timelineItem(event));
      while (list.children.length > 50) list.lastChild.remove();
    }
  };
  for (const kind of ["vlm", "motion", "transcript"]) stream.addEventListener(kind, onEvent);

  $("#prompt-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = e.target.dataset.camera;
    const camera = cameras().find((c) => c.id === id);
    if (!camera?.analysis?.vlm) { $("#prompt-status").textContent = "this camera has no model configured"; return; }
    // The whole analysis object goes back; the masked key ("***") is kept by the server.
    const analysis = structuredClone(camera.analysis);
    analysis.vlm.prompt = $("#prompt").value;
    const r = await api("PATCH", `/api/cameras/${encodeURIComponent(id)}`, { analysis });
    $("#prompt-status").textContent = r.ok ? "applied" : (r.data?.problems?.map((p) => `${p.field}: ${p.message}`).join("; ") || r.data?.error);
  });
}
