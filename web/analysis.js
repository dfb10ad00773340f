// Analysis in the UI: the latest model answer over each player, a timeline of the selected
// camera's events with thumbnails, a prompt editor that applies at once (the camera keeps
// streaming: analysis settings never restart it), the model's settings and alert rules, and a
// search over every camera's events in the header. Events arrive live over /api/events/stream.
// Model output is untrusted: it only ever reaches the page as text nodes, never as markup.
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
  if (e.kind === "summary") return e.data.text;
  if (e.kind === "alert") return `${e.data.name} ${e.data.state}${e.data.answer ? `: ${e.data.answer}` : ""}`;
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
  paintLiveAnswer();
  for (const tile of document.querySelectorAll("#grid .tile")) {
    let cap = tile.querySelector(".caption");
    if (!cap) { cap = document.createElement("span"); cap.className = "caption"; tile.append(cap); }
    const text = captions.get(tile.dataset.id) || "";
    if (cap.textContent !== text) cap.textContent = text;
    cap.hidden = !text;
  }
}

// The side panel's head: the shown camera's latest answer (or transcript) in large type and
// each alert rule's state, as the tiles' captions and marks have them.
let shownStatus = null;
function paintLiveAnswer() {
  const box = $("#live-answer");
  if (!box || !selected) return;
  const text = captions.get(selected) || "";
  const answer = box.querySelector(".answer");
  const s = shownStatus?.vlm;
  const words = text || (s?.state === "error" ? `model error: ${s.reason}` : shownStatus ? "no answer yet" : "no model set for this camera");
  if (answer.textContent !== words) answer.textContent = words;
  answer.classList.toggle("none", !text);
  const rules = shownStatus?.alerts || [];
  const list = box.querySelector(".alert-states");
  list.replaceChildren(...rules.map((r) => {
    const li = document.createElement("li");
    li.dataset.active = String(r.active);
    li.textContent = `${r.name}: ${r.active ? "ACTIVE" : r.state === "error" ? "error" : "inactive"}`;
    if (r.reason) li.title = r.reason;
    return li;
  }));
}

// Shows the panel for `camera` (single view) or hides it (null).
export async function showCamera(camera, api) {
  const panel = $("#analysis");
  if (!camera) { panel.hidden = true; selected = null; return; }
  panel.hidden = false;
  if (selected !== camera.id) {
    selected = camera.id;
    shownStatus = camera.analysis_status || null;
    paintLiveAnswer();
    $("#timeline").replaceChildren();
    const r = await api("GET", `/api/events?camera=${encodeURIComponent(camera.id)}&limit=30`);
    if (r.ok && selected === camera.id) $("#timeline").replaceChildren(...r.data.map(timelineItem));
    const vlm = camera.analysis?.vlm;
    $("#prompt").value = vlm?.prompt || "";
    $("#prompt-form").dataset.camera = camera.id;
    $("#prompt-status").textContent = vlm ? "" : "no model set for this camera: applying adds none";
    loadModelForm(api, camera.id);
  }
}

export function noteCamera(camera) {
  const text = camera.analysis_status?.vlm?.text;
  if (text && !captions.has(camera.id)) captions.set(camera.id, text);
  if (selected === camera.id) {
    shownStatus = camera.analysis_status || null;
    const s = camera.analysis_status?.vlm;
    if (s && s.state === "error") $("#prompt-status").textContent = `model error: ${s.reason}`;
  }
  if (formCamera === camera.id) paintAlertStates(camera);
}

// `saved(camera)` hands a PATCH's answer to app.js at once: the next save builds on it, not on
// the camera list as it was before (the live list comes only every second).
export function start(api, cameras, saved) {
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
  for (const kind of ["vlm", "motion", "transcript", "summary", "alert"]) stream.addEventListener(kind, onEvent);

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
    if (r.ok) saved(r.data);
    if (r.ok && formCamera === id) $("#model-form").elements.prompt.value = analysis.vlm.prompt;
  });

  startModelForm(api, cameras, saved);
}


// ---- model settings and alert rules ------------------------------------------------------------
// The form edits analysis.vlm and analysis.alert only: motion, speech and the vlm keys the form
// has no field for (enabled, image_width, …) go back as they were.

