// The single view's recordings panel: the camera's Record switch and recorder state, a day
// timeline of recorded spans and events, scrub-to-play, back to live, and a range as MP4.
// One panel at a time: mount() for the shown camera (a no-op when it already shows it),
// unmount() when the single view goes. While a recording plays, `onReplay(true)` tells app.js
// to close the live player, whose place the recording video then takes.
// Playback URLs carry no token: reads are open, like snapshots and MJPEG; only changes need it.

const STATE_MS = 5000; // recorder state poll
const TODAY_MS = 30000; // today's timeline grows: reload it this often
const MAX_PIECE_S = 3600; // the longest piece asked for at once; "ended" asks for the next
const EVENT_LEAD_MS = 5000; // an event plays from a little before it

const TEMPLATE = `
  <div class="rec-player">
    <video id="rec-video" controls playsinline hidden></video>
    <button id="rec-live" type="button" hidden>Jump to live</button>
  </div>
  <div class="rec-row">
    <label><input type="checkbox" id="record-toggle"> Record</label>
    <span id="recording-state" role="status"></span>
    <label>Day <input type="date" id="rec-day"></label>
    <span id="rec-message" role="status"></span>
  </div>
  <div id="rec-timeline" title="Click or drag in a recorded span to play from there"></div>
  <div class="rec-row">
    <label>From <input type="time" id="rec-from" step="1" value="00:00:00"></label>
    <label>to <input type="time" id="rec-to" step="1" value="01:00:00"></label>
    <a id="rec-download" download>Download MP4</a>
  </div>`;

