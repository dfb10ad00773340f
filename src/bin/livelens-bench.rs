//! `livelens-bench mse --url ws://HOST/api/cameras/ID/mse --viewers N --seconds S [--pid PID]`
//!
//! A load generator: N plain WebSocket readers of the MSE endpoint. Each parses the fMP4
//! fragments it receives and reads the capture-time SEI that `testsrc://` puts in every access
//! unit, so latency is measured end to end (same machine, same clock). Prints one table row:
//! viewers, server CPU % and RSS, bytes/s per viewer, first-frame time and latency percentiles.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
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
    /// N WebSocket MSE viewers of one camera.
    Mse {
        #[arg(long, default_value = "ws://127.0.0.1:8080/api/cameras/demo/mse")]
        url: String,
        #[arg(long, default_value_t = 1)]
        viewers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The server's pid, for CPU %; found by its command line when absent.
        #[arg(long)]
        pid: Option<u32>,
        /// Print the table header too.
        #[arg(long)]
        header: bool,
    },
    /// N WebRTC (WHEP) viewers of one camera: str0m clients doing real ICE/DTLS/SRTP.
    Webrtc {
        /// The camera's WHEP URL.
        #[arg(long, default_value = "http://127.0.0.1:8080/api/cameras/demo/whep")]
        url: String,
        #[arg(long, default_value_t = 1)]
        viewers: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long)]
        pid: Option<u32>,
        #[arg(long)]
        header: bool,
    },
}

#[derive(Default)]
struct ViewerResult {
    first_frame: Option<Duration>,
    latencies_ms: Vec<f64>,
    bytes: u64,
    error: Option<String>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The capture time carried by the access unit inside one moof+mdat fragment.
fn capture_time(fragment: &[u8]) -> Option<i64> {
    let moof_len = u32::from_be_bytes(fragment.get(0..4)?.try_into().ok()?) as usize;
    let mdat = fragment.get(moof_len..)?;
    if mdat.get(4..8)? != b"mdat" {
        return None;
    }
    h264::length_prefixed_nals(mdat.get(8..)?)
        .take(4)
        .find_map(sei::read_capture_time)
        .map(|t| t.unix_us)
}

async fn viewer(url: String, until: Instant) -> ViewerResult {
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
    while let Ok(Some(msg)) = tokio::time::timeout_at(until.into(), ws.next()).await {
        let Ok(Message::Binary(data)) = msg else {
            continue;
        };
        r.bytes += data.len() as u64;
        if data.get(4..8) != Some(b"moof") {
            continue;
        }
        r.first_frame.get_or_insert_with(|| started.elapsed());
        // Latency of live frames only: the cached GOP sent at connect is old by design.
        if let Some(t) = capture_time(&data).filter(|t| *t >= connected_at) {
            r.latencies_ms.push((now_us() - t) as f64 / 1000.0);
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

/// The server's pid, from its `/healthz` (same machine).
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

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() {
    raise_fd_limit();
    match Cli::parse().command {
        Bench::Mse {
            url,
            viewers,
            seconds,
            pid,
            header,
        } => mse(url, viewers, seconds, pid, header),
        Bench::Webrtc {
            url,
            viewers,
            seconds,
            pid,
            header,
        } => webrtc::run(url, viewers, seconds, pid, header),
    }
}

fn mse(url: String, viewers: usize, seconds: u64, pid: Option<u32>, header: bool) {
    let spawn = |url: String, until: Instant| tokio::spawn(viewer(url, until));
    measure(&url, &url, viewers, seconds, pid, header, spawn);
}

/// Runs `viewers` viewers (made by `spawn`) for `seconds` and prints one table row: server CPU
/// and RSS over the run, bytes per viewer, first-frame and latency percentiles.
fn measure(
    url: &str,
    ws_url_for_pid: &str,
    viewers: usize,
    seconds: u64,
    pid: Option<u32>,
    header: bool,
    spawn: impl Fn(String, Instant) -> tokio::task::JoinHandle<ViewerResult>,
) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let pid = pid.or_else(|| runtime.block_on(find_server(ws_url_for_pid)));
    let cpu_before = pid.and_then(cpu_seconds);
    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(seconds);
    let results: Vec<ViewerResult> = runtime.block_on(async {
        let tasks: Vec<_> = (0..viewers)
            .map(|_| spawn(url.to_string(), until))
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap_or_default());
        }
        out
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = match (cpu_before, pid.and_then(cpu_seconds)) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) / elapsed * 100.0),
        _ => "?".into(),
    };
    let rss = pid
        .and_then(rss_mib)
        .map_or("?".into(), |m| format!("{m:.0} MiB"));
    let errors = results.iter().filter(|r| r.error.is_some()).count();
    let mut first: Vec<f64> = results
        .iter()
        .filter_map(|r| r.first_frame)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    first.sort_by(f64::total_cmp);
    let mut lat: Vec<f64> = results
        .iter()
        .flat_map(|r| r.latencies_ms.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let bytes_per_viewer =
        results.iter().map(|r| r.bytes).sum::<u64>() as f64 / viewers.max(1) as f64 / elapsed;
    let frames_per_s = lat.len() as f64 / elapsed;
    if header {
        println!("| viewers | server CPU % | server RSS | kB/s per viewer | live frames/s (all viewers) | first frame p50 / p99 | latency p50 / p99 | errors |");
        println!("|---|---|---|---|---|---|---|---|");
    }
    println!(
        "| {viewers} | {cpu} | {rss} | {:.0} | {frames_per_s:.0} | {:.0} / {:.0} ms | {:.0} / {:.0} ms | {errors} |",
        bytes_per_viewer / 1000.0,
        percentile(&first, 0.5),
        percentile(&first, 0.99),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    if let Some(e) = results.iter().find_map(|r| r.error.clone()) {
        eprintln!("first error: {e}");
    }
}

/// WebRTC viewers: each a str0m `Rtc` on its own UDP socket, driven by its own task.
mod webrtc {
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use str0m::change::{SdpAnswer, SdpOffer};
    use str0m::media::{Direction, MediaKind};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};
    use tokio::net::UdpSocket;

    use super::{now_us, ViewerResult};
    use livelens::media::{h264, sei};

    /// POSTs the offer with a minimal HTTP/1.1 client (same machine, plain HTTP).
    async fn whep(url: &str, offer: &SdpOffer) -> Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rest = url
            .strip_prefix("http://")
            .ok_or("the URL must be http://")?;
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let body = offer.to_sdp_string();
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .map_err(|e| e.to_string())?;
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
        let (head, answer) = response.split_once("\r\n\r\n").ok_or("bad HTTP response")?;
        if !head.starts_with("HTTP/1.1 201") {
            return Err(head.lines().next().unwrap_or("").to_string());
        }
        Ok(answer.to_string())
    }

