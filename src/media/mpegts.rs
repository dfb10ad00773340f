//! A sans-IO MPEG-TS demuxer (ISO/IEC 13818-1): transport-stream bytes in, whole PES payloads
//! out, for the elementary streams livelens reads — H.264, H.265, AAC (ADTS) and Opus.
//!
//! Why not a crate: the Rust TS crates are either callback-and-macro frameworks (mpeg2ts-reader)
//! or unmaintained; livelens needs PAT → PMT → PES with timestamps and nothing else, and a push/pull
//! demuxer is easy to test on bytes and to drive from a child's stdout.
//!
//! Usage: [`push`](TsDemuxer::push) bytes as they arrive (any chunking), then
//! [`pull`](TsDemuxer::pull) until `None`. A PES of unbounded length (video) is complete when the
//! next one on its PID starts, so video comes out one access unit late; [`flush`](TsDemuxer::flush)
//! returns the last ones at end of stream. Loss of sync is recovered by scanning for `0x47`.

use std::collections::{HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

const PACKET: usize = 188;
const SYNC: u8 = 0x47;
/// A PES bigger than this is corrupt input, not a frame: it is dropped rather than grown.
const MAX_PES: usize = 16 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    H264,
    H265,
    /// AAC in ADTS framing.
    Aac,
    Opus {
        channels: u16,
    },
}

/// One PES payload: a video access unit in Annex B, or one or more audio frames.
#[derive(Debug, Clone, PartialEq)]
pub struct Pes {
    pub pid: u16,
    pub kind: StreamKind,
    /// 90 kHz, as in the stream (33 bits; callers unwrap).
    pub pts: Option<i64>,
    pub dts: Option<i64>,
    pub data: Bytes,
}

struct Assembly {
    kind: StreamKind,
    pts: Option<i64>,
    dts: Option<i64>,
    /// Declared payload length, when the PES header gives one (0 = unbounded).
    expected: Option<usize>,
    data: BytesMut,
    /// Set while skipping a PES that started before we joined or overflowed.
    broken: bool,
}

#[derive(Default)]
pub struct TsDemuxer {
    pending: Vec<u8>,
    pmt_pids: Vec<u16>,
    streams: HashMap<u16, Option<Assembly>>,
    kinds: HashMap<u16, StreamKind>,
    ready: VecDeque<Pes>,
    /// Bytes skipped to regain sync (for diagnostics).
    pub skipped_bytes: u64,
}

impl TsDemuxer {
    pub fn new() -> TsDemuxer {
        TsDemuxer::default()
    }

