//! An in-process WHEP client on str0m (real ICE, DTLS and SRTP over loopback UDP), for tests
//! that check the bytes a WebRTC viewer receives.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

/// Offers `codec` ("h264" or "h265") to `whep_url` and returns the first `wanted` frames
/// (Annex B, as str0m reassembles them).
pub async fn receive(
    whep_url: &str,
    codec: &str,
    wanted: usize,
    within: Duration,
) -> Result<Vec<Arc<[u8]>>, String> {
    let want = Wanted {
        video: wanted,
        audio: None,
    };
    Ok(session(whep_url, codec, want, within).await?.video)
}

/// How much media to wait for; `audio: Some(n)` also offers Opus audio.
pub struct Wanted {
    pub video: usize,
    pub audio: Option<usize>,
}

pub struct Received {
    pub video: Vec<Arc<[u8]>>,
    /// Opus packets.
    pub audio: Vec<Arc<[u8]>>,
    /// The WHEP session's URL, for DELETE.
    pub location: String,
}

/// Offers `codec` (and Opus audio when asked) and collects media until `want` is met.
pub async fn session(
    whep_url: &str,
    codec: &str,
    want: Wanted,
    within: Duration,
) -> Result<Received, String> {
    let mut client = connect(whep_url, codec, want.audio.is_some()).await?;
    let deadline = Instant::now() + within;
    let mut frames = Vec::new();
    let mut audio = Vec::new();
    while frames.len() < want.video || audio.len() < want.audio.unwrap_or(0) {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} frames and {} audio packets within {within:?}",
                frames.len(),
                audio.len()
            ));
        }
        let audio_mid = client.audio_mid;
        client
            .step(|mid, data| {
                if Some(mid) == audio_mid {
                    audio.push(data)
                } else {
                    frames.push(data)
                }
            })
            .await?;
    }
    Ok(Received {
        video: frames,
        audio,
        location: client.location,
    })
}

/// A str0m client whose offer the server answered.
struct Connected {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    /// The WHEP session's URL, for DELETE.
    location: String,
    audio_mid: Option<Mid>,
}

impl Connected {
    /// Drives str0m once: sends what it has to send, hands each media payload to `on_media`,
    /// then feeds it the next datagram or its timeout.
    async fn step(&mut self, mut on_media: impl FnMut(Mid, Arc<[u8]>)) -> Result<(), String> {
        let timeout = loop {
            match self.rtc.poll_output().map_err(|e| e.to_string())? {
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Timeout(t) => break t,
                Output::Event(Event::MediaData(m)) => on_media(m.mid, m.data.clone()),
                Output::Event(_) => {}
            }
        };
        let wait = timeout
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let mut buf = [0u8; 2000];
        let input = match tokio::time::timeout(wait, self.socket.recv_from(&mut buf)).await {
            Ok(Ok((n, source))) => {
                let Ok(contents) = buf[..n].try_into() else {
                    return Ok(());
                };
                Input::Receive(
                    Instant::now(),
                    Receive {
                        proto: Protocol::Udp,
                        source,
                        destination: self.local,
                        contents,
                    },
                )
            }
            _ => Input::Timeout(Instant::now()),
        };
        self.rtc.handle_input(input).map_err(|e| e.to_string())
    }
}

/// Offers `codec` video (and Opus audio when `audio`) to `whep_url` and applies the answer.
async fn connect(whep_url: &str, codec: &str, audio: bool) -> Result<Connected, String> {
    str0m::crypto::from_feature_flags().install_process_default();
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let local: SocketAddr = socket.local_addr().map_err(|e| e.to_string())?;
    let builder = Rtc::builder().clear_codecs();
    let builder = if codec == "h265" {
        builder.enable_h265(true)
    } else {
        builder.enable_h264(true)
    };
    let builder = if audio {
        builder.enable_opus(true, false)
    } else {
        builder
    };
    let mut rtc = builder.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let audio_mid =
        audio.then(|| api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None));
    let (offer, pending) = api.apply().ok_or("no offer")?;
    let response = reqwest::Client::new()
        .post(whep_url)
        .header("content-type", "application/sdp")
        .body(offer.to_sdp_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != 201 {
        return Err(format!(
            "WHEP answered {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        ));
    }
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(|l| {
            let base = reqwest::Url::parse(whep_url).expect("WHEP URL");
            base.join(l).expect("location").to_string()
        })
        .unwrap_or_default();
    let answer = SdpAnswer::from_sdp_string(&response.text().await.map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, answer)
        .map_err(|e| e.to_string())?;
    Ok(Connected {
        rtc,
        socket,
        local,
        location,
        audio_mid,
    })
}

/// A viewer that keeps receiving in its own task until told to go, counting video frames.
pub struct LiveViewer {
    pub frames: Arc<std::sync::atomic::AtomicUsize>,
    pub location: String,
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl LiveViewer {
    /// Offers H.264 to `whep_url` and starts receiving. Errors if the offer is refused.
    pub async fn start(whep_url: &str) -> Result<LiveViewer, String> {
        let client = connect(whep_url, "h264", false).await?;
        let location = client.location.clone();
        let frames = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(receive_until(client, frames.clone(), stop.clone()));
        Ok(LiveViewer {
            frames,
            location,
            stop,
            task,
        })
    }

    pub fn frames(&self) -> usize {
        self.frames.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Goes away without a word (like a killed tab): no DELETE, no DTLS close.
    pub async fn vanish(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn receive_until(
    mut client: Connected,
    frames: Arc<std::sync::atomic::AtomicUsize>,
    stop: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    let count = |_, _| {
        frames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    };
    while client.rtc.is_alive() {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = client.step(count) => r?,
        }
    }
    Ok(())
}

/// `n` live viewers of `whep_url`, returned when each has received `frames` frames (panics
/// naming how many are behind after `within` per wave).
///
/// They arrive in waves of at most 50, each wave live before the next, as an audience does:
/// 200 DTLS handshakes in one instant, on the 2 cores that also run this client's 200 SRTP
/// receivers and the server's senders, left a few unfinished after livelens's 10 s in CI.
pub async fn live_viewers(
    whep_url: &str,
    n: usize,
    frames: usize,
    within: Duration,
) -> Vec<LiveViewer> {
    const WAVE: usize = 50;
    let mut viewers: Vec<LiveViewer> = Vec::with_capacity(n);
    while viewers.len() < n {
        let wave = WAVE.min(n - viewers.len());
        let started: Vec<LiveViewer> =
            futures_util::future::join_all((0..wave).map(|_| LiveViewer::start(whep_url)))
                .await
                .into_iter()
                .collect::<Result<_, _>>()
                .expect("every offer answered");
        viewers.extend(started);
        let deadline = Instant::now() + within;
        while viewers.iter().any(|v| v.frames() < frames) {
            let behind = viewers.iter().filter(|v| v.frames() < frames).count();
            assert!(
                Instant::now() < deadline,
                "{behind} of {} viewers got < {frames} frames",
                viewers.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    viewers
}