    async fn viewer(url: String, until: Instant) -> ViewerResult {
        let mut r = ViewerResult::default();
        if let Err(e) = viewer_inner(&url, until, &mut r).await {
            r.error = Some(e);
        }
        r
    }

    async fn viewer_inner(url: &str, until: Instant, r: &mut ViewerResult) -> Result<(), String> {
        let started = Instant::now();
        let connected_at = now_us();
        let socket = UdpSocket::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let local: SocketAddr = socket.local_addr().map_err(|e| e.to_string())?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_h264(true)
            .build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?)
            .ok_or("candidate refused")?;
        let mut api = rtc.sdp_api();
        api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        let (offer, pending) = api.apply().ok_or("no offer")?;
        let answer = whep(url, &offer).await?;
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
                        r.first_frame.get_or_insert_with(|| started.elapsed());
                        // str0m hands over H.264 in Annex B; the SEI carries the capture time.
                        let t = h264::split_annex_b(&m.data)
                            .into_iter()
                            .take(4)
                            .find_map(sei::read_capture_time)
                            .map(|t| t.unix_us)
                            .filter(|t| *t >= connected_at);
                        if let Some(t) = t {
                            r.latencies_ms.push((now_us() - t) as f64 / 1000.0);
                        }
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

    pub fn run(url: String, viewers: usize, seconds: u64, pid: Option<u32>, header: bool) {
        str0m::crypto::from_feature_flags().install_process_default();
        let ws = url.replacen("http://", "ws://", 1);
        let spawn = |url: String, until: Instant| tokio::spawn(viewer(url, until));
        super::measure(&url, &ws, viewers, seconds, pid, header, spawn);
    }
}
