//! MSE over WebSocket, sans-IO: published frames in, the messages to send out.
//!
//! The protocol is go2rtc's, so its players work unchanged: a text message
//! `{"type":"mse","value":"video/mp4; codecs=\"…\""}`, then the init segment and one fragment per
//! frame as binary messages (the moof, then the mdat: MSE parses a byte stream, so players that
//! append what they receive need nothing more). The fragments are the camera's, made once and
//! shared by every viewer ([`fmp4::fragment`] through [`Packet::fmp4`]); what is a viewer's own is
//! its init segment (which tracks it plays), codec changes, drop notices, and the start of its
//! timeline: each viewer's first frame is at time 0, as go2rtc's players expect (a copy of the
//! ~100-byte moof with that time in its `tfdt`; the mdat with the picture is shared). A new codec description (camera restarted with new settings) sends a
//! new `mse` message and init segment. A viewer that fell behind is told `{"type":"drop","frames":N}`
//! (the hub has already skipped it to the next keyframe).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use super::fmp4::{self, audio_fits_mp4, Tracks};
use crate::hub::Packet;
use crate::media::{AudioCodec, TrackKind, VideoCodec};

const VIDEO_RATE: u32 = 90_000;

#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    Text(String),
    Binary(Bytes),
}

/// The codecs a browser said it can play (go2rtc's comma-separated form:
/// `avc1.640029,hvc1.1.6.L153.B0,mp4a.40.2,opus`), or everything when it said nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCodecs(Option<Vec<String>>);

impl ClientCodecs {
    pub fn all() -> ClientCodecs {
        ClientCodecs(None)
    }

    pub fn parse(list: &str) -> ClientCodecs {
        let codecs: Vec<String> = list
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if codecs.is_empty() {
            ClientCodecs::all()
        } else {
            ClientCodecs(Some(codecs))
        }
    }

    fn has_prefix(&self, prefixes: &[&str]) -> bool {
        match &self.0 {
            None => true,
            Some(list) => list
                .iter()
                .any(|c| prefixes.iter().any(|p| c.starts_with(p))),
        }
    }

    pub fn video(&self, v: &VideoCodec) -> bool {
        match v.codec {
            "h264" => self.has_prefix(&["avc1", "avc3"]),
            "h265" => self.has_prefix(&["hvc1", "hev1"]),
            _ => false,
        }
    }

    pub fn audio(&self, a: &AudioCodec) -> bool {
        audio_fits_mp4(a)
            && match a.codec {
                "aac" => self.has_prefix(&["mp4a"]),
                "opus" => self.has_prefix(&["opus"]),
                _ => false,
            }
    }

    fn describe(&self) -> String {
        match &self.0 {
            None => "anything".into(),
            Some(list) => list.join(","),
        }
    }
}

pub struct MseSession {
    accepts: ClientCodecs,
    /// The description whose init segment this viewer has.
    codec: Option<Arc<VideoCodec>>,
    /// The audio track's clock rate, when the init segment has an audio track.
    audio_rate: Option<u32>,
    /// The camera time (seconds) of this viewer's first frame: its time zero.
    origin: Option<f64>,
    dropped_reported: u64,
}

impl MseSession {
    pub fn new(accepts: ClientCodecs) -> MseSession {
        MseSession {
            accepts,
            codec: None,
            audio_rate: None,
            origin: None,
            dropped_reported: 0,
        }
    }

    /// The messages for one frame: usually just its shared fragment. `audio` is the camera's
    /// audio description now. An `Err` is the text for a final `{"type":"error"}` message:
    /// nothing this viewer can play.
    pub fn on_frame(
        &mut self,
        packet: &Packet,
        audio: Option<&AudioCodec>,
    ) -> Result<Vec<Outgoing>, String> {
        let mut out = Vec::new();
        if let Some(codec) = &packet.video_codec {
            if !self.codec.as_ref().is_some_and(|c| Arc::ptr_eq(c, codec)) {
                if !self.accepts.video(codec) {
                    return Err(format!(
                        "mse: the browser cannot play {} video ({}); it offered {}",
                        codec.codec,
                        codec.rfc6381,
                        self.accepts.describe()
                    ));
                }
                let tracks = Tracks {
                    video: (**codec).clone(),
                    audio: audio.filter(|a| self.accepts.audio(a)).cloned(),
                };
                let init = fmp4::init_segment(&tracks).map_err(|e| format!("mse: {e}"))?;
                out.push(Outgoing::Text(
                    json!({"type": "mse", "value": tracks.mime()}).to_string(),
                ));
                out.push(Outgoing::Binary(init));
                self.codec = Some(codec.clone());
                self.audio_rate = tracks.audio.map(|a| a.sample_rate);
                // Players start a new MediaSource for a new description: time starts again.
                self.origin = None;
            }
        }
        // Nothing before the init segment; audio only to viewers whose init segment has it.
        if self.codec.is_none() {
            return Ok(out);
        }
        let rate = match packet.track {
            TrackKind::Video => VIDEO_RATE,
            TrackKind::Audio => match self.audio_rate {
                Some(rate) => rate,
                None => return Ok(out),
            },
        };
        let secs = packet.dts as f64 / rate as f64;
        // Time zero is the first video frame; audio from before it is not sent.
        let origin = match (self.origin, packet.track) {
            (Some(o), _) => o,
            (None, TrackKind::Video) => *self.origin.insert(secs),
            (None, TrackKind::Audio) => return Ok(out),
        };
        let time = ((secs - origin) * rate as f64).round();
        if time < 0.0 {
            return Ok(out);
        }
        let fragment = packet.fmp4(|p| fmp4::fragment(p).map_err(|e| format!("mse: {e}")))?;
        out.push(Outgoing::Binary(fragment.head_with(time as u64)));
        out.push(Outgoing::Binary(fragment.body));
        Ok(out)
    }