    /// The elementary streams found in the PMT so far.
    pub fn streams(&self) -> impl Iterator<Item = (u16, StreamKind)> + '_ {
        self.kinds.iter().map(|(p, k)| (*p, *k))
    }

    pub fn push(&mut self, mut data: &[u8]) {
        // Complete a packet split across pushes first, then parse whole packets in place.
        if !self.pending.is_empty() {
            let need = PACKET - self.pending.len();
            let take = need.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < PACKET {
                return;
            }
            let packet = std::mem::take(&mut self.pending);
            if packet[0] == SYNC {
                self.packet(&packet);
            } else {
                self.skipped_bytes += 1;
                let rest = packet[1..].to_vec();
                self.push(&rest);
            }
        }
        while !data.is_empty() {
            if data[0] != SYNC {
                let skip = data.iter().position(|b| *b == SYNC).unwrap_or(data.len());
                self.skipped_bytes += skip as u64;
                data = &data[skip..];
                continue;
            }
            if data.len() < PACKET {
                self.pending.extend_from_slice(data);
                return;
            }
            let (packet, rest) = data.split_at(PACKET);
            self.packet(packet);
            data = rest;
        }
    }

    pub fn pull(&mut self) -> Option<Pes> {
        self.ready.pop_front()
    }

    /// End of stream: completes every PES in progress.
    pub fn flush(&mut self) {
        let pids: Vec<u16> = self.streams.keys().copied().collect();
        for pid in pids {
            self.finish(pid);
        }
    }

    fn packet(&mut self, p: &[u8]) {
        let transport_error = p[1] & 0x80 != 0;
        let unit_start = p[1] & 0x40 != 0;
        let pid = u16::from_be_bytes([p[1] & 0x1f, p[2]]);
        let adaptation = (p[3] >> 4) & 0x3;
        if transport_error {
            return;
        }
        let mut offset = 4;
        if adaptation & 0x2 != 0 {
            offset += 1 + p[4] as usize;
        }
        if adaptation & 0x1 == 0 || offset >= PACKET {
            return; // no payload
        }
        let payload = &p[offset..];
        if pid == 0 {
            if unit_start {
                self.pat(payload);
            }
        } else if self.pmt_pids.contains(&pid) {
            if unit_start {
                self.pmt(payload);
            }
        } else if self.kinds.contains_key(&pid) {
            self.pes_packet(pid, unit_start, payload);
        }
    }

    /// The PSI section of a payload that starts one (skipping the pointer field), without CRC.
    fn section(payload: &[u8]) -> Option<&[u8]> {
        let pointer = *payload.first()? as usize;
        let s = payload.get(1 + pointer..)?;
        if s.len() < 3 {
            return None;
        }
        let length = (u16::from_be_bytes([s[1] & 0x0f, s[2]])) as usize;
        // table header (3) + length, minus the 4-byte CRC at the end.
        let end = 3 + length;
        if length < 9 || s.len() < end {
            return None; // sections longer than one packet are not used by the streams we read
        }
        Some(&s[..end - 4])
    }

    fn pat(&mut self, payload: &[u8]) {
        let Some(s) = Self::section(payload) else {
            return;
        };
        if s[0] != 0x00 {
            return;
        }
        let mut pmts = Vec::new();
        for entry in s[8..].chunks_exact(4) {
            let program = u16::from_be_bytes([entry[0], entry[1]]);
            let pid = u16::from_be_bytes([entry[2] & 0x1f, entry[3]]);
            if program != 0 {
                pmts.push(pid);
            }
        }
        self.pmt_pids = pmts;
    }

    fn pmt(&mut self, payload: &[u8]) {
        let Some(s) = Self::section(payload) else {
            return;
        };
        if s[0] != 0x02 || s.len() < 12 {
            return;
        }
        let program_info = (u16::from_be_bytes([s[10] & 0x0f, s[11]])) as usize;
        let mut rest = s.get(12 + program_info..).unwrap_or(&[]);
        while rest.len() >= 5 {
            let stream_type = rest[0];
            let pid = u16::from_be_bytes([rest[1] & 0x1f, rest[2]]);
            let info_len = (u16::from_be_bytes([rest[3] & 0x0f, rest[4]])) as usize;
            let info = rest.get(5..5 + info_len).unwrap_or(&[]);
            let kind = match stream_type {
                0x1b => Some(StreamKind::H264),
                0x24 => Some(StreamKind::H265),
                0x0f => Some(StreamKind::Aac),
                0x06 => opus_in(info),
                _ => None,
            };
            if let Some(kind) = kind {
                if self.kinds.insert(pid, kind) != Some(kind) {
                    self.streams.insert(pid, None);
                }
            }
            rest = rest.get(5 + info_len..).unwrap_or(&[]);
        }
    }

    fn pes_packet(&mut self, pid: u16, unit_start: bool, payload: &[u8]) {
        if unit_start {
            self.finish(pid);
            let kind = self.kinds[&pid];
            let assembly = parse_pes_header(payload).map(|(header, body)| {
                let mut data = BytesMut::with_capacity(header.expected.unwrap_or(64 << 10));
                data.extend_from_slice(body);
                Assembly {
                    kind,
                    pts: header.pts,
                    dts: header.dts,
                    expected: header.expected,
                    data,
                    broken: false,
                }
            });
            self.streams.insert(pid, assembly);
        } else if let Some(Some(a)) = self.streams.get_mut(&pid) {
            if !a.broken {
                a.data.extend_from_slice(payload);
                if a.data.len() > MAX_PES {
                    a.broken = true;
                    a.data = BytesMut::new();
                }
            }
        }
        let complete = matches!(
            self.streams.get(&pid),
            Some(Some(a)) if a.expected.is_some_and(|e| a.data.len() >= e)
        );
        if complete {
            self.finish(pid);
        }
    }

    fn finish(&mut self, pid: u16) {
        let Some(slot) = self.streams.get_mut(&pid) else {
            return;
        };
        let Some(a) = slot.take() else { return };
        if a.broken || a.data.is_empty() {
            return;
        }
        let mut data = a.data.freeze();
        if let Some(e) = a.expected {
            data.truncate(e);
        }
        // A declared length of nothing (but a header) leaves no payload: nothing to emit.
        if data.is_empty() {
            return;
        }
        self.ready.push_back(Pes {
            pid,
            kind: a.kind,
            pts: a.pts,
            dts: a.dts.or(a.pts),
            data,
        });
    }
}

