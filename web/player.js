// <livelens-player src="CAMERA_ID"> — plays a livelens camera in the browser.
//
// Transports, tried in the order of the `mode` attribute (default "webrtc,mse"):
// - webrtc: WHEP (POST /api/cameras/{id}/whep); no frame within 4 s, or a failed connection,
//   falls back to the next mode;
// - mse: MSE over WebSocket (/api/cameras/{id}/mse), go2rtc's protocol: a JSON {"type":"mse"}
//   message with the MIME type, then the init segment and one fMP4 fragment per frame;
// - hls: the browser's own (LL-)HLS player (/api/cameras/{id}/hls/index.m3u8) — Safari, iOS,
//   recent Chromium; a browser without one, or no frame within 15 s, falls back to the next mode.
//
// Low latency (MSE): the player keeps LIVE_TARGET of buffer ahead of what it shows. A little
// more (a burst after a network hiccup, the camera's cached GOP at the start) is played off
// faster, playbackRate rising with the excess up to 1.5; more than LIVE_FAR behind, a gap in the
// buffer (frames the server dropped), or a stall with data ahead: it seeks to the live edge,
// never backwards. The buffer behind is trimmed to a few seconds, so memory stays flat.
// Lifecycle: removing the element or changing `src` releases everything — socket closed with its
// handlers nulled, SourceBuffer listeners removed, MediaSource ended, object URL revoked, timers
// cleared, the video element's src removed; for WebRTC every pc.on* handler nulled, tracks
// stopped, srcObject cleared, pc.close() and a WHEP DELETE — so switching cameras 1000 times
// leaks nothing.
//
// Sound: the player starts muted (browsers only autoplay muted video); when the stream has audio a
// speaker button appears in its top-right corner, and `player.muted` can be set from script too.
//
// `player.stats`: {mode, fps, buffered, latency, firstFrameMs, frames, drops, state}.
//   latency (seconds) is read from the testsrc time strip in the decoded picture, when present.

const STRIP_MARKER = 0b10110010;
const KEEP_SECONDS = 6;
// Seconds of buffer MSE keeps ahead of the playhead: a frame or two of jitter, no more.
const LIVE_TARGET = 0.1;
// Further behind the live edge than this, playing faster would take too long: seek.
const LIVE_FAR = 0.8;
const TICK_MS = 100;
const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 10000;
const WEBRTC_FIRST_FRAME_MS = 4000;
const HLS_FIRST_FRAME_MS = 15000;

function supportedCodecs() {
  const candidates = [
    "avc1.640029", "avc1.64002A", "avc1.640033", "avc1.4D401F", "avc1.42E01E",
    "hvc1.1.6.L153.B0", "hev1.1.6.L153.B0", "mp4a.40.2", "mp4a.40.5", "opus",
  ];
  const MS = window.ManagedMediaSource || window.MediaSource;
  return candidates.filter((c) => MS && MS.isTypeSupported(`video/mp4; codecs="${c}"`)).join(",");
}

/// Reads the capture time (Unix ms) from the time strip of the video's current picture.
function readTimeStrip(video, canvas) {
  const vw = video.videoWidth, vh = video.videoHeight;
  if (!vw || !vh) return null;
  const stripH = Math.max(4, Math.floor(vh / 45));
  canvas.width = 256; canvas.height = 4;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  // Only the 64 blocks of the strip: each becomes 4 pixels wide.
  ctx.drawImage(video, 0, 0, Math.floor(vw / 64) * 64, stripH, 0, 0, 256, 4);
  const px = ctx.getImageData(0, 0, 256, 4).data;
  let hi = 0, lo = 0; // 64 bits as two 32-bit halves
  for (let i = 0; i < 64; i++) {
    const o = (2 * 256 + i * 4 + 2) * 4;
    const luma = 0.299 * px[o] + 0.587 * px[o + 1] + 0.114 * px[o + 2];
    const bit = luma >= 128 ? 1 : 0;
    if (i < 32) hi = ((hi << 1) | bit) >>> 0; else lo = ((lo << 1) | bit) >>> 0;
  }
  const marker = hi >>> 24;
  // Timestamp: bits 8..55 = low 24 bits of hi, then the top 24 bits of lo.
  const ts = (hi & 0xffffff) * 2 ** 24 + (lo >>> 8);
  let check = 0;
  for (let s = 40; s >= 0; s -= 8) check ^= Math.floor(ts / 2 ** s) & 0xff;
  if (marker !== STRIP_MARKER || check !== (lo & 0xff)) return null;
  return ts;
}

