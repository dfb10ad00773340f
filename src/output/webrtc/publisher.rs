//! A WHIP publisher (RFC 9725): a browser or an encoder sending its camera to a `publish:`
//! camera over WebRTC, driven in the worker loops beside the viewers and on the same port.
//!
//! str0m runs in RTP mode for publishers as for viewers, so what arrives is RTP, and it goes
//! through the same sans-IO ingest as an RTSP publisher's (`output::rtp_ingest`): one
//! depacketizer, one way parameter sets become the camera's description.
//!
//! Keyframes: a WebRTC encoder sends one only when asked, so the publisher is asked (PLI) as it
//! connects, every [`KEYFRAME_INTERVAL`] after, and at once after a loss (a damaged packet, a
//! frame the camera could not take). A late viewer gets the cached GOP at once; a viewer that
//! fell behind waits at most that long for a picture; the GOP cache stays a couple of seconds.

use std::time::{Duration, Instant};

use str0m::format::{Codec, PayloadParams};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Pt};
use str0m::rtp::RtpPacket;
use str0m::Rtc;

use crate::media::av_sync::Report;
use crate::media::rtp_video::VideoKind;
use crate::media::{AudioCodec, Frame, TrackKind};
use crate::output::rtp_ingest::{Announced, AnnouncedAudio, AnnouncedVideo, Ingest, RtpFields};
use crate::source::publish::Publication;

/// How often a publisher is asked for a keyframe.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_secs(2);
/// After a loss (a damaged packet, a frame the camera could not take), a keyframe is asked
/// for at once, but not more often than this.
const LOSS_REQUEST_GAP: Duration = Duration::from_millis(500);

/// What a negotiated payload type carries.
#[derive(Debug, Clone)]
enum Carried {
    Video(VideoKind),
    Audio(AudioCodec),
}

/// A publisher peer's side of things: its hold on the camera and its ingest.
pub struct Publishing {
    publication: Publication,
    /// The payload types the answer accepted, and what each carries.
    carried: Vec<(Pt, Carried)>,
    video_mid: Option<Mid>,
    /// The tracks the ingest takes now (a payload type seen first rebuilds it).
    announced: Announced,
    ingest: Ingest,
    next_keyframe_request: Option<Instant>,
    last_keyframe_request: Option<Instant>,
    /// Reused for the frames each packet completes.
    frames: Vec<Frame>,
    /// The clock packets' arrival is counted on.
    started: Instant,
    /// The wall time of the last sender report given to the ingest, per track.
    last_report: [Option<std::time::SystemTime>; 2],
}

fn track_index(track: TrackKind) -> usize {
    match track {
        TrackKind::Video => 0,
        TrackKind::Audio => 1,
    }
}

impl Publishing {
    pub fn new(publication: Publication) -> Publishing {
        let announced = Announced {
            video: None,
            audio: None,
        };
        Publishing {
            publication,
            carried: Vec::new(),
            video_mid: None,
            ingest: Ingest::new(&announced),
            announced,
            next_keyframe_request: None,
            last_keyframe_request: None,
            frames: Vec::new(),
            started: Instant::now(),
            last_report: [None, None],
        }
    }

    /// A media line of the offer was accepted: learn its payload types.
    pub fn media_added(&mut self, mid: Mid, kind: MediaKind, params: &[PayloadParams]) {
        if kind == MediaKind::Video {
            self.video_mid = Some(mid);
        }
        for p in params {
            let carried = match p.spec().codec {
                Codec::H264 => Carried::Video(VideoKind::H264),
                Codec::H265 => Carried::Video(VideoKind::H265),
                Codec::Opus => Carried::Audio(AudioCodec::opus()),
                Codec::PCMA => Carried::Audio(AudioCodec::g711("pcma")),
                Codec::PCMU => Carried::Audio(AudioCodec::g711("pcmu")),
                _ => continue,
            };
            self.carried.push((p.pt(), carried));
        }
    }

    /// ICE and DTLS are up: ask for a keyframe at once.
    pub fn connected(&mut self, now: Instant) {
        self.next_keyframe_request = Some(now);
    }

