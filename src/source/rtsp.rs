//! `rtsp://` cameras, read natively with retina (no FFmpeg in the path).
//!
//! One call to [`run`] is one RTSP session: DESCRIBE, SETUP of the video track (H.264/H.265) and
//! of one audio track (AAC, PCMA, PCMU), PLAY, then frames until cancelled or the camera fails.
//! The hub's supervisor retries failures with back-off.
//!
//! Ownership: every retina session belongs to a [`SessionGroup`] made by `run`. Dropping the
//! session (on cancel or error) makes retina send TEARDOWN from a task it registers in that
//! group; `run` awaits the group (bounded) before returning, so a stopped camera leaves no session
//! behind on the camera.
//!
//! Opus audio: retina 0.4.21 has no Opus depacketizer, and its demuxer refuses a session with a
//! track it cannot depacketize. Cameras with Opus audio are therefore read from raw RTP packets:
//! video through livelens's own [`VideoDepacketizer`], Opus one packet per RTP payload.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use retina::client::{
    Credentials, PacketItem, PlayOptions, Session, SessionGroup, SessionOptions, SetupOptions,
    TeardownPolicy, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef, VideoParameters, VideoParametersCodec};
use tokio_util::sync::CancellationToken;

use super::Publisher;
use super::SourceError;
use crate::common::{format_duration, mask_credentials};
use crate::media::dts::DtsExtractor;
use crate::media::rtp_video::{nal_unit_type, parameter_set_types, VideoDepacketizer, VideoKind};
use crate::media::{h264, sei, video_params, AudioCodec, Frame, TrackKind, VideoCodec};

/// How long a stop waits for TEARDOWN to be answered before giving up on it.
const TEARDOWN_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    Tcp,
    Udp,
}

/// Per-camera RTSP options (`transport`, `timeout`, `user_agent` in the camera's config).
#[derive(Debug, Clone, PartialEq)]
pub struct RtspOptions {
    pub transport: RtspTransport,
    /// Bound on connecting, each RTSP request, and silence while playing.
    pub timeout: Duration,
    pub user_agent: Option<String>,
}

impl Default for RtspOptions {
    fn default() -> Self {
        RtspOptions {
            transport: RtspTransport::Tcp,
            timeout: Duration::from_secs(10),
            user_agent: None,
        }
    }
}

impl RtspOptions {
    pub fn parse_transport(text: &str) -> Result<RtspTransport, String> {
        match text {
            "tcp" => Ok(RtspTransport::Tcp),
            "udp" => Ok(RtspTransport::Udp),
            _ => Err(format!(
                "{text:?} is not a transport (expected \"tcp\" or \"udp\")"
            )),
        }
    }
}

