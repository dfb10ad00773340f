// The system monitor (the header's System button): livelens's CPU and memory, the GPU, and per
// camera its bitrate, fps, viewers, other readers and its model's state, counts and answer
// times with a small chart. Polls GET /api/system every 2 s while open, nothing while closed.
const POLL_MS = 2000;
let timer = null;
let api = null;

const el = (tag, props = {}, ...children) => {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
};

function mb(bytes) {
  return bytes >= 0 ? `${(bytes / 1048576).toFixed(0)} MB` : "-";
}

function ms(v) {
  return v == null ? "-" : v >= 1000 ? `${(v / 1000).toFixed(2)} s` : `${Math.round(v)} ms`;
}

// The latest answer times as a line (an SVG with its figures in words for screen readers).
function chart(values) {
  const w = 120, h = 28;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", values.length ? `answer times, latest ${values.length}: ${values.slice(-5).map(ms).join(", ")}` : "no answers yet");
  if (values.length) {
    const max = Math.max(...values, 1);
    const step = values.length > 1 ? w / (values.length - 1) : 0;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", values.map((v, i) => `${(i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`).join(" "));
    line.setAttribute("fill", "none"); line.setAttribute("stroke", "currentColor"); line.setAttribute("stroke-width", "1.5");
    svg.append(line);
  }
  return svg;
}

function render(root, data) {
  const p = data.process;
  const gpu = data.gpu.available
    ? data.gpu.devices.map((d) => `${d.name}: ${d.utilization_percent ?? "-"} %, ${d.memory_used_mib ?? "-"} / ${d.memory_total_mib ?? "-"} MiB`).join("; ")
    : data.gpu.reason || "no GPU";
  const summary = root.querySelector(".sys-process");
  summary.replaceChildren(
    el("span", { className: "sys-cpu" }, `CPU ${p.cpu_percent == null ? "-" : p.cpu_percent.toFixed(1)} % of a core (${p.cores} cores)`),
    el("span", { className: "sys-rss" }, `memory ${mb(p.rss_bytes)}`),
    el("span", {}, `${p.threads ?? "-"} threads`),
    el("span", { className: "sys-gpu" }, `GPU: ${gpu}`),
  );
  const body = root.querySelector("tbody");
  body.replaceChildren(...data.cameras.map((c) => {
    const sub = c.subscribers || {};
    const also = ["recording", "analysis", "hls", "transcoder", "mjpeg", "snapshot"].filter((k) => sub[k]).map((k) => `${k} ${sub[k]}`).join(", ");
    const m = c.model;
    const lat = m?.latency_ms;
    const row = el("tr", {},
      el("th", { scope: "row" }, c.id),
      el("td", {}, c.state),
      el("td", {}, c.fps ? c.fps.toFixed(1) : "-"),
      el("td", {}, c.bitrate_kbps ? Math.round(c.bitrate_kbps).toString() : "-"),
      el("td", {}, String(c.viewers)),
      el("td", {}, also || "-"),
      el("td", { className: "sys-model", title: m?.reason || "" }, m ? (m.state === "error" ? `error: ${m.reason || ""}` : m.state) : "-"),
      el("td", { className: "sys-latency" }, lat ? `${ms(lat.p50)} / ${ms(lat.p95)}` : "-"),
      el("td", {}, lat ? chart(lat.recent) : ""),
      el("td", {}, m ? `${m.requests} / ${m.skipped} / ${m.errors}` : "-"),
    );
    row.dataset.id = c.id;
    return row;
  }));
  root.querySelector(".sys-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
}

async function poll(root) {
  const r = await api("GET", "/api/system");
  if (r.ok) render(root, r.data);
  else root.querySelector(".sys-updated").textContent = `could not read /api/system: ${r.data?.error || r.status}`;
}

export function mount(root, apiFn) {
  api = apiFn;
  root.innerHTML = `<h2>System</h2><p class="sys-process"></p>
    <table><caption class="sys-updated"></caption>
      <thead><tr><th scope="col">camera</th><th scope="col">state</th><th scope="col">fps</th><th scope="col">kbit/s</th>
        <th scope="col">viewers</th><th scope="col">also reading</th><th scope="col">model</th>
        <th scope="col">answer p50 / p95 (5 min)</th><th scope="col">answer times</th><th scope="col">requests / skipped / errors</th></tr></thead>
      <tbody></tbody></table>`;
}

export function show(root, on) {
  root.hidden = !on;
  clearInterval(timer);
  timer = null;
  if (on) {
    poll(root);
    timer = setInterval(() => poll(root), POLL_MS);
  }
}
