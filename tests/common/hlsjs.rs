//! hls.js (npm `hls.js` 1.7, lowLatencyMode) playing livelens's LL-HLS in real Chromium: any
//! number of players of any cameras in one page, each with what a viewer would notice —
//! `hls.latency` sampled every 250 ms once it plays, `waiting` events, hls.js errors by kind,
//! pictures shown.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::browser::Browser;

/// The page side: `window.hlsPlay(name, url)` starts a player; `window.hlsStats(name)` reads it.
const HARNESS: &str = r#"
window.hlsPlayers = {};
window.hlsPlay = (name, url, config) => {
  const v = document.createElement('video');
  v.muted = true; v.autoplay = true; v.playsInline = true; v.width = 320;
  document.body.append(v);
  const st = { name, url, started: null, created: performance.now(), latency: [], waiting: 0,
               errors: {}, fatal: [], frames: 0, rebuffer_s: 0, events: [] };
  // What happened when (seconds since the player was made), for the log of a failed run.
  const note = (what) => {
    if (st.events.length < 200) st.events.push([+((performance.now() - st.created) / 1000).toFixed(2), what,
      +v.currentTime.toFixed(2), +(hls.latency || 0).toFixed(2)]);
  };
  // maxLiveSyncPlaybackRate: hls.js's default (1) never catches up after a stall, so every
  // stall adds latency for good; 1.5 lets it return to the target (the README recommends it).
  const hls = new Hls(Object.assign({ lowLatencyMode: true, maxLiveSyncPlaybackRate: 1.5 }, config || {}));
  hls.on(Hls.Events.ERROR, (_, d) => {
    const key = d.details + (d.fatal ? ' (fatal)' : '');
    st.errors[key] = (st.errors[key] || 0) + 1;
    if (d.fatal) st.fatal.push(d.details + ': ' + (d.reason || (d.error && d.error.message) || ''));
    note(key + ': ' + (d.reason || (d.error && d.error.message) || '').slice(0, 160));
  });
  let target = null;
  hls.on(Hls.Events.LEVEL_UPDATED, (_, d) => {
    if (d.details.targetduration !== target) {
      target = d.details.targetduration;
      note('target duration ' + target + ', target latency ' + hls.targetLatency);
    }
  });
  v.addEventListener('seeking', () => note('seeking'));
  // The start, part by part (the first two seconds): where the start-up time goes.
  const early = () => performance.now() - st.created < 2000;
  hls.on(Hls.Events.FRAG_LOADING, (_, d) => { if (early()) note('load ' + d.frag.sn + (d.part ? '.' + d.part.index : '') + (d.part && d.part.independent ? ' I' : '')); });
  hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => { if (early()) note('buffered ' + d.frag.sn + (d.part ? '.' + d.part.index : '')); });
  hls.on(Hls.Events.MANIFEST_LOADED, () => { if (early()) note('manifest'); });
  hls.on(Hls.Events.LEVEL_LOADED, () => { if (early()) note('level'); });
  let waitingSince = null;
  v.addEventListener('waiting', () => {
    if (st.started === null) return;
    st.waiting++;
    note('waiting');
    // A second `waiting` before `playing` (hls.js nudging a stalled player) is the same stall.
    if (waitingSince === null) waitingSince = performance.now();
  });
  v.addEventListener('playing', () => {
    if (st.started === null) st.started = performance.now();
    if (waitingSince !== null) { note('playing'); st.rebuffer_s += (performance.now() - waitingSince) / 1000; waitingSince = null; }
  });
  const count = () => { st.frames++; v.requestVideoFrameCallback(count); };
  v.requestVideoFrameCallback(count);
  // The media clock against the wall clock while playing smoothly (no stall, no seek
  // between two ticks): a media clock that runs slow (a starved renderer) adds latency.
  st.clock_media = 0; st.clock_wall = 0;
  let tick = null;
  setInterval(() => {
    const now = performance.now(), ct = v.currentTime;
    if (tick && waitingSince === null && !v.paused && !v.seeking) {
      const dm = ct - tick[1], dw = (now - tick[0]) / 1000;
      if (dm > 0 && dm < 2 * dw) { st.clock_media += dm; st.clock_wall += dw; }
    }
    tick = [now, ct];
    if (st.started === null || v.paused) return;
    const l = hls.latency;
    if (Number.isFinite(l) && l > 0) st.latency.push([(performance.now() - st.started) / 1000, l]);
  }, 250);
  // Where hls.js chose to start, against the playlist it started from (for the log).
  hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
    if (st.first_level) return;
    const det = d.details;
    st.first_level = { edge: det.edge, part_hold_back: det.partHoldBack, age: det.age,
                       fragments: det.fragments.length, start: hls.startPosition,
                       live_sync: hls.liveSyncPosition };
  });
  v.addEventListener('playing', () => {
    if (!st.first_play) st.first_play = { current: v.currentTime, latency: hls.latency,
                                          buffered: v.buffered.length ? [v.buffered.start(0), v.buffered.end(v.buffered.length - 1)] : null };
  });
  hls.loadSource(url);
  hls.attachMedia(v);
  window.hlsPlayers[name] = { hls, v, st };
};
window.hlsStats = (name) => {
  const p = window.hlsPlayers[name];
  const st = p.st;
  return Object.assign({}, st, {
    playing_s: st.started === null ? 0 : (performance.now() - st.started) / 1000,
    startup_s: st.started === null ? null : (st.started - st.created) / 1000,
    target_latency: p.hls.targetLatency,
    width: p.v.videoWidth,
    error: p.v.error ? String(p.v.error.message || p.v.error.code) : null,
  });
};
window.hlsStop = (name) => {
  const p = window.hlsPlayers[name];
  p.hls.destroy(); p.v.remove();
};
"#;

