//! `livelens-bench mse|flv|webrtc|mjpeg|hls --url URL --viewers N --seconds S [--pid PID]`
//!
//! A load generator: N viewers of one live stream, run for S seconds, one table row (or one JSON
//! line with `--json`) of what the server cost and what the viewers got.
//!
//! - `mse`: WebSocket readers of livelens's fMP4 endpoint (`/api/cameras/ID/mse`).
//! - `flv`: WebSocket readers of an HTTP-FLV-over-WebSocket stream (node-media-server's
//!   `ws://HOST/APP/NAME.flv`), to compare livelens with another server on the same clip.
//! - `webrtc`: WHEP viewers, str0m clients doing real ICE/DTLS/SRTP. At the end they leave
//!   without a word, like a closed tab; `--delete` sends the WHEP DELETE instead.
//! - `mjpeg`: readers of `/api/cameras/ID/mjpeg` (frames are pictures).
//! - `hls`: LL-HLS clients of `/api/cameras/ID/hls/stream.m3u8`: a blocking playlist reload
//!   for the next part, then that part, over and over (frames are video fragments).
//!
//! Readers buffer their stream, so boxes and tags may be split over WebSocket messages or merged
//! into one. Where the stream carries the capture-time SEI that `testsrc://` puts in every access
//! unit, latency is measured end to end (same machine, same clock).
//!
//! Per viewer: bytes and video frames over the run, the time to its first video frame. A viewer
//! is "below source" when it got less than 95 % of the source's bytes/s (`--source-kbps`, or the
//! median viewer when not given).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;

use livelens::media::{h264, sei};

