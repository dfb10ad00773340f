//! What an RTMP publisher sends (`output::rtmp::flv`): FLV video and audio tag bodies with
//! their timestamps, all chosen by the publisher.
//!
//! Input: tags, each a kind byte (even: video, odd: audio), a u32 timestamp in milliseconds
//! and a chunk (u16 length) of tag body.
//!
//! Invariants:
//! - nothing panics, whatever the configuration records, NAL lengths or AudioSpecificConfigs;
//! - every video frame out has a description, and its data is the hub's 4-byte length-prefixed
//!   NAL units, each inside the data;
//! - no frame is empty.

use super::Cursor;
use crate::output::rtmp::flv::FlvIngest;

pub fn check(data: &[u8]) {
    let mut input = Cursor::new(data);
    let mut ingest = FlvIngest::new();
    let mut frames = Vec::new();
    while !input.is_empty() {
        let video = input.u8() % 2 == 0;
        let ms = input.u32();
        let body = input.chunk16();
        if video {
            let _ = ingest.video(body, ms, &mut frames);
        } else {
            let _ = ingest.audio(body, ms, &mut frames);
        }
    }
    super::assert_published_frames(&frames);
}