const RULE_FIELDS = [ // [key, label, placeholder]
  ["name", "Name", "person_at_door"],
  ["question", "Question", "Is there a person at the door?"],
  ["interval", "Interval", "5s"],
  ["min_duration", "Min duration (optional)", "10s"],
];

let formCamera = null; // the camera the form shows
let loadedVlm = null; // its vlm section as loaded

async function loadModelForm(api, id) {
  formCamera = id;
  clearProblems();
  $("#model-status").textContent = "";
  $("#model-test-result").textContent = "";
  const r = await api("GET", `/api/cameras/${encodeURIComponent(id)}`);
  if (formCamera !== id) return; // another camera was picked meanwhile
  if (r.ok) fillModelForm(r.data); else $("#model-status").textContent = r.data?.error || `HTTP ${r.status}`;
}

function fillModelForm(camera) {
  const f = $("#model-form").elements;
  const vlm = camera.analysis?.vlm;
  loadedVlm = vlm || null;
  // The key comes back as "***": sent back unchanged, the server keeps the stored one.
  for (const k of ["endpoint", "model", "api_key", "prompt", "interval"]) f[k].value = vlm?.[k] ?? "";
  $("#alert-rules").replaceChildren(...(camera.analysis?.alert || []).map(ruleRow));
  renumberRules();
  paintAlertStates(camera);
}

function labelled(text, input) {
  const label = document.createElement("label");
  if (input.type === "checkbox") label.append(input, ` ${text}`); else label.append(`${text} `, input);
  return label;
}

// A rule's error places are numbered by its position (analysis.alert[2].name), set by renumberRules.
function ruleError(key) {
  const el = document.createElement("div");
  el.className = "field-error";
  el.dataset.ruleKey = key;
  return el;
}

function ruleRow(rule = {}) {
  const row = document.createElement("div");
  row.className = "alert-rule";
  const head = document.createElement("div");
  head.className = "rule-head";
  const badge = Object.assign(document.createElement("span"), { className: "alert-state", textContent: "not saved" });
  // Statuses are by the saved name: a renamed rule shows its state again once saved.
  if (rule.name) { badge.dataset.name = rule.name; badge.textContent = "waiting"; }
  const remove = Object.assign(document.createElement("button"), { type: "button", className: "alert-remove", textContent: "Remove rule" });
  remove.addEventListener("click", () => { row.remove(); renumberRules(); });
  head.append(badge, remove);
  row.append(head);
  for (const [key, label, placeholder] of RULE_FIELDS) {
    const input = Object.assign(document.createElement("input"), { placeholder, value: rule[key] ?? "" });
    input.dataset.key = key;
    row.append(labelled(label, input), ruleError(key));
  }
  const motion = Object.assign(document.createElement("input"), { type: "checkbox", checked: !!rule.on_motion_only });
  motion.dataset.key = "on_motion_only";
  row.append(labelled("Only ask while there is motion", motion), ruleError("on_motion_only"), ruleError(""));
  return row;
}

function renumberRules() {
  [...$("#alert-rules").children].forEach((row, i) => {
    for (const el of row.querySelectorAll(".field-error")) {
      el.dataset.field = `analysis.alert[${i}]${el.dataset.ruleKey ? `.${el.dataset.ruleKey}` : ""}`;
    }
  });
}

function paintAlertStates(camera) {
  for (const s of camera.analysis_status?.alerts || []) {
    const badge = $("#alert-rules").querySelector(`.alert-state[data-name="${CSS.escape(s.name)}"]`);
    if (!badge) continue;
    badge.dataset.active = String(s.active);
    badge.textContent = s.active ? "active" : s.state === "error" || s.state === "waiting" ? s.state : "inactive";
    badge.title = [s.reason, s.text && `last answer: ${s.text}`, `${s.requests} requests`].filter(Boolean).join("\n");
  }
}

// The form's vlm section; null when both endpoint and model are cleared (no model).
function vlmFromForm() {
  const f = $("#model-form").elements;
  const value = (k) => f[k].value.trim();
  if (!value("endpoint") && !value("model")) return null;
  const vlm = { ...loadedVlm, endpoint: value("endpoint"), model: value("model") };
  // Empty means the server's default (no key, the default prompt or interval); the config has
  // no null, so the key goes rather than being sent empty.
  for (const k of ["api_key", "prompt", "interval"]) if (value(k)) vlm[k] = value(k); else delete vlm[k];
  return vlm;
}