    /// One RTP packet from the publisher. False once the camera no longer takes this
    /// publisher (stopped, or timed out), which ends the peer.
    pub fn packet(&mut self, packet: &RtpPacket) -> bool {
        let pt = packet.header.payload_type;
        let Some((_, carried)) = self.carried.iter().find(|(p, _)| *p == pt) else {
            return true; // RTX, FEC or padding: the ingest takes media only
        };
        let pt_byte = *pt;
        let track = match carried {
            Carried::Video(kind) => {
                if self.announced.video.as_ref().map(|v| v.payload_type) != Some(pt_byte) {
                    self.announced.video = Some(AnnouncedVideo {
                        control: String::new(),
                        payload_type: pt_byte,
                        kind: *kind,
                        codec: None,
                    });
                    self.rebuild();
                }
                TrackKind::Video
            }
            Carried::Audio(codec) => {
                if self.announced.audio.as_ref().map(|a| a.payload_type) != Some(pt_byte) {
                    self.announced.audio = Some(AnnouncedAudio {
                        control: String::new(),
                        payload_type: pt_byte,
                        codec: codec.clone(),
                    });
                    self.rebuild();
                }
                TrackKind::Audio
            }
        };
        // str0m read the sender's reports: they put audio and video on one timeline.
        if let Some(info) = packet.last_sender_info {
            if self.last_report.get(track_index(track)) != Some(&Some(info.ntp_time)) {
                self.last_report[track_index(track)] = Some(info.ntp_time);
                let wall_us = info
                    .ntp_time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_micros() as i64);
                self.ingest.sender_report(
                    track,
                    Report {
                        wall_us,
                        rtp: info.rtp_time.numer() as u32,
                    },
                );
            }
        }
        let now_us = packet
            .timestamp
            .saturating_duration_since(self.started)
            .as_micros() as i64;
        let fields = RtpFields {
            sequence: packet.header.sequence_number,
            time: packet.header.timestamp,
            marker: packet.header.marker,
            payload_type: pt_byte,
        };
        // A damaged packet is dropped by the ingest, which then waits for a keyframe.
        let damaged = self
            .ingest
            .push_rtp(track, fields, &packet.payload, now_us, &mut self.frames)
            .is_err();
        let publication = &self.publication;
        let taken = self
            .frames
            .drain(..)
            .all(|frame| publication.publish(frame));
        if damaged || publication.wants_keyframe() {
            self.keyframe_soon(Instant::now());
        }
        taken
    }

    /// Asks for a keyframe at the next timeout, unless one was asked for just now.
    fn keyframe_soon(&mut self, now: Instant) {
        let recent = self
            .last_keyframe_request
            .is_some_and(|t| now.duration_since(t) < LOSS_REQUEST_GAP);
        if !recent && self.next_keyframe_request.is_some() {
            self.next_keyframe_request = Some(now);
        }
    }

    fn rebuild(&mut self) {
        self.ingest = Ingest::new(&self.announced);
        self.last_report = [None, None];
        // The camera learns of its audio as soon as a packet of it arrives.
        let _ = self.publication.set_audio(self.ingest.audio());
    }

    /// The video line to ask a keyframe of, when one is due.
    pub fn keyframe_due(&mut self, now: Instant) -> Option<Mid> {
        let due = self.next_keyframe_request.is_some_and(|t| t <= now);
        if !due {
            return None;
        }
        self.next_keyframe_request = Some(now + KEYFRAME_INTERVAL);
        self.last_keyframe_request = Some(now);
        self.video_mid
    }

    /// When the next keyframe request is due (the loop must wake for it).
    pub fn next_wake(&self) -> Option<Instant> {
        self.next_keyframe_request
    }

    /// The camera let this publisher go.
    pub fn is_closed(&self) -> bool {
        self.publication.is_closed()
    }
}

/// Asks the publisher for a keyframe on its video line.
pub fn request_keyframe(rtc: &mut Rtc, mid: Mid) {
    if let Some(stream) = rtc.direct_api().stream_rx_by_mid(mid, None) {
        stream.request_keyframe(KeyframeRequestKind::Pli);
    }
}