/// Loads hls.js and the harness into the page open in `browser` (a page of livelens's origin,
/// e.g. after [`Browser::blank_page`]).
pub async fn load(browser: &Browser) {
    let source = super::tools::hls_js();
    let ok = browser
        .client
        .execute(
            "const s = document.createElement('script'); s.textContent = arguments[0];
             document.head.append(s);
             const h = document.createElement('script'); h.textContent = arguments[1];
             document.head.append(h);
             return typeof Hls === 'function' && Hls.isSupported() && typeof hlsPlay === 'function';",
            vec![json!(source), json!(HARNESS)],
        )
        .await
        .expect("inject hls.js");
    assert_eq!(ok, Value::Bool(true), "hls.js did not load in Chromium");
}

/// Starts player `name` on the multivariant playlist of camera `camera`.
pub async fn play(browser: &Browser, name: &str, camera: &str) {
    let url = format!("/api/cameras/{camera}/hls/index.m3u8");
    browser
        .client
        .execute(
            "hlsPlay(arguments[0], arguments[1]);",
            vec![json!(name), json!(url)],
        )
        .await
        .expect("start a player");
}

pub async fn stats(browser: &Browser, name: &str) -> Value {
    browser
        .client
        .execute("return hlsStats(arguments[0]);", vec![json!(name)])
        .await
        .expect("player stats")
}

pub async fn stop(browser: &Browser, name: &str) {
    browser
        .client
        .execute("hlsStop(arguments[0]);", vec![json!(name)])
        .await
        .expect("stop a player");
}

/// What a player showed, over the part of its run asked for.
#[derive(Debug, Clone)]
pub struct Summary {
    pub name: String,
    pub playing_s: f64,
    pub startup_s: f64,
    pub samples: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub waiting: u64,
    pub rebuffer_s: f64,
    pub frames: u64,
    /// Media seconds played per wall second while playing smoothly (1.0: real time).
    pub clock_rate: f64,
    pub fatal: Vec<String>,
    pub errors: BTreeMap<String, u64>,
}

impl Summary {
    /// Latency percentiles over samples taken `from..until` seconds after the player began
    /// playing; counts over its whole run.
    pub fn of(stats: &Value, from: f64, until: f64) -> Summary {
        let mut latency: Vec<f64> = stats["latency"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| Some((s[0].as_f64()?, s[1].as_f64()?)))
            .filter(|(t, _)| *t >= from && *t < until)
            .map(|(_, l)| l)
            .collect();
        latency.sort_by(f64::total_cmp);
        let pick = |q: f64| -> f64 {
            if latency.is_empty() {
                f64::NAN
            } else {
                latency[((latency.len() - 1) as f64 * q).round() as usize]
            }
        };
        Summary {
            name: stats["name"].as_str().unwrap_or_default().to_string(),
            playing_s: stats["playing_s"].as_f64().unwrap_or(0.0),
            startup_s: stats["startup_s"].as_f64().unwrap_or(f64::NAN),
            samples: latency.len(),
            p50: pick(0.5),
            p95: pick(0.95),
            max: latency.last().copied().unwrap_or(f64::NAN),
            waiting: stats["waiting"].as_u64().unwrap_or(0),
            rebuffer_s: stats["rebuffer_s"].as_f64().unwrap_or(0.0),
            frames: stats["frames"].as_u64().unwrap_or(0),
            clock_rate: stats["clock_media"].as_f64().unwrap_or(f64::NAN)
                / stats["clock_wall"].as_f64().unwrap_or(f64::NAN),
            fatal: stats["fatal"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect(),
            errors: stats["errors"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect(),
        }
    }

    /// One line for the test log.
    pub fn line(&self) -> String {
        format!(
            "{}: played {:.1} s (started in {:.2} s), latency p50 {:.3} s p95 {:.3} s max {:.3} s \
             ({} samples), {} waiting ({:.2} s rebuffering), {} pictures, media clock {:.3}× \
             real time, errors {:?}",
            self.name,
            self.playing_s,
            self.startup_s,
            self.p50,
            self.p95,
            self.max,
            self.samples,
            self.waiting,
            self.rebuffer_s,
            self.frames,
            self.clock_rate,
            self.errors
        )
    }
}