function rulesFromForm() {
  return [...$("#alert-rules").children].map((row) => {
    const input = (k) => row.querySelector(`input[data-key="${k}"]`);
    const rule = { name: input("name").value.trim(), question: input("question").value.trim(),
      on_motion_only: input("on_motion_only").checked };
    for (const k of ["interval", "min_duration"]) if (input(k).value.trim()) rule[k] = input(k).value.trim();
    return rule;
  });
}

function clearProblems() {
  for (const el of $("#model-form").querySelectorAll(".field-error")) el.textContent = "";
}

function showProblems(data, status) {
  const form = $("#model-form");
  const problems = data?.problems?.length ? data.problems : [{ field: "analysis", message: data?.error || `HTTP ${status}` }];
  for (const p of problems) {
    // Beside its field, else under the nearest enclosing place (analysis.vlm.image_width has no
    // field, so it shows under analysis.vlm, named).
    let field = p.field || "analysis", el;
    while (!(el = form.querySelector(`.field-error[data-field="${CSS.escape(field)}"]`))) {
      const outer = field.replace(/(\.[^.[\]]*|\[\d+\])$/, "");
      field = outer && outer !== field ? outer : "analysis";
    }
    const text = field === p.field ? p.message : `${p.field}: ${p.message}`;
    el.textContent = el.textContent ? `${el.textContent}; ${text}` : text;
  }
}

function startModelForm(api, cameras, saved) {
  const form = $("#model-form");
  $("#alert-add").addEventListener("click", () => {
    const row = ruleRow();
    $("#alert-rules").append(row);
    renumberRules();
    row.querySelector("input").focus();
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const id = formCamera;
    if (!id) return;
    // The latest settings (live over SSE) as the base, so motion and speech go back as they are now.
    const analysis = structuredClone(cameras().find((c) => c.id === id)?.analysis || {});
    const vlm = vlmFromForm();
    if (vlm) analysis.vlm = vlm; else delete analysis.vlm;
    const rules = rulesFromForm();
    if (rules.length) analysis.alert = rules; else delete analysis.alert;
    clearProblems();
    $("#model-status").textContent = "saving…";
    const body = { analysis: Object.keys(analysis).length ? analysis : null }; // null: no analysis at all
    const r = await api("PATCH", `/api/cameras/${encodeURIComponent(id)}`, body);
    if (formCamera !== id) return;
    $("#model-status").textContent = r.ok ? "saved" : "";
    if (!r.ok) { showProblems(r.data, r.status); return; }
    saved(r.data);
    fillModelForm(r.data);
    $("#prompt").value = r.data.analysis?.vlm?.prompt || "";
  });

  $("#model-test").addEventListener("click", async (e) => {
    const id = formCamera, out = $("#model-test-result"), button = e.currentTarget;
    const show = (text, error) => { out.textContent = text; out.classList.toggle("error", error); };
    const vlm = vlmFromForm();
    if (!id || !vlm) { show("set an endpoint and a model first", true); return; }
    // The form as it is, unsaved: trying settings must not need changing the camera.
    const body = { vlm };
    const question = $("#model-question").value.trim();
    if (question) body.question = question;
    show("asking the model…", false);
    button.disabled = true;
    const r = await api("POST", `/api/cameras/${encodeURIComponent(id)}/analysis/test`, body);
    button.disabled = false;
    if (formCamera !== id) return;
    if (r.ok && r.data?.ok !== false) show(`${r.data.answer}  (${Math.round(r.data.latency_ms)} ms)`, false);
    else show([r.data?.error || `HTTP ${r.status}`, ...(r.data?.problems || []).map((p) => `${p.field}: ${p.message}`)].join("\n"), true);
  });
}

// ---- search ------------------------------------------------------------------------------------
// Over every camera's texts (descriptions, transcripts, summaries, alert answers), best first.

const SEARCH_DELAY_MS = 300; // one request per pause in typing, not one per key
let searchSeq = 0; // an answer to an older query than the latest is dropped