#[derive(Parser)]
#[command(name = "livelens-bench", about = "Load generator for livelens outputs")]
struct Cli {
    #[command(subcommand)]
    command: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// N WebSocket MSE (fMP4) viewers of one camera.
    Mse {
        #[arg(long, default_value = "ws://127.0.0.1:8080/api/cameras/demo/mse")]
        url: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N WebSocket readers of an HTTP-FLV stream (e.g. node-media-server's ws://HOST/live/NAME.flv).
    Flv {
        #[arg(long, default_value = "ws://127.0.0.1:8000/live/clip.flv")]
        url: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N WebRTC (WHEP) viewers of one camera: str0m clients doing real ICE/DTLS/SRTP.
    Webrtc {
        /// The camera's WHEP URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/api/cameras/demo/whep")]
        url: String,
        /// Leave with the WHEP DELETE (the Location of the answer) rather than silently.
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N MJPEG readers of one camera.
    Mjpeg {
        #[arg(long, default_value = "http://127.0.0.1:8080/api/cameras/demo/mjpeg")]
        url: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N RTSP clients of one camera's re-stream (RTP over the RTSP connection).
    Rtsp {
        #[arg(long, default_value = "rtsp://127.0.0.1:8554/demo")]
        url: String,
        #[command(flatten)]
        run: RunArgs,
    },
    /// N LL-HLS clients of one camera's media playlist.
    Hls {
        #[arg(
            long,
            default_value = "http://127.0.0.1:8080/api/cameras/demo/hls/stream.m3u8"
        )]
        url: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

#[derive(Args)]
struct RunArgs {
    #[arg(long, default_value_t = 1)]
    viewers: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The server's pid, for CPU % and RSS; asked from livelens's /healthz when absent.
    #[arg(long)]
    pid: Option<u32>,
    /// The source's rate in kbit/s; viewers below 95 % of it are counted. 0: the median viewer.
    #[arg(long, default_value_t = 0.0)]
    source_kbps: f64,
    /// Viewers that join one by one half-way through the run, while the others watch, each a
    /// process of its own (as a new browser is): their first-frame times are a late viewer's
    /// wait at this load. (The main viewers' first frames measure all of them arriving at
    /// once, and viewers inside this busy process would measure its own scheduling.)
    #[arg(long, default_value_t = 0)]
    joiners: usize,
    /// Print the table header too.
    #[arg(long)]
    header: bool,
    /// Print one JSON object instead of a table row.
    #[arg(long)]
    json: bool,
}

#[derive(Default)]
struct ViewerResult {
    first_frame: Option<Duration>,
    latencies_ms: Vec<f64>,
    bytes: u64,
    frames: u64,
    error: Option<String>,
}

impl ViewerResult {
    /// Counts `frames` video frames that arrived now; `capture` is the capture time they carry.
    fn on_frames(&mut self, frames: u64, capture: Option<i64>, started: Instant, since_us: i64) {
        if frames == 0 {
            return;
        }
        self.frames += frames;
        self.first_frame.get_or_insert_with(|| started.elapsed());
        // Latency of live frames only: a cached GOP sent at connect is old by design.
        if let Some(t) = capture.filter(|t| *t >= since_us) {
            self.latencies_ms.push((now_us() - t) as f64 / 1000.0);
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The capture time in the first NALs of a 4-byte length-prefixed access unit.
fn capture_time(access_unit: &[u8]) -> Option<i64> {
    h264::length_prefixed_nals(access_unit)
        .take(4)
        .find_map(sei::read_capture_time)
        .map(|t| t.unix_us)
}

fn be_u32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn be_u24(data: &[u8], at: usize) -> Option<usize> {
    let b = data.get(at..at + 3)?;
    Some(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
}

/// Larger boxes or tags than this are taken for a broken stream rather than buffered.
const MAX_UNIT: usize = 64 << 20;

/// Bytes of a stream that wait for the rest of their box or tag in the next message.
#[derive(Default)]
struct Reassembly {
    buf: Vec<u8>,
}

impl Reassembly {
    /// Gives `parse` what is buffered followed by `data`; `parse` consumes whole units from the
    /// front and returns how many bytes it used. The rest is kept. Without buffered bytes,
    /// `data` is parsed in place and only its incomplete tail is copied.
    fn push(
        &mut self,
        data: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<usize, String>,
    ) -> Result<(), String> {
        if self.buf.is_empty() {
            let used = parse(data)?;
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(data);
            let used = parse(&self.buf)?;
            self.buf.drain(..used);
        }
        Ok(())
    }
}

/// A stream format: finds the video frames in whole units at the front of a buffer.
trait Demuxer: Default + Send + 'static {
    /// Parses the whole units at the front of `data`; calls `frames(count, access_unit)` for
    /// every unit carrying video frames, with its (first) length-prefixed access unit. Returns
    /// the bytes used; an incomplete unit is left for the next call.
    fn parse(&mut self, data: &[u8], frames: &mut impl FnMut(u64, &[u8])) -> Result<usize, String>;
}

/// ISO-BMFF boxes: `(type, payload)` for each box in `data`, which holds whole boxes.
fn boxes(mut data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let (kind, header, size) = box_header(data).ok()??;
        let size = if size == 0 { data.len() } else { size };
        let payload = data.get(header..size)?;
        data = &data[size..];
        Some((kind, payload))
    })
}

/// `(type, header length, size)` of the box at the start of `data`; `None` when the header is
/// incomplete; size 0 means "to the end".
fn box_header(data: &[u8]) -> Result<Option<([u8; 4], usize, usize)>, String> {
    let (Some(size), Some(kind)) = (be_u32(data, 0), data.get(4..8)) else {
        return Ok(None);
    };
    let kind: [u8; 4] = kind.try_into().expect("4 bytes");
    let (header, size) = match size {
        0 => (8, 0),
        1 => match data.get(8..16) {
            Some(b) => (
                16,
                u64::from_be_bytes(b.try_into().expect("8 bytes")) as usize,
            ),
            None => return Ok(None),
        },
        n => (8, n as usize),
    };
    if size != 0 && size < header {
        return Err(format!(
            "box {:?} of {size} bytes",
            String::from_utf8_lossy(&kind)
        ));
    }
    Ok(Some((kind, header, size)))
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data).find(|(k, _)| k == kind).map(|(_, p)| p)
}

/// fMP4 as livelens's MSE endpoint sends it: ftyp+moov, then moof+mdat fragments.
struct Fmp4 {
    /// The video track (from the moov's `hdlr` = vide; 1 until a moov says otherwise).
    video_track: u32,
    /// Video samples in the last moof, waiting for its mdat.
    pending: Option<u64>,
}

impl Default for Fmp4 {
    fn default() -> Self {
        Fmp4 {
            video_track: 1,
            pending: None,
        }
    }
}

impl Fmp4 {
    /// The track id of the moov's video track.
    fn video_track(moov: &[u8]) -> Option<u32> {
        boxes(moov)
            .filter(|(k, _)| k == b"trak")
            .find_map(|(_, trak)| {
                let hdlr = child(child(trak, b"mdia")?, b"hdlr")?;
                if hdlr.get(8..12)? != b"vide" {
                    return None;
                }
                let tkhd = child(trak, b"tkhd")?;
                // Full box: version 1 has 64-bit creation and modification times.
                be_u32(tkhd, if tkhd.first()? == &1 { 20 } else { 12 })
            })
    }

    /// Samples of `track` in a moof: the trun sample counts of its trafs.
    fn samples(moof: &[u8], track: u32) -> u64 {
        boxes(moof)
            .filter(|(k, traf)| {
                k == b"traf" && child(traf, b"tfhd").and_then(|t| be_u32(t, 4)) == Some(track)
            })
            .flat_map(|(_, traf)| boxes(traf).filter(|(k, _)| k == b"trun"))
            .filter_map(|(_, trun)| be_u32(trun, 4))
            .map(u64::from)
            .sum()
    }
}

impl Demuxer for Fmp4 {
    fn parse(&mut self, data: &[u8], frames: &mut impl FnMut(u64, &[u8])) -> Result<usize, String> {
        let mut at = 0;
        while let Some((kind, header, size)) = box_header(&data[at..])? {
            if size == 0 {
                return Err("a box of unknown size in a stream".into());
            }
            if size > MAX_UNIT {
                return Err(format!("a box of {size} bytes"));
            }
            let Some(payload) = data.get(at + header..at + size) else {
                break;
            };
            match &kind {
                b"moov" => self.video_track = Self::video_track(payload).unwrap_or(1),
                b"moof" => self.pending = Some(Self::samples(payload, self.video_track)),
                // The fragment's mdat starts with its first sample.
                b"mdat" => frames(self.pending.take().unwrap_or(0), payload),
                _ => {}
            }
            at += size;
        }
        Ok(at)
    }
}

/// FLV: a 9-byte header and PreviousTagSize0, then tags (11-byte header, data, PreviousTagSize).
#[derive(Default)]
struct Flv {
    header_done: bool,
}

impl Flv {
    const TAG_VIDEO: u8 = 9;

    /// The access unit of a video tag's data when it carries a frame (not a sequence header).
    fn access_unit(tag: &[u8]) -> Option<&[u8]> {
        let first = *tag.first()?;
        if first & 0x80 != 0 {
            // Enhanced RTMP: packet type in the low nibble, then a FourCC; CodedFrames (1) has
            // a 3-byte composition time, CodedFramesX (3) has none.
            return match first & 0x0f {
                1 => tag.get(8..),
                3 => tag.get(5..),
                _ => None,
            };
        }
        // Legacy: frame type and codec id (7 AVC, 12 HEVC), AVCPacketType (1 = NALU), CTS.
        (matches!(first & 0x0f, 7 | 12) && *tag.get(1)? == 1)
            .then(|| tag.get(5..))
            .flatten()
    }
}

impl Demuxer for Flv {
    fn parse(&mut self, data: &[u8], frames: &mut impl FnMut(u64, &[u8])) -> Result<usize, String> {
        let mut at = 0;
        if !self.header_done {
            let Some(header_len) = be_u32(data, 5) else {
                return Ok(0);
            };
            if &data[..3] != b"FLV" {
                return Err("not an FLV stream".into());
            }
            at = header_len as usize + 4;
            if data.len() < at {
                return Ok(0);
            }
            self.header_done = true;
        }
        while let (Some(&kind), Some(size)) = (data.get(at), be_u24(data, at + 1)) {
            let end = at + 11 + size + 4;
            let Some(tag) = data.get(at + 11..at + 11 + size) else {
                break;
            };
            if data.len() < end {
                break;
            }
            if kind & 0x1f == Self::TAG_VIDEO {
                if let Some(au) = Self::access_unit(tag) {
                    frames(1, au);
                }
            }
            at = end;
        }
        Ok(at)
    }
}

/// One WebSocket reader of a stream in format `D`.
async fn ws_viewer<D: Demuxer>(url: String, until: Instant) -> ViewerResult {
    let mut r = ViewerResult::default();
    let started = Instant::now();
    let connected_at = now_us();
    let mut ws = match tokio_tungstenite::connect_async(&url).await {
        Ok((ws, _)) => ws,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let mut demuxer = D::default();
    let mut reassembly = Reassembly::default();
    while let Ok(Some(msg)) = tokio::time::timeout_at(until.into(), ws.next()).await {
        let data = match msg {
            Ok(Message::Binary(data)) => data,
            Ok(_) => continue,
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
        };
        r.bytes += data.len() as u64;
        let parsed = reassembly.push(&data, |buf| {
            demuxer.parse(buf, &mut |n, au| {
                r.on_frames(n, capture_time(au), started, connected_at);
            })
        });
        if let Err(e) = parsed {
            r.error = Some(e);
            break;
        }
    }
    let _ = ws.close(None).await;
    r
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    Some(ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64)
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// The server's pid, from livelens's `/healthz` (same machine).
async fn find_server(ws_url: &str) -> Option<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = ws_url.strip_prefix("ws://")?;
    let host = rest.split('/').next()?;
    let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    let json: serde_json::Value = serde_json::from_str(body.split("\r\n\r\n").nth(1)?).ok()?;
    json["pid"].as_u64().map(|p| p as u32)
}

/// The same server as a ws:// URL (what `find_server` reads).
fn ws_url(http: &str) -> String {
    http.replacen("http://", "ws://", 1)
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((sorted.len() - 1) as f64 * p).round() as usize])
}

fn main() {
    livelens::api::raise_open_file_limit();
    match Cli::parse().command {
        Bench::Mse { url, run } => measure("mse", &url, &url, &run, ws_viewer::<Fmp4>),
        Bench::Flv { url, run } => measure("flv", &url, &url, &run, ws_viewer::<Flv>),
        Bench::Webrtc { url, delete, run } => webrtc::run(&url, delete, &run),
        Bench::Mjpeg { url, run } => {
            measure("mjpeg", &url, &ws_url(&url), &run, http_viewers::mjpeg)
        }
        Bench::Hls { url, run } => measure("hls", &url, &ws_url(&url), &run, http_viewers::hls),
        Bench::Rtsp { url, run } => measure("rtsp", &url, &url, &run, rtsp_viewer),
    }
}

/// What the server cost over the run.
struct ServerUse {
    cpu_percent: Option<f64>,
    /// The largest RSS seen during the run.
    rss_mib: Option<f64>,
    /// This load generator's own CPU: near 100 % per core, the figures measure the client.
    bench_cpu_percent: Option<f64>,
}

/// Samples CPU time at the start and at `until`, and RSS every second in between.
async fn watch(pid: Option<u32>, until: Instant) -> ServerUse {
    let me = std::process::id();
    let t0 = Instant::now();
    let (cpu0, bench0) = (pid.and_then(cpu_seconds), cpu_seconds(me));
    let mut rss: Option<f64> = None;
    loop {
        if let Some(m) = pid.and_then(rss_mib) {
            rss = Some(rss.map_or(m, |r| r.max(m)));
        }
        let now = Instant::now();
        if now >= until {
            break;
        }
        tokio::time::sleep((until - now).min(Duration::from_secs(1))).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let percent = |a: Option<f64>, b: Option<f64>| Some((b? - a?) / elapsed * 100.0);
    ServerUse {
        cpu_percent: percent(cpu0, pid.and_then(cpu_seconds)),
        rss_mib: rss,
        bench_cpu_percent: percent(bench0, cpu_seconds(me)),
    }
}

/// `count` viewers of `kind`, one after the other from `start`, each a `livelens-bench` process
/// of its own watching for a second: their first-frame times.
async fn joiners(kind: String, url: String, count: usize, start: Instant) -> Vec<Option<f64>> {
    tokio::time::sleep_until(start.into()).await;
    let Ok(me) = std::env::current_exe() else {
        return vec![None; count];
    };
    let mut out = Vec::new();
    for _ in 0..count {
        let output = tokio::process::Command::new(&me)
            .args([
                &kind,
                "--url",
                &url,
                "--viewers",
                "1",
                "--seconds",
                "1",
                "--json",
            ])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .await;
        let first = output.ok().and_then(|o| {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            v["first_frame_p50_ms"].as_f64()
        });
        out.push(first);
    }
    out
}

/// Runs `run.viewers` viewers (each made by `viewer`) for `run.seconds` and prints one row: server
/// CPU and RSS over the run, bytes and frames per viewer, viewers below the source rate, first
/// frame and latency percentiles.
fn measure<F, Fut>(kind: &str, url: &str, ws_url_for_pid: &str, run: &RunArgs, viewer: F)
where
    F: Fn(String, Instant) -> Fut,
    Fut: Future<Output = ViewerResult> + Send + 'static,
{
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pid = run
        .pid
        .or_else(|| runtime.block_on(find_server(ws_url_for_pid)));
    let window = Duration::from_secs(run.seconds);
    let until = Instant::now() + window;
    let (results, joiners, server) = runtime.block_on(async {
        let tasks: Vec<_> = (0..run.viewers)
            .map(|_| tokio::spawn(viewer(url.to_string(), until)))
            .collect();
        let joining = tokio::spawn(joiners(
            kind.to_string(),
            url.to_string(),
            run.joiners,
            Instant::now() + window / 2,
        ));
        let server = watch(pid, until).await;
        let collect = |tasks: Vec<tokio::task::JoinHandle<ViewerResult>>| async move {
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| ViewerResult {
                    error: Some(e.to_string()),
                    ..ViewerResult::default()
                }));
            }
            out
        };
        (
            collect(tasks).await,
            joining.await.unwrap_or_default(),
            server,
        )
    });
    report(&results, &joiners, &server, window, run);
}

fn report(
    results: &[ViewerResult],
    joiners: &[Option<f64>],
    server: &ServerUse,
    window: Duration,
    run: &RunArgs,
) {
    let secs = window.as_secs_f64().max(1e-3);
    let n = results.len().max(1) as f64;
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let no_frame = results.iter().filter(|r| r.first_frame.is_none()).count();
    // A viewer's rate counts from its first frame: connecting 300 viewers takes a moment, and a
    // viewer that started late is not behind.
    let mut rates: Vec<f64> = results
        .iter()
        .map(|r| {
            let started = r.first_frame.map_or(0.0, |d| d.as_secs_f64());
            r.bytes as f64 / (secs - started).max(1e-3)
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    let source = if run.source_kbps > 0.0 {
        Some(run.source_kbps * 1000.0 / 8.0)
    } else {
        percentile(&rates, 0.5)
    };
    let below = source.map_or(0, |s| rates.iter().filter(|r| **r < 0.95 * s).count());
    let bytes_per_s = rates.iter().sum::<f64>() / n;
    let frames_per_s = results.iter().map(|r| r.frames as f64).sum::<f64>() / n / secs;
    let mut first: Vec<f64> = results
        .iter()
        .filter_map(|r| r.first_frame)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    first.sort_by(f64::total_cmp);
    let mut joined: Vec<f64> = joiners.iter().flatten().copied().collect();
    joined.sort_by(f64::total_cmp);
    let mut lat: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let first_error = results.iter().find_map(|r| r.error.clone());
    if run.json {
        let v = serde_json::json!({
            "viewers": results.len(),
            "seconds": secs,
            "cpu_percent": server.cpu_percent,
            "rss_mib": server.rss_mib,
            "bench_cpu_percent": server.bench_cpu_percent,
            "kbytes_per_s_per_viewer": bytes_per_s / 1000.0,
            "frames_per_s_per_viewer": frames_per_s,
            "source_kbytes_per_s": source.map(|s| s / 1000.0),
            "below_95": below,
            "no_frame": no_frame,
            "first_frame_p50_ms": percentile(&first, 0.5),
            "first_frame_p99_ms": percentile(&first, 0.99),
            "joiners": joiners.len(),
            "joiners_without_frame": joiners.len() - joined.len(),
            "joiner_first_frame_p50_ms": percentile(&joined, 0.5),
            "joiner_first_frame_max_ms": joined.last(),
            "latency_p50_ms": percentile(&lat, 0.5),
            "latency_p99_ms": percentile(&lat, 0.99),
            "errors": errors,
            "first_error": first_error,
        });
        println!("{v}");
        return;
    }
    let num = |v: Option<f64>, unit: &str| v.map_or("–".into(), |v| format!("{v:.0}{unit}"));
    let pair = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (None, None) => "–".to_string(),
        _ => format!("{} / {} ms", num(a, ""), num(b, "")),
    };
    if run.header {
        println!("| viewers | server CPU % | server RSS | kB/s per viewer | frames/s per viewer | below 95 % of source | first frame p50 / p99 | latency p50 / p99 | errors | bench CPU % |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
    }
    println!(
        "| {} | {} | {} | {:.0} | {frames_per_s:.1} | {below} (source {} kB/s) | {} | {} | {errors} | {} |",
        results.len(),
        server.cpu_percent.map_or("?".into(), |c| format!("{c:.1}")),
        num(server.rss_mib, " MiB"),
        bytes_per_s / 1000.0,
        num(source.map(|s| s / 1000.0), ""),
        pair(percentile(&first, 0.5), percentile(&first, 0.99)),
        pair(percentile(&lat, 0.5), percentile(&lat, 0.99)),
        num(server.bench_cpu_percent, ""),
    );
    if let Some(e) = first_error {
        eprintln!("first error: {e}");
    }
}

/// WebRTC viewers: each a str0m `Rtc` on its own UDP socket, driven by its own task.
mod webrtc {
    static CERT: std::sync::OnceLock<str0m::config::DtlsCert> = std::sync::OnceLock::new();
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use str0m::change::{SdpAnswer, SdpOffer};
    use str0m::media::{Direction, MediaKind};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UdpSocket;

    use super::{now_us, RunArgs, ViewerResult};
    use livelens::media::{h264, sei};

    /// One HTTP/1.1 request with a minimal client (same machine, plain HTTP); returns the head
    /// and the body of the response.
    async fn http(
        method: &str,
        url: &str,
        path: Option<&str>,
        body: &str,
    ) -> Result<(String, String), String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or("the URL must be http://")?;
        let (host, url_path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = path.unwrap_or(url_path);
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or("bad HTTP response")?;
        Ok((head.to_string(), body.to_string()))
    }

    /// POSTs the offer; returns the answer and the session's Location.
    async fn whep(url: &str, offer: &SdpOffer) -> Result<(String, Option<String>), String> {
        let (head, answer) = http("POST", url, None, &offer.to_sdp_string()).await?;
        if !head.starts_with("HTTP/1.1 201") {
            return Err(head.lines().next().unwrap_or("").to_string());
        }
        let location = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_string())
        });
        Ok((answer, location))
    }

    async fn viewer(url: String, until: Instant, delete: bool) -> ViewerResult {
        let mut r = ViewerResult::default();
        let mut location = None;
        if let Err(e) = viewer_inner(&url, until, &mut r, &mut location).await {
            r.error = Some(e);
        }
        // Without --delete the peer just goes away (sockets closed, nothing sent), like a tab
        // closed or a network lost: the server has to notice through ICE/DTLS.
        if delete && r.error.is_none() {
            let deleted = match &location {
                Some(path) => http("DELETE", &url, Some(path), "").await.map(|(h, _)| h),
                None => Err("the answer has no Location".into()),
            };
            r.error = match deleted {
                Ok(head) if head.starts_with("HTTP/1.1 2") => None,
                Ok(head) => Some(format!("DELETE: {}", head.lines().next().unwrap_or(""))),
                Err(e) => Some(format!("DELETE: {e}")),
            };
        }
        r
    }

    async fn viewer_inner(
        url: &str,
        until: Instant,
        r: &mut ViewerResult,
        location: &mut Option<String>,
    ) -> Result<(), String> {
        let started = Instant::now();
        let connected_at = now_us();
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        // A browser's receive buffer, not the system default (208 KiB): hundreds of viewers in
        // one busy process otherwise lose datagrams to their own scheduling.
        set_receive_buffer(&socket, 1 << 20);
        let local: SocketAddr = socket.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            // One certificate for every viewer: key generation per viewer would make the load
            // generator, not the server, the slow part of connecting hundreds at once.
            .set_dtls_cert(CERT.get().expect("made in run").clone())
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?)
            .ok_or("candidate refused")?;
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().ok_or("no offer")?;
        let (answer, loc) = whep(url, &offer).await?;
        let trace = std::env::var_os("LIVELENS_BENCH_TRACE").is_some();
        if trace {
            eprintln!("answer after {:?}", started.elapsed());
        }
        *location = loc;
        let answer = SdpAnswer::from_sdp_string(&answer).map_err(|e| e.to_string())?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; 2000];
        while Instant::now() < until && rtc.is_alive() {
            let timeout = loop {
                match rtc.poll_output().map_err(|e| e.to_string())? {
                    Output::Transmit(t) => {
                        let _ = socket.send_to(&t.contents, t.destination).await;
                    }
                    Output::Timeout(t) => break t,
                    Output::Event(Event::MediaData(m)) => {
                        r.bytes += m.data.len() as u64;
                        // str0m hands over one H.264 frame in Annex B; the SEI carries the
                        // capture time.
                        let capture = h264::split_annex_b(&m.data)
                            .into_iter()
                            .take(4)
                            .find_map(sei::read_capture_time)
                            .map(|t| t.unix_us);
                        if trace && r.frames == 0 {
                            eprintln!("first frame after {:?}", started.elapsed());
                        }
                        r.on_frames(1, capture, started, connected_at);
                    }
                    Output::Event(Event::Connected) if trace => {
                        eprintln!("connected after {:?}", started.elapsed());
                    }
                    Output::Event(_) => {}
                }
            };
            let wait = timeout
                .min(until)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let input = match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
                Ok(Ok((n, source))) => Some((n, source)),
                _ => None,
            };
            let now = Instant::now();
            match input {
                Some((n, source)) => {
                    let Ok(contents) = buf[..n].try_into() else {
                        continue;
                    };
                    let recv = Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: local,
                        contents,
                    };
                    rtc.handle_input(Input::Receive(now, recv))
                        .map_err(|e| e.to_string())?;
                }
                None => rtc
                    .handle_input(Input::Timeout(now))
                    .map_err(|e| e.to_string())?,
            }
        }
        Ok(())
    }

    fn set_receive_buffer(socket: &UdpSocket, bytes: i32) {
        use std::os::fd::AsRawFd;
        // SAFETY: setsockopt reads `bytes` (an int, its size given) for a socket `socket` owns.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&bytes as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            );
        }
    }

    pub fn run(url: &str, delete: bool, run: &RunArgs) {
        // livelens's provider: one shared DTLS configuration, as the server uses it.
        let crypto = livelens::output::webrtc::dtls::provider();
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .expect("DTLS certificate");
        let _ = CERT.set(cert);
        crypto.install_process_default();
        let ws = url.replacen("http://", "ws://", 1);
        let spawn = move |url: String, until: Instant| viewer(url, until, delete);
        super::measure("webrtc", url, &ws, run, spawn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut b = ((payload.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(payload);
        b
    }

    fn full(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        bx(kind, &[&[0u8; 4][..], body].concat())
    }

    /// A moov with an audio track 1 and a video track 2, and a video fragment of 3 samples.
    fn fmp4_stream() -> Vec<u8> {
        let trak = |id: u32, handler: &[u8; 4]| {
            let tkhd = full(b"tkhd", &[&[0u8; 8][..], &id.to_be_bytes()].concat());
            let hdlr = full(b"hdlr", &[&[0u8; 4][..], handler].concat());
            bx(b"trak", &[tkhd, bx(b"mdia", &hdlr)].concat())
        };
        let moov = bx(b"moov", &[trak(1, b"soun"), trak(2, b"vide")].concat());
        let traf = |id: u32, samples: u32| {
            let tfhd = full(b"tfhd", &id.to_be_bytes());
            let trun = full(b"trun", &samples.to_be_bytes());
            bx(b"traf", &[tfhd, trun].concat())
        };
        let audio = bx(b"moof", &traf(1, 5));
        let video = bx(b"moof", &traf(2, 3));
        let au = [&4u32.to_be_bytes()[..], &[0x65, 1, 2, 3]].concat();
        [
            bx(b"ftyp", b"iso5"),
            moov,
            audio,
            bx(b"mdat", &[9; 20]),
            video,
            bx(b"mdat", &au),
        ]
        .concat()
    }

    /// Feeds `stream` in chunks of `chunk` bytes; returns (frames, access units seen).
    fn feed<D: Demuxer>(stream: &[u8], chunk: usize) -> (u64, Vec<Vec<u8>>) {
        let (mut demuxer, mut reassembly) = (D::default(), Reassembly::default());
        let (mut frames, mut aus) = (0, Vec::new());
        for part in stream.chunks(chunk) {
            reassembly
                .push(part, |buf| {
                    demuxer.parse(buf, &mut |n, au| {
                        if n > 0 {
                            frames += n;
                            aus.push(au.to_vec());
                        }
                    })
                })
                .unwrap();
        }
        assert!(reassembly.buf.is_empty(), "whole stream consumed");
        (frames, aus)
    }

    #[test]
    fn fmp4_frames_whatever_the_message_boundaries() {
        let stream = fmp4_stream();
        for chunk in [1, 3, 7, 64, stream.len()] {
            let (frames, aus) = feed::<Fmp4>(&stream, chunk);
            assert_eq!(frames, 3, "chunk {chunk}");
            assert_eq!(aus, vec![vec![0, 0, 0, 4, 0x65, 1, 2, 3]], "chunk {chunk}");
        }
    }

    fn flv_stream() -> Vec<u8> {
        let tag = |kind: u8, data: &[u8]| {
            let mut t = vec![kind];
            t.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            t.extend_from_slice(&[0; 7]);
            t.extend_from_slice(data);
            t.extend_from_slice(&((data.len() + 11) as u32).to_be_bytes());
            t
        };
        let nalu = [&[0x17, 1, 0, 0, 0][..], &[0, 0, 0, 2, 0x65, 0x88]].concat();
        [
            b"FLV\x01\x05\0\0\0\x09\0\0\0\0".to_vec(),
            tag(18, b"onMetaData"),
            tag(9, &[0x17, 0, 0, 0, 0, 1, 2, 3]),
            tag(8, &[0xaf, 1, 4, 5]),
            tag(9, &nalu),
            tag(9, &[0x27, 1, 0, 0, 0, 0, 0, 0, 2, 0x41, 0x9a]),
        ]
        .concat()
    }

    #[test]
    fn flv_frames_whatever_the_message_boundaries() {
        let stream = flv_stream();
        for chunk in [1, 2, 5, 13, stream.len()] {
            let (frames, aus) = feed::<Flv>(&stream, chunk);
            assert_eq!(frames, 2, "chunk {chunk}");
            assert_eq!(aus[0], vec![0, 0, 0, 2, 0x65, 0x88], "chunk {chunk}");
        }
    }

    #[test]
    fn not_flv_is_an_error() {
        let mut flv = Flv::default();
        assert!(flv.parse(b"<html>\r\n\r\n", &mut |_, _| {}).is_err());
    }
}

/// HTTP viewers: MJPEG readers and LL-HLS clients.
/// An RTSP client over TCP (DESCRIBE, SETUP of the video with interleaved channels 0-1, PLAY):
/// counts the video frames (RTP packets with the marker bit) and bytes until `until`.
async fn rtsp_viewer(url: String, until: Instant) -> ViewerResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut r = ViewerResult::default();
    let started = Instant::now();
    let Some(host) = url
        .strip_prefix("rtsp://")
        .and_then(|u| u.split('/').next())
    else {
        r.error = Some("expected rtsp://HOST:PORT/camera".into());
        return r;
    };
    let mut stream = match tokio::net::TcpStream::connect(host).await {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    let mut buf: Vec<u8> = Vec::with_capacity(64 * 1024);
    let mut session = String::new();
    let steps = [
        ("DESCRIBE", url.clone(), String::new()),
        (
            "SETUP",
            format!("{url}/trackID=0"),
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n".to_string(),
        ),
        ("PLAY", url.clone(), String::new()),
    ];
    for (cseq, (method, target, extra)) in steps.into_iter().enumerate() {
        let session_header = if session.is_empty() {
            String::new()
        } else {
            format!("Session: {session}\r\n")
        };
        let request = format!(
            "{method} {target} RTSP/1.0\r\nCSeq: {}\r\n{extra}{session_header}\r\n",
            cseq + 1
        );
        if let Err(e) = stream.write_all(request.as_bytes()).await {
            r.error = Some(e.to_string());
            return r;
        }
        // The response: head and body (DESCRIBE's SDP).
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + length {
                    buf.drain(..end + 4 + length);
                    break head;
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => {
                    r.error = Some(format!("{method}: the server closed the connection"));
                    return r;
                }
                Ok(_) => {}
            }
        };
        if !head.starts_with("RTSP/1.0 200") {
            r.error = Some(format!(
                "{method}: {}",
                head.lines().next().unwrap_or_default()
            ));
            return r;
        }
        if let Some(s) = head.lines().find_map(|l| l.strip_prefix("Session: ")) {
            session = s.split(';').next().unwrap_or_default().to_string();
        }
    }
    loop {
        while buf.len() >= 4 && buf[0] == b'$' {
            let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
            if buf.len() < 4 + len {
                break;
            }
            if buf[1] == 0 && len > 12 && buf[5] & 0x80 != 0 {
                r.on_frames(1, None, started, 0);
            }
            r.bytes += 4 + len as u64;
            buf.drain(..4 + len);
        }
        let read = tokio::select! {
            read = stream.read_buf(&mut buf) => read,
            _ = tokio::time::sleep_until(until.into()) => break,
        };
        match read {
            Ok(0) => {
                r.error = Some("the server closed the connection".into());
                break;
            }
            Err(e) => {
                r.error = Some(e.to_string());
                break;
            }
            Ok(_) => {}
        }
    }
    r
}

mod http_viewers {
    use std::time::{Duration, Instant};

    use super::ViewerResult;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .pool_max_idle_per_host(2)
            .build()
            .expect("HTTP client")
    }

    /// An MJPEG reader: counts the pictures (multipart parts) and bytes until `until`.
    pub async fn mjpeg(url: String, until: Instant) -> ViewerResult {
        let mut r = ViewerResult::default();
        let started = Instant::now();
        let response = match client().get(&url).send().await {
            Ok(resp) if resp.status().is_success() => resp,
            Ok(resp) => {
                r.error = Some(format!("HTTP {}", resp.status()));
                return r;
            }
            Err(e) => {
                r.error = Some(e.to_string());
                return r;
            }
        };
        let mut response = response;
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = response.chunk() => c,
                _ = tokio::time::sleep_until(until.into()) => break,
            };
            let Ok(Some(chunk)) = chunk else { break };
            r.bytes += chunk.len() as u64;
            // Boundaries may straddle chunks: search the last few bytes of the previous one too.
            tail.extend_from_slice(&chunk);
            let parts = tail.windows(9).filter(|w| w == b"--frame\r\n").count() as u64;
            r.on_frames(parts, None, started, 0);
            let keep = tail.len().saturating_sub(8);
            tail.drain(..keep);
        }
        r
    }

    /// Video fragments (moofs whose tfhd names track 1) in a run of fMP4 boxes.
    fn video_fragments(data: &[u8]) -> u64 {
        let mut at = 0;
        let mut n = 0;
        while at + 8 <= data.len() {
            let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
            if size < 8 {
                break;
            }
            if &data[at + 4..at + 8] == b"moof" {
                // moof header (8) + mfhd (16) + traf header (8) + tfhd header (12) → track id.
                let track = data
                    .get(at + 44..at + 48)
                    .map(|b| u32::from_be_bytes(b.try_into().unwrap()));
                if track == Some(1) {
                    n += 1;
                }
            }
            at += size;
        }
        n
    }

    /// `(open segment's MSN, its parts, the preload hint's URI)` of a media playlist.
    fn open_segment(playlist: &str) -> Option<(u64, u64, String)> {
        let first: u64 = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))?
            .parse()
            .ok()?;
        let complete = playlist.matches("#EXTINF:").count() as u64;
        let after_last = playlist
            .rsplit_once(".mp4\n")
            .map_or(playlist, |(_, rest)| rest);
        let parts = after_last.matches("#EXT-X-PART:").count() as u64;
        let hint = playlist
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""))?
            .trim_end_matches('"')
            .to_string();
        Some((first + complete, parts, hint))
    }

    /// The run-wide number in a part's name (`…-part123.mp4`).
    fn part_number(uri: &str) -> Option<u64> {
        uri.rsplit_once("part")?
            .1
            .strip_suffix(".mp4")?
            .parse()
            .ok()
    }

    /// Part URIs of a playlist, the preload hint's last.
    fn part_uris(playlist: &str) -> Vec<String> {
        playlist
            .lines()
            .filter(|l| l.starts_with("#EXT-X-PART:") || l.starts_with("#EXT-X-PRELOAD-HINT:"))
            .filter_map(|l| Some(l.split("URI=\"").nth(1)?.split('"').next()?.to_string()))
            .collect()
    }

    /// An LL-HLS client as players are: a blocking playlist reload for the part after the last
    /// one it has, then every part it has not got yet, the hinted one last (the server sends it
    /// once it is complete), over and over. `url` is the media playlist (`…/hls/stream.m3u8`).
    pub async fn hls(url: String, until: Instant) -> ViewerResult {
        let mut r = ViewerResult::default();
        let started = Instant::now();
        let http = client();
        let base = url
            .rsplit_once('/')
            .map_or(url.as_str(), |(b, _)| b)
            .to_string();
        let mut query = String::new();
        let mut next: Option<u64> = None;
        while Instant::now() < until {
            let playlist = async {
                let resp = http.get(format!("{url}{query}")).send().await?;
                let status = resp.status();
                let text = resp.text().await?;
                Ok::<_, reqwest::Error>((status, text))
            };
            let (status, text) = match tokio::time::timeout(Duration::from_secs(10), playlist).await
            {
                Ok(Ok(x)) => x,
                Ok(Err(e)) => {
                    r.error = Some(e.to_string());
                    break;
                }
                Err(_) => {
                    r.error = Some("playlist: no answer in 10 s".into());
                    break;
                }
            };
            if !status.is_success() {
                r.error = Some(format!("playlist: HTTP {status}"));
                break;
            }
            r.bytes += text.len() as u64;
            let Some((msn, parts, hint)) = open_segment(&text) else {
                r.error = Some("playlist without a preload hint".into());
                break;
            };
            // A new client starts at the hinted part, as players at the live edge do.
            let from = next.unwrap_or_else(|| part_number(&hint).unwrap_or(0));
            let wanted: Vec<String> = part_uris(&text)
                .into_iter()
                .filter(|u| part_number(u).is_some_and(|n| n >= from))
                .collect();
            let mut failed = false;
            for uri in wanted {
                let part = async {
                    let resp = http.get(format!("{base}/{uri}")).send().await?;
                    resp.bytes().await
                };
                match tokio::time::timeout(Duration::from_secs(10), part).await {
                    Ok(Ok(bytes)) => {
                        r.bytes += bytes.len() as u64;
                        r.on_frames(video_fragments(&bytes), None, started, 0);
                        next = part_number(&uri).map(|n| n + 1);
                    }
                    Ok(Err(e)) => {
                        r.error = Some(e.to_string());
                        failed = true;
                        break;
                    }
                    Err(_) => {
                        r.error = Some("part: no answer in 10 s".into());
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
            // Next: the playlist once the part after the hinted one exists.
            query = format!("?_HLS_msn={msn}&_HLS_part={}", parts + 1);
        }
        r
    }
}