class LivelensPlayer extends HTMLElement {
  static get observedAttributes() { return ["src"]; }

  constructor() {
    super();
    this.video = document.createElement("video");
    this.video.muted = true;
    this.video.autoplay = true;
    this.video.playsInline = true;
    this.video.style.width = "100%";
    this.video.style.height = "100%";
    this.video.style.background = "#000";
    this.soundButton = document.createElement("button");
    this.soundButton.type = "button";
    this.soundButton.className = "sound";
    this.soundButton.hidden = true;
    this.soundButton.style.cssText = "position:absolute;top:.3rem;right:.4rem;border:0;border-radius:.3rem;" +
      "background:rgba(0,0,0,.55);color:#fff;font-size:1rem;line-height:1;padding:.25rem .4rem;cursor:pointer";
    this.soundButton.addEventListener("click", (e) => { e.stopPropagation(); this.muted = !this.muted; });
    this.paintSound();
    this.canvas = document.createElement("canvas");
    this.stats = this.emptyStats();
    this.session = null;
    this.retryMs = RECONNECT_MIN_MS;
    this.retryTimer = null;
  }

  emptyStats() {
    return { mode: "mse", state: "idle", fps: 0, buffered: 0, latency: null, firstFrameMs: null,
      frames: 0, drops: 0, error: null };
  }

  connectedCallback() {
    if (!this.style.position) this.style.position = "relative";
    if (!this.video.parentNode) this.append(this.video, this.soundButton);
    // A closed or navigated-away tab runs no cleanup of its own: end the server's session
    // now (the WHEP DELETE goes out with keepalive), instead of when ICE times out ~20 s later.
    // A page restored from the back-forward cache starts again.
    this.onPageHide ??= () => this.stop();
    this.onPageShow ??= (e) => { if (e.persisted && this.isConnected) this.start(); };
    window.addEventListener("pagehide", this.onPageHide);
    window.addEventListener("pageshow", this.onPageShow);
    this.start();
  }

  get muted() { return this.video.muted; }

  set muted(value) {
    this.video.muted = !!value;
    if (!value) this.video.play().catch(() => {});
    this.paintSound();
  }

  paintSound() {
    const muted = this.video.muted;
    this.soundButton.textContent = muted ? "\u{1F507}" : "\u{1F50A}";
    this.soundButton.title = muted ? "Unmute" : "Mute";
    this.soundButton.setAttribute("aria-label", this.soundButton.title);
  }

  // The speaker button shows only for a stream that has sound.
  showSound(hasAudio) {
    this.soundButton.hidden = !hasAudio;
  }

  disconnectedCallback() {
    window.removeEventListener("pagehide", this.onPageHide);
    window.removeEventListener("pageshow", this.onPageShow);
    this.stop();
  }

  attributeChangedCallback(name, oldValue, newValue) {
    if (name === "src" && oldValue !== newValue && this.isConnected) {
      this.stop();
      this.start();
    }
  }

  start() {
    const id = this.getAttribute("src");
    if (!id) return;
    this.stats = this.emptyStats();
    this.showSound(false);
    this.modes = (this.getAttribute("mode") || "webrtc,mse").split(",").map((m) => m.trim()).filter(Boolean);
    this.modeIndex = 0;
    this.startMode(id);
  }