    /// A `drop` message when the viewer lost frames since the last report.
    pub fn on_dropped(&mut self, total: u64) -> Option<Outgoing> {
        if total <= self.dropped_reported {
            return None;
        }
        let frames = total - self.dropped_reported;
        self.dropped_reported = total;
        // Written by hand to keep "type" first, as every other message has it.
        Some(Outgoing::Text(format!(
            r#"{{"type":"drop","frames":{frames}}}"#
        )))
    }
}

/// How long audio may wait for the picture it goes out with: when the video stalls, the sound
/// still flows this often.
const AUDIO_HOLD: Duration = Duration::from_millis(200);
/// The most messages one write carries (a viewer catching up on a backlog writes in pieces).
const MAX_BATCH: usize = 64;
/// The most bytes a batch gathers before it goes out (1 MiB, plus the frame that crosses it).
/// The batch holds its frames while its write waits on a slow viewer, past the ring's budget:
/// 64 messages of 3 MiB pictures were 96 MiB per viewer. A write of 1 MiB already spends far
/// more on its bytes than on the write itself, so larger batches would save nothing.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// What goes out to a viewer in one write (sans-IO: messages and time in, "write now" out).
///
/// Each write costs the kernel about as much as the bytes it carries (loopback or not: a
/// segment, a timer, the reader's wake-up), so a write carries what is ready together. A picture
/// goes out at once, or, with `[mse] batch`, once the oldest unsent one has waited that long.
/// Audio waits for the next picture: MSE plays no further than both tracks reach, so sound sent
/// ahead of its picture plays no sooner, and a camera with sound costs one write per picture,
/// not three. The caller also keeps the batch open while more frames are already waiting.
#[derive(Debug)]
pub struct Batch {
    interval: Duration,
    messages: Vec<Outgoing>,
    bytes: usize,
    /// When the oldest unsent message that is not audio (a picture, a notice) came.
    picture_since: Option<Instant>,
    /// When the oldest unsent audio came.
    audio_since: Option<Instant>,
}

impl Batch {
    /// `interval`: how long a picture may wait for others (`[mse] batch`; zero: not at all).
    pub fn new(interval: Duration) -> Batch {
        Batch {
            interval,
            messages: Vec::new(),
            bytes: 0,
            picture_since: None,
            audio_since: None,
        }
    }

    /// Adds one frame's messages (or a notice's: `audio` false).
    pub fn push(
        &mut self,
        messages: impl IntoIterator<Item = Outgoing>,
        audio: bool,
        now: Instant,
    ) {
        let before = self.messages.len();
        for m in messages {
            self.bytes += match &m {
                Outgoing::Text(t) => t.len(),
                Outgoing::Binary(b) => b.len(),
            };
            self.messages.push(m);
        }
        if self.messages.len() > before {
            let since = if audio {
                &mut self.audio_since
            } else {
                &mut self.picture_since
            };
            since.get_or_insert(now);
        }
    }

    /// When the batch has to go out; `None` while it is empty.
    pub fn deadline(&self) -> Option<Instant> {
        let picture = self.picture_since.map(|t| t + self.interval);
        let audio = self.audio_since.map(|t| t + AUDIO_HOLD);
        match (picture, audio) {
            (Some(p), Some(a)) => Some(p.min(a)),
            (p, a) => p.or(a),
        }
    }