// `selectCamera(id)` shows a camera in the single view (app.js's select).
export function startSearch(api, selectCamera) {
  const input = $("#search"), list = $("#search-results");
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    // Clearing is at once: results for text no longer there must not linger for 300 ms.
    if (!input.value.trim()) search(api, selectCamera);
    else timer = setTimeout(() => search(api, selectCamera), SEARCH_DELAY_MS);
  });
  $("#search-camera").addEventListener("change", () => { clearTimeout(timer); search(api, selectCamera); });
  input.addEventListener("focus", () => { list.hidden = !list.children.length; });
  input.addEventListener("keydown", (e) => { if (e.key === "Escape") list.hidden = true; });
  // The list covers the page: a click elsewhere closes it (focusing the box opens it again).
  document.addEventListener("click", (e) => { if (!e.target.closest("#search-box")) list.hidden = true; });
}

// Keeps the camera filter's options in step with the cameras (app.js calls it on every change).
export function searchCameras(cameras) {
  const select = $("#search-camera");
  const ids = cameras.map((c) => c.id);
  if ([...select.options].slice(1).map((o) => o.value).join("\n") === ids.join("\n")) return;
  const value = select.value;
  select.replaceChildren(new Option("all cameras", ""), ...ids.map((id) => new Option(id, id)));
  select.value = ids.includes(value) ? value : "";
}

async function search(api, selectCamera) {
  const list = $("#search-results");
  const q = $("#search").value.trim();
  const seq = ++searchSeq;
  if (!q) { list.replaceChildren(); list.hidden = true; return; }
  const params = new URLSearchParams({ q, limit: "50" });
  if ($("#search-camera").value) params.set("camera", $("#search-camera").value);
  const r = await api("GET", `/api/events/search?${params}`);
  if (seq !== searchSeq) return;
  if (!r.ok) list.replaceChildren(searchMessage(r.data?.error || `search failed (HTTP ${r.status})`, true));
  else if (!r.data.length) list.replaceChildren(searchMessage("no matches"));
  else list.replaceChildren(...r.data.map((e) => searchResult(e, selectCamera)));
  list.hidden = false;
}

function searchMessage(text, error) {
  const li = escapeText(document.createElement("li"), text);
  li.className = error ? "search-message error" : "search-message";
  return li;
}

// Today's events by time, older ones with their date.
function when(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function searchResult(e, selectCamera) {
  const li = document.createElement("li");
  li.className = "search-result";
  li.dataset.id = e.id;
  li.dataset.camera = e.camera;
  li.tabIndex = 0;
  if (e.has_snapshot) {
    const img = Object.assign(document.createElement("img"), { loading: "lazy", src: `/api/events/${e.id}/snapshot.jpg` });
    img.alt = `${e.camera} at ${when(e.time_ms)}`;
    li.append(img);
  }
  const text = document.createElement("div");
  text.className = "search-text";
  const meta = document.createElement("div");
  meta.className = "search-meta";
  meta.append(escapeText(document.createElement("b"), e.camera), " · ",
    escapeText(document.createElement("time"), when(e.time_ms)), " · ",
    e.kind === "alert" ? `alert ${e.data.name}` : e.kind);
  const snippet = document.createElement("div");
  const runs = e.snippet?.length ? e.snippet : [{ text: e.data.text ?? e.data.answer ?? "", hit: false }];
  for (const run of runs) snippet.append(run.hit ? escapeText(document.createElement("mark"), run.text) : run.text);
  text.append(meta, snippet);
  li.append(text);

  const open = () => { $("#search-results").hidden = true; selectCamera(e.camera); };
  li.addEventListener("click", open);
  li.addEventListener("keydown", (ev) => { if (ev.key === "Enter" && ev.target === li) open(); });
  if (e.clip) {
    const play = Object.assign(document.createElement("button"), { type: "button", className: "search-play", textContent: "▶ play" });
    play.addEventListener("click", (ev) => {
      ev.stopPropagation();
      open();
      // Selecting mounted the camera's recordings panel, whose player takes the clip; else
      // (no panel) the browser opens the MP4.
      if (!playClip(e.clip)) window.open(asMp4(e.clip), "_blank");
    });
    li.append(play);
  }
  return li;
}