  // One session: the transport of the current mode plus the timers and callbacks every mode
  // shares (frame counting, latency, live-edge keeping).
  startMode(id) {
    const wanted = this.modes[this.modeIndex];
    const mode = wanted === "webrtc" || wanted === "hls" ? wanted : "mse";
    this.stats.mode = mode;
    this.stats.state = "connecting";
    const s = { mode, ws: null, pc: null, whep: null, ms: null, sb: null, url: null, queue: [], timers: [],
      frameCb: null, listeners: [], closed: false, started: performance.now(), frameCounts: [], framesAtStart: this.stats.frames };
    this.session = s;
    s.timers.push(setInterval(() => this.tick(s), TICK_MS));
    const onFrame = () => {
      if (s.closed) return;
      if (this.stats.firstFrameMs === null) this.stats.firstFrameMs = Math.round(performance.now() - s.started);
      this.stats.frames++;
      this.stats.state = "playing";
      this.retryMs = RECONNECT_MIN_MS;
      s.frameCb = this.video.requestVideoFrameCallback(onFrame);
    };
    s.frameCb = this.video.requestVideoFrameCallback(onFrame);
    if (mode === "webrtc") {
      this.startWebRTC(s, id);
    } else if (mode === "hls") {
      this.startHLS(s, id);
    } else {
      this.startMSE(s, id);
    }
  }

  startMSE(s, id) {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const base = this.getAttribute("server") || `${proto}//${location.host}`;
    const url = `${base}/api/cameras/${encodeURIComponent(id)}/mse?codecs=${encodeURIComponent(supportedCodecs())}`;
    s.ws = new WebSocket(url);
    s.ws.binaryType = "arraybuffer";
    s.ws.onopen = () => { this.stats.state = "waiting"; };
    s.ws.onmessage = (ev) => this.onMessage(s, ev);
    s.ws.onclose = (ev) => {
      if (s.closed) return;
      this.stats.state = "reconnecting";
      if (ev.reason) this.stats.error = ev.reason;
      this.scheduleReconnect();
    };
    s.ws.onerror = () => {};
    const onWaiting = () => this.jumpToLiveEdge();
    this.video.addEventListener("waiting", onWaiting);
    s.listeners.push([this.video, "waiting", onWaiting]);
  }