/// A registration descriptor `Opus` marks an Opus stream (ETSI TS 102 366 style, as FFmpeg writes);
/// the extension descriptor's channel configuration gives the channel count.
fn opus_in(mut info: &[u8]) -> Option<StreamKind> {
    let mut opus = false;
    let mut channels = 2;
    while info.len() >= 2 {
        let (tag, len) = (info[0], info[1] as usize);
        let body = info.get(2..2 + len).unwrap_or(&[]);
        if tag == 0x05 && body.starts_with(b"Opus") {
            opus = true;
        }
        if tag == 0x7f && body.len() >= 2 && body[0] == 0x80 && (1..=8).contains(&body[1]) {
            channels = body[1] as u16;
        }
        info = info.get(2 + len..).unwrap_or(&[]);
    }
    opus.then_some(StreamKind::Opus { channels })
}

struct PesHeader {
    pts: Option<i64>,
    dts: Option<i64>,
    expected: Option<usize>,
}

fn parse_pes_header(p: &[u8]) -> Option<(PesHeader, &[u8])> {
    if p.len() < 9 || p[0..3] != [0, 0, 1] {
        return None;
    }
    let packet_length = u16::from_be_bytes([p[4], p[5]]) as usize;
    let flags = p[7];
    let header_length = p[8] as usize;
    let body = p.get(9 + header_length..)?;
    let pts = (flags & 0x80 != 0).then(|| timestamp(&p[9..])).flatten();
    let dts = (flags & 0xc0 == 0xc0)
        .then(|| timestamp(&p[14..]))
        .flatten();
    // The declared length counts from after the length field: 3 header bytes + optional fields.
    let expected = (packet_length != 0).then(|| packet_length.saturating_sub(3 + header_length));
    Some((PesHeader { pts, dts, expected }, body))
}

fn timestamp(b: &[u8]) -> Option<i64> {
    if b.len() < 5 {
        return None;
    }
    let t = ((b[0] as i64 >> 1) & 0x07) << 30
        | (b[1] as i64) << 22
        | ((b[2] as i64) >> 1) << 15
        | (b[3] as i64) << 7
        | (b[4] as i64) >> 1;
    Some(t)
}

/// Extends 33-bit MPEG timestamps that wrap (every ~26.5 h) to a monotonic 64-bit timeline.
#[derive(Debug, Default, Clone)]
pub struct Unwrapper {
    last: Option<i64>,
    offset: i64,
}

impl Unwrapper {
    pub fn unwrap(&mut self, ts: i64) -> i64 {
        const WRAP: i64 = 1 << 33;
        if let Some(last) = self.last {
            let raw_last = last - self.offset;
            if ts < raw_last - WRAP / 2 {
                self.offset += WRAP;
            } else if ts > raw_last + WRAP / 2 && self.offset >= WRAP {
                self.offset -= WRAP;
            }
        }
        let out = ts + self.offset;
        self.last = Some(out);
        out
    }
}

/// One AAC frame from an ADTS stream.
#[derive(Debug, Clone, PartialEq)]
pub struct AdtsFrame {
    /// AudioSpecificConfig (2 bytes) for this frame's profile, rate and channels.
    pub config: [u8; 2],
    pub sample_rate: u32,
    pub channels: u16,
    /// The raw AAC frame without the ADTS header.
    pub data: Bytes,
}

pub const AAC_SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Splits a buffer of ADTS frames. Stops at the first malformed header.
pub fn split_adts(data: &Bytes) -> Vec<AdtsFrame> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 7 <= data.len() {
        let h = &data[i..];
        if h[0] != 0xff || h[1] & 0xf0 != 0xf0 {
            break;
        }
        let protection_absent = h[1] & 0x01 != 0;
        let profile = (h[2] >> 6) & 0x3;
        let rate_index = (h[2] >> 2) & 0xf;
        let channels = ((h[2] & 0x1) << 2) | (h[3] >> 6);
        let length =
            (((h[3] & 0x3) as usize) << 11) | ((h[4] as usize) << 3) | (h[5] >> 5) as usize;
        let header = if protection_absent { 7 } else { 9 };
        let Some(&sample_rate) = AAC_SAMPLE_RATES.get(rate_index as usize) else {
            break;
        };
        if length < header || i + length > data.len() {
            break;
        }
        let object_type = profile + 1;
        let asc =
            ((object_type as u16) << 11) | ((rate_index as u16) << 7) | ((channels as u16) << 3);
        frames.push(AdtsFrame {
            config: asc.to_be_bytes(),
            sample_rate,
            channels: channels as u16,
            data: data.slice(i + header..i + length),
        });
        i += length;
    }
    frames
}