const pad = (n) => String(n).padStart(2, "0");
const hms = (ms) => { const d = new Date(ms); return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`; };
const ymd = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;

let cur = null; // the mounted panel: its camera, elements, timers, the day's spans, playback

export function mount(container, id, api, onReplay) {
  if (cur?.container === container && cur.id === id) return;
  unmount();
  container.innerHTML = TEMPLATE;
  container.hidden = false;
  const $ = (sel) => container.querySelector(sel);
  const cursor = Object.assign(document.createElement("div"), { className: "rec-cursor", hidden: true });
  const p = { container, id, api, onReplay, $, cursor, spans: [], dayStart: null, dayEnd: null, seq: 0,
    playStart: null, dragging: false, busy: false, timers: [] };
  cur = p;

  $("#rec-day").value = ymd(new Date());
  $("#rec-day").addEventListener("change", () => { loadDay(p); updateDownload(p); });
  for (const sel of ["#rec-from", "#rec-to"]) $(sel).addEventListener("input", () => updateDownload(p));
  $("#record-toggle").addEventListener("change", (e) => setRecord(p, e.target.checked));
  $("#rec-live").addEventListener("click", () => stopReplay(p));

  // Dragging only previews (one request per release, not per pixel); the release plays.
  const bar = $("#rec-timeline");
  bar.addEventListener("pointerdown", (e) => {
    if (p.dayStart === null || e.target.closest(".rec-event")) return;
    try { bar.setPointerCapture(e.pointerId); } catch { /* synthetic pointer */ }
    p.dragging = true;
    preview(p, timeAt(p, e));
  });
  bar.addEventListener("pointermove", (e) => { if (p.dragging) preview(p, timeAt(p, e)); });
  bar.addEventListener("pointerup", (e) => { if (p.dragging) { p.dragging = false; playAt(snap(p, timeAt(p, e))); } });
  bar.addEventListener("pointercancel", () => { p.dragging = false; });
  bar.addEventListener("click", (e) => {
    const mark = e.target.closest(".rec-event");
    if (mark) playEvent(p, Number(mark.dataset.time));
  });

  const video = $("#rec-video");
  video.addEventListener("timeupdate", () => { if (p.playStart !== null) showCursor(p, p.playStart + video.currentTime * 1000); });
  video.addEventListener("ended", () => {
    // Pieces stop at MAX_PIECE_S: carry on into the rest of the span.
    const next = p.playStart + video.duration * 1000;
    const span = spanAt(p, next);
    if (span && span.to - next > 1000) playAt(next);
  });
  video.addEventListener("error", () => { if (p.playStart !== null) say(p, `cannot play: ${video.error?.message || "media error"}`); });

  p.timers.push(setInterval(() => refreshState(p), STATE_MS));
  p.timers.push(setInterval(() => { if ($("#rec-day").value === ymd(new Date())) loadDay(p); }, TODAY_MS));
  refreshState(p);
  loadDay(p);
  updateDownload(p);
}

export function unmount() {
  const p = cur;
  if (!p) return;
  stopReplay(p);
  cur = null;
  p.timers.forEach(clearInterval);
  p.container.replaceChildren();
  p.container.hidden = true;
}

// Plays the shown camera's recording from `ms` (Unix ms) to the end of its span; false when no
// panel is mounted. Exported for scripts and tests.
export function playAt(ms) {
  const p = cur;
  if (!p) return false;
  const span = spanAt(p, ms);
  if (!span) { say(p, `no recording at ${hms(ms)}`); return true; }
  play(p, getUrl(p.id, ms, Math.min(MAX_PIECE_S, (span.to - ms) / 1000)), ms);
  return true;
}

// Plays an event's `clip` URL in the recording video; false when no panel is mounted (the
// caller's link then opens it).
export function playClip(url) {
  if (!cur) return false;
  const u = new URL(asMp4(url), location.href);
  play(cur, u.pathname + u.search, Date.parse(u.searchParams.get("start")));
  return true;
}

// Playback URLs default to fMP4; a <video src> or a download wants the progressive MP4.
export function asMp4(url) {
  const u = new URL(url, location.href);
  u.searchParams.set("format", "mp4");
  return u.pathname + u.search;
}

function getUrl(id, startMs, seconds, download) {
  const q = new URLSearchParams({ path: id, start: new Date(startMs).toISOString(),
    duration: String(Math.round(seconds * 1000) / 1000), format: "mp4" });
  if (download) q.set("download", "1");
  return `/api/playback/get?${q}`;
}

function say(p, text) { p.$("#rec-message").textContent = text || ""; }

// ---- recording switch and state ----------------------------------------------------------------
async function refreshState(p) {
  if (p.busy) return;
  const r = await p.api("GET", `/api/cameras/${encodeURIComponent(p.id)}`);
  // A poll that answers during a switch would flip the box back: the switch re-polls after.
  if (cur === p && !p.busy && r.ok) showState(p, r.data);
}

function showState(p, camera) {
  p.$("#record-toggle").checked = !!camera.record;
  const rec = camera.recording || { state: "off", reason: null };
  const el = p.$("#recording-state");
  el.dataset.state = rec.state;
  el.textContent = rec.state + (rec.reason ? `: ${rec.reason}` : "");
}

async function setRecord(p, on) {
  p.busy = true;
  const r = await p.api("PATCH", `/api/cameras/${encodeURIComponent(p.id)}`, { record: on });
  p.busy = false;
  if (cur !== p) return;
  if (!r.ok) {
    p.$("#record-toggle").checked = !on;
    const problems = (r.data?.problems || []).map((x) => (x.place ? `${x.place}: ` : "") + x.message);
    say(p, [r.data?.error || `HTTP ${r.status}`, ...problems].join(" — "));
  } else {
    say(p, "");
  }
  refreshState(p);
}

// ---- day timeline ------------------------------------------------------------------------------
async function loadDay(p) {
  const [y, m, d] = p.$("#rec-day").value.split("-").map(Number);
  if (!y) return;
  // Local midnight to midnight: 23 or 25 hours on a DST change.
  const start = new Date(y, m - 1, d).getTime(), end = new Date(y, m - 1, d + 1).getTime();
  const seq = ++p.seq; // a slow answer for a day no longer picked is dropped
  const iso = (ms) => encodeURIComponent(new Date(ms).toISOString());
  const id = encodeURIComponent(p.id);
  const [list, events] = await Promise.all([
    p.api("GET", `/api/playback/list?path=${id}&start=${iso(start)}&end=${iso(end)}`),
    p.api("GET", `/api/events?camera=${id}&since=${start}&until=${end}&limit=500`),
  ]);
  if (cur !== p || seq !== p.seq) return;
  if (!list.ok) say(p, `recordings: ${list.data?.error || `HTTP ${list.status}`}`);
  p.dayStart = start;
  p.dayEnd = end;
  p.spans = (list.ok ? list.data : []).map((s) => {
    const from = Date.parse(s.start);
    return { ...s, from, to: from + s.duration * 1000 };
  });
  draw(p, events.ok ? events.data : []);
}

const pct = (p, ms) => `${((ms - p.dayStart) / (p.dayEnd - p.dayStart)) * 100}%`;

function div(className, left) {
  const el = document.createElement("div");
  el.className = className;
  el.style.left = left;
  return el;
}

function draw(p, events) {
  const els = [];
  for (let t = p.dayStart, i = 0; t < p.dayEnd; t += 3600000, i++) {
    const tick = div("rec-hour", pct(p, t));
    if (i % 3 === 0) tick.dataset.label = pad(new Date(t).getHours()); // every hour crowds a phone
    els.push(tick);
  }
  for (const s of p.spans) {
    const from = Math.max(s.from, p.dayStart), to = Math.min(s.to, p.dayEnd);
    if (to <= from) continue;
    const el = div("rec-span", pct(p, from));
    el.style.width = pct(p, p.dayStart + to - from);
    el.dataset.start = s.start;
    el.dataset.duration = s.duration;
    el.title = `recorded ${hms(s.from)}–${hms(s.to)}`;
    els.push(el);
  }
  for (const e of events) {
    const el = div("rec-event", pct(p, e.time_ms));
    el.dataset.kind = e.kind;
    el.dataset.time = e.time_ms;
    el.title = `${hms(e.time_ms)} ${e.kind}`;
    els.push(el);
  }
  p.$("#rec-timeline").replaceChildren(...els, p.cursor);
  if (p.playStart !== null) showCursor(p, p.playStart + p.$("#rec-video").currentTime * 1000);
}

function timeAt(p, e) {
  const r = p.$("#rec-timeline").getBoundingClientRect();
  const f = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
  return Math.round(p.dayStart + f * (p.dayEnd - p.dayStart));
}

function showCursor(p, ms) {
  const inside = p.dayStart !== null && ms >= p.dayStart && ms < p.dayEnd;
  p.cursor.hidden = !inside;
  if (inside) p.cursor.style.left = pct(p, ms);
}

function preview(p, ms) {
  showCursor(p, ms);
  say(p, `${hms(ms)}${spanAt(p, ms) ? "" : " (not recorded)"}`);
}

const spanAt = (p, ms) => p.spans.find((s) => ms >= s.from && ms < s.to);

// A pixel of a day is ~90 s, so a short span is hard to hit: a press within a few pixels of
// one plays it (from its start when the press was before it, else from the press).
function snap(p, ms) {
  if (spanAt(p, ms)) return ms;
  const px = (p.dayEnd - p.dayStart) / Math.max(1, p.$("#rec-timeline").getBoundingClientRect().width);
  let best = null;
  for (const s of p.spans) {
    const d = ms < s.from ? s.from - ms : ms - (s.to - 1);
    if (d <= 4 * px && (!best || d < best.d)) best = { d, at: ms < s.from ? s.from : Math.max(s.from, s.to - 10000) };
  }
  return best ? best.at : ms;
}

function playEvent(p, ms) {
  // From a little before the event, but not from before its span's start.
  const span = spanAt(p, ms - EVENT_LEAD_MS) || spanAt(p, ms);
  playAt(span ? Math.max(span.from, ms - EVENT_LEAD_MS) : ms);
}

// ---- playback ----------------------------------------------------------------------------------
function play(p, url, startMs) {
  const video = p.$("#rec-video");
  p.playStart = startMs;
  video.src = url;
  video.hidden = false;
  p.$("#rec-live").hidden = false;
  video.play().catch(() => {});
  say(p, `playing from ${hms(startMs)}`);
  p.onReplay(true);
}

function stopReplay(p) {
  if (p.playStart === null) return;
  p.playStart = null;
  const video = p.$("#rec-video");
  video.pause();
  video.removeAttribute("src");
  video.load(); // ends the download too
  video.hidden = true;
  p.$("#rec-live").hidden = true;
  p.cursor.hidden = true;
  say(p, "");
  p.onReplay(false);
}

// ---- download ----------------------------------------------------------------------------------
function updateDownload(p) {
  const [y, m, d] = p.$("#rec-day").value.split("-").map(Number);
  const at = (sel) => {
    const [h, min, s = 0] = p.$(sel).value.split(":").map(Number);
    return new Date(y, m - 1, d, h, min, s).getTime();
  };
  const from = at("#rec-from"), to = at("#rec-to");
  const link = p.$("#rec-download");
  const ok = to > from; // false too for an empty input (NaN)
  if (ok) link.href = getUrl(p.id, from, (to - from) / 1000, true); else link.removeAttribute("href");
  link.setAttribute("aria-disabled", String(!ok));
  link.title = ok ? `${hms(from)}–${hms(to)} as one MP4` : "“to” must be after “from”";
}