  // The browser's native HLS; the server keeps the live edge (PART-HOLD-BACK), the browser plays.
  async startHLS(s, id) {
    if (!this.video.canPlayType("application/vnd.apple.mpegurl")) {
      // Let startMode finish setting up the session before falling back from it.
      s.timers.push(setTimeout(() => this.fallback(s, "HLS: this browser has no native player"), 0));
      return;
    }
    const http = this.getAttribute("server")?.replace(/^ws/, "http") || "";
    const base = `${http}/api/cameras/${encodeURIComponent(id)}/hls`;
    // The timer first: the waits below must not outlast it unnoticed.
    s.timers.push(setTimeout(() => {
      if (!s.closed && this.stats.frames === s.framesAtStart) this.fallback(s, "HLS: no frame in time");
    }, HLS_FIRST_FRAME_MS));
    // Chromium's player starts three segments back from the live edge and fails on a playlist
    // with fewer: a camera's muxer that has just started is waited for (a blocking reload).
    try {
      const text = await (await fetch(`${base}/stream.m3u8`)).text();
      const first = Number((text.match(/#EXT-X-MEDIA-SEQUENCE:(\d+)/) || [])[1] || 0);
      const complete = (text.match(/#EXTINF:/g) || []).length;
      if (complete < 3 && !s.closed) await fetch(`${base}/stream.m3u8?_HLS_msn=${first + 2}`);
    } catch (e) {
      this.fallback(s, `HLS: ${e.message || e}`);
      return;
    }
    if (s.closed) return;
    this.video.src = `${base}/index.m3u8`;
    this.video.play().catch(() => {});
    this.stats.state = "waiting";
    const onError = () => this.fallback(s, "HLS: the browser could not play the stream");
    this.video.addEventListener("error", onError);
    s.listeners.push([this.video, "error", onError]);
  }

  // WebRTC over WHEP; no frame within WEBRTC_FIRST_FRAME_MS (UDP blocked, no codec) falls back.
  async startWebRTC(s, id) {
    const http = this.getAttribute("server")?.replace(/^ws/, "http") || "";
    const pc = new RTCPeerConnection();
    s.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });
    pc.ontrack = (ev) => {
      if (s.closed) return;
      if (!this.video.srcObject) this.video.srcObject = new MediaStream();
      this.video.srcObject.addTrack(ev.track);
      this.video.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (!s.closed && (pc.connectionState === "failed" || pc.connectionState === "closed")) {
        this.fallback(s, `WebRTC ${pc.connectionState}`);
      }
    };
    s.timers.push(setTimeout(() => {
      if (!s.closed && this.stats.frames === s.framesAtStart) this.fallback(s, "WebRTC: no frame in time");
    }, WEBRTC_FIRST_FRAME_MS));
    try {
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      if (s.closed) return;
      const r = await fetch(`${http}/api/cameras/${encodeURIComponent(id)}/whep`, {
        method: "POST", headers: { "content-type": "application/sdp" }, body: offer.sdp,
      });
      const whep = r.status === 201 ? new URL(r.headers.get("location"), r.url).href : null;
      if (s.closed) {
        // Switched away while the offer was in flight: end the session it created.
        if (whep) fetch(whep, { method: "DELETE", keepalive: true }).catch(() => {});
        return;
      }
      if (!whep) throw new Error(`WHEP ${r.status}: ${await r.text()}`);
      s.whep = whep;
      const answer = await r.text();
      if (s.closed) return;
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      this.stats.state = "waiting";
    } catch (e) {
      this.fallback(s, String(e.message || e));
    }
  }

  fallback(s, reason) {
    if (s.closed || this.session !== s) return;
    this.stats.error = reason;
    if (this.modeIndex + 1 < this.modes.length) {
      this.releaseSession();
      this.modeIndex++;
      this.startMode(this.getAttribute("src"));
    } else {
      this.scheduleReconnect();
    }
  }

  scheduleReconnect() {
    this.releaseSession();
    clearTimeout(this.retryTimer);
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
    this.retryTimer = setTimeout(() => { this.retryTimer = null; if (this.isConnected) this.start(); }, delay);
  }

  onMessage(s, ev) {
    if (s.closed) return;
    if (typeof ev.data === "string") {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === "mse") this.newMediaSource(s, msg.value);
      else if (msg.type === "drop") this.stats.drops += msg.frames;
      else if (msg.type === "error") { this.stats.error = msg.value; this.stats.state = "error"; }
      return;
    }
    s.queue.push(ev.data);
    this.pump(s);
  }

  // A new codec description: a fresh MediaSource and SourceBuffer, no page reload.
  newMediaSource(s, mime) {
    this.releaseMedia(s);
    this.showSound(/mp4a|opus/.test(mime));
    s.queue = [];
    const MS = window.ManagedMediaSource || window.MediaSource;
    const ms = new MS();
    s.ms = ms;
    const onOpen = () => {
      if (s.closed || s.ms !== ms) return;
      try {
        s.sb = ms.addSourceBuffer(mime);
      } catch (e) {
        this.stats.error = `cannot play ${mime}: ${e.message}`;
        this.stats.state = "error";
        return;
      }
      s.sb.mode = "segments";
      const onUpdateEnd = () => this.pump(s);
      s.sb.addEventListener("updateend", onUpdateEnd);
      s.listeners.push([s.sb, "updateend", onUpdateEnd]);
      this.pump(s);
    };
    ms.addEventListener("sourceopen", onOpen, { once: true });
    s.listeners.push([ms, "sourceopen", onOpen]);
    if (window.ManagedMediaSource && ms instanceof window.ManagedMediaSource) {
      this.video.disableRemotePlayback = true;
      this.video.srcObject = ms;
    } else {
      s.url = URL.createObjectURL(ms);
      this.video.src = s.url;
    }
    this.video.play().catch(() => {});
  }

  pump(s) {
    const sb = s.sb;
    if (!sb || sb.updating || s.closed) return;
    if (s.queue.length) {
      // Append everything that arrived while the buffer was busy in one go.
      const total = s.queue.reduce((n, b) => n + b.byteLength, 0);
      const data = new Uint8Array(total);
      let o = 0;
      for (const b of s.queue) { data.set(new Uint8Array(b), o); o += b.byteLength; }
      s.queue = [];
      try { sb.appendBuffer(data); } catch (e) { this.stats.error = e.message; }
      return;
    }
    // Trim what is far behind the live edge, so memory stays flat.
    const b = sb.buffered;
    if (b.length && this.video.currentTime - b.start(0) > KEEP_SECONDS * 2) {
      try { sb.remove(b.start(0), this.video.currentTime - KEEP_SECONDS); } catch {}
    }
  }

  // The live edge: LIVE_TARGET before the end of the newest buffered range, inside it.
  liveEdge() {
    const b = this.video.buffered;
    if (!b.length) return null;
    const last = b.length - 1;
    return Math.max(b.start(last), b.end(last) - LIVE_TARGET);
  }

  // Seeks to the live edge, only ever forwards (a stall with nothing ahead just waits).
  jumpToLiveEdge() {
    const edge = this.liveEdge();
    if (edge !== null && edge > this.video.currentTime + 0.02) this.video.currentTime = edge;
  }

  // MSE's catch-up policy, every tick: seek when far behind or before the newest range (a gap
  // the playhead would stall at), else play faster in proportion to the excess buffer.
  keepLive() {
    const v = this.video, b = v.buffered;
    if (!b.length) return;
    const last = b.length - 1;
    const ahead = b.end(last) - v.currentTime;
    if (v.currentTime < b.start(last) || ahead > LIVE_FAR) {
      v.playbackRate = 1.0;
      this.jumpToLiveEdge();
      return;
    }
    const excess = ahead - LIVE_TARGET;
    v.playbackRate = excess > 0.04 ? Math.min(1.5, 1 + excess * 2) : 1.0;
  }

  tick(s) {
    if (s.closed) return;
    const v = this.video, b = v.buffered;
    const ahead = b.length ? b.end(b.length - 1) - v.currentTime : 0;
    this.stats.buffered = Math.round(ahead * 1000) / 1000;
    if (s.mode === "mse") this.keepLive();
    // WebRTC: an audio m-line is answered even for a camera without sound; the speaker shows once
    // audio packets actually arrive.
    if (s.pc && this.soundButton.hidden) {
      const audio = s.pc.getReceivers().find((r) => r.track.kind === "audio");
      if (audio && audio.getSynchronizationSources().length) this.showSound(true);
    }
    // Frames per second over the last second of ticks.
    s.frameCounts.push(this.stats.frames);
    if (s.frameCounts.length > 1000 / TICK_MS + 1) s.frameCounts.shift();
    const span = (s.frameCounts.length - 1) * TICK_MS;
    this.stats.fps = span ? Math.round((this.stats.frames - s.frameCounts[0]) * 1000 / span) : 0;
    const ts = readTimeStrip(v, this.canvas);
    if (ts !== null) this.stats.latency = Math.round(Date.now() - ts) / 1000;
    if (v.paused && (b.length || v.srcObject)) v.play().catch(() => {});
  }

  releaseMedia(s) {
    s.listeners = s.listeners.filter(([target, type, fn]) => {
      if (target === this.video) return true;
      target.removeEventListener(type, fn);
      return false;
    });
    if (s.ms && s.ms.readyState === "open") {
      try { s.ms.endOfStream(); } catch {}
    }
    if (s.url) URL.revokeObjectURL(s.url);
    s.ms = null; s.sb = null; s.url = null;
    this.video.removeAttribute("src");
    this.video.srcObject = null;
    this.video.load();
  }

  releaseSession() {
    const s = this.session;
    if (!s) return;
    s.closed = true;
    this.session = null;
    if (s.ws) {
      s.ws.onopen = s.ws.onmessage = s.ws.onclose = s.ws.onerror = null;
      if (s.ws.readyState === WebSocket.OPEN || s.ws.readyState === WebSocket.CONNECTING) s.ws.close();
    }
    if (s.pc) {
      s.pc.ontrack = s.pc.onconnectionstatechange = s.pc.oniceconnectionstatechange = null;
      for (const r of s.pc.getReceivers()) if (r.track) r.track.stop();
      s.pc.close();
      // WHEP: end the server's session now rather than when ICE times out.
      if (s.whep) fetch(s.whep, { method: "DELETE", keepalive: true }).catch(() => {});
    }
    s.timers.forEach((t) => { clearInterval(t); clearTimeout(t); });
    if (s.frameCb !== null) this.video.cancelVideoFrameCallback(s.frameCb);
    for (const [target, type, fn] of s.listeners) target.removeEventListener(type, fn);
    s.listeners = [];
    this.releaseMedia(s);
    s.queue = [];
  }

  stop() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.releaseSession();
    this.stats.state = "idle";
  }
}

if (!customElements.get("livelens-player")) customElements.define("livelens-player", LivelensPlayer);
export { LivelensPlayer, readTimeStrip, supportedCodecs };