/// Splits the payload of an Opus PES into Opus packets (each behind an "Opus control header":
/// an 11-bit 0x3ff prefix, trim flags and a 0xff-run size).
pub fn split_opus(data: &Bytes) -> Vec<Bytes> {
    let mut packets = Vec::new();
    let mut i = 0;
    while i + 2 <= data.len() {
        if data[i] != 0x7f || data[i + 1] & 0xe0 != 0xe0 {
            break;
        }
        let start_trim = data[i + 1] & 0x10 != 0;
        let end_trim = data[i + 1] & 0x08 != 0;
        let extension = data[i + 1] & 0x04 != 0;
        i += 2;
        let mut size = 0usize;
        loop {
            let Some(&b) = data.get(i) else {
                return packets;
            };
            i += 1;
            size += b as usize;
            if b != 0xff {
                break;
            }
        }
        i += 2 * (start_trim as usize) + 2 * (end_trim as usize);
        if extension {
            let Some(&len) = data.get(i) else {
                return packets;
            };
            i += 1 + len as usize;
        }
        if i + size > data.len() {
            break;
        }
        packets.push(data.slice(i..i + size));
        i += size;
    }
    packets
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A tiny TS muxer for tests: PAT, PMT and PES packets with the given stream types.
    pub struct TestMuxer {
        pub streams: Vec<(u16, u8, Vec<u8>)>,
        cc: HashMap<u16, u8>,
    }

    impl TestMuxer {
        pub fn new(streams: Vec<(u16, u8, Vec<u8>)>) -> Self {
            TestMuxer {
                streams,
                cc: HashMap::new(),
            }
        }

        fn packet(&mut self, pid: u16, start: bool, payload: &[u8]) -> Vec<u8> {
            let cc = self.cc.entry(pid).or_insert(0);
            let mut p = vec![SYNC, (start as u8) << 6 | (pid >> 8) as u8, pid as u8];
            let stuffing = 184 - payload.len();
            if stuffing > 0 {
                p.push(0x30 | *cc);
                p.push((stuffing - 1) as u8);
                if stuffing > 1 {
                    p.push(0);
                    p.extend(std::iter::repeat_n(0xff, stuffing - 2));
                }
            } else {
                p.push(0x10 | *cc);
            }
            *cc = (*cc + 1) & 0xf;
            p.extend_from_slice(payload);
            assert_eq!(p.len(), PACKET);
            p
        }

        fn section(table: u8, id: u16, body: &[u8]) -> Vec<u8> {
            let length = 5 + body.len() + 4;
            let mut s = vec![0, table, 0xb0 | (length >> 8) as u8, length as u8];
            s.extend_from_slice(&id.to_be_bytes());
            s.extend_from_slice(&[0xc1, 0, 0]);
            s.extend_from_slice(body);
            s.extend_from_slice(&[0, 0, 0, 0]); // CRC (not checked)
            s
        }

        pub fn tables(&mut self) -> Vec<u8> {
            let pat = Self::section(0, 1, &[0, 1, 0xf0, 0x00]);
            let mut pmt_body = vec![0xe1, 0x00, 0xf0, 0x00];
            for (pid, stream_type, info) in self.streams.clone() {
                pmt_body.push(stream_type);
                pmt_body.extend_from_slice(&(0xe000 | pid).to_be_bytes());
                pmt_body.extend_from_slice(&(0xf000 | info.len() as u16).to_be_bytes());
                pmt_body.extend_from_slice(&info);
            }
            let pmt = Self::section(2, 1, &pmt_body);
            let mut out = self.packet(0, true, &pad(&pat));
            out.extend(self.packet(0x1000, true, &pad(&pmt)));
            out
        }

        pub fn pes(&mut self, pid: u16, pts: i64, bounded: bool, payload: &[u8]) -> Vec<u8> {
            let mut pes = vec![0, 0, 1, 0xe0];
            let length = if bounded { 3 + 5 + payload.len() } else { 0 };
            pes.extend_from_slice(&(length as u16).to_be_bytes());
            pes.extend_from_slice(&[0x80, 0x80, 5]);
            pes.extend_from_slice(&[
                0x21 | ((pts >> 29) & 0x0e) as u8,
                (pts >> 22) as u8,
                0x01 | ((pts >> 14) & 0xfe) as u8,
                (pts >> 7) as u8,
                0x01 | ((pts << 1) & 0xfe) as u8,
            ]);
            pes.extend_from_slice(payload);
            let mut out = Vec::new();
            for (i, chunk) in pes.chunks(184).enumerate() {
                out.extend(self.packet(pid, i == 0, chunk));
            }
            out
        }
    }

    fn pad(section: &[u8]) -> Vec<u8> {
        let mut v = section.to_vec();
        v.resize(184, 0xff);
        v
    }

    #[test]
    fn demuxes_video_and_audio_in_any_chunking() {
        let mut mux = TestMuxer::new(vec![(0x100, 0x1b, vec![]), (0x101, 0x0f, vec![])]);
        let mut ts = mux.tables();
        let au1: Vec<u8> = [0, 0, 0, 1, 0x65].into_iter().chain(0..=255).collect();
        let au2: Vec<u8> = [0, 0, 0, 1, 0x41].into_iter().chain(vec![7; 400]).collect();
        ts.extend(mux.pes(0x100, 9000, false, &au1));
        ts.extend(mux.pes(
            0x101,
            9000,
            true,
            &[0xff, 0xf1, 0x50, 0x80, 0x01, 0x1f, 0xfc],
        ));
        ts.extend(mux.pes(0x100, 12600, false, &au2));
        for chunk in [1, 7, 188, 1000, ts.len()] {
            let mut d = TsDemuxer::new();
            // Garbage before the first packet must be skipped.
            d.push(&[1, 2, 3]);
            for c in ts.chunks(chunk) {
                d.push(c);
            }
            let mut out = Vec::new();
            while let Some(p) = d.pull() {
                out.push(p);
            }
            // The bounded audio PES is complete at once; the first video PES only when the
            // second starts.
            assert_eq!(out.len(), 2, "chunk {chunk}");
            assert_eq!(out[0].kind, StreamKind::Aac);
            assert_eq!(out[0].data.len(), 7);
            assert_eq!(out[1].kind, StreamKind::H264);
            assert_eq!(out[1].data, au1);
            assert_eq!(out[1].pts, Some(9000));
            d.flush();
            let last = d.pull().unwrap();
            assert_eq!((last.pts, &last.data[..]), (Some(12600), &au2[..]));
            assert_eq!(d.skipped_bytes, 3);
        }
    }

    #[test]
    fn finds_opus_by_its_registration_descriptor() {
        let info = vec![0x05, 4, b'O', b'p', b'u', b's', 0x7f, 2, 0x80, 1];
        let mut mux = TestMuxer::new(vec![(0x101, 0x06, info), (0x102, 0x06, vec![])]);
        let mut d = TsDemuxer::new();
        d.push(&mux.tables());
        let kinds: Vec<_> = d.streams().collect();
        assert_eq!(kinds, vec![(0x101, StreamKind::Opus { channels: 1 })]);
    }

    #[test]
    fn pes_timestamps_round_trip_at_33_bits() {
        let mut mux = TestMuxer::new(vec![(0x100, 0x1b, vec![])]);
        let mut ts = mux.tables();
        let big = (1i64 << 33) - 1;
        ts.extend(mux.pes(0x100, big, true, &[0, 0, 1, 0x65, 1]));
        let mut d = TsDemuxer::new();
        d.push(&ts);
        assert_eq!(d.pull().unwrap().pts, Some(big));
    }

    #[test]
    fn unwraps_33_bit_timestamps() {
        let mut u = Unwrapper::default();
        let wrap = 1i64 << 33;
        assert_eq!(u.unwrap(wrap - 3000), wrap - 3000);
        assert_eq!(u.unwrap(600), wrap + 600);
        assert_eq!(u.unwrap(4200), wrap + 4200);
    }

    #[test]
    fn splits_adts_frames_and_builds_the_config() {
        // Two AAC-LC 48 kHz stereo frames of 10 bytes (7 header + 3 payload).
        let header = [0xff, 0xf1, 0x4c, 0x80, 0x01, 0x5f, 0xfc];
        let mut data = Vec::new();
        for n in 0..2u8 {
            data.extend_from_slice(&header);
            data.extend_from_slice(&[n, n, n]);
        }
        let frames = split_adts(&Bytes::from(data));
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[1].data, vec![1, 1, 1]);
        assert_eq!(frames[0].sample_rate, 48000);
        assert_eq!(frames[0].channels, 2);
        assert_eq!(frames[0].config, [0x11, 0x90]); // AAC-LC, 48 kHz, 2 channels
    }

    #[test]
    fn splits_opus_control_headers() {
        let mut data = vec![0x7f, 0xe0, 3, 1, 2, 3];
        data.extend([0x7f, 0xe0, 0xff, 1]);
        data.extend(vec![9; 256]);
        let packets = split_opus(&Bytes::from(data));
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0], vec![1, 2, 3]);
        assert_eq!(packets[1].len(), 256);
    }
}
