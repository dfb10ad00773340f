//! The MPEG-TS demuxer (`media::mpegts`): transport-stream bytes from an `exec:` source (e.g.
//! `ffmpeg … -f mpegts -`), PAT → PMT → PES, then the ADTS and Opus splitters on the audio PES.
//!
//! Input: byte 0 sets the chunk size the stream is pushed in; the rest is the stream.
//!
//! Invariants:
//! - never panics, whatever the packets, tables and PES headers say;
//! - the PES payload bytes out never exceed the bytes in (and `skipped_bytes` ≤ bytes in);
//! - the output (PES of each PID, streams, skipped bytes) is the same however the input is
//!   chunked;
//! - PIDs are 13-bit, timestamps 33-bit, every PES non-empty and of a PID the PMT announced;
//! - `split_adts` / `split_opus` give frames that are slices of their PES, in order, without
//!   overlap, with a known sample rate and ≤ 7 channels for AAC.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::fuzzing::debug;
use crate::media::mpegts::{split_adts, split_opus, Pes, StreamKind, TsDemuxer, AAC_SAMPLE_RATES};

fn demux(stream: &[u8], chunk: usize) -> (Vec<Pes>, Vec<(u16, StreamKind)>, u64) {
    let mut d = TsDemuxer::new();
    let mut out = Vec::new();
    for c in stream.chunks(chunk.max(1)) {
        d.push(c);
        while let Some(p) = d.pull() {
            out.push(p);
        }
    }
    d.flush();
    while let Some(p) = d.pull() {
        out.push(p);
    }
    let mut streams: Vec<_> = d.streams().collect();
    streams.sort_by_key(|s| s.0);
    (out, streams, d.skipped_bytes)
}

fn by_pid(pes: &[Pes]) -> BTreeMap<u16, Vec<&Pes>> {
    let mut m: BTreeMap<u16, Vec<&Pes>> = BTreeMap::new();
    for p in pes {
        m.entry(p.pid).or_default().push(p);
    }
    m
}

/// Checks that `parts` are non-overlapping, in-order sub-slices of `whole`.
fn check_slices(whole: &Bytes, parts: &[Bytes]) {
    let base = whole.as_ptr() as usize;
    let mut at = 0;
    for p in parts {
        if p.is_empty() {
            continue;
        }
        let start = p.as_ptr() as usize - base;
        assert!(
            start >= at && start + p.len() <= whole.len(),
            "frame outside its PES"
        );
        at = start + p.len();
    }
}

/// Checks the invariants above on one input: returns when they hold, panics when one breaks.
pub fn check(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let chunk = match selector {
        0 => stream.len(),
        n => n as usize,
    };
    let (whole, streams, skipped) = demux(stream, stream.len());
    let (chunked, streams2, skipped2) = demux(stream, chunk);
    // `flush` completes the PES in progress in HashMap order, so only the order within each
    // PID is defined.
    assert_eq!(
        by_pid(&whole),
        by_pid(&chunked),
        "chunking changed the PES (chunk {chunk})"
    );
    assert_eq!(streams, streams2);
    assert_eq!(skipped, skipped2);
    if debug() {
        eprintln!(
            "streams {streams:?}, {} PES, skipped {skipped}",
            whole.len()
        );
    }

    assert!(skipped as usize <= stream.len());
    let total: usize = whole.iter().map(|p| p.data.len()).sum();
    assert!(
        total <= stream.len(),
        "{total} payload bytes out of {} in",
        stream.len()
    );
    for pes in &whole {
        assert!(pes.pid <= 0x1fff);
        assert!(!pes.data.is_empty());
        assert!(
            streams.iter().any(|(pid, _)| *pid == pes.pid),
            "PES of an unannounced PID"
        );
        for t in [pes.pts, pes.dts].into_iter().flatten() {
            assert!((0..1i64 << 33).contains(&t), "timestamp {t} beyond 33 bits");
        }
        match pes.kind {
            StreamKind::Aac => {
                let frames = split_adts(&pes.data);
                for f in &frames {
                    assert!(AAC_SAMPLE_RATES.contains(&f.sample_rate));
                    assert!(f.channels <= 7);
                }
                let datas: Vec<Bytes> = frames.into_iter().map(|f| f.data).collect();
                check_slices(&pes.data, &datas);
            }
            StreamKind::Opus { channels } => {
                assert!((1..=8).contains(&channels));
                check_slices(&pes.data, &split_opus(&pes.data));
            }
            StreamKind::H264 | StreamKind::H265 => {}
        }
    }
    // The splitters on the raw input too (any bytes can be a PES payload).
    let raw = Bytes::copy_from_slice(stream);
    let frames: Vec<Bytes> = split_adts(&raw).into_iter().map(|f| f.data).collect();
    check_slices(&raw, &frames);
    check_slices(&raw, &split_opus(&raw));
}