    /// Whether to write now, unless more frames are already waiting to join.
    pub fn due(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|d| d <= now)
    }

    /// Whether a picture waits for its deadline: until then, frames need not be looked at one by
    /// one as they come (they wait in the viewer's queue and join the write at the deadline).
    pub fn holds_picture(&self) -> bool {
        self.picture_since.is_some()
    }

    /// Whether to write now whatever is waiting.
    pub fn full(&self) -> bool {
        self.messages.len() >= MAX_BATCH || self.bytes >= MAX_BATCH_BYTES
    }

    /// The messages to write; the batch starts again empty.
    pub fn take(&mut self) -> Vec<Outgoing> {
        self.picture_since = None;
        self.audio_since = None;
        self.bytes = 0;
        std::mem::take(&mut self.messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::packet::Sequencer;
    use crate::media::{Frame, TrackKind};

    fn video(codec: &'static str, rfc: &str) -> Arc<VideoCodec> {
        Arc::new(VideoCodec {
            codec,
            rfc6381: rfc.into(),
            width: 640,
            height: 360,
            fps: Some(25.0),
            parameter_sets: vec![
                Bytes::from_static(&[0x67, 0x64, 0x00, 0x1e, 0xac]),
                Bytes::from_static(&[0x68, 0xce]),
            ],
        })
    }

    fn frame(codec: &Arc<VideoCodec>, dts: i64, keyframe: bool) -> Arc<Packet> {
        Packet::new(
            Frame {
                track: TrackKind::Video,
                pts: dts,
                dts,
                keyframe,
                capture_time_us: None,
                video_codec: Some(codec.clone()),
                data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
            },
            1,
            3600,
        )
    }

    #[test]
    fn sends_mse_then_init_then_fragments_and_again_on_a_new_description() {
        let mut s = MseSession::new(ClientCodecs::parse("avc1.640029,mp4a.40.2"));
        let a = video("h264", "avc1.64001e");
        let out = s.on_frame(&frame(&a, 0, true), None).unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(
            out[0],
            Outgoing::Text(r#"{"type":"mse","value":"video/mp4; codecs=\"avc1.64001e\""}"#.into())
        );
        assert!(matches!(&out[1], Outgoing::Binary(b) if &b[4..8] == b"ftyp"));
        assert!(matches!(&out[2], Outgoing::Binary(b) if &b[4..8] == b"moof"));
        // The moof ends with the mdat's header; the payload is the frame's own bytes.
        assert!(matches!(&out[2], Outgoing::Binary(b) if b.ends_with(b"mdat")));
        assert!(matches!(&out[3], Outgoing::Binary(b) if b[..] == [0, 0, 0, 1, 0x65]));
        assert_eq!(s.on_frame(&frame(&a, 3600, false), None).unwrap().len(), 2);
        let b = video("h264", "avc1.42c01e");
        let out = s.on_frame(&frame(&b, 7200, true), None).unwrap();
        assert_eq!(
            out.len(),
            4,
            "new description: new mse message and init segment"
        );
    }

    fn aac() -> AudioCodec {
        AudioCodec {
            codec: "aac",
            rfc6381: Some("mp4a.40.2".into()),
            sample_rate: 48_000,
            channels: 1,
            extra_data: Bytes::from_static(&[0x11, 0x88]),
        }
    }

    #[test]
    fn viewers_share_one_fragment_and_audio_goes_only_to_viewers_with_an_audio_track() {
        let aac = aac();
        let codec = video("h264", "avc1.64001e");
        let mut seq = Sequencer::default();
        let key = seq.packet(Frame {
            track: TrackKind::Video,
            pts: 0,
            dts: 0,
            keyframe: true,
            capture_time_us: None,
            video_codec: Some(codec.clone()),
            data: Bytes::from_static(&[0, 0, 0, 1, 0x65]),
        });
        let sound = seq.packet(Frame::audio(1024, Bytes::from_static(&[1, 2, 3])));
        let mut with = MseSession::new(ClientCodecs::all());
        let mut without = MseSession::new(ClientCodecs::parse("avc1.640029"));
        let a = with.on_frame(&key, Some(&aac)).unwrap();
        let b = without.on_frame(&key, Some(&aac)).unwrap();
        let (Outgoing::Binary(fa), Outgoing::Binary(fb)) = (&a[3], &b[3]) else {
            panic!("fragments")
        };
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "one mdat for both viewers");
        assert_eq!(with.on_frame(&sound, Some(&aac)).unwrap().len(), 2);
        assert!(without.on_frame(&sound, Some(&aac)).unwrap().is_empty());
        // Audio before a viewer's init segment is not sent.
        let mut late = MseSession::new(ClientCodecs::all());
        assert!(late.on_frame(&sound, Some(&aac)).unwrap().is_empty());
    }

    #[test]
    fn unplayable_video_is_an_error_naming_both_sides() {
        let mut s = MseSession::new(ClientCodecs::parse("avc1.640029,mp4a.40.2,opus"));
        let err = s
            .on_frame(&frame(&video("h265", "hvc1.1.6.L93.B0"), 0, true), None)
            .unwrap_err();
        assert!(
            err.starts_with("mse: the browser cannot play h265"),
            "{err}"
        );
        assert!(err.contains("avc1.640029"), "{err}");
    }

    #[test]
    fn audio_the_browser_cannot_play_is_left_out() {
        let aac = aac();
        let a = video("h264", "avc1.64001e");
        let mut with = MseSession::new(ClientCodecs::all());
        let out = with.on_frame(&frame(&a, 0, true), Some(&aac)).unwrap();
        assert!(matches!(&out[0], Outgoing::Text(t) if t.contains("avc1.64001e,mp4a.40.2")));
        let mut without = MseSession::new(ClientCodecs::parse("avc1.640029"));
        let out = without.on_frame(&frame(&a, 0, true), Some(&aac)).unwrap();
        assert!(matches!(&out[0], Outgoing::Text(t) if !t.contains("mp4a")));
        let pcma = AudioCodec {
            codec: "pcma",
            rfc6381: None,
            sample_rate: 8000,
            channels: 1,
            extra_data: Bytes::new(),
        };
        assert!(!ClientCodecs::all().audio(&pcma));
    }

    #[test]
    fn drops_are_reported_once() {
        let mut s = MseSession::new(ClientCodecs::all());
        assert_eq!(s.on_dropped(0), None);
        assert_eq!(
            s.on_dropped(12),
            Some(Outgoing::Text(r#"{"type":"drop","frames":12}"#.into()))
        );
        assert_eq!(s.on_dropped(12), None);
    }

    fn bin(n: u8) -> Outgoing {
        Outgoing::Binary(Bytes::from(vec![n]))
    }

    #[test]
    fn a_picture_goes_out_at_once_and_audio_waits_for_it() {
        let t0 = Instant::now();
        let mut batch = Batch::new(Duration::ZERO);
        assert_eq!(batch.deadline(), None);
        assert!(!batch.due(t0));
        batch.push([bin(1), bin(2)], true, t0);
        assert!(!batch.due(t0 + Duration::from_millis(21)));
        batch.push([bin(3), bin(4)], true, t0 + Duration::from_millis(21));
        batch.push([bin(5), bin(6)], false, t0 + Duration::from_millis(40));
        assert!(batch.due(t0 + Duration::from_millis(40)));
        let sent = batch.take();
        assert_eq!(sent, (1..=6).map(bin).collect::<Vec<_>>());
        assert_eq!(batch.deadline(), None);
    }

    #[test]
    fn audio_without_pictures_still_flows() {
        let t0 = Instant::now();
        let mut batch = Batch::new(Duration::ZERO);
        batch.push([bin(1)], true, t0);
        assert!(!batch.due(t0 + AUDIO_HOLD - Duration::from_millis(1)));
        assert!(batch.due(t0 + AUDIO_HOLD));
        // No messages (audio before the viewer's time zero): nothing to wait for.
        let mut empty = Batch::new(Duration::ZERO);
        empty.push([], false, t0);
        assert_eq!(empty.deadline(), None);
    }

    #[test]
    fn with_an_interval_pictures_wait_for_the_oldest_to_be_due() {
        let t0 = Instant::now();
        let interval = Duration::from_millis(80);
        let mut batch = Batch::new(interval);
        batch.push([bin(1)], false, t0);
        batch.push([bin(2)], false, t0 + Duration::from_millis(40));
        assert!(!batch.due(t0 + Duration::from_millis(79)));
        assert_eq!(batch.deadline(), Some(t0 + interval));
        assert!(batch.due(t0 + interval));
        assert_eq!(batch.take().len(), 2);
        // A backlog goes out in pieces whatever the interval.
        for n in 0..MAX_BATCH {
            assert!(!batch.full());
            batch.push([bin(n as u8)], false, t0);
        }
        assert!(batch.full());
    }

    #[test]
    fn big_pictures_fill_a_batch_by_their_bytes() {
        let t0 = Instant::now();
        let mut batch = Batch::new(Duration::from_millis(80));
        let picture = Outgoing::Binary(Bytes::from(vec![0u8; MAX_BATCH_BYTES / 2]));
        batch.push([bin(0), picture.clone()], false, t0);
        assert!(!batch.full());
        batch.push([bin(1), picture], false, t0);
        assert!(batch.full(), "a batch holds about 1 MiB, not 64 pictures");
        assert_eq!(batch.take().len(), 4);
        assert!(!batch.full(), "empty again");
    }
}