/// Splits `rtsp://user:pass@host/path` into the URL without credentials and the credentials
/// (percent-decoded), as retina wants them.
pub fn split_credentials(url: &str) -> Result<(url::Url, Option<Credentials>), String> {
    let mut parsed =
        url::Url::parse(url).map_err(|e| format!("{} is not a URL: {e}", mask_credentials(url)))?;
    if parsed.scheme() != "rtsp" {
        return Err(format!(
            "{}: only rtsp:// is supported",
            mask_credentials(url)
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{} has no host", mask_credentials(url)));
    }
    let creds = if parsed.username().is_empty() {
        None
    } else {
        Some(Credentials {
            username: percent_decode(parsed.username()),
            password: percent_decode(parsed.password().unwrap_or("")),
        })
    };
    let _ = parsed.set_username("");
    let _ = parsed.set_password(None);
    Ok((parsed, creds))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Turns a retina error into a short reason a user can act on (retina's own messages carry
/// connection and packet context over several lines; that goes to the debug log).
pub fn reason_for(e: &retina::Error, timeout: Duration) -> String {
    tracing::debug!(error = %mask_credentials(&e.to_string()), "rtsp error");
    if let Some(code) = e.status_code() {
        return match code {
            401 => "401 unauthorized (check the user name and password)".into(),
            403 => "403 forbidden".into(),
            404 => "404 not found (check the path)".into(),
            454 => "454 session not found".into(),
            503 => "503 service unavailable (the camera may be at its client limit)".into(),
            c => format!("RTSP status {c} from the camera"),
        };
    }
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("connection refused") {
        "connection refused".into()
    } else if lower.contains("timed out") || lower.contains("timeout") {
        format!("timeout after {}", format_duration(timeout))
    } else if lower.contains("connection reset") || lower.contains("broken pipe") {
        "connection reset by the camera".into()
    } else if lower.contains("no route to host") || lower.contains("network is unreachable") {
        "no route to the camera".into()
    } else if lower.contains("lookup") || lower.contains("name or service not known") {
        "cannot resolve the camera's host name".into()
    } else if lower.contains("eof") || lower.contains("unexpected end") {
        "the camera closed the connection".into()
    } else if lower.contains("framing error") || lower.contains("parse") {
        format!(
            "the server does not speak RTSP: {}",
            mask_credentials(text.lines().next().unwrap_or(""))
        )
    } else {
        mask_credentials(text.lines().next().unwrap_or("unknown RTSP error"))
    }
}

/// Builds the codec description from retina's parameters.
pub fn video_codec(params: &VideoParameters) -> Option<VideoCodec> {
    let (codec, parameter_sets) = match params.codec_params() {
        VideoParametersCodec::H264 { sps, pps } => ("h264", vec![sps.clone(), pps.clone()]),
        VideoParametersCodec::H265 { vps, sps, pps } => {
            ("h265", vec![vps.clone(), sps.clone(), pps.clone()])
        }
        _ => return None,
    };
    let (width, height) = params.pixel_dimensions();
    Some(VideoCodec {
        codec,
        rfc6381: params.rfc6381_codec().to_string(),
        width,
        height,
        fps: params
            .frame_rate()
            .filter(|(num, _)| *num > 0)
            .map(|(num, den)| den as f64 / num as f64),
        parameter_sets,
    })
}

fn audio_codec(encoding: &str, params: Option<ParametersRef<'_>>) -> Option<AudioCodec> {
    let Some(ParametersRef::Audio(a)) = params else {
        return None;
    };
    Some(AudioCodec {
        codec: match encoding {
            "mpeg4-generic" => "aac",
            "pcma" => "pcma",
            "pcmu" => "pcmu",
            _ => return None,
        },
        rfc6381: a.rfc6381_codec().map(str::to_string),
        sample_rate: a.clock_rate(),
        channels: a.channels().get(),
        extra_data: Bytes::copy_from_slice(a.extra_data()),
    })
}

/// A described RTSP session with its chosen tracks.
struct Described {
    session: Session<retina::client::Described>,
    video: usize,
    audio: Option<usize>,
    /// Audio tracks present but not ingested, and why.
    skipped_audio: Option<String>,
}

async fn describe(
    url: &str,
    options: &RtspOptions,
    group: Arc<SessionGroup>,
) -> Result<Described, SourceError> {
    let (url, creds) = split_credentials(url).map_err(SourceError::permanent)?;
    let mut session_options = SessionOptions::default()
        .creds(creds)
        .session_group(group)
        .teardown(TeardownPolicy::Always);
    if let Some(agent) = &options.user_agent {
        session_options = session_options.user_agent(agent.clone());
    }
    let session = bounded(options.timeout, Session::describe(url, session_options)).await?;
    let streams = session.streams();
    let video = streams
        .iter()
        .position(|s| s.media() == "video" && matches!(s.encoding_name(), "h264" | "h265"))
        .ok_or_else(|| {
            let found: Vec<String> = streams
                .iter()
                .map(|s| format!("{}/{}", s.media(), s.encoding_name()))
                .collect();
            SourceError::retryable(format!(
                "no H.264/H.265 video track (the camera offers: {})",
                if found.is_empty() {
                    "nothing".into()
                } else {
                    found.join(", ")
                }
            ))
        })?;
    let audio = streams.iter().position(|s| {
        s.media() == "audio"
            && matches!(
                s.encoding_name(),
                "mpeg4-generic" | "pcma" | "pcmu" | "opus"
            )
    });
    let skipped_audio = if audio.is_none() {
        streams
            .iter()
            .find(|s| s.media() == "audio")
            .map(|s| format!("{} audio is not ingested yet", s.encoding_name()))
    } else {
        None
    };
    Ok(Described {
        session,
        video,
        audio,
        skipped_audio,
    })
}

/// Awaits an RTSP step with the camera's timeout, mapping both failures to a reason.
async fn bounded<T>(
    timeout: Duration,
    step: impl std::future::Future<Output = Result<T, retina::Error>>,
) -> Result<T, SourceError> {
    match tokio::time::timeout(timeout, step).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SourceError::retryable(reason_for(&e, timeout))),
        Err(_) => Err(SourceError::retryable(format!(
            "timeout after {}",
            format_duration(timeout)
        ))),
    }
}

async fn play(
    mut described: Described,
    options: &RtspOptions,
) -> Result<Session<retina::client::Playing>, SourceError> {
    let transport = match options.transport {
        RtspTransport::Tcp => Transport::Tcp(Default::default()),
        RtspTransport::Udp => Transport::Udp(Default::default()),
    };
    for i in std::iter::once(described.video).chain(described.audio) {
        let setup = SetupOptions::default()
            .transport(transport.clone())
            .frame_format(FrameFormat::MP4);
        bounded(options.timeout, described.session.setup(i, setup)).await?;
    }
    bounded(
        options.timeout,
        described.session.play(PlayOptions::default()),
    )
    .await
}

async fn play_demuxed(
    described: Described,
    options: &RtspOptions,
) -> Result<retina::client::Demuxed, SourceError> {
    play(described, options)
        .await?
        .demuxed()
        .map_err(|e| SourceError::retryable(reason_for(&e, options.timeout)))
}

/// The next item of a playing session; silence longer than `timeout` and the end of the stream
/// are errors with a reason.
async fn next_item<S, T>(stream: &mut S, timeout: Duration) -> Result<T, SourceError>
where
    S: futures_util::Stream<Item = Result<T, retina::Error>> + Unpin,
{
    match tokio::time::timeout(timeout, stream.next()).await {
        Err(_) => Err(SourceError::retryable(format!(
            "timeout after {}: no data from the camera",
            format_duration(timeout)
        ))),
        Ok(None) => Err(SourceError::retryable("the camera ended the stream")),
        Ok(Some(Err(e))) => Err(SourceError::retryable(reason_for(&e, timeout))),
        Ok(Some(Ok(item))) => Ok(item),
    }
}

/// Runs one RTSP session until `cancel` fires (Ok) or it fails (Err). TEARDOWN is awaited.
pub async fn run(
    url: &str,
    options: &RtspOptions,
    publisher: &Publisher,
    cancel: &CancellationToken,
) -> Result<(), SourceError> {
    let group = Arc::new(SessionGroup::default());
    let result = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = session(url, options, publisher, group.clone()) => r,
    };
    // The session future is gone, so retina has started its TEARDOWN; wait for the answer.
    if tokio::time::timeout(TEARDOWN_WAIT, group.await_teardown())
        .await
        .is_err()
    {
        tracing::debug!(
            camera = publisher.camera_id(),
            "TEARDOWN not answered in time"
        );
    }
    result
}

async fn session(
    url: &str,
    options: &RtspOptions,
    publisher: &Publisher,
    group: Arc<SessionGroup>,
) -> Result<(), SourceError> {
    let described = describe(url, options, group).await?;
    let (video_i, audio_i) = (described.video, described.audio);
    let audio_encoding =
        audio_i.map(|i| described.session.streams()[i].encoding_name().to_string());
    if let Some(why) = &described.skipped_audio {
        tracing::warn!(camera = publisher.camera_id(), "{why}");
    }
    if audio_encoding.as_deref() == Some("opus") {
        return session_raw(described, options, publisher).await;
    }
    // Describe the audio before the first frame makes the camera live, when the SDP allows.
    let mut audio_set = false;
    if let Some(i) = audio_i {
        let codec = audio_codec(
            audio_encoding.as_deref().unwrap_or(""),
            described.session.streams()[i].parameters(),
        );
        audio_set = codec.is_some();
        publisher.set_audio(codec);
    } else {
        publisher.set_audio(None);
    }
    let mut demuxed = play_demuxed(described, options).await?;
    let mut video: Option<Arc<VideoCodec>> = None;
    // RTP carries presentation times only: B-frames need decode times of their own.
    let mut dts: Option<DtsExtractor> = None;
    loop {
        let item = next_item(&mut demuxed, options.timeout).await?;
        match item {
            CodecItem::VideoFrame(frame) if frame.stream_id() == video_i => {
                if video.is_none() || frame.has_new_parameters() {
                    // A new description (new SPS/PPS) reaches outputs with the frame that uses it.
                    video = match demuxed.streams()[video_i].parameters() {
                        Some(ParametersRef::Video(p)) => video_codec(p).map(Arc::new),
                        _ => None,
                    };
                }
                let Some(codec) = video.clone() else {
                    continue; // parameters arrive with the first keyframe
                };
                let pts = frame.timestamp().elapsed();
                let keyframe = frame.is_random_access_point();
                let data = Bytes::from(frame.into_data());
                let capture_time_us = if codec.codec == "h264" {
                    h264::length_prefixed_nals(&data)
                        .take(4)
                        .find_map(sei::read_capture_time)
                        .map(|t| t.unix_us)
                } else {
                    None
                };
                let dts = dts
                    .get_or_insert_with(|| DtsExtractor::for_codec(&codec))
                    .extract(pts);
                publisher.publish(Frame {
                    track: TrackKind::Video,
                    pts,
                    dts,
                    keyframe,
                    capture_time_us,
                    video_codec: Some(codec),
                    data,
                });
            }
            CodecItem::AudioFrame(frame) if Some(frame.stream_id()) == audio_i => {
                if !audio_set {
                    let encoding = audio_encoding.as_deref().unwrap_or("");
                    let codec =
                        audio_codec(encoding, demuxed.streams()[frame.stream_id()].parameters());
                    publisher.set_audio(codec);
                    audio_set = true;
                }
                publisher.publish(Frame::audio(
                    frame.timestamp().elapsed(),
                    Bytes::copy_from_slice(frame.data()),
                ));
            }
            _ => {}
        }
    }
}

/// The raw-packet path for cameras whose audio is Opus: retina's demuxer refuses a session with a
/// track it cannot depacketize, so video goes through [`VideoDepacketizer`] and each Opus RTP
/// payload is one Opus packet (RFC 7587).
async fn session_raw(
    described: Described,
    options: &RtspOptions,
    publisher: &Publisher,
) -> Result<(), SourceError> {
    let (video_i, audio_i) = (described.video, described.audio);
    let streams = described.session.streams();
    let kind = match streams[video_i].encoding_name() {
        "h265" => VideoKind::H265,
        _ => VideoKind::H264,
    };
    // Parameters from the SDP (sprop-parameter-sets), if the camera sent them.
    let mut video: Option<Arc<VideoCodec>> = match streams[video_i].parameters() {
        Some(ParametersRef::Video(p)) => video_codec(p).map(Arc::new),
        _ => None,
    };
    let sdp_fps = streams[video_i].framerate().map(f64::from);
    if let Some(i) = audio_i {
        publisher.set_audio(Some(AudioCodec {
            codec: "opus",
            rfc6381: Some("opus".into()),
            sample_rate: 48_000,
            channels: streams[i].channels().map_or(2, |c| c.get()),
            extra_data: Bytes::new(),
        }));
    }
    let mut playing = std::pin::pin!(play(described, options).await?);
    let mut depacketizer = VideoDepacketizer::new(kind);
    let mut dts: Option<DtsExtractor> = None;
    loop {
        let item = next_item(&mut playing, options.timeout).await?;
        let PacketItem::Rtp(packet) = item else {
            continue;
        };
        if packet.stream_id() == video_i {
            let pushed = depacketizer.push(
                packet.sequence_number(),
                packet.timestamp().elapsed(),
                packet.mark(),
                packet.payload(),
            );
            if let Err(e) = pushed {
                tracing::debug!(camera = publisher.camera_id(), "bad RTP video payload: {e}");
            }
            while let Some(au) = depacketizer.pull() {
                video = video_params::update(kind, video, &au.nals, sdp_fps);
                let Some(codec) = video.clone() else {
                    continue; // no parameter sets yet
                };
                let sets = parameter_set_types(kind);
                let data = h264::to_length_prefixed(
                    au.nals
                        .iter()
                        .filter(|n| !sets.contains(&nal_unit_type(kind, n)))
                        .map(|n| &n[..]),
                );
                let dts = dts
                    .get_or_insert_with(|| DtsExtractor::for_codec(&codec))
                    .extract(au.timestamp);
                publisher.publish(Frame {
                    track: TrackKind::Video,
                    pts: au.timestamp,
                    dts,
                    keyframe: au.keyframe,
                    capture_time_us: None,
                    video_codec: Some(codec),
                    data,
                });
            }
        } else if Some(packet.stream_id()) == audio_i {
            let pts = packet.timestamp().elapsed();
            publisher.publish(Frame::audio(pts, packet.into_payload_bytes()));
        }
    }
}

/// What `livelens probe` prints and the UI's Test shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeReport {
    pub tracks: Vec<ProbeTrack>,
    /// Until the DESCRIBE answer (none for a source that has no session to set up).
    pub describe_ms: Option<f64>,
    pub first_frame_ms: Option<f64>,
    pub first_keyframe_ms: Option<f64>,
    /// Frames from one keyframe to the next, when two were seen within the timeout.
    pub gop_frames: Option<u32>,
    pub measured_fps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeTrack {
    pub media: String,
    pub encoding: String,
    pub clock_rate: u32,
    pub codec: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fps: Option<f64>,
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
    pub ingested: bool,
}

/// Connects, reads until the second keyframe (or the timeout) and reports what it found.
pub async fn probe(url: &str, options: &RtspOptions) -> Result<ProbeReport, String> {
    let start = Instant::now();
    let group = Arc::new(SessionGroup::default());
    let result = probe_session(url, options, group.clone(), start).await;
    let _ = tokio::time::timeout(TEARDOWN_WAIT, group.await_teardown()).await;
    result
}

async fn probe_session(
    url: &str,
    options: &RtspOptions,
    group: Arc<SessionGroup>,
    start: Instant,
) -> Result<ProbeReport, String> {
    let mut described = describe(url, options, group).await.map_err(|e| e.reason)?;
    // The probe reads frames through retina's demuxer, which cannot take an Opus track; the
    // track is still listed (and marked ingested, as `serve` ingests it).
    let opus = described
        .audio
        .filter(|&i| described.session.streams()[i].encoding_name() == "opus");
    if opus.is_some() {
        described.audio = None;
    }
    let describe_ms = ms(start.elapsed());
    let ingested = [Some(described.video), described.audio, opus];
    let mut tracks: Vec<ProbeTrack> = described
        .session
        .streams()
        .iter()
        .enumerate()
        .map(|(i, s)| ProbeTrack {
            media: s.media().to_string(),
            encoding: s.encoding_name().to_string(),
            clock_rate: s.clock_rate_hz(),
            codec: None,
            width: None,
            height: None,
            fps: s.framerate().map(f64::from),
            sample_rate: (s.media() == "audio").then(|| s.clock_rate_hz()),
            channels: s.channels().map(|c| c.get()),
            ingested: ingested.contains(&Some(i)),
        })
        .collect();
    let video_i = described.video;
    let mut demuxed = play_demuxed(described, options)
        .await
        .map_err(|e| e.reason)?;
    let (mut first_frame, mut first_key, mut gop, mut frames_since_key) = (None, None, None, 0u32);
    let mut video_frames = 0u32;
    let mut first_video_pts: Option<i64> = None;
    let mut last_video_pts = 0i64;
    let deadline = tokio::time::Instant::now() + options.timeout;
    while gop.is_none() {
        let item = match tokio::time::timeout_at(deadline, demuxed.next()).await {
            Err(_) | Ok(None) => break,
            Ok(Some(Err(e))) => return Err(reason_for(&e, options.timeout)),
            Ok(Some(Ok(item))) => item,
        };
        if let CodecItem::VideoFrame(f) = item {
            if f.stream_id() != video_i {
                continue;
            }
            first_frame.get_or_insert_with(|| ms(start.elapsed()));
            let pts = f.timestamp().elapsed();
            first_video_pts.get_or_insert(pts);
            last_video_pts = pts;
            if first_key.is_some() {
                video_frames += 1;
            }
            if f.is_random_access_point() {
                if first_key.is_some() {
                    gop = Some(frames_since_key);
                }
                first_key.get_or_insert_with(|| ms(start.elapsed()));
                frames_since_key = 0;
            }
            frames_since_key += 1;
        }
    }
    for (i, s) in demuxed.streams().iter().enumerate() {
        match s.parameters() {
            Some(ParametersRef::Video(p)) => {
                let (w, h) = p.pixel_dimensions();
                tracks[i].codec = Some(p.rfc6381_codec().to_string());
                tracks[i].width = Some(w);
                tracks[i].height = Some(h);
                if let Some(c) = video_codec(p) {
                    tracks[i].fps = c.fps.or(tracks[i].fps);
                }
            }
            Some(ParametersRef::Audio(a)) => {
                tracks[i].codec = a.rfc6381_codec().map(str::to_string);
                tracks[i].sample_rate = Some(a.clock_rate());
                tracks[i].channels = Some(a.channels().get());
            }
            _ => {}
        }
    }
    let span = (last_video_pts - first_video_pts.unwrap_or(0)) as f64 / 90_000.0;
    let measured_fps = (video_frames > 1 && span > 0.0)
        .then(|| (video_frames as f64 / span * 10.0).round() / 10.0);
    Ok(ProbeReport {
        tracks,
        describe_ms: Some(describe_ms),
        first_frame_ms: first_frame,
        first_keyframe_ms: first_key,
        gop_frames: gop,
        measured_fps,
        note: None,
    })
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_split_and_decoded() {
        let (url, creds) = split_credentials("rtsp://ad%40min:p%3Ass@10.0.0.2:554/s?x=1").unwrap();
        assert_eq!(url.as_str(), "rtsp://10.0.0.2:554/s?x=1");
        let creds = creds.unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("ad@min", "p:ss")
        );
        let (_, none) = split_credentials("rtsp://cam/s").unwrap();
        assert!(none.is_none());
        let err = split_credentials("rtsp://u:secret@/x").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }
}
